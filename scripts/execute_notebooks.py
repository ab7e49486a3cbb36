"""Execute notebooks in place in their default profile, so their committed
outputs are what the code produces now (nbval then compares against them).

    python scripts/execute_notebooks.py notebooks/00_data_and_evaluation.ipynb

Runs with the notebook's folder as working directory, like JupyterLab,
nbval and the book do, and drops per-run metadata (execution timestamps).
"""
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: int = 900) -> None:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}}, store_widget_state=True)
    client.execute()
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print("executing", name, flush=True)
        execute(Path(name))
