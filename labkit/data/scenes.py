"""StreetScenes: a procedural, Cityscapes-like data set of street scenes.

Every sample is rendered on demand from ``(seed, split, index)``; nothing is
stored or downloaded, the set is as large as you like, and the same index
gives the same scene at any resolution from 32×64 to 256×512.
"""
from __future__ import annotations

import operator

import numpy as np
import torch
from torch.utils.data import Dataset

from ..checks import check_non_empty, check_non_negative_int, check_positive_int, check_seed
from .classes import CLASS_INDEX
from .layout import Scene, sample_scene
from .render import check_object_ids, check_scene, render_scene

SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTHS = {"train": 2975, "val": 500, "test": 1525}
"""Nominal sizes, Cityscapes' own; pass ``length=`` for any other."""
MIN_HEIGHT, MAX_HEIGHT = 32, 256


def _index(value, name: str) -> int:
    """An integer index (int, NumPy or 0-d torch integer; not a bool, float or string)."""
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def check_size(size, name: str = "size") -> tuple[int, int]:
    """Validate a (H, W) canvas size: two integers, 1:2 aspect, 32 ≤ H ≤ 256."""
    expected = f"(H, 2·H) with {MIN_HEIGHT} ≤ H ≤ {MAX_HEIGHT} (32×64 up to 256×512)"
    try:
        if isinstance(size, (str, bytes)) or len(size) != 2:
            raise TypeError
        height, width = (_index(v, name) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of integers {expected}, got {size!r}") from None
    if width != 2 * height or not MIN_HEIGHT <= height <= MAX_HEIGHT:
        raise ValueError(f"{name} must be {expected}, got {(height, width)}")
    return height, width


class StreetScenes(Dataset):
    """Procedural street scenes with labels, instances and depth order.

    ``ds[i]`` is a dict:

    - ``image``: float32 (3, H, W) in [0, 1]
    - ``label``: int64 (H, W), indices into :data:`labkit.data.CLASSES`
    - ``instances``: int64 (H, W), 0 = none, else the object's ``id``
    - ``objects``: list of ``{id, class_id, box: (x0, y0, x1, y1), depth, order}``
      for every visible car and person; ``box`` is the visible extent in
      pixels (x1, y1 exclusive), ``depth`` the distance in camera heights and
      ``order`` the rank front to back (0 = nearest).

    ``ds.render(i, remove=[ids])`` draws the same scene without those objects:
    the ground truth behind them, for inpainting and for SEIGAN's backgrounds.
    """

    def __init__(self, size=(64, 128), seed: int = 0, split: str = "train", length: int | None = None):
        self.size = check_size(size)
        _check_split(split)
        self.seed, self.split = check_seed(seed), split
        self.length = DEFAULT_LENGTHS[split] if length is None else check_non_negative_int(length, "length")

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        return f"StreetScenes(size={self.size}, seed={self.seed}, split={self.split!r}, length={self.length})"

    def scene(self, index: int) -> Scene:
        """The editable description of scene ``index`` (see :mod:`labkit.data.layout`).

        index: any integer ≥ 0 (not bounded by ``len``: the set is unbounded)."""
        index = _index(index, "index")
        if index < 0:
            raise IndexError(f"scene index must be ≥ 0, got {index}")
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, SPLITS[self.split], index]))
        return sample_scene(rng)

    def render(self, index: int, remove=(), scene: Scene | None = None, shadows: bool = True) -> dict:
        """Render scene ``index`` (or an edited ``scene``) without the objects in ``remove``.

        index: an integer ≥ 0; remove: a list of object ids of that scene;
        scene: ``None`` or a :class:`Scene` (e.g. an edited ``self.scene(index)``);
        shadows: False draws cars and persons without their contact shadows."""
        index = _index(index, "index")
        scene = self.scene(index) if scene is None else check_scene(scene)
        known = {t.instance_id for t in scene.instances}
        unknown = sorted(set(check_object_ids(remove)) - known)
        if unknown:
            raise ValueError(f"remove names object ids {unknown} that scene {index} does not have; "
                             f"its ids are {sorted(known)}")
        drawn = render_scene(scene, self.size[0], remove=remove, shadows=shadows)
        return self._to_sample(scene, drawn)

    def __getitem__(self, index: int) -> dict:
        index = _index(index, "index")
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self!r}")
        return self.render(index % self.length)

    @staticmethod
    def _to_sample(scene: Scene, drawn: dict) -> dict:
        instances = drawn["instances"]
        by_depth = sorted(scene.instances, key=lambda t: t.z)
        objects = []
        for thing in by_depth:
            rows, cols = np.nonzero(instances == thing.instance_id)
            if rows.size == 0:
                continue   # fully hidden or outside the frame
            objects.append({
                "id": thing.instance_id,
                "class_id": CLASS_INDEX[thing.kind],
                "box": (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1),
                "depth": float(thing.z),
                "order": len(objects),
            })
        return {
            "image": torch.from_numpy(np.ascontiguousarray(drawn["image"].transpose(2, 0, 1))),
            "label": torch.from_numpy(drawn["label"]),
            "instances": torch.from_numpy(drawn["instances"]),
            "objects": objects,
        }


def _check_split(split) -> str:
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    return split


def render_batch(size, count: int, split: str = "test", seed: int = 0, start: int = 0):
    """Scenes ``start … start + count - 1`` as (images (N, 3, H, W) float32, labels (N, H, W) int64).

    count: a positive integer; start: an integer ≥ 0."""
    size, count = check_size(size), check_positive_int(count, "count")
    _check_split(split)
    seed, start = check_seed(seed), check_non_negative_int(start, "start")
    ds = StreetScenes(size=size, seed=seed, split=split, length=start + count)
    samples = [ds[i] for i in range(start, start + count)]
    return torch.stack([s["image"] for s in samples]), torch.stack([s["label"] for s in samples])


def collate_scenes(samples: list[dict]) -> dict:
    """Batch StreetScenes samples: stacks tensors, keeps ``objects`` as a list.

    samples: a non-empty list of ``StreetScenes`` samples of one size."""
    samples = check_non_empty(samples, "samples")
    keys = ("image", "label", "instances", "objects")
    for k, sample in enumerate(samples):
        if not isinstance(sample, dict) or not all(key in sample for key in keys):
            got = sorted(sample) if isinstance(sample, dict) else type(sample).__name__
            raise ValueError(f"samples[{k}] must be a StreetScenes sample, a dict with keys {list(keys)}, got {got}")
        if not all(isinstance(sample[key], torch.Tensor) for key in keys[:3]):
            raise ValueError(f"samples[{k}] must hold tensors under 'image', 'label' and 'instances'")
        if sample["image"].shape != samples[0]["image"].shape or sample["label"].shape != samples[0]["label"].shape \
                or sample["instances"].shape != samples[0]["instances"].shape:
            raise ValueError(f"samples must all have the same size: samples[0] has image "
                             f"{tuple(samples[0]['image'].shape)}, samples[{k}] has {tuple(sample['image'].shape)}")
    return {
        "image": torch.stack([s["image"] for s in samples]),
        "label": torch.stack([s["label"] for s in samples]),
        "instances": torch.stack([s["instances"] for s in samples]),
        "objects": [s["objects"] for s in samples],
    }
