"""``labkit reproduce``: run chapters with papermill, one folder per run.

    labkit reproduce --profile full --device cuda            # every chapter
    labkit reproduce --profile book 00 crn                   # some chapters
    labkit reproduce --profile full -p max_minutes 30 crn    # time-boxed

Each chapter runs from ``notebooks/<chapter>.ipynb`` into
``runs/<profile>/<chapter>/``: the executed notebook, its ``metrics.json``
and figures. The source notebook is never written. Checkpoints live in the
run folder too, so running the same command again resumes an interrupted or
time-boxed run. papermill only *warns* about a parameter the notebook does
not declare; here that is an error, so a misspelling cannot silently run
the default.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

from .train import PROFILE_NAMES, REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"


def chapters(notebooks: Path | None = None) -> list[str]:
    """Chapter names (notebook stems) in course order."""
    return sorted(p.stem for p in (notebooks or NOTEBOOKS).glob("[0-9][0-9]_*.ipynb"))


def resolve_chapter(name: str, available: list[str]) -> str:
    """Accept ``01_crn``, ``01`` or ``crn``; anything else is an error listing the chapters."""
    matches = [c for c in available if name in (c, c.split("_", 1)[0], c.split("_", 1)[-1])]
    if len(matches) != 1:
        raise ValueError(f"unknown chapter {name!r}; expected one of {available}")
    return matches[0]


def declared_parameters(notebook: Path) -> dict:
    """Names and default values in the notebook's ``parameters``-tagged cell."""
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook} must have exactly one cell tagged 'parameters', found {len(cells)}")
    names = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    names[target.id] = ast.literal_eval(node.value) if node.value is not None else None
    return names


def check_parameters(notebook: Path, parameters: dict) -> None:
    declared = declared_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"{notebook.name} has no parameter(s) {unknown}; it declares {sorted(declared)}")
    if "profile" in parameters and parameters["profile"] not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {parameters['profile']!r}; expected one of {list(PROFILE_NAMES)}")


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def reproduce(profile: str, selected: list[str] | None = None, device: str | None = None,
              extra: dict | None = None, runs_root: Path = REPO_ROOT / "runs", kernel: str = "python3") -> list[Path]:
    """Execute chapters with papermill; returns the run folders."""
    import papermill

    available = chapters()
    names = [resolve_chapter(n, available) for n in selected] if selected else available
    done = []
    for name in names:
        notebook = NOTEBOOKS / f"{name}.ipynb"
        parameters = {"profile": profile, **(extra or {})}
        if device is not None:
            parameters["device"] = device
        check_parameters(notebook, parameters)
        run_dir = runs_root / profile / name
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"[labkit] {name}: profile={profile} → {run_dir}", flush=True)
        os.environ["LABKIT_RUN_DIR"] = str(run_dir)
        try:
            papermill.execute_notebook(str(notebook), str(run_dir / f"{name}.ipynb"), parameters=parameters,
                                       cwd=str(NOTEBOOKS), kernel_name=kernel, progress_bar=False)
        finally:
            os.environ.pop("LABKIT_RUN_DIR", None)
        done.append(run_dir)
    return done


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="labkit", description="The semantic image synthesis course's tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run chapters with papermill into runs/<profile>/<chapter>/")
    rep.add_argument("--profile", required=True, choices=PROFILE_NAMES)
    rep.add_argument("--device", default=None, help="cuda, mps or cpu (default: the notebook's 'auto')")
    rep.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="another notebook parameter; it must be declared in the notebook")
    rep.add_argument("chapters", nargs="*", help="chapters to run (default: all), e.g. 00 or crn")
    sub.add_parser("chapters", help="list the chapters")
    args = parser.parse_args(argv)
    try:
        if args.command == "chapters":
            print("\n".join(chapters()))
            return 0
        extra = {name: _parse_value(value) for name, value in args.parameter}
        reproduce(args.profile, args.chapters, device=args.device, extra=extra)
    except (ValueError, FileNotFoundError) as error:
        print(f"labkit: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
