"""Setup, profiles, atomic checkpoints, resume after a kill, time budgets, provenance."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from labkit import select_profile, setup
from labkit.checkpoints import CheckpointError, load_checkpoint, read_json, save_checkpoint
from labkit.train import fit, provenance, write_metrics

REPO = Path(__file__).resolve().parent.parent


def test_setup_fixes_seed_threads_and_device():
    device = setup(seed=3, threads=1)
    a = torch.rand(4)
    setup(seed=3, threads=1)
    assert torch.equal(a, torch.rand(4))
    assert torch.get_num_threads() == 1 and device.type in ("cpu", "cuda", "mps")
    setup(threads=2)


def test_unknown_profile_is_an_error_listing_the_known_ones():
    profiles = {"smoke": {"steps": 1}, "book": {"steps": 2}, "full": {"steps": 3}}
    assert select_profile(profiles, "book") == {"steps": 2, "profile": "book"}
    with pytest.raises(ValueError, match=r"'fulll'.*\['book', 'full', 'smoke'\]"):
        select_profile(profiles, "fulll")


def test_checkpoint_round_trip_and_atomic_replace(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(path, {"w": torch.arange(3), "step": 7})
    save_checkpoint(path, {"w": torch.arange(4), "step": 8})
    state = load_checkpoint(path)
    assert state["step"] == 8 and torch.equal(state["w"], torch.arange(4))
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]   # no temporary files left behind


def test_corrupt_checkpoint_gives_a_clear_error(tmp_path):
    path = tmp_path / "broken.pt"
    save_checkpoint(path, {"w": torch.zeros(100)})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="broken.pt.*corrupt"):
        load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_checkpoint(tmp_path / "missing.pt")


def test_checkpoints_refuse_pickled_objects(tmp_path):
    path = tmp_path / "pickle.pt"
    torch.save({"model": nn.Linear(2, 2)}, path)   # a whole module, not weights
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_provenance_wall_time_defaults_to_time_since_setup():
    setup(seed=0)
    time.sleep(0.05)
    assert provenance("smoke", 0, "cpu")["wall_time_s"] >= 0.05


def test_metrics_file_has_provenance_and_metrics(tmp_path):
    info = provenance("smoke", 0, "cpu", wall_time_s=1.234)
    path = write_metrics(tmp_path / "m" / "metrics.json", {"miou": 0.5}, info)
    payload = read_json(path)
    assert payload["metrics"] == {"miou": 0.5}
    assert {"commit", "profile", "seed", "device", "versions", "wall_time_s"} <= set(payload["provenance"])
    assert payload["provenance"]["versions"]["torch"] == torch.__version__


# A tiny regression problem whose batches depend only on the step number. It uses
# every source of state a resume must restore: dropout (torch RNG), a NumPy draw
# in the loss (global NumPy RNG), BatchNorm buffers and a one-cycle schedule.
# The first layer has no bias: before BatchNorm a bias has an exactly zero gradient,
# so what it gets is rounding noise, which Adam scales up to full-size steps; the
# killed run (its own thread count) and the reference then drift apart there.
TRAINER = textwrap.dedent('''
    import random, sys, time
    import numpy as np, torch
    from torch import nn
    from labkit.train import fit

    def make(steps):
        torch.manual_seed(0); np.random.seed(0); random.seed(0)
        model = nn.Sequential(nn.Linear(4, 16, bias=False), nn.BatchNorm1d(16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        return model, opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=steps)

    def batch_for_step(step):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(8, 4, generator=g)
        return x, x.sum(1, keepdim=True).sin()

    def loss_fn(model, batch, delay=0.0):
        time.sleep(delay)
        x, y = batch
        jitter = float(np.random.uniform(0.9, 1.1))
        return ((model(x) * jitter - y) ** 2).mean(), {}

    if __name__ == "__main__":
        checkpoint, steps, delay = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
        model, opt, scheduler = make(steps)
        fit(model, opt, batch_for_step, lambda m, b: loss_fn(m, b, delay), steps=steps, scheduler=scheduler,
            checkpoint=checkpoint, checkpoint_every=5, progress=False)
''')


@pytest.fixture
def trainer(tmp_path, monkeypatch):
    (tmp_path / "tiny_trainer.py").write_text(TRAINER)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    import tiny_trainer
    return importlib.reload(tiny_trainer)


def test_training_resumes_after_being_killed_midway(tmp_path, trainer):
    steps = 40
    reference, opt, scheduler = trainer.make(steps)
    fit(reference, opt, trainer.batch_for_step, trainer.loss_fn, steps=steps, scheduler=scheduler, progress=False)

    checkpoint = tmp_path / "run" / "ckpt.pt"
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}")
    proc = subprocess.Popen([sys.executable, str(tmp_path / "tiny_trainer.py"), str(checkpoint), str(steps), "0.05"],
                            env=env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if checkpoint.exists() and 5 <= load_checkpoint(checkpoint)["step"] < steps:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(checkpoint)["step"]
    assert 0 < killed_at < steps, "the run should have been killed midway"

    model, opt, scheduler = trainer.make(steps)
    result = fit(model, opt, trainer.batch_for_step, trainer.loss_fn, steps=steps, scheduler=scheduler,
                 checkpoint=checkpoint, progress=False)
    assert result.resumed_from == killed_at and result.finished
    for (name, p), q in zip(model.state_dict().items(), reference.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)


def test_time_budget_stops_cleanly_and_a_later_call_finishes(tmp_path, trainer):
    checkpoint = tmp_path / "ckpt.pt"
    model, opt, _ = trainer.make(10)
    slow = lambda m, b: trainer.loss_fn(m, b, delay=0.02)  # noqa: E731
    first = fit(model, opt, trainer.batch_for_step, slow, steps=10_000, checkpoint=checkpoint,
                max_minutes=0.01, progress=False)
    assert not first.finished and 0 < first.steps_done < 10_000
    assert load_checkpoint(checkpoint)["step"] == first.steps_done
    model, opt, _ = trainer.make(10)
    second = fit(model, opt, trainer.batch_for_step, trainer.loss_fn, steps=first.steps_done + 3,
                 checkpoint=checkpoint, progress=False)
    assert second.resumed_from == first.steps_done and second.finished
    assert second.wall_time_s >= first.wall_time_s   # wall time adds up across segments


def test_resuming_a_checkpoint_of_another_config_is_an_error(tmp_path, trainer):
    checkpoint = tmp_path / "ckpt.pt"
    model, opt, _ = trainer.make(10)
    fit(model, opt, trainer.batch_for_step, trainer.loss_fn, steps=3, checkpoint=checkpoint, progress=False,
        config={"lr": 0.01})
    model, opt, _ = trainer.make(10)
    with pytest.raises(ValueError, match="config"):
        fit(model, opt, trainer.batch_for_step, trainer.loss_fn, steps=6, checkpoint=checkpoint,
            progress=False, config={"lr": 0.02})
    with pytest.raises(CheckpointError, match="does not fit this model"):
        fit(nn.Linear(4, 1), torch.optim.SGD(nn.Linear(4, 1).parameters(), lr=0.1), trainer.batch_for_step,
            trainer.loss_fn, steps=6, checkpoint=checkpoint, progress=False)


def test_shard_splits_tensors_and_per_sample_lists():
    from labkit.train import shard

    batch = {"image": torch.arange(4), "objects": [["a"], ["b"], ["c"], ["d"]]}
    half = shard(batch, 1, 2)
    assert torch.equal(half["image"], torch.tensor([2, 3])) and half["objects"] == [["c"], ["d"]]
    with pytest.raises(ValueError, match="does not split"):
        shard(torch.arange(3), 0, 2)


DDP_SCRIPT = textwrap.dedent('''
    import os, sys, torch
    from torch import nn
    from labkit.train import fit, setup

    setup(seed=0, threads=1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def batch_for_step(step):
        g = torch.Generator().manual_seed(step)
        x = torch.randn(8, 4, generator=g)   # the global batch; each rank gets half
        return x, x.sum(1, keepdim=True).sin()

    def loss_fn(m, batch):
        x, y = batch
        return ((m(x) - y) ** 2).mean(), {}

    fit(model, opt, batch_for_step, loss_fn, steps=15, progress=False)
    rank = int(os.environ.get("RANK", 0))
    torch.save(model.state_dict(), os.path.join(sys.argv[1], f"rank{rank}_world{os.environ.get('WORLD_SIZE', 1)}.pt"))
''')


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                    str(script), str(tmp_path)], env=env, check=True, timeout=300, cwd=tmp_path)
    subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, check=True, timeout=300, cwd=tmp_path)
    rank0 = torch.load(tmp_path / "rank0_world2.pt")
    rank1 = torch.load(tmp_path / "rank1_world2.pt")
    single = torch.load(tmp_path / "rank0_world1.pt")
    torch.manual_seed(0)
    initial = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)).state_dict()
    assert any(not torch.allclose(single[k], initial[k], atol=1e-3) for k in single), "training changed nothing"
    for key in single:
        assert torch.equal(rank0[key], rank1[key]), f"{key} differs between the two processes"
        torch.testing.assert_close(rank0[key], single[key], rtol=1e-4, atol=1e-5)


def test_metrics_json_is_strict_with_non_finite_values_as_null(tmp_path):
    path = write_metrics(tmp_path / "metrics.json", {"psnr": float("inf"), "iou": float("nan"),
                                                     "t": torch.tensor(float("nan"))}, {"profile": "smoke"})
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["metrics"] == {"psnr": None, "iou": None, "t": None}


def test_unknown_device_is_a_value_error():
    with pytest.raises(ValueError, match="unknown device 'cud'"):
        setup(device="cud")


def test_provenance_names_the_commit_the_process_started_from(monkeypatch):
    import labkit.train as train

    monkeypatch.setattr(train, "_SETUP_COMMIT", train._SETUP_COMMIT)   # restored after the test
    monkeypatch.setattr(train, "git_commit", lambda: "aaaa")
    train.setup(seed=0, threads=None)
    monkeypatch.setattr(train, "git_commit", lambda: "bbbb")   # a commit made while the run goes on
    info = train.provenance("smoke", 0, "cpu")
    assert info["commit"] == "aaaa" and info["commit_at_write"] == "bbbb"
    monkeypatch.setattr(train, "git_commit", lambda: "aaaa")
    assert "commit_at_write" not in train.provenance("smoke", 0, "cpu")


def test_read_run_record_refuses_missing_stale_and_unfinished_records(tmp_path):
    from labkit.checkpoints import write_json
    from labkit.train import read_run_record

    path = tmp_path / "metrics.json"
    with pytest.raises(FileNotFoundError, match="labkit.papers.x_runs --profile smoke"):
        read_run_record(path, "labkit.papers.x_runs", "smoke", ("a",))
    good = {"metrics": {"a": {"finished": True}, "b": {"score": 1.0}}, "stale": []}
    write_json(path, good)
    assert read_run_record(path, "labkit.papers.x_runs", "smoke", ("a", "b")) == good
    for record, name in (({"metrics": {"b": {}}, "stale": []}, "a"), (dict(good, stale=["b"]), "b"),
                         ({"metrics": {"a": {"finished": False}}, "stale": []}, "a")):
        write_json(path, record)
        with pytest.raises(ValueError, match=rf"--models {name}`"):
            read_run_record(path, "labkit.papers.x_runs", "smoke", ("a",))
