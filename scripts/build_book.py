"""Build the book into _build/html, offline.

    python scripts/build_book.py                      # `make book`: execute every notebook, then build
    python scripts/build_book.py --committed-outputs  # the book test: the committed outputs, no execution

Both stage the book's sources in ``_build/source/`` (``_config.yml`` with
execution off, ``_toc.yml``, ``references.bib``, ``book/`` and
``notebooks/``) and run ``jupyter-book build`` there with warnings as
errors, writing ``_build/html``. The source notebooks are never written.

- By default every notebook is executed first, in its default (book) profile,
  with the notebook folder as working directory, through
  :func:`labkit.execution.execute_notebook`. Jupyter Book's own execution
  (myst-nb → nbclient) is not used: its asyncio client can miss the kernel's
  reply after a widget cell and then sits idle until the cell timeout
  (600 s) runs out; see :mod:`labkit.execution`.
- With ``--committed-outputs`` the staged notebooks are the committed ones.
  ``make test`` builds the book this way: its nbval run re-executes every
  notebook and checks those outputs, so the book test does not execute them a
  second time.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / "_build" / "source"
SOURCES = ("_toc.yml", "references.bib", "book")


def stage_sources(committed_outputs: bool) -> list[tuple[str, float]]:
    """Copy the book's sources into ``_build/source/``; returns (notebook, seconds) executed.
    The cell timeout is ``execute.timeout`` of ``_config.yml``."""
    import nbformat
    import yaml

    if STAGE.exists():
        shutil.rmtree(STAGE)
    STAGE.mkdir(parents=True)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    timeout = int(config.get("execute", {}).get("timeout", 600))
    config.setdefault("execute", {})["execute_notebooks"] = "off"   # executed here, or checked by nbval
    (STAGE / "_config.yml").write_text(
        "# Staged by scripts/build_book.py from ../../_config.yml; edit that file, not this one.\n"
        + yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    for name in SOURCES:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, STAGE / name)
        else:
            shutil.copy2(source, STAGE / name)
    (STAGE / "notebooks").mkdir()
    timings = []
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        target = STAGE / "notebooks" / notebook.name
        if committed_outputs:
            shutil.copy2(notebook, target)
            continue
        from labkit.execution import execute_notebook

        start = time.monotonic()
        print(f"executing {notebook.relative_to(ROOT)}", flush=True)
        nb = nbformat.read(notebook, as_version=4)
        execute_notebook(nb, cwd=notebook.parent, timeout=timeout)
        nbformat.write(nb, target)
        timings.append((notebook.name, time.monotonic() - start))
        print(f"  done in {timings[-1][1]:.0f} s", flush=True)
    return timings


def build(committed_outputs: bool = False, quiet: bool = False) -> subprocess.CompletedProcess:
    """Stage, then ``jupyter-book build`` into ``_build/html``; returns the build's process."""
    stage_sources(committed_outputs)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    command = [str(jupyter_book), "build", str(STAGE), "--path-output", str(ROOT), "--all",
               "--warningiserror", "--keep-going"]
    return subprocess.run(command, cwd=ROOT, env=env, text=True,
                          capture_output=quiet, timeout=1800)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--committed-outputs", action="store_true",
                        help="build from the committed outputs (nbval checks them) instead of executing")
    args = parser.parse_args(argv)
    start = time.monotonic()
    done = build(committed_outputs=args.committed_outputs)
    print(f"book {'built' if done.returncode == 0 else 'FAILED'} in {time.monotonic() - start:.0f} s: "
          f"{ROOT / '_build' / 'html' / 'index.html'}", flush=True)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
