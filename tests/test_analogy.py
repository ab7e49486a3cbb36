"""Semantic Image Analogy (chapter 4): SFT, augmentation, losses, the baseline, edits and runs."""
import math

import numpy as np
import pytest
import torch

from labkit.checkpoints import CheckpointError, read_json, write_json
from labkit.data import CLASS_INDEX, NUM_CLASSES, StreetScenes
from labkit.papers import analogy, analogy_runs

SIZE = (32, 64)


@pytest.fixture(scope="module")
def scene():
    sample = StreetScenes(SIZE, split="test")[3]
    return sample["image"], sample["label"]


def _layouts(labels, edited=None):
    source = analogy.one_hot(labels, NUM_CLASSES)
    return source, (source if edited is None else analogy.one_hot(edited, NUM_CLASSES))


# --------------------------------------------------------------------------- SFT and the generator

def test_sft_inputs_are_the_fixed_point_when_the_layout_does_not_change(scene):
    image, labels = scene
    generator = analogy.AnalogyGenerator(NUM_CLASSES, width=4)
    features = generator.layout_features(analogy.one_hot(labels, NUM_CLASSES))
    assert all((f >= 0).all() for f in features)   # ReLU features, so the ratio is defined
    for ratio, difference in generator.sft.inputs(features, features):
        assert torch.equal(ratio, torch.ones_like(ratio)) and torch.equal(difference, torch.zeros_like(difference))


def test_sft_with_the_same_layout_and_fixed_point_parameters_is_the_identity_on_normalised_features(scene):
    _, labels = scene
    torch.manual_seed(0)
    generator = analogy.AnalogyGenerator(NUM_CLASSES, width=4)
    source, target = _layouts(labels)
    assert analogy.fixed_point_loss(generator.translation(source, target)) > 0.1   # not there at initialisation
    generator.sft.set_fixed_point_()
    params = generator.translation(source, target)
    assert analogy.fixed_point_loss(params) == 0
    for (gamma, beta), channels in zip(params, generator.channels):
        x = torch.randn(1, channels, *gamma.shape[-2:]) * 3 + 2
        assert torch.allclose(analogy.translate(x, gamma, beta), analogy.instance_normalize(x), atol=1e-6)
    # the generator wires γ, β where IN goes: with the fixed point, it equals the same network with every
    # γ·IN(x) + β replaced by IN(x), for an unchanged layout
    generator.eval()
    image = scene[0][None]
    with torch.no_grad():
        expected, _ = generator(image, source, target)
        original = analogy.translate
        try:
            analogy.translate = lambda x, gamma, beta: analogy.instance_normalize(x)
            plain, _ = generator(image, source, target)
        finally:
            analogy.translate = original
    assert torch.allclose(expected, plain, atol=1e-5)
    # a real edit still reaches the SFT inputs (so a trained SFT can change the features)
    edited = labels.clone()
    edited[:, :8] = 0
    ratio, difference = generator.sft.inputs(*(generator.layout_features(lay) for lay in _layouts(labels, edited)))[0]
    assert (ratio != 1).any() and (difference != 0).any()


def test_spade_baseline_ignores_the_source_layout(scene):
    _, labels = scene
    generator = analogy.AnalogyGenerator(NUM_CLASSES, width=4, conditioning="spade").eval()   # no power iteration
    source, target = _layouts(labels)
    other = analogy.one_hot(torch.zeros_like(labels), NUM_CLASSES)
    for (g1, b1), (g2, b2) in zip(generator.translation(source, target), generator.translation(other, target)):
        assert torch.equal(g1, g2) and torch.equal(b1, b2)


def test_generator_shapes_and_errors(scene):
    image, labels = scene
    generator = analogy.AnalogyGenerator(NUM_CLASSES, width=4)
    source, target = _layouts(labels)
    output, params = generator(image[None], source, target)
    assert output.shape == (1, 3, *SIZE) and output.min() >= 0 and output.max() <= 1
    assert [p[0].shape[1] for p in params] == [8, 16, 32]
    with pytest.raises(ValueError, match="channels"):
        generator(image[None], source[:, :5], target)
    with pytest.raises(ValueError, match="multiples of 8"):
        generator(image[None, :, :30, :60], source[..., :30, :60], target[..., :30, :60])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        generator(image[None] * 2 - 1, source, target)
    with pytest.raises(ValueError, match="conditioning"):
        analogy.AnalogyGenerator(NUM_CLASSES, conditioning="film")


# --------------------------------------------------------------------------- augmentation

@pytest.mark.parametrize("seed", range(3))
def test_thin_plate_spline_moves_the_control_points_by_at_most_the_stated_amount(seed):
    settings = dict(analogy.AUGMENTATION, flip=0.0, tps_probability=2.0, scale_max=0.0, shift_max=0.0)
    grid, drawn = analogy.augmentation_grid(SIZE, 1.0, torch.Generator().manual_seed(seed), settings)
    displacement = (grid - analogy._base_grid(*SIZE)[None]).abs() / 2   # in units of the image size
    # the control points move by at most tps_max; the spline between them may overshoot a little
    assert drawn["tps"] and 0.2 * settings["tps_max"] < displacement.max() <= settings["tps_max"] * 1.5


def test_a_local_edit_leaves_the_layout_features_far_away_unchanged(scene):
    _, labels = scene
    generator = analogy.AnalogyGenerator(NUM_CLASSES, width=4).eval()
    edited = labels.clone()
    edited[-6:, -10:] = 0   # bottom-right corner
    features = generator.layout_features(torch.cat(_layouts(labels, edited)))
    for f in features[:2]:   # the receptive field of the first two scales stays well inside the image
        quarter = (slice(None), slice(None), slice(0, f.shape[-2] // 3), slice(0, f.shape[-1] // 3))
        assert torch.equal(f[0][quarter[1:]], f[1][quarter[1:]])


def test_zero_strength_augmentation_is_the_identity(scene):
    image, labels = scene
    warped, warped_labels = analogy.joint_augment(image[None], labels[None], 0.0, torch.Generator().manual_seed(1))
    assert torch.allclose(warped, image[None], atol=1e-5) and torch.equal(warped_labels, labels[None])


def test_the_augmentation_of_an_iteration_is_a_function_of_seed_and_iteration(scene):
    trainer = _trainer(scene, "gradient")
    first, again, other = trainer.augmented(7), trainer.augmented(7), trainer.augmented(8)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_ramp_rises_linearly_to_full_strength_and_is_flat_without_it():
    assert [analogy.augmentation_strength(i, 100) for i in (0, 50, 100, 400)] == [0.0, 0.5, 1.0, 1.0]
    assert analogy.augmentation_strength(0, 100, ramp=False) == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_joint_augmentation_warps_image_and_layout_identically(scene, seed):
    _, labels = scene
    palette = torch.rand(NUM_CLASSES, 3, generator=torch.Generator().manual_seed(0))
    painted = palette[labels].permute(2, 0, 1)[None]   # an image that is its layout, coloured
    warped, warped_labels = analogy.joint_augment(painted, labels[None], 1.0, torch.Generator().manual_seed(seed))
    grid, _ = analogy.augmentation_grid(SIZE, 1.0, torch.Generator().manual_seed(seed))   # the same draws
    assert grid.shape == (1, *SIZE, 2) and not torch.allclose(grid, analogy._base_grid(*SIZE)[None])
    expected = palette[warped_labels[0]].permute(2, 0, 1)
    # where the sample point lies inside a uniform 3×3 block of the source (so the 4 pixels that bilinear
    # sampling reads share one class), the warped image must be exactly the warped layout's colour
    source = labels[None, None].float()
    uniform = (torch.nn.functional.max_pool2d(source, 3, 1, 1) == -torch.nn.functional.max_pool2d(-source, 3, 1, 1))
    interior = torch.nn.functional.grid_sample(uniform.float(), grid, mode="nearest", padding_mode="border",
                                               align_corners=False)[0, 0].bool()
    assert interior.float().mean() > 0.5
    assert torch.allclose(warped[0][:, interior], expected[:, interior], atol=1e-4)
    assert not torch.equal(warped_labels[0], labels)


def test_flip_only_augmentation_mirrors_both(scene):
    image, labels = scene
    settings = dict(analogy.AUGMENTATION, flip=2.0, tps_probability=0.0, scale_max=0.0, shift_max=0.0)
    grid, drawn = analogy.augmentation_grid(SIZE, 1.0, torch.Generator().manual_seed(0), settings)
    warped, warped_labels = analogy.warp_pair(image[None], labels[None], grid)
    assert drawn["flip"] and torch.equal(warped_labels[0], labels.flip(-1))
    assert torch.allclose(warped[0], image.flip(-1), atol=1e-5)


# --------------------------------------------------------------------------- losses

def test_patch_coherence_loss_is_zero_for_identical_images_and_positive_otherwise(scene):
    image, _ = scene
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 6, 3, padding=1)
    features = [conv(image[None]), torch.nn.functional.avg_pool2d(conv(image[None]), 2)]
    assert analogy.patch_coherence_loss(features, features) == 0
    noisy = [f + torch.randn_like(f) for f in features]
    assert analogy.patch_coherence_loss(noisy, features) > 0.1
    # the official variant (mean over the 5 nearest) is not zero for identical images
    assert analogy.patch_coherence_loss(features, features, nearest=5) > 0


def test_patch_coherence_loss_sends_gradient_to_the_target_only(scene):
    image, _ = scene
    target = image[None].clone().requires_grad_(True)
    source = image[None].flip(-1).clone().requires_grad_(True)
    analogy.patch_coherence_loss([target], [source], sampling=((3, 10),)).backward()
    assert target.grad.abs().sum() > 0 and source.grad is None


def _trainer(scene, alignment):
    image, labels = scene
    spec = dict(analogy.MODEL_SPECS["sft"], alignment=alignment)
    settings = dict(analogy.PROFILES["smoke"])
    torch.manual_seed(0)
    features = analogy_runs.patch_features(settings, "cpu")
    return analogy.AnalogyTrainer(image[None], labels[None], NUM_CLASSES, spec, settings, features)


@pytest.mark.parametrize("alignment", ["gradient", "detached"])
def test_alignment_loss_reaches_the_generator_only_with_gradient(scene, alignment, monkeypatch):
    monkeypatch.setattr(analogy, "LOSS_WEIGHTS", {k: (1.0 if k == "alignment" else 0.0)
                                                  for k in analogy.LOSS_WEIGHTS})
    trainer = _trainer(scene, alignment)
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.0) for m in (trainer.discriminator, trainer.segmenter)]
    loss, logs = trainer.iteration_loss(1, *optimizers)   # iteration 1: sampling mode
    assert "alignment" in logs and "reconstruction" not in logs
    loss.backward()
    gradient = sum(p.grad.abs().sum() for p in trainer.generator.parameters() if p.grad is not None)
    assert (gradient > 0) == (alignment == "gradient")


def test_reconstruction_mode_every_fifth_iteration_adds_l1_and_the_fixed_point(scene):
    trainer = _trainer(scene, "gradient")
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.0) for m in (trainer.discriminator, trainer.segmenter)]
    modes = {}
    for iteration in (0, 1, 4, 5):
        trainer.running_logs = {}   # the returned logs are moving averages; start each from empty
        _, logs = trainer.iteration_loss(iteration, *optimizers)
        modes[iteration] = set(logs)
    for iteration in (0, 5):
        assert {"reconstruction", "fixed_point"} <= modes[iteration] and not {"patch", "alignment"} & modes[iteration]
    for iteration in (1, 4):
        assert {"patch", "alignment"} <= modes[iteration] and not {"reconstruction", "fixed_point"} & modes[iteration]
    trainer.spec = analogy.MODEL_SPECS["no_fixed_point"]
    trainer.running_logs = {}
    _, logs = trainer.iteration_loss(0, *optimizers)
    assert "reconstruction" in logs and "fixed_point" not in logs


def test_trainer_rejects_batches_and_bad_labels(scene):
    image, labels = scene
    spec, settings = analogy.MODEL_SPECS["sft"], analogy.PROFILES["smoke"]
    with pytest.raises(ValueError, match="feature extractor"):
        analogy.AnalogyTrainer(image[None], labels[None], NUM_CLASSES, spec, settings)
    with pytest.raises(ValueError, match="one image"):
        analogy.AnalogyTrainer(image[None].repeat(2, 1, 1, 1), labels[None].repeat(2, 1, 1), NUM_CLASSES, spec,
                               settings)
    with pytest.raises(ValueError):
        analogy.AnalogyTrainer(image[None], labels[None] + 20, NUM_CLASSES, spec, settings)


# --------------------------------------------------------------------------- the Image Analogies baseline

@pytest.mark.parametrize("size", [SIZE, (64, 128)])
def test_image_analogies_reproduces_its_source_when_b_is_a(size):
    sample = StreetScenes(size, split="test")[5]
    image, labels = sample["image"], sample["label"]
    assert torch.equal(analogy.image_analogies(image, labels, labels, NUM_CLASSES), image)


def test_image_analogies_paints_an_edited_region_from_source_pixels_of_that_label(scene):
    image, labels = scene
    edited = labels.clone()
    edited[8:24, 8:24] = int(labels[-1, 0])   # paint a square with the bottom-left pixel's class
    output = analogy.image_analogies(image, labels, edited, NUM_CLASSES)
    source_colours = image.reshape(3, -1)[:, (labels == int(labels[-1, 0])).flatten()]
    inside = output[:, 12:20, 12:20].reshape(3, -1)
    # every pixel is copied from a source pixel of the painted class
    assert (inside[:, :, None] == source_colours[:, None, :]).all(0).any(1).all()
    with pytest.raises(ValueError, match="share"):
        analogy.image_analogies(image, labels, labels[:, :32], NUM_CLASSES)
    with pytest.raises(ValueError, match="odd"):
        analogy.image_analogies(image, labels, labels, NUM_CLASSES, patch=4)


# --------------------------------------------------------------------------- layouts and edits

def test_photo_layout_is_deterministic_and_uses_every_label():
    photo = analogy_runs.photo_image("chelsea", (32, 48))
    assert photo.shape == (32, 48, 3) and 0 <= photo.min() and photo.max() <= 1
    first, second = analogy.photo_layout(photo, 4), analogy.photo_layout(photo, 4)
    assert np.array_equal(first, second) and set(np.unique(first)) == {0, 1, 2, 3}
    counts = np.bincount(first.ravel())
    assert (np.diff(counts) <= 0).all()   # numbered by area, largest first
    with pytest.raises(ValueError, match="no photograph"):
        analogy_runs.photo_image("not_a_photo", (32, 48))


def test_layout_edits_move_scale_remove_and_add():
    labels = torch.zeros(32, 64, dtype=torch.long)
    labels[10:20, 10:20] = 3
    mask = labels == 3
    moved = analogy.edit_layout(labels, mask, "move", shift=(0, 20))
    assert (moved == 3).sum() == 100 and (moved[10:20, 30:40] == 3).all() and (moved[10:20, 10:20] == 0).all()
    added = analogy.edit_layout(labels, mask, "add", shift=(0, 20))
    assert (added == 3).sum() == 200
    removed = analogy.edit_layout(labels, mask, "remove")
    assert not (removed == 3).any()
    scaled = analogy.edit_layout(labels, mask, "scale", factor=1.5)
    assert 180 <= (scaled == 3).sum() <= 260
    with pytest.raises(ValueError, match="edit kind"):
        analogy.edit_layout(labels, mask, "rotate")
    with pytest.raises(ValueError, match="mask"):
        analogy.edit_layout(labels, torch.zeros_like(mask), "move")
    with pytest.raises(ValueError, match="factor"):
        analogy.edit_layout(labels, mask, "scale", factor=0)


def test_street_edits_have_true_images_that_differ_where_the_layout_changed():
    scenes, found = analogy_runs._car_scenes(SIZE, 1)
    index, car_id, sample = found[0]
    edits = analogy_runs.street_edits(scenes, index, car_id)
    assert [e["name"] for e in edits] == list(analogy_runs.EDIT_KINDS)
    for edit in edits:
        changed = edit["labels"] != sample["label"]
        assert changed.any(), edit["name"]
        assert edit["truth"].shape == sample["image"].shape
        assert (edit["truth"] - sample["image"]).abs().amax(0)[changed].min() > 0 or edit["name"] == "scale"
    car = CLASS_INDEX["car"]
    cars = {e["name"]: int((e["labels"] == car).sum()) for e in edits}
    before = int((sample["label"] == car).sum())
    assert cars["remove"] < before < cars["add"] and cars["scale"] > before


def test_appearance_distance_is_zero_for_the_source_and_grows_with_noise(scene):
    image, _ = scene
    assert analogy_runs.appearance_distance(image, image) == pytest.approx(0.0, abs=1e-3)
    noisy = (image + 0.2 * torch.randn(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert analogy_runs.appearance_distance(noisy, image) > 0.05


# --------------------------------------------------------------------------- runs

@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("analogy_smoke")
    export = tmp_path_factory.mktemp("analogy_export")
    record = analogy_runs.run("smoke", device="cpu", run_dir=run_dir, export=export, progress=False)
    return run_dir, export, record


def test_smoke_run_records_every_required_metric_with_provenance(smoke_run):
    run_dir, _, record = smoke_run
    assert set(record["metrics"]) == set(analogy.MODEL_NAMES)
    for name in analogy.MODEL_NAMES:
        metrics = record["metrics"][name]
        for key in ("alignment_miou", "alignment_pixel_accuracy", "psnr_ground_truth", "appearance_distance"):
            assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), (name, key)
        assert set(metrics["per_image"]) == {"street3", "coffee"}
        assert "psnr_ground_truth" not in metrics["per_image"]["coffee"]["edits"]["move"]
        assert record["runs"][name]["profile"] == "smoke"
    steps = analogy.PROFILES["smoke"]["iterations"]
    assert record["metrics"]["sft"]["steps"] == {"street3": steps, "coffee": steps}
    assert record["stale"] == []
    # the references bracket the scores: the true edit is aligned, the unedited copy is exact elsewhere
    reference = record["reference"]
    assert reference["ground_truth"]["psnr_ground_truth"] > 60
    assert reference["source_copy"]["appearance_distance"] == pytest.approx(0.0, abs=1e-3)
    assert record["metrics"]["image_analogies"]["identity_psnr"] > 60
    assert (run_dir / "samples" / "sft.png").stat().st_size > 1000


def test_smoke_run_resumes_without_retraining(smoke_run):
    run_dir, _, record = smoke_run
    again = analogy_runs.run("smoke", models=("sft",), device="cpu", run_dir=run_dir, progress=False)
    assert again["training"]["sft"] == record["training"]["sft"]
    assert again["metrics"]["sft"]["alignment_miou"] == pytest.approx(record["metrics"]["sft"]["alignment_miou"])
    assert again["stale"] == []


def test_a_model_scored_before_its_network_trained_further_is_stale(smoke_run, tmp_path):
    run_dir, _, _ = smoke_run
    for path in list(run_dir.glob("models/*.json")) + list(run_dir.glob("train/*.json")) + [run_dir / "metrics.json"]:
        write_json(tmp_path / path.relative_to(run_dir), read_json(path))
    info = read_json(tmp_path / "train" / "no_sft_street3.json")
    write_json(tmp_path / "train" / "no_sft_street3.json", dict(info, steps=99))
    record = analogy_runs.merge_records("smoke", tmp_path, "cpu")
    assert record["stale"] == ["no_sft"]
    with pytest.raises(ValueError, match="no_sft"):
        analogy_runs.read_record("smoke", tmp_path)


def test_exported_generators_load_and_reproduce_the_run(smoke_run):
    run_dir, export, _ = smoke_run
    generators, settings = analogy_runs.load_models(export / "street3.pt")
    assert set(generators) == set(analogy_runs.EXPORTED_MODELS) and settings["street_size"] == SIZE
    images = analogy_runs.source_images(settings)
    trained, _ = analogy_runs.train_model("sft", images[0], settings, "cpu", run_dir,
                                          analogy_runs.patch_features(settings, "cpu"), progress=False)
    edit = images[0]["edits"][0]["labels"]
    loaded = analogy_runs.analogy_output("sft", generators["sft"], images[0], edit)
    assert torch.allclose(loaded, analogy_runs.analogy_output("sft", trained, images[0], edit), atol=2e-2)
    segmenter = analogy_runs.load_evaluation_segmenter(export / "street3.pt")
    assert segmenter(images[0]["image"][None]).shape == (1, NUM_CLASSES, *SIZE)


def test_load_models_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="analogy_runs"):
        analogy_runs.load_models(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        analogy_runs.load_models(bad)


def test_run_rejects_unknown_models_and_profiles(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        analogy_runs.run("smoke", models=("sft", "sft_v2"), run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="profile"):
        analogy_runs.run("huge", run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="export"):
        analogy_runs.run("smoke", models=("no_sft",), run_dir=tmp_path, export=True, progress=False)
    assert not any(tmp_path.iterdir())


def _record(**overrides):
    base = {key: 0.5 for key in analogy_runs.METRIC_KEYS}
    metrics = {name: dict(base) for name in analogy.MODEL_NAMES}
    for name, changes in overrides.items():
        metrics[name].update(changes)
    return {"metrics": metrics, "reference": {"source_copy": {"appearance_distance": 0.0}}}


def test_claims_follow_the_numbers():
    lower = dict.fromkeys(analogy_runs.LOWER_IS_BETTER, 0.1)
    better = {key: 0.9 for key in analogy_runs.METRIC_KEYS} | lower
    assert {r["verdict"] for r in analogy_runs.claims(_record(sft=better))} == {"holds"}
    worse = {key: 0.1 for key in analogy_runs.METRIC_KEYS} | dict.fromkeys(analogy_runs.LOWER_IS_BETTER, 0.9)
    assert {r["verdict"] for r in analogy_runs.claims(_record(sft=worse))} == {"does not hold"}
    record = _record(sft=better)
    del record["metrics"]["no_fixed_point"]
    verdicts = {r["claim"]: r["verdict"] for r in analogy_runs.claims(record)}
    assert verdicts["fixed point"] == "not measured"


BOOK_RECORD = analogy_runs.record_dir("book") / "metrics.json"


@pytest.mark.skipif(not BOOK_RECORD.is_file(), reason="no committed book record")
def test_committed_book_artefacts_match_the_book_images():
    settings = analogy.PROFILES["book"]
    record = analogy_runs.read_record("book")
    images = analogy_runs.source_images(settings, record["provenance"]["seed"])
    assert set(record["metrics"]["sft"]["per_image"]) == {image["name"] for image in images}
    for image in images:
        generators, saved = analogy_runs.load_models(analogy_runs.exported_path("book", image["name"]))
        assert set(generators) == set(analogy_runs.EXPORTED_MODELS) and saved["width"] == settings["width"]
        assert generators["sft"].num_classes == image["num_classes"]
        segmenter = analogy_runs.load_evaluation_segmenter(analogy_runs.exported_path("book", image["name"]))
        assert segmenter(image["image"][None]).shape[1] == image["num_classes"]
        assert analogy_runs.exported_path("book", image["name"]).stat().st_size < 12 * 2 ** 20


def test_a_resumed_run_logs_what_an_uninterrupted_one_does(tmp_path, monkeypatch):
    """The logs' moving averages travel in the checkpoint (the trainer's extra state): resumed at
    iteration 7, the entry at step 10 still holds the reconstruction term of iterations 0 and 5.
    Without it the full profile's notebook failed on a resumed history (found by the dry run)."""
    from labkit import select_profile

    settings = dict(select_profile(analogy.PROFILES, "smoke"), iterations=12)
    image = analogy_runs.source_images(settings, 0)[0]
    features = analogy_runs.patch_features(settings, "cpu")
    _, whole = analogy_runs.train_model("sft", image, settings, "cpu", tmp_path / "whole", features, progress=False)
    monkeypatch.setenv("LABKIT_STOP_AFTER_STEPS", "7")
    _, first = analogy_runs.train_model("sft", image, settings, "cpu", tmp_path / "parts", features, progress=False)
    monkeypatch.delenv("LABKIT_STOP_AFTER_STEPS")
    _, resumed = analogy_runs.train_model("sft", image, settings, "cpu", tmp_path / "parts", features, progress=False)
    assert first.steps_done == 7 and resumed.resumed_from == 7 and resumed.finished
    assert [sorted(h) for h in resumed.history] == [sorted(h) for h in whole.history]
    assert "reconstruction" in resumed.history[0]
    for got, want in zip(resumed.history, whole.history):
        assert got == pytest.approx(want, rel=1e-4, abs=1e-6)
