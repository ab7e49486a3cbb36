"""Network pieces shared by the chapters: layouts as network input, layer and instance norm.

Every layout-to-image model in the course takes the semantic layout as a
one-hot tensor; :func:`one_hot_layout` is the one place that turns a label
map into one, and checks it on the way. It returns a contiguous tensor: a
one-hot permuted from (N, H, W, K) is channels_last-strided, and every layer
after it computes in that layout.

**A torch 2.13 CPU bug this course ran into.** ``F.instance_norm`` (and
``nn.InstanceNorm2d``) returns a wrong input gradient, and wrong affine
gradients, when the batch is 1 and the gradient arriving at its output is
channels_last-strided (the input's own layout does not matter)::

    x = torch.randn(1, 8, 6, 10, requires_grad=True)
    g = torch.randn_like(x).contiguous(memory_format=torch.channels_last)
    wrong, = torch.autograd.grad(F.instance_norm(x), x, g)
    right, = torch.autograd.grad(F.instance_norm(x), x, g.contiguous())
    F.cosine_similarity(wrong.flatten(), right.flatten(), 0)   # ≈ 0 (batch 2: 1.0)

Such a gradient arrives whenever the normalised map is multiplied by a
channels_last tensor (SFT's γ · IN(x) + β with γ from a permuted one-hot) or
feeds channels_last convolutions (the CUDA path's ``channels_last``). Chapter 4
trained on such gradients until it was found. :func:`instance_norm` and
:class:`InstanceNorm2d` are the course's instance norms: they hand the
kernel a contiguous gradient at batch 1, and
``tests/test_gradients.py`` checks every trainable model's gradients against
a float64 reference with an elementary-op instance norm.
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_int, check_number, check_pair, check_positive_int, check_tensor
from .data import IGNORE_INDEX, NUM_CLASSES, check_label_map


@contextlib.contextmanager
def float32_region():
    """Autocast off inside, on every device type: statistics, Gram matrices, similarities and
    losses that bf16 would quantise (or that CUDA autocast refuses, such as binary
    cross-entropy) are computed in float32. :func:`labkit.train.fit` runs the loss under bf16
    autocast on CUDA, and on a CPU when ``LABKIT_BF16_CHANNELS_LAST=1`` (the dry run), so
    turning off only CUDA's autocast would leave the CPU path in bf16."""
    with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
        yield


def one_hot_layout(labels, num_classes: int = NUM_CLASSES, size=None) -> torch.Tensor:
    """labels (N, H, W) int class ids → layout (N, num_classes, H, W) float.

    Pixels labelled ``IGNORE_INDEX`` (255) get an all-zero vector. With
    ``size=(h, w)`` (h ≤ H, w ≤ W) the layout is area-downsampled: each cell
    holds the fraction of its pixels that belong to each class (CRN's
    ``tf.image.resize_area`` of the label). num_classes: an integer in [1, 255].
    """
    num_classes = check_int(num_classes, "num_classes", minimum=1, maximum=IGNORE_INDEX)
    labels = check_label_map(labels, "labels", num_classes=num_classes, allow_ignore=True, ndim=(3,))
    if size is not None:
        _check_layout_size(size, labels.shape[-2:])
    valid = labels != IGNORE_INDEX
    # contiguous: the permuted one-hot is channels_last-strided (see the module docstring)
    layout = F.one_hot(labels.where(valid, 0), num_classes).permute(0, 3, 1, 2).float().contiguous()
    layout = layout * valid.unsqueeze(1)
    if size is not None:
        layout = resize_layout(layout, size)
    return layout


def _check_layout_size(size, full) -> tuple[int, int]:
    height, width = check_pair(size, "size")
    if height > full[0] or width > full[1]:
        raise ValueError(f"size must be at most the layout's own (H, W) = {tuple(full)} (area resizing only "
                         f"shrinks), got {(height, width)}")
    return height, width


def resize_layout(layout: torch.Tensor, size) -> torch.Tensor:
    """Area-resize a one-hot layout (N, C, H, W) float to (N, C, h, w); h, w ≤ H, W.

    Checks shapes only (no pass over the values), so it costs nothing inside a forward."""
    check_tensor(layout, "layout", shape="(N, C, H, W)", ndim=4, finite=False, non_empty=False)
    size = _check_layout_size(size, layout.shape[-2:])
    if tuple(layout.shape[-2:]) == size:
        return layout
    return F.interpolate(layout, size=size, mode="area")


GUARD_INSTANCE_NORM_GRADIENT = True
"""Whether :func:`instance_norm` works around the batch-1 channels_last gradient bug (tests
switch it off to show that the gradient test catches the bug)."""


def _contiguous_gradient(gradient: torch.Tensor) -> torch.Tensor:
    return gradient.contiguous()


def instance_norm(x: torch.Tensor, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                  eps: float = 1e-5) -> torch.Tensor:
    """IN(x)_nc = (x_nc − μ_nc) / sqrt(σ²_nc + ε) · weight_c + bias_c, μ and σ² over each sample's
    and channel's H·W positions; x (N, C, H, W), weight and bias (C,) or None.

    ``F.instance_norm`` with one change: at batch 1 the gradient reaching the output is made
    contiguous before the kernel's backward sees it (torch 2.13's CPU kernel gets a
    channels_last one wrong; see the module docstring). Checks nothing: it runs inside every
    forward; the networks check their inputs."""
    out = F.instance_norm(x, weight=weight, bias=bias, eps=eps)
    if GUARD_INSTANCE_NORM_GRADIENT and out.requires_grad and x.shape[0] == 1:
        out.register_hook(_contiguous_gradient)
    return out


class InstanceNorm2d(nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` (no running statistics) through :func:`instance_norm`, so its
    gradient is right at batch 1 whatever the layout. x (N, C, H, W) → the same shape.
    The state dict is ``nn.InstanceNorm2d``'s (weight and bias when affine)."""

    def __init__(self, channels: int, eps: float = 1e-5, affine: bool = False):
        channels = check_positive_int(channels, "channels")
        eps = check_number(eps, "eps", minimum=0.0, strict_minimum=True)
        super().__init__(channels, eps=eps, affine=bool(affine), track_running_stats=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_features:
            raise ValueError(f"x must be (N, {self.num_features}, H, W), got {tuple(x.shape)}")
        return instance_norm(x, self.weight, self.bias, self.eps)


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
        channels = check_positive_int(channels, "channels")
        eps = check_number(eps, "eps", minimum=0.0, strict_minimum=True)
        super().__init__(1, channels, eps=eps, affine=True)


def conv_layernorm_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """2 × [3×3 conv → :class:`LayerNorm2d` → LeakyReLU(0.2)]: the block of CRN's
    refinement modules and of SIMS' networks (both follow the official TF code).
    in_channels, out_channels: positive integers."""
    in_channels = check_positive_int(in_channels, "in_channels")
    out_channels = check_positive_int(out_channels, "out_channels")
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), LayerNorm2d(out_channels), nn.LeakyReLU(0.2),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), LayerNorm2d(out_channels), nn.LeakyReLU(0.2))


def count_parameters(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``module`` (an ``nn.Module``)."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def check_layout_input(layout: torch.Tensor, num_classes: int, output_size, name: str = "layout") -> torch.Tensor:
    """A generator's input: float (N, num_classes, H, W) at ``output_size``, N ≥ 1,
    finite values in [0, 1] (one-hot, or the class fractions of an area-resized layout).

    One pass over the layout for finiteness and one for the range: cheap next to any generator."""
    if not isinstance(layout, torch.Tensor) or not layout.is_floating_point() or layout.dim() != 4:
        got = tuple(layout.shape) if isinstance(layout, torch.Tensor) else type(layout).__name__
        raise ValueError(f"{name} must be a float one-hot tensor (N, {num_classes}, H, W) "
                         f"(see labkit.networks.one_hot_layout), got {got}")
    if layout.shape[1] != num_classes or tuple(layout.shape[-2:]) != tuple(output_size):
        raise ValueError(f"{name} must be (N, {num_classes}, {output_size[0]}, {output_size[1]}) for this "
                         f"network, got {tuple(layout.shape)}")
    if layout.shape[0] == 0:
        raise ValueError(f"{name} must hold at least one layout (N ≥ 1), got {tuple(layout.shape)}")
    return check_tensor(layout, name, shape=f"(N, {num_classes}, H, W)", ndim=4, value_range=(0.0, 1.0))
