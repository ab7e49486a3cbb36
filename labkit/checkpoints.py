"""Atomic files: checkpoints and metrics that survive an interruption.

A file is written to a temporary name in the same folder, flushed to disk
and then renamed over the target, so a reader sees either the old file or
the new one, never half of one. Checkpoints are read with
``weights_only=True``: they hold tensors and plain Python values only.
"""
from __future__ import annotations

import io
import json
import math
import os
import tempfile
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint file exists but cannot be read as one."""


def atomic_write_bytes(path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
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


def save_checkpoint(path, state: dict) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically."""
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
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for a bad file
        raise CheckpointError(
            f"checkpoint {path} is corrupt or not a labkit checkpoint "
            f"(expected a dict saved by labkit.checkpoints.save_checkpoint): {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}") from error
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, expected a dict")
    return state


def write_json(path, payload: dict) -> Path:
    """Write ``payload`` as indented, strict JSON, atomically. NaN and ±inf
    (an undefined IoU, the PSNR of identical images) are written as ``null``."""
    text = json.dumps(_finite(payload), indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n"
    return atomic_write_bytes(path, text.encode())


def read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"metrics file not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


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
