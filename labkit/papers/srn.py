"""SRN: Wide-Context Semantic Image Extrapolation (Wang, Tao, Shen, Jia, CVPR 2019).

Extrapolation predicts what lies *outside* an image X of size h×w: an output
Ŷ of size r1·h × r2·w whose known region equals X. Two things make it harder
than inpainting (paper §1): the output is larger than the input (size
expansion), and the unknown pixels are constrained from one side only.

The Semantic Regeneration Network answers with two networks (§3):

1. **Feature Expansion Network (FEN)** works on the small input X alone and
   expands its features to the output size with a sub-pixel rearrangement
   that allows r1 ≠ r2 (§3.1):

       s(F)_{i, j, k} = F_{⌊i/r1⌋, ⌊j/r2⌋, C·(r2·mod(i, r1) + mod(j, r2)) + k}

   (F: h × w × C·r1·r2 features; s(F): r1·h × r2·w × C).
2. **Context Prediction Network (CPN)** sees the expanded features, the
   zero-padded input and the mask M (1 = unknown) and predicts Ŷ. Between its
   encoder and decoder, **context normalization** (CN, §3.2) moves the
   unknown region's feature statistics towards the known region's:

       n(x₁, x₂) = (x₁ − μ(x₁)) / σ(x₁) · σ(x₂) + μ(x₂)
       t(f, ρ)   = [ρ·n(f_Ω̄, f_Ω) + (1 − ρ)·f_Ω̄] ⊙ M↓ + f_Ω ⊙ (1 − M↓)

   with Ω the known region, Ω̄ the unknown one, statistics per sample and
   channel, and ρ = 0.5.

Losses (§3.3): the relative spatial variant (RSV) reconstruction loss

    M_w^i = (G_g ∗ M̄_w^{i−1}) ⊙ M,   M̄_w^i = M_w^i + (1 − M),   M_w = M_w^{c−1} / (M_w^c + ε)
    ℒ_s  = ‖(Y − Ŷ) ⊙ M_w‖₁

the implicit diversified MRF loss ℒ_mrf on deep features, and WGAN-GP
adversarial losses from a global critic and a contextual critic that only
scores the unknown region; ℒ = λ_s ℒ_s + λ_mrf ℒ_mrf + λ_adv ℒ_adv, trained in
two phases: reconstruction alone, then all three.

Shapes: images (N, 3, H, W) in [0, 1] at the labkit boundary, [−1, 1] inside
the networks (as the official code); masks (N, 1, H, W) with 1 = unknown.
The runs live in :mod:`labkit.papers.srn_runs`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_int, check_number, check_pair, check_positive_int, check_probability
from ..features import FeatureExtractor
from ..networks import float32_region
from ..train import register_dry_run
from . import _checks

CHAPTER = "srn"
CONTEXT_BLEND = 0.5            # ρ (``fa_alpha`` in the official code)
RSV_SIGMA = 1 / 40             # the Gaussian of the confidence propagation (ops.py)
RSV_ITERATIONS = 9             # relative_spatial_variant_mask: 9 propagations
CONFIDENCE_ITERATIONS = 7      # confidence_driven_mask: 7 propagations
RECONSTRUCTION_SCALE = 1.2     # pretrain_l1_alpha: both reconstruction terms are scaled by it
UNKNOWN_WEIGHT = 4.2           # l1_loss_alpha: the (RSV-)weighted term on the unknown region
KNOWN_WEIGHT = 1.2             # ae_loss_alpha: the plain L1 on the known region
ADVERSARIAL_WEIGHT = 1e-3      # λ_adv (gan_loss_alpha)
MRF_WEIGHT = 0.05              # λ_mrf (mrf_alpha)
GRADIENT_PENALTY_WEIGHT = 10.0
MRF_BANDWIDTH = 0.5            # nn_stretch_sigma of the ID-MRF
MRF_MAX_POSITIONS = 65 * 65    # features are randomly pooled to at most 65×65 positions
PAPER_CRITIC_STEPS = 5         # train.py: 5 critic steps per generator step
PAPER_BETAS = (0.5, 0.9)
PAPER_LEARNING_RATE = 1e-4
PAPER_ITERATIONS = 40_000      # train_options.py max_iters (train.sh: 80k), batch 8

PLACEMENTS = ("left", "right", "both", "top")
"""Where the known region sits in the output frame: ``left`` (extend to the right),
``right`` (extend to the left), ``both`` (centred, extend both ways) and ``top``
(extend downwards). The first three expand the width (r1, r2) = (1, 2), ``top``
expands the height (2, 1): one network serves all four, because the sub-pixel
conv produces r1·r2 = 2 feature groups either way."""

EXPANSIONS = ("subpixel", "deconv", "bilinear")
RECONSTRUCTIONS = ("rsv", "confidence", "l1")
GENERATORS = ("srn", "srn_hr", "ed")

MODEL_SPECS = {
    "srn": {"generator": "srn", "expansion": "subpixel", "context_norm": True, "reconstruction": "rsv"},
    "srn_pretrain": {"same_as": "srn", "phase": "pretrain"},
    "srn_reconstruction_only": {"same_as": "srn", "phase": "finetune", "finetune_terms": False},
    "srn_no_cn": {"generator": "srn", "expansion": "subpixel", "context_norm": False, "reconstruction": "rsv"},
    "srn_l1": {"generator": "srn", "expansion": "subpixel", "context_norm": True, "reconstruction": "l1"},
    "srn_confidence": {"generator": "srn", "expansion": "subpixel", "context_norm": True,
                       "reconstruction": "confidence"},
    "srn_deconv": {"generator": "srn", "expansion": "deconv", "context_norm": True, "reconstruction": "rsv"},
    "srn_bilinear": {"generator": "srn", "expansion": "bilinear", "context_norm": True, "reconstruction": "rsv"},
    "srn_hr": {"generator": "srn_hr", "expansion": None, "context_norm": True, "reconstruction": "rsv"},
    "ed": {"generator": "ed", "expansion": None, "context_norm": True, "reconstruction": "rsv"},
    "reflect": {"generator": None},
}
"""The recorded models. ``srn_pretrain`` is ``srn`` scored after the reconstruction
phase (no ID-MRF, no adversarial terms), so it costs no training of its own;
``srn_reconstruction_only`` continues ``srn``'s first phase for as many steps as
``srn``'s fine-tuning, with the reconstruction loss alone: the same number of
steps as ``srn``, without ID-MRF and critics;
``reflect`` mirrors the known region into the unknown one (no network)."""
MODEL_NAMES = tuple(MODEL_SPECS)

# Every knob of the chapter, per profile. size: the *output* (H, W); the known region is
# H × W/2 (left, right, both) or H/2 × W (top). width: the base channel count ("cnum",
# 64 in the paper). critic_width: the critics' base width. pretrain_steps / finetune_steps:
# the two phases; critic_steps: critic updates per generator update. rsv_kernel: side of
# the propagation kernel (64 for the paper's 256-pixel images).
PROFILES = {
    "smoke": {"size": (32, 64), "width": 8, "critic_width": 8, "pretrain_steps": 8, "finetune_steps": 4,
              "critic_steps": 1, "batch_size": 2, "train_scenes": 32, "eval_scenes": 8, "learning_rate": 4e-4,
              "rsv_kernel": 16},
    "book": {"size": (64, 128), "width": 16, "critic_width": 16, "pretrain_steps": 1200, "finetune_steps": 300,
             "critic_steps": 1, "batch_size": 8, "train_scenes": 2975, "eval_scenes": 200, "learning_rate": 4e-4,
             "rsv_kernel": 32},
    "full": {"size": (128, 256), "width": 64, "critic_width": 64, "pretrain_steps": 40_000,
             "finetune_steps": 20_000, "critic_steps": PAPER_CRITIC_STEPS, "batch_size": 16, "train_scenes": 2975,
             "eval_scenes": 500, "learning_rate": PAPER_LEARNING_RATE, "rsv_kernel": 64},
}
DRY_RUN = register_dry_run(PROFILES, {"size": (64, 128), "pretrain_steps": 2, "finetune_steps": 2, "train_scenes": 16,
                                      "eval_scenes": 4})
"""How ``python -m labkit.dry_run srn`` shrinks the full profile: 2 steps per network, a few scenes."""
DRY_RUN_NOTE = (f"The dry run keeps the full profile's networks (width {PROFILES['full']['width']}, critics "
                f"{PROFILES['full']['critic_width']}), batch {PROFILES['full']['batch_size']}, "
                f"{PROFILES['full']['critic_steps']} critic steps, RSV kernel {PROFILES['full']['rsv_kernel']} and losses, "
                f"on {DRY_RUN['size'][0]}×{DRY_RUN['size'][1]} scenes instead of {PROFILES['full']['size'][0]}×"
                f"{PROFILES['full']['size'][1]}: a full-size fine-tuning step (critic steps with gradient penalties, "
                "ID-MRF) is too slow for a 2-core CPU (reports/benchmarks/throughput_full_cpu.json).")

_BOOK = PROFILES["book"]
DEVIATIONS = [
    "Data: procedural StreetScenes (9 classes) instead of Paris StreetView, Cityscapes or faces; "
    f"{_BOOK['size'][0]}×{_BOOK['size'][1] // 2} → {_BOOK['size'][0]}×{_BOOK['size'][1]} (book) and 128×128 → "
    "128×256 (full) instead of 256×256 → 256×512.",
    f"Scale: base width {_BOOK['width']} instead of 64; {_BOOK['pretrain_steps']:,} reconstruction steps and "
    f"{_BOOK['finetune_steps']:,} fine-tuning steps of batch {_BOOK['batch_size']} on a 2-core CPU, instead "
    f"of {PAPER_ITERATIONS:,} iterations of batch 8 (the full profile keeps the paper's settings).",
    f"Learning rate {_BOOK['learning_rate']:g} in the smoke and book profiles (the paper's "
    f"{PAPER_LEARNING_RATE:g} in full), Adam β = {PAPER_BETAS} as in the paper.",
    f"{_BOOK['critic_steps']} critic step per generator step in the book profile; the official code takes "
    f"{PAPER_CRITIC_STEPS} (the full profile does).",
    "One network for all four placements: each batch takes one placement in turn (left, right, both, top), "
    "and the sub-pixel conv's 2 channel groups fill columns for the horizontal placements and rows for "
    "`top`. The paper trains one expansion ratio per model; its 'arbitrary margin' experiment moves the "
    "known region within one ratio.",
    "Sub-pixel expansion follows the paper's equation (a generalised pixel shuffle). The official code "
    "calls tf.reshape, which is the same rearrangement for r1 = 1 and a different interleaving of rows "
    "for r1 > 1.",
    "Context normalization computes the known and unknown variances over their own positions. The official "
    "ops.py subtracts the mean from x·mask, so positions outside the region count as (0 − μ)² and inflate "
    "both variances.",
    f"RSV and confidence-driven weights: the official kernel (a discretised N(0, σ = 1/40) over its "
    f"support, i.e. nearly a box filter) at side {_BOOK['rsv_kernel']} (book) instead of 64, scaled with "
    "the image; 9 and 7 propagations as in ops.py.",
    "ID-MRF on the judge's encoder features enc3 (×1) and enc4 (×2, 'style' + 'content' as the code's "
    "conv3_2 + 2·conv4_2) instead of VGG-19, which cannot be downloaded here; VGG-19 conv3_2/conv4_2 when "
    "the user supplies its weights. As in ops.py's mrf_loss, the relative similarity is normalised over the "
    "generated features, maximised over the target's and averaged over the generated ones; the paper's "
    "equation sums over the target's features the maximum over the generated ones.",
    "The adversarial term is the sum of the global and the contextual critic's terms, as in the official "
    "code (network.py: g_loss = global + local); the paper writes their mean, ℒ_adv = (ℒ^context + ℒ^global)/2.",
    "Critics sized for the book profile (base width 16 instead of 64); the global critic's dense layer "
    "reads the flattened 1/16-resolution map, as in the paper.",
    "Weights initialised with PyTorch's defaults (TF's Glorot uniform in the official code); nearest-"
    "neighbour upsampling, and the bilinear expansion variant, with align_corners=False (the official "
    "bilinear_conv uses align_corners=True).",
    "Evaluation uses the project's judge (FCN-score on the unknown region; Fréchet distance of the "
    "completed images' embeddings, known region included, so it understates differences between models) "
    "and PSNR/SSIM on the unknown region; the paper reports PSNR/SSIM and a user study. "
    "The judge's features are also the default ID-MRF features, which favours the fine-tuned models "
    "in the judge's eyes.",
]


# --------------------------------------------------------------------------- geometry

def expansion_factors(placement: str) -> tuple[int, int]:
    """(r1, r2): how many times the known region's height and width fit in the output."""
    check_placement(placement)
    return (2, 1) if placement == "top" else (1, 2)


def check_placement(placement: str) -> str:
    if not isinstance(placement, str) or placement not in PLACEMENTS:
        raise ValueError(f"unknown placement {placement!r}; expected one of {PLACEMENTS}")
    return placement


def known_box(size, placement: str) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the known region inside an output of ``size`` (H, W), positive
    integers divisible by 4·(r1, r2)."""
    height, width = check_pair(size, "size")
    r1, r2 = expansion_factors(placement)
    if height % (4 * r1) or width % (4 * r2):
        raise ValueError(f"output size {size} must be divisible by 4·(r1, r2) = {(4 * r1, 4 * r2)} "
                         f"for placement {placement!r}")
    known_h, known_w = height // r1, width // r2
    left = {"left": 0, "right": width - known_w, "both": (width - known_w) // 2, "top": 0}[placement]
    return 0, left, known_h, known_w


def unknown_mask(size, placement: str, batch: int = 1) -> torch.Tensor:
    """M: (batch, 1, H, W) float, 1 on the pixels to predict and 0 on the known region; batch ≥ 1."""
    check_positive_int(batch, "batch")
    top, left, known_h, known_w = known_box(size, placement)
    mask = torch.ones(batch, 1, *size)
    mask[..., top:top + known_h, left:left + known_w] = 0
    return mask


def crop_known(images: torch.Tensor, placement: str) -> torch.Tensor:
    """The known region X of full images (N, 3, H, W) in [0, 1], N ≥ 1: (N, 3, H/r1, W/r2)."""
    _checks.images_batch(images, "images")
    top, left, known_h, known_w = known_box(images.shape[-2:], placement)
    return images[..., top:top + known_h, left:left + known_w]


def pad_known(known: torch.Tensor, placement: str) -> torch.Tensor:
    """Zero-pad the known region (N, C, h, w), N ≥ 1, into the output frame (N, C, r1·h, r2·w)."""
    _checks.tensor(known, "known", shape="(N, C, h, w)", ndim=4, floating=False, finite=False)
    r1, r2 = expansion_factors(placement)
    size = (known.shape[-2] * r1, known.shape[-1] * r2)
    top, left, known_h, known_w = known_box(size, placement)
    return F.pad(known, (left, size[1] - left - known_w, top, size[0] - top - known_h))


# --------------------------------------------------------------------------- feature expansion

def subpixel_expand(features: torch.Tensor, r1: int, r2: int) -> torch.Tensor:
    """The paper's sub-pixel rearrangement with independent factors (§3.1).

    features (N, C·r1·r2, h, w) → (N, C, r1·h, r2·w), with

        out[n, k, i, j] = features[n, C·(r2·(i mod r1) + (j mod r2)) + k, ⌊i/r1⌋, ⌊j/r2⌋].

    Pure bookkeeping: every input value appears exactly once in the output.
    """
    n, channels, h, w = features.shape
    if channels % (r1 * r2):
        raise ValueError(f"features have {channels} channels, not a multiple of r1·r2 = {r1 * r2}")
    c = channels // (r1 * r2)
    grouped = features.view(n, r1, r2, c, h, w)            # channel = (a·r2 + b)·C + k
    return grouped.permute(0, 3, 4, 1, 5, 2).reshape(n, c, h * r1, w * r2)


def _check_subpixel(features: torch.Tensor, r1: int, r2: int) -> None:
    """features (N, C·r1·r2, h, w); r1 and r2 positive integers."""
    _checks.tensor(features, "features", shape="(N, C·r1·r2, h, w)", ndim=4, floating=False, finite=False)
    check_positive_int(r1, "r1"), check_positive_int(r2, "r2")


subpixel_expand = _checks.checked(_check_subpixel)(subpixel_expand)


def _conv(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    """conv → ELU, 'same' padding (the official conv3 / conv5: ELU, no normalization)."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, padding=dilation * (kernel // 2),
                                   dilation=dilation), nn.ELU())


class _UpConv(nn.Module):
    """Nearest-neighbour ×2 upsampling, then conv3 (the official ``_deconv``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = _conv(in_channels, out_channels)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class FeatureExpansionNetwork(nn.Module):
    """FEN (network.py l.31-50), scaled by ``width`` (the paper's cnum = 64).

    image (N, 3, h, w) in [−1, 1] → features (N, width, h, w):
    conv5(c) → conv3/2(2c) → conv3(2c) → conv3/2(4c) → 2×conv3(4c) → dilated conv3 at 2, 4, 8, 16 (4c)
    → 2×conv3(4c) → up+conv3(2c) → conv3(2c) → up+conv3(c).
    """

    def __init__(self, width: int, in_channels: int = 3):
        super().__init__()
        check_positive_int(width, "width"), check_positive_int(in_channels, "in_channels")
        c = width
        self.layers = nn.Sequential(
            _conv(in_channels, c, 5), _conv(c, 2 * c, stride=2), _conv(2 * c, 2 * c), _conv(2 * c, 4 * c, stride=2),
            _conv(4 * c, 4 * c), _conv(4 * c, 4 * c),
            *[_conv(4 * c, 4 * c, dilation=d) for d in (2, 4, 8, 16)],
            _conv(4 * c, 4 * c), _conv(4 * c, 4 * c), _UpConv(4 * c, 2 * c), _conv(2 * c, 2 * c), _UpConv(2 * c, c))

    def forward(self, image):
        """image (N, in_channels, h, w), N ≥ 1, h and w multiples of 4 → (N, width, h, w)."""
        _checks.tensor(image, "image", shape=f"(N, {self.layers[0][0].in_channels}, h, w)", ndim=4,
                     channels=self.layers[0][0].in_channels, finite=False)
        _multiple_of_4(image, "image")
        return self.layers(image)


class FeatureExpansion(nn.Module):
    """The expansion operator after the FEN: (N, c, h, w) → (N, c, r1·h, r2·w).

    - ``subpixel``: conv3 to c·r1·r2 channels, then :func:`subpixel_expand` (the paper's choice);
    - ``deconv``: a fractionally strided 3×3 convolution with stride (r1, r2);
    - ``bilinear``: bilinear resize by (r1, r2), then conv3.

    (r1, r2) is given per call, so one module serves (1, 2) and (2, 1); all three
    keep their weights' shapes across ratios with r1·r2 = 2.
    """

    def __init__(self, width: int, kind: str = "subpixel", ratio_product: int = 2):
        super().__init__()
        check_positive_int(width, "width"), check_positive_int(ratio_product, "ratio_product")
        if not isinstance(kind, str) or kind not in EXPANSIONS:
            raise ValueError(f"unknown expansion {kind!r}; expected one of {EXPANSIONS}")
        self.kind, self.ratio_product = kind, ratio_product
        if kind == "subpixel":
            self.conv = nn.Conv2d(width, width * ratio_product, 3, padding=1)
        elif kind == "deconv":
            self.weight = nn.Parameter(torch.empty(width, width, 3, 3))
            self.bias = nn.Parameter(torch.zeros(width))
            nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        else:
            self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, features, r1: int, r2: int):
        """features (N, width, h, w) → (N, width, r1·h, r2·w); r1·r2 = ratio_product."""
        width = self.bias.shape[0] if self.kind == "deconv" else self.conv.in_channels
        _checks.tensor(features, "features", shape=f"(N, {width}, h, w)", ndim=4, channels=width, finite=False)
        check_positive_int(r1, "r1"), check_positive_int(r2, "r2")
        if r1 * r2 != self.ratio_product:
            raise ValueError(f"expansion ratio r1·r2 = {r1 * r2}, but this module was built for {self.ratio_product}")
        if self.kind == "subpixel":
            return F.elu(subpixel_expand(self.conv(features), r1, r2))
        if self.kind == "deconv":
            out = F.conv_transpose2d(features, self.weight, self.bias, stride=(r1, r2), padding=1,
                                     output_padding=(r1 - 1, r2 - 1))
            return F.elu(out)
        up = F.interpolate(features, scale_factor=(r1, r2), mode="bilinear", align_corners=False)
        return F.elu(self.conv(up))


# --------------------------------------------------------------------------- context normalization

def context_normalization(features: torch.Tensor, mask: torch.Tensor, blend: float = CONTEXT_BLEND,
                          eps: float = 1e-5) -> torch.Tensor:
    """CN (§3.2, eq. 2-3): the unknown region's per-channel mean and std are blended
    towards the known region's.

    features (N, C, h, w); mask (N, 1, H, W), 1 = unknown, resized to (h, w) by
    nearest neighbour. With ρ = ``blend``:

        f_Ω̄ ← ρ·[(f_Ω̄ − μ_Ω̄) / σ_Ω̄ · σ_Ω + μ_Ω] + (1 − ρ)·f_Ω̄,   f_Ω unchanged.

    ρ = 0 is the identity; ρ = 1 gives the unknown region exactly the known
    region's statistics (up to ``eps``).
    """
    if not 0.0 <= blend <= 1.0:
        raise ValueError(f"blend ρ must lie in [0, 1], got {blend}")
    unknown = F.interpolate(mask.float(), size=features.shape[-2:], mode="nearest")
    known = 1 - unknown
    with _full_precision():   # moments in float32 even under bf16 autocast
        mean_known, std_known = _masked_moments(features.float(), known, eps)
        mean_unknown, std_unknown = _masked_moments(features.float(), unknown, eps)
        normalized = (features.float() - mean_unknown) / std_unknown * std_known + mean_known
    blended = blend * normalized.to(features.dtype) + (1 - blend) * features
    return blended * unknown + features * known


def _check_context_normalization(features: torch.Tensor, mask: torch.Tensor, blend: float = CONTEXT_BLEND,
                                 eps: float = 1e-5) -> None:
    """features (N, C, h, w) float, finite, N ≥ 1; mask (N, 1, H, W) in [0, 1]; blend ρ in [0, 1]; eps > 0."""
    _checks.tensor(features, "features", shape="(N, C, h, w)", ndim=4)
    _checks.masks(mask, "mask")
    _checks.same_batch("mask", mask, "features", features, spatial=False)
    check_number(blend, "blend ρ", minimum=0.0, maximum=1.0)
    check_number(eps, "eps", minimum=0.0, strict_minimum=True)


_context_normalization = context_normalization   # the network checks its inputs once and calls this
context_normalization = _checks.checked(_check_context_normalization)(context_normalization)


def _multiple_of_4(images: torch.Tensor, name: str) -> None:
    if images.shape[-2] % 4 or images.shape[-1] % 4:
        raise ValueError(f"{name} H and W must be multiples of 4 (two stride-2 stages), got "
                         f"{tuple(images.shape[-2:])}")


def _full_precision():
    """Statistics, similarities and penalties in float32: ``fit`` runs the loss under bf16
    autocast on CUDA (and in the CPU dry run), which quantises ID-MRF's relative distances and
    CN's moments."""
    return float32_region()


def region_statistics(features: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> dict:
    """Per-sample, per-channel mean and std of ``features`` (N, C, h, w) over the known and
    the unknown region (mask (N, 1, H, W), 1 = unknown, resized to (h, w)): what CN compares.
    Returns {"known": (mean, std), "unknown": (mean, std)}, each (N, C)."""
    _check_context_normalization(features, mask, CONTEXT_BLEND, eps)
    unknown = F.interpolate(mask.float(), size=features.shape[-2:], mode="nearest")
    out = {}
    for name, region in (("known", 1 - unknown), ("unknown", unknown)):
        mean, std = _masked_moments(features.float(), region, eps)
        out[name] = (mean[..., 0, 0], std[..., 0, 0])
    return out


def _masked_moments(features, region, eps):
    count = region.sum(dim=(2, 3), keepdim=True).clamp_min(eps)
    mean = (features * region).sum(dim=(2, 3), keepdim=True) / count
    variance = (((features - mean) * region) ** 2).sum(dim=(2, 3), keepdim=True) / count
    return mean, (variance + eps).sqrt()


class ContextPredictionNetwork(nn.Module):
    """CPN (network.py l.53-81), scaled by ``width``.

    [expanded features (N, c_f, H, W), padded known image (N, 3, H, W), mask (N, 1, H, W)]
    → conv5(c) → conv3/2(c) → conv3(2c) → conv3/2(2c) → 2×conv3(4c) → dilated 2, 4, 8, 16 (4c) → conv3(4c)
    → CN → conv3(4c) → up+conv3(2c) → conv3(2c) → up+conv3(c) → conv3(c/2) → conv3(3), clipped to [−1, 1].
    """

    def __init__(self, width: int, feature_channels: int, context_norm: bool = True, blend: float = CONTEXT_BLEND):
        super().__init__()
        check_int(width, "width", minimum=2), check_int(feature_channels, "feature_channels", minimum=0)
        check_probability(blend, "blend")
        c = width
        self.context_norm, self.blend = bool(context_norm), float(blend)
        self.encoder = nn.Sequential(
            _conv(feature_channels + 4, c, 5), _conv(c, c, stride=2), _conv(c, 2 * c), _conv(2 * c, 2 * c, stride=2),
            _conv(2 * c, 4 * c), _conv(4 * c, 4 * c), *[_conv(4 * c, 4 * c, dilation=d) for d in (2, 4, 8, 16)],
            _conv(4 * c, 4 * c))
        self.decoder = nn.Sequential(
            _conv(4 * c, 4 * c), _UpConv(4 * c, 2 * c), _conv(2 * c, 2 * c), _UpConv(2 * c, c), _conv(c, c // 2),
            nn.Conv2d(c // 2, 3, 3, padding=1))

    def encode(self, features, padded, mask):
        """The encoder's features (N, 4·width, H/4, W/4): what CN acts on. Inputs as :meth:`forward`."""
        self._check_inputs(features, padded, mask)
        return self._encode(features, padded, mask)

    def _check_inputs(self, features, padded, mask) -> None:
        channels = self.encoder[0][0].in_channels - 4
        _checks.tensor(features, "features", shape=f"(N, {channels}, H, W)", ndim=4, channels=channels,
                     non_empty=False)
        _checks.tensor(padded, "padded", shape="(N, 3, H, W)", ndim=4, channels=3, value_range=(-1.0, 1.0))
        _checks.masks(mask, "mask", like=padded)
        _checks.same_batch("features", features, "padded", padded)
        _multiple_of_4(padded, "padded")

    def _encode(self, features, padded, mask):
        return self.encoder(torch.cat([features, padded, mask], dim=1))

    def forward(self, features, padded, mask, blend: float | None = None):
        """features (N, feature_channels, H, W), padded known image (N, 3, H, W) in [−1, 1], mask
        (N, 1, H, W) with 1 = unknown, H and W multiples of 4; blend ρ in [0, 1] or None (the module's)
        → (N, 3, H, W) in [−1, 1]."""
        self._check_inputs(features, padded, mask)
        if blend is not None:
            check_probability(blend, "blend")
        return self._forward(features, padded, mask, blend)

    def _forward(self, features, padded, mask, blend=None):
        x = self._encode(features, padded, mask)
        if self.context_norm:
            x = _context_normalization(x, mask, self.blend if blend is None else blend)
        return self.decoder(x).clamp(-1, 1)


class ExtrapolationNetwork(nn.Module):
    """The generator of every trained model: known region → full frame.

    - ``srn``: FEN on the small input, expansion to the output size, CPN;
    - ``srn_hr``: the FEN runs on the zero-padded input at output size, no expansion
      (the official HRSemanticRegenerationNet: "plain convolutions in place of FEN");
    - ``ed``: the CPN alone on the zero-padded input and mask (an encoder–decoder).

    :meth:`forward` takes the known region (N, 3, h, w) in [0, 1] and a placement and
    returns Ŷ (N, 3, r1·h, r2·w) in [0, 1]; :meth:`complete` pastes the known pixels back.
    """

    def __init__(self, generator: str = "srn", width: int = 16, expansion: str | None = "subpixel",
                 context_norm: bool = True, blend: float = CONTEXT_BLEND):
        super().__init__()
        if not isinstance(generator, str) or generator not in GENERATORS:
            raise ValueError(f"unknown generator {generator!r}; expected one of {GENERATORS}")
        check_int(width, "width", minimum=2), check_probability(blend, "blend")
        self.generator, self.width = generator, int(width)
        self.fen = FeatureExpansionNetwork(width) if generator != "ed" else None
        self.expansion = FeatureExpansion(width, expansion) if generator == "srn" else None
        self.cpn = ContextPredictionNetwork(width, width if generator != "ed" else 0, context_norm, blend)

    def _cpn_inputs(self, known: torch.Tensor, placement: str):
        _checks.images_batch(known, "known")
        r1, r2 = expansion_factors(placement)
        _multiple_of_4(known, "known")
        x = known * 2 - 1
        padded = pad_known(x, placement)
        mask = unknown_mask(padded.shape[-2:], placement, len(known)).to(known)
        if self.generator == "srn":
            features = self.expansion(self.fen(x), r1, r2)
        elif self.generator == "srn_hr":
            features = self.fen(padded)
        else:
            features = padded[:, :0]
        return features, padded, mask

    def forward(self, known: torch.Tensor, placement: str, blend: float | None = None) -> torch.Tensor:
        """known (N, 3, h, w) in [0, 1], N ≥ 1, h and w multiples of 4; blend ρ in [0, 1] or None."""
        if blend is not None:
            check_probability(blend, "blend")
        return (self.cpn(*self._cpn_inputs(known, placement), blend) + 1) / 2

    def fen_features(self, known: torch.Tensor) -> torch.Tensor:
        """The FEN's features of the known region (N, width, h, w), before expansion."""
        if self.fen is None:
            raise ValueError(f"generator {self.generator!r} has no FEN")
        _checks.images_batch(known, "known"), _multiple_of_4(known, "known")
        return self.fen(known * 2 - 1)

    def expanded_features(self, known: torch.Tensor, placement: str) -> torch.Tensor:
        """What the FEN hands the CPN: (N, width, H, W) for ``srn`` (and ``srn_hr``)."""
        return self._cpn_inputs(known, placement)[0]

    def context_features(self, known: torch.Tensor, placement: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(the CPN encoder's features before CN (N, 4·width, H/4, W/4), the mask M (N, 1, H, W))."""
        features, padded, mask = self._cpn_inputs(known, placement)
        return self.cpn._encode(features, padded, mask), mask

    def complete(self, known: torch.Tensor, placement: str, blend: float | None = None) -> torch.Tensor:
        """Ŷ ⊙ M + X_padded ⊙ (1 − M): the output with the known pixels kept exactly."""
        predicted = self(known, placement, blend)
        mask = unknown_mask(predicted.shape[-2:], placement, len(known)).to(known)
        return predicted * mask + pad_known(known, placement) * (1 - mask)


def reflect_extrapolation(known: torch.Tensor, placement: str) -> torch.Tensor:
    """The floor: mirror the known region across its border(s) into the unknown one.

    known (N, 3, h, w) in [0, 1], N ≥ 1 → (N, 3, r1·h, r2·w); ``both`` mirrors each half outwards.
    """
    _checks.images_batch(known, "known")
    check_placement(placement)
    if placement == "left":
        return torch.cat([known, known.flip(-1)], dim=-1)
    if placement == "right":
        return torch.cat([known.flip(-1), known], dim=-1)
    if placement == "top":
        return torch.cat([known, known.flip(-2)], dim=-2)
    check_placement(placement)
    w = known.shape[-1]
    return torch.cat([known[..., :w // 2].flip(-1), known, known[..., w - w // 2:].flip(-1)], dim=-1)


# --------------------------------------------------------------------------- reconstruction weights

def propagation_kernel(size: int, sigma: float = RSV_SIGMA) -> torch.Tensor:
    """The official ``gauss_kernel(size, sigma)``: a size×size kernel from the normal CDF over
    ±(σ + half a cell) in ``size`` cells, square-rooted outer product, normalised to sum 1.
    With σ = 1/40 it is nearly flat: a soft box filter. Returns (1, 1, size, size); size ≥ 1, σ > 0."""
    check_positive_int(size, "kernel size"), check_number(sigma, "sigma", minimum=0.0, strict_minimum=True)
    interval = (2 * sigma + 1.0) / size
    edges = torch.linspace(-sigma - interval / 2, sigma + interval / 2, size + 1, dtype=torch.float64)
    cdf = 0.5 * (1 + torch.erf(edges / math.sqrt(2)))
    profile = cdf.diff()
    kernel = torch.outer(profile, profile).sqrt()
    return (kernel / kernel.sum()).float()[None, None]


def _propagate(confidence, kernel):
    k = kernel.shape[-1]
    before, after = (k - 1) // 2, k // 2   # TF 'SAME' padding for an even kernel
    return F.conv2d(F.pad(confidence, (before, after, before, after)), kernel)


def _confidence_iterations(mask: torch.Tensor, kernel_size: int, iterations: int, sigma: float) -> list:
    mask = mask.detach().float()
    kernel = propagation_kernel(kernel_size, sigma).to(mask)
    state, steps = 1 - mask, []
    for _ in range(iterations):
        confidence = _propagate(state, kernel) * mask
        steps.append(confidence)
        state = confidence + (1 - mask)
    return steps


def confidence_driven_weights(mask: torch.Tensor, kernel_size: int = 64, iterations: int = CONFIDENCE_ITERATIONS,
                              sigma: float = RSV_SIGMA) -> torch.Tensor:
    """The confidence-driven weight (Wang et al. 2018's GMCNN, the paper's comparison):
    the confidence M_w^c after c propagations, M_w^i = (G ∗ M̄_w^{i−1}) ⊙ M. mask (N, 1, H, W) in [0, 1],
    1 = unknown; kernel_size and iterations ≥ 1."""
    _check_weights_input(mask, kernel_size, iterations, sigma, minimum_iterations=1)
    return _confidence_iterations(mask, kernel_size, iterations, sigma)[-1]


def relative_spatial_variant_weights(mask: torch.Tensor, kernel_size: int = 64, iterations: int = RSV_ITERATIONS,
                                     sigma: float = RSV_SIGMA, eps: float = 1e-5) -> torch.Tensor:
    """RSV weights (§3.3): M_w = M_w^{c−1} / (M_w^c + ε), c = ``iterations`` (ops.py; the paper
    writes max(M_w^c, ε), which differs only where the confidence is below ε).

    mask (N, 1, H, W), 1 = unknown → weights (N, 1, H, W), 0 on the known region.
    Confidence only grows with each propagation, so the weights are ≤ 1; near the
    known border it has converged (weight ≈ 1), farther away it is still growing
    (smaller weight): the loss trusts most the pixels the context constrains. With
    the official kernel and a margin of twice its side the weight falls to ≈ 0.7
    at the far edge; the confidence-driven weight falls far more steeply.
    """
    steps = _confidence_iterations(mask, kernel_size, iterations, sigma)
    return steps[-2] / (steps[-1] + eps)


def _check_weights_input(mask, kernel_size, iterations, sigma, minimum_iterations: int, eps: float = 1e-5) -> None:
    _checks.masks(mask, "mask")
    check_positive_int(kernel_size, "kernel_size")
    check_int(iterations, "iterations", minimum=minimum_iterations)
    check_number(sigma, "sigma", minimum=0.0, strict_minimum=True), check_number(eps, "eps", minimum=0.0)


def _check_rsv(mask, kernel_size: int = 64, iterations: int = RSV_ITERATIONS, sigma: float = RSV_SIGMA,
               eps: float = 1e-5) -> None:
    """mask (N, 1, H, W) in [0, 1], N ≥ 1; kernel_size ≥ 1; iterations ≥ 2; sigma > 0; eps ≥ 0."""
    _check_weights_input(mask, kernel_size, iterations, sigma, minimum_iterations=2, eps=eps)


relative_spatial_variant_weights = _checks.checked(_check_rsv)(relative_spatial_variant_weights)


def reconstruction_weights(mask: torch.Tensor, kind: str, kernel_size: int) -> torch.Tensor:
    """The unknown-region weight of ℒ_s: ``rsv``, ``confidence`` or ``l1`` (the mask itself);
    mask (N, 1, H, W) in [0, 1], kernel_size ≥ 1."""
    if not isinstance(kind, str) or kind not in RECONSTRUCTIONS:
        raise ValueError(f"unknown reconstruction weight {kind!r}; expected one of {RECONSTRUCTIONS}")
    _check_weights_input(mask, kernel_size, RSV_ITERATIONS, RSV_SIGMA, minimum_iterations=1)
    if kind == "rsv":
        return relative_spatial_variant_weights(mask, kernel_size)
    if kind == "confidence":
        return confidence_driven_weights(mask, kernel_size)
    if kind == "l1":
        return mask.float()
    raise ValueError(f"unknown reconstruction weight {kind!r}; expected one of {RECONSTRUCTIONS}")


def reconstruction_loss(predicted, target, mask, weights) -> tuple[torch.Tensor, dict]:
    """The official pretraining loss on images in [−1, 1] (network.py l.213-215):

        ℓ_unknown = 1.2 · mean(|Y − Ŷ| ⊙ M_w)
        ℓ_known   = 1.2 · mean(|Y − Ŷ| ⊙ (1 − M)) / mean(1 − M)
        ℒ_rec     = 4.2 · ℓ_unknown + 1.2 · ℓ_known
    """
    error = (predicted - target).abs() * 2          # in [−1, 1] units
    unknown = RECONSTRUCTION_SCALE * (error * weights).mean()
    known = RECONSTRUCTION_SCALE * (error * (1 - mask)).mean() / (1 - mask).mean().clamp_min(1e-8)
    total = UNKNOWN_WEIGHT * unknown + KNOWN_WEIGHT * known
    return total, {"l1_unknown": float(unknown.detach()), "l1_known": float(known.detach())}


def _check_reconstruction(predicted, target, mask, weights) -> None:
    """predicted and target (N, 3, H, W) of one shape, mask and weights (N, 1, H, W), all finite, N ≥ 1;
    mask in [0, 1], weights ≥ 0."""
    _checks.tensor(predicted, "predicted", shape="(N, 3, H, W)", ndim=4, channels=3)
    _checks.tensor(target, "target", shape="(N, 3, H, W)", ndim=4, channels=3)
    if predicted.shape != target.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and target {tuple(target.shape)} must have the same shape")
    _checks.masks(mask, "mask", like=target)
    _checks.tensor(weights, "weights", shape="(N, 1, H, W)", ndim=4, channels=1, value_range=(0.0, math.inf),
                 tolerance=0.0)
    if weights.shape != mask.shape:
        raise ValueError(f"weights {tuple(weights.shape)} must have the mask's shape {tuple(mask.shape)}")


_reconstruction_loss = reconstruction_loss   # the trainer checks its batch once and calls this
reconstruction_loss = _checks.checked(_check_reconstruction)(reconstruction_loss)


# --------------------------------------------------------------------------- ID-MRF

def id_mrf_layer_loss(generated: torch.Tensor, target: torch.Tensor, bandwidth: float = MRF_BANDWIDTH,
                      max_positions: int = MRF_MAX_POSITIONS, generator: torch.Generator | None = None) -> torch.Tensor:
    """ID-MRF between feature maps (N, C, h, w) of Ŷ (``generated``) and Y (``target``).

    As ops.py's ``mrf_loss``: centre both by the mean of the generated features,
    normalise each position to unit length, and for generated feature v and
    target feature s take the cosine distance d(v, s) = (1 − cos)/2, its relative
    form d̃ = d / (min_v d(v, s) + ε), and RS(v, s) = exp((1 − d̃)/h) normalised over v:

        RS̄(v, s) = RS(v, s) / Σ_r RS(r, s),   ℒ_M = −log( mean_v max_s RS̄(v, s) ).

    A generated feature scores high when some target feature picks it as its
    clear nearest neighbour; copying one target patch everywhere scores low,
    because each target feature can pick only a few. With more than
    ``max_positions`` positions both maps are sampled at the same random positions.
    """
    n, c, h, w = generated.shape
    g = generated.float().flatten(2)
    t = target.float().flatten(2)
    if h * w > max_positions:
        keep = torch.randperm(h * w, generator=generator)[:max_positions].to(g.device)
        g, t = g[..., keep], t[..., keep]
    with _full_precision():
        mean = g.mean(dim=(0, 2), keepdim=True)
        g = F.normalize(g - mean, dim=1)
        t = F.normalize(t - mean, dim=1)
        cosine = torch.einsum("ncs,ncv->nsv", t, g)                 # (N, target s, generated v)
        distance = (1 - cosine) / 2
        relative = distance / (distance.min(dim=2, keepdim=True).values + 1e-5)
        similarity = torch.softmax((1 - relative) / bandwidth, dim=2)   # normalised over v
        best = similarity.max(dim=1).values                          # (N, v): max over s
        return -torch.log(best.mean(dim=1)).mean()


def _check_id_mrf(generated: torch.Tensor, target: torch.Tensor, bandwidth: float = MRF_BANDWIDTH,
                  max_positions: int = MRF_MAX_POSITIONS, generator: torch.Generator | None = None) -> None:
    """generated and target (N, C, h, w) feature maps of one shape, float, finite, non-empty; bandwidth > 0;
    max_positions ≥ 1; generator a torch.Generator or None."""
    _checks.tensor(generated, "generated", shape="(N, C, h, w)", ndim=4)
    _checks.tensor(target, "target", shape="(N, C, h, w)", ndim=4)
    if generated.shape != target.shape:
        raise ValueError(f"generated {tuple(generated.shape)} and target {tuple(target.shape)} must have the same shape")
    check_number(bandwidth, "bandwidth", minimum=0.0, strict_minimum=True)
    check_positive_int(max_positions, "max_positions")
    _checks.instance(generator, "generator", torch.Generator, "a torch.Generator", allow_none=True)


_id_mrf_layer_loss = id_mrf_layer_loss
id_mrf_layer_loss = _checks.checked(_check_id_mrf)(id_mrf_layer_loss)


class IDMRFLoss(nn.Module):
    """ℒ_mrf over two feature layers: the official conv3_2 + 2·conv4_2 of VGG-19
    (style layers conv3_2, conv4_2 plus content layer conv4_2), or the judge's enc3 + 2·enc4.

    extractor: a :class:`labkit.features.FeatureExtractor` built with exactly those two layers
    (shallower first). Images (N, 3, H, W) in [0, 1].
    """

    def __init__(self, extractor: FeatureExtractor, layer_weights=(1.0, 2.0)):
        super().__init__()
        _checks.instance(extractor, "extractor", FeatureExtractor,
                         "a labkit.features.FeatureExtractor (see load_feature_extractor)")
        if isinstance(layer_weights, (str, bytes)) or not isinstance(layer_weights, (list, tuple)):
            raise ValueError(f"layer_weights must be a list or tuple of numbers, got {layer_weights!r}")
        for i, weight in enumerate(layer_weights):
            check_number(weight, f"layer_weights[{i}]", minimum=0.0)
        if len(extractor.layer_names) != len(layer_weights):
            raise ValueError(f"extractor returns layers {extractor.layer_names}; expected {len(layer_weights)}")
        self.extractor, self.layer_weights = extractor, tuple(layer_weights)

    def forward(self, generated, target):
        """generated and target (N, 3, H, W) in [0, 1] of one shape, N ≥ 1 → scalar."""
        _checks.images_batch(generated, "generated"), _checks.images_batch(target, "target")
        if generated.shape != target.shape:
            raise ValueError(f"generated {tuple(generated.shape)} and target {tuple(target.shape)} must have the "
                             "same shape")
        with torch.no_grad():
            target_features = self.extractor(target)
        generated_features = self.extractor(generated)
        return sum(w * _id_mrf_layer_loss(g, t) for w, g, t in
                   zip(self.layer_weights, generated_features, target_features))


MRF_LAYERS = {"judge": ("enc3", "enc4"), "vgg19": ("conv3_2", "conv4_2")}


# --------------------------------------------------------------------------- critics and WGAN-GP

class GlobalCritic(nn.Module):
    """4 × [conv5/2 → LeakyReLU] (c, 2c, 4c, 2c) → flatten → dense → one score per image
    (network.py l.139-155). images (N, 3, H, W) in [−1, 1], H and W multiples of 16."""

    def __init__(self, size, width: int = 64):
        super().__init__()
        self.size = check_pair(size, "size", multiple_of=16)
        c = check_positive_int(width, "width")
        chans = (3, c, 2 * c, 4 * c, 2 * c)
        self.convs = nn.Sequential(*[nn.Sequential(nn.Conv2d(a, b, 5, 2, 2), nn.LeakyReLU(0.2))
                                     for a, b in zip(chans[:-1], chans[1:])])
        self.dense = nn.Linear(2 * c * (size[0] // 16) * (size[1] // 16), 1)

    def forward(self, images):
        """images (N, 3, H, W) at the critic's size, finite, N ≥ 1 → (N,) scores."""
        _checks.tensor(images, "images", shape=f"(N, 3, {self.size[0]}, {self.size[1]})", ndim=4, channels=3)
        if tuple(images.shape[-2:]) != self.size:
            raise ValueError(f"images must be (N, 3, {self.size[0]}, {self.size[1]}) for this critic, got "
                             f"{tuple(images.shape)}")
        return self.dense(self.convs(images).flatten(1)).squeeze(1)


class ContextualCritic(nn.Module):
    """3 × [conv5/2 → LeakyReLU] (c, 2c, 4c) → conv3 → 1 map, averaged over the unknown region
    (the mask max-pooled 8×) (network.py l.123-137): D_context(Ŷ) = Σ_p P(Ŷ)_p M↓_p / Σ_q M↓_q."""

    def __init__(self, width: int = 64):
        super().__init__()
        c = check_positive_int(width, "width")
        chans = (3, c, 2 * c, 4 * c)
        self.convs = nn.Sequential(*[nn.Sequential(nn.Conv2d(a, b, 5, 2, 2), nn.LeakyReLU(0.2))
                                     for a, b in zip(chans[:-1], chans[1:])])
        self.head = nn.Conv2d(4 * c, 1, 3, padding=1)

    def forward(self, images, mask):
        """images (N, 3, H, W), mask (N, 1, H, W) in [0, 1] (1 = unknown), H and W multiples of 8 → (N,)."""
        _checks.tensor(images, "images", shape="(N, 3, H, W)", ndim=4, channels=3)
        _checks.masks(mask, "mask", like=images)
        if images.shape[-2] % 8 or images.shape[-1] % 8:
            raise ValueError(f"images H and W must be multiples of 8, got {tuple(images.shape[-2:])}")
        scores = self.head(self.convs(images))
        region = F.max_pool2d(mask, 8)
        return (scores * region).sum(dim=(1, 2, 3)) / region.sum(dim=(1, 2, 3)).clamp_min(1e-8)


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, mask: torch.Tensor | None = None,
                     mix: torch.Tensor | None = None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017), with the paper's masked gradient:

        x̂ = α·x + (1 − α)·x̃,  α ~ U(0, 1) per sample;   GP = E[(‖∇_x̂ D(x̂) ⊙ M‖₂ − 1)²].

    ``critic`` maps (N, 3, H, W) to (N,) scores; ``mask`` broadcasts over the
    images (None: the whole image). A 1-Lipschitz linear critic with a unit-norm
    weight inside the mask has ∇ = that weight everywhere, so GP = 0. real and fake of one shape,
    finite, N ≥ 1; ``mix`` (N,) in [0, 1] or None.
    """
    _checks.function(critic, "critic", "images (N, 3, H, W) → scores (N,)")
    _checks.tensor(real, "real", shape="(N, 3, H, W)", ndim=4)
    _checks.tensor(fake, "fake", shape="(N, 3, H, W)", ndim=4)
    if real.shape != fake.shape:
        raise ValueError(f"real {tuple(real.shape)} and fake {tuple(fake.shape)} must have the same shape")
    if mask is not None:
        _checks.tensor(mask, "mask", shape="(N or 1, 1 or 3, H, W)", ndim=4, value_range=(0.0, 1.0), tolerance=0.0)
    if mix is not None:
        _checks.tensor(mix, "mix", shape="(N,)", value_range=(0.0, 1.0), tolerance=0.0)
        if mix.numel() != len(real):
            raise ValueError(f"mix must hold one α per sample, {len(real)}, got {tuple(mix.shape)}")
    alpha = torch.rand(len(real), 1, 1, 1, device=real.device) if mix is None else mix.view(-1, 1, 1, 1)
    mixed = (alpha * real.detach().float() + (1 - alpha) * fake.detach().float()).requires_grad_(True)
    scores = critic(mixed)
    gradients, = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    with _full_precision():
        gradients = gradients.float()
        if mask is not None:
            gradients = gradients * mask
        norms = gradients.flatten(1).pow(2).sum(dim=1).add(1e-12).sqrt()
        return ((norms - 1) ** 2).mean()


class SRNTrainer(nn.Module):
    """Generator, critics and losses in one module (one checkpoint holds all of them).

    :meth:`pretrain_loss` is phase 1: ℒ_rec alone. :meth:`finetune_loss` is phase 2:
    it first takes ``critic_steps`` WGAN-GP critic steps with ``critic_optimizer`` on
    the completed image Ŷ ⊙ M + Y ⊙ (1 − M), then returns

        ℒ = ℒ_rec + λ_mrf ℒ_mrf + λ_adv · (ℒ_adv^global + ℒ_adv^context),   ℒ_adv = −E[D(Ŷ)]

    (the official code sums the two critics' terms). Both take a batch
    {"image": (N, 3, H, W) in [0, 1], "placement": str}; for more than one critic step
    the batch holds ``critic_steps`` · N images, and critic step i sees chunk i (each of
    the official code's critic steps draws a new batch); the generator's loss uses chunk 0.
    """

    def __init__(self, generator: ExtrapolationNetwork, size, reconstruction: str = "rsv", rsv_kernel: int = 64,
                 critic_width: int = 64, mrf: IDMRFLoss | None = None, critic_steps: int = 1,
                 adversarial: bool = True):
        super().__init__()
        if not isinstance(reconstruction, str) or reconstruction not in RECONSTRUCTIONS:
            raise ValueError(f"unknown reconstruction weight {reconstruction!r}; expected one of {RECONSTRUCTIONS}")
        _checks.module(generator, "generator", ExtrapolationNetwork)
        check_positive_int(critic_steps, "critic_steps"), check_positive_int(rsv_kernel, "rsv_kernel")
        check_positive_int(critic_width, "critic_width"), _checks.flag(adversarial, "adversarial")
        _checks.module(mrf, "mrf", IDMRFLoss, allow_none=True)
        size = check_pair(size, "size")
        if size[0] % 16 or size[1] % 16:
            raise ValueError(f"the critics need an output size divisible by 16, got {tuple(size)}")
        self.generator, self.reconstruction, self.rsv_kernel = generator, reconstruction, int(rsv_kernel)
        self.global_critic = GlobalCritic(size, critic_width)
        self.contextual_critic = ContextualCritic(critic_width)
        # the frozen feature network is not part of the trainer's state: checkpoints of both
        # phases then hold the same keys, and none of them carries a copy of the judge
        self.__dict__["mrf"] = mrf
        self.critic_steps, self.adversarial = int(critic_steps), bool(adversarial)
        self._weights: dict = {}

    def critic_parameters(self):
        return list(self.global_critic.parameters()) + list(self.contextual_critic.parameters())

    def _weights_for(self, mask, placement):
        key = (placement, tuple(mask.shape), mask.device)
        if key not in self._weights:
            self._weights[key] = reconstruction_weights(mask, self.reconstruction, self.rsv_kernel)
        return self._weights[key]

    def _predict(self, batch, chunks: int):
        """The generator on the first of ``chunks`` equal parts of the batch (the others are the
        critics' extra steps' images); returns (prediction, unknown mask, ℒ_rec, logs)."""
        _checks.batch(batch, ("image", "placement"))
        image, placement = _checks.images_batch(batch["image"], 'batch["image"]'), check_placement(batch["placement"])
        if tuple(image.shape[-2:]) != tuple(self.global_critic.size):
            raise ValueError(f'batch["image"] must be (N, 3, {self.global_critic.size[0]}, {self.global_critic.size[1]}) '
                             f"for this trainer's critics, got {tuple(image.shape)}")
        if len(image) % chunks:
            raise ValueError(f"a batch of {len(image)} images does not split into {chunks} critic steps")
        image = image[:len(image) // chunks] if chunks > 1 else image
        predicted = self.generator(crop_known(image, placement), placement)
        mask = unknown_mask(image.shape[-2:], placement, len(image)).to(image)
        loss, logs = _reconstruction_loss(predicted, image, mask, self._weights_for(mask, placement))
        return predicted, mask, loss, logs

    def pretrain_loss(self, batch):
        """Phase 1: ℒ_rec of batch {"image": (N, 3, H, W) in [0, 1], "placement": str}: every image
        is the generator's (no critic runs in this phase, so none is set aside for critic steps)."""
        _, _, loss, logs = self._predict(batch, 1)
        return loss, logs

    def _critic_scores(self, images, mask):
        return self.global_critic(images) + self.contextual_critic(images, mask)

    def finetune_loss(self, batch, critic_optimizer: torch.optim.Optimizer | None = None):
        predicted, mask, loss, logs = self._predict(batch, self.critic_steps)
        chunks = batch["image"].chunk(self.critic_steps) if self.critic_steps > 1 else (batch["image"],)
        real = chunks[0] * 2 - 1
        complete = (predicted * 2 - 1) * mask + real * (1 - mask)
        if self.adversarial:
            if critic_optimizer is None:
                raise ValueError("finetune_loss with adversarial terms needs the critic optimizer")
            for index in range(self.critic_steps):
                critic_optimizer.zero_grad(set_to_none=True)
                if index == 0:
                    fake = complete.detach()
                else:
                    real = chunks[index] * 2 - 1
                    with torch.no_grad():
                        extra = self.generator(crop_known(chunks[index], batch["placement"]), batch["placement"])
                    fake = (extra * 2 - 1) * mask + real * (1 - mask)
                wasserstein = (self.global_critic(fake).mean() - self.global_critic(real).mean()
                               + self.contextual_critic(fake, mask).mean() - self.contextual_critic(real, mask).mean())
                mix = torch.rand(len(real), device=real.device)
                penalty = (gradient_penalty(self.global_critic, real, fake, mask, mix)
                           + gradient_penalty(lambda x: self.contextual_critic(x, mask), real, fake,
                                              F.interpolate(F.max_pool2d(mask, 8), scale_factor=8), mix))
                (wasserstein + GRADIENT_PENALTY_WEIGHT * penalty).backward()
                critic_optimizer.step()
            real = chunks[0] * 2 - 1
            for p in self.critic_parameters():
                p.requires_grad_(False)
            try:
                adversarial = -self._critic_scores(complete, mask).mean()
            finally:
                for p in self.critic_parameters():
                    p.requires_grad_(True)
            loss = loss + ADVERSARIAL_WEIGHT * adversarial
            logs.update(critic_wasserstein=float(-wasserstein.detach()), gradient_penalty=float(penalty.detach()),
                        adversarial=float(adversarial.detach()))
        if self.mrf is not None:
            mrf = self.mrf(predicted, chunks[0])
            loss = loss + MRF_WEIGHT * mrf
            logs["id_mrf"] = float(mrf.detach())
        return loss, logs


def _check_finetune(self, batch, critic_optimizer: torch.optim.Optimizer | None = None) -> None:
    """batch as :meth:`SRNTrainer.pretrain_loss`; critic_optimizer a torch.optim.Optimizer (or None
    without adversarial terms)."""
    _checks.instance(critic_optimizer, "critic_optimizer", torch.optim.Optimizer, "a torch.optim.Optimizer",
                     allow_none=True)


# the chapter displays finetune_loss: its check is attached here, outside its source
SRNTrainer.finetune_loss = _checks.checked(_check_finetune)(SRNTrainer.finetune_loss)
