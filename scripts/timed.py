"""Run a command and record its wall-clock time, for the README's timings.

    python scripts/timed.py --out reports/benchmarks/timings.json "make test" -- make test

Appends {name: {"seconds", "command", "exit_code", "cores", "load_average", provenance}}
to the JSON file (written atomically) and exits with the command's exit code.
``load_average`` is the 1-minute load before and after the command: other work
on the machine slows a timing, and the reader should know how much there was.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("name")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    load_before = os.getloadavg()[0]
    began = time.monotonic()
    code = subprocess.call(command)
    seconds = time.monotonic() - began
    load_after = os.getloadavg()[0]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    record = json.loads(args.out.read_text()) if args.out.is_file() else {}
    record[args.name] = {"seconds": round(seconds, 1), "command": " ".join(command), "exit_code": code,
                         "cores": os.cpu_count(), "commit": commit,
                         "load_average": {"before": round(load_before, 2), "after": round(load_after, 2)},
                         "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, args.out)
    print(f"[timed] {args.name}: {seconds:.0f} s (exit {code})", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
