"""The reproducibility report's tables (labkit.report), on the committed book records."""
from __future__ import annotations

import copy

import pytest

from labkit import report
from labkit.checkpoints import write_json
from labkit.train import REPO_ROOT


@pytest.fixture(scope="module")
def records():
    return {c.key: report.read_chapter_record(c.key, "book") for c in report.CHAPTERS}


def test_every_chapter_claim_has_paper_evidence_and_a_report_verdict(records):
    for item in report.CHAPTERS:
        chapter_rows = item.runs.claims(records[item.key])
        rows = report.claims_table(item.key, records[item.key])
        assert len(rows) == len(chapter_rows) > 0
        for row, original in zip(rows, chapter_rows):
            assert row["claim"] == original["claim"] and row["measurement"] == original["evidence"]
            assert row["paper_evidence"].strip()
            assert row["verdict"] == report.VERDICTS[original["verdict"]]
            assert row["section"].startswith(f"chapter {item.number}, § ")
        assert sum(report.verdict_counts(rows).values()) == len(rows)
    # no stale paper evidence for a claim the chapter no longer tests
    for item in report.CHAPTERS:
        tested = {row["claim"] for row in item.runs.claims(records[item.key])}
        assert set(report.PAPER_EVIDENCE[item.key]) == tested, item.key


def test_a_claim_without_paper_evidence_is_refused(records, monkeypatch):
    runs = report.chapter("crn").runs
    monkeypatch.setattr(runs, "claims", lambda record: [{"claim": "a new claim", "evidence": "x", "verdict": "holds"}])
    with pytest.raises(KeyError, match="a new claim"):
        report.claims_table("crn", records["crn"])
    monkeypatch.setattr(runs, "claims", lambda record: [{
        "claim": next(iter(report.PAPER_EVIDENCE["crn"])), "evidence": "x", "verdict": "maybe"}])
    with pytest.raises(ValueError, match="unknown verdict 'maybe'"):
        report.claims_table("crn", records["crn"])


def test_unknown_chapter_and_profile_are_refused():
    with pytest.raises(ValueError, match="unknown chapter 'gan'"):
        report.chapter("gan")
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        report.read_chapter_record("crn", "huge")
    with pytest.raises(ValueError, match="unknown method"):
        report.compare_layout_to_image("book", methods=("crn", "spade"))


def test_published_numbers_sit_beside_ours_from_the_sims_record(records):
    rows = report.published_comparison(records["sims"])
    by = {r["method"]: r for r in rows}
    for method, published in report.PUBLISHED["methods"].items():
        assert by[method]["spade_miou"] == published["miou"] and by[method]["spade_fid"] == published["fid"]
        assert by[method]["fcn_miou"] == records["sims"]["metrics"][method]["fcn_miou"]
    assert by["real scenes"]["spade_miou"] is None
    agree = report.orderings_agree(rows)
    assert set(agree) == {"miou", "miou_best_output", "pixel_accuracy", "realism"}
    # the ordering check reads the numbers: swapping our CRN and SIMS scores flips every answer
    swapped = copy.deepcopy(rows)
    for key in ("fcn_miou", "fcn_miou_best_output", "fcn_pixel_accuracy", "frechet_distance"):
        swapped[0][key], swapped[1][key] = rows[1][key], rows[0][key]
    assert report.orderings_agree(swapped) == {k: not v for k, v in agree.items()}


def _run(seconds, device="cpu", threads=2, when="2026-01-01T00:00:00", command="c"):
    return {"wall_time_s": seconds, "device": device, "threads": threads, "finished_at": when, "command": command}


def test_chapter_costs_count_each_run_once_in_core_and_gpu_minutes():
    record = {
        "training": {
            "a": _run(60, threads=2, when="t1"),
            "b": {"pretrain": _run(30, threads=1, when="t2"), "finetune": _run(120, device="cuda:0", when="t3")},
            "c": {"street5": _run(60, threads=2, when="t1")},    # the same run as "a": counted once
            "d": {"source": "no network"},
        },
        "runs": {"a": _run(6, threads=2, when="t4", command="score"),
                 "b": _run(9, threads=2, when="t5", command="score"),   # the same process, later: 9 s in all
                 "c": _run(3, threads=1, when="t6", command="other")},
    }
    (row,) = report.chapter_costs({"x": record})
    assert row["training"]["runs"] == 3
    assert row["training"]["cpu_core_minutes"] == pytest.approx((60 * 2 + 30) / 60)
    assert row["training"]["gpu_minutes"] == pytest.approx(2.0)
    assert row["training"]["wall_minutes"] == pytest.approx((60 + 30 + 120) / 60)
    assert row["scoring"]["runs"] == 2
    assert row["scoring"]["cpu_core_minutes"] == pytest.approx((9 * 2 + 3) / 60)
    assert row["devices"] == ["cpu", "cuda:0"]


def test_committed_chapter_costs_are_positive(records):
    for row in report.chapter_costs(records):
        assert row["training"]["runs"] > 0 and row["training"]["cpu_core_minutes"] > 0, row["chapter"]


def test_environment_names_this_process():
    import torch

    env = report.environment("cpu")
    assert env["versions"]["torch"] == torch.__version__.split("+")[0] or env["versions"]["torch"] == torch.__version__
    assert env["device"] == "cpu" and env["commit"] and env["cpu_count"] >= 1


def test_read_comparison_refuses_missing_and_stale_records(tmp_path, records):
    with pytest.raises(FileNotFoundError, match="python -m labkit.report --profile book"):
        report.read_comparison("book", out_dir=tmp_path)
    stamps = report._record_stamps({"crn": records["crn"]})
    write_json(tmp_path / "comparison.json", {"metrics": {"chapter_records": stamps}})
    assert report.read_comparison("book", out_dir=tmp_path)["metrics"]["chapter_records"] == stamps
    stamps["crn"]["finished_at"] = "1999-01-01T00:00:00+00:00"
    write_json(tmp_path / "comparison.json", {"metrics": {"chapter_records": stamps}})
    with pytest.raises(ValueError, match=r"older records of \['crn'\]"):
        report.read_comparison("book", out_dir=tmp_path)


@pytest.fixture(scope="module")
def comparison():
    return report.read_comparison("book")


def test_committed_comparison_scores_every_method_on_the_same_layouts(comparison, records):
    metrics = comparison["metrics"]["metrics"]
    count = comparison["metrics"]["settings"]["eval_scenes"]
    for name in report.METHODS:
        assert metrics[name]["applies"], name
        assert metrics[name]["eval_scenes"] == count
        assert metrics[name]["parameters"] > 0 and metrics[name]["seconds_per_image"] > 0
        assert metrics[name]["training"]["cpu_core_minutes"] + metrics[name]["training"]["gpu_minutes"] > 0
    # the same layouts and exports as the SIMS chapter's scoring: its numbers are reproduced
    sims_metrics = records["sims"]["metrics"]
    assert count == sims_metrics["sims"]["eval_scenes"]
    for name in ("crn", "pix2pix", "sims"):
        for key in ("fcn_miou", "fcn_pixel_accuracy", "fcn_miou_best_output"):
            assert metrics[name][key] == pytest.approx(sims_metrics[name][key], abs=2e-3), (name, key)
    assert (REPO_ROOT / "reports" / "book" / "report" / comparison["metrics"]["figure"]).is_file()


def test_html_table_formats_escapes_and_marks_missing_values():
    table = report.html_table([{"a": 0.12345, "b": "<x>", "c": None}, {"a": 3, "b": True, "c": 1234567}],
                              [("A", "a", ".2f"), ("B", "b", None), ("C", "c", ","), ("twice A", lambda r: 2 * r["a"], ".1f")])
    assert "<th>A</th>" in table and "<td>0.12</td>" in table and "<td>3.00</td>" in table
    assert "&lt;x&gt;" in table and "<x>" not in table
    assert "<td>–</td>" in table and "<td>1,234,567</td>" in table and "<td>0.2</td>" in table


def test_benchmark_readers_take_the_recorded_files(tmp_path):
    from labkit.train import write_metrics

    write_metrics(tmp_path / "throughput_cpu.json",
                  {"profile": "book", "chapters": {"srn": {"flops_per_image": 2e9, "modes": {
                      "fp32_eager": {"images_per_s": 10.0, "ratio_to_fp32_eager": 1.0},
                      "bf16_channels_last": {"images_per_s": 15.0, "ratio_to_fp32_eager": 1.5}}}}},
                  {"commit": "abcdef123", "device": "cpu", "device_name": "x86_64"})
    write_metrics(tmp_path / "sims_retrieval_cpu.json",
                  {"points": [{"memory_segments": 1000, "ms_per_query": 4.0},
                              {"memory_segments": 100, "ms_per_query": 1.0}]}, {"commit": "abcdef123"})
    rows = {r["mode"]: r for r in report.throughput_rows(tmp_path)}
    assert {(r["chapter"], mode, r["images_per_s"]) for mode, r in rows.items()} == {
        ("srn", "fp32_eager", 10.0), ("srn", "bf16_channels_last", 15.0)}
    assert rows["bf16_channels_last"]["ratio"] == 1.5
    assert rows["fp32_eager"]["flops_per_image"] == 2e9 and rows["fp32_eager"]["commit"] == "abcdef1"
    assert report.retrieval_curve(tmp_path) == {"cpu": [{"memory_segments": 100, "ms_per_query": 1.0},
                                                        {"memory_segments": 1000, "ms_per_query": 4.0}]}
    assert len(report.benchmark_sources(tmp_path)) == 2
    # an older CRN-only file of the same device is superseded by the all-chapter one
    write_metrics(tmp_path / "crn_throughput_cpu.json", {"modes": {"fp32_eager": {"images_per_s": 1.0}}}, {})
    assert {r["chapter"] for r in report.throughput_rows(tmp_path)} == {"srn"}
    write_metrics(tmp_path / "crn_throughput_cuda.json", {"modes": {"fp32_eager": {"images_per_s": 2.0}}}, {})
    assert {(r["chapter"], r["file"]) for r in report.throughput_rows(tmp_path)} >= {("crn", "crn_throughput_cuda.json")}


def test_full_run_status_lists_every_chapter():
    rows = report.full_run_status()
    assert [r["chapter"] for r in rows] == [c.key for c in report.CHAPTERS]
    for row in rows:
        recorded = any((f / "metrics.json").is_file() for f in report.chapter_record_dirs(row["chapter"], "full"))
        assert row["status"] == ("recorded" if recorded else "not run")


def test_committed_comparison_is_scored_by_the_second_judge_too(comparison):
    from labkit.judge import SECOND_JUDGE

    info = comparison["metrics"]["second_judge"]
    assert info["source"] == str(SECOND_JUDGE["path"].relative_to(REPO_ROOT))
    for name in report.METHODS:
        second = comparison["metrics"]["metrics"][name]["second_judge"]
        assert set(second) == set(report.SECOND_JUDGE_KEYS)
        assert 0 < second["fcn_miou"] <= 1 and second["frechet_distance"] > 0
    # on the real test scenes the second judge scores what its own held-out evaluation says
    real = comparison["metrics"]["reference"]["real_scenes"]["second_judge"]
    size = "x".join(map(str, comparison["metrics"]["settings"]["size"]))
    own = next(v for k, v in info["scores"].items() if k.replace("×", "x") == size)
    assert real["fcn_miou"] == pytest.approx(own["miou"], abs=0.03)


def test_other_profiles_report_the_complete_records_and_say_why_others_are_left_out(monkeypatch, tmp_path):
    monkeypatch.setattr(report, "REPO_ROOT", tmp_path)   # no full records anywhere
    records, missing = report.read_records("full")
    assert records == {} and set(missing) == {c.key for c in report.CHAPTERS}
    assert "labkit reproduce --profile full crn" in missing["crn"]
    (tmp_path / "reports" / "full" / "srn").mkdir(parents=True)
    write_json(tmp_path / "reports" / "full" / "srn" / "metrics.json", {"metrics": {}})   # incomplete
    records, missing = report.read_records("full")
    assert "srn" not in records and "has no record of" in missing["srn"]


def test_each_chapter_labels_the_claims_section_the_report_links_to():
    import json

    for item in report.CHAPTERS:
        cells = json.loads((REPO_ROOT / "notebooks" / f"{item.notebook}.ipynb").read_text())["cells"]
        sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
        assert any(f"({item.label})=\n## {item.claims_section}" in text for text in sources), item.key
        report_sources = json.loads((REPO_ROOT / "notebooks" / "06_report.ipynb").read_text())["cells"]
        assert any(f"{{ref}}`{item.label}`" in "".join(c["source"]) for c in report_sources), item.key
