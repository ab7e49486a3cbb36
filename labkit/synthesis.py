"""Shared pieces of every layout-to-image experiment: a training set, batches, evaluation.

CRN, SIMS and the pix2pix baseline are trained on the same pre-rendered
StreetScenes and scored by the same code, so their numbers can sit in one
table. A generator enters evaluation as a function

    sample(layout (N, C, H, W) one-hot) -> images (N, K, 3, H, W) in [0, 1]

that returns K ≥ 1 outputs per layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .checks import (check_choice, check_device, check_int, check_non_negative_int, check_positive_int, check_seed,
                     check_tensor)
from .data import NUM_CLASSES, StreetScenes, check_size, render_batch
from .data.validation import check_images, check_label_map
from .metrics import _check_judge, diversity, fcn_score, frechet_distance
from .networks import one_hot_layout


@dataclass
class SceneTensors:
    """A pre-rendered set: ``images`` (N, 3, H, W) uint8, ``labels`` (N, H, W) uint8, N ≥ 1
    (shapes and dtypes are checked on construction, not the values)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __post_init__(self):
        for name, value, shape, ndim in (("images", self.images, "(N, 3, H, W)", 4),
                                         ("labels", self.labels, "(N, H, W)", 3)):
            check_tensor(value, name, shape=shape, ndim=ndim, floating=False, finite=False)
            if value.dtype != torch.uint8:
                raise ValueError(f"{name} must be uint8 {shape}, got dtype {value.dtype}")
        if self.images.shape[1] != 3 or self.images.shape[0] != self.labels.shape[0] \
                or self.images.shape[-2:] != self.labels.shape[-2:]:
            raise ValueError(f"images (N, 3, H, W) and labels (N, H, W) must match, got "
                             f"{tuple(self.images.shape)} and {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return len(self.labels)


_TRAIN_CACHE: dict = {}


def training_scenes(size, count: int, seed: int = 0) -> SceneTensors:
    """The first ``count`` training scenes at ``size``, rendered once per process.

    Images are kept as uint8 (a 128×256 set of 2975 scenes is 290 MB instead
    of 1.2 GB in float32); :func:`scene_batch` converts them per batch.
    count: a positive integer; seed: an integer in [0, 2**32 - 1].
    """
    size = check_size(size)
    count, seed = check_positive_int(count, "count"), check_seed(seed)
    key = (size, int(count), int(seed))
    if key not in _TRAIN_CACHE:
        ds = StreetScenes(size=size, seed=seed, split="train", length=count)
        images = torch.empty(count, 3, *size, dtype=torch.uint8)
        labels = torch.empty(count, *size, dtype=torch.uint8)
        for i in range(count):
            sample = ds[i]
            images[i] = (sample["image"] * 255).round().to(torch.uint8)
            labels[i] = sample["label"].to(torch.uint8)
        _TRAIN_CACHE.clear()   # one set at a time: they are large
        _TRAIN_CACHE[key] = SceneTensors(images, labels)
    return _TRAIN_CACHE[key]


def scene_batch(scenes: SceneTensors, step: int, batch_size: int, seed: int = 0, flip: bool = True) -> dict:
    """The batch of training step ``step``: a function of (seed, step) only, so a
    resumed run sees the same data. Random horizontal flips (streets are
    left-right symmetric).

    Returns {"layout": (B, C, H, W) one-hot, "image": (B, 3, H, W) float in [0, 1],
    "label": (B, H, W) int64}. scenes: a :class:`SceneTensors`; step: an integer ≥ 0;
    batch_size: a positive integer; seed: an integer in [0, 2**32 - 1]; flip: True or False.
    """
    if not isinstance(scenes, SceneTensors):
        raise ValueError(f"scenes must be a SceneTensors (from training_scenes), got {type(scenes).__name__}")
    check_non_negative_int(step, "step"), check_positive_int(batch_size, "batch_size"), check_seed(seed)
    check_choice(flip, "flip", (True, False))
    rng = np.random.default_rng([int(seed), int(step)])
    index = torch.from_numpy(rng.integers(0, len(scenes), size=batch_size))
    images = scenes.images[index].float() / 255
    labels = scenes.labels[index].long()
    if flip:
        mirrored = torch.from_numpy(rng.random(batch_size) < 0.5)
        images = torch.where(mirrored[:, None, None, None], images.flip(-1), images)
        labels = torch.where(mirrored[:, None, None], labels.flip(-1), labels)
    return {"layout": one_hot_layout(labels), "image": images, "label": labels}


@torch.no_grad()
def generate(sample: Callable[[torch.Tensor], torch.Tensor], labels: torch.Tensor, device="cpu",
             batch_size: int = 16) -> torch.Tensor:
    """Run ``sample`` on layouts made from ``labels`` (N, H, W), in batches, on ``device``.

    Returns (N, K, 3, H, W) float in [0, 1] on the CPU (clamped). sample: a callable;
    labels: N ≥ 1 label maps; batch_size: a positive integer. ``sample`` must return
    finite (n, K, 3, H, W) images for n layouts.
    """
    if not callable(sample):
        raise ValueError(f"sample must be a callable layout -> images, got {type(sample).__name__}")
    labels = check_label_map(labels, "labels", allow_ignore=True, ndim=(3,), non_empty=True)
    device, batch_size = check_device(device), check_positive_int(batch_size, "batch_size")
    outputs = []
    for i in range(0, len(labels), batch_size):
        layout = one_hot_layout(labels[i:i + batch_size]).to(device)
        images = sample(layout)
        if not isinstance(images, torch.Tensor) or images.dim() != 5 or images.shape[0] != len(layout) \
                or images.shape[2] != 3 or images.shape[-2:] != labels.shape[-2:]:
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"sample must return (N, K, 3, H, W) for N = {len(layout)} layouts, got {got}")
        if not images.is_floating_point():
            raise ValueError(f"sample must return float images, got dtype {images.dtype}")
        if not bool(torch.isfinite(images).all()):
            raise ValueError(f"sample returned NaN or infinite values for the layouts of scenes "
                             f"{i} … {i + len(layout) - 1}")
        outputs.append(images.float().clamp(0, 1).cpu())
    return torch.cat(outputs)


def evaluate_synthesis(sample: Callable[[torch.Tensor], torch.Tensor], size, count: int,
                       diversity_layouts: int = 16, judge=None, device="cpu", seed: int = 0) -> dict:
    """Score a generator on the first ``count`` test scenes at ``size``.

    - ``fcn_miou``, ``fcn_pixel_accuracy``: the judge's segmentation of every
      one of the K outputs against its layout, pooled over all N·K images;
    - ``fcn_miou_per_output``: the same for each output slot k = 0 … K−1 alone.
      A generator with K heads can leave some of them untrained (CRN's
      min-over-K loss only rewards the winner of each class), and this shows it;
    - ``best_output``, ``fcn_miou_best_output``, ``fcn_pixel_accuracy_best_output``,
      ``frechet_distance_best_output``: the slot with the highest FCN-mIoU and
      its scores (the slot is chosen on these test layouts: one choice out of K);
    - ``frechet_distance``: one output per layout (output ``i mod K`` for
      layout i, so every sample slot is represented) against the real test
      images of the same layouts; only comparable between runs with the same
      ``count``;
    - ``per_class_iou``: the pooled IoU of each class (NaN for a class absent
      from truth and prediction);
    - ``diversity``: mean pairwise perceptual distance among the K outputs of
      each of the first ``diversity_layouts`` layouts (0 when K = 1: one
      deterministic output has no diversity). Untrained outputs differ from
      the trained ones too, so read it next to ``fcn_miou_per_output``.

    sample: a callable; count: an integer ≥ 2 (the Fréchet distance needs two);
    diversity_layouts: a positive integer; seed: an integer in [0, 2**32 - 1].
    Every argument is checked before anything is rendered or generated.
    """
    if not callable(sample):
        raise ValueError(f"sample must be a callable layout -> images, got {type(sample).__name__}")
    size, count = check_size(size), check_int(count, "count", minimum=2)
    check_positive_int(diversity_layouts, "diversity_layouts"), check_seed(seed)
    _check_judge(judge), check_device(device)
    real, labels = render_batch(size, count, split="test", seed=seed)
    outputs = generate(sample, labels, device=device)
    return score_synthesis(outputs, labels, real, judge=judge, device=device, diversity_layouts=diversity_layouts)


def score_synthesis(outputs: torch.Tensor, labels: torch.Tensor, real: torch.Tensor, judge=None, device="cpu",
                    diversity_layouts: int = 16) -> dict:
    """The scores of :func:`evaluate_synthesis` for generated ``outputs`` (N, K, 3, H, W) of the
    layouts ``labels`` (N, H, W), against the real images ``real`` (N, 3, H, W) of those layouts.
    Scoring already generated outputs with another ``judge`` needs no second generation.

    outputs: finite, in [0, 1]; N ≥ 2 (the Fréchet distance needs two), K ≥ 1;
    H and W multiples of 8 (the judge's); diversity_layouts: a positive integer."""
    from .metrics import _confusion_matrix, _judge, _scores_from_confusion

    labels = check_label_map(labels, "labels", allow_ignore=True, ndim=(3,), non_empty=True)
    check_tensor(outputs, "outputs", shape="(N, K, 3, H, W)", ndim=5, value_range=(0.0, 1.0))
    if outputs.shape[2] != 3 or outputs.shape[0] != len(labels) or outputs.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f"outputs must be (N, K, 3, H, W) for {tuple(labels.shape)} labels, got {tuple(outputs.shape)}")
    real = check_images(real, "real", ndim=(4,), non_empty=True)
    if real.shape[0] != len(labels) or real.shape[-2:] != labels.shape[-2:]:
        raise ValueError(f"real must be (N, 3, H, W) for {tuple(labels.shape)} labels, got {tuple(real.shape)}")
    if len(labels) < 2:
        raise ValueError(f"outputs must hold at least 2 layouts (N ≥ 2) for the Fréchet distance, got {len(labels)}")
    if labels.shape[-2] % 8 or labels.shape[-1] % 8:
        raise ValueError(f"outputs must have H and W divisible by 8 for the judge, got {tuple(labels.shape[-2:])}")
    check_positive_int(diversity_layouts, "diversity_layouts"), check_device(device)
    n, k = outputs.shape[:2]
    judge = _judge(_check_judge(judge), device)
    confusions = []
    for slot in range(k):
        predictions = judge.predict(outputs[:, slot].to(next(judge.parameters()).device)).cpu()
        confusions.append(_confusion_matrix(predictions, labels, NUM_CLASSES))
    per_output = [_scores_from_confusion(c) for c in confusions]
    pooled = _scores_from_confusion(sum(confusions))
    best = max(range(k), key=lambda slot: per_output[slot]["miou"])
    chosen = outputs[torch.arange(n), torch.arange(n) % k]
    frechet = frechet_distance(chosen, real, judge=judge)
    return {
        "fcn_miou": pooled["miou"],
        "fcn_pixel_accuracy": pooled["pixel_accuracy"],
        "fcn_miou_per_output": [s["miou"] for s in per_output],
        "best_output": best,
        "fcn_miou_best_output": per_output[best]["miou"],
        "fcn_pixel_accuracy_best_output": per_output[best]["pixel_accuracy"],
        "frechet_distance": frechet,
        "frechet_distance_best_output": frechet if k == 1 else frechet_distance(outputs[:, best], real, judge=judge),
        "diversity": (float(np.mean([diversity(outputs[i], judge=judge) for i in range(min(diversity_layouts, n))]))
                      if k > 1 else 0.0),
        "samples_per_layout": k,
        "eval_scenes": n,
        "per_class_iou": pooled["per_class_iou"],
    }


def real_scene_scores(size, count: int, judge=None, seed: int = 0) -> dict:
    """The same scores for the real test scenes: the ceiling every model is read against.

    The Fréchet distance compares test scenes with the first ``count``
    *training* scenes, so it shows the floor that sampling noise alone gives
    at this set size. count: an integer ≥ 2; seed: an integer in [0, 2**32 - 1].
    """
    size, count, seed = check_size(size), check_int(count, "count", minimum=2), check_seed(seed)
    _check_judge(judge)
    real, labels = render_batch(size, count, split="test", seed=seed)
    train, _ = render_batch(size, count, split="train", seed=seed)
    scores = fcn_score(real, labels, judge=judge)
    return {"fcn_miou": scores["miou"], "fcn_pixel_accuracy": scores["pixel_accuracy"],
            "frechet_distance": frechet_distance(train, real, judge=judge),
            "diversity": 0.0, "samples_per_layout": 1, "eval_scenes": count}
