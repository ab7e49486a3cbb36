"""Argument checks the paper modules share and :mod:`labkit.checks` does not have (yet).

Each raises ``ValueError`` at the boundary with a message that names the argument,
what was expected and what was given, like the shared checks. They are private to
:mod:`labkit.papers`: candidates for :mod:`labkit.checks` once they settle.
"""
from __future__ import annotations

import functools
import math

import torch
from torch import nn

from ..checks import _describe, reads_values, check_int, check_number, check_pair, check_path, check_positive_int, check_tensor
from ..data.validation import check_images
from ..networks import check_layout_input

LAYOUT_TOLERANCE = 1e-3   # area-resized one-hot layouts sum to 1 up to float rounding


def checked(check):
    """``checked(check)(function)``: ``function`` that first calls ``check`` with the same arguments.

    For the functions and methods a chapter displays with ``labkit.show_source``: their
    source is part of the notebooks' committed outputs (which nbval compares), so their
    boundary checks are attached after the definition, as ``f = checked(check_f)(f)``,
    instead of inside the body. ``functools.wraps`` keeps ``inspect.getsource`` (and so the
    notebooks) on the original code; the check's docstring is appended to ``help(f)``.
    Internal calls whose inputs are checked already keep the unchecked function under a private
    name (``_f = f`` before the line above)."""
    def attach(function):
        @functools.wraps(function)
        def with_checks(*args, **kwargs):
            check(*args, **kwargs)
            return function(*args, **kwargs)

        with_checks.__doc__ = (function.__doc__ or "").rstrip() + "\n\n    Checked: " + " ".join(
            (check.__doc__ or "").split())
        return with_checks
    return attach


def widths(value, name: str = "widths", minimum_count: int = 1) -> tuple[int, ...]:
    """Channel widths: a non-empty list or tuple of positive integers; returns them as a tuple."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) < minimum_count:
        raise ValueError(f"{name} must be a list or tuple of at least {minimum_count} positive integers, "
                         f"got {_describe(value)}")
    return tuple(check_positive_int(w, f"{name}[{i}]") for i, w in enumerate(value))


def _values_ok(value: torch.Tensor, value_range=None, tolerance: float = 0.0) -> bool:
    """Finite (and within ``value_range`` ± ``tolerance``) in one ``aminmax`` pass: NaN propagates to
    the minimum and maximum, and ±inf is one of them. (``isfinite(x).all()`` costs 5–10× more.)"""
    if value.numel() == 0 or not reads_values():   # not while torch.compile traces (see labkit.checks)
        return True
    try:
        low, high = (float(v) for v in torch.aminmax(value.detach()))
    except RuntimeError:   # a dtype aminmax does not cover here: let the full check decide
        return False
    if not (math.isfinite(low) and math.isfinite(high)):
        return False
    return value_range is None or (low >= value_range[0] - tolerance and high <= value_range[1] + tolerance)


def tensor(value, name: str, *, shape: str, ndim=None, channels: int | None = None, floating: bool = True,
           finite: bool = True, value_range=None, non_empty: bool = True, tolerance: float = 1e-3) -> torch.Tensor:
    """:func:`labkit.checks.check_tensor`, with its value checks (finite, range) done in one pass;
    a tensor that fails them goes through ``check_tensor`` itself, which says what is wrong."""
    check_tensor(value, name, shape=shape, ndim=ndim, channels=channels, floating=floating, finite=False,
                 non_empty=non_empty)
    if (finite or value_range is not None) and value.is_floating_point() \
            and not _values_ok(value, value_range, tolerance):
        check_tensor(value, name, shape=shape, ndim=ndim, channels=channels, floating=floating, finite=finite,
                     value_range=value_range, non_empty=non_empty, tolerance=tolerance)
    return value


def images_batch(images, name: str, *, ndim: tuple[int, ...] = (4,)) -> torch.Tensor:
    """:func:`labkit.data.validation.check_images` (float, [0, 1], finite, 3 channels), and at least one
    image. The common case, a valid float tensor, is accepted after one ``aminmax`` pass; anything else
    goes through ``check_images``, which says what is wrong."""
    if isinstance(images, torch.Tensor) and images.is_floating_point() and images.dim() in ndim \
            and images.shape[-3] == 3 and images.numel() and _values_ok(images, (0.0, 1.0), 1e-3):
        return images
    images = check_images(images, name, ndim=ndim)
    if images.numel() == 0:
        raise ValueError(f"{name} must hold at least one image of shape (3, H, W) with H, W ≥ 1, "
                         f"got shape {tuple(images.shape)}")
    return images


def layout(value, num_classes: int | None = None, size=None, name: str = "layout") -> torch.Tensor:
    """A one-hot (or area-resized one-hot) layout: float (N, num_classes, H, W) (any number of
    classes when None) at ``size`` when given, N ≥ 1, finite, values in [0, 1] and at most 1
    summed over the classes at each pixel (void pixels are all zero). One pass for finiteness,
    one for the range, one for the sums."""
    if size is not None:
        check_layout_input(value, num_classes, size, name)
    classes = "C" if num_classes is None else num_classes
    tensor(value, name, shape=f"(N, {classes}, H, W) one-hot", ndim=4, channels=num_classes,
           value_range=(0.0, 1.0), tolerance=LAYOUT_TOLERANCE)
    one_hot_sums(value, name)
    return value


def one_hot_sums(value: torch.Tensor, name: str) -> None:
    """Refuse a layout whose classes sum to more than 1 at a pixel (not one-hot)."""
    if not reads_values():
        return
    most = float(value.detach().sum(1).amax())
    if most > 1 + LAYOUT_TOLERANCE:
        raise ValueError(f"{name} must be one-hot: at most 1 summed over its classes at each pixel "
                         f"(see labkit.networks.one_hot_layout), got a pixel summing to {most:.3g}")


def masks(value, name: str, *, like: torch.Tensor | None = None, channels: int | None = 1,
          binary_range: bool = True) -> torch.Tensor:
    """Float masks (N, 1, H, W), N ≥ 1, finite, in [0, 1] (exactly), matching ``like``'s N, H and W."""
    tensor(value, name, shape="(N, 1, H, W)", ndim=4, channels=channels,
           value_range=(0.0, 1.0) if binary_range else None, tolerance=0.0)
    if like is not None and (value.shape[0] != like.shape[0] or value.shape[-2:] != like.shape[-2:]):
        raise ValueError(f"{name} must match the images' N, H and W: expected ({like.shape[0]}, "
                         f"{value.shape[1]}, {like.shape[-2]}, {like.shape[-1]}), got {tuple(value.shape)}")
    return value


def same_batch(name: str, value: torch.Tensor, other_name: str, other: torch.Tensor, *, spatial: bool = True):
    """``value`` and ``other`` hold as many samples (and, with ``spatial``, the same H and W)."""
    if value.shape[0] != other.shape[0] or (spatial and value.shape[-2:] != other.shape[-2:]):
        what = "N, H and W" if spatial else "N"
        raise ValueError(f"{name} {tuple(value.shape)} and {other_name} {tuple(other.shape)} must have the "
                         f"same {what}")


def _dict_with_keys(value, keys, name: str, expected: str) -> dict:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be {expected}, got {_describe(value)}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise ValueError(f"{name} lacks {missing}; expected {expected}")
    return value


def batch(value, keys, name: str = "batch") -> dict:
    """A training batch: a dict with ``keys``."""
    return _dict_with_keys(value, keys, name, f"a dict with keys {list(keys)}")


def settings(value, keys, name: str = "settings") -> dict:
    """A profile's settings (a dict such as ``select_profile(PROFILES, "book")``) with ``keys``."""
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict of a profile's settings (e.g. "
                         f"labkit.select_profile(PROFILES, 'book')), got {_describe(value)}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise ValueError(f"{name} lacks {missing}; expected a profile's settings "
                         f"(e.g. labkit.select_profile(PROFILES, 'book'))")
    return value


NON_NEGATIVE_SETTINGS = ("paste_margin", "pool_size", "ramp_iterations")
"""Integer settings that may be 0; the others count things (≥ 1), except the step and
iteration counts, which may be 0 (nothing to train)."""


def profile_settings(value, profiles: dict, keys=None, name: str = "settings") -> dict:
    """A profile's settings (e.g. ``select_profile(PROFILES, "book")`` or one read back from an
    export) holding ``keys`` (default: every key of the chapter's profiles), each of the kind
    the profiles give it: sizes (H, W) of positive integers, widths and counts of positive
    integers, step counts ≥ 0, finite numbers ≥ 0 (learning rates > 0), names as strings."""
    reference = profiles["book"]
    keys = tuple(reference) if keys is None else tuple(keys)
    settings(value, keys, name)
    for key in keys:
        given, example, label = value[key], reference[key], f"{name}[{key!r}]"
        if isinstance(example, bool):
            flag(given, label)
        elif isinstance(example, int):
            non_negative = key in NON_NEGATIVE_SETTINGS or (key.endswith(("steps", "iterations"))
                                                           and key != "critic_steps")
            check_int(given, label, minimum=0 if non_negative else 1)
        elif isinstance(example, float):
            check_number(given, label, minimum=0.0, strict_minimum="lr" in key or "learning_rate" in key)
        elif isinstance(example, str):
            if not isinstance(given, str):
                raise ValueError(f"{label} must be a string such as {example!r}, got {_describe(given)}")
        elif isinstance(example, tuple) and key.endswith("size"):
            check_pair(given, label)
        elif isinstance(example, tuple):
            if isinstance(given, (str, bytes)) or not isinstance(given, (list, tuple)) or not given:
                raise ValueError(f"{label} must be a non-empty list or tuple like {example}, got {_describe(given)}")
            for i, item in enumerate(given):
                if isinstance(example[0], str):
                    if not isinstance(item, str):
                        raise ValueError(f"{label}[{i}] must be a string, got {_describe(item)}")
                else:
                    check_positive_int(item, f"{label}[{i}]")
    return value


def names(value, name: str) -> list:
    """A list or tuple of names (a single string is refused: it would be read letter by letter);
    the caller checks each name."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{name} must be a list or tuple of names, got {_describe(value)}")
    return list(value)


def instance(value, name: str, kind, description: str | None = None, allow_none: bool = False):
    """``value`` is an instance of ``kind`` (or None when ``allow_none``)."""
    if value is None and allow_none:
        return value
    if not isinstance(value, kind):
        expected = description or (kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind))
        raise ValueError(f"{name} must be {expected}{' or None' if allow_none else ''}, got {_describe(value)}"
                         + ("" if isinstance(value, (torch.Tensor, str)) else f" ({type(value).__name__})"))
    return value


def module(value, name: str, kind=nn.Module, allow_none: bool = False):
    """A network: an ``nn.Module`` (or the given subclass)."""
    return instance(value, name, kind, f"a {kind.__name__}", allow_none)


def function(value, name: str, expected: str):
    if not callable(value):
        raise ValueError(f"{name} must be callable ({expected}), got {_describe(value)}")
    return value


def minutes(value, name: str = "max_minutes") -> float | None:
    """A training budget in minutes: a number ≥ 0, or None for no limit."""
    return check_number(value, name, minimum=0.0, allow_none=True)


def flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {_describe(value)}")
    return value


def export_target(value, name: str = "export"):
    """``export``: False, True (the default path) or a path."""
    if isinstance(value, bool):
        return value
    return check_path(value, name)


def run_folder(value, name: str = "run_dir"):
    """An existing run folder (to read records from)."""
    path = check_path(value, name)
    if not path.is_dir():
        raise FileNotFoundError(f"{name} {path} is not a folder; run the chapter's runs there first")
    return path


def record(value, keys=("metrics",), name: str = "record") -> dict:
    """A run record (a chapter's ``metrics.json`` as read by ``read_record``) with ``keys``."""
    return _dict_with_keys(value, keys, name, f"a chapter's metrics.json as read_record returns it, with keys "
                                              f"{list(keys)}")
