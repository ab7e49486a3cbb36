"""Claims vs a reproduction: every chapter's verdicts come from explicit comparisons.

A chapter's ``<paper>_runs.claims(record)`` writes one small function per claim
of the paper. Each returns ``(claim, evidence, verdict)``: the claim in words,
the numbers of the record it rests on, and :func:`verdict` of the comparisons
that test it. :func:`check_claims` runs them; a claim whose models are missing
from the record reads "not measured" instead of failing the chapter.

**Noise.** Where a chapter has trained a model with several seeds, a comparison whose
difference is no larger than that model's range over its seeds is *not resolved*
(:func:`beyond_spread` returns None for it) and does not count towards the verdict;
a claim none of whose comparisons is resolved is "not resolved".
"""
from __future__ import annotations

from typing import Callable, Iterable

VERDICTS = ("holds", "mixed", "does not hold", "not resolved", "not measured")


def verdict(*tests: bool | None) -> str:
    """Over the resolved comparisons (True or False; None is a comparison within the seed
    spread, see :func:`beyond_spread`): "holds" when every one favours the claim, "does not
    hold" when none does, "mixed" otherwise; "not resolved" when none is resolved."""
    if not tests:
        raise ValueError("a verdict needs at least one comparison")
    for i, test in enumerate(tests):
        if test is not None and not isinstance(test, bool) and type(test).__name__ != "bool_":   # NumPy's too
            raise ValueError(f"tests[{i}] must be a bool (the outcome of one comparison) or None (not resolved), "
                             f"got {test!r}")
    resolved = [bool(test) for test in tests if test is not None]
    if not resolved:
        return "not resolved"
    return "holds" if all(resolved) else "does not hold" if not any(resolved) else "mixed"


def beyond_spread(ours: float, other: float, spread: float | None = None, lower_is_better: bool = False):
    """One comparison, "ours is better than other": True or False, or None when the difference
    is no larger than ``spread`` (the range of the model's score over its training seeds; None
    when no seeds were run, and then every difference counts)."""
    for value, name in ((ours, "ours"), (other, "other")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ValueError(f"{name} must be a number (a score), got {value!r}")
    if spread is not None and (isinstance(spread, bool) or not isinstance(spread, (int, float)) or not spread >= 0):
        raise ValueError(f"spread must be None or a number ≥ 0 (a range over seeds), got {spread!r}")
    difference = ours - other
    if spread is not None and abs(difference) <= spread:
        return None
    return difference < 0 if lower_is_better else difference > 0


def check_claims(checks: Iterable[Callable[[], tuple[str, str, str]]]) -> list[dict]:
    """Rows {"claim", "evidence", "verdict"}, one per check. A check that reads a model
    or metric the record lacks (a KeyError) gives a "not measured" row named after it."""
    rows = []
    for check in checks:
        if not callable(check):
            raise ValueError(f"checks must be callables returning (claim, evidence, verdict), got {check!r}")
        try:
            outcome = check()
        except KeyError as missing:
            outcome = (check.__name__.replace("_", " "), f"this record has no {missing}", "not measured")
        if not (isinstance(outcome, tuple) and len(outcome) == 3):
            raise ValueError(f"claim check {getattr(check, '__name__', check)!r} must return (claim, evidence, "
                             f"verdict), got {outcome!r}")
        claim, evidence, result = outcome
        if result not in VERDICTS:
            raise ValueError(f"claim check {getattr(check, '__name__', check)!r} returned the verdict {result!r}; "
                             f"expected one of {list(VERDICTS)}")
        rows.append({"claim": claim, "evidence": evidence, "verdict": result})
    return rows
