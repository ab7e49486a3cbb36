"""The README's timings are the recorded ones, not typed in."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _readme_timings():
    spec = importlib.util.spec_from_file_location("readme_timings", ROOT / "scripts" / "readme_timings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_timing_table_matches_the_recorded_runs():
    module = _readme_timings()
    assert module.block() in (ROOT / "README.md").read_text(), \
        "README timings differ from reports/benchmarks/: run python scripts/readme_timings.py --write"


def test_readme_gives_exactly_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set up", 1)[1].split("\n## ", 1)[0]
    commands = [line.strip() for line in setup.splitlines() if line.strip().startswith("make ")]
    assert commands == ["make book", "make test"]


def test_every_chapter_notebook_ran_its_default_profile_in_under_two_minutes():
    import json

    timings = json.loads((ROOT / "reports" / "benchmarks" / "timings.json").read_text())
    chapters = sorted(p.stem.split("_", 1)[0] for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [c for c in chapters if f"notebook {c}" not in timings]
    assert not missing, f"no recorded book-profile run of notebooks {missing}: time them with scripts/timed.py"
    slow = {c: timings[f"notebook {c}"]["seconds"] for c in chapters if timings[f"notebook {c}"]["seconds"] >= 120}
    assert not slow, f"book-profile runs over the 2-minute budget (seconds): {slow}"


def test_readme_memory_table_matches_the_recorded_measurement():
    import json
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("memory_benchmark", ROOT / "benchmarks" / "memory.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    record = json.loads((ROOT / "reports" / "benchmarks" / "memory_full_cpu.json").read_text())
    assert set(record["metrics"]["chapters"]) == {"crn", "sims", "srn", "analogy", "seigan"}
    assert module.readme_block(record) in (ROOT / "README.md").read_text(), \
        "README memory table differs from reports/benchmarks/memory_full_cpu.json: " \
        "run python benchmarks/memory.py --write-readme"
