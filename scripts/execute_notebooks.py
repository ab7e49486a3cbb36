"""Execute notebooks in place in their default profile, so their committed
outputs are what the code produces now (nbval then compares against them).

    python scripts/execute_notebooks.py notebooks/00_data_and_evaluation.ipynb

Runs with the notebook's folder as working directory, like JupyterLab,
nbval and the book do, and drops per-run metadata (execution timestamps).
"""
import sys
from pathlib import Path

import nbformat

from labkit.execution import execute_notebook


def execute(path: Path, timeout: int = 900) -> None:
    nb = nbformat.read(path, as_version=4)
    execute_notebook(nb, cwd=path.parent, timeout=timeout)   # the stall-proof client, see labkit.execution
    nbformat.write(nb, path)


if __name__ == "__main__":
    for name in sys.argv[1:]:
        print("executing", name, flush=True)
        execute(Path(name))
