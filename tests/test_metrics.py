"""The metrics say what they should about images whose quality we know."""
import math

import pytest
import torch

from labkit import bench, metrics
from labkit.data import NUM_CLASSES, render_batch


@pytest.fixture(scope="module")
def real():
    return render_batch((64, 128), 32, split="test")


def test_segmentation_scores_from_a_known_confusion():
    target = torch.tensor([[0, 0, 1, 1]])
    prediction = torch.tensor([[0, 1, 1, 1]])
    scores = metrics.segmentation_scores(prediction, target)
    # class 0: IoU 1/2; class 1: IoU 2/3
    assert scores["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 4)
    assert math.isnan(scores["per_class_iou"]["car"])


def test_ignored_pixels_do_not_count():
    target = torch.tensor([[0, 255, 255, 1]])
    prediction = torch.tensor([[0, 1, 0, 1]])
    assert metrics.segmentation_scores(prediction, target)["pixel_accuracy"] == 1.0


def test_fcn_score_is_high_for_real_scenes_and_drops_with_heavy_blur(real):
    images, labels = real
    clean = metrics.fcn_score(images, labels)
    assert set(clean) == {"miou", "pixel_accuracy"}
    blurred = bench.perturbations(images, labels)["blur σ=3"]
    assert clean["miou"] > 0.85
    assert metrics.fcn_score(blurred, labels)["miou"] < clean["miou"] - 0.1


def test_fcn_score_validates_its_inputs(real):
    images, labels = real
    with pytest.raises(ValueError, match="must match"):
        metrics.fcn_score(images, labels[:, :32])
    with pytest.raises(ValueError, match="out of range"):
        metrics.fcn_score(images, labels + NUM_CLASSES)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.fcn_score(images * 255, labels)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        metrics.fcn_score(images[:, :1], labels)


def test_frechet_distance_is_zero_for_a_set_against_itself_and_grows_with_damage():
    images, labels = render_batch((32, 64), 300, split="test")
    other, _ = render_batch((32, 64), 300, split="val")
    assert metrics.frechet_distance(images, images) == pytest.approx(0.0, abs=1e-6)
    floor = metrics.frechet_distance(images, other)
    blurred = bench.perturbations(images, labels)["blur σ=3"]
    assert metrics.frechet_distance(blurred, other) > 2 * floor


def test_perceptual_distance_and_diversity(real):
    images, _ = real
    assert torch.allclose(metrics.perceptual_distance(images[:4], images[:4]), torch.zeros(4), atol=1e-6)
    assert bool((metrics.perceptual_distance(images[:4], images[4:8]) > 0.05).all())
    assert metrics.diversity(images[:1].repeat(3, 1, 1, 1)) == pytest.approx(0.0, abs=1e-6)
    assert metrics.diversity(images[:3]) > 0.05
    with pytest.raises(ValueError, match="at least 2"):
        metrics.diversity(images[:1])


def test_psnr_and_ssim_order_mild_and_strong_blur(real):
    images, labels = real
    p = bench.perturbations(images, labels)
    assert metrics.psnr(p["blur σ=1"], images) > metrics.psnr(p["blur σ=3"], images)
    assert metrics.ssim(p["blur σ=1"], images) > metrics.ssim(p["blur σ=3"], images)
    assert metrics.ssim(images, images) == pytest.approx(1.0, abs=1e-4)


def test_images_with_nan_or_mismatched_pairs_are_rejected(real):
    images, labels = real
    broken = images.clone()
    broken[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        metrics.fcn_score(broken, labels)
    with pytest.raises(ValueError, match="must match"):
        metrics.psnr(images[:2], images[:3])
    with pytest.raises(ValueError, match="same D"):
        metrics.frechet_distance_from_embeddings(torch.zeros(5, 3), torch.zeros(5, 4))


def test_fewer_samples_than_dimensions_warns():
    with pytest.warns(UserWarning, match="singular"):
        metrics.frechet_distance_from_embeddings(torch.randn(10, 20), torch.randn(10, 20))


def test_score_synthesis_checks_the_outputs_shape():
    from labkit.synthesis import score_synthesis

    labels = torch.zeros(2, 64, 128, dtype=torch.long)
    with pytest.raises(ValueError, match=r"\(N, K, 3, H, W\)"):
        score_synthesis(torch.rand(2, 3, 64, 128), labels, torch.rand(2, 3, 64, 128))
    with pytest.raises(ValueError, match=r"\(N, K, 3, H, W\)"):
        score_synthesis(torch.rand(3, 1, 3, 64, 128), labels, torch.rand(2, 3, 64, 128))
