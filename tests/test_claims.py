"""The shared verdict rules of every chapter's claims table."""
import pytest

from labkit.claims import VERDICTS, beyond_spread, check_claims, verdict


def test_verdict_is_holds_mixed_or_does_not_hold():
    assert verdict(True, True) == "holds"
    assert verdict(True, False) == "mixed"
    assert verdict(False, False) == "does not hold"
    with pytest.raises(ValueError, match="at least one"):
        verdict()


def test_a_claim_that_reads_a_missing_model_is_not_measured():
    record = {"a": 1.0, "b": 2.0}

    def a_beats_b():
        return "a beats b", f"{record['a']} vs {record['b']}", verdict(record["a"] > record["b"])

    def a_beats_c():
        return "a beats c", f"{record['a']} vs {record['c']}", verdict(record["a"] > record["c"])

    rows = check_claims((a_beats_b, a_beats_c))
    assert rows[0] == {"claim": "a beats b", "evidence": "1.0 vs 2.0", "verdict": "does not hold"}
    assert rows[1]["claim"] == "a beats c" and rows[1]["verdict"] == "not measured" and "'c'" in rows[1]["evidence"]
    assert set(VERDICTS) == {"holds", "mixed", "does not hold", "not resolved", "not measured"}


def test_comparisons_within_the_seed_spread_do_not_count():
    assert beyond_spread(0.81, 0.80) is True and beyond_spread(0.79, 0.80) is False   # no seeds: every difference
    assert beyond_spread(0.81, 0.80, spread=0.02) is None
    assert beyond_spread(0.83, 0.80, spread=0.02) is True and beyond_spread(0.77, 0.80, spread=0.02) is False
    assert beyond_spread(0.5, 0.6, spread=0.05, lower_is_better=True) is True
    assert verdict(None, None) == "not resolved"
    assert verdict(True, None) == "holds" and verdict(False, None) == "does not hold"
    assert verdict(True, False, None) == "mixed"
    with pytest.raises(ValueError, match="spread"):
        beyond_spread(1.0, 0.0, spread=-0.1)
    with pytest.raises(ValueError, match="ours"):
        beyond_spread(float("nan"), 0.0)
