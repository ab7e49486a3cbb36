"""SEIGAN (chapter 5) runs: evaluation helpers, the smoke run, resume, stale records, exports, claims."""
import math

import pytest
import torch

from labkit.checkpoints import CheckpointError, load_checkpoint, read_json, write_json
from labkit.data import CLASS_INDEX
from labkit.papers import seigan, seigan_runs

SMOKE = seigan.PROFILES["smoke"]


def test_mask_iou_is_one_for_the_truth_zero_for_disjoint_masks_and_uses_the_threshold():
    truth = torch.zeros(2, 1, 4, 4)
    truth[0, 0, :2], truth[1, 0, :, :1] = 1, 1
    assert torch.equal(seigan_runs.mask_iou(truth, truth), torch.ones(2, dtype=torch.float64))
    assert torch.equal(seigan_runs.mask_iou(1 - truth, truth), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(seigan_runs.mask_iou(truth * 0.5, truth), torch.zeros(2, dtype=torch.float64))
    half = truth.clone()
    half[0, 0, 1] = 0
    assert seigan_runs.mask_iou(half, truth)[0] == pytest.approx(0.5)


def test_chapter_data_is_unpaired_and_its_test_layouts_paste_the_true_mask():
    data = seigan_runs.chapter_data(SMOKE)
    train, test = data["train"], data["test"]
    assert train["objects"].shape == (SMOKE["train_objects"], 3, *SMOKE["size"])
    assert train["backgrounds"].shape == (SMOKE["train_backgrounds"], 3, *SMOKE["size"])
    for part in (train, test):
        assert not set(part["indices"]) & set(part["background_indices"])
    assert not set(test["indices"]) & set(test["reference_indices"])
    assert not set(test["background_indices"]) & set(test["reference_indices"])
    assert test["reference_objects"].shape == test["objects"].shape
    for i in range(len(test["objects"])):
        inside = test["masks"][i, 0] > 0
        assert (test["labels"][i][inside] == test["classes"][i]).all()
        assert torch.equal(test["labels"][i][~inside], test["background_labels"][i][~inside])
    assert set(test["classes"].tolist()) <= {CLASS_INDEX["car"], CLASS_INDEX["person"]}


def test_run_rejects_unknown_models_profiles_and_an_incomplete_export(tmp_path):
    with pytest.raises(ValueError, match="unknown model"):
        seigan_runs.run("smoke", models=("seigan", "seigan_v2"), run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="profile"):
        seigan_runs.run("huge", run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="export"):
        seigan_runs.run("smoke", models=("seigan",), run_dir=tmp_path, export=True, progress=False)
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("seigan_smoke")
    export = run_dir / "export"
    record = seigan_runs.run("smoke", device="cpu", run_dir=run_dir, export=export, progress=False)
    return run_dir, export, record


def test_smoke_run_records_every_required_metric_with_provenance(smoke_run):
    run_dir, _, record = smoke_run
    assert set(record["metrics"]) == set(seigan.MODEL_NAMES) and record["stale"] == []
    for name in seigan.MODEL_NAMES:
        metrics = record["metrics"][name]
        keys = ("mask_iou", "mask_precision", "mask_recall", "mask_area_ratio", "frechet_distance", "fcn_miou")
        if name in seigan.TRAINED_MODELS:
            keys += ("inpaint_psnr", "inpaint_ssim", "inpaint_perceptual", "inpaint_psnr_box", "inpaint_frechet")
            assert metrics["steps"] == SMOKE["iterations"] and metrics["finished"]
        else:
            assert "inpaint_psnr" not in metrics
        for key in keys:
            assert isinstance(metrics[key], float) and math.isfinite(metrics[key]), (name, key)
        assert record["runs"][name]["profile"] == "smoke"
        assert (run_dir / "samples" / f"{name}.png").stat().st_size > 1000
    reference = record["reference"]
    assert reference["true_mask_paste"]["mask_iou"] == 1.0
    assert 0 < record["metrics"]["bbox_as_mask"]["mask_iou"] < 1
    assert math.isfinite(reference["object_left_in"]["inpaint_psnr"])
    # classical inpainting of the true hole does better in the hole than leaving the object in
    assert reference["biharmonic_fill"]["inpaint_psnr"] > reference["object_left_in"]["inpaint_psnr"]
    assert record["metrics"]["supervised_segmenter"]["steps"] == SMOKE["segmenter_iterations"]


def test_smoke_run_resumes_without_retraining(smoke_run):
    run_dir, _, record = smoke_run
    again = seigan_runs.run("smoke", models=("no_cycle",), device="cpu", run_dir=run_dir, progress=False)
    assert again["training"]["no_cycle"] == record["training"]["no_cycle"]
    assert again["metrics"]["no_cycle"]["mask_iou"] == pytest.approx(record["metrics"]["no_cycle"]["mask_iou"])
    assert again["metrics"]["no_cycle"]["inpaint_psnr"] == pytest.approx(record["metrics"]["no_cycle"]["inpaint_psnr"])
    assert again["stale"] == []


def test_a_model_scored_before_its_network_trained_further_is_stale(smoke_run, tmp_path):
    run_dir, _, _ = smoke_run
    for path in list(run_dir.glob("models/*.json")) + list(run_dir.glob("train/*.json")) + [run_dir / "metrics.json"]:
        write_json(tmp_path / path.relative_to(run_dir), read_json(path))
    info = read_json(tmp_path / "train" / "no_identity.json")
    write_json(tmp_path / "train" / "no_identity.json", dict(info, steps=99))
    record = seigan_runs.merge_records("smoke", tmp_path, "cpu")
    assert record["stale"] == ["no_identity"]
    with pytest.raises(ValueError, match="no_identity"):
        seigan_runs.read_record("smoke", tmp_path)


def test_exported_networks_load_and_reproduce_the_run(smoke_run):
    run_dir, export, record = smoke_run
    trainer, settings = seigan_runs.load_models(export / "seigan.pt", extra=export / "seigan_extra.pt")
    assert settings["size"] == SMOKE["size"]
    data = seigan_runs.chapter_data(settings)
    from labkit.metrics import _judge
    judge = _judge(None, "cpu")
    scores, _ = seigan_runs.evaluate_trained(trainer, data["test"], judge,
                                             seigan_runs.real_embeddings(data["test"], judge))
    assert scores["mask_iou"] == pytest.approx(record["metrics"]["seigan"]["mask_iou"], abs=0.02)
    assert scores["inpaint_psnr"] == pytest.approx(record["metrics"]["seigan"]["inpaint_psnr"], abs=0.1)
    supervised = seigan_runs.load_supervised_segmenter(export / "seigan_extra.pt")
    with torch.no_grad():
        masks = supervised(data["test"]["objects"], data["test"]["boxes"])
    assert seigan_runs.score_masks(masks, data["test"])["mask_iou"] == pytest.approx(
        record["metrics"]["supervised_segmenter"]["mask_iou"], abs=0.02)
    # the trained discriminators came with the extra file: the run's own weights, to float16 precision
    trained = load_checkpoint(run_dir / "train" / "seigan.pt")["model"]
    for part in ("object_discriminator", "background_discriminator"):
        weight = trained[f"{part}.net.net.0.weight"]
        assert torch.allclose(getattr(trainer, part).net.net[0].weight, weight, atol=1e-3)


def test_load_models_names_missing_corrupt_and_wrong_files(tmp_path, smoke_run):
    _, export, _ = smoke_run
    with pytest.raises(FileNotFoundError, match="seigan_runs"):
        seigan_runs.load_models(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        seigan_runs.load_models(bad)
    with pytest.raises(CheckpointError, match="seigan-generators"):
        seigan_runs.load_models(export / "seigan_extra.pt")


def _record(**overrides):
    base = {"mask_iou": 0.8, "mask_area_ratio": 1.0, "inpaint_psnr": 20.0, "inpaint_perceptual": 0.1,
            "frechet_distance": 1.0, "fcn_miou": 0.6, "inpaint_frechet": 1.0}
    metrics = {name: dict(base) for name in seigan.MODEL_NAMES}
    for name, values in overrides.items():
        metrics[name].update(values)
    left_in = {"inpaint_psnr": 15.0, "inpaint_perceptual": 0.3, "inpaint_frechet": 2.0}
    return {"metrics": metrics, "reference": {"object_left_in": left_in, "biharmonic_fill": dict(left_in)}}


def test_claims_follow_the_comparisons():
    good = seigan_runs.claims(_record(bbox_as_mask={"mask_iou": 0.7}, supervised_segmenter={"mask_iou": 0.85},
                                      no_enhancement={"frechet_distance": 2.0, "fcn_miou": 0.5},
                                      seigan_stop_gradient={"mask_iou": 0.75},
                                      no_cycle={"mask_iou": 0.7, "inpaint_psnr": 18.0, "frechet_distance": 2.0}))
    verdicts = [row["verdict"] for row in good]
    assert verdicts[:5] == ["holds"] * 5 and verdicts[5] == "does not hold"
    assert "biharmonic" in good[2]["evidence"]
    # masks that shrank below half the true area have collapsed, whatever their IoU
    collapsed = seigan_runs.claims(_record(seigan={"mask_area_ratio": 0.3}, seigan_stop_gradient={"mask_iou": 0.9}))
    assert collapsed[3]["verdict"] == "does not hold"
    assert seigan_runs.claims(_record(seigan={"mask_area_ratio": 0.3}))[3]["verdict"] == "mixed"
    bad = seigan_runs.claims(_record(bbox_as_mask={"mask_iou": 0.9}, supervised_segmenter={"mask_iou": 0.95}))
    assert bad[0]["verdict"] == "does not hold" and "box as mask 0.900" in bad[0]["evidence"]
    # closing less than half of the gap from the box to full supervision is only "mixed"
    partial = seigan_runs.claims(_record(bbox_as_mask={"mask_iou": 0.7}, supervised_segmenter={"mask_iou": 0.95}))
    assert partial[0]["verdict"] == "mixed"
    # a supervised reference below the box leaves only the floor to test
    inverted = seigan_runs.claims(_record(bbox_as_mask={"mask_iou": 0.75}, supervised_segmenter={"mask_iou": 0.5},
                                          seigan={"mask_iou": 0.45}))
    assert inverted[0]["verdict"] == "does not hold" and "does not beat the box" in inverted[0]["evidence"]


def test_an_interrupted_training_resumes_exactly_as_if_it_had_run_through(tmp_path):
    """The pools' contents and the noise and pool random streams are checkpointed with the
    networks, so stopping after 3 steps and resuming gives the weights of an uninterrupted run."""
    settings = dict(SMOKE, iterations=6, pool_size=2)
    data = seigan_runs.chapter_data(settings, splits=("train",))
    features = seigan_runs.reconstruction_features(settings, "cpu")
    straight, _ = seigan_runs.train_model("seigan", data, settings, "cpu", tmp_path / "a", features, progress=False)
    _, first = seigan_runs.train_model("seigan", data, settings, "cpu", tmp_path / "b", features, progress=False,
                                       stop_after=3)
    assert first.steps_done == 3 and not first.finished
    resumed, second = seigan_runs.train_model("seigan", data, settings, "cpu", tmp_path / "b", features,
                                              progress=False)
    assert second.resumed_from == 3 and second.finished
    a, b = straight.state_dict(), resumed.state_dict()
    for key, value in a.items():
        if isinstance(value, torch.Tensor):
            assert torch.allclose(value, b[key], atol=1e-6), key
    assert all(len(pool.images) == 2 for pool in resumed.pools.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_steps_run_under_cuda_autocast(tmp_path):
    settings = dict(SMOKE, iterations=2, segmenter_iterations=2)
    data = seigan_runs.chapter_data(settings, splits=("train",))
    features = seigan_runs.reconstruction_features(settings, "cuda")
    _, result = seigan_runs.train_model("seigan", data, settings, "cuda", tmp_path, features, progress=False)
    assert result.finished
    _, result = seigan_runs.train_supervised_segmenter(data, settings, "cuda", tmp_path, progress=False)
    assert result.finished


def test_committed_book_artefacts_match_the_book_profile():
    """The committed record is complete and fresh, and the committed networks load, fit the book
    profile and stay under the size limit."""
    settings = seigan.PROFILES["book"]
    record = seigan_runs.read_record("book")
    assert set(record["metrics"]) == set(seigan.MODEL_NAMES)
    for name in seigan.TRAINED_MODELS:
        assert record["metrics"][name]["steps"] == settings["iterations"], name
    assert record["metrics"]["supervised_segmenter"]["steps"] == settings["segmenter_iterations"]
    trainer, saved = seigan_runs.load_models(seigan_runs.exported_path("book"),
                                             extra=seigan_runs.exported_path("book", extra=True))
    assert saved.pop("profile") == "book" and saved == settings
    supervised = seigan_runs.load_supervised_segmenter(seigan_runs.exported_path("book", extra=True))
    x = torch.zeros(1, 3, *settings["size"])
    box = torch.tensor([[10, 10, 30, 40]])
    assert trainer.segmenter(x, box).shape == supervised(x, box).shape == (1, 1, *settings["size"])
    for extra in (False, True):
        assert seigan_runs.exported_path("book", extra).stat().st_size < 8 * 2 ** 20
    assert all((seigan_runs.record_dir("book") / "samples" / f"{name}.png").is_file() for name in seigan.MODEL_NAMES)


def test_smoke_record_keeps_the_diagnostics(smoke_run):
    _, _, record = smoke_run
    found = record["diagnostics"]
    assert [row["step"] for row in found["early_dynamics"]] == [step for step in seigan_runs.EARLY_STEPS
                                                               if step <= SMOKE["iterations"]]
    assert set(found["early_dynamics"][0]["terms"]) == {"object_adversarial", "background_adversarial",
                                                        "object_reconstruction", "background_reconstruction", "identity"}
    for kind in ("empty", "box", "true_mask"):
        assert 0.0 <= found["paste_detectability"][kind] <= 1.0
    assert set(found["models"]) == set(seigan.TRAINED_MODELS)
    assert found["models"]["no_cycle"]["mask_pressures"]["terms"].keys() == {"object_adversarial",
                                                                            "background_adversarial", "identity"}


def test_early_dynamics_replays_the_recorded_runs_first_steps(tmp_path):
    """early_dynamics retrains seigan from the recorded run's initial weights and batches: after 3
    steps its masks are those of train_model stopped after 3 steps."""
    settings = dict(SMOKE, iterations=6, pool_size=2)
    data = seigan_runs.chapter_data(settings)
    features = seigan_runs.reconstruction_features(settings, "cpu")
    rows = seigan_runs.early_dynamics(data, settings, features, steps=(0, 3, 99), pairs=4)
    assert [row["step"] for row in rows] == [0, 3]   # beyond the profile's 6 iterations: dropped
    trainer, _ = seigan_runs.train_model("seigan", data, settings, "cpu", tmp_path, features, progress=False,
                                         stop_after=3)
    replayed = seigan_runs.mask_pressures(trainer, data["test"], pairs=4)
    for name, pushes in replayed["terms"].items():   # float pushes: every weight, batch and random draw agrees
        for key, value in pushes.items():
            assert rows[1]["terms"][name][key] == pytest.approx(value, rel=1e-5, abs=1e-12), (name, key)
    assert rows[0]["terms"]["object_adversarial"] != rows[1]["terms"]["object_adversarial"]   # training moved them


def test_mask_pressures_leave_the_trainer_as_they_found_it_and_the_logit_push_is_the_chain_rule():
    """The push on the logit a, where m = (tanh a + 1)/2 inside the box, equals autograd's gradient
    at the segmenter's last layer; the trainer's mode and noise stream are unchanged."""
    from labkit.features import load_feature_extractor

    data = seigan_runs.chapter_data(SMOKE, splits=("test",))
    torch.manual_seed(0)
    trainer = seigan.SeiganTrainer(seigan.MODEL_SPECS["seigan"], SMOKE, load_feature_extractor("judge"))
    trainer.train()
    state = trainer.noise.get_state()
    found = seigan_runs.mask_pressures(trainer, data["test"], pairs=6)
    assert trainer.training and torch.equal(trainer.noise.get_state(), state)
    assert all(p.grad is None for p in trainer.parameters())
    # the same term by hand, with the logit captured before the tanh
    test, captured = data["test"], {}
    last = trainer.segmenter.net.up[1]   # the outermost up-convolution: a, then tanh
    handle = last.register_forward_hook(lambda module, inputs, output: captured.setdefault("a", output))
    trainer.eval()
    trainer.noise.manual_seed(seigan_runs.EVALUATION_NOISE_SEED)
    x, boxes, y = test["objects"][:6], test["boxes"][:6], test["backgrounds"][:6]
    out = trainer(x, boxes, y)
    handle.remove()
    terms = trainer.generator_terms(out, x, y, trainer.crops(out["pasted"], out["paste_boxes"]),
                                    trainer.crops(out["moved"], out["paste_boxes"]))
    (gradient,) = torch.autograd.grad(seigan.LOSS_WEIGHTS["object_adversarial"] * terms["object_adversarial"],
                                      captured["a"])
    truth = (test["masks"][:6] > 0.5).float()
    region = seigan.box_masks(boxes, x.shape[-2:]) * (1 - truth)
    by_hand = float((-gradient * len(x) * region).sum() / region.sum())
    assert found["terms"]["object_adversarial"]["background_in_box_logit"] == pytest.approx(by_hand, rel=1e-4)


def test_a_saturated_mask_passes_almost_none_of_a_losss_push_to_the_segmenter():
    from labkit.features import load_feature_extractor

    data = seigan_runs.chapter_data(SMOKE, splits=("test",))
    torch.manual_seed(0)
    trainer = seigan.SeiganTrainer(seigan.MODEL_SPECS["seigan"], SMOKE, load_feature_extractor("judge"))
    free = seigan_runs.mask_pressures(trainer, data["test"], pairs=8)
    with torch.no_grad():
        trainer.segmenter.net.up[1].bias.fill_(20.0)   # tanh(a) = 1: the whole box, saturated
    stuck = seigan_runs.mask_pressures(trainer, data["test"], pairs=8)
    assert free["saturated_share"] < 0.5 and stuck["saturated_share"] == 1.0
    push = stuck["terms"]["object_adversarial"]
    assert abs(push["object_mask"]) > 0 and push["object_logit"] == 0.0
    assert all(value == 0.0 for value in stuck["terms"]["identity"].values())   # G_enh(x) has no path to m


def test_auc_counts_real_above_fake_and_ties_half():
    assert seigan_runs._auc(torch.tensor([2.0, 3.0]), torch.tensor([0.0, 1.0])) == 1.0
    assert seigan_runs._auc(torch.tensor([0.0]), torch.tensor([1.0, 2.0])) == 0.0
    assert seigan_runs._auc(torch.tensor([1.0, 1.0]), torch.tensor([1.0])) == 0.5


def test_a_seed_run_trains_the_model_again_on_the_same_scenes_and_joins_the_record(smoke_run, tmp_path):
    run_dir, _, record = smoke_run
    for path in list(run_dir.glob("models/*.json")) + list(run_dir.glob("train/*.json")) + [run_dir / "metrics.json"]:
        write_json(tmp_path / path.relative_to(run_dir), read_json(path))
    found = seigan_runs.seed_run("smoke", "no_cycle", 3, device="cpu", run_dir=tmp_path, progress=False)
    assert found["training_seed"] == 3 and found["data_seed"] == 0 and found["metrics"]["finished"]
    assert found["metrics"]["mask_iou"] != record["metrics"]["no_cycle"]["mask_iou"]   # other weights, other masks
    assert (tmp_path / "seeds" / "seed3" / "train" / "no_cycle.pt").is_file()
    assert (tmp_path / "seeds" / "no_cycle_seed3.png").stat().st_size > 1000
    assert found["training"]["steps"] == SMOKE["iterations"] and found["training"]["seed"] == 3
    merged = seigan_runs.merge_records("smoke", tmp_path, "cpu")
    assert merged["seed_runs"]["no_cycle_seed3"]["metrics"] == found["metrics"]
    with pytest.raises(ValueError, match="training_seed"):
        seigan_runs.seed_run("smoke", "no_cycle", 0, device="cpu", run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="no networks"):
        seigan_runs.seed_run("smoke", "bbox_as_mask", 1, device="cpu", run_dir=tmp_path, progress=False)


def test_claims_leave_differences_within_seigans_seed_range_unresolved():
    record = _record(bbox_as_mask={"mask_iou": 0.7}, supervised_segmenter={"mask_iou": 0.85},
                     no_enhancement={"frechet_distance": 0.99, "fcn_miou": 0.605})
    assert seigan_runs.seed_spread(record) == {}   # one run: no spread, every difference counts
    assert seigan_runs.claims(record)[1]["verdict"] == "does not hold"
    record["seed_runs"] = {f"seigan_seed{k}": {"model": "seigan", "training_seed": k,
                                               "metrics": dict(record["metrics"]["seigan"], mask_iou=0.8 + 0.01 * k,
                                                               frechet_distance=1.0 + 0.02 * k, fcn_miou=0.6 - 0.01 * k)}
                           for k in (1, 2)}
    spread = seigan_runs.seed_spread(record)
    assert spread["mask_iou"] == pytest.approx(0.02) and spread["frechet_distance"] == pytest.approx(0.04)
    rows = seigan_runs.claims(record)
    assert rows[1]["verdict"] == "not resolved" and "not resolved: frechet_distance, fcn_miou" in rows[1]["evidence"]
    assert rows[0]["verdict"] == "holds"   # 0.8 vs the box's 0.7 and the half-gap's 0.775: both beyond 0.02
    record["metrics"]["seigan_stop_gradient"]["mask_iou"] = 0.81   # better, but within the range: not needed
    assert rows[3]["verdict"] == "holds" and seigan_runs.claims(record)[3]["verdict"] == "holds"
    record["metrics"]["seigan_stop_gradient"]["mask_iou"] = 0.85   # resolvably better: the stop-gradient helps
    assert seigan_runs.claims(record)[3]["verdict"] == "mixed"
