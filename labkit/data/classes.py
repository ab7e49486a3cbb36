"""The class table: one place for names, Cityscapes ids and colours.

StreetScenes label maps store the *index* of a class in :data:`CLASSES`
(0 … ``NUM_CLASSES - 1``). Each class also carries the Cityscapes
``train_id`` and ``label_id`` it stands for, so the Cityscapes loader can map
real annotations onto the same indices, and the colours are Cityscapes'
own palette.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IGNORE_INDEX = 255
"""Label value for pixels that belong to no class (Cityscapes' 'void')."""


@dataclass(frozen=True)
class SemanticClass:
    index: int
    name: str
    cityscapes_train_id: int
    cityscapes_label_id: int
    color: tuple[int, int, int]
    is_instance: bool = False


CLASSES: tuple[SemanticClass, ...] = (
    SemanticClass(0, "road", 0, 7, (128, 64, 128)),
    SemanticClass(1, "sidewalk", 1, 8, (244, 35, 232)),
    SemanticClass(2, "building", 2, 11, (70, 70, 70)),
    SemanticClass(3, "pole", 5, 17, (153, 153, 153)),
    SemanticClass(4, "vegetation", 8, 21, (107, 142, 35)),
    SemanticClass(5, "terrain", 9, 22, (152, 251, 152)),
    SemanticClass(6, "sky", 10, 23, (70, 130, 180)),
    SemanticClass(7, "person", 11, 24, (220, 20, 60), is_instance=True),
    SemanticClass(8, "car", 13, 26, (0, 0, 142), is_instance=True),
)
NUM_CLASSES = len(CLASSES)
CLASS_NAMES = tuple(c.name for c in CLASSES)
CLASS_INDEX = {c.name: c.index for c in CLASSES}
INSTANCE_CLASSES = tuple(c.index for c in CLASSES if c.is_instance)
PALETTE = np.array([c.color for c in CLASSES], dtype=np.uint8)
"""(NUM_CLASSES, 3) uint8 colours, Cityscapes' palette."""


def colorize(label) -> np.ndarray:
    """Label map (H, W) of class indices -> (H, W, 3) uint8 colour image.

    ``label`` holds integers in ``[0, NUM_CLASSES)`` or :data:`IGNORE_INDEX`
    (any shape; the colour axis is appended). Ignored pixels are drawn black;
    any other id raises ``ValueError``.
    """
    label = np.asarray(label)
    if not np.issubdtype(label.dtype, np.integer):
        raise ValueError(f"label must hold integer class ids, got dtype {label.dtype}")
    bad = ((label < 0) | (label >= NUM_CLASSES)) & (label != IGNORE_INDEX)
    if bad.any():
        raise ValueError(f"label has class ids out of range [0, {NUM_CLASSES - 1}] or {IGNORE_INDEX}: "
                         f"{np.unique(label[bad])[:5].tolist()}")
    out = np.zeros(label.shape + (3,), dtype=np.uint8)
    valid = label < NUM_CLASSES
    out[valid] = PALETTE[label[valid]]
    return out
