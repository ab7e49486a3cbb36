"""Claims vs a reproduction: every chapter's verdicts come from explicit comparisons.

A chapter's ``<paper>_runs.claims(record)`` writes one small function per claim
of the paper. Each returns ``(claim, evidence, verdict)``: the claim in words,
the numbers of the record it rests on, and :func:`verdict` of the comparisons
that test it. :func:`check_claims` runs them; a claim whose models are missing
from the record reads "not measured" instead of failing the chapter.
"""
from __future__ import annotations

from typing import Callable, Iterable

VERDICTS = ("holds", "mixed", "does not hold", "not measured")


def verdict(*tests: bool) -> str:
    """"holds" when every comparison favours the claim, "does not hold" when none
    does, "mixed" otherwise."""
    if not tests:
        raise ValueError("a verdict needs at least one comparison")
    for i, test in enumerate(tests):
        if not isinstance(test, bool) and type(test).__name__ != "bool_":   # a NumPy comparison is fine too
            raise ValueError(f"tests[{i}] must be a bool (the outcome of one comparison), got {test!r}")
    return "holds" if all(tests) else "does not hold" if not any(tests) else "mixed"


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
