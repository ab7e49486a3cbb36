"""CRN chapter: the cascade, layer norm, the masked feature-matching loss with the
diversity objective, the pix2pix baseline, the recorded runs and their evaluation."""
import json
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.linalg import LinAlgWarning
from torch import nn

import labkit
from labkit.checkpoints import CheckpointError, load_checkpoint
from labkit.data import IGNORE_INDEX, NUM_CLASSES, render_batch
from labkit.features import VGG19Features
from labkit.metrics import fcn_score
from labkit.networks import LayerNorm2d, count_parameters, one_hot_layout
from labkit.papers import crn, crn_runs
from labkit.papers.crn import (MODEL_NAMES, PAPER_VGG_LAYER_WEIGHTS, PROFILES, CascadedRefinementNetwork,
                               CRNTrainer, FeatureMatchingLoss, RefinementModule, SingleScaleNetwork,
                               cascade_sizes, diversity_objective, masked_layer_distance)
from labkit.pix2pix import Pix2Pix
from labkit.synthesis import evaluate_synthesis
from labkit.train import fit, select_profile

FRECHET_SMALL_SAMPLE = "ignore:Fréchet distance from:UserWarning"


@pytest.fixture(autouse=True)
def _one_thread_and_seeded():
    threads = torch.get_num_threads()
    labkit.setup(seed=0, threads=1)
    yield
    torch.set_num_threads(threads)


def random_labels(n, size, classes=NUM_CLASSES, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, (n, *size), generator=generator)


# ----------------------------------------------------------------------------- the cascade

@pytest.mark.parametrize("size, widths", [((32, 64), (12, 10, 8, 6)), ((64, 128), (12, 10, 8, 6, 4))])
def test_cascade_has_one_feature_map_per_scale_with_the_configured_widths(size, widths):
    network = CascadedRefinementNetwork(size, widths, samples=3)
    layout = one_hot_layout(random_labels(2, size))
    images, trace = network(layout, return_features=True)
    sizes = cascade_sizes(size)
    assert sizes[0] == (4, 8) and sizes[-1] == size and len(sizes) == len(widths)
    assert [tuple(f.shape) for f in trace] == [(2, w, h, v) for w, (h, v) in zip(widths, sizes)]
    assert images.shape == (2, 3, 3, *size)
    assert network.sample(layout).shape == (2, 3, 3, *size)


def test_cascade_sizes_double_from_4x8_and_reject_other_shapes():
    assert cascade_sizes((16, 32)) == [(4, 8), (8, 16), (16, 32)]
    for bad in [(48, 96), (64, 64), (2, 4)]:
        with pytest.raises(ValueError, match="output_size"):
            cascade_sizes(bad)


def test_cascade_needs_one_width_per_module():
    with pytest.raises(ValueError, match="one width per module, 4 for output_size"):
        CascadedRefinementNetwork((32, 64), (8, 8, 8))
    with pytest.raises(ValueError, match="samples"):
        CascadedRefinementNetwork((32, 64), (8, 8, 8, 8), samples=0)


def test_cascade_rejects_layouts_of_the_wrong_shape_naming_the_expected_one():
    network = CascadedRefinementNetwork((32, 64), (4, 4, 4, 4), samples=1)
    expected = rf"\(N, {NUM_CLASSES}, 32, 64\)"
    with pytest.raises(ValueError, match=expected):
        network(torch.zeros(1, NUM_CLASSES, 64, 128))            # wrong size
    with pytest.raises(ValueError, match=expected):
        network(torch.zeros(1, NUM_CLASSES - 1, 32, 64))         # wrong channels
    with pytest.raises(ValueError, match="float one-hot"):
        network(torch.zeros(1, 32, 64, dtype=torch.long))        # a label map, not a layout


def test_refinement_module_sees_upsampled_features_and_area_downsampled_layout():
    layout = one_hot_layout(random_labels(2, (32, 64)))
    previous = torch.randn(2, 5, 4, 8)
    module = RefinementModule(previous_width=5, num_classes=NUM_CLASSES, width=7)
    assert module(previous, layout, (8, 16)).shape == (2, 7, 8, 16)
    assert module.layers[0].in_channels == 5 + NUM_CLASSES

    module.layers = nn.Identity()   # expose the module's input
    seen = module(previous, layout, (8, 16))
    torch.testing.assert_close(seen[:, :5], F.interpolate(previous, size=(8, 16), mode="bilinear",
                                                          align_corners=False))
    torch.testing.assert_close(seen[:, 5:], F.avg_pool2d(layout, 4))   # area ↓ by 4 = mean of 4×4 cells

    first = RefinementModule(previous_width=0, num_classes=NUM_CLASSES, width=7)
    assert first(None, layout, (4, 8)).shape == (2, 7, 4, 8)
    first.layers = nn.Identity()
    torch.testing.assert_close(first(None, layout, (4, 8)), F.avg_pool2d(layout, 8))


def test_cascade_modules_take_the_previous_width_plus_the_classes():
    network = CascadedRefinementNetwork((32, 64), (12, 10, 8, 6), samples=2)
    assert [m.layers[0].in_channels for m in network.refinement_modules] == [
        NUM_CLASSES, 12 + NUM_CLASSES, 10 + NUM_CLASSES, 8 + NUM_CLASSES]
    assert network.head.in_channels == 6 and network.head.out_channels == 3 * 2


# ----------------------------------------------------------------------------- layer norm

def test_layer_norm_normalises_each_sample_over_all_of_its_values():
    norm = LayerNorm2d(4)
    x = torch.randn(3, 4, 5, 6) * 3 + torch.arange(4.0).view(1, 4, 1, 1) * 2   # channels with different means
    y = norm(x)
    torch.testing.assert_close(y.mean(dim=(1, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.var(dim=(1, 2, 3), unbiased=False), torch.ones(3), atol=1e-3, rtol=0)
    # over C·H·W, not per channel: the channels keep their different means
    assert y.mean(dim=(2, 3)).std(dim=1).min() > 0.5


def test_layer_norm_output_of_a_sample_ignores_the_rest_of_the_batch():
    norm = LayerNorm2d(4)
    x = torch.randn(3, 4, 5, 6)
    alone = norm(x[:1])
    others = torch.cat([x[:1], 100 * torch.randn(2, 4, 5, 6) - 7])
    torch.testing.assert_close(norm(x)[:1], alone)
    torch.testing.assert_close(norm(others)[:1], alone)


def test_layer_norm_is_invariant_to_a_per_sample_affine_change_of_its_input():
    norm = LayerNorm2d(4)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(3, 4, 5, 6)
    scale = torch.tensor([0.5, 3.0, 20.0]).view(3, 1, 1, 1)
    shift = torch.tensor([-4.0, 1.0, 9.0]).view(3, 1, 1, 1)
    torch.testing.assert_close(norm(x * scale + shift), norm(x), atol=2e-4, rtol=1e-4)
    assert norm.weight.shape == (4,) and norm.bias.shape == (4,)


# ----------------------------------------------------------------------------- layouts

def test_one_hot_layout_gives_ignored_pixels_an_all_zero_vector():
    labels = torch.tensor([[[0, 3], [IGNORE_INDEX, 8]]])
    layout = one_hot_layout(labels)
    assert layout.shape == (1, NUM_CLASSES, 2, 2)
    assert torch.equal(layout[0, :, 1, 0], torch.zeros(NUM_CLASSES))
    assert layout[0, 3, 0, 1] == 1 and layout[0, 8, 1, 1] == 1 and layout[0, :, 0, 0].sum() == 1


def test_area_downsampled_layout_holds_class_fractions_per_cell():
    labels = random_labels(2, (16, 32))
    labels[1, :4, :4] = IGNORE_INDEX   # the top-left 4×4 cell of sample 1 is void
    small = one_hot_layout(labels, size=(4, 8))
    sums = small.sum(dim=1)
    torch.testing.assert_close(sums[0], torch.ones(4, 8))
    assert sums[1, 0, 0] == 0
    torch.testing.assert_close(sums[1].flatten()[1:], torch.ones(31))
    fraction_of_road = (labels[0, :4, :4] == 0).float().mean()
    torch.testing.assert_close(small[0, 0, 0, 0], fraction_of_road)


def test_one_hot_layout_rejects_class_ids_out_of_range():
    with pytest.raises(ValueError, match="out of range"):
        one_hot_layout(torch.tensor([[[0, NUM_CLASSES]]]))
    with pytest.raises(ValueError, match="out of range"):
        one_hot_layout(torch.tensor([[[-1, 0]]]))


# ----------------------------------------------------------------------------- the diversity objective

def test_diversity_objective_matches_a_brute_force_loop():
    losses = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(1))
    for min_weight, mean_weight in [(0.999, 0.001), (0.7, 0.3)]:
        total = 0.0
        for n in range(3):
            for p in range(5):
                per_output = [float(losses[n, k, p]) for k in range(4)]
                total += min_weight * min(per_output) + mean_weight * sum(per_output) / 4
        expected = total / 3
        assert math.isclose(float(diversity_objective(losses, min_weight, mean_weight)), expected, rel_tol=1e-6)
    assert math.isclose(float(diversity_objective(losses)), float(
        (0.999 * losses.min(1).values + 0.001 * losses.mean(1)).sum(1).mean()), rel_tol=1e-6)


def test_diversity_objective_lets_each_class_pick_its_own_best_output():
    # output 0 is best for class 0, output 1 for class 1: each output sums to 6, their per-class minima to 3
    losses = torch.tensor([[[1.0, 5.0], [4.0, 2.0]]], requires_grad=True)
    objective = diversity_objective(losses, min_weight=1.0, mean_weight=0.0)
    assert float(objective.detach()) == 3.0
    objective.backward()
    assert torch.equal(losses.grad != 0, torch.tensor([[[True, False], [False, True]]]))


def test_diversity_objective_with_one_output_is_the_sum_over_classes():
    losses = torch.rand(4, 1, 6, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(diversity_objective(losses), losses.sum(dim=(1, 2)).mean())
    with pytest.raises(ValueError, match="N, K, classes"):
        diversity_objective(losses[0])


# ----------------------------------------------------------------------------- the masked distance

def test_masked_distance_is_exactly_zero_for_classes_absent_from_the_layout():
    labels = random_labels(2, (16, 32), classes=3) * 2      # classes 0, 2 and 4 only
    layout = one_hot_layout(labels)
    real, fake = torch.rand(2, 6, 8, 16), torch.rand(2, 3, 6, 8, 16)
    distance = masked_layer_distance(real, fake, layout)
    assert distance.shape == (2, 3, NUM_CLASSES)
    absent = [p for p in range(NUM_CLASSES) if p not in (0, 2, 4)]
    assert torch.equal(distance[..., absent], torch.zeros(2, 3, len(absent)))
    assert (distance[..., [0, 2, 4]] > 0).all()


def test_masked_distances_summed_over_classes_are_the_plain_mean_l1_when_the_layout_tiles_the_image():
    layout = one_hot_layout(random_labels(2, (32, 64)))
    for shape in [(32, 64), (8, 16)]:                        # the pixels and a coarser feature layer
        real, fake = torch.rand(2, 5, *shape), torch.rand(2, 4, 5, *shape)
        plain = (fake - real.unsqueeze(1)).abs().mean(dim=(2, 3, 4))
        torch.testing.assert_close(masked_layer_distance(real, fake, layout).sum(dim=2), plain)


def test_pixels_labelled_ignore_do_not_count_in_the_pixel_distance():
    labels = random_labels(1, (16, 32))
    labels[0, :, :8] = IGNORE_INDEX
    layout = one_hot_layout(labels)
    real, fake = torch.rand(1, 3, 16, 32), torch.rand(1, 2, 3, 16, 32)
    before = masked_layer_distance(real, fake, layout)
    changed = fake.clone()
    changed[..., :8] = 1 - changed[..., :8]
    torch.testing.assert_close(masked_layer_distance(real, changed, layout), before, rtol=0, atol=0)
    changed[..., 8:] = 1 - changed[..., 8:]                  # a labelled pixel does count
    assert not torch.allclose(masked_layer_distance(real, changed, layout), before)


# ----------------------------------------------------------------------------- the feature-matching loss

def loss_inputs(n=2, k=2, size=(16, 32), seed=0):
    generator = torch.Generator().manual_seed(seed)
    layout = one_hot_layout(random_labels(n, size, seed=seed))
    return torch.rand(n, k, 3, *size, generator=generator), torch.rand(n, 3, *size, generator=generator), layout


def test_running_means_calibrate_only_in_training_and_only_for_the_first_calls():
    loss = FeatureMatchingLoss(None, calibration_steps=3, momentum=0.9)
    assert loss.layer_names == ("pixels",)
    loss.eval()
    loss(*loss_inputs(seed=0))
    assert torch.equal(loss.running_means, torch.ones(1)) and int(loss.calibrated) == 0

    loss.train()
    raws = []
    for seed in range(5):
        _, logs = loss(*loss_inputs(seed=seed))
        raws.append(logs["raw_pixels"])
    expected = raws[0]
    for raw in raws[1:3]:
        expected = 0.9 * expected + 0.1 * raw
    assert int(loss.calibrated) == 3
    assert math.isclose(float(loss.running_means[0]), expected, rel_tol=1e-5)   # calls 4 and 5 changed nothing
    assert raws[3] != raws[2]                                                    # so they had other losses to add
    torch.testing.assert_close(loss.layer_weights(), 1 / loss.running_means)


def test_loss_weights_each_layer_by_its_inverse_running_mean():
    loss = FeatureMatchingLoss(None, calibration_steps=1)
    fake, real, layout = loss_inputs(k=1)
    loss.train()
    loss(fake, real, layout)
    fake, real, layout = loss_inputs(k=1, seed=3)
    value, logs = loss(fake, real, layout)
    # one output, pixels only: the loss is the raw pixel loss divided by its calibrated mean
    assert math.isclose(float(value), logs["raw_pixels"] / float(loss.running_means[0]), rel_tol=1e-5)
    assert not math.isclose(float(loss.running_means[0]), 1.0)


def test_vgg_features_use_the_paper_layer_weights_and_stay_out_of_the_state_dict():
    extractor = VGG19Features()   # random init: only the layer structure matters here
    loss = FeatureMatchingLoss(extractor, calibration_steps=10).train()
    assert loss.layer_names == ("pixels", "conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
    value, logs = loss(*loss_inputs(n=1, k=2, size=(16, 32)))
    assert math.isfinite(float(value)) and set(logs) == {f"raw_{n}" for n in loss.layer_names}
    torch.testing.assert_close(loss.layer_weights(), torch.tensor(PAPER_VGG_LAYER_WEIGHTS))
    assert torch.equal(loss.running_means, torch.ones(6))   # no calibration with the paper's weights
    assert set(loss.state_dict()) == {"running_means", "calibrated"}
    trainer = CRNTrainer(CascadedRefinementNetwork((16, 32), (4, 4, 4), samples=2), loss)
    assert not any(k.startswith("criterion.extractor") or "features." in k for k in trainer.state_dict())


def test_vgg_path_measures_pixels_in_the_papers_0_to_255_units():
    fake, real, layout = loss_inputs(n=1, k=2, size=(16, 32))
    vgg_pixels = FeatureMatchingLoss(VGG19Features()).layer_distances(fake, real, layout)[0]
    plain_pixels = FeatureMatchingLoss(None).layer_distances(fake, real, layout)[0]
    torch.testing.assert_close(vgg_pixels, 255 * plain_pixels)


def test_feature_matching_loss_has_gradient_for_the_generator():
    generator = CascadedRefinementNetwork((16, 32), (6, 6, 6), samples=2)
    trainer = CRNTrainer(generator, FeatureMatchingLoss(VGG19Features(layers=("conv1_2", "conv2_2"))))
    _, real, layout = loss_inputs(n=1, size=(16, 32))
    value, _ = trainer({"layout": layout, "image": real})
    value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())


# ----------------------------------------------------------------------------- single-scale ablation

@pytest.mark.parametrize("profile", ["smoke", "book"])
def test_single_scale_width_matches_the_cascade_parameter_count_within_3_percent(profile):
    settings = PROFILES[profile]
    cascade = CascadedRefinementNetwork(settings["size"], settings["widths"], settings["samples"])
    target, layers = count_parameters(cascade), 2 * len(settings["widths"])
    width = SingleScaleNetwork.width_for_parameters(target, layers, settings["samples"])
    single = SingleScaleNetwork(settings["size"], width, layers, settings["samples"])
    assert abs(count_parameters(single) - target) <= 0.03 * target
    assert len([m for m in single.body if isinstance(m, nn.Conv2d)]) == layers


def test_single_scale_network_outputs_k_images_at_full_resolution():
    network = SingleScaleNetwork((16, 32), width=6, layers=3, samples=2)
    layout = one_hot_layout(random_labels(2, (16, 32)))
    assert network(layout).shape == (2, 2, 3, 16, 32)
    with pytest.raises(ValueError, match=rf"\(N, {NUM_CLASSES}, 16, 32\)"):
        network(torch.zeros(2, NUM_CLASSES, 32, 64))


# ----------------------------------------------------------------------------- training

def fixed_batch(size=(32, 64), n=2):
    images, labels = render_batch(size, n, split="train")
    return {"layout": one_hot_layout(labels), "image": images, "label": labels}


def test_pix2pix_baseline_lowers_its_l1_term_on_a_fixed_batch():
    batch = fixed_batch()
    torch.manual_seed(0)
    model = Pix2Pix((32, 64), generator_width=8, discriminator_width=8)
    optimizer, d_optimizer = model.optimizers(learning_rate=1e-3)
    result = fit(model, optimizer, lambda step: batch, lambda m, b: m.loss(b["layout"], b["image"], d_optimizer),
                 steps=30, log_every=1, progress=False, extra_optimizers={"discriminator": d_optimizer})
    l1 = [entry["g_l1"] for entry in result.history]
    assert len(l1) == 30 and all(math.isfinite(entry["d_loss"]) for entry in result.history)
    assert sum(l1[-5:]) / 5 < sum(l1[:5]) / 5


def pix2pix_run(checkpoint=None, stop_after=None, steps=6, extra=True):
    data = fixed_batch()

    def batch_for_step(step):   # a function of the step: flipped on odd steps
        return {k: (v.flip(-1) if step % 2 else v) for k, v in data.items()}

    torch.manual_seed(0)
    model = Pix2Pix((32, 64), generator_width=8, discriminator_width=8)
    optimizer, d_optimizer = model.optimizers()
    result = fit(model, optimizer, batch_for_step, lambda m, b: m.loss(b["layout"], b["image"], d_optimizer),
                 steps=steps, checkpoint=checkpoint, stop_after=stop_after, progress=False,
                 extra_optimizers={"discriminator": d_optimizer} if extra else None)
    return model, result


def test_pix2pix_resumed_with_its_discriminator_optimizer_matches_an_uninterrupted_run(tmp_path):
    reference, _ = pix2pix_run()
    checkpoint = tmp_path / "pix2pix.pt"
    _, first = pix2pix_run(checkpoint, stop_after=3)
    assert first.steps_done == 3 and not first.finished
    assert "discriminator" in load_checkpoint(checkpoint)["extra_optimizers"]
    resumed, second = pix2pix_run(checkpoint)
    assert second.resumed_from == 3 and second.finished
    initial = Pix2Pix((32, 64), generator_width=8, discriminator_width=8).state_dict()
    assert any(not torch.allclose(reference.state_dict()[k], v) for k, v in initial.items()), "nothing trained"
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)


def test_resuming_without_the_extra_optimizer_state_is_a_checkpoint_error(tmp_path):
    checkpoint = tmp_path / "pix2pix.pt"
    pix2pix_run(checkpoint, steps=2, extra=False)
    with pytest.raises(CheckpointError, match="'discriminator'"):
        pix2pix_run(checkpoint, steps=4)


def test_small_crn_lowers_its_loss_on_one_repeated_batch():
    batch = fixed_batch()
    torch.manual_seed(0)
    generator = CascadedRefinementNetwork((32, 64), (16, 16, 12, 8), samples=2)
    trainer = CRNTrainer(generator, FeatureMatchingLoss(None))
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3)
    trainer.eval()
    with torch.no_grad():
        before = float(trainer(batch)[0])
    result = fit(trainer, optimizer, lambda step: batch, lambda m, b: m(b), steps=20, log_every=1, progress=False)
    with torch.no_grad():
        after = float(trainer(batch)[0])
    losses = [entry["loss"] for entry in result.history]
    assert after < 0.8 * before
    assert sum(losses[-5:]) < sum(losses[:5])


# ----------------------------------------------------------------------------- recorded runs

@pytest.mark.parametrize("name", ["crn", "pix2pix"])
def test_exported_generator_loads_back_with_its_weights_and_settings(tmp_path, name):
    settings = select_profile(PROFILES, "smoke")
    generator = crn_runs.build_generator(name, settings)
    with torch.no_grad():   # weights far from the defaults, so a reload of fresh weights would fail
        for parameter in generator.parameters():
            parameter.add_(torch.randn_like(parameter))
    path = crn_runs.export_generator(name, generator, settings, tmp_path / f"{name}.pt", record={"note": 1})
    loaded_name, loaded, loaded_settings = crn_runs.load_generator(path)
    assert loaded_name == name and not loaded.training
    assert loaded_settings["size"] == (32, 64) and loaded_settings["samples"] == settings["samples"]
    original = generator.state_dict()
    assert set(loaded.state_dict()) == set(original)
    for key, value in loaded.state_dict().items():
        assert value.dtype == original[key].dtype
        torch.testing.assert_close(value, original[key], rtol=1e-3, atol=1e-3, msg=key)


def test_loading_a_corrupt_or_missing_export_fails_clearly(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match="corrupt.pt"):
        crn_runs.load_generator(corrupt)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        crn_runs.load_generator(tmp_path / "missing.pt")


def test_unknown_model_names_are_rejected(tmp_path):
    settings = select_profile(PROFILES, "smoke")
    with pytest.raises(ValueError, match="unknown model 'crnn'"):
        crn_runs.build_generator("crnn", settings)
    with pytest.raises(ValueError, match="unknown model 'crnn'"):
        crn_runs.run("smoke", models=("crnn",), device="cpu", run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown model 'crnn'"):
        crn_runs.export_generator("crnn", crn_runs.build_generator("crn", settings), settings, tmp_path / "x.pt")
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(ValueError, match="unknown model 'crnn'"):   # everything is checked before training starts
        crn_runs.run("smoke", models=("crn", "crnn"), device="cpu", run_dir=tmp_path, progress=False)
    assert not (tmp_path / "train").exists()


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("crn_smoke")
    labkit.setup(seed=0, threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", LinAlgWarning)   # sqrtm of the singular covariances of 16 scenes
        with pytest.warns(UserWarning, match="Fréchet distance from"):   # the expected small-sample warning
            record = crn_runs.run(profile="smoke", models=MODEL_NAMES, device="cpu", run_dir=run_dir, progress=False)
    return run_dir, record


def test_smoke_run_records_every_model_with_finite_scores(smoke_run):
    run_dir, record = smoke_run
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["metrics"] == record["metrics"]
    assert set(on_disk["metrics"]) == set(MODEL_NAMES) and len(MODEL_NAMES) == 5
    for name, scores in on_disk["metrics"].items():
        for key in ("fcn_miou", "fcn_pixel_accuracy", "frechet_distance", "diversity", "parameters",
                    "train_seconds"):
            assert isinstance(scores[key], (int, float)) and math.isfinite(scores[key]), (name, key)
        assert scores["steps"] == PROFILES["smoke"]["steps"] and scores["finished"], name
    assert set(on_disk["runs"]) == set(MODEL_NAMES)
    real = on_disk["reference"]["real_scenes"]
    assert real["fcn_miou"] > max(s["fcn_miou"] for s in on_disk["metrics"].values())
    k1 = on_disk["metrics"]["crn_k1"]
    assert k1["diversity"] == 0 and k1["samples_per_layout"] == 1
    assert on_disk["metrics"]["crn"]["samples_per_layout"] == PROFILES["smoke"]["samples"]
    assert on_disk["metrics"]["crn"]["diversity"] > 0


@pytest.mark.filterwarnings(FRECHET_SMALL_SAMPLE)
def test_a_second_run_in_the_same_folder_resumes_instead_of_retraining(smoke_run):
    run_dir, first = smoke_run
    checkpoint = run_dir / "train" / "crn_k1.pt"
    before = load_checkpoint(checkpoint)
    record = crn_runs.run(profile="smoke", models=("crn_k1",), device="cpu", run_dir=run_dir, progress=False)
    after = load_checkpoint(checkpoint)
    assert after["step"] == before["step"] == PROFILES["smoke"]["steps"]
    assert after["history"] == before["history"]
    for key, value in before["model"].items():
        assert torch.equal(after["model"][key], value), key
    second = record["metrics"]["crn_k1"]
    assert second["steps"] == first["metrics"]["crn_k1"]["steps"]
    assert second["train_seconds"] - first["metrics"]["crn_k1"]["train_seconds"] < 0.5
    assert set(record["metrics"]) == set(MODEL_NAMES)   # the other models' records are kept
    # re-scoring keeps the provenance of the call that trained the model
    assert record["training"]["crn_k1"] == first["training"]["crn_k1"]
    assert record["runs"]["crn_k1"]["finished_at"] >= first["training"]["crn_k1"]["finished_at"]


# ----------------------------------------------------------------------------- evaluation

@pytest.mark.filterwarnings(FRECHET_SMALL_SAMPLE)
def test_evaluating_the_real_images_gives_the_real_fcn_scores_and_no_diversity():
    size, count = (32, 64), 8
    images, labels = render_batch(size, count, split="test")
    layouts = one_hot_layout(labels)
    calls = []

    def real_sampler(layout):   # look each layout up among the test layouts and return its real image
        match = (layout.unsqueeze(1) == layouts.unsqueeze(0)).flatten(2).all(dim=2)
        assert (match.sum(dim=1) == 1).all()
        calls.append(len(layout))
        return images[match.float().argmax(dim=1)].unsqueeze(1)

    scores = evaluate_synthesis(real_sampler, size, count)
    real = fcn_score(images, labels)
    assert sum(calls) == count
    assert scores["fcn_miou"] == pytest.approx(real["miou"], abs=1e-9)
    assert scores["fcn_pixel_accuracy"] == pytest.approx(real["pixel_accuracy"], abs=1e-9)
    assert scores["diversity"] == 0.0 and scores["samples_per_layout"] == 1 and scores["eval_scenes"] == count
    assert abs(scores["frechet_distance"]) < 1e-3   # the same images on both sides


@pytest.mark.filterwarnings(FRECHET_SMALL_SAMPLE)
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_evaluation_scores_each_output_slot_and_finds_the_good_one():
    size, count = (32, 64), 8
    images, labels = render_batch(size, count, split="test")
    layouts = one_hot_layout(labels)

    def grey_then_real(layout):   # slot 0: flat grey, an untrained head; slot 1: the real image
        match = (layout.unsqueeze(1) == layouts.unsqueeze(0)).flatten(2).all(dim=2).float().argmax(dim=1)
        return torch.stack([torch.full_like(images[match], 0.5), images[match]], dim=1)

    scores = evaluate_synthesis(grey_then_real, size, count, diversity_layouts=2)
    real = fcn_score(images, labels)
    grey, good = scores["fcn_miou_per_output"]
    assert scores["best_output"] == 1
    assert good == pytest.approx(real["miou"], abs=1e-9) and grey < 0.3
    assert scores["fcn_miou_best_output"] == pytest.approx(real["miou"], abs=1e-9)
    assert grey < scores["fcn_miou"] < good                      # pooled lies between the slots
    assert abs(scores["frechet_distance_best_output"]) < 1e-3 < scores["frechet_distance"]


# --------------------------------------------------------------------------- claims, record, figures

def _record(**overrides):
    base = {"fcn_miou": 0.5, "fcn_pixel_accuracy": 0.8, "frechet_distance": 10.0, "diversity": 0.5,
            "parameters": 1000, "train_seconds": 60.0, "steps": 100, "samples_per_layout": 9}
    metrics = {name: dict(base) for name in MODEL_NAMES}
    metrics["crn_k1"].update(diversity=0.0, samples_per_layout=1)
    for name, values in overrides.items():
        metrics[name].update(values)
    for scores in metrics.values():   # unless given, the best output scores like all outputs pooled
        scores.setdefault("fcn_miou_best_output", scores["fcn_miou"])
        scores.setdefault("frechet_distance_best_output", scores["frechet_distance"])
        scores.setdefault("fcn_miou_per_output", [scores["fcn_miou"]] * scores["samples_per_layout"])
    return {"metrics": metrics, "reference": {"real_scenes": {"fcn_miou": 0.9, "frechet_distance": 1.0}}}


def test_claim_verdicts_follow_the_recorded_comparisons():
    by_claim = lambda record: {row["claim"].split()[0] + row["claim"].split()[1]: row["verdict"]
                               for row in crn_runs.claims(record)}
    worse_everywhere = _record(crn={"fcn_miou": 0.2, "frechet_distance": 30.0})
    verdicts = by_claim(worse_everywhere)
    assert verdicts["Featurematching"] == "does not hold"
    assert verdicts["Thecascade"] == "does not hold"
    assert verdicts["CRNbeats"] == "does not hold"
    better = _record(crn={"fcn_miou": 0.7, "frechet_distance": 5.0})
    verdicts = by_claim(better)
    assert verdicts["Featurematching"] == verdicts["Thecascade"] == verdicts["CRNbeats"] == "holds"
    assert verdicts["Thediversity"] == "holds"
    split = _record(crn={"fcn_miou": 0.7, "frechet_distance": 50.0})
    assert by_claim(split)["CRNbeats"] == "mixed"
    lost_fidelity = _record(crn={"fcn_miou": 0.45})
    assert by_claim(lost_fidelity)["Thediversity"] == "mixed"


def test_claims_about_capability_read_the_best_output_and_count_usable_outputs():
    # all nine outputs pooled look poor, but one slot is good: the best-output claims follow that slot
    record = _record(crn={"fcn_miou": 0.3, "frechet_distance": 20.0, "fcn_miou_best_output": 0.8,
                          "frechet_distance_best_output": 4.0, "fcn_miou_per_output": [0.8, 0.5] + [0.1] * 7})
    rows = {row["claim"].split()[1]: row for row in crn_runs.claims(record)}
    assert rows["matching"]["verdict"] == rows["cascade"]["verdict"] == "holds"
    assert rows["beats"]["verdict"] == "mixed"                  # worse pooled, better at its best
    assert "2 of 9 outputs" in rows["diversity"]["evidence"]   # 0.8 and 0.5 reach 0.45
    assert rows["diversity"]["verdict"] == "mixed"              # diverse, but all outputs lost fidelity


def test_reading_a_record_without_every_model_names_the_missing_ones(tmp_path):
    from labkit.checkpoints import write_json

    write_json(tmp_path / "metrics.json", {"metrics": {"crn": {}}})
    with pytest.raises(ValueError, match="pix2pix"):
        crn_runs.read_record("smoke", tmp_path)


def test_cascade_sizes_reject_non_positive_sizes_with_the_expected_form():
    with pytest.raises(ValueError, match=r"\(4·2\^n, 8·2\^n\)"):
        crn.cascade_sizes((0, 0))


def test_features_to_rgb_paints_the_principal_components_in_unit_range():
    from labkit.plotting import features_to_rgb

    features = torch.zeros(8, 4, 6)
    features[0, :, :3] = 1.0                      # two regions differ along one direction
    image = features_to_rgb(features)
    assert image.shape == (4, 6, 3) and image.min() >= 0 and image.max() <= 1
    assert not np.allclose(image[:, :3, 0], image[:, 3:, 0])
    with pytest.raises(ValueError, match=r"\(D, h, w\)"):
        features_to_rgb(torch.zeros(1, 8, 4, 6))


def test_masked_distance_rejects_a_fake_without_the_k_axis_instead_of_broadcasting():
    real, layout = torch.rand(2, 3, 8, 16), one_hot_layout(random_labels(2, (8, 16)))
    with pytest.raises(ValueError, match=r"fake \(N, K, D, h, w\)"):
        masked_layer_distance(real, torch.rand(2, 3, 8, 16), layout)
    with pytest.raises(ValueError, match="layout"):
        masked_layer_distance(real, torch.rand(2, 1, 3, 8, 16), layout[:1])
    loss = FeatureMatchingLoss(None)
    with pytest.raises(ValueError, match="same H, W"):
        loss(torch.rand(2, 1, 3, 8, 16), real, one_hot_layout(random_labels(2, (16, 32))))


def test_pix2pix_l1_term_is_measured_in_minus_one_to_one_units():
    torch.manual_seed(0)
    model = Pix2Pix((32, 64), generator_width=4, discriminator_width=4).eval()   # eval: no dropout noise
    _, d_optimizer = model.optimizers()
    layout = one_hot_layout(random_labels(2, (32, 64)))
    images = torch.rand(2, 3, 32, 64)
    with torch.no_grad():
        fake = model.generator(layout)
    _, logs = model.loss(layout, images, d_optimizer)
    # the G forward inside loss() sees the same weights (the D step does not touch G)
    assert logs["g_l1"] == pytest.approx(float((2 * fake - 1 - (2 * images - 1)).abs().mean()), rel=1e-5)
