"""CRN training throughput: ``benchmarks/throughput.py --chapter crn`` under its old name.

    python benchmarks/crn_throughput.py                        # book profile, the best device here
    python benchmarks/crn_throughput.py --device cuda --profile full      # on a GPU, every mode with MFU
    python benchmarks/crn_throughput.py --profile smoke --steps 2 --warmup 1 --out /tmp/x.json   # a quick check

Every option of ``benchmarks/throughput.py`` works here (its docstring says what
one step is, the modes, FLOPs and MFU); only the chapter is fixed to ``crn`` and
the default output is ``reports/benchmarks/crn_throughput_<device type>.json``.
The committed ``crn_throughput_cpu.json`` was written by the first version of
this script (fp32 eager, bf16 + channels_last and compiled on the CPU, no FLOPs);
the report reads both layouts.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # noqa: E402


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a == "--chapter" or a.startswith("--chapter=") for a in argv):
        raise SystemExit("crn_throughput.py always benchmarks the CRN chapter; use benchmarks/throughput.py "
                         "--chapter … for the others")
    parser = throughput.argument_parser(__doc__.splitlines()[0])
    return throughput.main(["--chapter", "crn", *argv], parser=parser,
                           out_for=lambda chapter, device: throughput.REPO_ROOT / "reports" / "benchmarks"
                           / f"crn_throughput_{device.type}.json", benchmark="crn_throughput")


if __name__ == "__main__":
    raise SystemExit(main())
