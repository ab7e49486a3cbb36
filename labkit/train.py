"""Shared training pieces: setup, profiles, provenance and one training loop.

The loop follows the course's "load or train" pattern: it resumes from its
checkpoint when one exists, saves atomically every ``checkpoint_every`` steps
and when its time budget (``max_minutes``) runs out, and can be killed at any
moment without losing more than the steps since the last save. Batches are a
function of the step number, so a resumed run sees exactly the data an
uninterrupted run would have seen.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import random
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint, write_json

PROFILE_NAMES = ("smoke", "book", "full")
_SETUP_AT: float | None = None   # time.monotonic() of the last labkit.setup call
_SETUP_COMMIT: str | None = None   # git_commit() at the last labkit.setup call
REPO_ROOT = Path(__file__).resolve().parent.parent


def choose_device(name: str = "auto") -> torch.device:
    """``auto`` picks cuda, then mps, then cpu; a named device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {name!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available here")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {name!r} was asked for but MPS is not available here")
    return device


THREADS_ENV = "LABKIT_THREADS"
RESTART_ENV = "LABKIT_RESTART"
DRY_RUN_ENV = "LABKIT_DRY_RUN"
"""``LABKIT_DRY_RUN=1``: :func:`select_profile` shrinks the ``full`` profile by the chapter's
``DRY_RUN`` overrides (see :func:`register_dry_run` and :mod:`labkit.dry_run`)."""
DRY_RUN_ROOT_ENV = "LABKIT_DRY_RUN_ROOT"
"""The folder of dry runs (default ``runs/dry-run``): see :func:`dry_run_dir`."""
STOP_AFTER_ENV = "LABKIT_STOP_AFTER_STEPS"
"""``LABKIT_STOP_AFTER_STEPS=N``: every :func:`fit` call of the process stops after N steps of its
own, as an interruption would (the dry run's resume check uses it)."""
FAST_PATH_ENV = "LABKIT_BF16_CHANNELS_LAST"
"""``LABKIT_BF16_CHANNELS_LAST``: ``auto`` (default: on for CUDA only), ``1`` (on for any device,
so a CPU runs the branch a GPU run takes) or ``0`` (off everywhere): :func:`fit`'s bf16 autocast
and channels_last networks."""


def _env_flag(name: str) -> bool:
    """An on/off environment variable: 1/true/yes or 0/false/no (unset: off)."""
    value = os.environ.get(name, "").strip().lower()
    if value not in ("", "0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"environment variable {name} must be 1 or 0, got {value!r}")
    return value in ("1", "true", "yes")


def dry_run_requested() -> bool:
    """True when ``LABKIT_DRY_RUN=1`` (``--dry-run`` of the run modules, :mod:`labkit.dry_run`)."""
    return _env_flag(DRY_RUN_ENV)


def stop_after_from_environment() -> int | None:
    """``LABKIT_STOP_AFTER_STEPS`` as a positive integer, or None when unset."""
    from .checks import check_positive_int

    value = os.environ.get(STOP_AFTER_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit():
        raise ValueError(f"environment variable {STOP_AFTER_ENV} must be a positive integer, got {value!r}")
    return check_positive_int(int(value), f"environment variable {STOP_AFTER_ENV}")


def fast_path(device) -> bool:
    """Whether :func:`fit` trains on ``device`` under bf16 autocast with channels_last networks:
    on CUDA by default; ``LABKIT_BF16_CHANNELS_LAST=1`` turns it on for any device (the CPU dry
    run exercises the GPU run's branch this way), ``0`` off everywhere."""
    value = os.environ.get(FAST_PATH_ENV, "auto").strip().lower() or "auto"
    if value not in ("auto", "0", "1"):
        raise ValueError(f"environment variable {FAST_PATH_ENV} must be auto, 1 or 0, got {value!r}")
    if value == "auto":
        return torch.device(device).type == "cuda"
    return value == "1"


_DRY_RUNS: dict[int, dict] = {}   # id(a chapter's PROFILES) → its dry run's overrides of "full"
KEPT_IN_DRY_RUN = ("width", "batch_size", "depth", "samples", "learning_rate", "lr", "critic_steps")
"""Settings a dry run may not shrink (any key containing one of these): it runs the full
profile's networks, batches and losses, only fewer steps, scenes and (where stated) pixels."""


def register_dry_run(profiles: dict, overrides: dict) -> dict:
    """Declare how chapter ``profiles``' ``full`` profile shrinks for a dry run, and return
    ``overrides``. Chapters call it once, at import: ``DRY_RUN = register_dry_run(PROFILES, {...})``.

    ``overrides`` may change step counts, scene and image counts, and the image size (where a
    full-size step is too slow for a 2-core CPU; the chapter says so). The networks' widths and
    depths, batch sizes, learning rates and the number of outputs stay the full profile's
    (:data:`KEPT_IN_DRY_RUN`), except that a list of per-scale widths may drop its first
    (coarsest) entries when the smaller image has fewer scales: every remaining module keeps
    its full width."""
    if not isinstance(profiles, dict) or "full" not in profiles:
        raise ValueError("profiles must be a chapter's PROFILES table with a 'full' profile")
    if not isinstance(overrides, dict) or not overrides:
        raise ValueError(f"overrides must be a non-empty dict of full-profile settings, got {overrides!r}")
    unknown = sorted(set(overrides) - set(profiles["full"]))
    if unknown:
        raise ValueError(f"dry-run overrides {unknown} are not settings of the full profile; "
                         f"expected some of {sorted(profiles['full'])}")
    full = profiles["full"]
    kept = sorted(key for key, value in overrides.items() if any(part in key for part in KEPT_IN_DRY_RUN)
                  and not (isinstance(value, tuple) and isinstance(full[key], tuple) and value
                           and tuple(full[key][-len(value):]) == value))
    if kept:
        raise ValueError(f"a dry run keeps the full profile's {kept}: it shrinks steps, scenes and sizes only "
                         "(a list of widths may only lose its first, coarsest entries)")
    _DRY_RUNS[id(profiles)] = dict(overrides)
    return overrides


def setup(seed: int = 0, threads: int | None = 2, device: str = "auto", deterministic: bool = True) -> torch.device:
    """The one setup call of every notebook and script.

    Seeds Python, NumPy and torch; fixes the CPU thread count (results of
    float reductions depend on it); asks torch for deterministic kernels;
    returns the chosen device.

    ``seed`` is an integer in [0, 2**32 - 1]; ``threads`` a positive integer
    or ``None`` (leave torch's count alone). The environment variable
    ``LABKIT_THREADS`` overrides ``threads`` for a whole process tree: the
    portability check (``scripts/check_notebooks_portable.sh``) runs every
    notebook at 1 and at 2 threads this way, and a machine with more cores can
    use them without editing a notebook.
    """
    global _SETUP_AT, _SETUP_COMMIT
    from .checks import check_positive_int, check_seed

    seed = check_seed(seed)
    from_env = os.environ.get(THREADS_ENV, "").strip()
    if from_env:
        threads = check_positive_int(int(from_env) if from_env.isdigit() else from_env,
                                     f"environment variable {THREADS_ENV}")
    elif threads is not None:
        threads = check_positive_int(threads, "threads")
    device = choose_device(device)
    _SETUP_AT = time.monotonic()
    _SETUP_COMMIT = git_commit()   # the code this process runs, even if HEAD moves during a long run
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    return device


def select_profile(profiles: dict[str, dict], name: str) -> dict:
    """Return the settings of profile ``name`` from a chapter's table.

    Each chapter declares ``PROFILES = {"smoke": {...}, "book": {...},
    "full": {...}}`` in one place; an unknown name is an error that lists them.
    Under ``LABKIT_DRY_RUN=1`` the ``full`` profile comes back shrunk by the chapter's
    :func:`register_dry_run` overrides, with ``dry_run: True`` among its settings.
    """
    if not isinstance(profiles, dict) or not all(isinstance(v, dict) for v in profiles.values()):
        raise ValueError(f"profiles must be a dict of profile name → settings dict, got {type(profiles).__name__}")
    if not isinstance(name, str) or name not in profiles:
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(profiles)}")
    settings = dict(profiles[name], profile=name)
    if name == "full" and dry_run_requested():
        if id(profiles) not in _DRY_RUNS:
            raise ValueError(f"{DRY_RUN_ENV}=1 asks for a dry run of the full profile, but this PROFILES table "
                             "declares none (labkit.train.register_dry_run)")
        settings.update(_DRY_RUNS[id(profiles)], dry_run=True)
    return settings


def git_commit() -> str:
    """The current commit (with ``-dirty`` if the tree has changes), or ``unknown``."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(profile: str, seed: int, device, wall_time_s: float | None = None, **extra) -> dict:
    """Where a number came from: commit, profile, seed, device, versions, time.

    ``wall_time_s`` defaults to the time since the last :func:`setup` call,
    i.e. the run so far when a notebook or script calls this at its end.
    ``commit`` is the commit at that :func:`setup` call: the code the process
    loaded. If HEAD has moved since (a commit made during a long run), the
    commit at writing time is kept too, as ``commit_at_write``.
    """
    import labkit

    from .checks import check_number, check_seed

    check_seed(seed)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch.device or a name such as 'cpu' or 'cuda', got {device!r}") from None
    check_number(wall_time_s, "wall_time_s", minimum=0.0, allow_none=True)
    now = git_commit()
    info = {
        "commit": _SETUP_COMMIT or now,
        "profile": profile,
        "seed": seed,
        "device": str(device),
        "device_name": torch.cuda.get_device_name() if torch.device(device).type == "cuda" else platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "versions": {"python": platform.python_version(), "torch": str(torch.__version__),
                     "numpy": np.__version__, "labkit": labkit.__version__},
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if _SETUP_COMMIT and now != _SETUP_COMMIT:
        info["commit_at_write"] = now
    if wall_time_s is None and _SETUP_AT is not None:
        wall_time_s = time.monotonic() - _SETUP_AT
    if wall_time_s is not None:
        info["wall_time_s"] = round(float(wall_time_s), 2)
    info.update(extra)
    return info


def run_argument_parser(module: str, description: str, profiles: dict, chapter: str, export_help: str,
                        budget_help: str = "training budget per network in this call"):
    """The command line every chapter's run module shares (``python -m <module>``):
    --profile, --device, --max-minutes, --run-dir, --export, --threads, --seed, --restart, --dry-run.
    The module adds its own --models (and --parts) and calls :func:`setup` with them."""
    parser = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    parser.add_argument("--profile", default="book", choices=sorted(profiles))
    parser.add_argument("--device", default="auto", type=argparse_device,
                        help="auto, cpu, cuda, cuda:N or mps (must exist here)")
    parser.add_argument("--max-minutes", type=argparse_minutes, default=None, help=budget_help)
    parser.add_argument("--run-dir", default=None, help=f"default: reports/<profile>/{chapter}/")
    parser.add_argument("--export", action="store_true", help=export_help)
    parser.add_argument("--threads", type=argparse_positive_int, default=2)
    parser.add_argument("--seed", type=argparse_seed, default=0)
    parser.add_argument("--restart", action=_RestartAction,
                        help="set the existing training checkpoints aside (renamed, not deleted) and train from step 0")
    parser.add_argument("--dry-run", action=_DryRunAction,
                        help="with --profile full: the full profile's networks, batches and losses for 2 steps "
                             "each on a few scenes, under bf16 autocast + channels_last, into runs/dry-run/"
                             "<notebook>/ (python -m labkit.dry_run adds the resume check)")
    return parser


class _DryRunAction(argparse.Action):
    """``--dry-run``: sets LABKIT_DRY_RUN=1 (and LABKIT_BF16_CHANNELS_LAST=1 unless set) as it is parsed."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[DRY_RUN_ENV] = "1"
        os.environ.setdefault(FAST_PATH_ENV, "1")
        setattr(namespace, self.dest, True)


def check_dry_run_arguments(parser, args) -> None:
    """``--dry-run`` goes with ``--profile full`` and without ``--export`` (which would write the
    full profile's committed-checkpoint paths); a usage error otherwise."""
    if getattr(args, "dry_run", False):
        if args.profile != "full":
            parser.error(f"--dry-run shrinks the full profile; use it with --profile full, not {args.profile}")
        if args.export:
            parser.error("--dry-run does not export: --export would write the full profile's checkpoints/ files")


class _RestartAction(argparse.Action):
    """``--restart``: sets LABKIT_RESTART=1 as it is parsed, so every run module honours it."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        os.environ[RESTART_ENV] = "1"
        setattr(namespace, self.dest, True)


def _argparse_type(check):
    """Wrap a labkit check as an argparse ``type``: a bad value is a usage error (exit 2)."""
    def convert(text: str):
        try:
            return check(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return convert


def _parse_int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {text!r}") from None


# argparse prefixes "argument --option:" to these messages, so they say "value", not an option's name
def _positive_int(text: str) -> int:
    from .checks import check_positive_int

    return check_positive_int(_parse_int(text, "value"), "value")


def _seed(text: str) -> int:
    from .checks import check_seed

    return check_seed(_parse_int(text, "value"), "value")


def _minutes(text: str) -> float:
    from .checks import check_number

    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"value must be a number of minutes ≥ 0, got {text!r}") from None
    return check_number(value, "value", minimum=0.0)


def _device(text: str) -> str:
    choose_device(text)   # refuses a device that does not exist here
    return text


argparse_positive_int = _argparse_type(_positive_int)
argparse_seed = _argparse_type(_seed)
argparse_minutes = _argparse_type(_minutes)
argparse_device = _argparse_type(_device)


def write_metrics(path, metrics: dict, provenance_info: dict) -> Path:
    """Write ``{"provenance": ..., "metrics": ...}`` atomically to ``path``."""
    for name, value in (("metrics", metrics), ("provenance_info", provenance_info)):
        if not isinstance(value, dict):
            raise ValueError(f"{name} must be a dict, got {type(value).__name__}")
    return write_json(path, {"provenance": provenance_info, "metrics": metrics})


def _check_profile_and_chapter(profile, chapter) -> None:
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {list(PROFILE_NAMES)}")
    if not isinstance(chapter, str) or not chapter or chapter in (".", "..") or "/" in chapter or "\\" in chapter:
        raise ValueError(f"chapter must be a folder name such as 'crn' (no path separators), got {chapter!r}")


def dry_run_dir(chapter: str) -> Path:
    """``runs/dry-run/<notebook>/`` (e.g. ``runs/dry-run/01_crn/`` for ``crn``; ``LABKIT_DRY_RUN_ROOT``
    replaces ``runs/dry-run``): where a dry run of the full profile goes, the folder ``labkit
    reproduce --profile full --dry-run`` runs the chapter's notebook in, so the notebook finds the
    run module's dry-run checkpoints there, and the report finds every chapter's."""
    from .cli import chapters

    stems = chapters(REPO_ROOT / "notebooks")   # 01_crn … 04_semantic_analogy: a paper's key may end a stem
    matches = [stem for stem in stems if chapter in (stem, stem.split("_", 1)[0], stem.split("_", 1)[-1])
               or stem.endswith("_" + chapter)]
    name = matches[0] if len(matches) == 1 else chapter
    root = os.environ.get(DRY_RUN_ROOT_ENV, "").strip()
    return (Path(root) if root else REPO_ROOT / "runs" / "dry-run") / name


def reports_dir(profile: str, chapter: str) -> Path:
    """``reports/<profile>/<chapter>/``, or the folder named by ``LABKIT_RUN_DIR``
    (set by ``labkit reproduce`` so a run's metrics land beside its notebook); a dry run of
    the full profile (``LABKIT_DRY_RUN=1``) defaults to :func:`dry_run_dir`."""
    _check_profile_and_chapter(profile, chapter)
    override = os.environ.get("LABKIT_RUN_DIR")
    if override:
        path = Path(override)
    elif profile == "full" and dry_run_requested():   # never where a real full run's record goes
        path = dry_run_dir(chapter)
    else:
        path = REPO_ROOT / "reports" / profile / chapter
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_dir(profile: str, chapter: str, run_dir=None) -> Path:
    """Where a chapter's runs of ``profile`` are recorded: the committed book record's folder
    ``reports/book/<chapter>/`` for the book profile, else the run dir (default :func:`reports_dir`)."""
    _check_profile_and_chapter(profile, chapter)
    if profile == "book" and run_dir is None:
        return REPO_ROOT / "reports" / "book" / chapter
    return Path(run_dir or reports_dir(profile, chapter))


def read_run_record(path, module: str, profile: str, required) -> dict:
    """A chapter's merged run record (``metrics.json``), refused with the command that fixes it
    when it is missing, lacks a ``required`` model, lists stale models, or holds a model whose
    training stopped before its last step (``finished`` false, a ``--max-minutes`` budget)."""
    from .checkpoints import read_json

    if isinstance(required, str) or not all(isinstance(name, str) for name in required):
        raise ValueError(f"required must be a list of model names, got {required!r}")
    path = Path(path)
    rerun = f"python -m {module} --profile {profile}"
    if not path.is_file():
        raise FileNotFoundError(f"no record at {path}; run `{rerun}`")
    record = read_json(path)
    metrics = record.get("metrics", {})
    problems = (("has no record of", [name for name in required if name not in metrics]),
                ("lists models scored before their networks trained further:", record.get("stale") or []),
                ("has models that stopped before their last step:",
                 sorted(name for name, m in metrics.items() if isinstance(m, dict) and m.get("finished") is False)))
    for what, names in problems:
        if names:
            raise ValueError(f"{path} {what} {names}; run `{rerun} --models {' '.join(names)}`")
    return record


def run_from_command_line(parser, run, argv=None) -> int:
    """The end of every run module's ``main``: parse ``argv`` with the parser of
    :func:`run_argument_parser` (plus ``--models``), call :func:`setup`, then ``run``."""
    args = parser.parse_args(argv)
    check_dry_run_arguments(parser, args)
    device = setup(seed=args.seed, threads=args.threads, device=args.device)
    run(args.profile, args.models, device, args.max_minutes, args.run_dir, args.export, seed=args.seed)
    return 0


# --------------------------------------------------------------------------- DDP

def distributed_context(device: torch.device | None = None):
    """(rank, world_size); under ``torchrun`` initialises the process group:
    NCCL for a model on CUDA (each process on its ``LOCAL_RANK`` GPU), gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        on_cuda = device is not None and torch.device(device).type == "cuda"
        if on_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if on_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def shard(batch, rank: int, world: int):
    """This rank's slice of a global batch (tensors split on dim 0)."""
    from .checks import check_int, check_positive_int

    check_positive_int(world, "world")
    check_int(rank, "rank", minimum=0, maximum=world - 1)
    if world == 1:
        return batch
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] % world:
            raise ValueError(f"global batch of {batch.shape[0]} does not split over {world} processes")
        size = batch.shape[0] // world
        return batch[rank * size:(rank + 1) * size]
    if isinstance(batch, dict):
        sizes = {len(v) for v in batch.values() if isinstance(v, torch.Tensor)}
        return {k: _shard_per_sample(v, rank, world, sizes) for k, v in batch.items()}
    if isinstance(batch, tuple):
        return tuple(shard(v, rank, world) for v in batch)
    if batch is None or isinstance(batch, (bool, int, float, str)):
        return batch
    raise TypeError(f"cannot shard a batch of type {type(batch).__name__}; use tensors, tuples or dicts")


def _shard_per_sample(value, rank: int, world: int, sizes: set[int]):
    """Dict entries: tensors split on dim 0; a list with one entry per sample
    (e.g. ``objects`` of :func:`labkit.data.collate_scenes`) split alike."""
    if isinstance(value, list) and len(sizes) == 1 and len(value) in sizes:
        size = len(value) // world
        return value[rank * size:(rank + 1) * size]
    return shard(value, rank, world)


# --------------------------------------------------------------------------- the loop

@dataclass
class FitResult:
    steps_done: int
    finished: bool
    history: list[dict] = field(default_factory=list)
    wall_time_s: float = 0.0
    resumed_from: int = 0


FIT_JOURNAL: list[dict] = []
"""One entry per :func:`fit` call of this process that had a checkpoint: {"checkpoint", "resumed_from",
"steps_done", "steps"}. The dry run (:mod:`labkit.dry_run`) reads it to check that every call resumed
its checkpoint where the previous call left it."""

RESTART_ADVICE = ("delete or move {path} to train this model from the start, or rerun with --restart "
                  "(LABKIT_RESTART=1), which sets it aside")
_SET_ASIDE: set[Path] = set()   # checkpoints this process already set aside (and now owns)


def restart_requested() -> bool:
    """True when ``LABKIT_RESTART=1``: the run modules' ``--restart`` and
    ``labkit reproduce --restart`` set it, so every :func:`fit` of the run sets its
    existing checkpoint aside (renamed, not deleted) and trains from step 0."""
    return _env_flag(RESTART_ENV)


def _set_aside(checkpoint: Path) -> None:
    """Rename ``checkpoint`` to ``<name>.set-aside-<UTC time>`` once per process."""
    checkpoint = checkpoint.resolve()
    if checkpoint in _SET_ASIDE:
        return
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    target = checkpoint.with_name(f"{checkpoint.name}.set-aside-{stamp}")
    os.replace(checkpoint, target)
    _SET_ASIDE.add(checkpoint)
    print(f"[labkit] --restart: moved {checkpoint} to {target.name}; training from step 0", flush=True)


def _check_fit_arguments(model, optimizer, batch_for_step, loss_fn, steps, checkpoint, checkpoint_every,
                         max_minutes, log_every, stop_after, config, extra_optimizers, description) -> None:
    """:func:`fit`'s boundary: everything is checked before the first step runs."""
    from .checks import check_int, check_number, check_path, check_positive_int

    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not any(True for _ in model.parameters()):
        raise ValueError(f"model {type(model).__name__} has no parameters to train")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ValueError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    for name, value in (("batch_for_step", batch_for_step), ("loss_fn", loss_fn)):
        if not callable(value):
            raise ValueError(f"{name} must be callable, got {type(value).__name__}")
    check_int(steps, "steps", minimum=0)
    check_positive_int(checkpoint_every, "checkpoint_every")
    check_positive_int(log_every, "log_every")
    check_number(max_minutes, "max_minutes", minimum=0.0, allow_none=True)
    if stop_after is not None:
        check_int(stop_after, "stop_after", minimum=0)
    if config is not None and not isinstance(config, dict):
        raise ValueError(f"config must be a dict or None, got {type(config).__name__}")
    if extra_optimizers is not None:
        if not isinstance(extra_optimizers, dict) or not all(
                isinstance(o, torch.optim.Optimizer) for o in extra_optimizers.values()):
            raise ValueError("extra_optimizers must be a dict of name → torch.optim.Optimizer, "
                             f"got {extra_optimizers!r}")
    if not isinstance(description, str):
        raise ValueError(f"description must be a str, got {type(description).__name__}")
    if checkpoint is not None:
        path = check_path(checkpoint, "checkpoint")
        if path.is_dir():
            raise ValueError(f"checkpoint must be a file path, got the directory {path}")
        folder = next((p for p in [path.parent, *path.parent.parents] if p.exists()), None)
        if folder is None or not folder.is_dir():
            raise ValueError(f"checkpoint {path}: its folder cannot be created ({folder} is not a directory)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(f"checkpoint {path}: the folder {folder} is not writable")


def fit(model: nn.Module, optimizer: torch.optim.Optimizer, batch_for_step: Callable[[int], object],
        loss_fn: Callable[[nn.Module, object], tuple[torch.Tensor, dict]], *, steps: int,
        checkpoint: str | Path | None = None, checkpoint_every: int = 200,
        max_minutes: float | None = None, scheduler=None, device=None, progress: bool = True,
        description: str = "training", log_every: int = 10, stop_after: int | None = None,
        config: dict | None = None, extra_optimizers: dict | None = None) -> FitResult:
    """Train ``model`` for ``steps`` optimizer steps, resumably.

    batch_for_step(step) -> the *global* batch of that step (deterministic):
    a tensor, a tuple, or a dict of tensors (lists with one entry per sample
    are split alike). Under ``torchrun`` each process takes its shard and DDP
    averages the gradients, so N processes follow the trajectory of one
    process on the whole batch, exactly for models without batch statistics;
    BatchNorm normalises each shard on its own unless the model uses
    ``nn.SyncBatchNorm``. loss_fn(model, batch) -> (loss, logs: dict of floats).

    The checkpoint holds the model, optimizer, scheduler, step, history, the
    torch/CUDA/NumPy/Python random states and the wall time so far; ``config``
    (any plain dict describing the run) is stored too, and resuming from a
    checkpoint of a different config is an error instead of a silent mix.
    On CUDA the forward pass runs under bf16 autocast with channels_last
    (:func:`fast_path`; ``LABKIT_BF16_CHANNELS_LAST=1`` takes the same branch
    on a CPU). ``stop_after`` ends the call after that many steps of *this*
    call (the tests and the dry run use it to simulate an interruption;
    ``LABKIT_STOP_AFTER_STEPS`` sets it for every call of a process). ``extra_optimizers`` (name →
    optimizer) are optimizers that ``loss_fn`` steps itself, such as a GAN's
    discriminator optimizer: ``fit`` only checkpoints and restores them.

    Every argument is checked before the first step (``steps`` ≥ 0,
    ``checkpoint_every`` and ``log_every`` ≥ 1, ``max_minutes`` None or ≥ 0,
    ``checkpoint`` a file path in a writable folder). A checkpoint that cannot
    be read, or belongs to another config, is an error that names the file and
    says what to do; with ``LABKIT_RESTART=1`` (``--restart``) it is renamed
    aside and training starts at step 0. A non-finite loss at a logged step
    stops training with ``FloatingPointError`` before anything is saved.
    """
    from tqdm.auto import tqdm

    _check_fit_arguments(model, optimizer, batch_for_step, loss_fn, steps, checkpoint, checkpoint_every,
                         max_minutes, log_every, stop_after, config, extra_optimizers, description)
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rank, world = distributed_context(device)
    start_step, history, time_before = 0, [], 0.0
    if checkpoint is not None and checkpoint.is_file() and restart_requested() and rank == 0:
        _set_aside(checkpoint)
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, map_location=device)   # its errors say what to do
        missing = {"model", "optimizer", "step"} - set(state)
        if missing:
            raise CheckpointError(f"{checkpoint} is not a training checkpoint: missing {sorted(missing)}; "
                                  f"{RESTART_ADVICE.format(path=checkpoint)}")
        if config is not None and state.get("config") not in (None, config):
            raise ValueError(f"{checkpoint} was written by a run with config {state['config']}, not {config}; "
                             f"{RESTART_ADVICE.format(path=checkpoint)}")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as error:
            raise CheckpointError(f"{checkpoint} does not fit this model: {str(error).splitlines()[0]}; "
                                  f"{RESTART_ADVICE.format(path=checkpoint)}") from None
        for name, extra in (extra_optimizers or {}).items():
            if name not in state.get("extra_optimizers", {}):
                raise CheckpointError(f"{checkpoint} has no state for optimizer {name!r}; "
                                      f"{RESTART_ADVICE.format(path=checkpoint)}")
            extra.load_state_dict(state["extra_optimizers"][name])
        if scheduler is not None and "scheduler" in state:
            scheduler.load_state_dict(state["scheduler"])
        start_step, history = int(state["step"]), list(state.get("history", []))
        time_before = float(state.get("wall_time_s", 0.0))
        _restore_random_states(state)
    use_cuda = device.type == "cuda"
    accelerated = fast_path(device)
    if stop_after is None:
        stop_after = stop_after_from_environment()
    if accelerated:
        model = model.to(memory_format=torch.channels_last)
    trained = model
    if world > 1:
        trained = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if use_cuda else None)

    began = time.monotonic()

    def save(step, wall_time_s=None):
        if checkpoint is None or rank != 0:
            return
        wall_time_s = time_before + time.monotonic() - began if wall_time_s is None else wall_time_s
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                 "history": history, "wall_time_s": wall_time_s,
                 "config": config, **_random_states()}
        if extra_optimizers:
            state["extra_optimizers"] = {name: extra.state_dict() for name, extra in extra_optimizers.items()}
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        save_checkpoint(checkpoint, state)

    def out_of_time() -> bool:
        over = max_minutes is not None and time.monotonic() - began > 60 * max_minutes
        if world > 1:   # every process must stop at the same step, or DDP's all-reduce hangs
            import torch.distributed as dist

            flag = torch.tensor([float(over)], device=device if use_cuda else "cpu")
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            over = bool(flag.item())
        return over

    model.train()
    step = start_step
    bar = tqdm(total=steps, initial=start_step, desc=description, disable=not progress or rank != 0,
               dynamic_ncols=True, leave=False)
    try:
        while step < steps:
            if out_of_time() or (stop_after is not None and step - start_step >= stop_after):
                break
            batch = shard(batch_for_step(step), rank, world)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=accelerated):
                loss, logs = loss_fn(trained, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
            bar.update(1)
            if step % log_every == 0 or step == steps:
                entry = {"step": step, "loss": float(loss.detach())}
                if not math.isfinite(entry["loss"]):
                    raise FloatingPointError(
                        f"{description}: the loss is {entry['loss']} at step {step}; training stopped and these "
                        "weights were not saved (a checkpoint on disk keeps the last save before it)")
                entry.update({k: float(v) for k, v in logs.items()})
                history.append(entry)
                bar.set_postfix(loss=f"{entry['loss']:.4f}")
            if step % checkpoint_every == 0:
                save(step)
    finally:
        bar.close()
    # the wall time returned is the one the checkpoint keeps, so a resumed run's total never falls below it
    wall_time_s = time_before + time.monotonic() - began
    save(step, wall_time_s)
    if checkpoint is not None:
        FIT_JOURNAL.append({"checkpoint": str(checkpoint.resolve()), "resumed_from": start_step, "steps_done": step,
                            "steps": steps})
    model.eval()
    return FitResult(steps_done=step, finished=step >= steps, history=history,
                     wall_time_s=wall_time_s, resumed_from=start_step)


def _random_states() -> dict:
    states = {"torch_rng": torch.get_rng_state(), "numpy_rng": _numpy_state_to_plain(np.random.get_state()),
              "python_rng": _python_state_to_plain(random.getstate())}
    if torch.cuda.is_available():
        states["cuda_rng"] = torch.cuda.get_rng_state_all()
    return states


def _restore_random_states(state: dict) -> None:
    if "torch_rng" in state:
        torch.set_rng_state(state["torch_rng"].cpu())
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])
    if "numpy_rng" in state:
        kind, keys, pos, has_gauss, gauss = state["numpy_rng"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "python_rng" in state:
        version, internal, gauss = state["python_rng"]
        random.setstate((version, tuple(internal), gauss))


# weights_only loading accepts tensors and plain containers, not numpy arrays or tuples of them.
def _numpy_state_to_plain(numpy_state):
    kind, keys, pos, has_gauss, gauss = numpy_state
    return [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]


def _python_state_to_plain(python_state):
    version, internal, gauss = python_state
    return [version, list(internal), gauss]
