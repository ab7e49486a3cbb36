#!/usr/bin/env python3
"""Write environment.yml (for conda users) from requirements.lock.

requirements.lock is the single source of truth: every ``name==version`` line
in it goes, unchanged and in the same order, into the ``pip:`` section of
environment.yml, followed by ``-e .``. conda itself only provides Python 3.11
and pip, so both routes install exactly the same wheels.

    python scripts/write_environment_yml.py          # (re)write environment.yml
    python scripts/write_environment_yml.py --check  # exit 1 if it is out of date

tests/test_pins.py checks that the two files agree.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
ENV_YML = ROOT / "environment.yml"

ENV_NAME = "labkit"
PYTHON = "3.11"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s=;#]+)$")


def read_pins(lock_text: str) -> list[str]:
    """Return the ``name==version`` lines of a lock file, in order.

    Raises ValueError on any non-comment line that is not an exact pin, so a
    loose requirement can never slip into environment.yml.
    """
    pins = []
    for number, raw in enumerate(lock_text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not PIN.match(line):
            raise ValueError(f"requirements.lock:{number}: not an exact pin: {line!r}")
        pins.append(line)
    return pins


def render(lock_text: str) -> str:
    """The full text of environment.yml for the given lock file text."""
    lines = [
        "# Conda environment for the labkit course. GENERATED from requirements.lock by",
        "# scripts/write_environment_yml.py: do not edit by hand, edit the lock and rerun.",
        "#   conda env create -f environment.yml && conda activate labkit",
        "# torch==2.13.0 comes from PyPI like every other pin (CPU or CUDA build, as pip",
        "# resolves it for your platform); conda only provides Python and pip.",
        f"name: {ENV_NAME}",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={PYTHON}",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {pin}" for pin in read_pins(lock_text)]
    lines.append("      - -e .")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if environment.yml is out of date")
    args = parser.parse_args(argv)

    wanted = render(LOCK.read_text(encoding="utf-8"))
    current = ENV_YML.read_text(encoding="utf-8") if ENV_YML.exists() else None
    if args.check:
        if current != wanted:
            print(f"{ENV_YML.name} is out of date; run python {Path(__file__).relative_to(ROOT)}",
                  file=sys.stderr)
            return 1
        print(f"{ENV_YML.name} is up to date")
        return 0
    if current != wanted:
        ENV_YML.write_text(wanted, encoding="utf-8")
        print(f"wrote {ENV_YML.name} ({wanted.count('==')} pins)")
    else:
        print(f"{ENV_YML.name} already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
