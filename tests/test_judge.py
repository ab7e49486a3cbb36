"""The committed judge meets its thresholds on held-out scenes, and its file is checked."""
import pytest
import torch

from labkit.checkpoints import CheckpointError, save_checkpoint
from labkit.judge import JUDGE_PATH, JudgeNet, evaluate, load_judge

MIN_MIOU, MIN_PIXEL_ACCURACY = 0.90, 0.97


def test_committed_judge_is_small():
    assert JUDGE_PATH.is_file()
    assert JUDGE_PATH.stat().st_size < 5 * 1024 * 1024


@pytest.mark.slow
def test_judge_meets_thresholds_on_256_held_out_scenes_at_both_sizes():
    scores = evaluate(load_judge(), sizes=((64, 128), (128, 256)), count=256, split="test")
    for size, s in scores.items():
        assert s["miou"] >= MIN_MIOU, f"mIoU at {size}: {s['miou']:.3f}"
        assert s["pixel_accuracy"] >= MIN_PIXEL_ACCURACY, f"pixel accuracy at {size}: {s['pixel_accuracy']:.3f}"


def test_judge_features_have_documented_names_and_strides():
    judge = load_judge()
    features = judge.encoder_features(torch.rand(2, 3, 64, 128))
    assert len(features) == len(judge.feature_names) == 4
    assert [f.shape[-1] for f in features] == [128, 64, 32, 16]
    assert [f.shape[1] for f in features] == list(judge.widths)


def test_judge_rejects_sizes_it_cannot_pool():
    with pytest.raises(ValueError, match="divisible by 8"):
        JudgeNet()(torch.rand(1, 3, 60, 120))


def test_corrupt_or_foreign_judge_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "judge.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="judge.pt"):
        load_judge(bad)
    foreign = tmp_path / "other.pt"
    save_checkpoint(foreign, {"weights": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="not a judge checkpoint"):
        load_judge(foreign)
    with pytest.raises(FileNotFoundError, match="make judge"):
        load_judge(tmp_path / "absent.pt")


def test_second_judge_is_independent_of_the_first_and_scores_real_scenes_well():
    """The report's second judge: other widths, other training scenes, and good enough to judge."""
    from labkit.data import render_batch
    from labkit.judge import JUDGE_WIDTHS, SECOND_JUDGE

    assert SECOND_JUDGE["path"].is_file(), "train it with `python -m labkit.judge train --second`"
    second, first = load_judge(SECOND_JUDGE["path"]), load_judge()
    assert tuple(second.widths) == tuple(SECOND_JUDGE["widths"]) != tuple(JUDGE_WIDTHS)
    state = torch.load(SECOND_JUDGE["path"], weights_only=True)
    assert state["train"]["data_seed"] == SECOND_JUDGE["data_seed"] != 0
    # data seed 1 renders other scenes than the seed-0 scenes every chapter (and the first judge) trains on
    other, _ = render_batch((64, 128), 4, "train", seed=SECOND_JUDGE["data_seed"])
    chapters, _ = render_batch((64, 128), 4, "train", seed=0)
    assert not torch.equal(other, chapters)
    for size, s in state["scores"].items():
        assert s["miou"] >= 0.8 and s["pixel_accuracy"] >= 0.95, (size, s)
    assert second.source != first.source
