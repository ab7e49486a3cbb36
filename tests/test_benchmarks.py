"""The benchmarks in ``benchmarks/``: each chapter's timed step, the FLOP count, MFU, errors,
and the SIMS retrieval curve. CPU, smoke profile, one or two steps each."""
from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    if name in sys.modules:
        return sys.modules[name]
    sys.path.insert(0, str(ROOT / "benchmarks"))   # crn_throughput imports its sibling
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


throughput = _load("throughput")
sims_retrieval = _load("sims_retrieval")
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("chapter", throughput.CHAPTERS)
def test_each_chapter_step_trains_and_has_positive_flops(chapter):
    settings = throughput.chapter_settings(chapter, "smoke")
    workload = throughput.build_workload(chapter, settings, CPU)
    record = throughput.time_workload(workload, "fp32_eager", CPU, steps=1, warmup=0, repeats=1,
                                      round_to_cycle=False)
    assert math.isfinite(record["final_loss"])
    assert record["images_per_s"] > 0 and record["step_ms"] > 0
    assert record["images_per_s"] == pytest.approx(workload.images_per_step * record["steps_per_s"], rel=1e-3)
    flops = throughput.count_step_flops(workload, CPU, first_step=1, steps=1)
    assert flops / workload.images_per_step > 0


def test_modes_start_from_the_same_weights():
    settings = throughput.chapter_settings("crn", "smoke")
    plain = throughput.build_workload("crn", settings, CPU, "fp32_eager")
    other = throughput.build_workload("crn", settings, CPU, "bf16_channels_last")
    assert throughput.weights_checksum(plain) == throughput.weights_checksum(other)
    layer = plain.modules[0].refinement_modules[0].layers[0]
    assert layer.weight.is_contiguous()
    assert other.modules[0].refinement_modules[0].layers[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("chapter", ["crn", "seigan"])
def test_flops_double_with_the_batch(chapter):
    """Every counted op (convolutions, matmuls of the losses) is linear in the batch, so twice
    the batch is twice the FLOPs per step and the same FLOPs per image."""
    settings = throughput.chapter_settings(chapter, "smoke")
    counts = []
    for batch_size in (settings["batch_size"], 2 * settings["batch_size"]):
        workload = throughput.build_workload(chapter, dict(settings, batch_size=batch_size), CPU)
        counts.append((throughput.count_step_flops(workload, CPU, 0, 1), workload.images_per_step))
    (small, small_images), (large, large_images) = counts
    assert large_images == 2 * small_images
    assert large == pytest.approx(2 * small, rel=0.01)
    assert large / large_images == pytest.approx(small / small_images, rel=0.01)


def test_mfu_is_null_on_cpu_and_looked_up_by_device_name():
    peak, note = throughput.peak_bf16_flops("cpu")
    assert peak is None and note == "no peak table for CPUs"
    assert throughput.peak_for_name("NVIDIA H100 80GB HBM3") == (989.4e12, "H100 SXM")
    assert throughput.peak_for_name("NVIDIA H100 PCIe") == (756e12, "H100 PCIe")
    assert throughput.peak_for_name("NVIDIA H200") == (989.4e12, "H200")
    for name in ("NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3 MIG 1g.10gb"):
        peak, reason = throughput.peak_for_name(name)
        assert peak is None and name in reason


def test_benchmark_chapter_records_flops_and_null_mfu_on_cpu(monkeypatch):
    monkeypatch.setattr(throughput, "DISTINCT_BATCHES", 1)
    result = throughput.benchmark_chapter("crn", throughput.chapter_settings("crn", "smoke"), CPU,
                                          ["fp32_eager"], steps=1, warmup=0, repeats=1)
    record = result["modes"]["fp32_eager"]
    assert result["flops_per_image"] > 0 and result["flops_per_step"] == pytest.approx(
        result["flops_per_image"] * result["images_per_step"])
    assert record["mfu"] is None and record["mfu_note"] == "no peak table for CPUs"
    assert record["achieved_flops_per_s"] > 0 and record["ratio_to_fp32_eager"] == 1.0
    assert "K = 3" in result["image"]


def test_unknown_chapter_profile_or_mode_is_a_clear_error(capsys):
    with pytest.raises(ValueError, match="unknown chapter 'pix2pix'.*crn"):
        throughput.chapter_settings("pix2pix", "smoke")
    with pytest.raises(ValueError, match="unknown profile 'huge'.*book"):
        throughput.chapter_settings("crn", "huge")
    with pytest.raises(ValueError, match="unknown modes"):
        throughput.check_modes(["fp16"])
    for argv in (["--chapter", "nope"], ["--chapter", "crn", "--profile", "huge"]):
        with pytest.raises(SystemExit):
            throughput.main(argv)
        assert "unknown" in capsys.readouterr().err


def test_sims_retrieval_gives_one_point_per_size_in_order():
    from labkit.train import select_profile
    from labkit.papers.sims import PROFILES

    metrics = sims_retrieval.retrieval_curve(select_profile(PROFILES, "smoke"), sizes=[40, 10, 25], queries=1,
                                             repeats=2, progress=False)
    sizes = [p["memory_segments"] for p in metrics["points"]]
    assert sizes == [10, 25, 40]
    assert all(p["ms_per_query"] > 0 and len(p["pass_ms"]) == 2 for p in metrics["points"])
    assert all(p["matches_loop_reference"] for p in metrics["points"])
    assert metrics["bank"]["segments"] >= 40 and metrics["bank"]["real_segments_only"]
    with pytest.raises(ValueError, match="≥ 1 segment"):
        sims_retrieval.check_sizes([0, 10])
