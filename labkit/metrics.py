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

All image inputs are non-empty (N, 3, H, W) float in [0, 1]; label maps (N, H, W).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .checks import check_int, check_positive_int, check_tensor
from .data import CLASS_NAMES, IGNORE_INDEX, NUM_CLASSES
from .data.validation import check_image_label_pair, check_images, check_label_map

SSIM_WINDOW = 11
"""Side of SSIM's Gaussian window: images must be at least this many pixels high and wide."""
JUDGE_MULTIPLE = 8
"""The judge pools three times: H and W of the images it segments must be multiples of 8."""


def _check_num_classes(num_classes) -> int:
    # 255 is IGNORE_INDEX, so a class id must stay below it
    return check_int(num_classes, "num_classes", minimum=1, maximum=IGNORE_INDEX)


def _check_pair_of_label_maps(prediction, target, num_classes: int):
    prediction = check_label_map(prediction, "prediction", num_classes=num_classes, ndim=(1, 2, 3))
    target = check_label_map(target, "target", num_classes=num_classes, allow_ignore=True, ndim=(1, 2, 3))
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must match")
    return prediction, target


def _check_judge_size(images: torch.Tensor, name: str) -> None:
    height, width = images.shape[-2:]
    if height % JUDGE_MULTIPLE or width % JUDGE_MULTIPLE:
        raise ValueError(f"{name} must have H and W divisible by {JUDGE_MULTIPLE} for the judge, "
                         f"got {(height, width)}")


def confusion_matrix(prediction: torch.Tensor, target: torch.Tensor, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = truth, columns = prediction.

    prediction: integer class ids in ``[0, num_classes)``; target: the same
    shape, ids in that range or ``IGNORE_INDEX``; both (P,), (H, W) or
    (N, H, W). Pixels whose target is ``IGNORE_INDEX`` are left out."""
    num_classes = _check_num_classes(num_classes)
    prediction, target = _check_pair_of_label_maps(prediction, target, num_classes)
    return _confusion_matrix(prediction, target, num_classes)


def _confusion_matrix(prediction: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    valid = target != IGNORE_INDEX
    index = target[valid] * num_classes + prediction[valid]
    return torch.bincount(index.flatten(), minlength=num_classes ** 2).reshape(num_classes, num_classes)


def scores_from_confusion(confusion: torch.Tensor) -> dict:
    """mIoU over the classes that occur (in truth or prediction), pixel accuracy,
    and the IoU of each class (NaN for a class that never occurs).

    confusion: a (C, C) tensor or array of finite, non-negative counts
    (rows = truth, columns = prediction), as :func:`confusion_matrix` returns."""
    if isinstance(confusion, np.ndarray):
        confusion = torch.from_numpy(confusion)
    check_tensor(confusion, "confusion", shape="(C, C)", ndim=2, floating=False)
    if confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"confusion must be a square (C, C) matrix, got {tuple(confusion.shape)}")
    if confusion.dtype == torch.bool:
        raise ValueError("confusion must hold non-negative counts, got a bool tensor")
    if confusion.numel() and bool((confusion < 0).any()):
        raise ValueError(f"confusion must hold non-negative counts, got minimum {float(confusion.min()):g}")
    return _scores_from_confusion(confusion)


def _scores_from_confusion(confusion: torch.Tensor) -> dict:
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
    """Scores of predicted label maps (N, H, W) against true ones, over the whole set.

    prediction: ids in ``[0, num_classes)``; target: the same shape, ids in
    that range or ``IGNORE_INDEX``; (H, W) or (N, H, W)."""
    num_classes = _check_num_classes(num_classes)
    prediction = check_label_map(prediction, "prediction", num_classes=num_classes, ndim=(2, 3))
    target = check_label_map(target, "target", num_classes=num_classes, allow_ignore=True, ndim=(2, 3))
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must match")
    return _scores_from_confusion(_confusion_matrix(prediction, target, num_classes))


def _check_judge(judge, name: str = "judge"):
    """A judge network (:class:`labkit.judge.JudgeNet`, or anything with its ``predict``,
    ``encoder_features`` and ``parameters``) or ``None`` for the committed one."""
    if judge is not None and not all(callable(getattr(judge, attribute, None))
                                     for attribute in ("predict", "encoder_features", "parameters")):
        raise ValueError(f"{name} must be a JudgeNet (labkit.judge.load_judge()) or None, got {type(judge).__name__}")
    return judge


def _judge(judge=None, device=None):
    from .judge import load_judge

    return _check_judge(judge) if judge is not None else load_judge(device=device or "cpu")


def fcn_score(images, labels, judge=None, per_class: bool = False) -> dict:
    """FCN-score of generated ``images`` (N, 3, H, W) in [0, 1] against the
    ``labels`` (N, H, W) they were generated from.

    Returns ``{"miou": float, "pixel_accuracy": float}`` (plus
    ``per_class_iou`` when asked). N ≥ 1; H and W must be multiples of 8.
    """
    images, labels = check_image_label_pair(images, labels, allow_ignore=True, non_empty=True)
    _check_judge_size(images, "images")
    judge = _judge(_check_judge(judge), images.device)
    scores = segmentation_scores(judge.predict(images.to(next(judge.parameters()).device)).cpu(), labels.cpu())
    if not per_class:
        scores.pop("per_class_iou")
    return scores


@torch.no_grad()
def judge_embeddings(images, judge=None, batch_size: int = 64) -> torch.Tensor:
    """(N, D) float64 image embeddings: the judge's two deepest encoder stages,
    average-pooled over space and concatenated (D = 96 + 160 for the default judge).

    images: (N, 3, H, W) in [0, 1], N ≥ 1, H and W ≥ 8; batch_size: a positive integer."""
    return _judge_embeddings(images, judge, batch_size, "images")


@torch.no_grad()
def _judge_embeddings(images, judge, batch_size: int, name: str) -> torch.Tensor:
    images = check_images(images, name, ndim=(4,), non_empty=True)
    batch_size = check_positive_int(batch_size, "batch_size")
    judge = _judge(_check_judge(judge))
    device = next(judge.parameters()).device
    chunks = []
    for i in range(0, len(images), batch_size):
        features = judge.encoder_features(images[i:i + batch_size].to(device))
        chunks.append(torch.cat([f.mean(dim=(2, 3)) for f in features[-2:]], dim=1).double().cpu())
    return torch.cat(chunks)


def frechet_distance_from_embeddings(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two (N, D) embedding sets
    (finite tensors, N ≥ 2 in each, the same D)."""
    import warnings

    from scipy import linalg

    for name, embeddings in (("a", a), ("b", b)):
        check_tensor(embeddings, name, shape="(N, D)", ndim=2, floating=False)
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
    computed with the same number of images. images_a, images_b: (N, 3, H, W)
    in [0, 1], at least 2 images each, H and W ≥ 8.
    """
    _check_judge(judge)
    for name, images in (("images_a", images_a), ("images_b", images_b)):   # both before any work
        check_images(images, name, ndim=(4,), non_empty=True)
    return frechet_distance_from_embeddings(_judge_embeddings(images_a, judge, 64, "images_a"),
                                            _judge_embeddings(images_b, judge, 64, "images_b"))


def perceptual_distance(images_a, images_b, judge=None) -> torch.Tensor:
    """(N,) distance between paired images on the judge's features.

    d(a, b) = mean_l mean_{h,w} ‖â_l(h,w) − b̂_l(h,w)‖², with â the feature
    vector at each position scaled to unit length (LPIPS without its learned
    layer weights). Differentiable in both inputs. images_a, images_b: the
    same shape (N, 3, H, W), N ≥ 1, values in [0, 1].
    """
    images_a = check_images(images_a, "images_a", ndim=(4,), non_empty=True)
    images_b = check_images(images_b, "images_b", ndim=(4,), non_empty=True)
    if images_a.shape != images_b.shape:
        raise ValueError(f"images_a {tuple(images_a.shape)} and images_b {tuple(images_b.shape)} must match")
    judge = _judge(_check_judge(judge))
    device = next(judge.parameters()).device
    total = 0.0
    features_a, features_b = judge.encoder_features(images_a.to(device)), judge.encoder_features(images_b.to(device))
    for fa, fb in zip(features_a, features_b):
        total = total + (F.normalize(fa, dim=1) - F.normalize(fb, dim=1)).pow(2).sum(1).mean(dim=(1, 2))
    return (total / len(features_a)).to(images_a.device)


@torch.no_grad()
def diversity(samples, judge=None) -> float:
    """Mean pairwise perceptual distance among K ≥ 2 samples (K, 3, H, W) of one layout."""
    samples = check_images(samples, "samples", ndim=(4,))
    k = samples.shape[0]
    if k < 2:
        raise ValueError(f"diversity needs at least 2 samples, got {k}")
    _check_judge(judge)
    first, second = torch.triu_indices(k, k, offset=1)
    return float(perceptual_distance(samples[first], samples[second], judge).mean())


def _check_pair(images, references):
    images = check_images(images, "images", ndim=(4,), non_empty=True)
    references = check_images(references, "references", ndim=(4,), non_empty=True)
    if images.shape != references.shape:
        raise ValueError(f"images {tuple(images.shape)} and references {tuple(references.shape)} must match")
    return images, references


def psnr(images, references) -> float:
    """Peak signal-to-noise ratio in dB, data range 1."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    images, references = _check_pair(images, references)
    return float(peak_signal_noise_ratio(images.float(), references.float(), data_range=1.0))


def ssim(images, references) -> float:
    """Structural similarity (Gaussian window 11, σ = 1.5), data range 1.

    The window needs images at least 11×11 pixels."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    images, references = _check_pair(images, references)
    if min(images.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"images must be at least {SSIM_WINDOW}×{SSIM_WINDOW} pixels for SSIM's "
                         f"{SSIM_WINDOW}×{SSIM_WINDOW} window, got {images.shape[-2]}×{images.shape[-1]}")
    return float(structural_similarity_index_measure(images.float(), references.float(), data_range=1.0))
