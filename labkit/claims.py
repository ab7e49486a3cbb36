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
    return "holds" if all(tests) else "does not hold" if not any(tests) else "mixed"


def check_claims(checks: Iterable[Callable[[], tuple[str, str, str]]]) -> list[dict]:
    """Rows {"claim", "evidence", "verdict"}, one per check. A check that reads a model
    or metric the record lacks (a KeyError) gives a "not measured" row named after it."""
    rows = []
    for check in checks:
        try:
            claim, evidence, result = check()
        except KeyError as missing:
            claim = check.__name__.replace("_", " ")
            evidence, result = f"this record has no {missing}", "not measured"
        rows.append({"claim": claim, "evidence": evidence, "verdict": result})
    return rows
