"""Semantic Image Analogy with a Conditional Single-Image GAN (Li, Xiong, Liu, Chen, Zha, ACM MM 2020).

Given one image I with its layout P and an edited layout P′, produce I′ so that

    P ⇒ P′  ::  I ⇒ I′.

One generator is trained on one image, self-supervised: (I, P) is warped jointly into
(I_aug, P_aug), and the generator learns to turn I into I_aug when told that P became
P_aug. At test time P_aug is replaced by the user's P′.

**Generator** G(I, P, P′) (official semia/generator.py):

- a segmentation encoder E_seg, shared by P and P′, gives features F^l(P), F^l(P′) at
  three scales l = 1, 2, 3 (strides 2, 4, 8; 2w, 4w, 8w channels);
- the **Semantic Feature Translation** (SFT) module turns how the layout changed into
  per-pixel affine parameters,

      γ^l = f_γ^l( F^l(P′) / F^l(P) ),      β^l = f_β^l( F^l(P′) − F^l(P) ),

  each f a residual block, a 1×1 conv to half the channels, ReLU and a 1×1 conv back;
- an image encoder E_img and a decoder, both applying γ^l · IN(x) + β^l after each of
  their three down-sampling blocks and before each of their three up-sampling blocks
  (IN: instance normalisation without affine parameters).

If P′ = P, the ratio is 1 and the difference 0 everywhere, so the SFT inputs are the same
for every image: the *fixed point*. The fixed-point loss teaches f_γ(1) = 1, f_β(0) = 0,
after which G(I, P, P) is an encoder–decoder over normalised features, trained to return I.

**Training**, alternating two modes (``RECONSTRUCTION_EVERY`` = 5):

- reconstruction mode (every 5th iteration): source = target = (I_aug, P_aug),
  L = 5 · ‖G(I_aug, P_aug, P_aug) − I_aug‖₁ (images in [−1, 1], as the official code's)
  + 1 · Σ_l (‖γ^l − 1‖₁ + ‖β^l‖₁) + GAN + FM;
- sampling mode: source (I, P), target (I_aug, P_aug) (swapped with p = ½), fake = G(I, P, P_aug),
  L = 1 · patch coherence(fake, I) + 1 · alignment(S(fake), P_aug) + GAN + 1 · FM,

with an LSGAN patch discriminator D (real: the target image) and feature matching on D's features,
and an auxiliary segmenter S trained on the real (I_aug, P_aug).

**Patch coherence** (the paper): every target patch V should exist in the source,

    L_patch = 1/N Σ_{V ⊂ φ(I′)} min_{U ⊂ φ(I)} ‖V − U‖₁,

on features φ (the judge's enc1 with 3×3 patches and enc2 with 1×1 patches, 10 and 5
random target patches, in the smoke and book profiles; VGG-19 in the official code and in
the full profile when its weights are installed).

**Semantic alignment**: S(I′) should segment as P′, cross-entropy. The official code
computes it under ``no_grad`` on ``fake.detach()``: no gradient reaches G
(``alignment="detached"``, an ablation here).

Shapes: images (N, 3, H, W) in [0, 1], layouts one-hot (N, K, H, W) with K the number of
labels of that image; H and W multiples of 8.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import spectral_norm

from ..checks import (check_int, check_non_negative_int, check_number, check_pair, check_positive_int,
                      check_probability, check_seed)
from ..data.validation import check_images, check_label_map
from ..networks import InstanceNorm2d, instance_norm
from ..pix2pix import lsgan_loss
from ..train import register_dry_run
from . import _checks

CHAPTER = "analogy"
RECONSTRUCTION_EVERY = 5
LOSS_WEIGHTS = {"reconstruction": 5.0, "fixed_point": 1.0, "patch": 1.0, "alignment": 1.0,
                "adversarial": 1.0, "feature_matching": 1.0}
"""The official train_options.py weights (rec_alpha 5, fixedpoint_alpha 1, patch_alpha 1,
aux_alpha 1, feat_match_alpha 1)."""
PATCH_SAMPLING = ((3, 10), (1, 5))
"""(patch size, number of random target patches) on the first and second feature map."""
RATIO_EPSILON = 1e-2
RATIO_LIMIT = 10.0
PAPER_BETAS = (0.0, 0.9)
PAPER_LEARNING_RATES = {"generator": 0.005, "discriminator": 0.02}
PAPER_ITERATIONS = 2500
OFFICIAL_GENERATOR_STEPS = 10
"""G steps per iteration in the official train.py (with 2 D steps and one auxiliary step)."""
OFFICIAL_DECAY_START = 1000
"""The official learning rates decay linearly to a tenth after this iteration."""
OFFICIAL_RAMP_ITERATIONS = 1000
"""The official augmentation ramps up over this many iterations (dataset.py)."""
AUGMENTATION = {"flip": 0.5, "tps_probability": 0.5, "tps_points": 3, "tps_max": 0.05, "scale_max": 0.2,
                "shift_max": 0.1}
"""Full-strength joint augmentation: flip with probability 0.5·s, a thin-plate spline on a
3×3 grid of control points moved up to 0.05·W (probability 0.5), zoom up to 1 + 0.2·s and
shift up to 0.1·s of the size, s the ramp strength in [0, 1]."""

MODEL_SPECS = {
    "sft": {"conditioning": "sft", "fixed_point": True, "ramp": True, "alignment": "gradient"},
    "sft_one_plus_gamma": {"conditioning": "sft", "gamma": "one_plus", "fixed_point": True, "ramp": True,
                           "alignment": "gradient"},
    "sft_zero_padding": {"conditioning": "sft", "padding": "zeros", "fixed_point": True, "ramp": True,
                         "alignment": "gradient"},
    "no_sft": {"conditioning": "spade", "fixed_point": False, "ramp": True, "alignment": "gradient"},
    "no_fixed_point": {"conditioning": "sft", "fixed_point": False, "ramp": True, "alignment": "gradient"},
    "no_augmentation_ramp": {"conditioning": "sft", "fixed_point": True, "ramp": False, "alignment": "gradient"},
    "alignment_detached": {"conditioning": "sft", "fixed_point": True, "ramp": True, "alignment": "detached"},
    "image_analogies": {"conditioning": None},
}
MODEL_NAMES = tuple(MODEL_SPECS)
TRAINED_MODELS = tuple(name for name, spec in MODEL_SPECS.items() if spec["conditioning"])

PROFILES = {
    "smoke": {"street_size": (32, 64), "photo_size": (32, 48), "street_scenes": 1, "photos": ("coffee",),
              "photo_labels": 4, "width": 4, "iterations": 6, "ramp_iterations": 3, "segmenter_iterations": 4,
              "generator_lr": 1e-3, "discriminator_lr": 4e-3, "features": "judge"},
    "book": {"street_size": (64, 128), "photo_size": (64, 96), "street_scenes": 2, "photos": ("coffee",),
             "photo_labels": 6, "width": 16, "iterations": 1800, "ramp_iterations": 720,
             "segmenter_iterations": 400, "generator_lr": 1e-3, "discriminator_lr": 4e-3, "features": "judge"},
    "full": {"street_size": (128, 256), "photo_size": (128, 192), "street_scenes": 4,
             "photos": ("coffee", "chelsea", "astronaut"), "photo_labels": 6, "width": 32,
             "iterations": PAPER_ITERATIONS, "ramp_iterations": 1000, "segmenter_iterations": 1500,
             "generator_lr": PAPER_LEARNING_RATES["generator"],
             "discriminator_lr": PAPER_LEARNING_RATES["discriminator"], "features": "auto"},
}
DRY_RUN = register_dry_run(PROFILES, {"iterations": 2, "ramp_iterations": 1, "segmenter_iterations": 2,
                                      "photos": ("coffee",), "street_scenes": 1, "street_size": (64, 128),
                                      "photo_size": (64, 96)})
"""How ``python -m labkit.dry_run analogy`` shrinks the full profile: 2 steps per network, a few scenes."""
DRY_RUN_NOTE = (f"The dry run keeps the full profile's networks (width {PROFILES['full']['width']}), learning rates and "
                f"losses; it trains on {len(DRY_RUN['photos'])} photo and {DRY_RUN['street_scenes']} street scene instead "
                f"of {len(PROFILES['full']['photos'])} and {PROFILES['full']['street_scenes']}, at "
                f"{DRY_RUN['photo_size'][0]}×{DRY_RUN['photo_size'][1]} and {DRY_RUN['street_size'][0]}×"
                f"{DRY_RUN['street_size'][1]} instead of {PROFILES['full']['photo_size'][0]}×"
                f"{PROFILES['full']['photo_size'][1]} and {PROFILES['full']['street_size'][0]}×"
                f"{PROFILES['full']['street_size'][1]}: the patch-matching baseline (Image Analogies) is slow at full "
                "size on a CPU.")

_BOOK = PROFILES["book"]
DEVIATIONS = [
    "Images: one StreetScenes scene at a time (book: "
    f"{_BOOK['street_scenes']} scenes at {_BOOK['street_size'][0]}×{_BOOK['street_size'][1]}) and scikit-image's "
    f"photographs at {_BOOK['photo_size'][0]}×{_BOOK['photo_size'][1]} with an automatic "
    f"{_BOOK['photo_labels']}-label layout (colour and position clustering), instead of the paper's "
    "hand-labelled photographs at about 256 px and up.",
    f"Scale: base width {_BOOK['width']} instead of 32; {_BOOK['iterations']:,} iterations of one generator "
    f"step instead of {PAPER_ITERATIONS:,} iterations of 10 generator steps, 2 discriminator steps and an "
    "auxiliary step (the full profile keeps 2,500 iterations, one generator step each).",
    f"Learning rates {_BOOK['generator_lr']:g} (G) and {_BOOK['discriminator_lr']:g} (D) in the smoke and "
    f"book profiles; the official {PAPER_LEARNING_RATES['generator']:g} and "
    f"{PAPER_LEARNING_RATES['discriminator']:g} in full. Adam β = (0, 0.9) as in the code. No linear "
    "learning-rate decay after iteration 1,000.",
    "Layouts are one-hot label maps (K channels) instead of the official colour-coded 3-channel "
    "segmentation images.",
    "SFT ratio: the segmentation encoder ends its blocks with ReLU, so its features are ≥ 0, and the "
    f"ratio is (F(P′) + {RATIO_EPSILON:g}) / (F(P) + {RATIO_EPSILON:g}), clipped to {RATIO_LIMIT:g}. The "
    "official code divides LeakyReLU features with ε = 1e-14, which can blow up wherever F(P) is near 0. "
    "Both give exactly 1 for P′ = P.",
    "Architecture, simplified: instance norm (affine) with spectral norm in E_img and the decoder instead "
    "of the official spectral batch norm at batch 1; E_seg keeps batch norm, over the pair (P, P′) "
    "in one batch, so that an edit changes F(P′) − F(P) only near the edit; no residual blocks in the down- and up-sampling blocks; the SFT residual "
    "block is conv3–LReLU–conv3 with reflection padding (official: a spectral-norm 1×1–3×3–1×1 bottleneck, also "
    "reflection-padded); a tanh output; a "
    "plain patch discriminator instead of CC-FPSE's; one D step per iteration (official: one before and "
    "one after the G steps); flip, then zoom and shift, then the spline (official: flip, spline, affine).",
    "Semantic alignment: cross-entropy of the auxiliary segmenter's logits against P′, with gradient to "
    "G (the paper). The official code takes an L1 distance to the colour-coded layout, computed without "
    "gradient, so it trains nothing; `alignment_detached` reproduces that.",
    "The auxiliary segmenter trains on the augmented real pair at every iteration (the official code: "
    "every 5th, in reconstruction mode) and is a small dilated conv net instead of DeepLab's ASPP.",
    "Patch coherence on the judge's enc1 (3×3 patches) and enc2 (1×1) instead of VGG-19's first two "
    "maps (VGG-19 when its weights are supplied, full profile). Each target patch takes its single "
    "nearest source patch, the paper's min; the official code averages the 5 nearest.",
    "Augmentation: the thin-plate-spline vectors reach 0.05·W instead of 0.02·W (at 64 px, 0.02·W is "
    "about one pixel) and a shift of up to 10 % is on (off by default in the code); flips with "
    "p = 0.5·s and zoom up to 1.2 follow the code. Warps use kornia's thin-plate spline and one "
    "sampling grid for image (bilinear) and layout (nearest).",
    "γ = f_γ(ratio), the paper's and the official code's form, in the main model `sft`; `sft_one_plus_gamma` "
    "trains γ = 1 + f_γ(ratio) (SPADE's form, which starts at the fixed point instead of near γ = 0) and is "
    "recorded beside it. The main model keeps the official form so that the chapter tests the paper's method.",
    "The generators, the discriminator and the auxiliary segmenter train at batch 1. Our first record trained on "
    "wrong gradients: the permuted one-hot layouts were channels_last-strided, so was the gradient arriving at "
    "every instance norm behind γ·IN(x) + β, and torch 2.13's CPU instance norm returns a wrong gradient for a "
    "channels_last incoming gradient at batch 1 (see labkit.networks). It also used zero padding in the SFT "
    "residual blocks (`sft_zero_padding` retrains that on right gradients). The layouts are now contiguous, "
    "the instance norms hand the kernel a contiguous gradient, and tests/test_gradients.py compares every model's "
    "gradients with a float64 reference; the record was retrained.",
    "The SPADE-like baseline (`no_sft`) computes γ, β from F(P′) alone, (1 + γ)·IN(x) + β, with the "
    "same networks and losses, and without the fixed-point loss (it has no fixed point to keep). In "
    "training, E_seg's batch norm sees P and P′ in one batch, so P reaches it through the batch "
    "statistics; in evaluation (running statistics) it does not.",
    "Evaluation: the paper's 'mean IoU / pixel accuracy' of a segmenter on I′ against P′ uses an "
    "evaluation segmenter trained on each image separately, on its own augmentations, with another "
    "architecture (a small U-Net) than the auxiliary segmenter G trained against, plus the judge on "
    "street scenes. The judge also supplies the patch-coherence features in the smoke and book "
    "profiles, so its scores are not independent of training. PSNR to a ground truth exists only for "
    "StreetScenes edits, which the paper could not measure.",
]


# --------------------------------------------------------------------------- inputs

def check_layout(layout, num_classes: int, size=None, name: str = "layout") -> torch.Tensor:
    """A one-hot layout (N, num_classes, H, W) float, N ≥ 1, H and W multiples of 8, finite, in [0, 1]
    and at most 1 summed over the labels at each pixel."""
    if not isinstance(layout, torch.Tensor) or not layout.is_floating_point() or layout.dim() != 4:
        got = tuple(layout.shape) if isinstance(layout, torch.Tensor) else type(layout).__name__
        raise ValueError(f"{name} must be a float one-hot tensor (N, {num_classes}, H, W), got {got}")
    if layout.shape[1] != num_classes:
        raise ValueError(f"{name} must have {num_classes} channels (one per label), got {layout.shape[1]}")
    if size is not None and tuple(layout.shape[-2:]) != tuple(size):
        raise ValueError(f"{name} must be {tuple(size)} in (H, W), got {tuple(layout.shape[-2:])}")
    if layout.shape[-2] % 8 or layout.shape[-1] % 8:
        raise ValueError(f"{name}: H and W must be multiples of 8, got {tuple(layout.shape[-2:])}")
    return _checks.layout(layout, num_classes, name=name)


def one_hot(labels, num_classes: int) -> torch.Tensor:
    """labels (N, H, W) or (H, W) int in [0, num_classes) → (N, num_classes, H, W) float."""
    check_positive_int(num_classes, "num_classes")
    labels = check_label_map(labels, "labels", num_classes=num_classes, ndim=(2, 3))
    if labels.dim() == 2:
        labels = labels[None]
    # contiguous: the permuted one-hot is channels_last-strided, and with it every layer after it
    # (see labkit.networks: torch 2.13's CPU instance norm gets such gradients wrong at batch 1)
    return F.one_hot(labels, num_classes).permute(0, 3, 1, 2).float().contiguous()


# --------------------------------------------------------------------------- building blocks

def conv_block(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1,
               activation: str = "lrelu", norm: str = "instance") -> nn.Sequential:
    """reflection pad → spectral-norm conv → norm (affine) → LeakyReLU(0.2) or ReLU.

    ``norm``: "instance" (statistics of each image) or "batch" (statistics of the batch in
    training, running statistics in evaluation: the official code's norm)."""
    if norm not in ("instance", "batch"):
        raise ValueError(f"norm must be 'instance' or 'batch', got {norm!r}")
    if activation not in ("lrelu", "relu"):
        raise ValueError(f"activation must be 'lrelu' or 'relu', got {activation!r}")
    check_positive_int(in_channels, "in_channels"), check_positive_int(out_channels, "out_channels")
    check_positive_int(kernel, "kernel"), check_positive_int(stride, "stride")
    pad = (kernel - 1) // 2 if stride == 1 else (kernel - stride) // 2
    act = nn.LeakyReLU(0.2) if activation == "lrelu" else nn.ReLU()
    normalise = InstanceNorm2d(out_channels, affine=True) if norm == "instance" else nn.BatchNorm2d(out_channels)
    return nn.Sequential(nn.ReflectionPad2d(pad), spectral_norm(nn.Conv2d(in_channels, out_channels, kernel, stride)),
                         normalise, act)


def instance_normalize(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """IN(x) = (x − μ_nc) / sqrt(σ²_nc + ε) over each sample's and channel's H·W positions; x (N, C, H, W)
    with H·W > 1, eps > 0."""
    _checks.tensor(x, "x", shape="(N, C, H, W)", ndim=4, finite=False)
    if x.shape[-2] * x.shape[-1] < 2:
        raise ValueError(f"x must have more than one position per channel to normalise over, got {tuple(x.shape)}")
    check_number(eps, "eps", minimum=0.0, strict_minimum=True)
    return instance_norm(x, eps=eps)


def translate(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """The SFT transform γ · IN(x) + β; x, γ, β (N, C, h, w) of one shape."""
    instance_normalize(x)   # checks x
    for name, value in (("gamma", gamma), ("beta", beta)):
        _checks.tensor(value, name, shape="(N, C, h, w)", ndim=4, finite=False)
        if value.shape != x.shape:
            raise ValueError(f"{name} {tuple(value.shape)} must have x's shape {tuple(x.shape)}")
    return _translate(x, gamma, beta)


def _translate(x, gamma, beta):
    return gamma * instance_normalize(x) + beta


def layout_ratio(target: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """(F(P′) + ε) / (F(P) + ε), clipped to [0, RATIO_LIMIT]; both ≥ 0. Exactly 1 where they are equal."""
    return ((target + RATIO_EPSILON) / (source + RATIO_EPSILON)).clamp(max=RATIO_LIMIT)


def _check_layout_ratio(target: torch.Tensor, source: torch.Tensor) -> None:
    """target F(P′) and source F(P): float tensors of one shape, finite, ≥ 0 (ReLU features)."""
    for name, value in (("target", target), ("source", source)):
        _checks.tensor(value, name, shape="(N, C, h, w)", value_range=(0.0, math.inf), tolerance=0.0)
    if target.shape != source.shape:
        raise ValueError(f"target {tuple(target.shape)} and source {tuple(source.shape)} must have the same shape")


# the chapter displays layout_ratio: its checks are attached here, outside its source
layout_ratio = _checks.checked(_check_layout_ratio)(layout_ratio)


class ResidualBlock(nn.Module):
    """x + conv3(LReLU(conv3(x))), biases on, no normalisation (the SFT module's block).

    Reflection padding, as the official code's: a spatially constant map (the fixed point's
    ratio 1 and difference 0) stays constant through it, so γ and β are constant at P′ = P.
    Zero padding would make a frame along the border differ from the inside."""

    def __init__(self, channels: int, padding_mode: str = "reflect"):
        super().__init__()
        check_positive_int(channels, "channels")
        if padding_mode not in ("reflect", "zeros"):
            raise ValueError(f"padding_mode must be 'reflect' or 'zeros', got {padding_mode!r}")
        self.body = nn.Sequential(nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode),
                                  nn.LeakyReLU(0.2),
                                  nn.Conv2d(channels, channels, 3, padding=1, padding_mode=padding_mode))

    def forward(self, x):
        """x (N, channels, h, w) float → same shape."""
        channels = self.body[0].in_channels
        _checks.tensor(x, "x", shape=f"(N, {channels}, h, w)", ndim=4, channels=channels, finite=False)
        return x + self.body(x)


def parameter_net(channels: int, padding: str = "reflect") -> nn.Sequential:
    """f: residual block (``padding``: "reflect" or "zeros") → spectral-norm 1×1 conv (C → C/2) → ReLU →
    spectral-norm 1×1 conv (C/2 → C); C ≥ 2."""
    check_int(channels, "channels", minimum=2)
    return nn.Sequential(ResidualBlock(channels, padding), spectral_norm(nn.Conv2d(channels, channels // 2, 1)), nn.ReLU(),
                         spectral_norm(nn.Conv2d(channels // 2, channels, 1)))


class SemanticFeatureTranslation(nn.Module):
    """SFT: per scale l, γ^l = f_γ^l(F^l(P′) / F^l(P)) and β^l = f_β^l(F^l(P′) − F^l(P)).

    ``channels``: the channels of the three scales, e.g. (2w, 4w, 8w). forward(source
    features, target features), each a list of (N, C_l, h_l, w_l) → list of (γ^l, β^l)
    of the same shapes. ``conditioning="spade"`` is the baseline without SFT: γ and β
    from F^l(P′) alone, applied as (1 + γ)·IN(x) + β (returned as γ + 1, so the caller
    always computes γ·IN(x) + β).

    ``gamma``: "official" (γ = f_γ(ratio), the paper's and the official code's; f_γ starts
    near 0, so IN(x) starts almost switched off) or "one_plus" (γ = 1 + f_γ(ratio), SPADE's
    form, which starts at the fixed point). SPADE conditioning is always "one_plus".
    ``padding``: the residual blocks' padding, "reflect" (the official code's) or "zeros" (an ablation).
    """

    def __init__(self, channels, conditioning: str = "sft", gamma: str | None = None, padding: str = "reflect"):
        super().__init__()
        if conditioning not in ("sft", "spade"):
            raise ValueError(f"conditioning must be 'sft' or 'spade', got {conditioning!r}")
        gamma = check_gamma_form(conditioning, gamma)
        for i, c in enumerate(_checks.widths(channels, "channels")):
            check_int(c, f"channels[{i}]", minimum=2)
        self.conditioning, self.gamma_form = conditioning, gamma
        if padding not in ("reflect", "zeros"):
            raise ValueError(f"padding must be 'reflect' or 'zeros', got {padding!r}")
        self.gamma_nets = nn.ModuleList(parameter_net(c, padding) for c in channels)
        self.beta_nets = nn.ModuleList(parameter_net(c, padding) for c in channels)

    def inputs(self, source_features, target_features):
        """What f_γ and f_β see at each scale: (ratio, difference) for SFT, (F(P′), F(P′)) for SPADE."""
        if self.conditioning == "spade":
            return [(t, t) for t in target_features]
        return [(layout_ratio(t, s), t - s) for s, t in zip(source_features, target_features)]

    def forward(self, source_features, target_features):
        """source_features F^l(P), target_features F^l(P′): lists of (N, C_l, h_l, w_l), one per scale."""
        params = []
        for (to_gamma, to_beta), f_gamma, f_beta in zip(self.inputs(source_features, target_features),
                                                        self.gamma_nets, self.beta_nets):
            gamma = f_gamma(to_gamma)
            params.append((gamma + 1 if self.gamma_form == "one_plus" else gamma, f_beta(to_beta)))
        return params

    @torch.no_grad()
    def set_fixed_point_(self) -> "SemanticFeatureTranslation":
        """Make γ = 1 and β = 0: every f_β returns 0, and every f_γ returns 1 (0 where γ is
        1 + f_γ: the SPADE-like baseline and ``gamma="one_plus"``); the last conv gets weight 0 and bias 1 or 0.
        Then γ·IN(x) + β = IN(x) for any layouts; the fixed-point loss aims at this for P′ = P.
        A zero matrix cannot be spectrally normalised, so the last convs lose their spectral
        norm (for demonstrations and tests; training never calls this)."""
        for nets, value in ((self.gamma_nets, 0.0 if self.gamma_form == "one_plus" else 1.0), (self.beta_nets, 0.0)):
            for net in nets:
                if hasattr(net[-1], "weight_orig"):
                    torch.nn.utils.remove_spectral_norm(net[-1])
                net[-1].weight.zero_()
                net[-1].bias.fill_(value)
        return self


def check_gamma_form(conditioning: str, gamma: str | None) -> str:
    """The form of γ: "official" (γ = f_γ) or "one_plus" (γ = 1 + f_γ); None picks "official" for
    SFT and "one_plus" for SPADE conditioning, the only form SPADE has."""
    if gamma is None:
        return "one_plus" if conditioning == "spade" else "official"
    if gamma not in ("official", "one_plus"):
        raise ValueError(f"gamma must be 'official' (γ = f_γ) or 'one_plus' (γ = 1 + f_γ), got {gamma!r}")
    if conditioning == "spade" and gamma != "one_plus":
        raise ValueError("SPADE conditioning computes γ as 1 + f_γ; gamma must be 'one_plus' or None")
    return gamma


def _check_sft_inputs(self, source_features, target_features) -> None:
    """source_features and target_features: lists of one (N, C_l, h_l, w_l) tensor per scale, pairwise
    of one shape, with the module's channels."""
    for name, value in (("source_features", source_features), ("target_features", target_features)):
        if isinstance(value, torch.Tensor) or not isinstance(value, (list, tuple)) or len(value) != len(self.gamma_nets):
            raise ValueError(f"{name} must be a list of {len(self.gamma_nets)} feature maps, one per scale, got "
                             f"{type(value).__name__}{'' if not isinstance(value, (list, tuple)) else f' of {len(value)}'}")
    for level, (s, t) in enumerate(zip(source_features, target_features)):
        channels = self.gamma_nets[level][0].body[0].in_channels
        _checks.tensor(t, f"target_features[{level}]", shape=f"(N, {channels}, h, w)", ndim=4, channels=channels)
        _checks.tensor(s, f"source_features[{level}]", shape=f"(N, {channels}, h, w)", ndim=4, channels=channels)
        if s.shape != t.shape:
            raise ValueError(f"source_features[{level}] {tuple(s.shape)} and target_features[{level}] "
                             f"{tuple(t.shape)} must have the same shape")


# the chapter displays inputs: its checks are attached here, outside its source
SemanticFeatureTranslation.inputs = _checks.checked(_check_sft_inputs)(SemanticFeatureTranslation.inputs)


def fixed_point_loss(params) -> torch.Tensor:
    """Σ_l mean|γ^l − 1| + mean|β^l| (the official code's L1 to the fixed point); params a non-empty
    list of (γ^l, β^l) pairs of tensors, as the generator returns them."""
    if isinstance(params, (str, bytes)) or not isinstance(params, (list, tuple)) or not params:
        raise ValueError(f"params must be a non-empty list of (gamma, beta) pairs, got {type(params).__name__}")
    for i, pair in enumerate(params):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(isinstance(t, torch.Tensor) for t in pair):
            raise ValueError(f"params[{i}] must be a (gamma, beta) pair of tensors, got {type(pair).__name__}")
    return sum((gamma - 1).abs().mean() + beta.abs().mean() for gamma, beta in params)


class AnalogyGenerator(nn.Module):
    """G(I, P, P′) → I′ (see the module docstring).

    image (N, 3, H, W) in [0, 1]; source_layout, target_layout (N, K, H, W) one-hot;
    returns (I′ (N, 3, H, W) in [0, 1], [(γ^l, β^l)] for l = 1, 2, 3).
    """

    def __init__(self, num_classes: int, width: int = 16, conditioning: str = "sft", gamma: str | None = None,
                 padding: str = "reflect"):
        super().__init__()
        check_positive_int(num_classes, "num_classes"), check_positive_int(width, "width")
        if conditioning not in ("sft", "spade"):
            raise ValueError(f"conditioning must be 'sft' or 'spade', got {conditioning!r}")
        gamma = check_gamma_form(conditioning, gamma)
        self.num_classes, self.width, self.conditioning = int(num_classes), int(width), conditioning
        channels = (2 * width, 4 * width, 8 * width)
        self.channels = channels

        def encoder(cin, activation, norm):
            head = conv_block(cin, width, 7, activation=activation, norm=norm)
            downs = nn.ModuleList()
            c = width
            for cout in channels:
                downs.append(nn.Sequential(conv_block(c, c, 3, activation=activation, norm=norm),
                                           conv_block(c, cout, 4, 2, activation=activation, norm=norm)))
                c = cout
            return head, downs

        # E_seg uses batch norm, as the official code: P and P′ pass in one batch and share its
        # statistics, so a local edit changes F(P′) − F(P) only near the edit (instance norm's
        # per-image statistics would spread it over the whole map)
        self.seg_head, self.seg_downs = encoder(num_classes, "relu", norm="batch")
        self.img_head, self.img_downs = encoder(3, "lrelu", norm="instance")
        self.bottleneck = conv_block(channels[-1], channels[-1])
        ups = []
        for cin, cout in zip(reversed(channels), (4 * width, 2 * width, width)):
            ups.append(nn.Sequential(spectral_norm(nn.ConvTranspose2d(cin, cout, 4, 2, 1)),
                                     InstanceNorm2d(cout, affine=True), nn.LeakyReLU(0.2)))
        self.ups = nn.ModuleList(ups)
        self.tail = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(width, 3, 3), nn.Tanh())
        self.sft = SemanticFeatureTranslation(channels, conditioning, gamma, padding)

    def layout_features(self, layout: torch.Tensor) -> list[torch.Tensor]:
        """E_seg: F^1, F^2, F^3 (N, 2w | 4w | 8w, H/2 | H/4 | H/8, …), all ≥ 0 (ReLU); in evaluation
        (running batch-norm statistics) each a function of the layout within its receptive field."""
        check_layout(layout, self.num_classes)
        return self._layout_features(layout)

    def _layout_features(self, layout):
        x = self.seg_head(layout)
        features = []
        for down in self.seg_downs:
            x = down(x)
            features.append(x)
        return features

    def translation(self, source_layout, target_layout):
        """The SFT parameters [(γ^l, β^l)] for a change of layout P → P′. E_seg sees P and P′ in one
        batch, so both pass the same weights (spectral norm's power iteration steps once per forward
        in training) and P′ = P gives exactly ratio 1 and difference 0. Layouts (N, K, H, W) one-hot,
        of one shape."""
        check_layout(source_layout, self.num_classes, name="source_layout")
        check_layout(target_layout, self.num_classes, tuple(source_layout.shape[-2:]), "target_layout")
        _checks.same_batch("target_layout", target_layout, "source_layout", source_layout)
        return self._translation(source_layout, target_layout)

    def _translation(self, source_layout, target_layout):
        features = self._layout_features(torch.cat([source_layout, target_layout]))
        count = len(source_layout)
        return self.sft([f[:count] for f in features], [f[count:] for f in features])

    def forward(self, image, source_layout, target_layout):
        _checks.images_batch(image, "image")
        size = tuple(image.shape[-2:])
        check_layout(source_layout, self.num_classes, size, "source_layout")
        check_layout(target_layout, self.num_classes, size, "target_layout")
        _checks.same_batch("source_layout", source_layout, "image", image)
        _checks.same_batch("target_layout", target_layout, "image", image)
        params = self._translation(source_layout, target_layout)
        x = self.img_head(image * 2 - 1)
        for down, (gamma, beta) in zip(self.img_downs, params):
            x = translate(down(x), gamma, beta)
        x = self.bottleneck(x)
        for up, (gamma, beta) in zip(self.ups, reversed(params)):
            x = up(translate(x, gamma, beta))
        return (self.tail(x) + 1) / 2, params


class PatchDiscriminator(nn.Module):
    """LSGAN patch critic: three 4×4 stride-2 convs and two 3×3 convs (spectral norm, IN).

    images (N, 3, H, W) in [0, 1] → (scores (N, 1, H/8, W/8), [intermediate features]).
    """

    def __init__(self, width: int = 16):
        super().__init__()
        w = check_positive_int(width, "width")
        self.blocks = nn.ModuleList([
            nn.Sequential(spectral_norm(nn.Conv2d(3, w, 4, 2, 1)), nn.LeakyReLU(0.2)),
            nn.Sequential(spectral_norm(nn.Conv2d(w, 2 * w, 4, 2, 1)), InstanceNorm2d(2 * w), nn.LeakyReLU(0.2)),
            nn.Sequential(spectral_norm(nn.Conv2d(2 * w, 4 * w, 4, 2, 1)), InstanceNorm2d(4 * w),
                          nn.LeakyReLU(0.2)),
            nn.Sequential(spectral_norm(nn.Conv2d(4 * w, 8 * w, 3, 1, 1)), InstanceNorm2d(8 * w),
                          nn.LeakyReLU(0.2)),
        ])
        self.head = spectral_norm(nn.Conv2d(8 * w, 1, 3, 1, 1))

    def forward(self, images):
        """images (N, 3, H, W) in [0, 1], N ≥ 1, H and W ≥ 8 → (scores, features)."""
        _check_small_images(images, 8)
        x = images * 2 - 1
        features = []
        for block in self.blocks:
            x = block(x)
            features.append(x)
        return self.head(x), features


class AuxiliarySegmenter(nn.Module):
    """S: image (N, 3, H, W) in [0, 1] → logits (N, K, H, W). Two convs (one of stride 2),
    two dilated branches (rates 2 and 4, ASPP-like), a 1×1 fusion, bilinear up-sampling."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        check_positive_int(num_classes, "num_classes")
        w = 2 * check_positive_int(width, "width")
        self.stem = nn.Sequential(conv_block(3, w), conv_block(w, w, 4, 2))
        self.branches = nn.ModuleList(nn.Sequential(nn.Conv2d(w, w, 3, padding=r, dilation=r), nn.LeakyReLU(0.2))
                                      for r in (2, 4))
        self.fuse = nn.Sequential(nn.Conv2d(3 * w, w, 1), nn.LeakyReLU(0.2), nn.Conv2d(w, num_classes, 1))

    def forward(self, images):
        """images (N, 3, H, W) in [0, 1], N ≥ 1, H and W ≥ 4 → logits (N, K, H, W)."""
        _check_small_images(images, 4)
        x = self.stem(images * 2 - 1)
        x = self.fuse(torch.cat([x] + [b(x) for b in self.branches], dim=1))
        return F.interpolate(x, size=images.shape[-2:], mode="bilinear", align_corners=False)


def _check_small_images(images, smallest: int) -> None:
    _checks.images_batch(images, "images")
    if min(images.shape[-2:]) < smallest:
        raise ValueError(f"images H and W must be at least {smallest}, got {tuple(images.shape[-2:])}")


# --------------------------------------------------------------------------- joint augmentation

def augmentation_strength(iteration: int, ramp_iterations: int, ramp: bool = True) -> float:
    """s = min(1, iteration / ramp_iterations) with the ramp, 1 without (dataset.py's iter_factor);
    iteration ≥ 0, ramp_iterations an integer (≤ 0: no ramp)."""
    check_non_negative_int(iteration, "iteration"), check_int(ramp_iterations, "ramp_iterations")
    _checks.flag(ramp, "ramp")
    if not ramp or ramp_iterations <= 0:
        return 1.0
    return min(1.0, iteration / ramp_iterations)


def _base_grid(height: int, width: int) -> torch.Tensor:
    ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 - 1
    xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1)   # (H, W, 2) as (x, y), grid_sample's convention


def augmentation_grid(size, strength: float, generator: torch.Generator, settings=AUGMENTATION) -> tuple:
    """A random sampling grid (1, H, W, 2) for one joint warp, and what it drew.

    Output position p (normalised to [-1, 1]) reads the input at T(A⁻¹(flip(p))): flip
    x → −x with probability 0.5·s; A a zoom by z ∈ [1, 1 + 0.2·s] and a shift up to
    0.1·s; T a kornia thin-plate spline moving a 3×3 grid of control points by up to
    0.05·s·(width) (with probability 0.5). s = 0 gives the identity grid. ``strength`` in [0, 1];
    ``settings`` holds the keys of :data:`AUGMENTATION`, ``tps_points`` ≥ 2.
    """
    from kornia.geometry.transform import get_tps_transform, warp_points_tps

    height, width = check_pair(size, "size")
    check_probability(strength, "strength")
    _checks.instance(generator, "generator", torch.Generator, "a torch.Generator")
    _checks.settings(settings, tuple(AUGMENTATION), "settings")
    for key in AUGMENTATION:
        if key == "tps_points":
            check_int(settings[key], f"settings[{key!r}]", minimum=2)
        else:
            check_number(settings[key], f"settings[{key!r}]", minimum=0.0)

    def uniform(low, high, count=1):
        return low + (high - low) * torch.rand(count, generator=generator)

    flip = bool(uniform(0, 1) < settings["flip"] * strength)
    use_tps = bool(uniform(0, 1) < settings["tps_probability"])
    zoom = float(uniform(1.0, 1.0 + settings["scale_max"] * strength))
    shift = uniform(-settings["shift_max"] * strength, settings["shift_max"] * strength, 2) * 2
    k = settings["tps_points"]
    line = torch.linspace(-1, 1, k)
    control = torch.stack(torch.meshgrid(line, line, indexing="xy"), dim=-1).reshape(1, k * k, 2)
    vectors = (torch.rand(1, k * k, 2, generator=generator) * 2 - 1) * settings["tps_max"] * strength * 2
    points = _base_grid(height, width).reshape(1, -1, 2)
    if flip:
        points = points * torch.tensor([-1.0, 1.0])
    points = (points - shift) / zoom
    if use_tps and strength > 0:
        kernel_weights, affine_weights = get_tps_transform(control, control + vectors)
        # kornia: the kernel centres are get_tps_transform's second argument (the control points' targets)
        points = warp_points_tps(points, control + vectors, kernel_weights, affine_weights)
    drawn = {"flip": flip, "zoom": zoom, "shift": shift.tolist(), "tps": use_tps and strength > 0}
    return points.reshape(1, height, width, 2), drawn


def warp_pair(image: torch.Tensor, labels: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp image (N, 3, H, W) bilinearly and labels (N, H, W) by nearest neighbour with the
    *same* grid (N or 1, H, W, 2); borders are extended. image in [0, 1], labels integer ids, N ≥ 1."""
    _checks.images_batch(image, "image")
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.shape != (len(image),
                                                                                              *image.shape[-2:]):
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be integer ({len(image)}, {image.shape[-2]}, {image.shape[-1]}), got {got}")
    _checks.tensor(grid, "grid", shape="(N or 1, H, W, 2)", ndim=4)
    if grid.shape[-1] != 2 or grid.shape[0] not in (1, len(image)):
        raise ValueError(f"grid must be (N or 1, H, W, 2), got {tuple(grid.shape)}")
    grid = grid.expand(len(image), -1, -1, -1)
    warped = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    warped_labels = F.grid_sample(labels[:, None].float(), grid, mode="nearest", padding_mode="border",
                                  align_corners=False)[:, 0].round().long()
    return warped, warped_labels


def joint_augment(image: torch.Tensor, labels: torch.Tensor, strength: float, generator: torch.Generator):
    """(I_aug, P_aug): image (N, 3, H, W) and labels (N, H, W) warped by one random grid."""
    _checks.images_batch(image, "image")
    grid, _ = augmentation_grid(image.shape[-2:], strength, generator)
    return warp_pair(image, labels, grid)


# --------------------------------------------------------------------------- losses

def _patches(features: torch.Tensor, size: int) -> torch.Tensor:
    """(1, C, h, w) → (positions, C·size²), every size×size patch (stride 1)."""
    return F.unfold(features, size).transpose(1, 2)[0]


def patch_coherence_loss(target_features, source_features, sampling=PATCH_SAMPLING,
                         generator: torch.Generator | None = None, nearest: int = 1) -> torch.Tensor:
    """1/N Σ_V min_U ‖V − U‖₁ (mean over elements) over random target patches V.

    target_features, source_features: lists of (1, C_l, h_l, w_l) (the generated image's and
    the source image's features). ``sampling``: (patch size, count) per map. ``nearest`` > 1
    averages the distances to the ``nearest`` closest source patches (the official code's 5).
    Zero when the target is the source: each target patch finds itself. Each map must hold at least
    ``nearest`` patches; counts and sizes ≥ 1.
    """
    for name, value in (("target_features", target_features), ("source_features", source_features),
                        ("sampling", sampling)):
        if isinstance(value, (torch.Tensor, str)) or not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"{name} must be a non-empty list (one entry per feature map), got {type(value).__name__}")
    if not len(target_features) == len(source_features) == len(sampling):
        raise ValueError(f"target_features, source_features and sampling must have one entry per map, got "
                         f"{len(target_features)}, {len(source_features)} and {len(sampling)}")
    check_positive_int(nearest, "nearest")
    _checks.instance(generator, "generator", torch.Generator, "a torch.Generator", allow_none=True)
    for level, ((size, count), target, source) in enumerate(zip(sampling, target_features, source_features)):
        check_positive_int(size, f"sampling[{level}] size"), check_positive_int(count, f"sampling[{level}] count")
        for name, value in ((f"target_features[{level}]", target), (f"source_features[{level}]", source)):
            _checks.tensor(value, name, shape="(1, C, h, w)", ndim=4)
            if value.shape[0] != 1 or min(value.shape[-2:]) < size:
                raise ValueError(f"{name} must be (1, C, h, w) with h, w ≥ the patch size {size}, got "
                                 f"{tuple(value.shape)}")
        if target.shape[1] != source.shape[1]:
            raise ValueError(f"target_features[{level}] and source_features[{level}] must have the same channels")
        positions = (source.shape[-2] - size + 1) * (source.shape[-1] - size + 1)
        if positions < nearest:
            raise ValueError(f"nearest ({nearest}) must be at most the {positions} patches of source_features[{level}]")
    total = 0.0
    for (size, count), target, source in zip(sampling, target_features, source_features):
        target_patches = _patches(target, size)
        source_patches = _patches(source, size).detach()
        picks = torch.randint(len(target_patches), (count,), generator=generator)
        chosen = target_patches[picks]
        distances = torch.cdist(chosen.detach(), source_patches, p=1)     # (count, positions)
        best = distances.topk(nearest, dim=1, largest=False).indices        # (count, nearest)
        matched = source_patches[best]                                       # (count, nearest, D)
        total = total + (chosen[:, None] - matched).abs().mean()
    return total / len(sampling)


def feature_matching_loss(fake_features, real_features) -> torch.Tensor:
    """Mean over D's layers of ‖D_l(fake) − D_l(real)‖₁ (real detached); lists of one shape per layer."""
    for name, value in (("fake_features", fake_features), ("real_features", real_features)):
        if isinstance(value, torch.Tensor) or not isinstance(value, (list, tuple)) or not value:
            raise ValueError(f"{name} must be a non-empty list of feature maps, got {type(value).__name__}")
    if len(fake_features) != len(real_features):
        raise ValueError(f"fake_features and real_features must have one map per layer, got {len(fake_features)} "
                         f"and {len(real_features)}")
    for level, (f, r) in enumerate(zip(fake_features, real_features)):
        _checks.tensor(f, f"fake_features[{level}]", shape="(N, C, h, w)")
        _checks.tensor(r, f"real_features[{level}]", shape="(N, C, h, w)")
        if f.shape != r.shape:
            raise ValueError(f"fake_features[{level}] {tuple(f.shape)} and real_features[{level}] {tuple(r.shape)} "
                             "must have the same shape")
    return sum(F.l1_loss(f, r.detach()) for f, r in zip(fake_features, real_features)) / len(fake_features)


# --------------------------------------------------------------------------- training

class AnalogyTrainer(nn.Module):
    """G, D and S for one image, and one training iteration of each mode.

    ``iteration_loss(iteration, optimizers)`` draws the iteration's augmentation, steps D and
    S with their optimizers and returns G's loss (the caller steps G). The image and its
    labels are fixed: image (1, 3, H, W), labels (1, H, W) in [0, K).
    """

    def __init__(self, image, labels, num_classes: int, spec: dict, settings: dict, features=None, seed: int = 0):
        super().__init__()
        check_positive_int(num_classes, "num_classes")
        image = _checks.images_batch(image, "image")
        labels = check_label_map(labels, "labels", num_classes=num_classes, ndim=(3,))
        if len(image) != 1 or labels.shape != (1, *image.shape[-2:]):
            raise ValueError(f"one image (1, 3, H, W) with labels (1, H, W), got {tuple(image.shape)} and "
                             f"{tuple(labels.shape)}")
        if image.shape[-2] % 8 or image.shape[-1] % 8:
            raise ValueError(f"image: H and W must be multiples of 8, got {tuple(image.shape[-2:])}")
        spec = _checks.settings(spec, ("conditioning", "fixed_point", "ramp", "alignment"), "spec")
        if spec["conditioning"] not in ("sft", "spade") or spec["alignment"] not in ("gradient", "detached"):
            raise ValueError(f"spec must be a trained model's spec from MODEL_SPECS (conditioning 'sft' or 'spade', "
                             f"alignment 'gradient' or 'detached'), got {spec}")
        _checks.settings(settings, ("width", "ramp_iterations"))
        check_positive_int(settings["width"], "settings['width']")
        check_int(settings["ramp_iterations"], "settings['ramp_iterations']")
        check_seed(seed)
        _checks.function(features, "features", "a frozen FeatureExtractor: images → list of feature maps") \
            if features is not None else None
        self.register_buffer("image", image)
        self.register_buffer("labels", labels)
        self.num_classes, self.spec, self.settings, self.seed = num_classes, spec, settings, seed
        width = settings["width"]
        self.generator = AnalogyGenerator(num_classes, width, spec["conditioning"], spec.get("gamma"),
                                          spec.get("padding", "reflect"))
        self.discriminator = PatchDiscriminator(width)
        self.segmenter = AuxiliarySegmenter(num_classes, width)
        # a frozen FeatureExtractor; set past nn.Module so it is neither a submodule nor checkpointed
        if features is None and LOSS_WEIGHTS["patch"] > 0:
            raise ValueError("the patch coherence loss needs a feature extractor (features=...); see "
                             "labkit.features.load_feature_extractor")
        object.__setattr__(self, "features", features)
        self.running_logs: dict[str, float] = {}

    def get_extra_state(self) -> dict:
        """The logs' moving averages (:meth:`smoothed`), so that a resumed run logs what an
        uninterrupted one would: without them the first entries after a resume lack the
        reconstruction-mode terms (the full-profile dry run found this)."""
        return {"running_logs": dict(self.running_logs)}

    def set_extra_state(self, state: dict) -> None:
        """Restore what :meth:`get_extra_state` saved (``load_state_dict`` calls this)."""
        if not isinstance(state, dict) or not isinstance(state.get("running_logs"), dict):
            from ..checkpoints import CheckpointError

            raise CheckpointError("the analogy trainer's extra state must be a dict with 'running_logs' "
                                  "(name → moving average), as get_extra_state writes it")
        self.running_logs = {str(k): float(v) for k, v in state["running_logs"].items()}

    def generator_parameters(self):
        return self.generator.parameters()

    def augmented(self, iteration: int):
        """(I_aug, P_aug) of ``iteration`` ≥ 0: a function of (seed, iteration) only."""
        check_non_negative_int(iteration, "iteration")
        rng = torch.Generator().manual_seed(self.seed * 1_000_003 + iteration)
        strength = augmentation_strength(iteration, self.settings["ramp_iterations"], self.spec["ramp"])
        image, labels = joint_augment(self.image.cpu(), self.labels.cpu(), strength, rng)
        return image.to(self.image.device), labels.to(self.image.device), rng

    def iteration_loss(self, iteration: int, discriminator_optimizer, segmenter_optimizer):
        """One iteration (≥ 0): steps D and S with their torch optimizers, returns (G's loss, logs)."""
        for name, value in (("discriminator_optimizer", discriminator_optimizer),
                            ("segmenter_optimizer", segmenter_optimizer)):
            _checks.instance(value, name, torch.optim.Optimizer, "a torch.optim.Optimizer")
        aug_image, aug_labels, rng = self.augmented(iteration)
        reconstruction = iteration % RECONSTRUCTION_EVERY == 0
        if reconstruction:
            source_image, source_labels, target_image, target_labels = aug_image, aug_labels, aug_image, aug_labels
        else:
            source_image, source_labels, target_image, target_labels = self.image, self.labels, aug_image, aug_labels
            if torch.rand(1, generator=rng).item() < 0.5:   # the official random swap of source and target
                source_image, target_image = target_image, source_image
                source_labels, target_labels = target_labels, source_labels
        noise = (torch.rand(source_image.shape, generator=rng).to(source_image.device) - 0.5) * 2 / 255
        source_layout = one_hot(source_labels, self.num_classes)
        target_layout = one_hot(target_labels, self.num_classes)
        fake, params = self.generator((source_image + noise).clamp(0, 1), source_layout, target_layout)

        # D: real I_target against the fake
        discriminator_optimizer.zero_grad(set_to_none=True)
        real_scores, _ = self.discriminator(target_image)
        fake_scores, _ = self.discriminator(fake.detach())
        d_loss = lsgan_loss(real_scores, True) + lsgan_loss(fake_scores, False)
        d_loss.backward()
        discriminator_optimizer.step()
        # S: the real augmented pair
        segmenter_optimizer.zero_grad(set_to_none=True)
        s_loss = F.cross_entropy(self.segmenter(aug_image), aug_labels)
        s_loss.backward()
        segmenter_optimizer.step()

        w = LOSS_WEIGHTS
        for p in list(self.discriminator.parameters()) + list(self.segmenter.parameters()):
            p.requires_grad_(False)
        try:
            fake_scores, fake_features = self.discriminator(fake)
            _, real_features = self.discriminator(target_image)
            adversarial = lsgan_loss(fake_scores, True)
            matching = feature_matching_loss(fake_features, real_features)
            loss = w["adversarial"] * adversarial + w["feature_matching"] * matching
            logs = {"d_loss": float(d_loss.detach()), "segmenter_loss": float(s_loss.detach()),
                    "adversarial": float(adversarial.detach()), "feature_matching": float(matching.detach())}
            if reconstruction:
                l1 = F.l1_loss(fake * 2 - 1, target_image * 2 - 1)   # on [-1, 1], as the official images
                loss = loss + w["reconstruction"] * l1
                logs["reconstruction"] = float(l1.detach())
                if self.spec["fixed_point"]:
                    fixed = fixed_point_loss(params)
                    loss = loss + w["fixed_point"] * fixed
                    logs["fixed_point"] = float(fixed.detach())
            else:
                if LOSS_WEIGHTS["patch"] > 0:
                    patch = patch_coherence_loss(self.features(fake), self.features(source_image), generator=rng)
                    loss = loss + w["patch"] * patch
                    logs["patch"] = float(patch.detach())
                if self.spec["alignment"] == "gradient":
                    alignment = F.cross_entropy(self.segmenter(fake), target_labels)
                    loss = loss + w["alignment"] * alignment
                else:   # the official code: computed on fake.detach() under no_grad, a constant for G
                    with torch.no_grad():
                        alignment = F.cross_entropy(self.segmenter(fake.detach()), target_labels)
                logs["alignment"] = float(alignment.detach())
        finally:
            for p in list(self.discriminator.parameters()) + list(self.segmenter.parameters()):
                p.requires_grad_(True)
        return loss, self.smoothed(logs)

    def smoothed(self, logs: dict, decay: float = 0.9) -> dict:
        """Exponential moving averages of every logged term. The two modes log different
        terms, and ``fit`` records every 10th iteration only, so raw logs would never show
        the reconstruction-mode terms (iterations 0, 5, 10, …). logs {name: number}; decay in [0, 1]."""
        if not isinstance(logs, dict):
            raise ValueError(f"logs must be a dict of numbers, got {type(logs).__name__}")
        check_probability(decay, "decay")
        for key, value in logs.items():
            previous = self.running_logs.get(key)
            self.running_logs[key] = value if previous is None else decay * previous + (1 - decay) * value
        return dict(self.running_logs)


# --------------------------------------------------------------------------- the non-parametric baseline

def _neighbourhoods(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(C, H, W) → (H·W, C·size²): each pixel's size×size neighbourhood (replicated borders)."""
    pad = size // 2
    padded = F.pad(maps[None], (pad, pad, pad, pad), mode="replicate")
    return F.unfold(padded, size)[0].T


def _nearest(queries: torch.Tensor, keys: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    """Index of the nearest key (squared L2) for every query, in chunks. In float64: the
    expansion ‖q‖² − 2q·k + ‖k‖² loses about 1e-5 in float32 at these norms, as much as the
    position term between neighbouring pixels, and a pixel could then lose to its neighbour."""
    queries, keys = queries.double(), keys.double()
    key_norms = (keys ** 2).sum(1)
    best = []
    for start in range(0, len(queries), chunk):
        q = queries[start:start + chunk]
        distances = (q ** 2).sum(1, keepdim=True) - 2 * q @ keys.T + key_norms
        best.append(distances.argmin(dim=1))
    return torch.cat(best)


def image_analogies(source_image: torch.Tensor, source_labels: torch.Tensor, target_labels: torch.Tensor,
                    num_classes: int, patch: int = 5, passes: int = 2, appearance_weight: float = 1.0,
                    position_weight: float = 0.05) -> torch.Tensor:
    """Label-guided nearest-neighbour patch matching (Image Analogies, A : A′ :: B : B′ with
    A = P, A′ = I, B = P′): each output pixel copies the source pixel whose matching vector is
    nearest.

    Pass 1 matches one-hot label neighbourhoods (patch × patch) plus a small position term
    ``position_weight``·‖p_t − p_s‖² (normalised coordinates), which breaks the ties of uniform
    regions in favour of nearby pixels. Each later pass adds the current output's RGB
    neighbourhood against the source's, weighted by ``appearance_weight``: the A′/B′ part of
    Hertzmann's matching vector (here non-causal, a whole image at a time). Hertzmann's
    separate coherence search (the κ-weighted continuation of a neighbour's match) is left out.

    source_image (3, H, W), source_labels and target_labels (H, W) → I′ (3, H, W). With
    P′ = P it returns the source exactly: every pixel's own neighbourhood is at distance 0.
    """
    if not isinstance(patch, int) or isinstance(patch, bool) or patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch must be an odd size ≥ 1 (a neighbourhood centred on the pixel), got {patch!r}")
    check_positive_int(num_classes, "num_classes"), check_positive_int(passes, "passes")
    check_number(appearance_weight, "appearance_weight", minimum=0.0)
    check_number(position_weight, "position_weight", minimum=0.0)
    source_image = check_images(source_image, "source_image", ndim=(3,))
    source_labels = check_label_map(source_labels, "source_labels", num_classes=num_classes, ndim=(2,))
    target_labels = check_label_map(target_labels, "target_labels", num_classes=num_classes, ndim=(2,))
    if source_labels.shape != target_labels.shape or source_labels.shape != source_image.shape[-2:]:
        raise ValueError(f"image {tuple(source_image.shape)}, source labels {tuple(source_labels.shape)} and "
                         f"target labels {tuple(target_labels.shape)} must share (H, W)")
    height, width = source_labels.shape
    positions = _base_grid(height, width).reshape(-1, 2) * math.sqrt(position_weight)
    source_keys = torch.cat([_neighbourhoods(one_hot(source_labels, num_classes)[0], patch), positions], 1)
    target_queries = torch.cat([_neighbourhoods(one_hot(target_labels, num_classes)[0], patch), positions], 1)
    source_pixels = source_image.reshape(3, -1)
    match = _nearest(target_queries, source_keys)
    scale = math.sqrt(appearance_weight)
    source_appearance = _neighbourhoods(source_image, patch) * scale
    for _ in range(passes - 1):
        output = source_pixels[:, match].reshape(3, height, width)
        match = _nearest(torch.cat([target_queries, _neighbourhoods(output, patch) * scale], 1),
                         torch.cat([source_keys, source_appearance], 1))
    return source_pixels[:, match].reshape(3, height, width)


# --------------------------------------------------------------------------- layouts for photographs

def photo_layout(image: np.ndarray, clusters: int, position_weight: float = 1.0, iterations: int = 20,
                 smoothing: int = 5, seed: int = 0) -> np.ndarray:
    """An automatic layout for a photograph: k-means on (L*, a*, b*, y, x) per pixel.

    image (H, W, 3) float in [0, 1] → labels (H, W) int64 in [0, clusters). The colour
    channels are CIELAB scaled to unit variance; y and x are in [0, 1] times
    ``position_weight`` (so clusters are regions, not scattered colours). k-means++
    seeding, ``iterations`` Lloyd steps, then a ``smoothing``×``smoothing`` majority
    filter removes speckles; labels are renumbered by area, largest first. ``clusters`` in
    [1, H·W]; ``smoothing`` odd ≥ 1; ``iterations`` ≥ 0; ``position_weight`` ≥ 0.
    """
    from skimage.color import rgb2lab

    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.dtype.kind not in "fiu" or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
        raise ValueError(f"image must be a numeric (H, W, 3) array in [0, 1], got {image.dtype} {image.shape}")
    image = image.astype(np.float32)
    if not np.isfinite(image).all():
        raise ValueError("image contains NaN or infinite values")
    if image.min() < -1e-3 or image.max() > 1 + 1e-3:
        raise ValueError(f"image must have values in [0, 1], got range [{image.min():.3g}, {image.max():.3g}]")
    height, width = image.shape[:2]
    check_int(clusters, "clusters", minimum=1, maximum=height * width)
    check_number(position_weight, "position_weight", minimum=0.0), check_non_negative_int(iterations, "iterations")
    check_seed(seed)
    if not isinstance(smoothing, int) or isinstance(smoothing, bool) or smoothing < 1 or smoothing % 2 == 0:
        raise ValueError(f"smoothing must be an odd size ≥ 1 (a window centred on the pixel), got {smoothing!r}")
    lab = rgb2lab(np.clip(image, 0, 1)).reshape(-1, 3)
    lab = (lab - lab.mean(0)) / (lab.std(0) + 1e-6)
    ys, xs = np.mgrid[0:height, 0:width]
    points = np.concatenate([lab, position_weight * np.stack([ys.ravel() / height, xs.ravel() / width], 1) * 3], 1)
    rng = np.random.default_rng(seed)
    centres = [points[rng.integers(len(points))]]
    for _ in range(1, clusters):   # k-means++
        d2 = np.min(((points[:, None] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
        centres.append(points[rng.choice(len(points), p=d2 / d2.sum())])
    centres = np.array(centres)
    for _ in range(iterations):
        assign = ((points[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
        for k in range(clusters):
            if np.any(assign == k):
                centres[k] = points[assign == k].mean(0)
    labels = torch.from_numpy(assign.reshape(height, width))
    votes = F.one_hot(labels, clusters).permute(2, 0, 1)[None].float()
    labels = F.avg_pool2d(F.pad(votes, [smoothing // 2] * 4, mode="replicate"), smoothing, 1).argmax(1)[0].numpy()
    order = np.argsort(-np.bincount(labels.ravel(), minlength=clusters), kind="stable")
    return np.argsort(order)[labels].astype(np.int64)


# --------------------------------------------------------------------------- layout edits

def _fill_vacated(labels: torch.Tensor, vacated: torch.Tensor) -> torch.Tensor:
    """Give every vacated pixel the label of the nearest non-vacated pixel (grown one ring at a time)."""
    labels = labels.clone()
    known = ~vacated
    while not known.all():
        votes = F.one_hot(labels.where(known, 0), int(labels.max()) + 1).permute(2, 0, 1).float() * known
        grown = F.max_pool2d(votes[None], 3, 1, 1)[0]
        newly = ~known & (grown.sum(0) > 0)
        if not newly.any():
            break
        summed = F.avg_pool2d(votes[None], 3, 1, 1)[0]
        labels[newly] = summed.argmax(0)[newly]
        known = known | newly
    return labels


def component_mask(labels: torch.Tensor, label: int) -> torch.Tensor:
    """The largest 4-connected region of ``label`` in (H, W) labels, as a bool mask."""
    from scipy import ndimage

    labels = _label_tensor(labels, "labels")
    check_int(label, "label")

    regions, count = ndimage.label((labels == label).numpy())
    if count == 0:
        raise ValueError(f"label {label} does not occur in the layout")
    sizes = np.bincount(regions.ravel())[1:]
    return torch.from_numpy(regions == 1 + int(sizes.argmax()))


def _label_tensor(labels, name: str) -> torch.Tensor:
    """An (H, W) integer label map as a tensor (tensor or NumPy array; ids are not bounded here)."""
    if isinstance(labels, np.ndarray):
        labels = torch.from_numpy(labels)
    if not isinstance(labels, torch.Tensor) or labels.dim() != 2 or labels.is_floating_point() \
            or labels.dtype == torch.bool or labels.numel() == 0:
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"{name} must be an (H, W) integer label map with H, W ≥ 1, got {got}")
    return labels


def edit_layout(labels: torch.Tensor, mask: torch.Tensor, kind: str, shift=(0, 0), factor: float = 1.0,
                label: int | None = None) -> torch.Tensor:
    """Edit a region of a label map (H, W): the four edits of the paper's figures.

    - ``move``: the region moves by ``shift`` = (dy, dx) pixels; what it leaves takes the
      nearest surrounding label;
    - ``scale``: the region scales by ``factor`` about its centre;
    - ``remove``: the region takes the nearest surrounding label;
    - ``add``: a copy of the region is pasted at ``shift`` (the original stays).

    ``label``: the region's label (default: the most common label under ``mask``).
    """
    if kind not in ("move", "scale", "remove", "add"):
        raise ValueError(f"edit kind must be move, scale, remove or add, got {kind!r}")
    labels = _label_tensor(labels, "labels").long()
    if (labels < 0).any():
        raise ValueError(f"labels must hold class ids ≥ 0, got {int(labels.min())}")
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(mask)
    if not isinstance(mask, torch.Tensor) or mask.is_floating_point() and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask must be an (H, W) bool map (or 0/1 values)")
    mask = mask.bool()
    if kind in ("move", "add"):
        dy, dx = _shift(shift)
    if label is not None:
        check_non_negative_int(label, "label")
    if mask.shape != labels.shape or not mask.any():
        raise ValueError(f"mask must be a non-empty (H, W) bool map like the labels {tuple(labels.shape)}")
    if kind == "scale":
        check_number(factor, "scale factor", minimum=0.0, strict_minimum=True)
    label = int(torch.mode(labels[mask]).values) if label is None else int(label)
    height, width = labels.shape
    ys, xs = torch.nonzero(mask, as_tuple=True)
    if kind == "scale":
        cy, cx = ys.float().mean(), xs.float().mean()
        gy, gx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
        sy = ((gy - cy) / factor + cy).round().long()
        sx = ((gx - cx) / factor + cx).round().long()
        inside = (sy >= 0) & (sy < height) & (sx >= 0) & (sx < width)
        moved = torch.zeros_like(mask)
        moved[inside] = mask[sy[inside], sx[inside]]
    else:
        dy, dx = _shift(shift)
        ny, nx = ys + dy, xs + dx
        keep = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        moved = torch.zeros_like(mask)
        moved[ny[keep], nx[keep]] = True
    result = labels.clone()
    if kind in ("move", "scale", "remove"):
        result = _fill_vacated(labels, mask)
    if kind != "remove":
        result[moved] = label
    return result


def _shift(shift) -> tuple[int, int]:
    """A shift (dy, dx) in whole pixels."""
    if isinstance(shift, (str, bytes)) or not isinstance(shift, (tuple, list, torch.Size, np.ndarray)) or len(shift) != 2:
        raise ValueError(f"shift must be a pair (dy, dx) of integers, got {shift!r}")
    return check_int(shift[0], "shift dy"), check_int(shift[1], "shift dx")
