"""``labkit reproduce``: run chapters with papermill, one folder per run.

    labkit reproduce --profile full --device cuda            # every chapter
    labkit reproduce --profile book 00 crn                   # some chapters
    labkit reproduce --profile full -p max_minutes 30 crn    # time-boxed
    labkit reproduce --profile full --restart crn            # set old checkpoints aside first
    labkit reproduce --profile full --dry-run crn            # the full profile's cells on a CPU, shrunk

Each chapter runs from ``notebooks/<chapter>.ipynb`` into
``runs/<profile>/<chapter>/``: the executed notebook, its ``metrics.json``
and figures. The source notebook is never written. Checkpoints live in the
run folder too, so running the same command again resumes an interrupted or
time-boxed run.

Everything is checked for every requested chapter before the first one
starts: the chapter names, each ``-p`` parameter (declared by the notebook,
of the type of its default), ``--device`` (it must exist here) and the
repository. papermill only *warns* about a parameter the notebook does not
declare; here that is an error, so a misspelling cannot silently run the
default. ``profile`` and ``device`` come from ``--profile``/``--device``
only, never from ``-p``.

The repository is the course checkout that holds the current directory
(``--repo`` names another); its notebooks run, its ``runs/`` is written,
and its ``labkit`` is the one the kernels import, even when the virtual
environment's editable install points at another clone.
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
from pathlib import Path

from .train import DRY_RUN_ENV, DRY_RUN_ROOT_ENV, FAST_PATH_ENV, PROFILE_NAMES, REPO_ROOT, RESTART_ENV, choose_device

NOTEBOOKS = REPO_ROOT / "notebooks"
FLAG_PARAMETERS = {"profile": "--profile", "device": "--device"}


def is_course_repository(path: Path) -> bool:
    """A checkout of this course: ``labkit/__init__.py`` and ``notebooks/`` at its root."""
    return (path / "labkit" / "__init__.py").is_file() and (path / "notebooks").is_dir()


def find_repository(start: Path | None = None) -> Path | None:
    """The course checkout holding ``start`` (default: the current directory), or None."""
    start = Path(start or Path.cwd()).resolve()
    return next((folder for folder in (start, *start.parents) if is_course_repository(folder)), None)


def choose_repository(repo: str | Path | None = None) -> tuple[Path, str]:
    """(repository, why): ``--repo`` if given, else the checkout holding the current
    directory, else the one this labkit was installed from."""
    if repo is not None:
        path = Path(repo).expanduser().resolve()
        if not is_course_repository(path):
            raise FileNotFoundError(f"--repo {repo}: not a checkout of this course "
                                    "(expected labkit/__init__.py and notebooks/ in it)")
        return path, "given by --repo"
    here = find_repository()
    if here is not None:
        return here, "the checkout holding the current directory"
    return REPO_ROOT, "the checkout this labkit is installed from (the current directory is not in one)"


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
    """Refuse a parameter the notebook does not declare, or of another type than its
    declared default; ``seed``, ``max_minutes``, ``profile`` and ``device`` are
    checked for their values too."""
    from .checks import check_number, check_seed

    declared = declared_parameters(notebook)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise ValueError(f"{notebook.name} has no parameter(s) {unknown}; it declares {sorted(declared)}")
    for name, value in parameters.items():
        default = declared[name]
        if default is None:
            continue
        if isinstance(default, bool) or isinstance(value, bool):
            if type(value) is not type(default):
                raise ValueError(f"parameter {name} of {notebook.name} must be {type(default).__name__} "
                                 f"like its default {default!r}, got {value!r}")
        elif isinstance(default, (int, float)) and isinstance(value, (int, float)):
            if isinstance(default, int) and not isinstance(value, int):
                raise ValueError(f"parameter {name} of {notebook.name} must be an integer like its default "
                                 f"{default!r}, got {value!r}")
        elif type(value) is not type(default):
            raise ValueError(f"parameter {name} of {notebook.name} must be {type(default).__name__} like its "
                             f"default {default!r}, got {type(value).__name__} {value!r}")
    if "profile" in parameters and parameters["profile"] not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {parameters['profile']!r}; expected one of {list(PROFILE_NAMES)}")
    if "seed" in parameters:
        check_seed(parameters["seed"], "parameter seed")
    if "max_minutes" in parameters:
        check_number(parameters["max_minutes"], "parameter max_minutes", minimum=0.0, allow_none=True)
    if "device" in parameters:
        choose_device(parameters["device"])


def _parse_value(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def reproduce(profile: str, selected: list[str] | None = None, device: str | None = None,
              extra: dict | None = None, runs_root: Path | None = None, kernel: str = "python3",
              repo: Path | None = None, restart: bool = False, dry_run: bool = False) -> list[Path]:
    """Execute chapters with papermill; returns the run folders.

    Every chapter's parameters are checked before the first one starts.
    ``repo`` (default: where this labkit lives) provides the notebooks, the
    ``runs/`` folder (unless ``runs_root`` is given) and the ``labkit`` the
    kernels import. ``restart`` sets LABKIT_RESTART=1 for the kernels.
    ``dry_run`` (full profile only) runs every notebook on its chapter's dry-run
    settings (:mod:`labkit.dry_run`) under bf16 autocast + channels_last, into
    ``runs/dry-run/<notebook>/``: the notebooks' full-profile cells, on a CPU (after
    ``python -m labkit.dry_run``, they load its checkpoints there)."""
    import papermill

    from .execution import SlicedPollKernelManager   # papermill's own client can stall after a widget cell

    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {list(PROFILE_NAMES)}")
    if dry_run and profile != "full":
        raise ValueError(f"--dry-run shrinks the full profile; use it with --profile full, not {profile}")
    for name, flag in FLAG_PARAMETERS.items():
        if name in (extra or {}):
            raise ValueError(f"-p {name} is not accepted: {name} comes from {flag} only")
    repo = Path(repo).resolve() if repo is not None else NOTEBOOKS.parent
    notebooks = repo / "notebooks"
    runs_root = Path(runs_root) if runs_root is not None else repo / "runs"
    available = chapters(notebooks)
    if not available:
        raise FileNotFoundError(f"no chapter notebooks (NN_name.ipynb) in {notebooks}")
    names = [resolve_chapter(n, available) for n in selected] if selected else available
    plan = []
    for name in names:   # check everything before anything runs
        notebook = notebooks / f"{name}.ipynb"
        parameters = {"profile": profile, **(extra or {})}
        if device is not None:
            parameters["device"] = device
        check_parameters(notebook, parameters)
        plan.append((name, notebook, parameters))
    environment = {"LABKIT_RUN_DIR": None, "PYTHONPATH": os.pathsep.join(
        p for p in (str(repo), os.environ.get("PYTHONPATH", "")) if p)}
    if restart:
        environment[RESTART_ENV] = "1"
    if dry_run:
        environment.update({DRY_RUN_ENV: "1", FAST_PATH_ENV: os.environ.get(FAST_PATH_ENV, "1"),
                            DRY_RUN_ROOT_ENV: str(runs_root / "dry-run")})
    done = []
    for name, notebook, parameters in plan:
        run_dir = runs_root / ("dry-run" if dry_run else profile) / name
        run_dir.mkdir(parents=True, exist_ok=True)
        print(f"[labkit] {name}: profile={profile} → {run_dir}", flush=True)
        environment["LABKIT_RUN_DIR"] = str(run_dir)
        saved = {key: os.environ.get(key) for key in environment}
        os.environ.update(environment)   # the kernel inherits this process's environment
        try:
            papermill.execute_notebook(str(notebook), str(run_dir / f"{name}.ipynb"), parameters=parameters,
                                       cwd=str(notebooks), kernel_name=kernel, progress_bar=False,
                                       kernel_manager_class=SlicedPollKernelManager)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        done.append(run_dir)
    return done


def main(argv=None) -> int:
    from .train import argparse_device

    parser = argparse.ArgumentParser(prog="labkit", description="The semantic image synthesis course's tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run chapters with papermill into runs/<profile>/<chapter>/")
    rep.add_argument("--profile", required=True, choices=PROFILE_NAMES)
    rep.add_argument("--device", default=None, type=argparse_device,
                     help="cuda, cuda:N, mps or cpu; it must exist here (default: the notebook's 'auto')")
    rep.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="another notebook parameter; it must be declared in the notebook "
                          "(not profile or device: use --profile and --device)")
    rep.add_argument("--repo", default=None,
                     help="the course checkout to run (default: the one holding the current directory)")
    rep.add_argument("--restart", action="store_true",
                     help="set existing training checkpoints aside (renamed) and train from step 0")
    rep.add_argument("--dry-run", action="store_true",
                     help="with --profile full: every notebook on its chapter's dry-run settings (2 steps per "
                          "network, a few scenes, bf16 + channels_last), into runs/dry-run/<notebook>/")
    rep.add_argument("chapters", nargs="*", help="chapters to run (default: all), e.g. 00 or crn")
    chapters_parser = sub.add_parser("chapters", help="list the chapters")
    chapters_parser.add_argument("--repo", default=None, help="the course checkout (default: as for reproduce)")
    args = parser.parse_args(argv)
    try:
        repo, why = choose_repository(args.repo)
        if args.command == "chapters":
            print("\n".join(chapters(repo / "notebooks")))
            return 0
        print(f"[labkit] repository: {repo} ({why})", flush=True)
        extra = {name: _parse_value(value) for name, value in args.parameter}
        reproduce(args.profile, args.chapters, device=args.device, extra=extra, repo=repo, restart=args.restart,
                  dry_run=args.dry_run)
    except (ValueError, FileNotFoundError) as error:
        print(f"labkit: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
