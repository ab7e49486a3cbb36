"""Atomic files: checkpoints and metrics that survive an interruption.

A file is written to a temporary name in the same folder, flushed to disk
and then renamed over the target, so a reader sees either the old file or
the new one, never half of one. Checkpoints are read with
``weights_only=True``: they hold tensors and plain Python values only.
"""
from __future__ import annotations

import collections
import glob
import io
import json
import math
import os
import tempfile
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be read as one."""


# What torch.load(weights_only=True) reads back: tensors and plain Python values.
# Exact types: a subclass (np.float64 is a float, an IntEnum an int) pickles as itself and is refused.
_PLAIN_SCALARS = (bool, int, float, complex, str, bytes, bytearray, type(None), torch.Size, torch.dtype, torch.device)
_PLAIN_CONTAINERS = (dict, list, tuple, set, frozenset)


def _temp_prefix(path: Path) -> str:
    return f".{path.name}."


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporary files a killed writer of ``path`` left behind
    (``.<name>.<pid>.<random>.tmp`` whose process is no longer running here)."""
    prefix = _temp_prefix(path)
    for candidate in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = candidate.name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _process_alive(int(pid)):
            continue
        candidate.unlink(missing_ok=True)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


def atomic_write_bytes(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    The temporary file is ``.<name>.<pid>.<random>.tmp`` next to ``path``; one
    left by a writer that was killed (its process gone) is removed by the next
    write of the same file.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"cannot write {path}: it is a directory, expected a file path")
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    handle, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)   # mkstemp creates 0600; these are ordinary shared files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def check_checkpoint_state(state, name: str = "state") -> dict:
    """Raise ``ValueError`` unless ``state`` is a dict that :func:`load_checkpoint`
    can read back: tensors, numbers, strings, ``None``, ``torch.Size``/``dtype``/
    ``device`` inside dicts, lists, tuples and sets. A NumPy array or scalar, or
    any other object, is named by its key path (convert it with
    ``torch.from_numpy`` or ``.item()``)."""
    if not isinstance(state, dict):
        raise ValueError(f"{name} must be a dict of tensors and plain values, got {type(state).__name__}")
    stack = [(name, state)]
    while stack:
        where, value = stack.pop()
        if type(value) in (dict, collections.OrderedDict):
            for key, item in value.items():
                if type(key) not in (str, int):
                    raise ValueError(f"{where} has a key of type {type(key).__name__} ({key!r}); "
                                     "checkpoint keys must be str or int")
                stack.append((f"{where}[{key!r}]", item))
        elif type(value) in _PLAIN_CONTAINERS:
            stack.extend((f"{where}[{i}]", item) for i, item in enumerate(value))
        elif not (isinstance(value, torch.Tensor) or type(value) in _PLAIN_SCALARS):
            hint = " (convert NumPy values with torch.from_numpy(...) or .item())" \
                if type(value).__module__.split(".")[0] == "numpy" else ""
            raise ValueError(f"{where} is a {type(value).__module__}.{type(value).__qualname__}; a checkpoint "
                             f"holds tensors and plain Python values only{hint}")
    return state


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically.

    ``state`` is checked first (:func:`check_checkpoint_state`), so nothing is
    written that :func:`load_checkpoint` would refuse.
    """
    check_checkpoint_state(state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises ``FileNotFoundError`` naming the path when it is missing and
    :class:`CheckpointError` naming the file when it is truncated, corrupt or
    holds anything but weights and plain values.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); {CORRUPT_ADVICE.format(path=path)}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for a bad file
        raise CheckpointError(f"checkpoint {path} cannot be read ({_reason(error)}); "
                              f"{CORRUPT_ADVICE.format(path=path)}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict; "
                              f"{CORRUPT_ADVICE.format(path=path)}")
    return state


CORRUPT_ADVICE = ("it is truncated, corrupt or not a labkit checkpoint (labkit.checkpoints.save_checkpoint "
                  "writes dicts of tensors and plain values). If it is a training checkpoint, delete or move "
                  "{path} to train that model from the start, or rerun with --restart (LABKIT_RESTART=1), which "
                  "sets it aside; if it is a committed file, restore it with `git checkout -- {path}`")


def _reason(error: Exception) -> str:
    """torch's error for a bad file, without its advice to load with ``weights_only=False``
    (that would run arbitrary code from the file)."""
    text = str(error)
    if "weights_only" in text:
        found = [line.strip() for line in text.splitlines() if "Unsupported global" in line]
        if found:
            what = found[0].split(" was not")[0].replace("WeightsUnpickler error: ", "")
            return f"it holds Python objects other than tensors and plain values: {what}"
        detail = [line.strip() for line in text.splitlines()
                  if line.strip() and "weights_only" not in line and "WeightsUnpickler" not in line
                  and "Please file an issue" not in line]
        return "it is not a pickle of tensors and plain values" + (f": {detail[0]}" if detail else "")
    first = text.strip().splitlines()[0].split(". ")[0] if text.strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def write_json(path, payload: dict) -> Path:
    """Write ``payload`` as indented, strict JSON, atomically. NaN and ±inf
    (an undefined IoU, the PSNR of identical images) are written as ``null``."""
    if not isinstance(payload, dict):
        raise ValueError(f"payload must be a dict (a JSON object), got {type(payload).__name__}")
    try:
        text = json.dumps(_finite(payload), indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n"
    except TypeError as error:
        raise ValueError(f"payload for {path} cannot be written as JSON: {error}") from None
    return atomic_write_bytes(path, text.encode())


def read_json(path) -> dict:
    """Read a JSON object written by :func:`write_json`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    try:
        payload = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"{path} holds a JSON {type(payload).__name__}, expected an object")
    return payload


def _finite(value):
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _json_default(value):
    if isinstance(value, torch.Tensor):
        return _finite(value.tolist())
    if hasattr(value, "item"):
        return _finite(value.item())
    if hasattr(value, "tolist"):
        return _finite(value.tolist())
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
