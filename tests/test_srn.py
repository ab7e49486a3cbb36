"""SRN: sub-pixel expansion, context normalization, RSV weights, critics and the recorded runs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from labkit.checkpoints import CheckpointError, read_json, write_json
from labkit.data import render_batch
from labkit.papers import srn, srn_runs

SIZE = (32, 64)


# --------------------------------------------------------------------------- geometry


@pytest.mark.parametrize("placement", srn.PLACEMENTS)
def test_crop_and_pad_put_the_known_region_back_where_it_was(placement):
    images = torch.rand(2, 3, *SIZE)
    mask = srn.unknown_mask(SIZE, placement, 2)
    known = srn.crop_known(images, placement)
    r1, r2 = srn.expansion_factors(placement)
    assert known.shape[-2:] == (SIZE[0] // r1, SIZE[1] // r2)
    assert mask.mean() == pytest.approx(0.5)
    padded = srn.pad_known(known, placement)
    assert torch.equal(padded * (1 - mask), images * (1 - mask))
    assert (padded * mask).abs().sum() == 0


def test_placements_put_the_known_region_where_they_say():
    left, right, both, top = (srn.unknown_mask((8, 16), p)[0, 0] for p in srn.PLACEMENTS)
    assert left[:, :8].sum() == 0 and left[:, 8:].all()
    assert right[:, 8:].sum() == 0 and right[:, :8].all()
    assert both[:, 4:12].sum() == 0 and both[:, :4].all() and both[:, 12:].all()
    assert top[:4].sum() == 0 and top[4:].all()


def test_geometry_rejects_unknown_placements_and_indivisible_sizes():
    with pytest.raises(ValueError, match="placement"):
        srn.unknown_mask(SIZE, "bottom")
    with pytest.raises(ValueError, match="divisible"):
        srn.known_box((30, 64), "top")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        srn.crop_known(torch.rand(3, 32, 64), "left")


@pytest.mark.parametrize("placement", srn.PLACEMENTS)
def test_reflect_keeps_the_known_region_and_mirrors_it(placement):
    images = torch.rand(2, 3, *SIZE)
    known = srn.crop_known(images, placement)
    out = srn.reflect_extrapolation(known, placement)
    assert out.shape == images.shape
    assert torch.equal(srn.crop_known(out, placement), known)
    if placement == "left":
        assert torch.equal(out[..., SIZE[1] // 2:], known.flip(-1))
    if placement == "top":
        assert torch.equal(out[..., SIZE[0] // 2:, :], known.flip(-2))


# --------------------------------------------------------------------------- sub-pixel expansion


@pytest.mark.parametrize("r1, r2", [(1, 2), (2, 1), (1, 3), (3, 2)])
def test_subpixel_expansion_is_the_papers_rearrangement(r1, r2):
    n, c, h, w = 2, 3, 4, 5
    features = torch.randn(n, c * r1 * r2, h, w)
    out = srn.subpixel_expand(features, r1, r2)
    assert out.shape == (n, c, h * r1, w * r2)
    expected = torch.empty_like(out)
    for i in range(h * r1):
        for j in range(w * r2):
            for k in range(c):
                expected[:, k, i, j] = features[:, c * (r2 * (i % r1) + j % r2) + k, i // r1, j // r2]
    assert torch.equal(out, expected)
    # bookkeeping only: the same multiset of values
    assert torch.equal(out.flatten().sort().values, features.flatten().sort().values)


def test_subpixel_expansion_with_equal_factors_is_pixel_shuffle_up_to_channel_order():
    c, r = 3, 2
    features = torch.randn(1, c * r * r, 4, 4)
    # pixel_shuffle reads channel k·r² + offset; the paper's layout reads offset·C + k
    reordered = features.view(1, r * r, c, 4, 4).transpose(1, 2).reshape(1, c * r * r, 4, 4)
    assert torch.equal(srn.subpixel_expand(features, r, r), F.pixel_shuffle(reordered, r))


def test_subpixel_expansion_rejects_channels_that_do_not_split():
    with pytest.raises(ValueError, match="multiple of r1·r2"):
        srn.subpixel_expand(torch.randn(1, 5, 2, 2), 1, 2)


@pytest.mark.parametrize("kind", srn.EXPANSIONS)
@pytest.mark.parametrize("ratio", [(1, 2), (2, 1)])
def test_every_expansion_operator_reaches_the_output_size(kind, ratio):
    expansion = srn.FeatureExpansion(6, kind)
    out = expansion(torch.randn(2, 6, 8, 8), *ratio)
    assert out.shape == (2, 6, 8 * ratio[0], 8 * ratio[1])
    with pytest.raises(ValueError, match="ratio"):
        expansion(torch.randn(2, 6, 8, 8), 2, 2)


# --------------------------------------------------------------------------- context normalization


@pytest.fixture
def features_and_mask():
    torch.manual_seed(0)
    features = torch.randn(2, 5, 8, 16)
    features[..., 8:] = features[..., 8:] * 3 + 2      # the unknown half has other statistics
    return features, srn.unknown_mask((32, 64), "left", 2)


def test_context_normalization_with_rho_zero_is_the_identity(features_and_mask):
    features, mask = features_and_mask
    assert torch.equal(srn.context_normalization(features, mask, 0.0), features)


def test_context_normalization_with_rho_one_gives_the_unknown_region_the_known_statistics(features_and_mask):
    features, mask = features_and_mask
    out = srn.context_normalization(features, mask, 1.0, eps=1e-10)
    known, unknown = out[..., :8], out[..., 8:]
    assert torch.allclose(unknown.mean(dim=(2, 3)), known.mean(dim=(2, 3)), atol=1e-5)
    assert torch.allclose(unknown.std(dim=(2, 3), unbiased=False), known.std(dim=(2, 3), unbiased=False), atol=1e-5)
    # before CN the statistics were far apart
    assert (features[..., 8:].mean(dim=(2, 3)) - features[..., :8].mean(dim=(2, 3))).abs().min() > 0.5


@pytest.mark.parametrize("rho", [0.0, 0.3, 0.5, 1.0])
def test_context_normalization_never_changes_the_known_region(features_and_mask, rho):
    features, mask = features_and_mask
    out = srn.context_normalization(features, mask, rho)
    assert torch.equal(out[..., :8], features[..., :8])
    if rho > 0:
        assert not torch.allclose(out[..., 8:], features[..., 8:])


def test_context_normalization_rejects_a_blend_outside_0_1(features_and_mask):
    with pytest.raises(ValueError, match="ρ"):
        srn.context_normalization(*features_and_mask, 1.5)


# --------------------------------------------------------------------------- reconstruction weights


@pytest.mark.parametrize("placement", srn.PLACEMENTS)
def test_rsv_weights_are_at_most_one_zero_on_the_known_region_and_decay_away_from_it(placement):
    mask = srn.unknown_mask((64, 128), placement)
    weights = srn.relative_spatial_variant_weights(mask, kernel_size=32)
    assert weights.max() <= 1.0
    assert (weights * (1 - mask)).abs().max() == 0
    assert (weights[mask.bool()] > 0).all()
    # each line runs from the known border outwards
    lines = {"left": [weights[0, 0, 32, 64:]], "right": [weights[0, 0, 32, :64].flip(0)],
             "top": [weights[0, 0, 32:, 64]],
             "both": [weights[0, 0, 32, :32].flip(0), weights[0, 0, 32, 96:]]}[placement]
    for line in lines:
        assert (line[1:] <= line[:-1] + 1e-6).all()
        assert line[0] > 0.95 and line[-1] < line[0] - 0.04


def test_confidence_driven_weights_decay_faster_than_rsv_weights():
    mask = srn.unknown_mask((64, 128), "left")
    rsv = srn.relative_spatial_variant_weights(mask, 32)[0, 0, 32, 64:]
    confidence = srn.confidence_driven_weights(mask, 32)[0, 0, 32, 64:]
    assert (confidence[1:] <= confidence[:-1] + 1e-6).all()
    assert confidence[-1] / confidence[0] < rsv[-1] / rsv[0]


def test_plain_l1_weights_are_the_mask_and_unknown_kinds_are_refused():
    mask = srn.unknown_mask(SIZE, "both")
    assert torch.equal(srn.reconstruction_weights(mask, "l1", 8), mask)
    with pytest.raises(ValueError, match="reconstruction weight"):
        srn.reconstruction_weights(mask, "l2", 8)


def test_propagation_kernel_is_normalised_and_nearly_flat():
    kernel = srn.propagation_kernel(16)
    assert kernel.shape == (1, 1, 16, 16)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-6)
    assert kernel.max() / kernel.min() < 1.01    # σ = 1/40 over its support: a soft box filter


def test_reconstruction_loss_is_zero_for_a_perfect_output_and_weighs_the_regions_as_the_official_code():
    target = torch.rand(2, 3, *SIZE)
    mask = srn.unknown_mask(SIZE, "left", 2)
    weights = srn.reconstruction_weights(mask, "l1", 8)
    assert srn.reconstruction_loss(target, target, mask, weights)[0].item() == 0
    shifted = target + 0.1 * mask   # error 0.1 (0.2 in [−1, 1] units) on the unknown half only
    loss, logs = srn.reconstruction_loss(shifted, target, mask, weights)
    assert logs["l1_known"] == pytest.approx(0.0, abs=1e-6)
    assert logs["l1_unknown"] == pytest.approx(1.2 * 0.2 * 0.5, rel=1e-4)
    assert loss.item() == pytest.approx(4.2 * logs["l1_unknown"], rel=1e-4)


# --------------------------------------------------------------------------- ID-MRF and critics


def test_id_mrf_prefers_the_target_itself_to_one_repeated_target_feature():
    torch.manual_seed(0)
    target = torch.randn(2, 8, 6, 6)
    repeated = target[:, :, :1, :1].expand_as(target).contiguous()
    assert srn.id_mrf_layer_loss(target, target) < srn.id_mrf_layer_loss(repeated, target)
    shuffled = target.flatten(2)[..., torch.randperm(36)].view_as(target)   # same features, other places
    assert srn.id_mrf_layer_loss(shuffled, target).item() == pytest.approx(
        srn.id_mrf_layer_loss(target, target).item(), rel=1e-4)


class _LinearCritic(torch.nn.Module):
    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, images):
        return (images * self.weight).flatten(1).sum(dim=1)


def test_gradient_penalty_is_zero_for_a_unit_norm_linear_critic():
    torch.manual_seed(0)
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    direction = torch.randn(1, 3, 8, 8)
    critic = _LinearCritic(direction / direction.norm())
    assert srn.gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-6)
    doubled = _LinearCritic(2 * direction / direction.norm())    # 2-Lipschitz: (2 − 1)² = 1
    assert srn.gradient_penalty(doubled, real, fake).item() == pytest.approx(1.0, rel=1e-4)


def test_masked_gradient_penalty_only_sees_the_unknown_region():
    mask = srn.unknown_mask((8, 8), "left")
    direction = torch.randn(1, 3, 8, 8) * mask
    critic = _LinearCritic(direction / direction.norm())
    real, fake = torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)
    assert srn.gradient_penalty(critic, real, fake, mask).item() == pytest.approx(0.0, abs=1e-6)
    outside = torch.randn(1, 3, 8, 8) * (1 - mask)
    leaky = _LinearCritic(direction / direction.norm() + outside)     # extra slope outside the mask is ignored
    assert srn.gradient_penalty(leaky, real, fake, mask).item() == pytest.approx(0.0, abs=1e-6)


def test_critic_step_leaves_the_generator_alone_and_generator_step_leaves_the_critics_alone():
    torch.manual_seed(0)
    generator = srn.ExtrapolationNetwork("srn", 8)
    trainer = srn.SRNTrainer(generator, SIZE, "rsv", 8, critic_width=8)
    critic_optimizer = torch.optim.Adam(trainer.critic_parameters(), lr=1e-3)
    before = [p.detach().clone() for p in trainer.critic_parameters()]
    batch = {"image": torch.rand(2, 3, *SIZE), "placement": "left"}
    loss, logs = trainer.finetune_loss(batch, critic_optimizer)
    assert all(p.grad is None for p in generator.parameters())       # the critic step did not touch G
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.critic_parameters()))
    for p in trainer.critic_parameters():
        p.grad = None
    loss.backward()
    assert all(p.grad is None for p in trainer.critic_parameters())  # G's loss does not train the critics
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in generator.parameters())
    assert {"adversarial", "gradient_penalty", "critic_wasserstein"} <= set(logs)


def test_pretraining_uses_the_whole_batch_whatever_the_critic_steps():
    """The full profile (batch 16, 5 critic steps) pretrains on batches of 16: phase 1 has no
    critic, so the batch is not split (the dry run found it refused 16 images)."""
    torch.manual_seed(0)
    trainer = srn.SRNTrainer(srn.ExtrapolationNetwork("srn", 4), SIZE, "rsv", 8, critic_width=2, critic_steps=5)
    images = torch.rand(16, 3, *SIZE)
    loss, _ = trainer.pretrain_loss({"image": images, "placement": "left"})
    alone = srn.SRNTrainer(trainer.generator, SIZE, "rsv", 8, critic_width=2, critic_steps=1)
    assert torch.allclose(loss, alone.pretrain_loss({"image": images, "placement": "left"})[0])
    with pytest.raises(ValueError, match="16 images does not split into 5 critic steps"):
        trainer.finetune_loss({"image": images, "placement": "left"}, torch.optim.Adam(trainer.critic_parameters()))


# --------------------------------------------------------------------------- networks


@pytest.mark.parametrize("generator, expansion", [("srn", "subpixel"), ("srn", "deconv"), ("srn", "bilinear"),
                                                   ("srn_hr", None), ("ed", None)])
@pytest.mark.parametrize("placement", srn.PLACEMENTS)
def test_every_generator_extrapolates_every_placement_and_keeps_the_known_pixels(generator, expansion, placement):
    network = srn.ExtrapolationNetwork(generator, 8, expansion).eval()
    images = torch.rand(2, 3, *SIZE)
    known = srn.crop_known(images, placement)
    with torch.no_grad():
        out = network(known, placement)
        complete = network.complete(known, placement)
    assert out.shape == images.shape and 0 <= out.min() and out.max() <= 1
    assert torch.equal(srn.crop_known(complete, placement), known)


def test_the_blend_given_at_test_time_changes_the_extension():
    torch.manual_seed(0)
    network = srn.ExtrapolationNetwork("srn", 8).eval()
    known = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        a, b = network.complete(known, "left", blend=0.0), network.complete(known, "left", blend=1.0)
        default = network.complete(known, "left")
    assert not torch.allclose(a[..., 32:], b[..., 32:])
    assert not torch.equal(default, a) and not torch.equal(default, b)   # the default is ρ = 0.5


def test_generator_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="generator"):
        srn.ExtrapolationNetwork("unet")
    with pytest.raises(ValueError, match="expansion"):
        srn.ExtrapolationNetwork("srn", 8, "unfold")


# --------------------------------------------------------------------------- evaluation


def test_scores_of_the_true_images_are_perfect_and_of_mirrors_are_not():
    real, labels = render_batch(SIZE, 6, split="test")
    perfect = srn_runs.unknown_region_scores(real, real, labels, "left", None)
    assert perfect["ssim_unknown"] == pytest.approx(1.0, abs=1e-5)
    assert perfect["colour_error_unknown"] == 0 and perfect["edge_sharpness_unknown"] == pytest.approx(1.0)
    assert perfect["psnr_unknown"] >= 99
    mirrored = srn_runs.complete_images(srn.reflect_extrapolation, real, "left")
    scores = srn_runs.unknown_region_scores(mirrored, real, labels, "left", None)
    assert scores["psnr_unknown"] < 30 and scores["ssim_unknown"] < 0.9 and scores["colour_error_unknown"] > 0


def test_complete_images_checks_what_the_extrapolation_returns():
    with pytest.raises(ValueError, match="expected"):
        srn_runs.complete_images(lambda known, placement: known, torch.rand(2, 3, *SIZE), "left")


def test_forward_class_changes_mark_the_pixel_before_each_change():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    labels[:, :, 2:] = 1
    edges = srn_runs.forward_class_changes(labels)
    assert edges[0, :, 1].all() and edges.sum() == 4


# --------------------------------------------------------------------------- recorded runs


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("srn_smoke")
    export = run_dir / "srn_smoke.pt"
    record = srn_runs.run("smoke", models=("srn", "srn_pretrain", "srn_reconstruction_only", "reflect"), device="cpu",
                          run_dir=run_dir, export=export, progress=False)
    return run_dir, export, record


def test_smoke_run_records_every_metric_with_provenance(smoke_run):
    run_dir, _, record = smoke_run
    for name in ("srn", "srn_pretrain", "reflect"):
        metrics = record["metrics"][name]
        for key in ("psnr_unknown", "ssim_unknown", "fcn_miou_unknown", "frechet_distance"):
            assert isinstance(metrics[key], float) and math.isfinite(metrics[key])
        assert set(metrics["per_placement"]) == set(srn.PLACEMENTS)
        assert record["runs"][name]["profile"] == "smoke"
    smoke = srn.PROFILES["smoke"]
    both = {"pretrain": smoke["pretrain_steps"], "finetune": smoke["finetune_steps"]}
    assert record["metrics"]["srn"]["steps"] == both
    assert record["metrics"]["srn_pretrain"]["steps"] == {"pretrain": smoke["pretrain_steps"]}
    # the reconstruction-only continuation shares srn's first phase and skips ID-MRF and the critics
    plain = record["metrics"]["srn_reconstruction_only"]
    assert plain["steps"] == both
    assert record["training"]["srn_reconstruction_only"]["pretrain"] == record["training"]["srn"]["pretrain"]
    fine = [h for h in record["histories"]["srn_reconstruction_only"] if h["phase"] == "finetune"]
    assert fine and not any("id_mrf" in h or "adversarial" in h for h in fine)
    assert {h["phase"] for h in record["histories"]["srn"]} == {"pretrain", "finetune"}
    assert "id_mrf" in record["histories"]["srn"][-1]
    assert record["stale"] == []
    assert (run_dir / "samples" / "srn.png").stat().st_size > 1000


def test_smoke_run_resumes_without_retraining_and_keeps_its_training_provenance(smoke_run):
    run_dir, _, record = smoke_run
    again = srn_runs.run("smoke", models=("srn",), device="cpu", run_dir=run_dir, progress=False)
    assert again["training"]["srn"] == record["training"]["srn"]
    assert again["metrics"]["srn"]["psnr_unknown"] == pytest.approx(record["metrics"]["srn"]["psnr_unknown"])
    assert again["stale"] == []


def test_a_model_scored_before_its_network_trained_further_is_stale(smoke_run, tmp_path):
    run_dir, _, _ = smoke_run
    copy = tmp_path / "run"
    for path in list(run_dir.glob("models/*.json")) + list(run_dir.glob("train/*.json")):
        target = copy / path.relative_to(run_dir)
        write_json(target, read_json(path))
    info = read_json(copy / "train" / "srn_pretrain.json")
    write_json(copy / "train" / "srn_pretrain.json", dict(info, steps=99))
    record = srn_runs.merge_records("smoke", copy, "cpu")
    assert record["stale"] == ["srn", "srn_pretrain", "srn_reconstruction_only"]
    with pytest.raises(ValueError, match="srn_no_cn"):
        srn_runs.read_record("smoke", copy)


def test_exported_generators_load_and_reproduce_the_run(smoke_run):
    run_dir, export, _ = smoke_run
    generators, settings = srn_runs.load_models(export)
    assert set(generators) == {"srn", "srn_pretrain"} and settings["size"] == SIZE
    trained, _ = srn_runs.train_model("srn", settings, "cpu", run_dir, progress=False)
    known = srn.crop_known(render_batch(SIZE, 2, split="test")[0], "both")
    with torch.no_grad():
        assert torch.allclose(generators["srn"](known, "both"), trained(known, "both"), atol=2e-2)


def test_load_models_names_missing_and_corrupt_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="srn_runs"):
        srn_runs.load_models(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        srn_runs.load_models(bad)


def test_run_rejects_unknown_models_and_profiles(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        srn_runs.run("smoke", models=("srn", "srn_v2"), run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="profile"):
        srn_runs.run("huge", run_dir=tmp_path, progress=False)
    assert not any(tmp_path.iterdir())


def _record(**overrides):
    base = {"psnr_unknown": 15.0, "ssim_unknown": 0.3, "fcn_miou_unknown": 0.3, "frechet_distance": 2.0,
            "colour_error_unknown": 0.05, "edge_sharpness_unknown": 0.4}
    metrics = {name: dict(base) for name in srn.MODEL_NAMES}
    for name, changes in overrides.items():
        metrics[name].update(changes)
    return {"metrics": metrics}


def test_claims_follow_the_numbers():
    better = {"psnr_unknown": 16.0, "ssim_unknown": 0.4, "fcn_miou_unknown": 0.4, "frechet_distance": 1.0,
              "colour_error_unknown": 0.01, "edge_sharpness_unknown": 0.6}
    verdicts = [r["verdict"] for r in srn_runs.claims(_record(srn=better))]
    # RSV's PSNR is 1 dB above plain L1's: sharper, but not "comparable fidelity" → mixed
    assert verdicts == ["holds", "mixed", "holds", "holds", "holds", "holds"]
    worse = {"psnr_unknown": 14.0, "ssim_unknown": 0.2, "fcn_miou_unknown": 0.2, "frechet_distance": 3.0,
             "colour_error_unknown": 0.09, "edge_sharpness_unknown": 0.2}
    assert {r["verdict"] for r in srn_runs.claims(_record(srn=worse))} == {"does not hold"}
    record = _record()
    del record["metrics"]["srn_deconv"]
    assert srn_runs.claims(record)[3]["verdict"] == "not measured"
