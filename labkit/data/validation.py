"""Checks at the boundary: a wrong input fails here with a message that says
what was expected, not deep inside torch with a shape error."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..checks import reads_values
from .classes import IGNORE_INDEX, NUM_CLASSES

_INTEGER_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8)
_LABEL_SHAPES = {1: "(P,)", 2: "(H, W)", 3: "(N, H, W)"}


def check_label_map(label, name: str = "label", *, num_classes: int = NUM_CLASSES,
                    allow_ignore: bool = False, ndim: tuple[int, ...] = (2, 3),
                    non_empty: bool = False) -> torch.Tensor:
    """Validate a label map and return it as an int64 tensor.

    label: (H, W) or (N, H, W) integer class indices in ``[0, num_classes)``
    (``ndim`` may also allow 1: a flat (P,) selection of pixels);
    with ``allow_ignore`` the value ``IGNORE_INDEX`` (255) is accepted too.
    Raises ``ValueError`` naming the argument for a float dtype, a wrong number
    of dimensions, an id out of range, or (with ``non_empty``) no pixels at all.
    """
    if isinstance(label, np.ndarray):
        if not np.issubdtype(label.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class ids, got dtype {label.dtype}")
        label = torch.from_numpy(label.astype(np.int64))
    if not isinstance(label, torch.Tensor):
        raise ValueError(f"{name} must be a tensor or numpy array, got {type(label).__name__}")
    if label.dtype not in _INTEGER_DTYPES:
        raise ValueError(f"{name} must hold integer class ids (int64), got dtype {label.dtype}")
    if label.dim() not in ndim:
        shapes = " or ".join(_LABEL_SHAPES.get(d, f"{d}-d") for d in ndim)
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(label.shape)}")
    if non_empty and label.numel() == 0:
        raise ValueError(f"{name} must not be empty: expected at least one label map with H, W ≥ 1, "
                         f"got shape {tuple(label.shape)}")
    label = label.long()
    if label.numel() and reads_values():
        bad = (label < 0) | (label >= num_classes)
        if allow_ignore:
            bad &= label != IGNORE_INDEX
        if bool(bad.any()):
            values = torch.unique(label[bad])[:5].tolist()
            allowed = f"[0, {num_classes - 1}]" + (f" or {IGNORE_INDEX}" if allow_ignore else "")
            raise ValueError(f"{name} has class ids out of range {allowed}: {values}")
    return label


def check_images(images, name: str = "images", *, ndim: tuple[int, ...] = (3, 4),
                 non_empty: bool = False) -> torch.Tensor:
    """Validate float images (3, H, W) or (N, 3, H, W) with values in [0, 1]
    (and, with ``non_empty``, at least one image of at least one pixel).

    One pass over the data (``aminmax``) for finiteness and range, so it is
    cheap enough for a training step."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(images)
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape (N, 3, H, W), got {type(images).__name__}")
    if not images.is_floating_point():
        raise ValueError(f"{name} must be float in [0, 1], got dtype {images.dtype}")
    if images.dim() not in ndim or images.shape[-3] != 3:
        shapes = " or ".join({3: "(3, H, W)", 4: "(N, 3, H, W)"}[d] for d in ndim)
        raise ValueError(f"{name} must have shape {shapes}, got {tuple(images.shape)}")
    if non_empty and images.numel() == 0:
        raise ValueError(f"{name} must not be empty: expected at least one image with H, W ≥ 1, "
                         f"got shape {tuple(images.shape)}")
    if images.numel() and reads_values():
        # one pass: aminmax propagates NaN, and ±inf shows up as an infinite extreme
        lo, hi = (float(v) for v in torch.aminmax(images.detach()))
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(f"{name} must have values in [0, 1], got range [{lo:.3g}, {hi:.3g}]"
                             " (map [-1, 1] outputs with (x + 1) / 2)")
    return images


def check_image_label_pair(images, labels, *, allow_ignore: bool = False, non_empty: bool = False):
    """Validate a batch of images (N, 3, H, W) against label maps (N, H, W)."""
    images = check_images(images, "images", ndim=(4,), non_empty=non_empty)
    labels = check_label_map(labels, "labels", allow_ignore=allow_ignore, ndim=(3,), non_empty=non_empty)
    if images.shape[0] != labels.shape[0] or images.shape[-2:] != labels.shape[-2:]:
        raise ValueError(
            "images and labels must match: images (N, 3, H, W) with labels (N, H, W), got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}")
    return images, labels


def check_rng(rng, name: str = "rng") -> np.random.Generator:
    """A NumPy random generator (``np.random.default_rng(seed)``), not a seed or the legacy module."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{name} must be a numpy.random.Generator (np.random.default_rng(seed)), "
                         f"got {type(rng).__name__}")
    return rng

