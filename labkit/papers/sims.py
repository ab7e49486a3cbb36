"""SIMS: semi-parametric image synthesis (Qi, Chen, Jia, Koltun, CVPR 2018).

A layout L (H, W) of class indices becomes an image in four steps:

1. **Memory.** Every connected segment of every training scene is stored:
   its class, mask, bounding box, pixels and context (the labels around it).
2. **Retrieval.** Each connected component q of L (class c, area ≥ the
   minimum) retrieves the same-class segment s of the memory that maximises

       score(q, s) = IoU(M_q, M_s) + IoU_ctx(C_q, C_s),                    (paper §3.1)

   with M the binary masks and C the context labels, both on a coarse grid in
   the common image frame. IoU_ctx counts the context cells whose labels agree
   over the cells that are context of either. The official code released the
   mask term alone (``score="mask"``).
3. **Canvas.** A spatial transformer T predicts an affine map θ that aligns
   the retrieved segment to M_q (§3.2); an ordering network decides which of
   two overlapping objects is in front (§3.3); the aligned segments are
   pasted in that order. What is left is a canvas with holes, seams and
   lighting that does not agree from one segment to the next.
4. **Synthesis.** An encoder–decoder G with skips turns (L, canvas, filled
   mask) into the image (§3.4). It is trained on *simulated* canvases made
   from the training photo itself: stenciling by the mask of a retrieved
   segment, colour transfer, and boundary elision. The loss is CRN's
   feature matching plus 10 × the cross-entropy of a label map G predicts:

       ℒ(G) = Σ_l λ_l ‖Φ_l(I) − Φ_l(G(L, canvas))‖₁ + 10 · CE(Ĺ, L).

Shapes: layouts are one-hot (N, C, H, W); images (N, 3, H, W) in [0, 1];
masks (N, 1, H, W) in {0, 1}. The runs live in :mod:`labkit.papers.sims_runs`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from ..checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from ..checks import (check_choice, check_device, check_int, check_non_negative_int, check_number, check_pair, check_path,
                      check_positive_int, check_probability, check_seed)
from ..data import INSTANCE_CLASSES, NUM_CLASSES, StreetScenes, check_label_map, check_size
from ..networks import check_layout_input, conv_layernorm_block, one_hot_layout
from ..train import register_dry_run
from . import _checks
from .crn import FeatureMatchingLoss

CHAPTER = "sims"
PAPER_SIZE = (256, 512)
PAPER_EPOCHS = 800             # synthesis_256_512.py: 800 epochs at 256p, batch 1
PAPER_MIN_AREA = 1000          # search_segments.m: components larger than 1000 px at 256×512
CONTEXT_MARGIN = 0.25          # the context box: the segment's box grown by this fraction on each side
CROSS_ENTROPY_WEIGHT = 10.0    # synthesis_256_512.py: 10 × cross-entropy of the predicted label map
COLOUR_TRANSFER_PROBABILITY = 0.2   # train_generate_synthesis.m: rand > 0.8
ELISION_BAND = 0.05            # boundary band: a square of side 0.05·H around label boundaries
ELISION_FRACTION = 0.5         # share of the band's blocks that are removed
RETRIEVAL_POOL_SCENES = 100    # simulated canvases: best segment among 100 random training scenes
SIMULATIONS = ("stenciling", "colour_transfer", "elision")
RETRIEVAL_SCORES = ("mask", "mask+context")

MODEL_NAMES = ("sims", "sims_mask_only_retrieval", "sims_no_transformation", "sims_no_ordering",
               "sims_no_stenciling", "sims_no_colour_transfer", "sims_no_elision", "canvas_only")
"""The recorded SIMS variants. Those named ``sims_no_<simulation>`` retrain the
synthesis network without that canvas simulation; the retrieval, transformation
and ordering ablations change how the test canvases are built and reuse the
``sims`` network; ``canvas_only`` scores the canvas itself, holes and all."""

PROFILES = {
    "smoke": {"size": (32, 64), "grid": (16, 32), "memory_scenes": 48, "eval_scenes": 12,
              "synthesis_widths": (8, 16, 16, 16), "synthesis_steps": 6, "batch_size": 2,
              "transformer_widths": (8, 8, 16), "transformer_crop": 16, "transformer_steps": 6, "ordering_widths": (8, 8, 16),
              "ordering_steps": 6, "ordering_scenes": (48, 24), "learning_rate": 2e-4, "transformer_learning_rate": 5e-4, "top_k": 5,
              "paste_margin": 1, "retrieval_sizes": (100, 300), "retrieval_queries": 2},
    "book": {"size": (64, 128), "grid": (32, 64), "memory_scenes": 2975, "eval_scenes": 400,
             "synthesis_widths": (32, 64, 96, 128, 128), "synthesis_steps": 1500, "batch_size": 4,
             "transformer_widths": (16, 32, 64, 64), "transformer_crop": 32, "transformer_steps": 3000, "ordering_widths": (16, 32, 64, 64),
             "ordering_steps": 1000, "ordering_scenes": (2975, 500), "learning_rate": 2e-4,
             "transformer_learning_rate": 5e-4, "top_k": 10,
             "paste_margin": 2, "retrieval_sizes": (1_000, 10_000, 100_000), "retrieval_queries": 5},
    "full": {"size": (128, 256), "grid": (32, 64), "memory_scenes": 2975, "eval_scenes": 1000,
             "synthesis_widths": (64, 128, 256, 512, 512, 512), "synthesis_steps": 40_000, "batch_size": 4,
             "transformer_widths": (32, 64, 128, 256), "transformer_crop": 64, "transformer_steps": 10_000,
             "ordering_widths": (32, 64, 128, 256), "ordering_steps": 5_000, "ordering_scenes": (2975, 500),
             "learning_rate": 1e-4, "transformer_learning_rate": 2e-4, "top_k": 10, "paste_margin": 4,
             "retrieval_sizes": (1_000, 10_000, 100_000), "retrieval_queries": 5},
}
DRY_RUN = register_dry_run(PROFILES, {"size": (64, 128), "transformer_steps": 2, "ordering_steps": 2,
                                      "synthesis_steps": 2, "memory_scenes": 16, "ordering_scenes": (16, 8),
                                      "eval_scenes": 4, "retrieval_sizes": (100, 1_000), "retrieval_queries": 2})
"""How ``python -m labkit.dry_run sims`` shrinks the full profile: 2 steps per network, a few scenes."""
DRY_RUN_NOTE = (f"The dry run keeps the full profile's networks (synthesis widths {PROFILES['full']['synthesis_widths'][0]} "
                f"… {PROFILES['full']['synthesis_widths'][-1]}), batch and losses, on {DRY_RUN['size'][0]}×"
                f"{DRY_RUN['size'][1]} layouts instead of {PROFILES['full']['size'][0]}×{PROFILES['full']['size'][1]} (a "
                "full-size step is too slow for a 2-core CPU: reports/benchmarks/throughput_full_cpu.json), with a memory "
                f"of {DRY_RUN['memory_scenes']} scenes.")


def min_segment_area(size) -> int:
    """The paper's 1000-pixel threshold at 256×512, scaled to ``size`` (62 px at 64×128)."""
    height, width = check_size(size)
    return max(4, round(PAPER_MIN_AREA * height * width / (PAPER_SIZE[0] * PAPER_SIZE[1])))


def _deviations() -> list[str]:
    book = PROFILES["book"]
    return [
        "Data: procedural StreetScenes (9 classes) at 64×128 (book) and 128×256 (full) instead of Cityscapes, "
        "NYU and ADE20K at 256×512 … 1024×2048; the memory holds the segments of "
        f"{book['memory_scenes']:,} training scenes.",
        f"Minimum segment area: the paper's 1000 px at 256×512 scaled by area ({min_segment_area(book['size'])} px "
        "at 64×128). Smaller components are not retrieved and stay holes in the canvas, as in the official code.",
        f"Retrieval on a {book['grid'][0]}×{book['grid'][1]} grid (a cell is in a mask when half its pixels are), "
        "not at full resolution; the context is the labels of the grid cells in the segment's box grown by "
        f"{CONTEXT_MARGIN:.0%} per side, outside the segment. Both the paper's mask+context score and the "
        "official code's mask-only score are implemented; the chapter compares them.",
        "Transformation network: the official encoder sees the whole image at ½ resolution and pools it; ours "
        f"resamples a {book['transformer_crop']}×{book['transformer_crop']} window around the two masks (plus "
        "coordinate channels), flattens the last feature map instead of pooling it, and maps the window's "
        f"affine back to the image frame; {len(book['transformer_widths'])} stages of widths "
        f"{book['transformer_widths']} instead of 5 stages of 64 … 512. A pooled whole-image encoder did not "
        "learn here: small segments vanish in the average. Trained on simulated misalignments (random scale, "
        "rotation and shift about the segment, one side cut off) with the paper's masked L1 plus an L1 between "
        "the warped and the target masks at 3 scales (our addition: flat-coloured segments give the "
        "photometric term little to align). Learning rate "
        f"{book['transformer_learning_rate']:g}, batch {2 * book['batch_size']} (the official code: 1e-5, "
        "batch 1). Parameters are not rounded at test time (the official code rounds them).",
        "Ordering network: predicts which of two *objects* (cars, persons) is in front, from the layout and "
        "the two masks, trained on StreetScenes' true depth order, with an antisymmetric logit "
        "f(a, b) − f(b, a). The official network is a 20-way classifier over all classes; here stuff segments "
        "(road, building, sky …) are pasted first, largest first, and only objects are ordered.",
        "Canvas: each aligned segment is pasted inside its query component grown by a few pixels "
        f"({book['paste_margin']} at 64×128), so neighbouring segments overlap only near their boundaries; the "
        "paper does not state how far a segment may spill.",
        "Simulated canvases: one precomputed stencil per training scene (the official code made 5), with "
        "colour transfer and elision drawn anew at every step. Colour transfer is Reinhard et al.'s in Lab "
        "(kornia) instead of Pitié's MKL transfer; elision removes half of the blocks of the boundary band "
        "instead of half of its pixels; the label jitter of the official code (±2.5° rotation, a translation "
        "that is ≈ 0 through a bug) is left out.",
        "Synthesis network: "
        f"{len(book['synthesis_widths'])} encoder stages of widths {book['synthesis_widths']} (book) instead of "
        "6 stages of 64 … 512; the feature-matching loss uses the judge's features with calibrated layer "
        "weights (see the CRN chapter) instead of VGG-19.",
        f"Schedule: {book['synthesis_steps']:,} steps of batch {book['batch_size']} at learning rate "
        f"{book['learning_rate']:g} (book) instead of {PAPER_EPOCHS} epochs of batch 1 with the official warm-up "
        "min(1e-6·1.1^(e−1), 1e-3).",
        "Elided boundary pixels are left empty like every other hole (black, filled mask 0); the paper "
        "replaces them with white and only the pixels outside segments with black. Our network is told which "
        "pixels are empty by the mask channel either way.",
        "The ordering network is trained on pairs of single objects (instance masks); at test time it orders "
        "the connected components of a class, where touching objects of one class are one component.",
        "Synthesis network details: 2 convs per encoder stage (official 2/2/3/3/3/3), decoder widths that "
        "mirror the encoder's, no final 2×256 convs; random horizontal flips in training (not in the official "
        "code).",
        "Loss balance: the feature-matching layers are weighted by their calibrated running means (each term ≈ 1), "
        "so their balance against 10 × cross-entropy differs from the paper's, whose VGG terms are in raw units.",
        "The memory, like the query, keeps only segments of at least the minimum area.",
        "No multi-resolution fine-tuning (the official 512p and 1024p stages).",
        "Evaluation: the judge scores every model, and its features are also the synthesis network's loss "
        "(the CRN chapter's judge bias applies here too).",
    ]


DEVIATIONS = _deviations()


# --------------------------------------------------------------------------- segments


def connected_segments(label: np.ndarray, min_area: int) -> tuple[np.ndarray, np.ndarray]:
    """Connected components (4-connectivity) of each class in ``label`` (H, W).

    Returns (component map (H, W) int16, 0 = no kept component, ids 1 … n;
    class of each component (n,) int64). Components smaller than ``min_area``
    pixels are dropped. Ids run class by class, then in scan order. ``label``: integer class
    ids (ids ≥ NUM_CLASSES, such as void 255, belong to no component); ``min_area`` ≥ 0.
    """
    label = _label_array(label, "label")
    check_non_negative_int(min_area, "min_area")
    components = np.zeros(label.shape, np.int16)
    classes = []
    for class_id in np.unique(label):
        if class_id >= NUM_CLASSES:
            continue
        pieces, count = ndimage.label(label == class_id)
        if count == 0:
            continue
        areas = np.bincount(pieces.ravel(), minlength=count + 1)
        for piece in np.nonzero(areas[1:] >= min_area)[0] + 1:
            classes.append(int(class_id))
            components[pieces == piece] = len(classes)
    return components, np.asarray(classes, np.int64)


def _label_array(label, name: str) -> np.ndarray:
    """An (H, W) integer label map as a NumPy array (a tensor or an array)."""
    if isinstance(label, torch.Tensor):
        label = label.detach().cpu().numpy()
    if not isinstance(label, np.ndarray) or label.ndim != 2 or not np.issubdtype(label.dtype, np.integer) \
            or label.size == 0:
        got = f"{label.dtype} array of shape {label.shape}" if isinstance(label, np.ndarray) else type(label).__name__
        raise ValueError(f"{name} must be an (H, W) integer label map with H, W ≥ 1, got {got}")
    return label


def _check_grid(grid, size, name: str = "grid") -> tuple[int, int]:
    """A retrieval grid (gh, gw) of positive integers that divides the layout size (H, W)."""
    gh, gw = check_pair(grid, name)
    if size[0] % gh or size[1] % gw:
        raise ValueError(f"{name} {(gh, gw)} must divide the layout size {tuple(size)}")
    return gh, gw


def _cell_view(array: np.ndarray, grid) -> np.ndarray:
    height, width = array.shape[-2:]
    gh, gw = grid
    if height % gh or width % gw:
        raise ValueError(f"retrieval grid {grid} must divide the layout size {(height, width)}")
    return array.reshape(*array.shape[:-2], gh, height // gh, gw, width // gw)


def grid_descriptors(label: np.ndarray, components: np.ndarray, count: int, grid) -> tuple[np.ndarray, np.ndarray]:
    """Retrieval descriptors of components 1 … ``count`` of one scene.

    - mask (count, gh·gw) bool: a cell is in the mask when at least half of
      its pixels are (a segment too thin for that keeps its fullest cell);
    - context (count, gh·gw) uint8: the label filling most of each cell, for
      the cells inside the segment's box grown by :data:`CONTEXT_MARGIN` per
      side and outside its mask; 255 elsewhere.

    ``components``: (H, W) ids 0 … ``count`` as :func:`connected_segments` returns them.
    """
    label = _label_array(label, "label")
    components = _label_array(components, "components")
    if components.shape != label.shape:
        raise ValueError(f"components {components.shape} must have the label's shape {label.shape}")
    check_int(count, "count", minimum=0, maximum=int(components.max()))
    gh, gw = grid = _check_grid(grid, label.shape)
    cells = _cell_view(label, grid)
    one_hot = (cells[None] == np.arange(NUM_CLASSES)[:, None, None, None, None]).mean(axis=(2, 4))
    cell_label = one_hot.argmax(0).astype(np.uint8)                  # (gh, gw)
    fractions = np.stack([_cell_view(components == k, grid).mean(axis=(1, 3)) for k in range(1, count + 1)]) \
        if count else np.zeros((0, gh, gw))
    masks = fractions >= 0.5
    for k in np.nonzero(~masks.any(axis=(1, 2)))[0]:
        masks[k].flat[fractions[k].argmax()] = True
    context = np.full((count, gh, gw), 255, np.uint8)
    for k in range(count):
        rows, cols = np.nonzero(masks[k])
        r0, r1, c0, c1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        dr, dc = int(np.ceil(CONTEXT_MARGIN * (r1 - r0))), int(np.ceil(CONTEXT_MARGIN * (c1 - c0)))
        box = np.zeros((gh, gw), bool)
        box[max(0, r0 - dr):r1 + dr, max(0, c0 - dc):c1 + dc] = True
        ring = box & ~masks[k]
        context[k][ring] = cell_label[ring]
    return masks.reshape(count, gh * gw), context.reshape(count, gh * gw)   # (0, gh·gw) for no components


def lab_statistics(image: torch.Tensor, mask: torch.Tensor, lab: torch.Tensor | None = None) -> torch.Tensor:
    """Mean and standard deviation of the Lab values of ``image`` (3, H, W) in [0, 1]
    inside ``mask`` (H, W) bool: a (6,) tensor (μ_L, μ_a, μ_b, σ_L, σ_a, σ_b).
    ``lab``: the image already in Lab, to convert a scene once for all its segments. The mask
    must select at least one pixel."""
    _checks.images_batch(image, "image", ndim=(3,))
    _checks.tensor(mask, "mask", shape="(H, W) bool", ndim=2, floating=False)
    if mask.dtype != torch.bool or mask.shape != image.shape[-2:]:
        raise ValueError(f"mask must be a bool (H, W) map the image's size {tuple(image.shape[-2:])}, got "
                         f"{mask.dtype} {tuple(mask.shape)}")
    if not bool(mask.any()):
        raise ValueError("mask must select at least one pixel (the statistics of no pixels are undefined)")
    if lab is not None:
        _checks.tensor(lab, "lab", shape="(3, H, W)", ndim=3, channels=None)
        if lab.shape != image.shape:
            raise ValueError(f"lab must be the image in Lab, of its shape {tuple(image.shape)}, got {tuple(lab.shape)}")
    return _lab_statistics(image, mask, lab)


def _lab_statistics(image, mask, lab=None):
    import kornia

    if lab is None:
        lab = kornia.color.rgb_to_lab(image[None].float())[0]
    inside = lab[:, mask]
    return torch.cat([inside.mean(1), inside.std(1, unbiased=False)])


@dataclass
class SegmentMemory:
    """The segments of a set of scenes, with what retrieval and pasting need.

    Per scene: ``images`` (S, 3, H, W) uint8, ``labels`` (S, H, W) uint8 and
    ``components`` (S, H, W) int16 (see :func:`connected_segments`). Per
    segment n: ``class_ids``, ``scene_ids``, ``component_ids`` (its id in its
    scene's component map), ``boxes`` (x0, y0, x1, y1), ``areas`` (pixels),
    ``grid_masks`` / ``grid_context`` (:func:`grid_descriptors`) and
    ``lab_stats`` (n, 6) (:func:`lab_statistics`).
    """

    size: tuple[int, int]
    grid: tuple[int, int]
    min_area: int
    images: torch.Tensor
    labels: torch.Tensor
    components: torch.Tensor
    class_ids: torch.Tensor
    scene_ids: torch.Tensor
    component_ids: torch.Tensor
    boxes: torch.Tensor
    areas: torch.Tensor
    grid_masks: torch.Tensor
    grid_context: torch.Tensor
    lab_stats: torch.Tensor
    source: dict = field(default_factory=dict)

    def __post_init__(self):
        for name in self._TENSORS:
            if not isinstance(getattr(self, name), torch.Tensor):
                raise ValueError(f"{name} must be a tensor, got {type(getattr(self, name)).__name__}")
        self.size, self.grid = check_pair(self.size, "size"), _check_grid(self.grid, self.size)
        check_non_negative_int(self.min_area, "min_area")
        scenes = len(self.labels)
        if self.images.shape != (scenes, 3, *self.size) or self.components.shape != (scenes, *self.size) \
                or self.labels.shape != (scenes, *self.size):
            raise ValueError(f"images (S, 3, H, W), labels and components (S, H, W) must match size {self.size}; got "
                             f"{tuple(self.images.shape)}, {tuple(self.labels.shape)}, {tuple(self.components.shape)}")
        count = len(self.class_ids)
        per_segment = {"scene_ids": (count,), "component_ids": (count,), "boxes": (count, 4), "areas": (count,),
                       "grid_masks": (count, self.grid[0] * self.grid[1]),
                       "grid_context": (count, self.grid[0] * self.grid[1]), "lab_stats": (count, 6)}
        for name, shape in per_segment.items():
            if tuple(getattr(self, name).shape) != shape:
                raise ValueError(f"{name} must be {shape} for {count} segments on a {self.grid} grid, got "
                                 f"{tuple(getattr(self, name).shape)}")
        if count and (int(self.scene_ids.min()) < 0 or int(self.scene_ids.max()) >= scenes):
            raise ValueError(f"scene_ids must lie in [0, {scenes - 1}]")
        if count and (int(self.class_ids.min()) < 0 or int(self.class_ids.max()) >= NUM_CLASSES):
            raise ValueError(f"class_ids must lie in [0, {NUM_CLASSES - 1}]")
        self.grid_areas = self.grid_masks.sum(1)
        self.grid_context_areas = (self.grid_context != 255).sum(1)
        self.by_class = [torch.nonzero(self.class_ids == c).flatten() for c in range(NUM_CLASSES)]

    def __len__(self) -> int:
        return len(self.class_ids)

    def __repr__(self) -> str:
        return (f"SegmentMemory({len(self):,} segments from {len(self.labels):,} scenes at {self.size}, "
                f"grid {self.grid}, min area {self.min_area} px)")

    @classmethod
    def build(cls, images: torch.Tensor, labels: torch.Tensor, grid, min_area: int | None = None,
              source: dict | None = None, progress: bool = False) -> "SegmentMemory":
        """Cut every scene of ``images`` (S, 3, H, W) uint8 / ``labels`` (S, H, W) into segments.
        S ≥ 1; ``grid`` (gh, gw) divides (H, W); ``min_area`` ≥ 0 pixels (default: the paper's, scaled)."""
        import kornia

        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4 \
                or images.shape[1] != 3:
            got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be uint8 (S, 3, H, W), got {got}")
        if isinstance(labels, np.ndarray):
            labels = torch.from_numpy(labels)
        check_label_map(labels, "labels", ndim=(3,))
        if images.shape[-2:] != labels.shape[-2:] or len(images) != len(labels):
            raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} do not match")
        if len(images) == 0 or images.numel() == 0:
            raise ValueError(f"images must hold at least one scene with H, W ≥ 1, got {tuple(images.shape)}")
        size = tuple(labels.shape[-2:])
        min_area = min_segment_area(size) if min_area is None else check_non_negative_int(min_area, "min_area")
        grid = _check_grid(grid, size)
        if source is not None and not isinstance(source, dict):
            raise ValueError(f"source must be a dict describing the scenes or None, got {type(source).__name__}")
        components = torch.zeros(labels.shape, dtype=torch.int16)
        rows = {k: [] for k in ("class_ids", "scene_ids", "component_ids", "boxes", "areas", "grid_masks",
                                "grid_context", "lab_stats")}
        scenes = range(len(labels))
        if progress:
            from tqdm.auto import tqdm
            scenes = tqdm(scenes, desc="memory", leave=False)
        for s in scenes:
            label = labels[s].numpy()
            comp, classes = connected_segments(label, min_area)
            components[s] = torch.from_numpy(comp)
            masks, context = grid_descriptors(label, comp, len(classes), grid)
            image = images[s].float() / 255
            lab = kornia.color.rgb_to_lab(image[None])[0]
            for k, class_id in enumerate(classes, start=1):
                where = comp == k
                ys, xs = np.nonzero(where)
                rows["class_ids"].append(class_id)
                rows["scene_ids"].append(s)
                rows["component_ids"].append(k)
                rows["boxes"].append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
                rows["areas"].append(int(where.sum()))
                rows["lab_stats"].append(_lab_statistics(image, torch.from_numpy(where), lab))
            rows["grid_masks"].append(torch.from_numpy(masks))
            rows["grid_context"].append(torch.from_numpy(context))
        g = grid[0] * grid[1]
        return cls(size=size, grid=grid, min_area=min_area, images=images, labels=labels.to(torch.uint8),
                   components=components,
                   class_ids=torch.tensor(rows["class_ids"], dtype=torch.int64),
                   scene_ids=torch.tensor(rows["scene_ids"], dtype=torch.int64),
                   component_ids=torch.tensor(rows["component_ids"], dtype=torch.int64),
                   boxes=torch.tensor(np.asarray(rows["boxes"], np.int64).reshape(-1, 4)),
                   areas=torch.tensor(rows["areas"], dtype=torch.int64),
                   grid_masks=torch.cat(rows["grid_masks"]) if rows["grid_masks"] else torch.zeros(0, g, dtype=torch.bool),
                   grid_context=torch.cat(rows["grid_context"]) if rows["grid_context"] else torch.zeros(0, g, dtype=torch.uint8),
                   lab_stats=torch.stack(rows["lab_stats"]) if rows["lab_stats"] else torch.zeros(0, 6),
                   source=dict(source or {}))

    @classmethod
    def from_scenes(cls, size, count: int, grid, seed: int = 0, split: str = "train", start: int = 0,
                    progress: bool = False) -> "SegmentMemory":
        """Render StreetScenes ``start … start + count − 1`` of ``split`` and build their memory
        (``count`` ≥ 1, ``start`` ≥ 0)."""
        size = check_size(size)
        check_positive_int(count, "count"), check_non_negative_int(start, "start"), check_seed(seed)
        check_choice(split, "split", ("train", "test"))
        _check_grid(grid, size)
        ds = StreetScenes(size=size, seed=seed, split=split, length=start + count)
        images = torch.empty(count, 3, *size, dtype=torch.uint8)
        labels = torch.empty(count, *size, dtype=torch.uint8)
        for i in range(count):
            sample = ds[start + i]
            images[i] = (sample["image"] * 255).round().to(torch.uint8)
            labels[i] = sample["label"].to(torch.uint8)
        return cls.build(images, labels, grid, source={"dataset": "StreetScenes", "split": split, "seed": seed,
                                                       "start": start, "count": count}, progress=progress)

    def _check_index(self, index) -> int:
        index = check_int(index, "index")
        if not 0 <= index < len(self):
            raise IndexError(f"segment {index} out of range for a memory of {len(self)}")
        return index

    def mask(self, index: int) -> torch.Tensor:
        """Segment ``index``'s mask (H, W) bool, in its scene's frame."""
        index = self._check_index(index)
        return self.components[int(self.scene_ids[index])] == int(self.component_ids[index])

    def segment(self, index: int) -> dict:
        """Everything stored about segment ``index``: class, scene, box, area,
        ``mask`` (H, W) bool, ``pixels`` (3, H, W) float, zero outside the mask,
        ``context`` (gh, gw) uint8 (255 = not context)."""
        index = self._check_index(index)
        mask = self.mask(index)
        image = self.images[int(self.scene_ids[index])].float() / 255
        return {"class_id": int(self.class_ids[index]), "scene": int(self.scene_ids[index]),
                "box": tuple(int(v) for v in self.boxes[index]), "area": int(self.areas[index]),
                "mask": mask, "pixels": image * mask, "context": self.grid_context[index].reshape(self.grid),
                "grid_mask": self.grid_masks[index].reshape(self.grid), "lab_stats": self.lab_stats[index]}

    _TENSORS = ("images", "labels", "components", "class_ids", "scene_ids", "component_ids", "boxes", "areas",
                "grid_masks", "grid_context", "lab_stats")

    def save(self, path) -> Path:
        """Write the memory atomically (a torch file of its tensors and settings)."""
        path = check_path(path, "path")
        state = {name: getattr(self, name) for name in self._TENSORS}
        state.update(kind="sims-segment-memory", size=list(self.size), grid=list(self.grid),
                     min_area=self.min_area, source=self.source)
        return save_checkpoint(path, state)

    @classmethod
    def load(cls, path) -> "SegmentMemory":
        path = check_path(path, "path")
        if not path.is_file():
            raise FileNotFoundError(f"no segment memory at {path}; build one with SegmentMemory.from_scenes(...)")
        state = load_checkpoint(path)
        missing = set(cls._TENSORS) - set(state)
        if state.get("kind") != "sims-segment-memory" or missing:
            raise CheckpointError(f"{path} is not a SIMS segment memory (missing {sorted(missing)})")
        try:
            return cls(size=tuple(state["size"]), grid=tuple(state["grid"]), min_area=int(state["min_area"]),
                       source=state.get("source", {}), **{name: state[name] for name in cls._TENSORS})
        except (KeyError, TypeError, ValueError) as error:
            raise CheckpointError(f"{path} holds an inconsistent SIMS segment memory: {error}") from error

    def truncated(self, count: int) -> "SegmentMemory":
        """The first ``count`` segments (and all scenes), 1 ≤ ``count`` ≤ len(self): memories of chosen
        sizes for benchmarks."""
        keep = slice(0, check_int(count, "count", minimum=1, maximum=len(self)))
        return SegmentMemory(size=self.size, grid=self.grid, min_area=self.min_area, images=self.images,
                             labels=self.labels, components=self.components,
                             **{k: getattr(self, k)[keep] for k in ("class_ids", "scene_ids", "component_ids",
                                                                    "boxes", "areas", "grid_masks", "grid_context",
                                                                    "lab_stats")}, source=self.source)


# --------------------------------------------------------------------------- retrieval


def check_score(score: str) -> str:
    if not isinstance(score, str) or score not in RETRIEVAL_SCORES:
        raise ValueError(f"unknown retrieval score {score!r}; expected one of {RETRIEVAL_SCORES}")
    return score


def retrieval_scores(memory: SegmentMemory, class_id: int, query_mask: torch.Tensor, query_context: torch.Tensor,
                     score: str = "mask+context", allowed_scenes: torch.Tensor | None = None):
    """Score every same-class segment of ``memory`` against one query, all at once.

    query_mask (gh·gw,) bool, query_context (gh·gw,) uint8. For candidates s:

        IoU(M_q, M_s)      = |M_q ∧ M_s| / |M_q ∨ M_s|
        IoU_ctx(C_q, C_s)  = |{cells context of both with equal labels}| / |{cells context of either}|

    and the score is the first (``"mask"``) or their sum (``"mask+context"``),
    in float64 from integer counts. Returns (candidate indices (n,), scores (n,)).
    ``allowed_scenes`` (S,) bool restricts the candidates to some scenes.
    """
    check_score(score)
    candidates = memory.by_class[int(class_id)]
    if allowed_scenes is not None:
        candidates = candidates[allowed_scenes[memory.scene_ids[candidates]]]
    # only the query's own cells are read: |A ∧ B| from them, |A ∨ B| = |A| + |B| − |A ∧ B|
    mask_cells = torch.nonzero(query_mask).flatten()
    intersection = memory.grid_masks[candidates[:, None], mask_cells[None, :]].sum(1)
    union = memory.grid_areas[candidates] + len(mask_cells) - intersection
    scores = intersection.double() / union.clamp(min=1).double()
    if score == "mask+context":
        context_cells = torch.nonzero(query_context != 255).flatten()
        context = memory.grid_context[candidates[:, None], context_cells[None, :]]
        agree = (context == query_context[context_cells]).sum(1)
        both = (context != 255).sum(1)
        either = memory.grid_context_areas[candidates] + len(context_cells) - both
        scores = scores + agree.double() / either.clamp(min=1).double()
    return candidates, scores


def _check_query(memory: SegmentMemory, class_id: int, query_mask, query_context, score: str = "mask+context",
                 allowed_scenes=None) -> None:
    """memory a SegmentMemory; class_id in [0, NUM_CLASSES); query_mask (gh·gw,) bool and query_context
    (gh·gw,) integer labels (255 = not context) on the memory's grid; allowed_scenes None or (S,) bool."""
    _checks.instance(memory, "memory", SegmentMemory, "a SegmentMemory")
    check_int(class_id, "class_id", minimum=0, maximum=NUM_CLASSES - 1)
    cells = memory.grid[0] * memory.grid[1]
    for name, value, kind in (("query_mask", query_mask, "bool"), ("query_context", query_context, "integer")):
        if not isinstance(value, torch.Tensor) or value.shape != (cells,) or value.is_floating_point() \
                or (value.dtype == torch.bool) != (kind == "bool"):
            got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a {kind} tensor ({cells},) on the memory's {memory.grid} grid, got {got}")
    if bool(((query_context >= NUM_CLASSES) & (query_context != 255)).any()) or bool((query_context < 0).any()):
        raise ValueError(f"query_context must hold class ids in [0, {NUM_CLASSES - 1}] or 255 (not context)")
    if allowed_scenes is not None and (not isinstance(allowed_scenes, torch.Tensor)
                                       or allowed_scenes.dtype != torch.bool
                                       or allowed_scenes.shape != (len(memory.labels),)):
        raise ValueError(f"allowed_scenes must be None or a bool tensor ({len(memory.labels)},), one per scene, got "
                         f"{allowed_scenes.dtype if isinstance(allowed_scenes, torch.Tensor) else type(allowed_scenes).__name__}")


_retrieval_scores = retrieval_scores
retrieval_scores = _checks.checked(_check_query)(retrieval_scores)


def retrieve(memory: SegmentMemory, class_id: int, query_mask, query_context, k: int = 10,
             score: str = "mask+context", allowed_scenes=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-``k`` segments (memory indices, scores), best first; ties go to the lower index.
    ``k`` ≥ 1; the query as :func:`retrieval_scores`."""
    check_positive_int(k, "k")
    candidates, scores = retrieval_scores(memory, class_id, query_mask, query_context, score, allowed_scenes)
    order = torch.argsort(-scores, stable=True)[:k]
    return candidates[order], scores[order]


def retrieve_loop(memory: SegmentMemory, class_id: int, query_mask, query_context, k: int = 10,
                  score: str = "mask+context") -> tuple[list[int], list[float]]:
    """The same top-``k`` by a straightforward loop over candidates (the reference for tests and benchmarks)."""
    check_positive_int(k, "k")
    _check_query(memory, class_id, query_mask, query_context)
    check_score(score)
    query_mask = np.asarray(query_mask, bool)
    query_context = np.asarray(query_context, np.uint8)
    masks, contexts = memory.grid_masks.numpy(), memory.grid_context.numpy()
    classes = memory.class_ids.numpy()
    query_area = int(query_mask.sum())
    scored = []
    for index in range(len(classes)):
        if classes[index] != class_id:
            continue
        intersection = int(np.count_nonzero(masks[index] & query_mask))
        union = int(np.count_nonzero(masks[index])) + query_area - intersection
        value = intersection / max(union, 1)
        if score == "mask+context":
            in_candidate, in_query = contexts[index] != 255, query_context != 255
            agree = int(np.count_nonzero(in_candidate & in_query & (contexts[index] == query_context)))
            either = int(np.count_nonzero(in_candidate | in_query))
            value = value + agree / max(either, 1)
        scored.append((-value, index))
    scored.sort()
    return [index for _, index in scored[:k]], [-value for value, _ in scored[:k]]


@dataclass
class QueryLayout:
    """A layout cut into the components SIMS retrieves for."""

    label: torch.Tensor            # (H, W) int64
    components: torch.Tensor       # (H, W) int16, 0 = too small (a hole) or none
    class_ids: torch.Tensor        # (n,)
    grid_masks: torch.Tensor       # (n, gh·gw) bool
    grid_context: torch.Tensor     # (n, gh·gw) uint8

    def __len__(self) -> int:
        return len(self.class_ids)

    def mask(self, k: int) -> torch.Tensor:
        """Component ``k``'s mask (H, W) bool, 0 ≤ k < len(self)."""
        k = check_int(k, "k", minimum=0)
        if k >= len(self):
            raise IndexError(f"component {k} out of range for a layout of {len(self)} components")
        return self.components == k + 1


def query_layout(label, memory: SegmentMemory) -> QueryLayout:
    """Components and descriptors of a layout ``label`` (H, W) under the memory's settings."""
    _checks.instance(memory, "memory", SegmentMemory, "a SegmentMemory")
    label = check_label_map(label, "label", ndim=(2,))
    if tuple(label.shape) != tuple(memory.size):
        raise ValueError(f"label must be {tuple(memory.size)} to match the memory, got {tuple(label.shape)}")
    array = label.cpu().numpy()
    components, classes = connected_segments(array, memory.min_area)
    masks, context = grid_descriptors(array, components, len(classes), memory.grid)
    return QueryLayout(label.cpu().long(), torch.from_numpy(components), torch.from_numpy(classes),
                       torch.from_numpy(masks), torch.from_numpy(context))


# --------------------------------------------------------------------------- networks


class _PooledEncoder(nn.Module):
    """VGG-like: per stage 2 × [conv → layer norm → LReLU 0.2], then 2×2 average pooling.
    At the end a global average pool → (N, widths[-1]), or with ``flatten`` the
    last map itself → (N, widths[-1]·h·w), which keeps where things are."""

    def __init__(self, in_channels: int, widths, flatten: bool = False):
        super().__init__()
        stages, previous = [], in_channels
        for width in widths:
            stages += [conv_layernorm_block(previous, width), nn.AvgPool2d(2)]
            previous = width
        self.stages, self.flatten = nn.Sequential(*stages), flatten

    def forward(self, x):
        x = self.stages(x)
        return x.flatten(1) if self.flatten else x.mean(dim=(2, 3))


IDENTITY_AFFINE = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def coordinate_channels(x: torch.Tensor) -> torch.Tensor:
    """(N, 2, H, W): the normalised x and y of every pixel, in [−1, 1], for x (N, C, H, W). θ is in
    image coordinates, and a pooled encoder cannot tell where a segment is without them."""
    _checks.tensor(x, "x", shape="(N, C, H, W)", ndim=4, finite=False)
    n, _, height, width = x.shape
    ys = torch.linspace(-1, 1, height, device=x.device, dtype=x.dtype)
    xs = torch.linspace(-1, 1, width, device=x.device, dtype=x.dtype)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y]).expand(n, -1, -1, -1)


def crop_frames(masks: torch.Tensor, margin: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """The square-ish region around the union of each sample's masks (N, k, H, W),
    grown by ``margin`` per side, as (scale (N, 2), centre (N, 2)) in normalised
    coordinates: a crop point u ∈ [−1, 1]² lies at p = scale ⊙ u + centre. masks in [0, 1]; margin ≥ 0."""
    _checks.tensor(masks, "masks", shape="(N, k, H, W)", ndim=4, value_range=(0.0, 1.0), tolerance=0.0)
    check_number(margin, "margin", minimum=0.0)
    return _crop_frames(masks, margin)


def _crop_frames(masks, margin=0.25):
    n, _, height, width = masks.shape
    any_mask = masks.amax(1) > 0.5
    rows, cols = any_mask.any(2), any_mask.any(1)
    index_y = torch.arange(height, device=masks.device)
    index_x = torch.arange(width, device=masks.device)
    big = torch.tensor(10 ** 6, device=masks.device)
    dtype = masks.dtype if masks.is_floating_point() else torch.float32   # the masks' precision (float64 too)
    y0 = torch.where(rows, index_y, big).amin(1).to(dtype)
    y1 = torch.where(rows, index_y, -big).amax(1).to(dtype) + 1
    x0 = torch.where(cols, index_x, big).amin(1).to(dtype)
    x1 = torch.where(cols, index_x, -big).amax(1).to(dtype) + 1
    empty = ~rows.any(1)
    y0, y1 = torch.where(empty, 0.0, y0), torch.where(empty, float(height), y1)
    x0, x1 = torch.where(empty, 0.0, x0), torch.where(empty, float(width), x1)
    half_h = (y1 - y0) / height * (1 + 2 * margin)     # normalised half-extent: (pixels / size) · 2 / 2
    half_w = (x1 - x0) / width * (1 + 2 * margin)
    half = torch.maximum(half_h * height, half_w * width)   # square in pixels
    scale = torch.stack([half / width, half / height], 1).clamp(min=4 / min(height, width))
    centre = torch.stack([(x0 + x1) / width - 1, (y0 + y1) / height - 1], 1)
    return scale, centre


class SegmentTransformer(nn.Module):
    """The spatial transformer of §3.2.

    Inputs in the image frame: the retrieved segment's pixels (N, 3, H, W) and
    mask (N, 1, H, W), the target mask M_q (N, 1, H, W) and the layout (N, C, H, W).
    All are resampled to a ``crop`` × ``crop`` window around the two masks
    (:func:`crop_frames`, plus two coordinate channels), so a small segment
    fills the encoder's view as a large one does. The encoder predicts a local
    affine map θ_l = [L | t] in the window's frame, returned in the image frame:

        θ = [S L S⁻¹ | −S L S⁻¹ c + S t + c],   S = diag(scale), c = the window's centre,

    in ``F.affine_grid``'s convention (output → input coordinates, normalised to
    [−1, 1]). The last layer starts at zero weight and identity bias, so before
    training θ = I and T leaves the segment unchanged.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, widths=(16, 32, 64, 64), crop: int = 32):
        super().__init__()
        check_positive_int(num_classes, "num_classes"), _checks.widths(widths), check_positive_int(crop, "crop")
        self.num_classes, self.crop = num_classes, int(crop)
        if crop % 2 ** len(widths):
            raise ValueError(f"crop {crop} must be divisible by 2^{len(widths)} for {len(widths)} stages")
        self.encoder = _PooledEncoder(3 + 1 + 1 + num_classes + 2, widths, flatten=True)
        self.affine = nn.Linear(widths[-1] * (crop // 2 ** len(widths)) ** 2, 6)
        nn.init.zeros_(self.affine.weight)
        with torch.no_grad():
            self.affine.bias.copy_(torch.tensor(IDENTITY_AFFINE))

    def forward(self, pixels, mask, target_mask, layout) -> torch.Tensor:
        """pixels (N, 3, H, W) in [0, 1], mask and target_mask (N, 1, H, W) in [0, 1], layout (N, C, H, W)
        one-hot, N ≥ 1 → θ (N, 2, 3)."""
        _check_transformer_inputs(self.num_classes, pixels, mask, target_mask, layout)
        return self._forward(pixels, mask, target_mask, layout)

    def _forward(self, pixels, mask, target_mask, layout):
        x = torch.cat([pixels, mask, target_mask, layout], dim=1)
        if x.shape[1] != 5 + self.num_classes:
            raise ValueError(f"expected pixels (N, 3, H, W), masks (N, 1, H, W) and a layout (N, {self.num_classes}, H, W); "
                             f"their channels add up to {x.shape[1]}")
        scale, centre = _crop_frames(torch.cat([mask, target_mask], 1))
        window = torch.zeros(len(x), 2, 3, device=x.device, dtype=x.dtype)
        window[:, 0, 0], window[:, 1, 1] = scale[:, 0], scale[:, 1]
        window[:, :, 2] = centre
        grid = F.affine_grid(window, (len(x), x.shape[1], self.crop, self.crop), align_corners=False)
        crops = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        local = self.affine(self.encoder(torch.cat([crops, coordinate_channels(crops)], 1))).view(-1, 2, 3)
        linear = scale[:, :, None] * local[:, :, :2] / scale[:, None, :]
        offset = -(linear @ centre[:, :, None])[:, :, 0] + scale * local[:, :, 2] + centre
        return torch.cat([linear, offset[:, :, None]], 2)

    @staticmethod
    def warp(pixels: torch.Tensor, mask: torch.Tensor, theta: torch.Tensor):
        """Resample (pixels · mask, mask) through θ (N, 2, 3) finite: pixels (N, 3, H, W), mask (N, 1, H, W)."""
        _checks.images_batch(pixels, "pixels")
        _checks.masks(mask, "mask", like=pixels)
        _checks.tensor(theta, "theta", shape="(N, 2, 3)", ndim=3)
        if theta.shape != (len(mask), 2, 3):
            raise ValueError(f"theta must be ({len(mask)}, 2, 3), one affine map per mask, got {tuple(theta.shape)}")
        return SegmentTransformer._warp(pixels, mask, theta)

    @staticmethod
    def _warp(pixels, mask, theta):
        grid = F.affine_grid(theta, (len(mask), 4, *mask.shape[-2:]), align_corners=False)
        warped = F.grid_sample(torch.cat([pixels * mask, mask], 1), grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        return warped[:, :3], warped[:, 3:]

    def align(self, pixels, mask, target_mask, layout):
        """(warped pixels, warped mask, θ); inputs as :meth:`forward`."""
        theta = self(pixels, mask, target_mask, layout)
        warped_pixels, warped_mask = self._warp(pixels, mask, theta)
        return warped_pixels, warped_mask, theta


def _check_transformer_inputs(num_classes, pixels, mask, target_mask, layout) -> None:
    _checks.images_batch(pixels, "pixels")
    _checks.masks(mask, "mask", like=pixels)
    _checks.masks(target_mask, "target_mask", like=pixels)
    _checks.layout(layout, num_classes)
    _checks.same_batch("layout", layout, "pixels", pixels)


MASK_LOSS_SCALES = (1, 4, 8)


def transformation_loss(warped_pixels, warped_mask, photo, target_mask) -> tuple[torch.Tensor, dict]:
    """Masked L1 to the photo inside M_q (the paper's loss) + L1 between the masks (ours),
    per sample, each normalised by the target's area, then averaged over the batch:

        ℒ_T = Σ M_q·|T(s) − I| / (3 Σ M_q) + Σ_{s ∈ {1, 4, 8}} Σ |↓s T(m_s) − ↓s M_q| / Σ ↓s M_q,

    where ↓s is s×s average pooling: the coarse scales still overlap when the
    segments are further apart than their own size, so the gradient reaches them.

    warped_pixels, photo (N, 3, H, W) and warped_mask, target_mask (N, 1, H, W), finite, N ≥ 1,
    H and W ≥ 8 (the coarsest scale).
    """
    for name, value, channels in (("warped_pixels", warped_pixels, 3), ("warped_mask", warped_mask, 1),
                                  ("photo", photo, 3), ("target_mask", target_mask, 1)):
        _checks.tensor(value, name, shape=f"(N, {channels}, H, W)", ndim=4, channels=channels)
        _checks.same_batch(name, value, "target_mask", target_mask) if name != "target_mask" else None
    if min(target_mask.shape[-2:]) < max(MASK_LOSS_SCALES):
        raise ValueError(f"target_mask H and W must be at least {max(MASK_LOSS_SCALES)} (the coarsest mask "
                         f"scale), got {tuple(target_mask.shape[-2:])}")
    return _transformation_loss(warped_pixels, warped_mask, photo, target_mask)


def _transformation_loss(warped_pixels, warped_mask, photo, target_mask):
    area = target_mask.flatten(1).sum(1).clamp(min=1)
    photometric = (target_mask * (warped_pixels - photo).abs()).flatten(1).sum(1) / (3 * area)
    shape = 0
    for scale in MASK_LOSS_SCALES:
        a = F.avg_pool2d(warped_mask, scale) if scale > 1 else warped_mask
        b = F.avg_pool2d(target_mask, scale) if scale > 1 else target_mask
        shape = shape + (a - b).abs().flatten(1).sum(1) / b.flatten(1).sum(1).clamp(min=1e-6)
    shape = shape / len(MASK_LOSS_SCALES)
    logs = {"photometric": float(photometric.detach().mean()), "mask": float(shape.detach().mean())}
    return (photometric + shape).mean(), logs


def random_affine(masks: torch.Tensor, rng: np.random.Generator, scale: float = 0.15,
                  rotation_degrees: float = 5.0, shift: float = 0.15) -> torch.Tensor:
    """A random affine map θ (N, 2, 3) per mask (N, 1, H, W), about the mask's centre:
    scale in 1 ± ``scale``, rotation in ±``rotation_degrees``, and a shift of up to
    ``shift`` × the mask's box size in each direction. ``rng``: a NumPy Generator; the ranges ≥ 0."""
    _checks.tensor(masks, "masks", shape="(N, 1, H, W)", ndim=4, channels=1, finite=False)
    _checks.instance(rng, "rng", np.random.Generator, "a numpy.random.Generator")
    for name, value in (("scale", scale), ("rotation_degrees", rotation_degrees), ("shift", shift)):
        check_number(value, name, minimum=0.0)
    n, _, height, width = masks.shape
    thetas = []
    for k in range(n):
        ys, xs = torch.nonzero(masks[k, 0] > 0.5, as_tuple=True)
        if len(ys) == 0:
            thetas.append(torch.tensor(IDENTITY_AFFINE).view(2, 3))
            continue
        # centre and box size in normalised coordinates ([−1, 1], align_corners=False)
        cx = (float(xs.min() + xs.max() + 1) / width) - 1
        cy = (float(ys.min() + ys.max() + 1) / height) - 1
        bw, bh = 2 * float(xs.max() + 1 - xs.min()) / width, 2 * float(ys.max() + 1 - ys.min()) / height
        s = 1 + rng.uniform(-scale, scale, 2)
        angle = np.deg2rad(rng.uniform(-rotation_degrees, rotation_degrees))
        # a rotation and scaling in pixels, D⁻¹ R S D in normalised coordinates (D = diag(W/2, H/2))
        linear = np.array([[s[0] * np.cos(angle), -s[1] * np.sin(angle) * height / width],
                           [s[0] * np.sin(angle) * width / height, s[1] * np.cos(angle)]])
        offset = rng.uniform(-shift, shift, 2) * np.array([bw, bh])
        centre = np.array([cx, cy])
        # output point p samples input A (p − c) + c + t
        thetas.append(torch.from_numpy(np.concatenate([linear, (centre - linear @ centre + offset)[:, None]], 1)))
    return torch.stack(thetas).float()


def cut_side(mask: torch.Tensor, rng: np.random.Generator, most: float = 0.3) -> torch.Tensor:
    """Cut up to ``most`` (in [0, 1]) of a mask's box off one random side: (N, 1, H, W) → same."""
    _checks.tensor(mask, "mask", shape="(N, 1, H, W)", ndim=4, channels=1, finite=False)
    _checks.instance(rng, "rng", np.random.Generator, "a numpy.random.Generator")
    check_probability(most, "most")
    out = mask.clone()
    for n in range(len(mask)):
        ys, xs = torch.nonzero(mask[n, 0] > 0.5, as_tuple=True)
        if len(ys) == 0:
            continue
        y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
        side, fraction = int(rng.integers(4)), rng.uniform(0, most)
        if side == 0:
            out[n, :, :, :x0 + int(fraction * (x1 - x0))] = 0
        elif side == 1:
            out[n, :, :, x1 - int(fraction * (x1 - x0)):] = 0
        elif side == 2:
            out[n, :, :y0 + int(fraction * (y1 - y0))] = 0
        else:
            out[n, :, y1 - int(fraction * (y1 - y0)):] = 0
    return out


def misaligned_batch(memory: SegmentMemory, step: int, batch_size: int, seed: int = 0) -> dict:
    """Training pairs for T: a real segment (the target) and a copy of it under a
    random affine map with one side cut off (the 'retrieved' segment). step ≥ 0, batch_size ≥ 1,
    and a memory with at least one segment."""
    _checks.instance(memory, "memory", SegmentMemory, "a SegmentMemory")
    check_non_negative_int(step, "step"), check_positive_int(batch_size, "batch_size"), check_seed(seed)
    if len(memory) == 0:
        raise ValueError("memory must hold at least one segment to draw training pairs from")
    rng = np.random.default_rng([int(seed), int(step), 7])
    index = rng.integers(0, len(memory), batch_size)
    masks = torch.stack([memory.mask(int(i)) for i in index]).float()[:, None]
    photos = torch.stack([memory.images[int(memory.scene_ids[i])] for i in index]).float() / 255
    layouts = one_hot_layout(torch.stack([memory.labels[int(memory.scene_ids[i])] for i in index]).long())
    pixels, moved = SegmentTransformer._warp(photos, masks, random_affine(masks, rng))
    moved = cut_side((moved > 0.5).float(), rng)
    return {"pixels": pixels * moved, "mask": moved, "target_mask": masks, "photo": photos, "layout": layouts}


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks (N, …) → (N,); a and b of one shape, N ≥ 1."""
    for name, value in (("a", a), ("b", b)):
        _checks.tensor(value, name, shape="(N, …)", floating=False, finite=False)
        if value.dim() < 2:
            raise ValueError(f"{name} must be masks (N, …) with at least 2 dimensions, got {tuple(value.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.flatten(1) > 0.5, b.flatten(1) > 0.5
    return (a & b).sum(1).double() / (a | b).sum(1).clamp(min=1).double()


class OrderingNetwork(nn.Module):
    """Which of two objects is in front (§3.3).

    f(L, M_a, M_b) is a VGG-like classifier on (N, C + 2, H, W) at ½ resolution.
    The logit that a is in front of b is f(L, M_a, M_b) − f(L, M_b, M_a), so
    swapping the two always flips the answer: P(a ≻ b) = 1 − P(b ≻ a).
    """

    def __init__(self, num_classes: int = NUM_CLASSES, widths=(16, 32, 64, 64)):
        super().__init__()
        self.num_classes = check_positive_int(num_classes, "num_classes")
        _checks.widths(widths)
        self.encoder = _PooledEncoder(num_classes + 2, widths)
        self.head = nn.Linear(widths[-1], 1)

    def _score(self, layout, first, second):
        x = F.interpolate(torch.cat([layout, first, second], 1), scale_factor=0.5, mode="area")
        return self.head(self.encoder(x)).flatten()

    def forward(self, layout, mask_a, mask_b) -> torch.Tensor:
        """Logit (N,) that object a is in front of object b: layout (N, C, H, W) one-hot, masks
        (N, 1, H, W) in [0, 1], N ≥ 1, H and W at least 2^(stages + 1)."""
        _checks.layout(layout, None)
        for name, value in (("mask_a", mask_a), ("mask_b", mask_b)):
            _checks.masks(value, name, channels=None, like=layout)
        smallest = 2 ** (len(self.encoder.stages) // 2 + 1)
        if min(layout.shape[-2:]) < smallest:
            raise ValueError(f"layout H and W must be at least {smallest} for {len(self.encoder.stages) // 2} "
                             f"pooling stages at ½ resolution, got {tuple(layout.shape[-2:])}")
        if layout.shape[1] != self.num_classes or mask_a.shape != mask_b.shape or mask_a.shape[1] != 1:
            raise ValueError(f"expected a layout (N, {self.num_classes}, H, W) and masks (N, 1, H, W); got "
                             f"{tuple(layout.shape)}, {tuple(mask_a.shape)}, {tuple(mask_b.shape)}")
        return self._score(layout, mask_a, mask_b) - self._score(layout, mask_b, mask_a)


@dataclass
class OrderingPairs:
    """Pairs of neighbouring objects with their true depth order.

    ``labels`` (S, H, W) uint8 and ``instances`` (S, H, W) int16 per scene;
    per pair: ``scene``, ids ``a`` and ``b``, and ``a_in_front`` (a's depth is smaller).
    """

    labels: torch.Tensor
    instances: torch.Tensor
    scene: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    a_in_front: torch.Tensor

    def __len__(self) -> int:
        return len(self.scene)

    def batch(self, index) -> dict:
        """The pairs ``index`` (integers in [0, len(self))): {layout, mask_a, mask_b, a_in_front}."""
        index = torch.as_tensor(index)
        if index.is_floating_point() or index.dtype == torch.bool or index.numel() == 0:
            raise ValueError(f"index must be a non-empty sequence of pair indices (integers), got {index.dtype} "
                             f"{tuple(index.shape)}")
        if int(index.min()) < 0 or int(index.max()) >= len(self):
            raise ValueError(f"index must lie in [0, {len(self) - 1}] for {len(self)} pairs, got "
                             f"[{int(index.min())}, {int(index.max())}]")
        scene = self.scene[index]
        instances = self.instances[scene]
        return {"layout": one_hot_layout(self.labels[scene].long()),
                "mask_a": (instances == self.a[index, None, None]).float()[:, None],
                "mask_b": (instances == self.b[index, None, None]).float()[:, None],
                "a_in_front": self.a_in_front[index].float()}


def ordering_pairs(size, count: int, split: str = "train", seed: int = 0, near: int = 2) -> OrderingPairs:
    """All pairs of objects (cars, persons) in scenes 0 … ``count`` − 1 whose masks,
    grown by ``near`` pixels, touch: the pairs whose order matters when pasting.
    Half of them, chosen at random, list the nearer object second. count ≥ 1, near ≥ 0."""
    size = check_size(size)
    check_positive_int(count, "count"), check_choice(split, "split", ("train", "test")), check_seed(seed)
    check_non_negative_int(near, "near")
    ds = StreetScenes(size=size, seed=seed, split=split, length=count)
    rng = np.random.default_rng([seed, 11])
    labels = torch.empty(count, *size, dtype=torch.uint8)
    instances = torch.empty(count, *size, dtype=torch.int16)
    rows = []
    structure = np.ones((2 * near + 1, 2 * near + 1), bool)
    for s in range(count):
        sample = ds[s]
        labels[s] = sample["label"].to(torch.uint8)
        inst = sample["instances"].numpy()
        instances[s] = torch.from_numpy(inst.astype(np.int16))
        objects = sample["objects"]
        grown = {o["id"]: ndimage.binary_dilation(inst == o["id"], structure) for o in objects}
        for i, first in enumerate(objects):
            for second in objects[i + 1:]:
                if not (grown[first["id"]] & (inst == second["id"])).any():
                    continue
                front, back = (first, second) if first["depth"] < second["depth"] else (second, first)
                if rng.random() < 0.5:
                    rows.append((s, front["id"], back["id"], 1))
                else:
                    rows.append((s, back["id"], front["id"], 0))
    table = torch.tensor(rows, dtype=torch.int64).reshape(-1, 4)
    return OrderingPairs(labels, instances, table[:, 0], table[:, 1], table[:, 2], table[:, 3])


def ordering_accuracy(network: OrderingNetwork, pairs: OrderingPairs, batch_size: int = 64, device="cpu") -> dict:
    """Accuracy of P(a ≻ b) > ½ on ``pairs``; also the logits and which pairs were wrong (NaN for no pairs)."""
    _checks.module(network, "network", OrderingNetwork), _checks.instance(pairs, "pairs", OrderingPairs)
    check_positive_int(batch_size, "batch_size"), check_device(device)
    logits = []
    network.eval()
    with torch.no_grad():
        for i in range(0, len(pairs), batch_size):
            batch = pairs.batch(torch.arange(i, min(i + batch_size, len(pairs))))
            logits.append(network(batch["layout"].to(device), batch["mask_a"].to(device),
                                  batch["mask_b"].to(device)).cpu())
    logits = torch.cat(logits) if logits else torch.zeros(0)
    correct = (logits > 0).long() == pairs.a_in_front
    return {"accuracy": float(correct.double().mean()) if len(correct) else float("nan"), "pairs": len(correct),
            "logits": logits, "wrong": torch.nonzero(~correct).flatten()}


def bottom_edge_rule(pairs: OrderingPairs) -> dict:
    """The one-line baseline: on a flat street seen from eye height, the object whose
    lowest pixel is lower in the image stands nearer. Accuracy on ``pairs`` (ties count as wrong)."""
    _checks.instance(pairs, "pairs", OrderingPairs)
    rows = torch.arange(pairs.labels.shape[-2])[:, None]
    correct = []
    for scene, a, b, truth in zip(pairs.scene.tolist(), pairs.a.tolist(), pairs.b.tolist(), pairs.a_in_front.tolist()):
        instances = pairs.instances[scene]
        bottom_a = int((rows * (instances == a)).max())
        bottom_b = int((rows * (instances == b)).max())
        correct.append(bottom_a != bottom_b and (bottom_a > bottom_b) == bool(truth))
    return {"accuracy": float(np.mean(correct)) if correct else float("nan"), "pairs": len(correct)}


class SynthesisNetwork(nn.Module):
    """The encoder–decoder G of §3.4 (synthesis_256_512.py's design, narrower).

    Input: layout (N, C, H, W), canvas (N, 3, H, W), filled mask (N, 1, H, W).
    Encoder: stages i = 0 … S−1 of 2 × [3×3 conv → layer norm → LReLU 0.2],
    3×3 average pooling with stride 2 between stages. Decoder: from the
    bottom up, each stage upsamples bilinearly, concatenates the encoder's
    skip features and the layout resized to its scale, then 2 convs. Two
    1×1 heads: the image, (x + 1)/2 (N, 3, H, W), and label logits (N, C, H, W).
    """

    def __init__(self, size=(64, 128), widths=(32, 64, 96, 128, 128), num_classes: int = NUM_CLASSES):
        super().__init__()
        _checks.widths(widths), check_positive_int(num_classes, "num_classes")
        self.size, self.num_classes = check_size(size), num_classes
        factor = 2 ** (len(widths) - 1)
        if self.size[0] % factor or self.size[1] % factor:
            raise ValueError(f"{len(widths)} stages need H and W divisible by {factor}, got {self.size}")
        self.encoder = nn.ModuleList()
        previous = num_classes + 4
        for width in widths:
            self.encoder.append(conv_layernorm_block(previous, width))
            previous = width
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.decoder = nn.ModuleList()
        for i in range(len(widths) - 2, -1, -1):
            self.decoder.append(conv_layernorm_block(previous + widths[i] + num_classes, widths[i]))
            previous = widths[i]
        self.to_image = nn.Conv2d(previous, 3, 1)
        self.to_label = nn.Conv2d(previous, num_classes, 1)

    def forward(self, layout, canvas, mask):
        check_layout_input(layout, self.num_classes, self.size)
        if canvas.shape[-3:] != (3, *self.size) or mask.shape[-3:] != (1, *self.size):
            raise ValueError(f"canvas must be (N, 3, {self.size[0]}, {self.size[1]}) and mask (N, 1, …), got "
                             f"{tuple(canvas.shape)} and {tuple(mask.shape)}")
        x = torch.cat([layout, canvas * mask, mask], 1)
        skips = []
        for i, stage in enumerate(self.encoder):
            if i:
                x = self.pool(x)
            x = stage(x)
            skips.append(x)
        for stage, skip in zip(self.decoder, reversed(skips[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([x, skip, F.interpolate(layout, size=skip.shape[-2:], mode="area")], 1))
        return (self.to_image(x) + 1) / 2, self.to_label(x)

    def sample(self, layout, canvas, mask) -> torch.Tensor:
        """(N, 1, 3, H, W) in [0, 1]: the evaluation interface (one output per layout)."""
        return self(layout, canvas, mask)[0].clamp(0, 1)[:, None]


def _check_synthesis_inputs(self, layout, canvas, mask) -> None:
    """layout (N, C, H, W) one-hot at the network's size, canvas (N, 3, H, W) in [0, 1] and mask
    (N, 1, H, W) in [0, 1], finite, N ≥ 1 and the same N."""
    _checks.layout(layout, self.num_classes, self.size)
    _checks.images_batch(canvas, "canvas")
    _checks.tensor(mask, "mask", shape="(N, 1, H, W)", ndim=4, value_range=(0.0, 1.0), tolerance=0.0)
    for name, value in (("canvas", canvas), ("mask", mask)):
        _checks.same_batch(name, value, "layout", layout, spatial=False)


# the chapter displays forward: its input checks are attached here, outside its source
SynthesisNetwork.forward = _checks.checked(_check_synthesis_inputs)(SynthesisNetwork.forward)


class SIMSTrainer(nn.Module):
    """G and its loss in one module (the loss' layer weights are buffers, so ``fit`` checkpoints them)."""

    def __init__(self, network: SynthesisNetwork, loss: FeatureMatchingLoss,
                 cross_entropy_weight: float = CROSS_ENTROPY_WEIGHT):
        super().__init__()
        _checks.module(network, "network", SynthesisNetwork), _checks.module(loss, "loss", FeatureMatchingLoss)
        check_number(cross_entropy_weight, "cross_entropy_weight", minimum=0.0)
        self.network, self.criterion, self.cross_entropy_weight = network, loss, cross_entropy_weight

    def forward(self, batch: dict):
        """batch {layout, image (N, 3, H, W), label (N, H, W) class ids, canvas, mask} → (loss, logs)."""
        _checks.batch(batch, ("layout", "image", "label", "canvas", "mask"))
        label = check_label_map(batch["label"], "label", num_classes=self.network.num_classes, ndim=(3,))
        if isinstance(batch["layout"], torch.Tensor) and label.shape != batch["layout"].shape[:1] + batch["layout"].shape[2:]:
            raise ValueError(f"label {tuple(label.shape)} must be the layout's (N, H, W) "
                             f"{tuple(batch['layout'].shape[:1] + batch['layout'].shape[2:])}")
        image, logits = self.network(batch["layout"], batch["canvas"], batch["mask"])
        matching, logs = self.criterion(image[:, None], batch["image"], batch["layout"])
        cross_entropy = F.cross_entropy(logits, batch["label"])
        logs.update(feature_matching=float(matching.detach()), cross_entropy=float(cross_entropy.detach()))
        return matching + self.cross_entropy_weight * cross_entropy, logs


# --------------------------------------------------------------------------- canvases


def reinhard_transfer_lab(lab: torch.Tensor, source_stats: torch.Tensor, target_stats: torch.Tensor) -> torch.Tensor:
    """Reinhard et al. (2001) in Lab: per channel, x' = (x − μ_src)/σ_src · σ_tgt + μ_tgt.

    lab (3, n) values; stats (6,) as :func:`lab_statistics`. The result has the
    target's mean and standard deviation exactly (σ_src = 0 is treated as 1).
    """
    _checks.tensor(lab, "lab", shape="(3, n)", ndim=2, channels=None)
    if lab.shape[0] != 3:
        raise ValueError(f"lab must be (3, n) Lab values, got {tuple(lab.shape)}")
    for name, stats in (("source_stats", source_stats), ("target_stats", target_stats)):
        _checks.tensor(stats, name, shape="(6,)", ndim=1)
        if stats.shape != (6,):
            raise ValueError(f"{name} must be (6,): μ_L, μ_a, μ_b, σ_L, σ_a, σ_b, got {tuple(stats.shape)}")
    mean_s, std_s = source_stats[:3, None], source_stats[3:, None].clamp(min=1e-6)
    mean_t, std_t = target_stats[:3, None], target_stats[3:, None]
    return (lab - mean_s) / std_s * std_t + mean_t


def colour_transfer(image: torch.Tensor, mask: torch.Tensor, target_stats: torch.Tensor) -> torch.Tensor:
    """Recolour the pixels of ``image`` (3, H, W) inside ``mask`` (H, W) to the Lab
    statistics ``target_stats`` (6,) (see :func:`lab_statistics`); returns a new image in [0, 1]."""
    import kornia

    _checks.images_batch(image, "image", ndim=(3,))
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != image.shape[-2:]:
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool (H, W) map of the image's size {tuple(image.shape[-2:])}, got {got}")
    _checks.tensor(target_stats, "target_stats", shape="(6,)", ndim=1)
    if target_stats.shape != (6,):
        raise ValueError(f"target_stats must be (6,): μ_L, μ_a, μ_b, σ_L, σ_a, σ_b, got {tuple(target_stats.shape)}")
    return _colour_transfer(image, mask, target_stats)


def _colour_transfer(image, mask, target_stats):
    import kornia

    lab = kornia.color.rgb_to_lab(image[None].float())[0]
    inside = lab[:, mask]
    if inside.shape[1] == 0:
        return image.clone()
    stats = torch.cat([inside.mean(1), inside.std(1, unbiased=False)])
    lab[:, mask] = reinhard_transfer_lab(inside, stats, target_stats.to(lab))
    recoloured = kornia.color.lab_to_rgb(lab[None])[0].clamp(0, 1)
    return torch.where(mask, recoloured, image)   # outside the mask: exactly the input


def label_boundaries(label: torch.Tensor) -> torch.Tensor:
    """(H, W) bool: pixels with a 4-neighbour of another class, for an (H, W) label map."""
    if not isinstance(label, torch.Tensor) or label.dim() != 2 or label.is_floating_point():
        got = f"{label.dtype} {tuple(label.shape)}" if isinstance(label, torch.Tensor) else type(label).__name__
        raise ValueError(f"label must be an (H, W) integer tensor, got {got}")
    edge = torch.zeros(label.shape, dtype=torch.bool)
    horizontal = label[:, 1:] != label[:, :-1]
    vertical = label[1:] != label[:-1]
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    edge[1:] |= vertical
    edge[:-1] |= vertical
    return edge


def dilate(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Square dilation of a bool mask (…, H, W) by ``radius`` ≥ 0 pixels."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.dim() < 2:
        got = f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask must be a bool tensor (…, H, W), got {got}")
    check_non_negative_int(radius, "radius")
    if radius <= 0:
        return mask.clone()
    shape = mask.shape
    x = mask.reshape(-1, 1, *shape[-2:]).float()
    return (F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius) > 0).reshape(shape)


def elision_mask(label: torch.Tensor, rng: np.random.Generator, band: float = ELISION_BAND,
                 fraction: float = ELISION_FRACTION) -> torch.Tensor:
    """The pixels boundary elision removes: the label boundaries grown to a band of
    side ⌈band·H⌉, cut into blocks of that side; a random ``fraction`` of the blocks is
    removed. Returns the removed pixels, (H, W) bool. ``band`` in (0, 1], ``fraction`` in [0, 1]."""
    label_boundaries(label)   # checks the label map
    _checks.instance(rng, "rng", np.random.Generator, "a numpy.random.Generator")
    check_number(band, "band", minimum=0.0, maximum=1.0, strict_minimum=True), check_probability(fraction, "fraction")
    height, width = label.shape
    side = max(1, int(np.ceil(band * height)))
    region = dilate(label_boundaries(label), side // 2)
    blocks = torch.from_numpy(rng.random((-(-height // side), -(-width // side))) < fraction)
    chosen = blocks.repeat_interleave(side, 0).repeat_interleave(side, 1)[:height, :width]
    return region & chosen


@dataclass
class SimulatedCanvases:
    """The synthesis network's training inputs (§3.4), precomputed per training scene.

    For every segment of every training scene of ``memory`` (the memory of the
    training set itself), the best same-class segment by mask IoU among those
    of :data:`RETRIEVAL_POOL_SCENES` other random scenes: its mask ∩ the
    segment's mask is the *stencil* of the scene's own pixels, and its Lab
    statistics are the target of colour transfer. ``stencils`` (S, H, W) bool;
    ``target_stats`` (n segments, 6) and ``retrieved`` (n segments,), aligned
    with ``memory``'s segments.
    """

    memory: SegmentMemory
    stencils: torch.Tensor
    target_stats: torch.Tensor
    retrieved: torch.Tensor   # (n segments,) the memory index retrieved for each, −1 for none

    @classmethod
    def build(cls, memory: SegmentMemory, seed: int = 0, pool: int = RETRIEVAL_POOL_SCENES,
              progress: bool = False, only_scenes=None) -> "SimulatedCanvases":
        """``only_scenes``: stencil just these scenes (for a quick look; the others stay empty), scene
        indices of the memory. ``pool`` ≥ 1 scenes to retrieve from."""
        _checks.instance(memory, "memory", SegmentMemory, "a SegmentMemory")
        check_seed(seed), check_positive_int(pool, "pool")
        if only_scenes is not None:
            if isinstance(only_scenes, (str, bytes)) or not hasattr(only_scenes, "__iter__"):
                raise ValueError(f"only_scenes must be a list of scene indices or None, got {only_scenes!r}")
            only_scenes = list(only_scenes)
            for scene in only_scenes:
                check_int(scene, "only_scenes[…]", minimum=0, maximum=len(memory.labels) - 1)
        scenes = len(memory.labels)
        stencils = torch.zeros(memory.labels.shape, dtype=torch.bool)
        stats = memory.lab_stats.clone()
        retrieved = torch.full((len(memory),), -1, dtype=torch.int64)
        indices = range(len(memory))
        if only_scenes is not None:
            wanted = torch.zeros(scenes, dtype=torch.bool)
            wanted[torch.as_tensor(list(only_scenes), dtype=torch.int64)] = True
            indices = torch.nonzero(wanted[memory.scene_ids]).flatten().tolist()
        if progress:
            from tqdm.auto import tqdm
            indices = tqdm(indices, desc="stencils", leave=False)
        allowed, current = None, -1
        for n in indices:
            scene = int(memory.scene_ids[n])
            if scene != current:
                current = scene
                rng = np.random.default_rng([seed, 23, scene])   # a scene's pool: the same whichever scenes are built
                others = rng.choice(scenes - 1, size=min(pool, scenes - 1), replace=False) if scenes > 1 else []
                allowed = torch.zeros(scenes, dtype=torch.bool)
                allowed[torch.as_tensor(np.asarray(others, np.int64) + (np.asarray(others) >= scene))] = True
            found, _ = retrieve(memory, int(memory.class_ids[n]), memory.grid_masks[n], memory.grid_context[n],
                                k=1, score="mask", allowed_scenes=allowed)
            own = memory.mask(n)
            if len(found):
                stencils[scene] |= own & memory.mask(int(found[0]))
                stats[n] = memory.lab_stats[int(found[0])]
                retrieved[n] = int(found[0])
            else:   # no segment of that class among the pool: keep the whole segment, no colour change
                stencils[scene] |= own
        return cls(memory, stencils, stats, retrieved)

    def canvas(self, scene: int, rng: np.random.Generator, simulations=SIMULATIONS,
               colour_probability: float = COLOUR_TRANSFER_PROBABILITY) -> tuple[torch.Tensor, torch.Tensor]:
        """One simulated (canvas (3, H, W), filled mask (H, W) bool) of training scene ``scene``.
        ``simulations``: a list of some of :data:`SIMULATIONS`; ``colour_probability`` in [0, 1]."""
        check_int(scene, "scene", minimum=0, maximum=len(self.memory.labels) - 1)
        _checks.instance(rng, "rng", np.random.Generator, "a numpy.random.Generator")
        _checks.names(simulations, "simulations"), check_probability(colour_probability, "colour_probability")
        unknown = set(simulations) - set(SIMULATIONS)
        if unknown:
            raise ValueError(f"unknown simulations {sorted(unknown)}; expected a subset of {SIMULATIONS}")
        memory = self.memory
        image = memory.images[scene].float() / 255
        components = memory.components[scene]
        filled = self.stencils[scene].clone() if "stenciling" in simulations else components > 0
        canvas = image.clone()
        if "colour_transfer" in simulations:
            for n in torch.nonzero(memory.scene_ids == scene).flatten().tolist():
                if rng.random() < colour_probability:
                    where = components == int(memory.component_ids[n])
                    canvas = colour_transfer(canvas, where, self.target_stats[n])
        if "elision" in simulations:
            filled &= ~elision_mask(memory.labels[scene].long(), rng)
        return canvas * filled, filled

    def batch(self, step: int, batch_size: int, seed: int = 0, simulations=SIMULATIONS) -> dict:
        """Training batch of step ``step`` (a function of seed and step): {layout, image, label,
        canvas (B, 3, H, W), mask (B, 1, H, W)}, with random horizontal flips. step ≥ 0, batch_size ≥ 1."""
        check_non_negative_int(step, "step"), check_positive_int(batch_size, "batch_size"), check_seed(seed)
        _checks.names(simulations, "simulations")
        unknown = set(simulations) - set(SIMULATIONS)
        if unknown:
            raise ValueError(f"unknown simulations {sorted(unknown)}; expected a subset of {SIMULATIONS}")
        rng = np.random.default_rng([int(seed), int(step), 5])
        scenes = rng.integers(0, len(self.memory.labels), batch_size)
        canvases, masks = zip(*(self.canvas(int(s), rng, simulations) for s in scenes))
        index = torch.from_numpy(scenes)
        image = self.memory.images[index].float() / 255
        label = self.memory.labels[index].long()
        canvas, mask = torch.stack(canvases), torch.stack(masks).float()[:, None]
        flip = torch.from_numpy(rng.random(batch_size) < 0.5)
        image, canvas, mask = (torch.where(flip[:, None, None, None], t.flip(-1), t) for t in (image, canvas, mask))
        label = torch.where(flip[:, None, None], label.flip(-1), label)
        return {"layout": one_hot_layout(label), "image": image, "label": label, "canvas": canvas, "mask": mask}


@dataclass
class Canvas:
    """A test canvas: ``canvas`` (3, H, W), ``filled`` (H, W) bool, and per query
    component the retrieved segment, its score, θ and the mask IoU with the
    component before and after alignment; ``order`` lists the components in
    paste order (back to front)."""

    canvas: torch.Tensor
    filled: torch.Tensor
    query: QueryLayout
    retrieved: list
    scores: list
    theta: torch.Tensor
    iou_before: torch.Tensor
    iou_after: torch.Tensor
    order: list


def paste_order(query: QueryLayout, regions: torch.Tensor, orderer: OrderingNetwork | None,
                rng: np.random.Generator) -> list[int]:
    """Stuff components first, largest first; then objects from back to front.

    With an ordering network, object i's rank is the mean of P(i ≻ j) over the
    objects j whose paste regions overlap i's (so an object with many
    neighbours does not outrank one it is behind); objects that overlap
    nothing keep rank ½. Without one, the objects come in a random order.

    ``regions`` (n, H, W) bool: where each of the n components is pasted.
    """
    _checks.instance(query, "query", QueryLayout)
    _checks.module(orderer, "orderer", OrderingNetwork, allow_none=True)
    _checks.instance(rng, "rng", np.random.Generator, "a numpy.random.Generator")
    if not isinstance(regions, torch.Tensor) or regions.dtype != torch.bool \
            or regions.shape != (len(query), *query.label.shape):
        got = f"{regions.dtype} {tuple(regions.shape)}" if isinstance(regions, torch.Tensor) else type(regions).__name__
        raise ValueError(f"regions must be bool ({len(query)}, {query.label.shape[0]}, {query.label.shape[1]}), one "
                         f"map per component, got {got}")
    areas = [int(query.mask(k).sum()) for k in range(len(query))]
    stuff = [k for k in range(len(query)) if int(query.class_ids[k]) not in INSTANCE_CLASSES]
    things = [k for k in range(len(query)) if int(query.class_ids[k]) in INSTANCE_CLASSES]
    stuff.sort(key=lambda k: -areas[k])
    if orderer is None or len(things) < 2:
        return stuff + [things[i] for i in rng.permutation(len(things))]
    pairs = [(i, j) for i in things for j in things if i < j and bool((regions[i] & regions[j]).any())]
    front = {k: 0.0 for k in things}
    compared = {k: 0 for k in things}
    if pairs:
        layout = one_hot_layout(query.label[None]).expand(len(pairs), -1, -1, -1)
        device = next(orderer.parameters()).device
        a = torch.stack([query.mask(i) for i, _ in pairs]).float()[:, None]
        b = torch.stack([query.mask(j) for _, j in pairs]).float()[:, None]
        with torch.no_grad():
            p = torch.sigmoid(orderer(layout.to(device), a.to(device), b.to(device))).cpu()
        for (i, j), prob in zip(pairs, p.tolist()):
            front[i] += prob
            front[j] += 1 - prob
            compared[i] += 1
            compared[j] += 1
    rank = {k: front[k] / compared[k] if compared[k] else 0.5 for k in things}
    return stuff + sorted(things, key=lambda k: (rank[k], k))


def retrieve_for_layout(label, memory: SegmentMemory, score: str = "mask+context", rank: int = 0):
    """(query layout, retrieved memory index per component or None, its score): the search
    half of :func:`build_canvas`. ``rank``-th best per component (``rank`` ≥ 0), the last one when fewer."""
    check_score(score), check_non_negative_int(rank, "rank")
    query = query_layout(label, memory)
    retrieved, scores = [], []
    for k in range(len(query)):
        found, values = retrieve(memory, int(query.class_ids[k]), query.grid_masks[k], query.grid_context[k],
                                 k=rank + 1, score=score)
        if len(found) == 0:
            retrieved.append(None), scores.append(float("nan"))
        else:
            retrieved.append(int(found[-1])), scores.append(float(values[-1]))
    return query, retrieved, scores


def build_canvas(label, memory: SegmentMemory, transformer: SegmentTransformer | None = None,
                 orderer: OrderingNetwork | None = None, score: str = "mask+context", rank: int = 0,
                 paste_margin: int = 2, seed: int = 0, retrieval=None) -> Canvas:
    """Retrieve, align, order and paste: the canvas of a layout ``label`` (H, W).

    ``rank``: paste each component's ``rank``-th best segment (0 = the best;
    the last one when a class has fewer candidates), a way to get different
    canvases for one layout. Each aligned segment is
    pasted where its warped mask is on and within ``paste_margin`` pixels of
    its component. ``retrieval``: the (query, retrieved, scores) of an earlier
    call with the same label, score and rank (:func:`retrieve_for_layout`), to skip the search.
    ``paste_margin`` ≥ 0 and ``rank`` ≥ 0 integers.
    """
    check_score(score), check_non_negative_int(rank, "rank"), check_non_negative_int(paste_margin, "paste_margin")
    check_seed(seed)
    _checks.module(transformer, "transformer", SegmentTransformer, allow_none=True)
    _checks.module(orderer, "orderer", OrderingNetwork, allow_none=True)
    _checks.instance(memory, "memory", SegmentMemory, "a SegmentMemory")
    if retrieval is not None and (not isinstance(retrieval, tuple) or len(retrieval) != 3
                                  or not isinstance(retrieval[0], QueryLayout)):
        raise ValueError("retrieval must be None or the (query, retrieved, scores) of retrieve_for_layout, got "
                         f"{type(retrieval).__name__}")
    query, retrieved, scores = retrieval or retrieve_for_layout(label, memory, score, rank)
    height, width = memory.size
    n = len(query)
    have = [k for k in range(n) if retrieved[k] is not None]
    canvas = torch.zeros(3, height, width)
    filled = torch.zeros(height, width, dtype=torch.bool)
    theta = torch.tensor(IDENTITY_AFFINE).view(2, 3).repeat(n, 1, 1)
    iou_before = torch.full((n,), float("nan"), dtype=torch.float64)
    iou_after = iou_before.clone()
    regions = torch.zeros(n, height, width, dtype=torch.bool)
    pixels_all = torch.zeros(n, 3, height, width)
    if have:
        masks = torch.stack([memory.mask(retrieved[k]) for k in have]).float()[:, None]
        # the segment alone, zero outside its mask, as the transformer saw it in training
        pixels = torch.stack([memory.images[int(memory.scene_ids[retrieved[k]])] for k in have]).float() / 255 * masks
        targets = torch.stack([query.mask(k) for k in have]).float()[:, None]
        layout = one_hot_layout(query.label[None]).expand(len(have), -1, -1, -1)
        iou_before[have] = mask_iou(masks, targets)
        if transformer is not None:
            device = next(transformer.parameters()).device
            with torch.no_grad():
                t = transformer(pixels.to(device), masks.to(device), targets.to(device), layout.to(device)).cpu()
            warped_pixels, warped_masks = SegmentTransformer._warp(pixels, masks, t)
            theta[have] = t
        else:
            warped_pixels, warped_masks = SegmentTransformer._warp(pixels, masks, theta[have])
        iou_after[have] = mask_iou(warped_masks, targets)
        on = (warped_masks[:, 0] > 0.5) & dilate(targets[:, 0] > 0.5, paste_margin)
        regions[have] = on
        pixels_all[have] = warped_pixels / warped_masks.clamp(min=1e-6)   # un-premultiply
    rng = np.random.default_rng([seed, 31])
    order = [k for k in paste_order(query, regions, orderer, rng) if retrieved[k] is not None]
    for k in order:
        canvas = torch.where(regions[k], pixels_all[k].clamp(0, 1), canvas)
        filled |= regions[k]
    return Canvas(canvas, filled, query, retrieved, scores, theta, iou_before, iou_after, order)


def coverage(canvases: list[Canvas]) -> dict:
    """How much of the layouts the canvases fill: ``filled`` over all pixels,
    ``small_component_pixels`` (the share of pixels in components below the
    minimum area, never retrieved), and ``per_class`` (filled share of each class' pixels). At least one canvas."""
    from ..data import CLASS_NAMES

    if not _checks.names(canvases, "canvases"):
        raise ValueError("canvases must hold at least one Canvas of build_canvas, got an empty list")
    for canvas in canvases:
        _checks.instance(canvas, "canvases[…]", Canvas, "a Canvas of build_canvas")

    filled = small = total = 0
    hit, count = np.zeros(NUM_CLASSES), np.zeros(NUM_CLASSES)
    for c in canvases:
        label = c.query.label
        filled += int(c.filled.sum())
        small += int((c.query.components == 0).sum())
        total += label.numel()
        for class_id in range(NUM_CLASSES):
            where = label == class_id
            count[class_id] += int(where.sum())
            hit[class_id] += int((c.filled & where).sum())
    return {"filled": filled / max(total, 1), "small_component_pixels": small / max(total, 1),
            "per_class": {CLASS_NAMES[k]: (hit[k] / count[k] if count[k] else None) for k in range(NUM_CLASSES)}}
