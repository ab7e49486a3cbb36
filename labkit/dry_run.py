"""A dry run of a chapter's ``full`` profile on the CPU, before anyone pays for a GPU.

    python -m labkit.dry_run                 # every chapter, into runs/dry-run/<notebook>/ (e.g. 01_crn)
    python -m labkit.dry_run crn srn         # some chapters
    python -m labkit.papers.srn_runs --profile full --dry-run   # one pass of one chapter

A dry run executes what ``labkit reproduce --profile full`` (and each run module's
``--profile full``) executes: the chapter's run module with the full profile's
networks (widths, depths, number of outputs), batch sizes, learning rates, losses and
data pipeline, then its checkpoints, exports and the scoring and claims on its record.
Only counts shrink: every network trains for 2 steps (or the chapter's stated
few), on a few scenes, and is scored on a few test images (the chapter's
``DRY_RUN`` overrides, declared next to its ``PROFILES`` with
:func:`labkit.train.register_dry_run`). Where a full-size step is too slow for a
2-core CPU the chapter's overrides also shrink the image, and its ``DRY_RUN_NOTE``
says so.

The run happens in **passes**. In each pass every training call stops after one
step of its own (``LABKIT_STOP_AFTER_STEPS=1``, as a killed process would), so the
next call must resume the network from its checkpoint. :data:`labkit.train.FIT_JOURNAL`
says where each call started: it must be where the previous call on that checkpoint
left it (several models may share one, as SRN's share their first phase), every
checkpoint must be resumed at least once, and the run must end with every record
finished (``read_record`` refuses unfinished or stale records) within
:data:`MAX_PASSES`.

GPU branches: training runs under bf16 autocast with channels_last networks, the
branch :func:`labkit.train.fit` takes on CUDA (``LABKIT_BF16_CHANNELS_LAST=1``).
``torch.compile`` is exercised by the throughput benchmark's compiled mode
(``tests/test_dry_run.py`` compiles one chapter's step on the CPU), and DDP by
``tests/test_train.py`` (two gloo processes). What a CPU cannot run is NCCL and the
device itself.

``labkit reproduce --profile full --dry-run`` then runs each chapter's notebook in the same
folder: its full-profile cells load these checkpoints instead of training again.

The summary (``runs/dry-run/<notebook>/dry_run.json``) lists each pass's
checkpoint steps and wall time, the settings used, and what was loaded back.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import warnings
from pathlib import Path

from . import train
from .checkpoints import load_checkpoint, write_json
from .train import DRY_RUN_ENV, FAST_PATH_ENV, STOP_AFTER_ENV, dry_run_dir, provenance, select_profile, setup

CHAPTERS = ("crn", "sims", "srn", "analogy", "seigan")
MAX_PASSES = 6
"""Passes before a dry run gives up: enough for two sequential phases of 2 steps each (SRN)."""


def check_chapter(chapter: str) -> str:
    if not isinstance(chapter, str) or chapter not in CHAPTERS:
        raise ValueError(f"unknown chapter {chapter!r}; expected one of {list(CHAPTERS)}")
    return chapter


def modules(chapter: str):
    """(the chapter's paper module, its run module)."""
    check_chapter(chapter)
    return (importlib.import_module(f"labkit.papers.{chapter}"),
            importlib.import_module(f"labkit.papers.{chapter}_runs"))


class _Environment:
    """Set environment variables for a ``with`` block and restore them after."""

    def __init__(self, **values):
        self.values = values

    def __enter__(self):
        self.saved = {key: os.environ.get(key) for key in self.values}
        for key, value in self.values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        return self

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def dry_run_settings(chapter: str) -> dict:
    """The full profile as a dry run of ``chapter`` uses it (``dry_run: True`` among them)."""
    paper, _ = modules(chapter)
    with _Environment(**{DRY_RUN_ENV: "1"}):
        return select_profile(paper.PROFILES, "full")


def checkpoint_steps(run_dir: Path) -> dict[str, int]:
    """Training checkpoints under ``<run dir>/train/`` (set-aside copies excluded) → their step."""
    train = Path(run_dir) / "train"
    steps = {}
    for path in sorted(train.rglob("*.pt")) if train.is_dir() else ():
        steps[str(path.relative_to(train))] = int(load_checkpoint(path)["step"])
    return steps


def check_resumes(chapter: str, number: int, run_dir: Path, before: dict[str, int], journal: list[dict]) -> list[dict]:
    """Check pass ``number``'s :data:`labkit.train.FIT_JOURNAL`: each training call on a checkpoint
    under ``<run dir>/train/`` started where the previous call on it (or the last pass) left it,
    and trained at most one step (the interruption). Several calls may share a checkpoint (SRN's
    models share their first phase). Returns the calls, each with its checkpoint's name."""
    train_dir = (Path(run_dir) / "train").resolve()
    at, calls = {}, []
    for entry in journal:
        path = Path(entry["checkpoint"])
        if train_dir not in path.parents:
            continue
        name = str(path.relative_to(train_dir))
        expected = at.get(name, before.get(name, 0))
        if entry["resumed_from"] != expected:
            raise RuntimeError(f"{chapter} dry run, pass {number}: train/{name} was at step {expected} but training "
                               f"started from step {entry['resumed_from']}: it did not resume its checkpoint")
        if entry["steps_done"] - entry["resumed_from"] > 1:
            raise RuntimeError(f"{chapter} dry run, pass {number}: train/{name} trained from step "
                               f"{entry['resumed_from']} to {entry['steps_done']} in one call; the interruption "
                               f"({STOP_AFTER_ENV}=1) was not honoured")
        at[name] = entry["steps_done"]
        calls.append(dict(entry, name=name))
    return calls


def _run_pass(chapter: str, run_dir: Path, device) -> None:
    """One call of the chapter's run module, as the chapter's notebook makes it under the full profile
    (CRN's notebook loads its generators from the training checkpoints; the others export)."""
    _, runs = modules(chapter)
    export = {} if chapter == "crn" else {"export": run_dir / EXPORTS[chapter]}
    runs.run("full", device=device, run_dir=run_dir, progress=False, **export)


EXPORTS = {"sims": "networks.pt", "srn": "generators.pt", "analogy": "exports", "seigan": "exports"}
"""Where the chapter's notebook has its run module export the networks of a non-book run."""


def _load_back(chapter: str, run_dir: Path, device, settings: dict) -> dict:
    """Load what the notebook loads after a non-book run; returns what was loaded."""
    paper, runs = modules(chapter)
    loaded = {}
    if chapter == "crn":
        for name in paper.MODEL_NAMES:
            _, result = runs.train_model(name, settings, device, run_dir, max_minutes=0, progress=False)
            if not result.finished:
                raise RuntimeError(f"crn dry run: {name}'s checkpoint did not load as finished")
            loaded[name] = result.steps_done
    elif chapter == "sims":
        network, transformer, orderer, _ = runs.load_models(run_dir / EXPORTS[chapter], device)
        loaded = {"synthesis": type(network).__name__, "transformer": type(transformer).__name__,
                  "ordering": type(orderer).__name__}
    elif chapter == "srn":
        generators, _ = runs.load_models(run_dir / EXPORTS[chapter], device)
        loaded = {name: type(g).__name__ for name, g in generators.items()}
    elif chapter == "analogy":
        for path in sorted((run_dir / EXPORTS[chapter]).glob("*.pt")):
            generators = runs.load_models(path, device)[0]
            runs.load_evaluation_segmenter(path, device)
            loaded[path.name] = sorted(generators)
    else:
        exports = (run_dir / "exports" / "seigan.pt", run_dir / "exports" / "seigan_extra.pt")
        model, _ = runs.load_models(exports[0], device, extra=exports[1])
        runs.load_supervised_segmenter(exports[1], device)
        loaded = {"seigan": type(model).__name__, "supervised_segmenter": "loaded"}
    return loaded


def dry_run(chapter: str, run_dir=None, device="cpu", fast_path: bool = True, max_passes: int = MAX_PASSES,
            log=print) -> dict:
    """Dry-run ``chapter``'s full profile in ``run_dir`` (default :func:`labkit.train.dry_run_dir`);
    an existing one is resumed, so pass a fresh folder for a clean check). Returns the
    summary it writes to ``<run dir>/dry_run.json``. Raises ``RuntimeError`` when a
    training call does not resume its checkpoint where it was, trains past the interruption,
    a checkpoint's step falls or is never resumed, or the run does not finish within
    ``max_passes``."""
    from .checks import check_device, check_path, check_positive_int

    paper, runs = modules(chapter)
    device = check_device(device)
    check_positive_int(max_passes, "max_passes")
    run_dir = check_path(run_dir, "run_dir") if run_dir is not None else dry_run_dir(chapter)
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = dry_run_settings(chapter)
    full = paper.PROFILES["full"]
    environment = {DRY_RUN_ENV: "1", FAST_PATH_ENV: "1" if fast_path else "0", "LABKIT_RUN_DIR": None}
    began = time.monotonic()
    passes, previous, resumed = [], checkpoint_steps(run_dir), set()
    with _Environment(**environment), warnings.catch_warnings():
        # a few test images make Fréchet distances' covariances singular: expected, and said once here
        warnings.filterwarnings("ignore", message=".*covariances are singular.*")
        warnings.filterwarnings("ignore", message=".*Matrix is singular.*")
        for number in range(1, max_passes + 1):
            started = time.monotonic()
            train.FIT_JOURNAL.clear()
            with _Environment(**{STOP_AFTER_ENV: "1"}):
                _run_pass(chapter, run_dir, device)
            steps = checkpoint_steps(run_dir)
            calls = check_resumes(chapter, number, run_dir, previous, list(train.FIT_JOURNAL))
            resumed |= {call["name"] for call in calls if call["resumed_from"] > 0}
            for name, step in steps.items():
                if step < previous.get(name, 0):
                    raise RuntimeError(f"{chapter} dry run, pass {number}: checkpoint train/{name} went back from "
                                       f"step {previous[name]} to {step}")
            advanced = sorted(name for name, step in steps.items() if step > previous.get(name, 0))
            passes.append({"pass": number, "seconds": round(time.monotonic() - started, 1),
                           "checkpoint_steps": steps, "advanced": advanced, "training_calls": len(calls),
                           "resumed_calls": sum(1 for call in calls if call["resumed_from"] > 0)})
            log(f"[dry run] {chapter} pass {number}: {len(calls)} training calls, {len(advanced)} checkpoint(s) "
                f"advanced ({time.monotonic() - started:.0f} s)")
            previous = steps
            try:
                record = runs.read_record("full", run_dir)   # refuses unfinished or stale records
                break
            except (ValueError, FileNotFoundError) as error:
                if not advanced:
                    raise RuntimeError(f"{chapter} dry run, pass {number}: no network advanced, yet the record "
                                       f"is not finished: {error}") from error
        else:
            raise RuntimeError(f"{chapter} dry run: the record is not finished after {max_passes} passes")
        claims = runs.claims(record)
        loaded = _load_back(chapter, run_dir, device, settings)
    never = sorted(set(previous) - resumed)
    if never:
        raise RuntimeError(f"{chapter} dry run: checkpoints {never} were never resumed (no training call started "
                           "past step 0); give them at least 2 steps in the chapter's DRY_RUN")
    if not previous:
        raise RuntimeError(f"{chapter} dry run: no training checkpoint was written under {run_dir / 'train'}")
    kept = {key: full[key] for key in full if key not in paper.DRY_RUN}
    summary = {
        "chapter": chapter, "run_dir": str(run_dir), "passes": passes,
        "checkpoints": previous, "resumed": sorted(resumed),
        "models_recorded": sorted(record["metrics"]), "claims": len(claims), "loaded": loaded,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
        "shrunk": {k: {"full": (list(full[k]) if isinstance(full[k], tuple) else full[k]),
                       "dry_run": (list(v) if isinstance(v, tuple) else v)} for k, v in paper.DRY_RUN.items()},
        "kept_from_full": sorted(kept),
        "note": getattr(paper, "DRY_RUN_NOTE", ""),
        "bf16_channels_last": fast_path,
        "provenance": provenance("full", 0, device, wall_time_s=time.monotonic() - began, dry_run=True),
    }
    write_json(run_dir / "dry_run.json", summary)
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m labkit.dry_run", description=__doc__.split("\n")[0])
    parser.add_argument("chapters", nargs="*", default=list(CHAPTERS), help=f"some of {list(CHAPTERS)} (default: all)")
    parser.add_argument("--run-dir", default=None, help="a folder for one chapter (default runs/dry-run/<notebook>/)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-fast-path", action="store_true",
                        help="train in float32 without channels_last (default: bf16 autocast + channels_last, "
                             "the GPU run's branch)")
    args = parser.parse_args(argv)
    try:
        chapters = [check_chapter(c) for c in args.chapters]
        if args.run_dir is not None and len(chapters) != 1:
            raise ValueError("--run-dir names the folder of one chapter; give exactly one chapter with it")
    except ValueError as error:
        parser.error(str(error))
    setup(seed=0, threads=args.threads, device="cpu")
    for chapter in chapters:
        summary = dry_run(chapter, run_dir=args.run_dir, fast_path=not args.no_fast_path)
        print(f"[dry run] {chapter}: {len(summary['passes'])} passes, {len(summary['checkpoints'])} checkpoints "
              f"resumed, {summary['claims']} claims judged, {summary['provenance']['wall_time_s']:.0f} s → "
              f"{Path(summary['run_dir']) / 'dry_run.json'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
