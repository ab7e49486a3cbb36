"""Loaders for real datasets on disk: Cityscapes and generic image/label folders.

Both return the same sample layout as the synthetic StreetScenes, so models
and metrics do not care where the pixels came from:

* ``"image"``: float32 tensor (3, H, W) with values in [0, 1]
* ``"label"``: int64 tensor (H, W) of class indices, :data:`IGNORE_INDEX` = 255
  for pixels of no class we model
* ``"instances"`` (Cityscapes only): int64 tensor (H, W), 0 = no instance,
  1 … K = the instances of our instance classes (person, car)
* ``"path"``: the image file, as a string

Images may be 8-bit (greyscale, palette, RGB, RGBA: converted to RGB) or
16-bit greyscale PNGs, which are scaled by their own range (value / 65535),
not clipped to 8 bits. A file that cannot be decoded (truncated, corrupt, not
an image) raises :class:`ImageFileError` naming it.

Nothing here is downloaded; point ``root`` at a folder you already have.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from PIL import Image

from ..checks import check_int, check_pair, check_path
from .classes import CLASSES, IGNORE_INDEX, NUM_CLASSES
from .scenes import _index
from .validation import check_label_map

CITYSCAPES_SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def cityscapes_label_id_lookup() -> np.ndarray:
    """(256,) uint8 table: Cityscapes labelId -> our class index, else IGNORE_INDEX."""
    lookup = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for semantic_class in CLASSES:
        lookup[semantic_class.cityscapes_label_id] = semantic_class.index
    return lookup


CITYSCAPES_INSTANCE_LABEL_IDS = tuple(c.cityscapes_label_id for c in CLASSES if c.is_instance)


def _integer_array(values, name: str) -> np.ndarray:
    values = np.asarray(values)
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name} must be an integer array (H, W), got dtype {values.dtype}")
    return values


class ImageFileError(ValueError):
    """An image or label file exists but cannot be decoded (truncated, corrupt, not an image)."""


# Pillow's modes for 16-bit greyscale PNGs ("I" in older versions, "I;16…" in newer ones).
_SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _open(path: Path) -> Image.Image:
    """Decode ``path`` completely (a truncated file fails here), or raise ImageFileError naming it."""
    try:
        with Image.open(path) as picture:
            picture.load()
            return picture.copy()   # the pixels outlive the closed file
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageFileError(f"{path} cannot be read as an image ({type(error).__name__}: {error})") from error


def _resize(picture: Image.Image, size, resample) -> Image.Image:
    if size is None:
        return picture
    height, width = size
    return picture.resize((width, height), resample=resample)


def _read_rgb(path: Path, size) -> torch.Tensor:
    picture = _open(path)
    if picture.mode in _SIXTEEN_BIT_MODES:
        # 16-bit greyscale: convert("RGB") would clip every value above 255 to white.
        values = np.asarray(picture, dtype=np.float32)
        if values.min() < 0 or values.max() > 65535:
            raise ImageFileError(f"{path} is a {picture.mode} image with values outside 16 bits "
                                 f"[{values.min():g}, {values.max():g}]; expected 8- or 16-bit pixels")
        grey = _resize(Image.fromarray(values, mode="F"), size, Image.BILINEAR)
        pixels = np.clip(np.asarray(grey, dtype=np.float32) / 65535.0, 0.0, 1.0)
        return torch.from_numpy(np.ascontiguousarray(np.broadcast_to(pixels, (3, *pixels.shape))))
    # Pillow's BILINEAR widens its filter when shrinking, i.e. it antialiases.
    picture = _resize(picture.convert("RGB"), size, Image.BILINEAR)
    pixels = np.asarray(picture, dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def _read_single_channel(path: Path, size, image_size, image_path: Path) -> np.ndarray:
    """Read a label-like PNG as an int64 (H, W) array, resized with nearest."""
    picture_size = _image_size(path)
    if picture_size != image_size:
        raise ValueError(
            f"{path} is {picture_size[0]}x{picture_size[1]} (WxH) but its image "
            f"{image_path} is {image_size[0]}x{image_size[1]}; they must have the same size")
    values = np.asarray(_resize(_open(path), size, Image.NEAREST))
    if values.ndim != 2:
        raise ValueError(f"{path} must be a single-channel label PNG, got shape {values.shape}")
    return values.astype(np.int64)


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as picture:
            return picture.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageFileError(f"{path} cannot be read as an image ({type(error).__name__}: {error})") from error


def _check_size(size):
    return None if size is None else check_pair(size, "size")


def _sample_index(index, length: int) -> int:
    index = _index(index, "index")
    if not -length <= index < length:
        raise IndexError(f"index {index} out of range for a data set of {length} samples")
    return index


class CityscapesDataset(Dataset):
    """Cityscapes fine annotations, mapped onto our classes (see ``classes.py``).

    Expected layout (the official ``leftImg8bit_trainvaltest.zip`` and
    ``gtFine_trainvaltest.zip`` unpacked into the same ``root``)::

        root/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png
        root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png
        root/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_instanceIds.png  (optional)

    LabelIds of classes we model become their class index; every other labelId
    (wall, fence, truck, unlabeled, ...) becomes IGNORE_INDEX. In instanceIds a
    value >= 1000 is an instance of labelId ``value // 1000``; the instances of
    our instance classes are renumbered 1 … K in order of their raw id, all
    other pixels are 0. Without an instanceIds file, ``"instances"`` is all 0.

    size: optional (H, W), two positive integers; images are resized
    bilinearly (antialiased), labels and instances with nearest neighbour.
    """

    def __init__(self, root, split: str = "train", size=None):
        if not isinstance(split, str) or split not in CITYSCAPES_SPLITS:
            raise ValueError(f"unknown Cityscapes split {split!r}; allowed: {', '.join(CITYSCAPES_SPLITS)}")
        self.root = check_path(root, "root")
        self.split = split
        self.size = _check_size(size)
        expected = (f"expected leftImg8bit/{split}/ and gtFine/{split}/ "
                    "from the official Cityscapes download")
        if not self.root.is_dir():
            raise FileNotFoundError(f"Cityscapes root {self.root} does not exist; {expected}")
        image_dir = self.root / "leftImg8bit" / split
        label_dir = self.root / "gtFine" / split
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"missing folder {folder}; {expected}")
        pattern = "<city>/*_leftImg8bit.png"
        self.image_paths = sorted(image_dir.glob("*/*_leftImg8bit.png"))
        if not self.image_paths:
            raise FileNotFoundError(f"no images matching {image_dir / pattern}; {expected}")
        self.label_paths = []
        for image_path in self.image_paths:
            label_path = self._gt_path(image_path, "labelIds")
            if not label_path.is_file():
                raise FileNotFoundError(f"missing label file {label_path} for image {image_path}")
            self.label_paths.append(label_path)
        self.lookup = cityscapes_label_id_lookup()

    def _gt_path(self, image_path: Path, kind: str) -> Path:
        stem = image_path.name[: -len("_leftImg8bit.png")]
        return self.root / "gtFine" / self.split / image_path.parent.name / f"{stem}_gtFine_{kind}.png"

    def __len__(self) -> int:
        return len(self.image_paths)

    def map_label_ids(self, label_ids: np.ndarray) -> np.ndarray:
        """Cityscapes labelIds (H, W) integer array -> our class indices (H, W), others IGNORE_INDEX."""
        label_ids = _integer_array(label_ids, "label_ids")
        in_table = (label_ids >= 0) & (label_ids < len(self.lookup))
        label = np.full(label_ids.shape, IGNORE_INDEX, dtype=np.int64)
        label[in_table] = self.lookup[label_ids[in_table]]
        return label

    @staticmethod
    def map_instance_ids(instance_ids: np.ndarray) -> np.ndarray:
        """Cityscapes instanceIds (H, W) integer array -> 0 / consecutive ids 1 … K of our instance classes."""
        instance_ids = _integer_array(instance_ids, "instance_ids")
        is_ours = (instance_ids >= 1000) & np.isin(instance_ids // 1000, CITYSCAPES_INSTANCE_LABEL_IDS)
        raw_ids = np.unique(instance_ids[is_ours])
        instances = np.zeros(instance_ids.shape, dtype=np.int64)
        instances[is_ours] = np.searchsorted(raw_ids, instance_ids[is_ours]) + 1
        return instances

    def __getitem__(self, index: int) -> dict:
        index = _sample_index(index, len(self))
        image_path, label_path = self.image_paths[index], self.label_paths[index]
        image_size = _image_size(image_path)
        label_ids = _read_single_channel(label_path, self.size, image_size, image_path)
        instance_path = self._gt_path(image_path, "instanceIds")
        if instance_path.is_file():
            instance_ids = _read_single_channel(instance_path, self.size, image_size, image_path)
            instances = self.map_instance_ids(instance_ids)
        else:
            instances = np.zeros(label_ids.shape, dtype=np.int64)
        return {
            "image": _read_rgb(image_path, self.size),
            "label": torch.from_numpy(self.map_label_ids(label_ids)),
            "instances": torch.from_numpy(instances),
            "path": str(image_path),
        }


class ImageLabelFolder(Dataset):
    """Image/label pairs in two folders, matched by file stem (ADE20K-style)::

        root/<images>/<name>.jpg   (or .jpeg / .png)
        root/<labels>/<name>.png   single-channel PNG of class ids

    label_offset is subtracted from the raw ids; ids that fall below 0 become
    IGNORE_INDEX (ADE20K: pass ``label_offset=1`` so its 0 = "other" is
    ignored and 1 … 150 become 0 … 149). A raw 255 stays IGNORE_INDEX.
    Any other id outside ``[0, num_classes)`` raises ValueError naming the file.

    size: optional (H, W), two positive integers; bilinear (antialiased) for
    images, nearest for labels. images, labels: folder names under ``root``;
    label_offset: an integer; num_classes: an integer in [1, 255] (255 is
    IGNORE_INDEX).
    """

    def __init__(self, root, images: str = "images", labels: str = "annotations", size=None,
                 label_offset: int = 0, num_classes: int = NUM_CLASSES):
        self.root = check_path(root, "root")
        for name, folder in (("images", images), ("labels", labels)):
            if not isinstance(folder, str) or not folder:
                raise ValueError(f"{name} must be a folder name under root (a non-empty str), got {folder!r}")
        self.size = _check_size(size)
        self.label_offset = check_int(label_offset, "label_offset")
        self.num_classes = check_int(num_classes, "num_classes", minimum=1, maximum=IGNORE_INDEX)
        expected = f"expected {images}/<name>.jpg|.png and {labels}/<name>.png"
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset root {self.root} does not exist; {expected}")
        image_dir, label_dir = self.root / images, self.root / labels
        for folder in (image_dir, label_dir):
            if not folder.is_dir():
                raise FileNotFoundError(f"missing folder {folder}; {expected}")
        self.image_paths = sorted(p for p in image_dir.iterdir()
                                  if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not self.image_paths:
            raise FileNotFoundError(
                f"no images ({', '.join(IMAGE_SUFFIXES)}) in {image_dir}; {expected}")
        stems = [p.stem for p in self.image_paths]
        duplicates = sorted({s for s in stems if stems.count(s) > 1})
        if duplicates:
            raise ValueError(f"several images share a name in {image_dir}: {duplicates}")
        self.label_paths = []
        for image_path in self.image_paths:
            label_path = label_dir / f"{image_path.stem}.png"
            if not label_path.is_file():
                raise FileNotFoundError(f"missing label file {label_path} for image {image_path}")
            self.label_paths.append(label_path)

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> dict:
        index = _sample_index(index, len(self))
        image_path, label_path = self.image_paths[index], self.label_paths[index]
        raw = _read_single_channel(label_path, self.size, _image_size(image_path), image_path)
        label = raw - self.label_offset
        label[(label < 0) | (raw == IGNORE_INDEX)] = IGNORE_INDEX
        try:
            label = check_label_map(label, "label", num_classes=self.num_classes,
                                    allow_ignore=True, ndim=(2,))
        except ValueError as error:
            raise ValueError(f"{label_path} (label_offset={self.label_offset}): {error}") from None
        return {"image": _read_rgb(image_path, self.size), "label": label, "path": str(image_path)}
