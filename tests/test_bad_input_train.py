"""Bad input at the training, checkpoint and command-line entries: each is refused
before any work is done, with a message that names the argument, what was
expected and what was given."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from labkit import checks, cli, setup
from labkit.checkpoints import (CheckpointError, atomic_write_bytes, load_checkpoint, read_json, save_checkpoint,
                                write_json)
from labkit.train import RESTART_ENV, fit

REPO = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ the shared checks

@pytest.mark.parametrize("call, names", [
    (lambda: checks.check_positive_int(0, "steps"), "steps"),
    (lambda: checks.check_positive_int(True, "steps"), "steps"),
    (lambda: checks.check_positive_int(2.0, "steps"), "steps"),
    (lambda: checks.check_non_negative_int(-1, "count"), "count"),
    (lambda: checks.check_seed(-1), "seed"),
    (lambda: checks.check_seed(2**32), "seed"),
    (lambda: checks.check_seed("abc"), "seed"),
    (lambda: checks.check_number(float("nan"), "lr"), "lr"),
    (lambda: checks.check_number(0.0, "lr", minimum=0.0, strict_minimum=True), "lr"),
    (lambda: checks.check_number("1", "lr"), "lr"),
    (lambda: checks.check_probability(1.5, "p"), "p"),
    (lambda: checks.check_choice("sideways", "placement", ["left", "right"]), "placement"),
    (lambda: checks.check_pair((64,), "size"), "size"),
    (lambda: checks.check_pair((64, 0), "size"), "size"),
    (lambda: checks.check_pair("ab", "size"), "size"),
    (lambda: checks.check_pair((63, 128), "size", multiple_of=8), "size"),
    (lambda: checks.check_tensor(torch.zeros(0, 3, 4, 4), "images", shape="(N, 3, H, W)", ndim=4), "images"),
    (lambda: checks.check_tensor(torch.zeros(2, 4, 4), "images", shape="(N, 3, H, W)", ndim=4), "images"),
    (lambda: checks.check_tensor(torch.zeros(2, 1, 4, 4), "images", shape="(N, 3, H, W)", channels=3), "images"),
    (lambda: checks.check_tensor(torch.full((1, 3, 2, 2), float("nan")), "images", shape="(N, 3, H, W)"), "images"),
    (lambda: checks.check_tensor(torch.full((1, 3, 2, 2), 3.0), "images", shape="(N, 3, H, W)",
                                 value_range=(-1, 1)), "images"),
    (lambda: checks.check_tensor(np.zeros((1, 3, 2, 2)), "images", shape="(N, 3, H, W)"), "images"),
    (lambda: checks.check_device("gpu"), "device"),
    (lambda: checks.check_device(3), "device"),
    (lambda: checks.check_path("", "root"), "root"),
    (lambda: checks.check_path(None, "root"), "root"),
    (lambda: checks.check_non_empty([], "scenes"), "scenes"),
])
def test_shared_checks_name_the_argument(call, names):
    with pytest.raises(ValueError, match=names):
        call()


def test_shared_checks_pass_good_values_through():
    assert checks.check_positive_int(np.int64(3), "steps") == 3
    assert checks.check_pair([32, 64], "size", multiple_of=8) == (32, 64)
    assert checks.check_number(2, "lr", minimum=0.0) == 2.0
    assert checks.check_number(None, "max_minutes", allow_none=True) is None
    x = torch.rand(1, 3, 2, 2)
    assert checks.check_tensor(x, "images", shape="(N, 3, H, W)", ndim=4, channels=3, value_range=(0, 1)) is x


# ------------------------------------------------------------------ setup

@pytest.mark.parametrize("kwargs, name", [
    ({"seed": -1}, "seed"), ({"seed": "abc"}, "seed"), ({"seed": 1.5}, "seed"),
    ({"threads": 0}, "threads"), ({"threads": -2}, "threads"), ({"threads": 1.5}, "threads"),
    ({"device": "gpu"}, "device"),
])
def test_setup_refuses_bad_arguments_before_changing_anything(kwargs, name):
    threads_before = torch.get_num_threads()
    state_before = torch.get_rng_state()
    with pytest.raises(ValueError, match=name):
        setup(**kwargs)
    assert torch.get_num_threads() == threads_before
    assert torch.equal(torch.get_rng_state(), state_before)


def test_labkit_threads_overrides_the_thread_count(monkeypatch):
    monkeypatch.setenv("LABKIT_THREADS", "1")
    setup(threads=2)
    assert torch.get_num_threads() == 1
    monkeypatch.setenv("LABKIT_THREADS", "zero")
    with pytest.raises(ValueError, match="LABKIT_THREADS"):
        setup()
    monkeypatch.delenv("LABKIT_THREADS")
    setup(threads=2)
    assert torch.get_num_threads() == 2


# ------------------------------------------------------------------ fit

def _toy():
    torch.manual_seed(0)
    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    return model, optimizer, (lambda step: (x, y)), (lambda m, b: (((m(b[0]) - b[1]) ** 2).mean(), {}))


@pytest.mark.parametrize("kwargs, name", [
    ({"steps": -5}, "steps"), ({"steps": 2.5}, "steps"), ({"steps": True}, "steps"),
    ({"checkpoint_every": 0}, "checkpoint_every"), ({"log_every": 0}, "log_every"),
    ({"log_every": -1}, "log_every"), ({"max_minutes": -1}, "max_minutes"),
    ({"max_minutes": float("nan")}, "max_minutes"), ({"stop_after": -1}, "stop_after"),
    ({"config": ["a"]}, "config"), ({"extra_optimizers": {"d": "adam"}}, "extra_optimizers"),
])
def test_fit_refuses_bad_arguments_before_the_first_step(kwargs, name):
    model, optimizer, batch, loss = _toy()
    before = [p.detach().clone() for p in model.parameters()]
    arguments = {"steps": 3, **kwargs}
    with pytest.raises(ValueError, match=name):
        fit(model, optimizer, batch, loss, progress=False, **arguments)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_fit_refuses_wrong_kinds_of_objects():
    model, optimizer, batch, loss = _toy()
    with pytest.raises(ValueError, match="model"):
        fit("model", optimizer, batch, loss, steps=1, progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        fit(model, None, batch, loss, steps=1, progress=False)
    with pytest.raises(ValueError, match="batch_for_step"):
        fit(model, optimizer, [1, 2], loss, steps=1, progress=False)
    with pytest.raises(ValueError, match="loss_fn"):
        fit(model, optimizer, batch, "mse", steps=1, progress=False)
    with pytest.raises(ValueError, match="no parameters"):
        fit(nn.ReLU(), optimizer, batch, loss, steps=1, progress=False)


def test_fit_refuses_a_directory_as_checkpoint_before_training(tmp_path):
    model, optimizer, batch, loss = _toy()
    calls = []
    with pytest.raises(ValueError, match="checkpoint.*directory"):
        fit(model, optimizer, lambda s: calls.append(s) or batch(s), loss, steps=3, checkpoint=tmp_path,
            progress=False)
    assert calls == []
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ValueError, match="checkpoint"):
        fit(model, optimizer, batch, loss, steps=3, checkpoint=blocker / "sub" / "ckpt.pt", progress=False)


def test_fit_steps_zero_is_a_finished_no_op():
    model, optimizer, batch, loss = _toy()
    result = fit(model, optimizer, batch, loss, steps=0, progress=False)
    assert result.finished and result.steps_done == 0 and result.history == []


def test_fit_stops_on_a_non_finite_loss_without_saving(tmp_path):
    model, optimizer, batch, _ = _toy()
    checkpoint = tmp_path / "ckpt.pt"
    with pytest.raises(FloatingPointError, match="step 2"):
        fit(model, optimizer, batch, lambda m, b: (m(b[0]).sum() * float("nan"), {}), steps=5, log_every=2,
            checkpoint=checkpoint, progress=False)
    assert not checkpoint.exists()


def test_a_corrupt_training_checkpoint_says_what_to_do(tmp_path):
    model, optimizer, batch, loss = _toy()
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as error:
        fit(model, optimizer, batch, loss, steps=2, checkpoint=checkpoint, progress=False)
    message = str(error.value)
    assert str(checkpoint) in message and "--restart" in message and "delete or move" in message.lower()
    assert "weights_only" not in message and "False" not in message


def test_restart_sets_the_old_checkpoint_aside_and_trains_from_zero(tmp_path, monkeypatch):
    model, optimizer, batch, loss = _toy()
    checkpoint = tmp_path / "ckpt.pt"
    checkpoint.write_bytes(b"garbage from a killed run")
    monkeypatch.setenv(RESTART_ENV, "1")
    result = fit(model, optimizer, batch, loss, steps=3, checkpoint=checkpoint, progress=False)
    assert result.finished and result.resumed_from == 0
    aside = [p for p in tmp_path.iterdir() if ".set-aside-" in p.name]
    assert len(aside) == 1 and aside[0].read_bytes() == b"garbage from a killed run"
    assert load_checkpoint(checkpoint)["step"] == 3
    # a second fit of the same checkpoint in this process resumes from the new one instead
    model2, optimizer2, _, _ = _toy()
    again = fit(model2, optimizer2, batch, loss, steps=3, checkpoint=checkpoint, progress=False)
    assert again.resumed_from == 3
    monkeypatch.setenv(RESTART_ENV, "maybe")
    with pytest.raises(ValueError, match=RESTART_ENV):
        fit(model2, optimizer2, batch, loss, steps=3, checkpoint=checkpoint, progress=False)


# ------------------------------------------------------------------ checkpoints and JSON

@pytest.mark.parametrize("state, where", [
    ({"rng": np.zeros(3)}, r"state\['rng'\].*numpy"),
    ({"nested": {"value": np.float64(1.0)}}, r"state\['nested'\]\['value'\].*numpy"),
    ({"list": [1, np.int64(2)]}, r"state\['list'\]\[1\]"),
    ({"module": nn.Linear(2, 2)}, r"state\['module'\].*Linear"),
    ({(1, 2): 3}, "key"),
    ([torch.zeros(2)], "state must be a dict"),
])
def test_save_checkpoint_refuses_what_load_checkpoint_would_refuse(tmp_path, state, where):
    path = tmp_path / "ckpt.pt"
    with pytest.raises(ValueError, match=where):
        save_checkpoint(path, state)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_plain_values_round_trip(tmp_path):
    state = {"t": torch.arange(3), "size": torch.Size([2, 3]), "dtype": torch.float16, "none": None,
             "tuple": (1, 2.5, "x"), "set": {1, 2}, "bytes": b"ab", "complex": 1 + 2j}
    save_checkpoint(tmp_path / "ckpt.pt", state)
    loaded = load_checkpoint(tmp_path / "ckpt.pt")
    assert loaded["size"] == torch.Size([2, 3]) and loaded["tuple"] == (1, 2.5, "x") and loaded["set"] == {1, 2}


def test_a_killed_writers_temporary_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "metrics.json"
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(child.stdout)   # that process has exited
    stale = tmp_path / f".metrics.json.{dead_pid}.abc123.tmp"
    stale.write_text("half a file")
    live = tmp_path / f".metrics.json.{os.getpid()}.zzz.tmp"   # a write in progress in a live process
    live.write_text("in progress")
    other = tmp_path / ".other.json.1.abc.tmp"                  # another file's temporary: not ours to touch
    other.write_text("x")
    write_json(target, {"a": 1})
    assert not stale.exists() and live.exists() and other.exists()
    assert read_json(target) == {"a": 1}


def test_atomic_write_refuses_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError, match="directory"):
        atomic_write_bytes(tmp_path, b"x")


def test_load_checkpoint_errors_name_the_file_and_the_remedy(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pt is empty.*delete or move"):
        load_checkpoint(empty)
    pickled = tmp_path / "pickled.pt"
    torch.save({"rng": np.zeros(2)}, pickled)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(pickled)
    assert "pickled.pt" in str(error.value) and "weights_only" not in str(error.value)
    assert error.value.__cause__ is None   # torch's advice to load with weights_only=False is not passed on


def test_json_files_refuse_what_is_not_an_object(tmp_path):
    with pytest.raises(ValueError, match="payload must be a dict"):
        write_json(tmp_path / "a.json", [1, 2])
    with pytest.raises(ValueError, match="cannot be written as JSON"):
        write_json(tmp_path / "a.json", {"x": object()})
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected an object"):
        read_json(tmp_path / "list.json")
    (tmp_path / "bad.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")


# ------------------------------------------------------------------ run modules' command line

@pytest.mark.parametrize("argv, name", [
    (["-m", "labkit.papers.crn_runs", "--threads", "0"], "--threads"),
    (["-m", "labkit.papers.crn_runs", "--threads", "two"], "--threads"),
    (["-m", "labkit.papers.sims_runs", "--seed", "-1"], "--seed"),
    (["-m", "labkit.papers.seigan_runs", "--max-minutes", "-1"], "--max-minutes"),
    (["-m", "labkit.papers.analogy_runs", "--device", "gpu"], "--device"),
    (["-m", "labkit.report", "--threads", "0"], "--threads"),
    (["-m", "labkit.judge", "train", "--steps", "0"], "--steps"),
    (["benchmarks/throughput.py", "--threads", "0"], "--threads"),
])
def test_command_lines_give_a_usage_error_for_bad_options(argv, name):
    start = time.monotonic()
    done = subprocess.run([sys.executable, *argv], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"argument {name}:" in done.stderr and "usage:" in done.stderr and "Traceback" not in done.stderr
    assert time.monotonic() - start < 60


# ------------------------------------------------------------------ labkit reproduce

@pytest.fixture
def course(tmp_path, monkeypatch):
    """A course checkout with two toy chapters; the notebooks record which labkit they imported."""
    import nbformat

    root = tmp_path / "course"
    (root / "labkit").mkdir(parents=True)
    (root / "labkit" / "__init__.py").write_text("MARK = 'toy course'\n")
    (root / "notebooks").mkdir()
    for name in ("00_toy", "01_other"):
        nb = nbformat.v4.new_notebook()
        params = nbformat.v4.new_code_cell("profile = 'book'\ndevice = 'auto'\nseed = 0\nmax_minutes = None\n"
                                           "widths = [8, 4]\n")
        params.metadata["tags"] = ["parameters"]
        body = nbformat.v4.new_code_cell(
            "import json, os, pathlib, labkit\n"
            "out = pathlib.Path(os.environ['LABKIT_RUN_DIR'])\n"
            "(out / 'metrics.json').write_text(json.dumps({'profile': profile, 'seed': seed, "
            "'labkit': getattr(labkit, 'MARK', labkit.__file__), 'restart': os.environ.get('LABKIT_RESTART')}))")
        nb.cells = [params, body]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")
    monkeypatch.chdir(root / "notebooks")   # somewhere inside the checkout
    return root


@pytest.mark.parametrize("argv, message", [
    (["-p", "profile", "full", "00"], "-p profile is not accepted"),
    (["-p", "device", "cpu", "00"], "-p device is not accepted"),
    (["-p", "seed", "abc", "00"], "parameter seed"),
    (["-p", "seed", "-3", "00"], "parameter seed"),
    (["-p", "max_minutes", "-1", "00"], "parameter max_minutes"),
    (["-p", "max_minutes", "soon", "00"], "parameter max_minutes"),
    (["-p", "widths", "8", "00"], "parameter widths"),
    (["-p", "sede", "1", "00"], "no parameter"),
    (["00", "nope"], "unknown chapter 'nope'"),
])
def test_reproduce_checks_every_chapter_before_running_any(course, capsys, argv, message):
    assert cli.main(["reproduce", "--profile", "smoke", *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (course / "runs").exists()   # nothing ran, not even chapter 00


def test_reproduce_refuses_a_device_that_is_not_here_as_a_usage_error(course, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["reproduce", "--profile", "smoke", "--device", "gpu", "00"])
    assert exit_.value.code == 2 and "--device" in capsys.readouterr().err


def test_reproduce_runs_the_current_checkouts_notebooks_and_labkit(course, capsys):
    assert cli.main(["reproduce", "--profile", "smoke", "-p", "seed", "4", "--restart", "toy"]) == 0
    out = capsys.readouterr().out
    assert f"repository: {course}" in out and "current directory" in out
    record = read_json(course / "runs" / "smoke" / "00_toy" / "metrics.json")
    assert record == {"profile": "smoke", "seed": 4, "labkit": "toy course", "restart": "1"}
    assert os.environ.get(RESTART_ENV) is None   # this process's environment is restored


def test_reproduce_repo_option_and_a_folder_outside_any_checkout(course, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)   # not inside a checkout
    assert cli.main(["reproduce", "--profile", "smoke", "--repo", str(course), "00"]) == 0
    assert (course / "runs" / "smoke" / "00_toy" / "metrics.json").is_file()
    assert cli.main(["reproduce", "--profile", "smoke", "--repo", str(tmp_path), "00"]) == 2
    assert "not a checkout" in capsys.readouterr().err
    assert cli.choose_repository()[0] == cli.REPO_ROOT   # outside any checkout: the installed one, said so


# ------------------------------------------------------------------ the rest of train, report, claims

def _public_calls():
    from labkit import claims, report, show_source, train

    record = report.read_chapter_record("crn")
    return [
        (lambda: train.select_profile(["book"], "book"), "profiles"),
        (lambda: train.select_profile({"book": 3}, "book"), "profiles"),
        (lambda: train.reports_dir("weird/../x", "crn"), "profile"),
        (lambda: train.reports_dir("book", ""), "chapter"),
        (lambda: train.record_dir("book", "../crn"), "chapter"),
        (lambda: train.provenance("book", -1, "cpu"), "seed"),
        (lambda: train.provenance("book", 0, "gpu"), "device"),
        (lambda: train.provenance("book", 0, "cpu", wall_time_s=-3), "wall_time_s"),
        (lambda: train.write_metrics("/tmp/never.json", [1], {}), "metrics"),
        (lambda: train.write_metrics("/tmp/never.json", {}, [1]), "provenance_info"),
        (lambda: train.read_run_record(REPO / "reports/book/crn/metrics.json", "m", "book", "crn"), "required"),
        (lambda: train.shard(torch.zeros(4), 0, 0), "world"),
        (lambda: train.shard(torch.zeros(4), 5, 2), "rank"),
        (lambda: report.read_records("weird"), "profile"),
        (lambda: report.html_table("x", []), "rows"),
        (lambda: report.html_table([{"a": 1}], ["a"]), "columns"),
        (lambda: report.verdict_counts([{"x": 1}]), "rows"),
        (lambda: report.environment("gpu"), "device"),
        (lambda: report.chapter_costs([record]), "records"),
        (lambda: report.record_environments([record]), "records"),
        (lambda: claims.verdict("yes"), r"tests\[0\]"),
        (lambda: claims.check_claims([lambda: (1,)]), "must return"),
        (lambda: claims.check_claims([lambda: ("c", "e", "true")]), "verdict"),
        (lambda: claims.check_claims(["not a function"]), "checks"),
        (lambda: show_source(3), "obj"),
    ]


def test_the_other_public_entries_refuse_bad_input_clearly():
    failures = []
    for call, name in _public_calls():
        try:
            call()
            failures.append(f"accepted ({name})")
        except ValueError as error:
            import re

            if not re.search(name, str(error)):
                failures.append(f"message {str(error)!r} does not name {name!r}")
    assert not failures, failures
