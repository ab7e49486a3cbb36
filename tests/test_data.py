"""StreetScenes: determinism, shapes, geometry and the errors at its boundary."""
import numpy as np
import pytest
import torch

from labkit.data import CLASSES, INSTANCE_CLASSES, NUM_CLASSES, StreetScenes, check_label_map, check_image_label_pair


@pytest.fixture(scope="module")
def scenes():
    return StreetScenes(size=(64, 128), seed=0, split="train")


def test_sample_has_documented_keys_shapes_and_dtypes(scenes):
    sample = scenes[3]
    assert sample["image"].shape == (3, 64, 128) and sample["image"].dtype == torch.float32
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["label"].shape == (64, 128) and sample["label"].dtype == torch.int64
    assert sample["instances"].shape == (64, 128) and sample["instances"].dtype == torch.int64
    assert int(sample["label"].min()) >= 0 and int(sample["label"].max()) < NUM_CLASSES
    for obj in sample["objects"]:
        assert set(obj) >= {"id", "class_id", "box", "depth", "order"}


def test_same_seed_and_index_give_identical_scenes():
    a, b = StreetScenes(seed=5)[11], StreetScenes(seed=5)[11]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
    assert a["objects"] == b["objects"]


def test_seed_split_and_index_each_change_the_scene():
    base = StreetScenes(seed=0)[0]["label"]
    assert not torch.equal(base, StreetScenes(seed=1)[0]["label"])
    assert not torch.equal(base, StreetScenes(seed=0, split="val")[0]["label"])
    assert not torch.equal(base, StreetScenes(seed=0)[1]["label"])


def test_length_is_configurable_and_indexing_past_it_fails():
    ds = StreetScenes(length=7)
    assert len(ds) == 7
    with pytest.raises(IndexError):
        ds[7]
    # Unbounded: any index renders, whatever the nominal length.
    assert ds.render(10_000_000)["image"].shape == (3, 64, 128)


@pytest.mark.parametrize("size", [(32, 64), (96, 192), (256, 512)])
def test_renders_any_one_to_two_size(size):
    sample = StreetScenes(size=size)[0]
    assert sample["image"].shape == (3, *size) and sample["label"].shape == size


@pytest.mark.parametrize("size", [(64, 64), (16, 32), (512, 1024), (64,), "big"])
def test_bad_sizes_are_rejected_with_the_expected_range(size):
    with pytest.raises(ValueError, match="32×64 up to 256×512"):
        StreetScenes(size=size)


def test_unknown_split_is_rejected():
    with pytest.raises(ValueError, match="split must be one of"):
        StreetScenes(split="training")


def test_same_scene_at_two_resolutions_has_the_same_layout():
    small = StreetScenes(size=(64, 128))[4]["label"]
    large = StreetScenes(size=(128, 256))[4]["label"]
    agreement = (large[::2, ::2] == small).float().mean()
    assert agreement > 0.93


def test_dataset_uses_at_least_eight_classes_with_cityscapes_colours():
    assert len(CLASSES) >= 8
    assert {c.name for c in CLASSES} >= {"sky", "building", "road", "sidewalk", "vegetation", "terrain",
                                         "pole", "person", "car"}
    assert next(c for c in CLASSES if c.name == "car").color == (0, 0, 142)
    seen = set()
    ds = StreetScenes(length=40)
    for i in range(40):
        seen |= set(torch.unique(ds[i]["label"]).tolist())
    assert seen == set(range(NUM_CLASSES))


def test_instances_belong_to_car_and_person_and_match_objects(scenes):
    for i in range(20):
        sample = scenes[i]
        ids = set(torch.unique(sample["instances"]).tolist()) - {0}
        assert ids == {o["id"] for o in sample["objects"]}
        for obj in sample["objects"]:
            assert obj["class_id"] in INSTANCE_CLASSES
            mask = sample["instances"] == obj["id"]
            assert bool((sample["label"][mask] == obj["class_id"]).all())
            rows, cols = torch.nonzero(mask, as_tuple=True)
            assert obj["box"] == (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)


def test_order_ranks_objects_front_to_back(scenes):
    objects = scenes[2]["objects"]
    assert [o["order"] for o in objects] == list(range(len(objects)))
    depths = [o["depth"] for o in objects]
    assert depths == sorted(depths)


def _occluding_pair(ds):
    for i in range(200):
        sample = ds[i]
        objects = {o["id"]: o for o in sample["objects"]}
        all_ids = [t.instance_id for t in ds.scene(i).instances]
        alone = {oid: ds.render(i, remove=[x for x in all_ids if x != oid])["instances"] == oid for oid in objects}
        for a in objects:
            for b in objects:
                if a < b and bool((alone[a] & alone[b]).any()):
                    return sample, objects[a], objects[b], alone[a] & alone[b]
    raise AssertionError("no overlapping pair of objects in 200 scenes")


def test_occlusion_follows_depth():
    sample, a, b, overlap = _occluding_pair(StreetScenes(size=(64, 128), length=200))
    nearer = a if a["depth"] < b["depth"] else b
    assert bool((sample["instances"][overlap] == nearer["id"]).all())


def test_removing_an_object_reveals_the_scene_behind_it(scenes):
    index = next(i for i in range(50) if scenes[i]["objects"])
    full = scenes[index]
    target = full["objects"][0]
    removed = scenes.render(index, remove=[target["id"]])
    mask = full["instances"] == target["id"]
    assert not bool((removed["instances"] == target["id"]).any())
    assert target["id"] not in {o["id"] for o in removed["objects"]}
    assert not bool((removed["label"][mask] == target["class_id"]).all())
    # Away from the object (and its shadow) nothing changes.
    x0, y0, x1, y1 = target["box"]
    far = torch.ones_like(mask)
    pad = max(2, (y1 - y0) // 3)
    far[max(0, y0 - pad):y1 + pad, max(0, x0 - pad):x1 + pad] = False
    assert torch.equal(removed["image"][:, far], full["image"][:, far])
    assert torch.equal(removed["label"][far], full["label"][far])
    # Other objects keep their ids.
    assert {o["id"] for o in removed["objects"]} <= {o["id"] for o in full["objects"]}


def test_removing_unknown_ids_is_an_error(scenes):
    with pytest.raises(ValueError, match="does not have"):
        scenes.render(0, remove=[999])


def test_appearance_varies_per_instance_and_illumination_per_scene():
    ds = StreetScenes(length=60)
    car_colours, brightness = [], []
    for i in range(60):
        s = ds[i]
        brightness.append(float(s["image"].mean()))
        for o in s["objects"]:
            if o["class_id"] == 8:
                car_colours.append(s["image"][:, s["instances"] == o["id"]].mean(1))
    assert torch.stack(car_colours).std(0).mean() > 0.1
    assert np.std(brightness) > 0.03


@pytest.mark.parametrize("label, message", [
    (torch.full((4, 4), NUM_CLASSES), "out of range"),
    (torch.full((4, 4), -1), "out of range"),
    (torch.zeros(4, 4, dtype=torch.float32), "integer"),
    (torch.zeros(1, 1, 4, 4, dtype=torch.int64), "shape"),
])
def test_bad_label_maps_raise_value_errors_naming_the_problem(label, message):
    with pytest.raises(ValueError, match=message):
        check_label_map(label)


def test_image_label_size_mismatch_is_reported_with_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3, 8, 16\).*\(2, 8, 8\)"):
        check_image_label_pair(torch.zeros(2, 3, 8, 16), torch.zeros(2, 8, 8, dtype=torch.int64))
