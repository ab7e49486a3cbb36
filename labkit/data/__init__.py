"""Data: the StreetScenes generator, the class table and real-data loaders."""
from .classes import (CLASS_INDEX, CLASS_NAMES, CLASSES, IGNORE_INDEX, INSTANCE_CLASSES, NUM_CLASSES,
                      PALETTE, SemanticClass, colorize)
from .layout import Scene, Thing, sample_scene
from .real import CityscapesDataset, ImageLabelFolder
from .scenes import DEFAULT_LENGTHS, SPLITS, StreetScenes, check_size, collate_scenes, render_batch
from .validation import check_image_label_pair, check_images, check_label_map

__all__ = [
    "CLASSES", "CLASS_INDEX", "CLASS_NAMES", "IGNORE_INDEX", "INSTANCE_CLASSES", "NUM_CLASSES", "PALETTE",
    "SemanticClass", "colorize", "Scene", "Thing", "sample_scene", "CityscapesDataset", "ImageLabelFolder",
    "StreetScenes", "DEFAULT_LENGTHS", "SPLITS", "check_size", "collate_scenes", "render_batch",
    "check_image_label_pair", "check_images", "check_label_map",
]
