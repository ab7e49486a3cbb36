"""Argument checks shared by every public entry of labkit.

Each check raises at the boundary, before any work is done, with a message
that names the argument, what was expected and what was given:

    >>> check_positive_int(0, "steps")
    Traceback (most recent call last):
    ...
    ValueError: steps must be a positive integer, got 0

Images and label maps have their own checks in :mod:`labkit.data.validation`;
this module holds the plain ones (counts, sizes, numbers, choices, devices)
and the generic tensor checks (shape, finiteness, value range) that the
networks and losses use.
"""
from __future__ import annotations

import math
import numbers
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {value.shape}"
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def reads_values() -> bool:
    """Whether the checks may read a tensor's values (NaN, range, ids). Not while
    ``torch.compile`` traces a model: a data-dependent branch would break its graph,
    and the same call is checked when it runs eagerly."""
    compiler = getattr(torch, "compiler", None)
    return not (compiler is not None and compiler.is_compiling())


def check_int(value, name: str, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """An integer (not a bool, not a float) in [minimum, maximum]; returns it as ``int``."""
    if minimum is not None and maximum is not None:
        expected = f"an integer in [{minimum}, {maximum}]"
    elif minimum is not None:
        expected = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer ≥ {minimum}")
    elif maximum is not None:
        expected = f"an integer ≤ {maximum}"
    else:
        expected = "an integer"
    if not _is_int(value):
        raise ValueError(f"{name} must be {expected}, got {_describe(value)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {expected}, got {value}")
    return value


def check_positive_int(value, name: str) -> int:
    """An integer ≥ 1."""
    return check_int(value, name, minimum=1)


def check_non_negative_int(value, name: str) -> int:
    """An integer ≥ 0."""
    return check_int(value, name, minimum=0)


def check_seed(value, name: str = "seed") -> int:
    """A seed NumPy and torch both accept: an integer in [0, 2**32 - 1]."""
    return check_int(value, name, minimum=0, maximum=2**32 - 1)


def check_number(value, name: str, *, minimum: float | None = None, maximum: float | None = None,
                 strict_minimum: bool = False, allow_none: bool = False) -> float | None:
    """A finite real number in [minimum, maximum] (``(minimum, maximum]`` when
    ``strict_minimum``); ``None`` passes through when ``allow_none``."""
    if value is None and allow_none:
        return None
    low = "" if minimum is None else ("> " if strict_minimum else "≥ ") + f"{minimum:g}"
    high = "" if maximum is None else f"≤ {maximum:g}"
    expected = "a finite number" + (f" {low}" if low else "") + (" and" if low and high else "") + \
        (f" {high}" if high else "") + (" or None" if allow_none else "")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be {expected}, got {_describe(value)}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be {expected}, got {value}")
    if minimum is not None and (value <= minimum if strict_minimum else value < minimum):
        raise ValueError(f"{name} must be {expected}, got {value:g}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be {expected}, got {value:g}")
    return value


def check_probability(value, name: str) -> float:
    """A number in [0, 1]."""
    return check_number(value, name, minimum=0.0, maximum=1.0)


def check_choice(value, name: str, choices: Iterable) -> object:
    """One of ``choices`` (compared with ==)."""
    choices = list(choices)
    if not any(value == choice and type(value) is type(choice) for choice in choices):
        raise ValueError(f"{name} must be one of {choices}, got {_describe(value)}")
    return value


def check_pair(value, name: str, *, minimum: int = 1, multiple_of: int = 1) -> tuple[int, int]:
    """An image size (H, W): two integers ≥ ``minimum``, each a multiple of ``multiple_of``."""
    extra = f" that are multiples of {multiple_of}" if multiple_of > 1 else ""
    expected = f"a pair (H, W) of integers ≥ {minimum}{extra}"
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, torch.Size, np.ndarray)):
        raise ValueError(f"{name} must be {expected}, got {_describe(value)}")
    if len(value) != 2 or not all(_is_int(v) for v in value):
        raise ValueError(f"{name} must be {expected}, got {_describe(value)}")
    height, width = int(value[0]), int(value[1])
    if height < minimum or width < minimum or height % multiple_of or width % multiple_of:
        raise ValueError(f"{name} must be {expected}, got {(height, width)}")
    return height, width


def check_tensor(value, name: str, *, shape: str, ndim: int | Sequence[int] | None = None,
                 channels: int | None = None, floating: bool = True, finite: bool = True,
                 value_range: tuple[float, float] | None = None, non_empty: bool = True,
                 tolerance: float = 1e-3) -> torch.Tensor:
    """A tensor with ``ndim`` dimensions (``shape`` is the human description,
    e.g. ``"(N, 3, H, W)"``), ``channels`` in dim 1 when given, a float dtype
    when ``floating``, at least one element when ``non_empty``, no NaN/inf
    when ``finite`` and values within ``value_range`` (± ``tolerance``)."""
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape {shape}, got {_describe(value)}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if value.dim() not in allowed:
            raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
    if channels is not None and (value.dim() < 2 or value.shape[1] != channels):
        raise ValueError(f"{name} must have shape {shape} with {channels} channels in dim 1, "
                         f"got {tuple(value.shape)}")
    if floating and not value.is_floating_point():
        raise ValueError(f"{name} must be a float tensor of shape {shape}, got dtype {value.dtype}")
    if non_empty and value.numel() == 0:
        raise ValueError(f"{name} must not be empty: expected shape {shape} with every size ≥ 1, "
                         f"got {tuple(value.shape)}")
    if value.numel() and (finite or value_range is not None) and value.is_floating_point() and reads_values():
        # one pass: aminmax propagates NaN, and ±inf shows up as an infinite extreme
        low, high = (float(v) for v in torch.aminmax(value.detach()))
        if finite and not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if value_range is not None:
            if low != low or high != high or low < value_range[0] - tolerance or high > value_range[1] + tolerance:
                raise ValueError(f"{name} must have values in [{value_range[0]:g}, {value_range[1]:g}], "
                                 f"got range [{low:.3g}, {high:.3g}]")
    return value


def check_device(value, name: str = "device") -> torch.device:
    """A device that exists here: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``
    or a ``torch.device``. (``"auto"`` is resolved by :func:`labkit.train.choose_device`.)"""
    from .train import choose_device

    if isinstance(value, torch.device):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a device name ('cpu', 'cuda', 'cuda:N', 'mps') or torch.device, "
                         f"got {_describe(value)}")
    try:
        return choose_device(value)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def check_path(value, name: str) -> Path:
    """A path given as ``str`` or ``os.PathLike`` (existence is the caller's business)."""
    import os

    expected = "a path (non-empty str or os.PathLike)"
    try:
        text = os.fspath(value)
    except TypeError:
        raise ValueError(f"{name} must be {expected}, got {_describe(value)}") from None
    if not isinstance(text, str) or not text:
        raise ValueError(f"{name} must be {expected}, got {_describe(value)}")
    return Path(text)


def check_non_empty(items, name: str) -> list:
    """A sequence with at least one item; returns it as a list."""
    try:
        items = list(items)
    except TypeError:
        raise ValueError(f"{name} must be a non-empty sequence, got {_describe(items)}") from None
    if not items:
        raise ValueError(f"{name} must not be empty")
    return items
