"""Chapter 0, the bench: its profiles and the experiments that explain the metrics.

Every metric is easier to trust once you have seen what it says about
images you understand: the real scenes themselves, the same scenes blurred
or with noise, colour-shifted, and the "flat" image that paints each class
in its label colour (a perfect layout with no photographic content at all).
"""
from __future__ import annotations

import torch

from .checks import check_int, check_positive_int
from .data import PALETTE, check_size, render_batch
from .data.validation import check_image_label_pair, check_label_map
from .metrics import _check_judge, fcn_score, frechet_distance, perceptual_distance, psnr, ssim
from .train import register_dry_run

PROFILES = {
    # size: resolution of the metric demos; eval_scenes: held-out scenes the judge is scored on;
    # frechet_scenes: images per set for Fréchet distances (it needs more samples than the
    # 256 feature dimensions to estimate a full-rank covariance; smoke has fewer and warns).
    "smoke": {"size": (32, 64), "eval_sizes": [(32, 64)], "eval_scenes": 16, "frechet_scenes": 64},
    "book": {"size": (64, 128), "eval_sizes": [(64, 128)], "eval_scenes": 64, "frechet_scenes": 400},
    "full": {"size": (64, 128), "eval_sizes": [(64, 128), (128, 256)], "eval_scenes": 256,
             "frechet_scenes": 1000},
}
DRY_RUN = register_dry_run(PROFILES, {"eval_sizes": [(64, 128)], "eval_scenes": 16, "frechet_scenes": 64})
"""How a dry run of the full profile (``labkit reproduce --profile full --dry-run``) shrinks chapter 0's."""
DRY_RUN_NOTE = (f"The dry run scores the judge on {DRY_RUN['eval_scenes']} scenes at "
                f"{' and '.join(f'{h}×{w}' for h, w in DRY_RUN['eval_sizes'])} only, and Fréchet distances on "
                f"{DRY_RUN['frechet_scenes']} images.")


def flat_label_images(labels: torch.Tensor) -> torch.Tensor:
    """(N, H, W) labels (class ids in [0, NUM_CLASSES), no ignored pixels) → (N, 3, H, W)
    images painted in the class colours."""
    labels = check_label_map(labels, "labels", ndim=(3,))
    palette = torch.from_numpy(PALETTE).float() / 255
    return palette[labels].permute(0, 3, 1, 2).contiguous()


def perturbations(images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The real images and controlled degradations of them, in a fixed order.

    images (N, 3, H, W) in [0, 1] with their labels (N, H, W), N ≥ 1."""
    from kornia.filters import gaussian_blur2d

    check_image_label_pair(images, labels, non_empty=True)

    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(images.shape, generator=generator)
    return {
        "real": images,
        "blur σ=1": gaussian_blur2d(images, (7, 7), (1.0, 1.0)),
        "blur σ=3": gaussian_blur2d(images, (19, 19), (3.0, 3.0)),
        "noise σ=0.1": (images + 0.1 * noise).clamp(0, 1),
        "colour shift": (images * torch.tensor([1.25, 0.9, 0.75]).view(1, 3, 1, 1)).clamp(0, 1),
        "flat label colours": flat_label_images(labels),
    }


def metric_table(size, count: int, frechet_count: int, judge=None) -> dict[str, dict[str, float]]:
    """Each metric for each perturbation of held-out scenes.

    FCN-score, PSNR, SSIM and perceptual distance use ``count`` scenes against
    their own originals; the Fréchet distance compares ``frechet_count``
    perturbed scenes with a *different* set of ``frechet_count`` real scenes,
    so even "real" has a non-zero distance: the floor set by sampling.
    count: a positive integer; frechet_count: an integer ≥ max(count, 2).
    """
    size, count = check_size(size), check_positive_int(count, "count")
    check_int(frechet_count, "frechet_count", minimum=max(count, 2))
    _check_judge(judge)
    images, labels = render_batch(size, frechet_count, split="test")
    reference, _ = render_batch(size, frechet_count, split="val")
    table = {}
    for name, perturbed in perturbations(images, labels).items():
        fcn = fcn_score(perturbed[:count], labels[:count], judge=judge)
        with torch.no_grad():
            lpips_like = perceptual_distance(perturbed[:count], images[:count], judge=judge).mean()
        table[name] = {
            "fcn_miou": fcn["miou"], "fcn_pixel_accuracy": fcn["pixel_accuracy"],
            "psnr": psnr(perturbed[:count], images[:count]) if name != "real" else float("inf"),
            "ssim": ssim(perturbed[:count], images[:count]),
            "perceptual": float(lpips_like),
            "frechet": frechet_distance(perturbed, reference, judge=judge),
        }
    return table
