"""Specifications for the real-data loaders (Cityscapes, image/label folders).

Every fixture is written in the exact on-disk format of the real download,
tiny (16x32), into pytest's tmp_path. Cityscapes instanceIds are 16-bit
greyscale PNGs (Pillow cannot write 32-bit "I" PNGs; it reads 16-bit ones
back as "I;16" or "I" depending on version).
"""
import numpy as np
import pytest
import torch
from PIL import Image

from labkit.data.classes import CLASSES, IGNORE_INDEX, NUM_CLASSES
from labkit.data.real import CityscapesDataset, ImageLabelFolder

H, W = 16, 32
UNMODELLED_LABEL_IDS = (0, 4, 12, 13, 20, 27, 33)  # unlabeled, static, wall, fence, sign, truck, bicycle
CITY_FRAMES = {"aachen": ["000000_000019", "000001_000019"], "bochum": ["000000_000313"]}


def _label_ids_map() -> np.ndarray:
    """Each modelled labelId, then each unmodelled one, in its own 2-pixel column pair."""
    ids = [c.cityscapes_label_id for c in CLASSES] + list(UNMODELLED_LABEL_IDS)
    assert 2 * len(ids) == W
    return np.tile(np.repeat(np.array(ids, dtype=np.uint8), 2), (H, 1))


def _instance_ids_map() -> np.ndarray:
    instance_ids = np.full((H, W), 7, dtype=np.uint16)  # road, no instance
    instance_ids[:4, :8] = 26001    # car #1
    instance_ids[4:8, :8] = 24000   # person #0 (Cityscapes counts from 0)
    instance_ids[8:12, :8] = 26002  # car #2
    instance_ids[12:, :8] = 27000   # truck: not one of our instance classes
    instance_ids[:, 8:10] = 24      # person crowd region (< 1000): no instance
    return instance_ids


def _write_rgb(path, height=H, width=W, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def _write_png(path, values, mode):
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(values)  # uint8 -> "L", uint16 -> "I;16"
    assert picture.mode == mode
    picture.save(path)


def make_cityscapes(root, split="train", with_instances=True):
    for city, frames in CITY_FRAMES.items():
        for frame in frames:
            stem = f"{city}_{frame}"
            _write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
            gt = root / "gtFine" / split / city
            _write_png(gt / f"{stem}_gtFine_labelIds.png", _label_ids_map(), "L")
            if with_instances:
                _write_png(gt / f"{stem}_gtFine_instanceIds.png", _instance_ids_map(), "I;16")
    return root


def make_image_folder(root, raw_labels, names=("a", "b"), suffix=".jpg"):
    for i, name in enumerate(names):
        _write_rgb(root / "images" / f"{name}{suffix}", seed=i)
        _write_png(root / "annotations" / f"{name}.png", raw_labels.astype(np.uint8), "L")
    return root


# --- Cityscapes -------------------------------------------------------------

def test_cityscapes_finds_all_frames_of_all_cities_sorted(tmp_path):
    ds = CityscapesDataset(make_cityscapes(tmp_path), split="train")
    names = [p.split("/")[-1] for p in (ds[i]["path"] for i in range(len(ds)))]
    assert names == ["aachen_000000_000019_leftImg8bit.png", "aachen_000001_000019_leftImg8bit.png",
                     "bochum_000000_000313_leftImg8bit.png"]


def test_cityscapes_sample_has_streetscenes_layout(tmp_path):
    sample = CityscapesDataset(make_cityscapes(tmp_path))[0]
    assert set(sample) == {"image", "label", "instances", "path"}
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, H, W)
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert float(sample["image"].max()) > 0.5  # scaled by 255, not left as 0..255 nor squashed
    assert sample["label"].dtype == torch.int64 and sample["label"].shape == (H, W)
    assert sample["instances"].dtype == torch.int64 and sample["instances"].shape == (H, W)


def test_cityscapes_image_pixels_match_the_file(tmp_path):
    ds = CityscapesDataset(make_cityscapes(tmp_path))
    on_disk = np.asarray(Image.open(ds[0]["path"]).convert("RGB"), dtype=np.float32) / 255
    assert torch.allclose(ds[0]["image"], torch.from_numpy(on_disk).permute(2, 0, 1))


def test_cityscapes_maps_label_ids_to_class_indices(tmp_path):
    label = CityscapesDataset(make_cityscapes(tmp_path))[0]["label"]
    label_ids = torch.from_numpy(_label_ids_map().astype(np.int64))
    for semantic_class in CLASSES:
        where = label_ids == semantic_class.cityscapes_label_id
        assert where.any()
        assert (label[where] == semantic_class.index).all(), semantic_class.name


def test_cityscapes_unmodelled_label_ids_become_ignore_index(tmp_path):
    label = CityscapesDataset(make_cityscapes(tmp_path))[0]["label"]
    label_ids = torch.from_numpy(_label_ids_map().astype(np.int64))
    for label_id in UNMODELLED_LABEL_IDS:
        where = label_ids == label_id
        assert where.any()
        assert (label[where] == IGNORE_INDEX).all(), label_id
    assert set(torch.unique(label).tolist()) == set(range(NUM_CLASSES)) | {IGNORE_INDEX}


def test_cityscapes_instances_are_numbered_consecutively_for_person_and_car_only(tmp_path):
    instances = CityscapesDataset(make_cityscapes(tmp_path))[0]["instances"]
    # raw ids sorted: 24000 (person) -> 1, 26001 (car) -> 2, 26002 (car) -> 3
    assert (instances[4:8, :8] == 1).all()
    assert (instances[:4, :8] == 2).all()
    assert (instances[8:12, :8] == 3).all()
    assert (instances[12:, :8] == 0).all()   # truck instance: class we do not model
    assert (instances[:, 8:] == 0).all()     # stuff and crowd (< 1000)
    assert sorted(torch.unique(instances).tolist()) == [0, 1, 2, 3]


def test_cityscapes_without_instance_files_gives_empty_instances(tmp_path):
    sample = CityscapesDataset(make_cityscapes(tmp_path, with_instances=False))[0]
    assert sample["instances"].shape == (H, W) and not sample["instances"].any()


def test_cityscapes_resize_halves_maps_with_nearest_neighbour(tmp_path):
    make_cityscapes(tmp_path)
    full = CityscapesDataset(tmp_path)[0]
    half = CityscapesDataset(tmp_path, size=(H // 2, W // 2))[0]
    assert half["image"].shape == (3, H // 2, W // 2)
    assert 0.0 <= float(half["image"].min()) and float(half["image"].max()) <= 1.0
    # fixture regions are 2-pixel aligned, so nearest neighbour keeps every region intact
    assert torch.equal(half["label"], full["label"][::2, ::2])
    assert torch.equal(half["instances"], full["instances"][::2, ::2])


def test_cityscapes_reads_val_and_test_splits(tmp_path):
    make_cityscapes(tmp_path, split="val")
    assert len(CityscapesDataset(tmp_path, split="val")) == 3
    with pytest.raises(FileNotFoundError, match="test"):
        CityscapesDataset(tmp_path, split="test")


def test_cityscapes_unknown_split_lists_allowed_splits(tmp_path):
    with pytest.raises(ValueError) as error:
        CityscapesDataset(make_cityscapes(tmp_path), split="training")
    assert all(word in str(error.value) for word in ("training", "train", "val", "test"))


def test_cityscapes_missing_root_names_path_and_expected_layout(tmp_path):
    missing = tmp_path / "no_such_dir"
    with pytest.raises(FileNotFoundError) as error:
        CityscapesDataset(missing)
    message = str(error.value)
    assert str(missing) in message and "expected" in message
    assert "leftImg8bit/train/" in message and "gtFine/train/" in message


def test_cityscapes_missing_split_folder_names_it(tmp_path):
    (tmp_path / "leftImg8bit" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        CityscapesDataset(tmp_path)
    assert str(tmp_path / "gtFine" / "train") in str(error.value)


def test_cityscapes_no_images_names_the_pattern(tmp_path):
    (tmp_path / "leftImg8bit" / "train" / "aachen").mkdir(parents=True)
    (tmp_path / "gtFine" / "train").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as error:
        CityscapesDataset(tmp_path)
    assert "_leftImg8bit.png" in str(error.value) and "no images" in str(error.value)


def test_cityscapes_image_without_label_names_the_missing_label(tmp_path):
    make_cityscapes(tmp_path)
    label = tmp_path / "gtFine/train/bochum/bochum_000000_000313_gtFine_labelIds.png"
    label.unlink()
    with pytest.raises(FileNotFoundError) as error:
        CityscapesDataset(tmp_path)
    assert str(label) in str(error.value)


def test_cityscapes_size_mismatch_names_both_sizes_and_file(tmp_path):
    make_cityscapes(tmp_path)
    image = tmp_path / "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"
    _write_rgb(image, height=H, width=W + 8)
    with pytest.raises(ValueError) as error:
        CityscapesDataset(tmp_path)[0]
    message = str(error.value)
    assert f"{W}x{H}" in message and f"{W + 8}x{H}" in message
    assert "aachen_000000_000019_gtFine_labelIds.png" in message


# --- ImageLabelFolder -------------------------------------------------------

def test_folder_pairs_images_and_labels_by_name(tmp_path):
    raw = np.tile(np.arange(W) % NUM_CLASSES, (H, 1))
    make_image_folder(tmp_path, raw, names=("b", "a", "c"))
    ds = ImageLabelFolder(tmp_path)
    assert [p.split("/")[-1] for p in (ds[i]["path"] for i in range(3))] == ["a.jpg", "b.jpg", "c.jpg"]
    sample = ds[0]
    assert set(sample) == {"image", "label", "path"}
    assert sample["image"].dtype == torch.float32 and sample["image"].shape == (3, H, W)
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["label"].dtype == torch.int64
    assert torch.equal(sample["label"], torch.from_numpy(raw.astype(np.int64)))


def test_folder_accepts_png_images_and_custom_folder_names(tmp_path):
    raw = np.zeros((H, W), dtype=np.uint8)
    _write_rgb(tmp_path / "img" / "x.png")
    _write_png(tmp_path / "gt" / "x.png", raw, "L")
    assert len(ImageLabelFolder(tmp_path, images="img", labels="gt")) == 1


def test_folder_label_offset_shifts_ids_and_ignores_below_zero(tmp_path):
    raw = np.zeros((H, W), dtype=np.uint8)       # ADE20K 0 = "other"
    raw[:, 8:16] = 1
    raw[:, 16:24] = 150
    raw[:, 24:] = 255
    make_image_folder(tmp_path, raw)
    label = ImageLabelFolder(tmp_path, label_offset=1, num_classes=150)[0]["label"]
    assert (label[:, :8] == IGNORE_INDEX).all()
    assert (label[:, 8:16] == 0).all()
    assert (label[:, 16:24] == 149).all()
    assert (label[:, 24:] == IGNORE_INDEX).all()


def test_folder_out_of_range_ids_name_file_and_ids(tmp_path):
    raw = np.zeros((H, W), dtype=np.uint8)
    raw[0, 0], raw[0, 1] = NUM_CLASSES, 42
    make_image_folder(tmp_path, raw, names=("a",))
    with pytest.raises(ValueError) as error:
        ImageLabelFolder(tmp_path)[0]
    message = str(error.value)
    assert str(tmp_path / "annotations" / "a.png") in message
    assert f"[{NUM_CLASSES}, 42]" in message


def test_folder_resize_antialiases_images(tmp_path):
    stripes = np.zeros((H, W, 3), dtype=np.uint8)
    stripes[:, ::2] = 255                         # 1-pixel black/white columns
    (tmp_path / "images").mkdir()
    Image.fromarray(stripes).save(tmp_path / "images" / "a.png")
    _write_png(tmp_path / "annotations" / "a.png", np.zeros((H, W), dtype=np.uint8), "L")
    image = ImageLabelFolder(tmp_path, size=(H // 4, W // 4))[0]["image"]
    assert torch.allclose(image, torch.full_like(image, 0.5), atol=0.1)  # nearest would give 0 or 1


def test_folder_resize_uses_nearest_for_labels(tmp_path):
    raw = np.tile((np.arange(W) // 4).astype(np.uint8), (H, 1))  # ids 0..7
    make_image_folder(tmp_path, raw)
    sample = ImageLabelFolder(tmp_path, size=(8, 8))[0]
    assert sample["image"].shape == (3, 8, 8) and sample["label"].shape == (8, 8)
    assert sorted(torch.unique(sample["label"]).tolist()) == list(range(8))


def test_folder_missing_root_names_path_and_expected_layout(tmp_path):
    with pytest.raises(FileNotFoundError) as error:
        ImageLabelFolder(tmp_path / "ade")
    message = str(error.value)
    assert str(tmp_path / "ade") in message and "expected" in message and "annotations/" in message


def test_folder_without_images_says_what_it_looked_for(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations").mkdir()
    with pytest.raises(FileNotFoundError) as error:
        ImageLabelFolder(tmp_path)
    assert str(tmp_path / "images") in str(error.value) and ".jpg" in str(error.value)


def test_folder_image_without_label_names_the_missing_label(tmp_path):
    make_image_folder(tmp_path, np.zeros((H, W)), names=("a", "b"))
    (tmp_path / "annotations" / "b.png").unlink()
    with pytest.raises(FileNotFoundError) as error:
        ImageLabelFolder(tmp_path)
    assert str(tmp_path / "annotations" / "b.png") in str(error.value)


def test_folder_size_mismatch_names_both_sizes_and_file(tmp_path):
    make_image_folder(tmp_path, np.zeros((H // 2, W)), names=("a",))
    with pytest.raises(ValueError) as error:
        ImageLabelFolder(tmp_path)[0]
    message = str(error.value)
    assert f"{W}x{H}" in message and f"{W}x{H // 2}" in message and "a.png" in message


def test_folder_rejects_rgb_label_files(tmp_path):
    _write_rgb(tmp_path / "images" / "a.jpg")
    _write_rgb(tmp_path / "annotations" / "a.png")
    with pytest.raises(ValueError, match="single-channel"):
        ImageLabelFolder(tmp_path)[0]
