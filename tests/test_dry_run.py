"""The full profile's dry run (labkit.dry_run): every chapter's full-profile networks, batches and
losses train 2 steps across an interruption, resume, export, load back and are scored; the GPU
branches (bf16 autocast + channels_last, torch.compile) run on the CPU."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from labkit import dry_run as dry
from labkit.checkpoints import load_checkpoint, save_checkpoint, write_json
from labkit.networks import float32_region
from labkit.train import (DRY_RUN_ENV, DRY_RUN_ROOT_ENV, FAST_PATH_ENV, STOP_AFTER_ENV, dry_run_dir, fast_path,
                          fit, register_dry_run, reports_dir, select_profile)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def environment(monkeypatch):
    """Each test starts with none of the dry run's variables set."""
    for name in (DRY_RUN_ENV, DRY_RUN_ROOT_ENV, FAST_PATH_ENV, STOP_AFTER_ENV, "LABKIT_RUN_DIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _channels_last_weights(state: dict) -> list[bool]:
    """For each 4-D weight with a spatial kernel: is it stored channels_last (and not plain contiguous)?"""
    return [t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()
            for t in state.values() if isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[-1] > 1
            and t.shape[1] > 1]


@pytest.fixture(scope="module")
def dry_root(tmp_path_factory):
    """One folder for the module's dry runs: runs/dry-run/<notebook>/ inside it, as in the repository."""
    return tmp_path_factory.mktemp("runs_root")


def _notebook_name(chapter: str) -> str:
    """The chapter's notebook stem (04_semantic_analogy for analogy): its dry runs' folder name."""
    return dry_run_dir(chapter).name


def _errors(notebook: Path) -> list:
    import nbformat

    executed = nbformat.read(notebook, as_version=4)
    return [o.get("ename") for c in executed.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.slow
@pytest.mark.parametrize("chapter", dry.CHAPTERS)
def test_full_profile_dry_run_trains_resumes_and_scores(chapter, dry_root, environment):
    from labkit import cli

    paper = importlib.import_module(f"labkit.papers.{chapter}")
    run_dir = dry_root / "dry-run" / _notebook_name(chapter)
    summary = dry.dry_run(chapter, run_dir=run_dir, device="cpu", log=lambda *_: None)
    full = paper.PROFILES["full"]
    # the full profile's networks, batches and learning rates, only fewer steps, scenes and pixels
    for key in summary["kept_from_full"]:
        assert summary["settings"][key] == (list(full[key]) if isinstance(full[key], tuple) else full[key]), key
    kept = set(summary["kept_from_full"])
    assert {"batch_size", "learning_rate"} & kept or "generator_lr" in kept
    # every network was interrupted after one step and resumed from its checkpoint in a later pass
    assert summary["checkpoints"] and summary["resumed"] == sorted(summary["checkpoints"])
    assert len(summary["passes"]) >= 2
    first = summary["passes"][0]["checkpoint_steps"]   # a shared checkpoint (SRN's first phase) moves once per call
    assert first and min(first.values()) >= 1
    assert any(step < summary["checkpoints"][name] for name, step in first.items())   # interrupted before the end
    # the records are finished and complete (read_record refuses otherwise), claims were judged,
    # and what the notebook loads after a full run loads
    assert summary["claims"] > 0 and summary["loaded"]
    # the training took the GPU run's branch: bf16 autocast and channels_last networks
    for name in summary["checkpoints"]:
        state = load_checkpoint(run_dir / "train" / name)
        assert state["config"] is None or state["config"].get("dry_run", True), name
        stored = _channels_last_weights(state["model"])
        assert stored and all(stored), f"{name}: weights not channels_last, so fit did not take the GPU branch"
    # then the chapter's notebook, every full-profile cell, on these runs (it loads their checkpoints)
    [notebook_run] = cli.reproduce("full", [run_dir.name], runs_root=dry_root, dry_run=True)
    assert notebook_run == run_dir and not _errors(run_dir / f"{run_dir.name}.ipynb")
    assert load_checkpoint(run_dir / "train" / sorted(summary["checkpoints"])[0])["step"] \
        == summary["checkpoints"][sorted(summary["checkpoints"])[0]]   # loaded, not trained further


@pytest.mark.slow
def test_full_profile_dry_run_of_the_data_and_report_notebooks(dry_root, environment):
    """Chapter 0 on its dry-run settings, and the report on every chapter's dry run that the
    tests above left in ``dry_root`` (it reads dry runs only, never a real full record)."""
    import nbformat

    from labkit import cli

    done = cli.reproduce("full", ["00", "06"], runs_root=dry_root, dry_run=True)
    assert [run.name for run in done] == ["00_data_and_evaluation", "06_report"]
    for run in done:
        assert not _errors(run / f"{run.name}.ipynb")
    executed = nbformat.read(done[1] / "06_report.ipynb", as_version=4)
    text = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    ran = [chapter for chapter in dry.CHAPTERS
           if (dry_root / "dry-run" / _notebook_name(chapter) / "metrics.json").is_file()]
    listed = text.split("records:", 1)[1].split("\n", 1)[0] if "records:" in text else ""
    assert all(f"{chapter} (" in listed for chapter in ran), (ran, listed)


def test_dry_run_settings_shrink_counts_only(environment):
    for chapter in dry.CHAPTERS:
        paper = importlib.import_module(f"labkit.papers.{chapter}")
        settings = dry.dry_run_settings(chapter)
        assert settings["dry_run"] is True and settings["profile"] == "full"
        steps = {k: v for k, v in settings.items() if k.endswith(("steps", "iterations"))
                 and k not in ("critic_steps", "ramp_iterations")}
        assert steps and set(steps.values()) == {2}, (chapter, steps)   # every network: 2 steps, so one resume
        for key, value in paper.PROFILES["full"].items():
            if key not in paper.DRY_RUN:
                assert settings[key] == value, (chapter, key)
        assert paper.DRY_RUN_NOTE
    # without the variable, the full profile is the full profile
    assert "dry_run" not in select_profile(importlib.import_module("labkit.papers.crn").PROFILES, "full")


def test_dry_run_applies_to_the_full_profile_only_and_goes_to_runs(environment):
    profiles = {"smoke": {"steps": 1, "width": 4}, "book": {"steps": 5, "width": 8},
                "full": {"steps": 100, "width": 64, "size": (128, 256)}}
    register_dry_run(profiles, {"steps": 2, "size": (32, 64)})
    environment.setenv(DRY_RUN_ENV, "1")
    assert select_profile(profiles, "full") == {"steps": 2, "width": 64, "size": (32, 64), "profile": "full",
                                                "dry_run": True}
    assert select_profile(profiles, "book") == {"steps": 5, "width": 8, "profile": "book"}
    assert reports_dir("full", "crn") == REPO / "runs" / "dry-run" / "01_crn"   # where its notebook runs
    assert [dry_run_dir(c).name for c in dry.CHAPTERS + ("report",)] == [
        "01_crn", "02_sims", "03_srn", "04_semantic_analogy", "05_seigan", "06_report"]
    with pytest.raises(ValueError, match="declares none"):
        select_profile({"book": {}, "full": {"steps": 1}}, "full")


@pytest.mark.parametrize("overrides, message", [
    ({"width": 32}, "keeps the full profile's"),
    ({"batch_size": 2}, "keeps the full profile's"),
    ({"widths": (512, 1024)}, "keeps the full profile's"),   # not a suffix: a module would change width
    ({"stepz": 2}, "not settings of the full profile"),
    ({}, "non-empty"),
])
def test_register_dry_run_refuses_changing_the_networks(overrides, message):
    profiles = {"full": {"steps": 100, "width": 64, "batch_size": 8, "widths": (1024, 1024, 512)}}
    with pytest.raises(ValueError, match=message):
        register_dry_run(profiles, overrides)
    assert register_dry_run(profiles, {"widths": (1024, 512)}) == {"widths": (1024, 512)}   # coarsest dropped


def test_fast_path_and_stop_after_come_from_the_environment(environment, tmp_path):
    assert fast_path("cpu") is False
    environment.setenv(FAST_PATH_ENV, "1")
    assert fast_path("cpu") is True
    environment.setenv(FAST_PATH_ENV, "maybe")
    with pytest.raises(ValueError, match="auto, 1 or 0"):
        fast_path("cpu")
    environment.setenv(FAST_PATH_ENV, "1")
    environment.setenv(STOP_AFTER_ENV, "2")
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 1, 3, padding=1))
    seen = []

    def loss_fn(m, batch):
        seen.append(torch.is_autocast_enabled("cpu"))
        out = m(batch)
        with float32_region():
            seen.append(torch.is_autocast_enabled("cpu"))
            loss = out.float().square().mean()
        return loss, {}

    result = fit(model, torch.optim.Adam(model.parameters()), lambda s: torch.rand(2, 3, 8, 8), loss_fn, steps=5,
                 checkpoint=tmp_path / "m.pt", progress=False)
    assert result.steps_done == 2 and not result.finished   # stopped as an interruption would
    from labkit import train
    assert train.FIT_JOURNAL[-1] == {"checkpoint": str((tmp_path / "m.pt").resolve()), "resumed_from": 0,
                                     "steps_done": 2, "steps": 5}
    assert seen == [True, False, True, False]               # bf16 autocast outside, float32 inside the region
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
    environment.setenv(STOP_AFTER_ENV, "x")
    with pytest.raises(ValueError, match="positive integer"):
        fit(model, torch.optim.Adam(model.parameters()), lambda s: torch.rand(2, 3, 8, 8), loss_fn, steps=5,
            progress=False)


def _fake_pass(calls_per_pass):
    """A stand-in for a chapter's run: per pass, a list of (resumed_from, steps_done) training calls on
    one checkpoint, journaled as labkit.train.fit journals them; the checkpoint keeps the last step."""
    from labkit import train

    passes = iter(calls_per_pass)

    def run_pass(chapter, run_dir, device):
        path = run_dir / "train" / "net.pt"
        for start, done in next(passes):
            save_checkpoint(path, {"model": {}, "optimizer": {}, "step": done})
            train.FIT_JOURNAL.append({"checkpoint": str(path.resolve()), "resumed_from": start, "steps_done": done,
                                      "steps": 2})
        write_json(run_dir / "metrics.json", {"metrics": {}})
    return run_pass


@pytest.mark.parametrize("calls, message", [
    ([[(0, 2)]], "trained from step 0 to 2 in one call"),          # the interruption was ignored
    ([[(0, 1)], [(0, 1)]], "was at step 1 but training started from step 0"),   # restarted instead of resuming
    ([[(0, 1), (0, 1)]], "was at step 1 but training started from step 0"),      # a second call restarted it
    ([[(0, 1)], []], "no network advanced"),                         # stuck short of the end
])
def test_dry_run_detects_a_network_that_does_not_resume(calls, message, tmp_path, environment, monkeypatch):
    monkeypatch.setattr(dry, "_run_pass", _fake_pass(calls))
    runs = importlib.import_module("labkit.papers.crn_runs")
    monkeypatch.setattr(runs, "read_record", lambda profile, run_dir: (_ for _ in ()).throw(ValueError("unfinished")))
    with pytest.raises(RuntimeError, match=message):
        dry.dry_run("crn", run_dir=tmp_path, log=lambda *_: None)


def test_shared_checkpoints_may_advance_once_per_call(tmp_path):
    """SRN's models share their first phase: two calls in one pass, each resuming the last."""
    from labkit import train

    path = (tmp_path / "train" / "shared.pt")
    journal = [{"checkpoint": str(path.resolve()), "resumed_from": 1, "steps_done": 2, "steps": 4},
               {"checkpoint": str(path.resolve()), "resumed_from": 2, "steps_done": 3, "steps": 4}]
    calls = dry.check_resumes("srn", 2, tmp_path, {"shared.pt": 1}, journal)
    assert [c["name"] for c in calls] == ["shared.pt", "shared.pt"]
    assert train.FIT_JOURNAL is not journal


def test_run_module_dry_run_flag_refuses_other_profiles_and_export():
    for arguments, message in ((["--profile", "book", "--dry-run"], "use it with --profile full"),
                               (["--profile", "full", "--dry-run", "--export"], "does not export")):
        done = subprocess.run([sys.executable, "-m", "labkit.papers.srn_runs", *arguments], capture_output=True,
                              text=True, cwd=REPO, env={**os.environ, "LABKIT_THREADS": "1"})
        assert done.returncode == 2 and message in done.stderr


@pytest.mark.slow
def test_torch_compile_runs_a_chapter_step_on_the_cpu():
    """The throughput benchmark's compiled mode (bf16 autocast + channels_last + torch.compile), the
    one GPU branch that fit does not take, compiles and trains on the CPU."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import throughput
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    settings = throughput.chapter_settings("crn", "smoke")
    record, _ = throughput.time_mode("crn", "bf16_channels_last_compile", settings, torch.device("cpu"),
                                     steps=1, warmup=1, repeats=1)
    assert record["compiled"] and record["compiled_networks"] and record["bf16_autocast"]
    assert torch.isfinite(torch.tensor(record["final_loss"]))
