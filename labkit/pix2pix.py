"""The pix2pix baseline (Isola et al., CVPR 2017): a U-Net generator and a PatchGAN.

CRN and SIMS were both measured against pix2pix, so it lives here, shared,
and every chapter compares against the same code.

Objective (pix2pix eq. 4), with x the layout, y the photo, z the dropout noise:

    G* = arg min_G max_D  L_cGAN(G, D) + λ · L_L1(G),
    L_cGAN = E[log D(x, y)] + E[log(1 − D(x, G(x, z)))],
    L_L1   = E ‖y − G(x, z)‖₁,           λ = 100.

G is trained with the non-saturating form −log D(x, G(x, z)); the D loss
is halved "to slow down the rate at which D learns relative to G". Adam,
lr 2e-4, β = (0.5, 0.999).

Deviations from pix2pix:
- the layout enters as a one-hot tensor, not as a colour-coded label image;
- instance normalisation instead of batch norm: pix2pix trains and tests
  with batch 1 and batch statistics, which *is* instance norm; we train with
  batches, so we say so explicitly;
- the U-Net's depth follows the image size (down to 1×2 at the bottleneck)
  and its base width is a parameter (64 in the paper).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_choice, check_int, check_number, check_pair, check_positive_int, check_tensor
from .data import NUM_CLASSES
from .data.validation import check_images
from .networks import InstanceNorm2d, check_layout_input

L1_WEIGHT = 100.0
LEARNING_RATE = 2e-4
BETAS = (0.5, 0.999)


def lsgan_loss(scores: torch.Tensor, real: bool) -> torch.Tensor:
    """The least-squares GAN loss (Mao et al.; CycleGAN's choice), shared by the chapters that use
    it: mean (D − 1)² for ``real`` targets, mean D² for fake ones.

    scores: a non-empty float tensor of discriminator outputs; real: True or False. Only the
    shape and dtype are checked (no pass over the scores: this runs every training step)."""
    check_tensor(scores, "scores", shape="(N, ...)", finite=False)
    check_choice(real, "real", (True, False))
    return ((scores - 1) ** 2).mean() if real else (scores ** 2).mean()


class UNetSkipBlock(nn.Module):
    """One level of the U-Net: down (conv 4×4 s2), the inner levels, up (deconv 4×4 s2), skip.

    x (N, outer, H, W) → (N, 2·outer, H, W) for inner levels (input and
    output concatenated, pix2pix's skip), or (N, out, H, W) at the outermost.
    outer, inner, in_channels: positive integers; out_channels: a positive
    integer, required at the outermost level; submodule: an ``nn.Module`` or None.
    """

    def __init__(self, outer: int, inner: int, submodule: nn.Module | None = None, *, in_channels: int | None = None,
                 out_channels: int | None = None, outermost: bool = False, dropout: bool = False):
        super().__init__()
        check_positive_int(outer, "outer"), check_positive_int(inner, "inner")
        if in_channels is not None:
            check_positive_int(in_channels, "in_channels")
        if outermost or out_channels is not None:
            if out_channels is None:
                raise ValueError("out_channels must be a positive integer at the outermost level, got None")
            check_positive_int(out_channels, "out_channels")
        if submodule is not None and not isinstance(submodule, nn.Module):
            raise ValueError(f"submodule must be an nn.Module or None, got {type(submodule).__name__}")
        check_choice(outermost, "outermost", (True, False)), check_choice(dropout, "dropout", (True, False))
        in_channels = outer if in_channels is None else in_channels
        innermost = submodule is None
        down = [nn.LeakyReLU(0.2)] if not outermost else []
        down.append(nn.Conv2d(in_channels, inner, 4, stride=2, padding=1, bias=False))
        if not (outermost or innermost):
            down.append(InstanceNorm2d(inner, affine=True))
        up_in = inner if innermost else 2 * inner
        up = [nn.ReLU(), nn.ConvTranspose2d(up_in, out_channels if outermost else outer, 4, stride=2, padding=1,
                                            bias=outermost)]
        if outermost:
            up.append(nn.Tanh())
        else:
            up.append(InstanceNorm2d(outer, affine=True))
            if dropout:
                up.append(nn.Dropout(0.5))
        self.outermost = outermost
        self.down, self.submodule, self.up = nn.Sequential(*down), submodule, nn.Sequential(*up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.submodule is not None:
            y = self.submodule(y)
        y = self.up(y)
        return y if self.outermost else torch.cat([x, y], dim=1)


class UNetGenerator(nn.Module):
    """pix2pix's U-Net: layout (N, C, H, W) one-hot → images (N, 3, H, W) in [0, 1].

    ``depth`` downsamplings (H must be divisible by 2**depth); widths
    base, 2·base, 4·base, then 8·base for the rest, as in pix2pix. Dropout
    (p = 0.5) in the three innermost up-blocks is the only noise; pix2pix
    keeps it on at test time, and so does :meth:`sample`.

    output_size: (H, W) positive integers, both divisible by 2**depth;
    num_classes, base_width: positive integers; depth: None (down to a
    1-pixel-high bottleneck) or an integer ≥ 2. The layout of :meth:`forward`
    is checked by :func:`labkit.networks.check_layout_input`: (N ≥ 1, C, H, W),
    finite, in [0, 1].
    """

    def __init__(self, output_size=(64, 128), num_classes: int = NUM_CLASSES, base_width: int = 64,
                 depth: int | None = None):
        super().__init__()
        height, width = check_pair(output_size, "output_size")
        num_classes = check_positive_int(num_classes, "num_classes")
        base_width = check_positive_int(base_width, "base_width")
        if depth is None:   # down to a 1-pixel-high bottleneck, as unet_256 does for 256×256
            depth = height.bit_length() - 1
        else:
            depth = check_int(depth, "depth", minimum=2)
        if depth < 2 or height % 2 ** depth or width % 2 ** depth:
            raise ValueError(f"output_size {output_size} must be divisible by 2**depth = {2 ** depth} (depth ≥ 2)")
        self.output_size, self.num_classes, self.depth = (height, width), num_classes, depth
        # channels after each downsampling: base, 2·base, 4·base, 8·base, 8·base, ...
        channels = [min(base_width * 2 ** i, base_width * 8) for i in range(depth)]
        block = None
        for level in reversed(range(1, depth)):   # level 0 is the outermost block
            block = UNetSkipBlock(channels[level - 1], channels[level], block,
                                  dropout=block is not None and level >= depth - 4)
        self.net = UNetSkipBlock(3, channels[0], block, in_channels=num_classes, out_channels=3, outermost=True)

    def forward(self, layout: torch.Tensor) -> torch.Tensor:
        check_layout_input(layout, self.num_classes, self.output_size)
        return self._generate(layout)

    def _generate(self, layout: torch.Tensor) -> torch.Tensor:
        return (self.net(layout) + 1) / 2

    @torch.no_grad()
    def sample(self, layout: torch.Tensor, samples: int = 1) -> torch.Tensor:
        """(N, samples, 3, H, W): ``samples`` (a positive integer) outputs per layout, dropout on
        (pix2pix's noise)."""
        check_layout_input(layout, self.num_classes, self.output_size)
        samples = check_positive_int(samples, "samples")
        was_training = self.training
        self.train()
        outputs = torch.stack([self._generate(layout) for _ in range(samples)], dim=1)
        self.train(was_training)
        return outputs


class PatchDiscriminator(nn.Module):
    """pix2pix's 70×70 PatchGAN: (layout, image) → (N, 1, h, w) real/fake logits.

    Each output logit judges one overlapping patch (70×70 pixels with the
    default 3 strided layers), so D models high-frequency structure and
    leaves low frequencies to the L1 term. Layers: conv4 s2 (base) → LReLU,
    then ``layers − 1`` × [conv4 s2 → IN → LReLU] doubling the width (≤ 8·base),
    conv4 s1 → IN → LReLU, conv4 s1 → 1.

    num_classes: an integer ≥ 0 (0: the image alone); base_width, layers:
    positive integers. :meth:`forward` takes layout (N, num_classes, H, W)
    float and images (N, 3, H, W) finite in [0, 1], N ≥ 1, H and W at least
    3·2**layers (the smallest input that leaves one logit).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, base_width: int = 64, layers: int = 3):
        super().__init__()
        num_classes = check_int(num_classes, "num_classes", minimum=0)
        base_width = check_positive_int(base_width, "base_width")
        layers = check_positive_int(layers, "layers")
        self.num_classes, self.layers = num_classes, layers
        blocks = [nn.Conv2d(num_classes + 3, base_width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        width = base_width
        for i in range(1, layers + 1):
            stride = 2 if i < layers else 1
            next_width = min(base_width * 2 ** i, base_width * 8)
            blocks += [nn.Conv2d(width, next_width, 4, stride=stride, padding=1, bias=False),
                       InstanceNorm2d(next_width, affine=True), nn.LeakyReLU(0.2)]
            width = next_width
        blocks.append(nn.Conv2d(width, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, layout: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        check_tensor(layout, "layout", shape=f"(N, {self.num_classes}, H, W)", ndim=4, channels=self.num_classes,
                     finite=False, non_empty=False)
        images = check_images(images, "images", ndim=(4,), non_empty=True)
        self._check_pair(layout, images)
        return self._logits(layout, images)

    def _check_pair(self, layout: torch.Tensor, images: torch.Tensor) -> None:
        if layout.shape[0] != images.shape[0] or layout.shape[-2:] != images.shape[-2:]:
            raise ValueError(f"layout {tuple(layout.shape)} and images {tuple(images.shape)} must have the same "
                             "batch size and H, W")
        smallest = 3 * 2 ** self.layers
        if min(images.shape[-2:]) < smallest:
            raise ValueError(f"images must be at least {smallest}×{smallest} pixels for a PatchGAN with "
                             f"{self.layers} strided layers, got {images.shape[-2]}×{images.shape[-1]}")

    def _logits(self, layout: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([layout, images * 2 - 1], dim=1))


class Pix2Pix(nn.Module):
    """Generator and discriminator in one module, so one checkpoint holds both.

    :meth:`loss` is a ``labkit.train.fit`` loss function: it first takes a
    discriminator step with ``discriminator_optimizer`` (pass the same
    optimizer to ``fit(extra_optimizers=...)`` so it is checkpointed), then
    returns the generator's loss for ``fit`` to step.

    output_size, num_classes: as :class:`UNetGenerator`; generator_width,
    discriminator_width: positive integers; l1_weight: a finite number ≥ 0.
    """

    def __init__(self, output_size=(64, 128), num_classes: int = NUM_CLASSES, generator_width: int = 64,
                 discriminator_width: int = 64, l1_weight: float = L1_WEIGHT):
        super().__init__()
        check_number(l1_weight, "l1_weight", minimum=0.0)
        check_positive_int(generator_width, "generator_width")
        check_positive_int(discriminator_width, "discriminator_width")
        self.generator = UNetGenerator(output_size, num_classes, base_width=generator_width)
        self.discriminator = PatchDiscriminator(num_classes, base_width=discriminator_width)
        smallest = 3 * 2 ** self.discriminator.layers
        if min(self.generator.output_size) < smallest:
            raise ValueError(f"output_size must be at least {smallest}×{smallest} for the PatchGAN, "
                             f"got {self.generator.output_size}")
        self.l1_weight = float(l1_weight)

    def forward(self, layout: torch.Tensor) -> torch.Tensor:
        return self.generator(layout)

    def optimizers(self, learning_rate: float = LEARNING_RATE):
        """(generator optimizer, discriminator optimizer): Adam with pix2pix's settings
        (learning_rate: a finite number > 0)."""
        check_number(learning_rate, "learning_rate", minimum=0.0, strict_minimum=True)
        return (torch.optim.Adam(self.generator.parameters(), lr=learning_rate, betas=BETAS),
                torch.optim.Adam(self.discriminator.parameters(), lr=learning_rate, betas=BETAS))

    @staticmethod
    def _gan_loss(logits: torch.Tensor, real: bool) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, float(real)))

    def loss(self, layout: torch.Tensor, images: torch.Tensor, discriminator_optimizer: torch.optim.Optimizer):
        """One pix2pix iteration. layout (N, C, H, W), images (N, 3, H, W) in [0, 1].

        Both are checked first (the layout as :meth:`UNetGenerator.forward` does,
        the images for shape, finiteness and range: one pass each), and
        ``discriminator_optimizer`` must be a ``torch.optim.Optimizer``.

        D step:  L_D = ½ [BCE(D(x, y), 1) + BCE(D(x, G(x)), 0)]
        G loss:  L_G = BCE(D(x, G(x)), 1) + λ ‖y − G(x)‖₁

        The L1 term is measured on images in [−1, 1], as pix2pix's code does, so
        λ = 100 weighs it against the GAN term as in the paper (on [0, 1] images
        it would count half).
        """
        generator, discriminator = self.generator, self.discriminator
        check_layout_input(layout, generator.num_classes, generator.output_size)
        images = check_images(images, "images", ndim=(4,), non_empty=True)
        if images.shape[0] != layout.shape[0] or images.shape[-2:] != layout.shape[-2:]:
            raise ValueError(f"layout {tuple(layout.shape)} and images {tuple(images.shape)} must have the same "
                             "batch size and H, W")
        if not isinstance(discriminator_optimizer, torch.optim.Optimizer):
            raise ValueError(f"discriminator_optimizer must be a torch.optim.Optimizer (the second of "
                             f"Pix2Pix.optimizers()), got {type(discriminator_optimizer).__name__}")
        # Checked once above; the inner calls skip the checks.
        fake = generator._generate(layout)
        self.discriminator.requires_grad_(True)
        discriminator_optimizer.zero_grad(set_to_none=True)
        d_loss = 0.5 * (self._gan_loss(discriminator._logits(layout, images), True)
                        + self._gan_loss(discriminator._logits(layout, fake.detach()), False))
        d_loss.backward()
        discriminator_optimizer.step()
        self.discriminator.requires_grad_(False)   # the G step needs gradients through D, not for D
        g_gan = self._gan_loss(discriminator._logits(layout, fake), True)
        g_l1 = 2 * (fake - images).abs().mean()   # in pix2pix's units: images in [−1, 1]
        self.discriminator.requires_grad_(True)
        return g_gan + self.l1_weight * g_l1, {"d_loss": float(d_loss.detach()), "g_gan": float(g_gan.detach()),
                                                        "g_l1": float(g_l1.detach())}

    @torch.no_grad()
    def sample(self, layout: torch.Tensor, samples: int = 1) -> torch.Tensor:
        """(N, samples, 3, H, W) in [0, 1], dropout on."""
        return self.generator.sample(layout, samples).clamp(0, 1)
