"""SIMS: memory, retrieval, transformer, ordering, canvases, synthesis and the recorded runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from labkit.checkpoints import CheckpointError
from labkit.data import CLASS_INDEX, INSTANCE_CLASSES, NUM_CLASSES, render_batch
from labkit.networks import one_hot_layout
from labkit.papers import sims, sims_runs

SIZE = (32, 64)
GRID = (16, 32)


@pytest.fixture(scope="module")
def memory():
    return sims.SegmentMemory.from_scenes(SIZE, 40, GRID, seed=0)


@pytest.fixture(scope="module")
def test_labels():
    return render_batch(SIZE, 4, split="test")[1]


# --------------------------------------------------------------------------- segments and memory


def test_connected_segments_split_components_and_drop_small_ones():
    label = np.zeros((8, 8), np.int64)
    label[1:3, 1:3] = 2          # 4 px
    label[5:8, 5:8] = 2          # 9 px, not touching the first
    label[0, 7] = 3              # 1 px
    components, classes = sims.connected_segments(label, min_area=4)
    assert classes.tolist() == [0, 2, 2]
    assert components.max() == 3
    assert (components[1:3, 1:3] > 0).all() and components[0, 7] == 0
    assert components[1, 1] != components[6, 6]


def test_min_segment_area_scales_the_papers_threshold():
    assert sims.min_segment_area((256, 512)) == 1000
    assert sims.min_segment_area((64, 128)) == round(1000 / 16)


def test_grid_descriptors_context_lies_outside_the_mask(memory):
    assert len(memory) > 100
    masks = memory.grid_masks
    context = memory.grid_context
    assert masks.any(1).all(), "every segment keeps at least one grid cell"
    assert not (masks & (context != 255)).any(), "a cell is mask or context, never both"
    assert (context[context != 255] < NUM_CLASSES).all()


def test_memory_segment_record(memory):
    record = memory.segment(3)
    x0, y0, x1, y1 = record["box"]
    ys, xs = torch.nonzero(record["mask"], as_tuple=True)
    assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)
    assert int(record["mask"].sum()) == record["area"] >= memory.min_area
    assert (record["pixels"][:, ~record["mask"]] == 0).all()
    assert (memory.labels[record["scene"]][record["mask"]] == record["class_id"]).all()
    with pytest.raises(IndexError):
        memory.segment(len(memory))


def test_memory_save_load_roundtrip_and_bad_files(memory, tmp_path):
    path = memory.save(tmp_path / "memory.pt")
    loaded = sims.SegmentMemory.load(path)
    assert len(loaded) == len(memory) and loaded.size == memory.size and loaded.grid == memory.grid
    assert torch.equal(loaded.grid_context, memory.grid_context)
    assert torch.equal(loaded.mask(7), memory.mask(7))
    with pytest.raises(FileNotFoundError, match="no segment memory"):
        sims.SegmentMemory.load(tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        sims.SegmentMemory.load(tmp_path / "corrupt.pt")


def test_memory_rejects_bad_input():
    with pytest.raises(ValueError, match="uint8"):
        sims.SegmentMemory.build(torch.zeros(2, 3, 8, 16), torch.zeros(2, 8, 16, dtype=torch.long), (4, 8))
    with pytest.raises(ValueError):
        sims.SegmentMemory.build(torch.zeros(2, 3, 8, 16, dtype=torch.uint8),
                                 torch.full((2, 8, 16), NUM_CLASSES + 3, dtype=torch.long), (4, 8))


# --------------------------------------------------------------------------- retrieval


@pytest.mark.parametrize("score", sims.RETRIEVAL_SCORES)
def test_vectorised_retrieval_is_exact_against_brute_force(memory, test_labels, score):
    checked = 0
    for label in test_labels:
        query = sims.query_layout(label, memory)
        for k in range(len(query)):
            args = (memory, int(query.class_ids[k]), query.grid_masks[k], query.grid_context[k])
            top, scores = sims.retrieve(*args, k=10, score=score)
            reference, reference_scores = sims.retrieve_loop(*args, k=10, score=score)
            assert top.tolist() == reference and scores.tolist() == reference_scores
            assert (memory.class_ids[top] == query.class_ids[k]).all()
            checked += 1
    assert checked > 10


def test_retrieval_scores_by_hand():
    """Two one-scene memories with known masks: IoU and context IoU computed by hand."""
    label = torch.zeros(8, 16, dtype=torch.long)
    label[:4] = CLASS_INDEX["sky"]
    label[4:, 4:8] = CLASS_INDEX["car"]
    image = torch.zeros(1, 3, 8, 16, dtype=torch.uint8)
    memory = sims.SegmentMemory.build(image, label[None], (8, 16), min_area=4)
    car = int(torch.nonzero(memory.class_ids == CLASS_INDEX["car"])[0])
    query_mask = torch.zeros(8 * 16, dtype=torch.bool)
    query_mask.view(8, 16)[4:, 4:6] = True          # half of the car
    empty_context = torch.full((8 * 16,), 255, dtype=torch.uint8)
    _, scores = sims.retrieval_scores(memory, CLASS_INDEX["car"], query_mask, empty_context, score="mask")
    assert scores.tolist() == [0.5]
    same_context = memory.grid_context[car]
    _, scores = sims.retrieval_scores(memory, CLASS_INDEX["car"], query_mask, same_context, score="mask+context")
    assert scores.tolist() == [1.5]


def test_retrieval_rejects_unknown_score(memory):
    with pytest.raises(ValueError, match="unknown retrieval score"):
        sims.retrieve(memory, 0, memory.grid_masks[0], memory.grid_context[0], score="colour")


def test_query_layout_checks_its_input(memory):
    with pytest.raises(ValueError, match="match the memory"):
        sims.query_layout(torch.zeros(16, 16, dtype=torch.long), memory)
    with pytest.raises(ValueError):
        sims.query_layout(torch.full(SIZE, 40, dtype=torch.long), memory)


# --------------------------------------------------------------------------- transformation


def test_identity_initialised_transformer_leaves_a_segment_unchanged(memory):
    transformer = sims.SegmentTransformer(widths=(8, 8))
    segment = memory.segment(5)
    pixels, mask = segment["pixels"][None], segment["mask"].float()[None, None]
    layout = one_hot_layout(memory.labels[segment["scene"]][None].long())
    warped, warped_mask, theta = transformer.align(pixels, mask, torch.rand_like(mask).round(), layout)
    assert torch.allclose(theta, torch.tensor(sims.IDENTITY_AFFINE).view(1, 2, 3))
    assert torch.allclose(warped, pixels * mask, atol=1e-5)
    assert torch.allclose(warped_mask, mask, atol=1e-5)


def test_transformation_loss_is_zero_when_aligned_and_grows_when_shifted(memory):
    batch = sims.misaligned_batch(memory, 0, 4)
    aligned, _ = sims.transformation_loss(batch["photo"] * batch["target_mask"], batch["target_mask"],
                                          batch["photo"], batch["target_mask"])
    assert float(aligned) == pytest.approx(0.0, abs=1e-6)
    shifted, _ = sims.transformation_loss(batch["pixels"], batch["mask"], batch["photo"], batch["target_mask"])
    assert float(shifted) > 0.05


def test_misaligned_batch_is_a_function_of_the_step(memory):
    a, b = sims.misaligned_batch(memory, 3, 4), sims.misaligned_batch(memory, 3, 4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (sims.mask_iou(a["mask"], a["target_mask"]) < 1).any()


# --------------------------------------------------------------------------- ordering


@pytest.fixture(scope="module")
def pairs():
    return sims.ordering_pairs(SIZE, 120, split="train"), sims.ordering_pairs(SIZE, 80, split="test")


def test_ordering_pairs_are_true_neighbours_with_balanced_labels(pairs):
    train, _ = pairs
    assert len(train) > 40
    assert 0.3 < float(train.a_in_front.float().mean()) < 0.7
    batch = train.batch(torch.arange(5))
    assert (batch["mask_a"].sum((1, 2, 3)) > 0).all() and (batch["mask_b"].sum((1, 2, 3)) > 0).all()
    assert not (batch["mask_a"].bool() & batch["mask_b"].bool()).any()


def test_ordering_network_is_antisymmetric(pairs):
    batch = pairs[0].batch(torch.arange(4))
    network = sims.OrderingNetwork(widths=(8, 8))
    forward = network(batch["layout"], batch["mask_a"], batch["mask_b"])
    backward = network(batch["layout"], batch["mask_b"], batch["mask_a"])
    assert torch.allclose(forward, -backward, atol=1e-6)
    with pytest.raises(ValueError, match="expected a layout"):
        network(batch["layout"][:, :3], batch["mask_a"], batch["mask_b"])


def test_ordering_network_beats_chance_after_brief_training(pairs):
    torch.manual_seed(0)
    train, test = pairs
    network = sims.OrderingNetwork(widths=(8, 16))
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(80):
        batch = train.batch(rng.integers(0, len(train), 16))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            network(batch["layout"], batch["mask_a"], batch["mask_b"]), batch["a_in_front"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scores = sims.ordering_accuracy(network, test)
    assert scores["pairs"] >= 20
    assert scores["accuracy"] > 0.65


def test_bottom_edge_rule_reads_the_depth_cue(pairs):
    assert sims.bottom_edge_rule(pairs[1])["accuracy"] > 0.6


# --------------------------------------------------------------------------- canvases


def test_reinhard_transfer_matches_the_target_lab_statistics():
    torch.manual_seed(0)
    lab = torch.stack([torch.rand(500) * 60 + 20, torch.randn(500) * 10, torch.randn(500) * 15 + 5])
    source = torch.cat([lab.mean(1), lab.std(1, unbiased=False)])
    target = torch.tensor([55.0, -8.0, 12.0, 6.0, 3.0, 9.0])
    out = sims.reinhard_transfer_lab(lab, source, target)
    assert torch.allclose(out.mean(1), target[:3], atol=1e-3)
    assert torch.allclose(out.std(1, unbiased=False), target[3:], atol=1e-3)


def test_colour_transfer_changes_only_the_masked_pixels_towards_the_target():
    import kornia

    torch.manual_seed(1)
    image = 0.3 + 0.4 * torch.rand(3, 16, 32)
    mask = torch.zeros(16, 32, dtype=torch.bool)
    mask[4:12, 8:24] = True
    target = sims.lab_statistics(0.2 + 0.3 * torch.rand(3, 16, 32).mul(torch.tensor([1.0, 0.6, 0.3])[:, None, None]),
                                 torch.ones(16, 32, dtype=torch.bool))
    out = sims.colour_transfer(image, mask, target)
    assert torch.equal(out[:, ~mask], image[:, ~mask])
    lab = kornia.color.rgb_to_lab(out[None])[0][:, mask]
    assert torch.allclose(lab.mean(1), target[:3], atol=0.5)
    assert torch.allclose(lab.std(1, unbiased=False), target[3:], atol=0.5)


@pytest.fixture(scope="module")
def simulated(memory):
    return sims.SimulatedCanvases.build(memory, seed=0)


def test_stenciling_never_writes_outside_the_query_mask(memory, simulated):
    assert not (simulated.stencils & (memory.components == 0)).any()
    rng = np.random.default_rng(0)
    for scene in range(len(memory.labels)):
        canvas, filled = simulated.canvas(scene, rng)
        assert not (filled & (memory.components[scene] == 0)).any()
        assert (canvas[:, ~filled] == 0).all()
    # within each segment the stencil is exactly its overlap with the segment retrieved for it
    smaller = 0
    for n in range(len(memory)):
        scene, found = int(memory.scene_ids[n]), int(simulated.retrieved[n])
        inside = simulated.stencils[scene] & memory.mask(n)
        expected = memory.mask(n) & memory.mask(found) if found >= 0 else memory.mask(n)
        assert torch.equal(inside, expected)
        assert found < 0 or int(memory.scene_ids[found]) != scene, "a scene never stencils with its own segment"
        smaller += int(inside.sum() < memory.mask(n).sum())
    assert smaller > len(memory) // 4


def test_each_simulation_changes_the_canvas(simulated):
    full, _ = simulated.canvas(0, np.random.default_rng(0), simulations=())
    stencil, stencil_mask = simulated.canvas(0, np.random.default_rng(0), simulations=("stenciling",))
    elided, elided_mask = simulated.canvas(0, np.random.default_rng(0), simulations=("elision",))
    recoloured, _ = simulated.canvas(0, np.random.default_rng(0), simulations=("colour_transfer",),
                                     colour_probability=1.0)
    assert stencil_mask.sum() < (simulated.memory.components[0] > 0).sum()
    assert elided_mask.sum() < (simulated.memory.components[0] > 0).sum()
    assert not torch.allclose(recoloured, full)
    with pytest.raises(ValueError, match="unknown simulations"):
        simulated.canvas(0, np.random.default_rng(0), simulations=("blur",))


def test_elision_removes_part_of_the_boundary_band_only():
    label = torch.zeros(32, 64, dtype=torch.long)
    label[:, 32:] = 1
    removed = sims.elision_mask(label, np.random.default_rng(0), fraction=0.5)
    band = sims.dilate(sims.label_boundaries(label), 1)
    assert removed.any() and not (removed & ~band).any()
    assert removed.sum() < band.sum()


def test_simulated_batches_are_a_function_of_the_step(simulated):
    a, b = simulated.batch(4, 3), simulated.batch(4, 3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["canvas"].shape == (3, 3, *SIZE) and a["mask"].shape == (3, 1, *SIZE)


def test_canvas_pastes_only_near_its_components(memory, test_labels):
    canvas = sims.build_canvas(test_labels[0], memory, sims.SegmentTransformer(widths=(8, 8)),
                               sims.OrderingNetwork(widths=(8, 8)), paste_margin=1)
    near = sims.dilate(canvas.query.components > 0, 1)
    assert canvas.filled.any() and not (canvas.filled & ~near).any()
    assert (canvas.canvas[:, ~canvas.filled] == 0).all()
    classes = [int(canvas.query.class_ids[k]) for k in canvas.order]
    things = [c in INSTANCE_CLASSES for c in classes]
    assert things == sorted(things), "stuff is pasted before objects"
    # an untrained (identity) transformer changes nothing
    assert torch.allclose(canvas.iou_before[~canvas.iou_before.isnan()], canvas.iou_after[~canvas.iou_after.isnan()])
    stats = sims.coverage([canvas])
    assert 0 < stats["filled"] <= 1


# --------------------------------------------------------------------------- synthesis network


def test_synthesis_network_shapes_and_input_checks():
    network = sims.SynthesisNetwork(SIZE, (8, 8, 16))
    layout = one_hot_layout(torch.zeros(2, *SIZE, dtype=torch.long))
    image, logits = network(layout, torch.rand(2, 3, *SIZE), torch.ones(2, 1, *SIZE))
    assert image.shape == (2, 3, *SIZE) and logits.shape == (2, NUM_CLASSES, *SIZE)
    assert network.sample(layout, torch.rand(2, 3, *SIZE), torch.ones(2, 1, *SIZE)).shape == (2, 1, 3, *SIZE)
    with pytest.raises(ValueError, match="canvas must be"):
        network(layout, torch.rand(2, 3, 16, 16), torch.ones(2, 1, *SIZE))
    with pytest.raises(ValueError):
        network(layout[:, :4], torch.rand(2, 3, *SIZE), torch.ones(2, 1, *SIZE))
    with pytest.raises(ValueError, match="divisible"):
        sims.SynthesisNetwork((48, 96), (8, 8, 8, 8, 8, 8))


def test_synthesis_loss_decreases_on_one_batch(simulated):
    torch.manual_seed(0)
    network = sims.SynthesisNetwork(SIZE, (8, 16, 16))
    trainer = sims.SIMSTrainer(network, sims.FeatureMatchingLoss(None))
    optimizer = torch.optim.Adam(network.parameters(), lr=2e-3)
    batch = simulated.batch(0, 2)
    losses = []
    for _ in range(25):
        loss, logs = trainer(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert {"feature_matching", "cross_entropy"} <= set(logs)
    assert losses[-1] < 0.7 * losses[0]


# --------------------------------------------------------------------------- recorded runs


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sims_smoke")
    record = sims_runs.run("smoke", run_dir=run_dir, export=run_dir / "networks.pt", progress=False, device="cpu")
    return run_dir, record


def test_smoke_run_records_every_model_and_part(smoke_run):
    run_dir, record = smoke_run
    metrics = record["metrics"]
    for name in sims.MODEL_NAMES:
        assert {"fcn_miou", "fcn_pixel_accuracy", "frechet_distance", "per_class_iou"} <= set(metrics[name])
        assert record["runs"][name]["profile"] == "smoke"
    assert 0 <= metrics["ordering_accuracy"] <= 1
    assert all(row["identical_top_k"] for row in metrics["retrieval"])
    assert [row["segments"] for row in metrics["retrieval"]] == list(sims.PROFILES["smoke"]["retrieval_sizes"])
    assert json.loads((run_dir / "metrics.json").read_text())["metrics"].keys() == metrics.keys()
    assert (run_dir / "samples" / "sims.png").stat().st_size > 1000
    # the ablations that change only the canvas reuse the sims network and carry its training record
    assert metrics["sims_no_ordering"]["network"] == "sims" and "train_seconds" not in metrics["sims_no_ordering"]
    assert record["training"]["sims_no_transformation"] == record["training"]["sims"]
    assert record["training"]["sims"]["steps"] == sims.PROFILES["smoke"]["synthesis_steps"]
    assert record["training"]["sims_no_elision"]["finished_at"] >= record["training"]["sims"]["finished_at"]
    assert metrics["sims_no_transformation"]["canvas"]["transform"] is False
    assert metrics["canvas"]["networks"]["transformer"]["finished"]
    assert record["stale"] == []


def test_smoke_run_resumes_instead_of_retraining(smoke_run):
    run_dir, record = smoke_run
    first = record["training"]["sims"]
    again = sims_runs.run("smoke", parts=("synthesis",), models=("sims",), run_dir=run_dir, progress=False,
                          device="cpu")
    assert again["training"]["sims"] == first
    assert again["training"]["transformer"] == record["training"]["transformer"]
    assert again["metrics"]["sims"]["steps"] == sims.PROFILES["smoke"]["synthesis_steps"]
    assert again["stale"] == []


def test_a_record_scored_with_a_retrained_network_is_stale(smoke_run, tmp_path):
    import shutil

    run_dir, _ = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    sims_record = json.loads((copy / "models" / "sims.json").read_text())
    sims_record["training"]["finished_at"] = "2099-01-01T00:00:00+00:00"   # as if sims were retrained later
    (copy / "models" / "sims.json").write_text(json.dumps(sims_record))
    merged = sims_runs.merge_records("smoke", copy, "cpu")
    assert {"sims_no_ordering", "sims_no_transformation", "sims_mask_only_retrieval"} <= set(merged["stale"])
    with pytest.raises(ValueError, match="retrained since"):
        sims_runs.read_record("smoke", run_dir=copy)


def test_exported_networks_roundtrip_and_corrupt_files(smoke_run, tmp_path):
    run_dir, _ = smoke_run
    network, transformer, orderer, settings = sims_runs.load_models(run_dir / "networks.pt")
    assert settings["size"] == SIZE and not network.training
    with pytest.raises(FileNotFoundError, match="sims_runs"):
        sims_runs.load_models(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError):
        sims_runs.load_models(tmp_path / "bad.pt")
    torch.save({"kind": "something else"}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an export"):
        sims_runs.load_models(tmp_path / "other.pt")


def test_run_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown parts"):
        sims_runs.run("smoke", parts=("painting",), run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown model"):
        sims_runs.run("smoke", models=("sims_v2",), run_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="unknown profile"):
        sims_runs.run("huge", run_dir=tmp_path, progress=False)


def _fake_record(better: bool) -> dict:
    good, bad = (1.0, 0.8) if better else (0.8, 1.0)
    base = {"frechet_distance": 2.0, "fcn_miou": 0.4, "frechet_distance_best_output": 2.0,
            "fcn_miou_best_output": 0.4}
    m = {name: dict(base) for name in sims.MODEL_NAMES + sims_runs.BASELINES}
    m["sims"].update(frechet_distance=2.0 * bad, fcn_miou=0.5 * good)
    m["crn"].update(frechet_distance=2.0, fcn_miou=0.6, frechet_distance_best_output=2.0, fcn_miou_best_output=0.6)
    m["canvas"] = {"retrieval_quality": {"mask": {"context_iou": 0.2, "mask_iou": 0.5},
                                         "mask+context": {"context_iou": 0.3, "mask_iou": 0.5}},
                   "retrieved_iou_before": 0.5, "retrieved_iou_after": 0.6 if better else 0.4}
    m["transformation"] = {"simulated_iou_before": 0.4, "simulated_iou_after": 0.7}
    m["ordering"] = {"accuracy": 0.9 if better else 0.4, "test_pairs": 10, "bottom_edge_rule_accuracy": 0.8}
    return {"metrics": m}


def test_claim_verdicts_follow_the_numbers():
    good = {row["claim"]: row["verdict"] for row in sims_runs.claims(_fake_record(True))}
    bad = {row["claim"]: row["verdict"] for row in sims_runs.claims(_fake_record(False))}
    assert all(v == "holds" for k, v in good.items() if "less faithful" not in k)
    assert all(v == "does not hold" for k, v in bad.items() if "less faithful" not in k and "realistic" not in k)
    faithful = _fake_record(True)
    faithful["metrics"]["sims"].update(fcn_miou=0.7)   # above CRN's 0.6, pooled and best
    verdicts = {row["claim"]: row["verdict"] for row in sims_runs.claims(faithful)}
    assert [v for k, v in verdicts.items() if "less faithful" in k] == ["does not hold"]


def test_stencils_of_some_scenes_equal_those_of_the_whole_build(memory, simulated):
    partial = sims.SimulatedCanvases.build(memory, seed=0, only_scenes=[2, 5])
    for scene in (2, 5):
        assert torch.equal(partial.stencils[scene], simulated.stencils[scene])
    assert not partial.stencils[0].any()


def test_claims_without_baselines_are_not_measured():
    record = _fake_record(True)
    del record["metrics"]["crn"]
    verdicts = [row["verdict"] for row in sims_runs.claims(record)]
    assert verdicts[:2] == ["not measured", "not measured"] and "not measured" not in verdicts[2:]


def test_baselines_without_an_export_of_the_profiles_size_are_left_out(tmp_path):
    assert sims_runs._baseline_sampler("crn", "smoke", sims.PROFILES["smoke"], "cpu") is None
    record = sims_runs.run("smoke", parts=("synthesis",), models=("crn",), run_dir=tmp_path, progress=False,
                           device="cpu")
    assert "crn" not in record["metrics"]


def test_random_affine_rotates_in_pixels_about_the_segment_centre():
    mask = torch.zeros(1, 1, 32, 64)
    mask[0, 0, 10:20, 40:52] = 1
    theta = sims.random_affine(mask, np.random.default_rng(0), scale=0.0, rotation_degrees=30.0, shift=0.0)[0].double()
    to_pixels = torch.diag(torch.tensor([64 / 2, 32 / 2], dtype=torch.float64))
    linear = to_pixels @ theta[:, :2] @ torch.linalg.inv(to_pixels)
    assert torch.allclose(linear @ linear.T, torch.eye(2, dtype=torch.float64), atol=1e-6), "a rotation, not a shear"
    assert not torch.allclose(linear, torch.eye(2, dtype=torch.float64), atol=1e-3)
    centre = torch.tensor([(40 + 52) / 64 - 1, (10 + 20) / 32 - 1], dtype=torch.float64)
    assert torch.allclose(theta[:, :2] @ centre + theta[:, 2], centre, atol=1e-6)
