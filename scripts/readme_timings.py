"""Write the README's timing table from the recorded runs.

    python scripts/readme_timings.py --write     # rewrite the block in README.md
    python scripts/readme_timings.py             # print it

Sources: reports/benchmarks/timings.json (scripts/timed.py) and
reports/benchmarks/data_speed.json (scripts/benchmark_data.py); the judge's
training time comes from checkpoints/judge.pt. tests/test_readme.py checks
that the README shows exactly what these files say.
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- timings:start -->", "<!-- timings:end -->"
STEPS = [
    ("make test (fresh clone)", "`make test` from a fresh clone: create `.venv`, install the pins, unit tests, nbval"),
    ("make book", "`make book` after that: execute every notebook, build `_build/html`"),
    ("make check-book", "`make check-book` after that: every page in headless Chromium, offline, with screenshots"),
    ("dry run", "`python -m labkit.dry_run`, then `labkit reproduce --profile full --dry-run`: every chapter's full profile, 2 steps per network across an interruption, resumed and scored, then every notebook's full-profile cells (2 threads)"),
    ("make check-portable", "`make check-portable`: nbval over every notebook under 4 CPU variants (no SIMD and AVX2, 1 and 2 threads)"),
    ("notebook 00", "`notebooks/00_data_and_evaluation.ipynb`, book profile, top to bottom"),
    ("notebook 01", "`notebooks/01_crn.ipynb`, book profile, top to bottom"),
    ("notebook 02", "`notebooks/02_sims.ipynb`, book profile, top to bottom"),
    ("notebook 03", "`notebooks/03_srn.ipynb`, book profile, top to bottom"),
    ("notebook 04", "`notebooks/04_semantic_analogy.ipynb`, book profile, top to bottom"),
    ("notebook 05", "`notebooks/05_seigan.ipynb`, book profile, top to bottom"),
    ("notebook 06", "`notebooks/06_report.ipynb`, book profile, top to bottom"),
]
CRN_RECORD = "reports/book/crn/metrics.json"
SIMS_RECORD = "reports/book/sims/metrics.json"
SRN_RECORD = "reports/book/srn/metrics.json"
ANALOGY_RECORD = "reports/book/analogy/metrics.json"
SEIGAN_RECORD = "reports/book/seigan/metrics.json"
COMPARISON_RECORD = "reports/book/report/comparison.json"


def _commit(run: dict) -> str:
    return f"{run['commit'][:7]}{'-dirty' if run['commit'].endswith('-dirty') else ''}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 90 else f"{seconds:.0f} s"


def table() -> str:
    timings = json.loads((ROOT / "reports/benchmarks/timings.json").read_text())
    speed = json.loads((ROOT / "reports/benchmarks/data_speed.json").read_text())
    lines = ["| step | time on a 2-core CPU | commit |", "|---|---|---|"]
    for key, text in STEPS:
        if key in timings:
            if timings[key]["exit_code"] != 0:
                raise ValueError(f"the recorded run of {key!r} failed (exit {timings[key]['exit_code']}); rerun it")
            load = timings[key].get("load_average")
            where = f" (1-min load {load['before']:.1f} before, {load['after']:.1f} after)" if load else ""
            lines.append(f"| {text} | {_minutes(timings[key]['seconds'])}{where} | `{timings[key]['commit'][:7]}` |")
    import torch

    judge = torch.load(ROOT / "checkpoints/judge.pt", weights_only=True)["train"]
    lines.append(f"| `make judge`: retrain the judge ({judge['steps']} steps) | "
                 f"{_minutes(judge['wall_time_s'])} | `{judge['commit'][:7]}` |")
    second_path = ROOT / "checkpoints/judge_b.pt"
    if second_path.is_file():
        second = torch.load(second_path, weights_only=True)["train"]
        lines.append(f"| `python -m labkit.judge train --second`: the report's second judge ({second['steps']} steps) | "
                     f"{_minutes(second['wall_time_s'])} | `{second['commit'][:7]}` |")
    crn_path = ROOT / CRN_RECORD
    if crn_path.is_file():
        crn = json.loads(crn_path.read_text())
        for name, scores in crn["metrics"].items():
            run = crn["training"][name]
            lines.append(f"| CRN chapter, book profile: train `{name}` ({scores['steps']} steps, "
                         f"{run['threads']} thread) | {_minutes(scores['train_seconds'])} | `{_commit(run)}` |")
    sims_path = ROOT / SIMS_RECORD
    if sims_path.is_file():
        sims = json.loads(sims_path.read_text())
        metrics, training = sims["metrics"], sims["training"]
        for part, key in (("transformer", "transformation"), ("ordering", "ordering")):
            if key in metrics:
                lines.append(f"| SIMS chapter, book profile: train the {part} network ({metrics[key]['steps']} steps, "
                             f"{training[part]['threads']} thread) | {_minutes(metrics[key]['train_seconds'])} | "
                             f"`{_commit(training[part])}` |")
        for name, scores in metrics.items():
            if isinstance(scores, dict) and "train_seconds" in scores and "fcn_miou" in scores:
                lines.append(f"| SIMS chapter, book profile: train `{name}` ({scores['steps']} steps, "
                             f"{training[name]['threads']} thread) | {_minutes(scores['train_seconds'])} | "
                             f"`{_commit(training[name])}` |")
    srn_path = ROOT / SRN_RECORD
    if srn_path.is_file():
        srn = json.loads(srn_path.read_text())
        for name, scores in srn["metrics"].items():
            phases = srn["training"].get(name) or {}
            if "finetune" not in phases:
                continue   # srn_pretrain is srn's first phase; reflect trains nothing
            run = phases["finetune"]
            if phases["pretrain"] == (srn["training"].get("srn") or {}).get("pretrain") and name != "srn":
                lines.append(f"| SRN chapter, book profile: train `{name}` ({scores['steps']['finetune']} steps "
                             f"after `srn`'s first phase, {run['threads']} threads) | {_minutes(run['wall_time_s'])} | "
                             f"`{_commit(run)}` |")
                continue
            steps = " + ".join(f"{scores['steps'][p]} {p}" for p in ("pretrain", "finetune"))
            lines.append(f"| SRN chapter, book profile: train `{name}` ({steps} steps, {run['threads']} threads) | "
                         f"{_minutes(scores['train_seconds'])} | `{_commit(run)}` |")
    analogy_path = ROOT / ANALOGY_RECORD
    if analogy_path.is_file():
        analogy = json.loads(analogy_path.read_text())
        for name, per_image in analogy["training"].items():
            if "source" in per_image:
                continue   # image_analogies trains nothing
            for image, run in per_image.items():
                lines.append(f"| Analogy chapter, book profile: train `{name}` on `{image}` ({run['steps']} iterations, "
                             f"{run['threads']} thread{'s' if run['threads'] > 1 else ''}) | "
                             f"{_minutes(run['wall_time_s'])} | `{_commit(run)}` |")
    seigan_path = ROOT / SEIGAN_RECORD
    if seigan_path.is_file():
        seigan = json.loads(seigan_path.read_text())
        for name, run in seigan["training"].items():
            if "steps" not in run:
                continue   # bbox_as_mask trains nothing
            lines.append(f"| SEIGAN chapter, book profile: train `{name}` ({run['steps']} iterations, "
                         f"{run['threads']} thread{'s' if run['threads'] > 1 else ''}) | "
                         f"{_minutes(run['wall_time_s'])} | `{_commit(run)}` |")
        for run in seigan.get("seed_runs", {}).values():   # the same model again, another training seed
            info = run.get("training", run["provenance"])
            lines.append(f"| SEIGAN chapter, book profile: train `{run['model']}` again with training seed "
                         f"{run['training_seed']} ({run['metrics']['steps']} iterations, {info['threads']} "
                         f"thread{'s' if info['threads'] > 1 else ''}) | {_minutes(run['metrics']['train_seconds'])} | "
                         f"`{_commit(info)}` |")
    comparison_path = ROOT / COMPARISON_RECORD
    if comparison_path.is_file():
        comparison = json.loads(comparison_path.read_text())
        run, settings = comparison["provenance"], comparison["metrics"]["settings"]
        lines.append(f"| Report, book profile: score {len(settings['methods'])} layout-to-image methods on "
                     f"{settings['eval_scenes']} held-out layouts (`python -m labkit.report`, {run['threads']} "
                     f"thread{'s' if run['threads'] > 1 else ''}) | {_minutes(run['wall_time_s'])} | `{_commit(run)}` |")
    rates = speed["metrics"]["scenes_per_second"]
    lines.append("| StreetScenes rendering, one core (`scripts/benchmark_data.py`) | "
                 + ", ".join(f"{rates[k]:g} scenes/s at {k.replace('x', '×')}"
                             for k in sorted(rates, key=lambda k: int(k.split("x")[0])))
                 + f" | `{speed['provenance']['commit'][:7]}` |")
    return "\n".join(lines)


def block() -> str:
    return f"{START}\n{table()}\n{END}"


def write() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + block() + tail)


if __name__ == "__main__":
    write() if "--write" in sys.argv else print(block())
