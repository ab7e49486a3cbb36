"""Network pieces shared by the chapters: layouts as network input, layer norm.

Every layout-to-image model in the course takes the semantic layout as a
one-hot tensor; :func:`one_hot_layout` is the one place that turns a label
map into one, and checks it on the way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .data import IGNORE_INDEX, NUM_CLASSES, check_label_map


def one_hot_layout(labels, num_classes: int = NUM_CLASSES, size=None) -> torch.Tensor:
    """labels (N, H, W) int class ids → layout (N, num_classes, H, W) float.

    Pixels labelled ``IGNORE_INDEX`` (255) get an all-zero vector. With
    ``size=(h, w)`` the layout is area-downsampled: each cell holds the
    fraction of its pixels that belong to each class (CRN's
    ``tf.image.resize_area`` of the label).
    """
    labels = check_label_map(labels, "labels", num_classes=num_classes, allow_ignore=True, ndim=(3,))
    valid = labels != IGNORE_INDEX
    layout = F.one_hot(labels.where(valid, 0), num_classes).permute(0, 3, 1, 2).float()
    layout = layout * valid.unsqueeze(1)
    if size is not None:
        layout = resize_layout(layout, size)
    return layout


def resize_layout(layout: torch.Tensor, size) -> torch.Tensor:
    """Area-resize a one-hot layout (N, C, H, W) to (N, C, h, w); h, w ≤ H, W."""
    size = tuple(int(s) for s in size)
    if tuple(layout.shape[-2:]) == size:
        return layout
    return F.interpolate(layout, size=size, mode="area")


class LayerNorm2d(nn.GroupNorm):
    """Layer normalisation of a feature map, as CRN's ``tf.contrib.layers.layer_norm``.

    x: (N, C, H, W). Each sample is normalised over all of its C·H·W values,

        y = (x − μ_n) / sqrt(σ²_n + ε) · γ_c + β_c,

    with one learned scale γ_c and shift β_c per channel. Unlike batch norm
    it does not depend on the other samples in the batch (CRN trains with
    batch 1) and behaves the same in training and evaluation. It is a
    GroupNorm with a single group.
    """

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(1, channels, eps=eps, affine=True)


def conv_layernorm_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """2 × [3×3 conv → :class:`LayerNorm2d` → LeakyReLU(0.2)]: the block of CRN's
    refinement modules and of SIMS' networks (both follow the official TF code)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), LayerNorm2d(out_channels), nn.LeakyReLU(0.2),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), LayerNorm2d(out_channels), nn.LeakyReLU(0.2))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def check_layout_input(layout: torch.Tensor, num_classes: int, output_size, name: str = "layout") -> torch.Tensor:
    """A generator's input: float (N, num_classes, H, W) at ``output_size``."""
    if not isinstance(layout, torch.Tensor) or not layout.is_floating_point() or layout.dim() != 4:
        got = tuple(layout.shape) if isinstance(layout, torch.Tensor) else type(layout).__name__
        raise ValueError(f"{name} must be a float one-hot tensor (N, {num_classes}, H, W) "
                         f"(see labkit.networks.one_hot_layout), got {got}")
    if layout.shape[1] != num_classes or tuple(layout.shape[-2:]) != tuple(output_size):
        raise ValueError(f"{name} must be (N, {num_classes}, {output_size[0]}, {output_size[1]}) for this "
                         f"network, got {tuple(layout.shape)}")
    return layout
