"""One set of metrics for every chapter.

- **FCN-score** (CRN §5, SIMS §5, the analogy paper): segment a generated
  image with the judge and compare with the layout it was generated from:
  mean IoU over classes and pixel accuracy.
- **Fréchet distance** (FID's formula on judge features instead of
  Inception's): ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}).
- **Perceptual distance**: LPIPS' recipe without learned weights: unit-
  normalise each judge feature vector over channels, average the squared
  difference over positions, and average the layers.
- **Diversity**: mean pairwise perceptual distance among samples of one layout.
- **PSNR / SSIM** from torchmetrics.

All image inputs are (N, 3, H, W) float in [0, 1]; label maps (N, H, W).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .data import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from .data.validation import check_image_label_pair, check_images, check_label_map


def confusion_matrix(prediction: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = truth, columns = prediction.
    Pixels whose target is ``IGNORE_INDEX`` are left out."""
    valid = target != IGNORE_INDEX
    index = target[valid] * num_classes + prediction[valid]
    return torch.bincount(index.flatten(), minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores_from_confusion(confusion: torch.Tensor) -> dict:
    """mIoU over the classes that occur (in truth or prediction), pixel accuracy,
    and the IoU of each class (NaN for a class that never occurs)."""
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    iou = true_positive / union.clamp(min=1)
    present = union > 0
    return {
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "pixel_accuracy": float(true_positive.sum() / confusion.sum().clamp(min=1)),
        "per_class_iou": {(CLASS_NAMES[k] if k < len(CLASS_NAMES) else str(k)):
                          (float(iou[k]) if present[k] else float("nan")) for k in range(len(iou))},
    }


def segmentation_scores(prediction: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES) -> dict:
    """Scores of predicted label maps (N, H, W) against true ones, over the whole set."""
    prediction = check_label_map(prediction, "prediction", num_classes=num_classes, ndim=(2, 3))
    target = check_label_map(target, "target", num_classes=num_classes, allow_ignore=True, ndim=(2, 3))
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must match")
    return scores_from_confusion(confusion_matrix(prediction, target, num_classes))


def _judge(judge=None, device=None):
    from .judge import load_judge

    return judge if judge is not None else load_judge(device=device or "cpu")


def fcn_score(images, labels, judge=None, per_class: bool = False) -> dict:
    """FCN-score of generated ``images`` (N, 3, H, W) in [0, 1] against the
    ``labels`` (N, H, W) they were generated from.

    Returns ``{"miou": float, "pixel_accuracy": float}`` (plus
    ``per_class_iou`` when asked). H and W must be multiples of 8.
    """
    images, labels = check_image_label_pair(images, labels, allow_ignore=True)
    judge = _judge(judge, images.device)
    scores = segmentation_scores(judge.predict(images.to(next(judge.parameters()).device)).cpu(), labels.cpu())
    if not per_class:
        scores.pop("per_class_iou")
    return scores


@torch.no_grad()
def judge_embeddings(images, judge=None, batch_size: int = 64) -> torch.Tensor:
    """(N, D) float64 image embeddings: the judge's two deepest encoder stages,
    average-pooled over space and concatenated (D = 96 + 160 for the default judge)."""
    images = check_images(images, "images", ndim=(4,))
    judge = _judge(judge)
    device = next(judge.parameters()).device
    chunks = []
    for i in range(0, len(images), batch_size):
        features = judge.encoder_features(images[i:i + batch_size].to(device))
        chunks.append(torch.cat([f.mean(dim=(2, 3)) for f in features[-2:]], dim=1).double().cpu())
    return torch.cat(chunks)


def frechet_distance_from_embeddings(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) embedding sets."""
    import warnings

    from scipy import linalg

    if a.dim() != 2 or b.dim() != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"embeddings must be (N, D) with the same D, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"Fréchet distance needs at least 2 samples per set, got {a.shape[0]} and {b.shape[0]}")
    if min(a.shape[0], b.shape[0]) <= a.shape[1]:
        warnings.warn(f"Fréchet distance from {a.shape[0]} and {b.shape[0]} samples of {a.shape[1]}-d embeddings: "
                      "the covariances are singular; compare it only with numbers from the same set sizes",
                      stacklevel=3)
    a, b = a.double().numpy(), b.double().numpy()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(root).all():  # a singular product: nudge both covariances, as FID's reference code does
        offset = np.eye(cov_a.shape[0]) * 1e-6
        root = linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    root = root.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * root))


def frechet_distance(images_a, images_b, judge=None) -> float:
    """Fréchet distance between two image sets, on judge embeddings.

    Like FID it is biased upwards for small sets: compare only numbers
    computed with the same number of images.
    """
    return frechet_distance_from_embeddings(judge_embeddings(images_a, judge), judge_embeddings(images_b, judge))


def perceptual_distance(images_a, images_b, judge=None) -> torch.Tensor:
    """(N,) distance between paired images on the judge's features.

    d(a, b) = mean_l mean_{h,w} ‖â_l(h,w) − b̂_l(h,w)‖², with â the feature
    vector at each position scaled to unit length (LPIPS without its learned
    layer weights). Differentiable in both inputs.
    """
    images_a = check_images(images_a, "images_a", ndim=(4,))
    images_b = check_images(images_b, "images_b", ndim=(4,))
    if images_a.shape != images_b.shape:
        raise ValueError(f"images_a {tuple(images_a.shape)} and images_b {tuple(images_b.shape)} must match")
    judge = _judge(judge)
    device = next(judge.parameters()).device
    total = 0.0
    features_a, features_b = judge.encoder_features(images_a.to(device)), judge.encoder_features(images_b.to(device))
    for fa, fb in zip(features_a, features_b):
        total = total + (F.normalize(fa, dim=1) - F.normalize(fb, dim=1)).pow(2).sum(1).mean(dim=(1, 2))
    return (total / len(features_a)).to(images_a.device)


@torch.no_grad()
def diversity(samples, judge=None) -> float:
    """Mean pairwise perceptual distance among K samples (K, 3, H, W) of one layout."""
    samples = check_images(samples, "samples", ndim=(4,))
    k = samples.shape[0]
    if k < 2:
        raise ValueError(f"diversity needs at least 2 samples, got {k}")
    first, second = torch.triu_indices(k, k, offset=1)
    return float(perceptual_distance(samples[first], samples[second], judge).mean())


def _check_pair(images, references):
    images, references = check_images(images, "images", ndim=(4,)), check_images(references, "references", ndim=(4,))
    if images.shape != references.shape:
        raise ValueError(f"images {tuple(images.shape)} and references {tuple(references.shape)} must match")
    return images, references


def psnr(images, references) -> float:
    """Peak signal-to-noise ratio in dB, data range 1."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    images, references = _check_pair(images, references)
    return float(peak_signal_noise_ratio(images.float(), references.float(), data_range=1.0))


def ssim(images, references) -> float:
    """Structural similarity (Gaussian window 11, σ = 1.5), data range 1."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    images, references = _check_pair(images, references)
    return float(structural_similarity_index_measure(images.float(), references.float(), data_range=1.0))
