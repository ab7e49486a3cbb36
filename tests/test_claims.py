"""The shared verdict rules of every chapter's claims table."""
import pytest

from labkit.claims import VERDICTS, check_claims, verdict


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
    assert set(VERDICTS) == {"holds", "mixed", "does not hold", "not measured"}
