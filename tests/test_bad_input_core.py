"""Bad input at the public entries of the data, metrics, judge, features, networks, plotting,
synthesis, pix2pix and bench modules fails at the boundary, with a ValueError (or
FileNotFoundError / IndexError / the module's own ValueError subclass) whose message names
the argument, and valid edge inputs (a batch of one, the smallest sizes) still work.

Each row of ``CASES`` is one public call with one bad input: (name, call, error type, a
regular expression the message must match, which names the argument)."""
import re
import tempfile
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from labkit import bench, features, metrics, networks, pix2pix, plotting, synthesis  # noqa: E402
from labkit.data import (StreetScenes, check_label_map, collate_scenes, colorize, render_batch,  # noqa: E402
                         sample_scene)
from labkit.data import real, render, textures  # noqa: E402
from labkit.judge import JudgeNet, degrade, evaluate, load_judge, train_judge  # noqa: E402

SIZE = (32, 64)
NAN = float("nan")

torch.manual_seed(0)
IMAGES = torch.rand(2, 3, *SIZE)
LABELS = torch.randint(0, 9, (2, *SIZE))
LAYOUT = networks.one_hot_layout(LABELS)
# An untrained judge of the committed architecture but tiny widths: the checks, not the scores, matter here.
JUDGE = JudgeNet(widths=(4, 4, 4, 4)).eval()
GENERATOR = pix2pix.UNetGenerator(SIZE, base_width=4)
DISCRIMINATOR = pix2pix.PatchDiscriminator(base_width=4)
PIX2PIX = pix2pix.Pix2Pix(SIZE, generator_width=4, discriminator_width=4)
D_OPTIMIZER = PIX2PIX.optimizers()[1]
SCENES = synthesis.SceneTensors((IMAGES * 255).round().to(torch.uint8), LABELS.to(torch.uint8))


def scene():
    return StreetScenes(SIZE).scene(0)


def scene_with_bus():
    edited = scene()
    edited.things[0].kind = "bus"
    return edited


def checked_train_judge(**arguments):
    """train_judge with its outputs in a scratch folder: should a check ever let a bad call through,
    it must not overwrite the committed judge."""
    scratch = Path(tempfile.gettempdir()) / "labkit-bad-input-judge"
    return train_judge(out=scratch / "judge.pt", workdir=scratch, **arguments)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def constant_sample(value):
    return lambda layout: torch.full((len(layout), 1, 3, *layout.shape[-2:]), value)


CASES = {
    "empty batch or zero count": [
        ("render_batch count 0", lambda: render_batch(SIZE, 0), ValueError, "count must be a positive integer, got 0"),
        ("collate_scenes []", lambda: collate_scenes([]), ValueError, "samples must not be empty"),
        ("fcn_score empty", lambda: metrics.fcn_score(IMAGES[:0], LABELS[:0], judge=JUDGE), ValueError,
         "images must not be empty"),
        ("judge.predict empty", lambda: JUDGE.predict(IMAGES[:0]), ValueError, "images must not be empty"),
        ("judge_embeddings empty", lambda: metrics.judge_embeddings(IMAGES[:0], JUDGE), ValueError, "images"),
        ("perceptual_distance empty", lambda: metrics.perceptual_distance(IMAGES[:0], IMAGES[:0], JUDGE),
         ValueError, "images_a"),
        ("psnr empty", lambda: metrics.psnr(IMAGES[:0], IMAGES[:0]), ValueError, "images"),
        ("UNetGenerator 0-batch", lambda: GENERATOR(LAYOUT[:0]), ValueError, r"layout .*N ≥ 1"),
        ("UNetGenerator.sample 0 samples", lambda: GENERATOR.sample(LAYOUT, 0), ValueError, "samples"),
        ("feature extractor empty", lambda: features.JudgeFeatures(JudgeNet(widths=(4, 4)))(IMAGES[:0]), ValueError,
         "images"),
        ("training_scenes count 0", lambda: synthesis.training_scenes(SIZE, 0), ValueError, "count"),
        ("scene_batch batch_size 0", lambda: synthesis.scene_batch(SCENES, 0, 0), ValueError, "batch_size"),
        ("generate no labels", lambda: synthesis.generate(constant_sample(0.5), LABELS[:0]), ValueError, "labels"),
        ("real_scene_scores count 1", lambda: synthesis.real_scene_scores(SIZE, 1, judge=JUDGE), ValueError,
         "count"),
        ("metric_table count 0", lambda: bench.metric_table(SIZE, 0, 4, judge=JUDGE), ValueError, "count"),
        ("show_grid []", lambda: plotting.show_grid([]), ValueError, "rows"),
        ("smooth_noise no grids", lambda: textures.smooth_noise([], 8, 16), ValueError, "grids"),
        ("JudgeNet widths []", lambda: JudgeNet(widths=[]), ValueError, "widths"),
        ("VGG19Features layers []", lambda: features.VGG19Features(layers=[]), ValueError, "layers"),
    ],
    "zero, negative or too small size": [
        ("ssim 4x4", lambda: metrics.ssim(torch.rand(1, 3, 4, 4), torch.rand(1, 3, 4, 4)), ValueError,
         r"images must be at least 11×11 .* got 4×4"),
        ("render_scene height 0", lambda: render.render_scene(scene(), 0), ValueError, "height"),
        ("texture_stack 0", lambda: textures.texture_stack(0), ValueError, "height"),
        ("one_hot_layout size (0, 4)", lambda: networks.one_hot_layout(LABELS, size=(0, 4)), ValueError, "size"),
        ("one_hot_layout upsampling", lambda: networks.one_hot_layout(LABELS, size=(64, 128)), ValueError,
         "size must be at most"),
        ("judge 4x4", lambda: JUDGE.encoder_features(torch.rand(1, 3, 4, 4)), ValueError, "images must be at least 8"),
        ("PatchDiscriminator 16x16", lambda: DISCRIMINATOR(LAYOUT[..., :16, :16], IMAGES[..., :16, :16]),
         ValueError, "images must be at least 24×24"),
        ("Pix2Pix output_size too small", lambda: pix2pix.Pix2Pix((16, 32), 9, 4, 4), ValueError, "output_size"),
        ("LayerNorm2d 0 channels", lambda: networks.LayerNorm2d(0), ValueError, "channels"),
        ("UNetGenerator base_width 0", lambda: pix2pix.UNetGenerator(SIZE, base_width=0), ValueError, "base_width"),
        ("PatchDiscriminator layers 0", lambda: pix2pix.PatchDiscriminator(layers=0), ValueError, "layers"),
        ("show_grid scale 0", lambda: plotting.show_grid([[IMAGES[0]]], scale=0), ValueError, "scale"),
        ("write_png dpi -1", lambda: plotting.write_png(plt.figure(), "unused.png", dpi=-1), ValueError, "dpi"),
        ("train_judge steps 0", lambda: checked_train_judge(steps=0), ValueError, "steps"),
        ("train_judge batch_size 2", lambda: checked_train_judge(batch_size=2), ValueError, "batch_size"),
        ("train_judge fewer scenes than a batch", lambda: checked_train_judge(scenes=(4, 4)), ValueError, r"scenes\[0\]"),
        ("judge_embeddings batch_size 0", lambda: metrics.judge_embeddings(IMAGES, JUDGE, batch_size=0),
         ValueError, "batch_size"),
        ("predict batch_size 0", lambda: JUDGE.predict(IMAGES, batch_size=0), ValueError, "batch_size"),
        ("metric_table frechet_count < count", lambda: bench.metric_table(SIZE, 4, 2, judge=JUDGE), ValueError,
         "frechet_count"),
    ],
    "size not a multiple the network needs": [
        ("fcn_score 30x60", lambda: metrics.fcn_score(torch.rand(1, 3, 30, 60), torch.zeros(1, 30, 60, dtype=torch.long),
                                                      judge=JUDGE), ValueError, "images must have H and W divisible by 8"),
        ("judge.predict 30x60", lambda: JUDGE.predict(torch.rand(1, 3, 30, 60)), ValueError, "images .*divisible by 8"),
        ("UNetGenerator (33, 64)", lambda: pix2pix.UNetGenerator((33, 64)), ValueError, "output_size"),
        ("StreetScenes 1:1 size", lambda: StreetScenes(size=(64, 64)), ValueError, "size"),
        ("score_synthesis 36x72", lambda: synthesis.score_synthesis(torch.rand(2, 1, 3, 36, 72),
                                                                    torch.zeros(2, 36, 72, dtype=torch.long),
                                                                    torch.rand(2, 3, 36, 72), judge=JUDGE),
         ValueError, "divisible by 8"),
    ],
    "wrong type": [
        ("StreetScenes seed 'abc'", lambda: StreetScenes(seed="abc"), ValueError, "seed"),
        ("StreetScenes size floats", lambda: StreetScenes(size=(32.5, 65.0)), ValueError, "size"),
        ("StreetScenes size strings", lambda: StreetScenes(size=("32", "64")), ValueError, "size"),
        ("StreetScenes[1.5]", lambda: StreetScenes(SIZE)[1.5], ValueError, "index"),
        ("StreetScenes['a']", lambda: StreetScenes(SIZE)["a"], ValueError, "index"),
        ("StreetScenes.render remove=3", lambda: StreetScenes(SIZE).render(0, remove=3), ValueError, "remove"),
        ("StreetScenes.render scene=1", lambda: StreetScenes(SIZE).render(0, scene=1), ValueError, "scene"),
        ("sample_scene(seed)", lambda: sample_scene(3), ValueError, "rng"),
        ("degrade(rng=seed)", lambda: degrade(IMAGES, 3), ValueError, "rng"),
        ("collate_scenes of ints", lambda: collate_scenes([1, 2]), ValueError, r"samples\[0\]"),
        ("scores_from_confusion list", lambda: metrics.scores_from_confusion([[1, 0], [0, 1]]), ValueError,
         "confusion"),
        ("frechet embeddings list", lambda: metrics.frechet_distance_from_embeddings([[1.0]], [[1.0]]), ValueError,
         r"\ba must be a tensor"),
        ("fcn_score judge 'x'", lambda: metrics.fcn_score(IMAGES, LABELS, judge="x"), ValueError, "judge"),
        ("JudgeFeatures judge 'x'", lambda: features.JudgeFeatures("x"), ValueError, "judge"),
        ("VGG19Features layer 1", lambda: features.VGG19Features(layers=[1]), ValueError, "layers"),
        ("load_judge path 3", lambda: load_judge(path=3), ValueError, "path"),
        ("from_weights path 3", lambda: features.VGG19Features.from_weights(3), ValueError, "path"),
        ("resize_layout int tensor", lambda: networks.resize_layout(LABELS[:, None], (8, 16)), ValueError, "layout"),
        ("count_parameters str", lambda: networks.count_parameters("net"), ValueError, "module"),
        ("lsgan_loss real 'yes'", lambda: pix2pix.lsgan_loss(torch.rand(2), "yes"), ValueError, "real"),
        ("lsgan_loss scores list", lambda: pix2pix.lsgan_loss([1.0], True), ValueError, "scores"),
        ("Pix2Pix.loss optimizer None", lambda: PIX2PIX.loss(LAYOUT, IMAGES, None), ValueError,
         "discriminator_optimizer"),
        ("UNetSkipBlock outermost without out_channels", lambda: pix2pix.UNetSkipBlock(3, 4, outermost=True),
         ValueError, "out_channels"),
        ("scene_batch scenes 'x'", lambda: synthesis.scene_batch("x", 0, 2), ValueError, "scenes"),
        ("scene_batch flip 'no'", lambda: synthesis.scene_batch(SCENES, 0, 2, flip="no"), ValueError, "flip"),
        ("training_scenes count 1.5", lambda: synthesis.training_scenes(SIZE, 1.5), ValueError, "count"),
        ("generate sample 3", lambda: synthesis.generate(3, LABELS), ValueError, "sample"),
        ("SceneTensors float images", lambda: synthesis.SceneTensors(IMAGES, LABELS.to(torch.uint8)), ValueError,
         "images"),
        ("to_numpy_image 4-d", lambda: plotting.to_numpy_image(IMAGES), ValueError, "image"),
        ("to_numpy_image float (H, W)", lambda: plotting.to_numpy_image(torch.rand(4, 4)), ValueError, "image"),
        ("colorize float", lambda: colorize(np.zeros((4, 4))), ValueError, "label"),
        ("colorize_instances float", lambda: plotting.colorize_instances(np.full((4, 4), 0.5)), ValueError,
         "instances"),
        ("plot_confusion not square", lambda: plotting.plot_confusion(np.ones((9, 8))), ValueError, "confusion"),
        ("plot_history missing key", lambda: plotting.plot_history([{"step": 1, "loss": 1.0}], keys=("d_loss",)),
         ValueError, r"history\[0\] lacks \['d_loss'\]"),
        ("draw_boxes without box", lambda: plotting.draw_boxes(plt.figure().gca(), [{"order": 0}]), ValueError,
         r"objects\[0\]"),
        ("write_png fig 'x'", lambda: plotting.write_png("x", "unused.png"), ValueError, "fig"),
        ("evaluate sizes (32, 64)", lambda: evaluate(JUDGE, sizes=(32, 64), count=1), ValueError, "sizes"),
        ("texture_crops offsets (2, 2)", lambda: textures.texture_crops(np.zeros((2, 2)), 32, 64), ValueError,
         "offsets"),
    ],
    "bool or float where an int is expected": [
        ("StreetScenes length 2.5", lambda: StreetScenes(length=2.5), ValueError, "length"),
        ("StreetScenes seed 1.5", lambda: StreetScenes(seed=1.5), ValueError, "seed"),
        ("StreetScenes size (True, 2)", lambda: StreetScenes(size=(True, 2)), ValueError, "size"),
        ("StreetScenes.scene(1.5)", lambda: StreetScenes(SIZE).scene(1.5), ValueError, "index"),
        ("render_batch count 1.5", lambda: render_batch(SIZE, 1.5), ValueError, "count"),
        ("render_batch count True", lambda: render_batch(SIZE, True), ValueError, "count"),
        ("render_scene height 32.5", lambda: render.render_scene(scene(), 32.5), ValueError, "height"),
        ("UNetGenerator depth 2.5", lambda: pix2pix.UNetGenerator(SIZE, depth=2.5), ValueError, "depth"),
        ("JudgeNet widths [4.0]", lambda: JudgeNet(widths=[4.0, 4]), ValueError, "widths"),
        ("ImageLabelFolder label_offset 1.5", lambda: real.ImageLabelFolder(".", label_offset=1.5), ValueError,
         "label_offset"),
    ],
    "negative count or index": [
        ("render_batch start -1", lambda: render_batch(SIZE, 1, start=-1), ValueError, "start"),
        ("StreetScenes seed -1", lambda: StreetScenes(seed=-1), ValueError, "seed"),
        ("StreetScenes length -1", lambda: StreetScenes(length=-1), ValueError, "length"),
        ("scene_batch step -1", lambda: synthesis.scene_batch(SCENES, -1, 2), ValueError, "step"),
        ("training_scenes seed -1", lambda: synthesis.training_scenes(SIZE, 2, seed=-1), ValueError, "seed"),
        ("PatchDiscriminator num_classes -1", lambda: pix2pix.PatchDiscriminator(num_classes=-1), ValueError,
         "num_classes"),
        ("colorize_instances -3", lambda: plotting.colorize_instances(np.full((4, 4), -3)), ValueError, "instances"),
        ("scores_from_confusion negative", lambda: metrics.scores_from_confusion(-torch.ones(9, 9)), ValueError,
         "confusion must hold non-negative counts"),
        ("StreetScenes[-10] past the start", lambda: StreetScenes(SIZE, length=3)[-10], IndexError, "index"),
    ],
    "wrong shape, ndim or channel count": [
        ("confusion_matrix shapes differ", lambda: metrics.confusion_matrix(LABELS[0], LABELS[0, :16]), ValueError,
         "prediction .* and target .* must match"),
        ("scores_from_confusion (9,)", lambda: metrics.scores_from_confusion(torch.zeros(9)), ValueError, "confusion"),
        ("scores_from_confusion (9, 8)", lambda: metrics.scores_from_confusion(torch.zeros(9, 8)), ValueError,
         "confusion must be a square"),
        ("judge.predict 2 channels", lambda: JUDGE.predict(IMAGES[:, :2]), ValueError, r"images must have shape"),
        ("judge.predict (3, H, W)", lambda: JUDGE.predict(IMAGES[0]), ValueError, r"images must have shape"),
        ("JudgeNet forward 2 channels", lambda: JUDGE(IMAGES[:, :2]), ValueError, "images"),
        ("frechet_distance images_b 1 channel", lambda: metrics.frechet_distance(IMAGES, IMAGES[:, :1], JUDGE),
         ValueError, "images_b"),
        ("PatchDiscriminator 2-channel images", lambda: DISCRIMINATOR(LAYOUT, IMAGES[:, :2]), ValueError, "images"),
        ("PatchDiscriminator 3-class layout", lambda: DISCRIMINATOR(LAYOUT[:, :3], IMAGES), ValueError, "layout"),
        ("Pix2Pix.loss batch mismatch", lambda: PIX2PIX.loss(LAYOUT, IMAGES[:1], D_OPTIMIZER), ValueError, "images"),
        ("resize_layout (C, H, W)", lambda: networks.resize_layout(LAYOUT[0], (8, 16)), ValueError, "layout"),
        ("collate_scenes two sizes", lambda: collate_scenes([StreetScenes(SIZE)[0], StreetScenes((64, 128))[0]]),
         ValueError, "samples must all have the same size"),
        ("score_synthesis 2-channel outputs", lambda: synthesis.score_synthesis(torch.rand(2, 1, 2, *SIZE), LABELS,
                                                                                IMAGES, judge=JUDGE),
         ValueError, "outputs"),
        ("score_synthesis real of 1", lambda: synthesis.score_synthesis(torch.rand(2, 1, 3, *SIZE), LABELS,
                                                                        IMAGES[:1], judge=JUDGE), ValueError, "real"),
        ("generate sample returns (N, 3, H, W)", lambda: synthesis.generate(lambda layout: layout[:, :3], LABELS),
         ValueError, "sample must return"),
        ("perturbations 1 channel", lambda: bench.perturbations(IMAGES[:, :1], LABELS), ValueError, "images"),
        ("plot_confusion 12 classes", lambda: plotting.plot_confusion(np.ones((12, 12))), ValueError, "confusion"),
        ("show_grid short row_labels", lambda: plotting.show_grid([[IMAGES[0]], [IMAGES[1]]], row_labels=["a"]),
         ValueError, "row_labels"),
        ("smooth_noise 1x1 grid", lambda: textures.smooth_noise([np.zeros((1, 1), np.float32)], 8, 16), ValueError,
         r"grids\[0\]"),
    ],
    "label ids out of range": [
        ("confusion_matrix prediction 12", lambda: metrics.confusion_matrix(torch.full((4, 4), 12),
                                                                            torch.zeros(4, 4, dtype=torch.long)),
         ValueError, "prediction has class ids out of range"),
        ("confusion_matrix target -1", lambda: metrics.confusion_matrix(LABELS, LABELS - 1), ValueError,
         "target has class ids out of range"),
        ("confusion_matrix num_classes 0", lambda: metrics.confusion_matrix(LABELS, LABELS, 0), ValueError,
         "num_classes"),
        ("segmentation_scores num_classes 0", lambda: metrics.segmentation_scores(LABELS, LABELS, 0), ValueError,
         "num_classes"),
        ("one_hot_layout num_classes 0", lambda: networks.one_hot_layout(LABELS, 0), ValueError, "num_classes"),
        ("colorize -1", lambda: colorize(np.full((4, 4), -1)), ValueError, "label has class ids out of range"),
        ("colorize 20", lambda: colorize(np.full((4, 4), 20)), ValueError, "label has class ids out of range"),
        ("flat_label_images 255", lambda: bench.flat_label_images(torch.full((1, 4, 4), 255)), ValueError, "labels"),
        ("score_synthesis labels 20", lambda: synthesis.score_synthesis(torch.rand(2, 1, 3, *SIZE), LABELS + 20,
                                                                        IMAGES, judge=JUDGE), ValueError, "labels"),
        ("ImageLabelFolder num_classes 0", lambda: real.ImageLabelFolder(".", num_classes=0), ValueError,
         "num_classes"),
        ("render_scene unknown kind", lambda: render.render_scene(scene_with_bus(), 32), ValueError,
         r"scene.things\[0\] .*'bus'"),
    ],
    "NaN or inf": [
        ("judge.predict NaN", lambda: JUDGE.predict(IMAGES * NAN), ValueError, "images contains NaN"),
        ("UNetGenerator NaN layout", lambda: GENERATOR(LAYOUT * NAN), ValueError, "layout contains NaN"),
        ("Pix2Pix.loss NaN images", lambda: PIX2PIX.loss(LAYOUT, IMAGES * NAN, D_OPTIMIZER), ValueError,
         "images contains NaN"),
        ("scores_from_confusion NaN", lambda: metrics.scores_from_confusion(torch.full((9, 9), NAN)), ValueError,
         "confusion contains NaN"),
        ("frechet embeddings NaN", lambda: metrics.frechet_distance_from_embeddings(torch.full((5, 3), NAN),
                                                                                     torch.rand(5, 3)),
         ValueError, r"\ba contains NaN"),
        ("score_synthesis NaN outputs", lambda: synthesis.score_synthesis(torch.full((2, 1, 3, *SIZE), NAN), LABELS,
                                                                          IMAGES, judge=JUDGE), ValueError, "outputs"),
        ("generate sample returns NaN", lambda: synthesis.generate(constant_sample(NAN), LABELS), ValueError,
         "sample returned NaN"),
        ("features_to_rgb NaN", lambda: plotting.features_to_rgb(torch.full((4, 4, 4), NAN)), ValueError, "features"),
        ("to_numpy_image NaN", lambda: plotting.to_numpy_image(torch.full((3, 4, 4), NAN)), ValueError, "image"),
        ("Pix2Pix l1_weight NaN", lambda: pix2pix.Pix2Pix(SIZE, l1_weight=NAN), ValueError, "l1_weight"),
        ("smooth_noise inf grid", lambda: textures.smooth_noise([np.full((4, 4), np.inf)], 8, 16), ValueError,
         r"grids\[0\]"),
    ],
    "values out of the documented range": [
        ("Pix2Pix.loss images in [-1, 3]", lambda: PIX2PIX.loss(LAYOUT, IMAGES * 4 - 1, D_OPTIMIZER), ValueError,
         r"images must have values in \[0, 1\]"),
        ("UNetGenerator layout in [0, 3]", lambda: GENERATOR(LAYOUT * 3), ValueError, r"layout must have values in"),
        ("PatchDiscriminator images ×4", lambda: DISCRIMINATOR(LAYOUT, IMAGES * 4), ValueError, "images"),
        ("judge forward images ×5", lambda: JUDGE(IMAGES * 5), ValueError, r"images must have values in \[0, 1\]"),
        ("score_synthesis outputs 4", lambda: synthesis.score_synthesis(torch.full((2, 1, 3, *SIZE), 4.0), LABELS,
                                                                        IMAGES, judge=JUDGE), ValueError, "outputs"),
        ("texture_crops offsets 5", lambda: textures.texture_crops(np.full((6, 2), 5.0), 32, 64), ValueError,
         "offsets"),
        ("Pix2Pix l1_weight -1", lambda: pix2pix.Pix2Pix(SIZE, l1_weight=-1), ValueError, "l1_weight"),
        ("Pix2Pix learning_rate 0", lambda: PIX2PIX.optimizers(0), ValueError, "learning_rate"),
        ("LayerNorm2d eps -1", lambda: networks.LayerNorm2d(4, eps=-1), ValueError, "eps"),
        ("train_judge lr -1", lambda: checked_train_judge(lr=-1), ValueError, "lr"),
    ],
    "unknown name or choice": [
        ("StreetScenes split 'training'", lambda: StreetScenes(split="training"), ValueError, "split"),
        ("render_batch split 'x'", lambda: render_batch(SIZE, 1, split="x"), ValueError, "split"),
        ("evaluate split 'x'", lambda: evaluate(JUDGE, sizes=(SIZE,), count=1, split="x"), ValueError, "split"),
        ("VGG19Features pool 'median'", lambda: features.VGG19Features(pool="median"), ValueError, "pool"),
        ("VGG19Features.from_weights bad layer before reading", lambda: features.VGG19Features.from_weights(
            "/nonexistent.pth", layers=("conv9_9",)), ValueError, "layers"),
        ("JudgeFeatures layer 'enc9'", lambda: features.JudgeFeatures(JUDGE, layers="enc9"), ValueError, "layers"),
        ("load_feature_extractor kind 3", lambda: features.load_feature_extractor(3), ValueError, "kind"),
        ("CityscapesDataset split 3", lambda: real.CityscapesDataset(".", split=3), ValueError, "split"),
        ("ImageLabelFolder images None", lambda: real.ImageLabelFolder(".", images=None), ValueError, "images"),
    ],
    "bad device": [
        ("load_judge device 'gpu'", lambda: load_judge(device="gpu"), ValueError, "device"),
        ("load_judge device 3", lambda: load_judge(device=3), ValueError, "device"),
        ("load_feature_extractor device 'gpu'", lambda: features.load_feature_extractor("judge", device="gpu",
                                                                                        verbose=False),
         ValueError, "device"),
        ("generate device 'gpu'", lambda: synthesis.generate(constant_sample(0.5), LABELS, device="gpu"), ValueError,
         "device"),
    ],
}

ROWS = [pytest.param(call, error, match, id=f"{kind}: {name}")
        for kind, rows in CASES.items() for name, call, error, match in rows]


@pytest.mark.parametrize("call, error, match", ROWS)
def test_bad_input_fails_at_the_boundary_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_every_kind_of_bad_input_has_rows():
    assert all(len(rows) >= 4 for rows in CASES.values()), {kind: len(rows) for kind, rows in CASES.items()}


# --- real-data loaders -----------------------------------------------------------------------

H, W = 16, 32


def _folder(root, images: dict):
    """root/images/<name> written by the callables in ``images``, each with an all-zero label PNG."""
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    for name, write in images.items():
        write(root / "images" / name)
        Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "annotations" / f"{name.rsplit('.', 1)[0]}.png")
    return root


def _rgb(path):
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)).save(path)


@pytest.mark.parametrize("size", [(0, 4), (8,), "ab", (8.0, 16.0), (True, 8)])
def test_real_loaders_reject_a_bad_size_in_the_constructor(tmp_path, size):
    root = _folder(tmp_path, {"a.png": _rgb})
    with pytest.raises(ValueError, match="size"):
        real.ImageLabelFolder(root, size=size)
    with pytest.raises(ValueError, match="size"):
        real.CityscapesDataset(root, size=size)   # the size is checked before the (missing) folders


def test_truncated_or_corrupt_image_raises_our_error_naming_the_file(tmp_path):
    def truncated(path):
        Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 128, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[:-200])   # the header survives, the pixel data does not

    def garbage(path):
        path.write_bytes(b"not an image at all")

    def label_only(path):
        _rgb(path)

    root = tmp_path / "set"
    (root / "images").mkdir(parents=True)
    (root / "annotations").mkdir()
    truncated(root / "images" / "a.png")
    Image.fromarray(np.zeros((64, 128), np.uint8)).save(root / "annotations" / "a.png")
    garbage(root / "images" / "b.jpg")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "annotations" / "b.png")
    label_only(root / "images" / "c.png")
    (root / "annotations" / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    ds = real.ImageLabelFolder(root)
    for index, name in enumerate(("images/a.png", "images/b.jpg", "annotations/c.png")):
        with pytest.raises(real.ImageFileError, match=re.escape(str(root / name))):
            ds[index]
    assert issubclass(real.ImageFileError, ValueError)


def test_sixteen_bit_greyscale_photo_is_scaled_by_its_bit_depth(tmp_path):
    ramp = (np.tile(np.arange(W), (H, 1)) * 2000).astype(np.uint16)   # up to 62000: far above 8 bits
    root = _folder(tmp_path, {"a.png": lambda path: Image.fromarray(ramp).save(path)})
    image = real.ImageLabelFolder(root)[0]["image"]
    assert image.shape == (3, H, W) and image.dtype == torch.float32
    expected = torch.from_numpy(ramp.astype(np.float32) / 65535)
    for channel in image:
        assert torch.allclose(channel, expected, atol=1e-6)
    assert float(image.max()) < 0.95   # not saturated to white, as convert("RGB") would
    half = real.ImageLabelFolder(root, size=(H // 2, W // 2))[0]["image"]
    assert half.shape == (3, H // 2, W // 2) and 0 <= float(half.min()) and float(half.max()) <= 1


def test_real_loader_index_is_checked(tmp_path):
    ds = real.ImageLabelFolder(_folder(tmp_path, {"a.png": _rgb}))
    assert ds[0]["image"].shape == (3, H, W) and ds[-1]["path"] == ds[0]["path"]
    with pytest.raises(IndexError, match="index 1 out of range"):
        ds[1]
    with pytest.raises(ValueError, match="index"):
        ds[0.5]


def test_cityscapes_id_maps_reject_float_arrays():
    with pytest.raises(ValueError, match="instance_ids"):
        real.CityscapesDataset.map_instance_ids(np.zeros((2, 2)))


# --- valid edge inputs still work --------------------------------------------------------------

def test_a_batch_of_one_and_the_smallest_sizes_still_work():
    images, labels = render_batch(SIZE, 1)
    assert images.shape == (1, 3, *SIZE) and labels.shape == (1, *SIZE)
    batch = collate_scenes([StreetScenes(SIZE)[0]])
    assert batch["image"].shape == (1, 3, *SIZE) and len(batch["objects"]) == 1
    assert JUDGE.predict(images).shape == (1, *SIZE)
    assert set(metrics.fcn_score(images, labels, judge=JUDGE)) == {"miou", "pixel_accuracy"}
    assert GENERATOR(networks.one_hot_layout(labels)).shape == (1, 3, *SIZE)
    assert GENERATOR.sample(networks.one_hot_layout(labels), 2).shape == (1, 2, 3, *SIZE)
    assert metrics.ssim(torch.rand(1, 3, 11, 11), torch.rand(1, 3, 11, 11)) < 1
    assert metrics.psnr(images.clamp(0.1, 0.9), images) > 0
    assert JUDGE.encoder_features(torch.rand(1, 3, 8, 8))[-1].shape[-2:] == (1, 1)
    assert metrics.confusion_matrix(labels.flatten(), labels.flatten()).sum() == labels.numel()   # flat pixels too
    assert bench.flat_label_images(labels).shape == (1, 3, *SIZE)


def test_ignored_pixels_and_edge_values_are_still_accepted():
    labels = LABELS.clone()
    labels[:, :4] = 255
    assert colorize(labels[0].numpy())[:4].max() == 0                  # ignored pixels stay black
    assert networks.one_hot_layout(labels)[:, :, :4].sum() == 0
    assert metrics.confusion_matrix(LABELS, labels).sum() == int((labels != 255).sum())
    edges = torch.zeros(1, 3, *SIZE)
    edges[..., 0] = 1.0                                                 # exactly 0 and 1
    assert JUDGE.predict(edges).shape == (1, *SIZE)
    assert check_label_map(np.zeros((2, 2), np.uint16)).dtype == torch.int64


def test_pix2pix_loss_is_unchanged_by_the_checks():
    """The checked public loss computes exactly what its unchecked inner calls do."""
    torch.manual_seed(1)
    model = pix2pix.Pix2Pix(SIZE, generator_width=4, discriminator_width=4).eval()   # eval: no dropout noise
    _, d_optimizer = model.optimizers()
    before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    loss, logs = model.loss(LAYOUT, IMAGES, d_optimizer)
    model.discriminator.load_state_dict(before)
    fake = model.generator._generate(LAYOUT)
    d = model.discriminator
    expected_d = 0.5 * (model._gan_loss(d._logits(LAYOUT, IMAGES), True)
                        + model._gan_loss(d._logits(LAYOUT, fake.detach()), False))
    assert logs["d_loss"] == float(expected_d.detach())
    assert torch.equal(model.generator(LAYOUT), fake)
    assert torch.equal(DISCRIMINATOR(LAYOUT, IMAGES), DISCRIMINATOR._logits(LAYOUT, IMAGES))
    assert torch.isfinite(loss)
