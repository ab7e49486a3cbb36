"""The reproducibility report: every table of ``notebooks/06_report.ipynb``, computed from run records.

Nothing here holds a result. Each function reads the chapters' recorded runs
(``reports/<profile>/<chapter>/metrics.json``, through each run module's
``read_record``) or the report's own comparison run, and turns them into rows:

- :func:`claims_table`: each chapter's claims (the chapter's own ``claims()``
  checks), next to what the paper offered as evidence, with the verdict in the
  report's words (supported / partly / not reproduced at this scale);
- :func:`published_comparison`: SPADE's independent Cityscapes measurements of
  CRN and SIMS :cite:p:`park2019spade` beside ours (the only published numbers
  this module holds, quoted with their source in :data:`PUBLISHED`);
- :func:`compare_layout_to_image` (a run, ``python -m labkit.report``): CRN,
  SIMS, the pix2pix baseline and the analogy generator on the *same* held-out
  layouts, with FCN-score, Fréchet distance on judge features, diversity,
  parameters, training time and time per image;
- :func:`chapter_costs`: CPU core-minutes and GPU-minutes of every recorded
  training and scoring run;
- :func:`environment`: versions, device and commit of this process.

The comparison run writes ``reports/<profile>/report/comparison.json``
(atomically, with provenance) and a figure of the same layouts across methods.
"""
from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .checkpoints import read_json
from .train import (PROFILE_NAMES, REPO_ROOT, argparse_device, argparse_positive_int, argparse_seed, dry_run_dir,
                    dry_run_requested, provenance, select_profile, write_metrics)

REPORT = "report"   # reports/<profile>/report/


@dataclass(frozen=True)
class Chapter:
    """One chapter of the course as the report sees it."""
    key: str            # record folder under reports/<profile>/ and the labkit.papers module
    number: int
    title: str
    notebook: str       # notebooks/<notebook>.ipynb
    claims_section: str  # the heading of the chapter's claims section
    label: str          # MyST target of that section, for {ref}`label` links from the book

    @property
    def runs(self):
        """The chapter's run module, ``labkit.papers.<key>_runs``."""
        return importlib.import_module(f"labkit.papers.{self.key}_runs")


CHAPTERS = (
    Chapter("crn", 1, "CRN: cascaded refinement", "01_crn", "9. Claims vs this reproduction", "crn-claims"),
    Chapter("sims", 2, "SIMS: semi-parametric synthesis", "02_sims", "9. Claims vs this reproduction", "sims-claims"),
    Chapter("srn", 3, "SRN: semantic regeneration for extrapolation", "03_srn", "9. Claims vs this reproduction",
            "srn-claims"),
    Chapter("analogy", 4, "Semantic Image Analogy (SFT)", "04_semantic_analogy", "9. Claims vs this reproduction",
            "analogy-claims"),
    Chapter("seigan", 5, "SEIGAN: segment, enhance, inpaint", "05_seigan", "8. Claims vs this reproduction",
            "seigan-claims"),
)


def chapter(key: str) -> Chapter:
    for item in CHAPTERS:
        if item.key == key:
            return item
    raise ValueError(f"unknown chapter {key!r}; expected one of {[c.key for c in CHAPTERS]}")


# The report's verdicts for the chapters' own ones (labkit.claims.verdict).
VERDICTS = {
    "holds": "supported",
    "mixed": "partly",
    "does not hold": "not reproduced at this scale",
    "not resolved": "within the seeds' spread",
    "not measured": "not measured",
}

# Published measurements quoted beside ours. SPADE (Park et al., CVPR 2019), Table 1,
# re-measured CRN and SIMS on Cityscapes with a DRN segmenter (mIoU, pixel accuracy,
# %) and FID on Inception features. Source: ../shared/reference/papers.md.
PUBLISHED = {
    "source": "SPADE (Park et al., CVPR 2019), Table 1, Cityscapes",
    "methods": {
        "crn": {"miou": 52.4, "pixel_accuracy": 77.1, "fid": 104.7},
        "sims": {"miou": 47.2, "pixel_accuracy": 75.5, "fid": 49.7},
    },
    "notes": "SIMS's pixel accuracy could not be verified against SPADE's own table (papers.md marks it ⚠)",
}


# What each paper offered as evidence for the claim a chapter tests, keyed by the
# chapter's claim text (``<chapter>_runs.claims``). Most papers argue with user
# studies and figures; numbers are quoted only where ../shared/reference/papers.md
# could verify them (SPADE's re-measurement).
PAPER_EVIDENCE = {
    "crn": {
        "Feature matching without an adversarial loss yields recognisable layouts":
            "Photographic 256p–1024p Cityscapes results from a VGG19 feature-matching loss alone, no GAN; "
            f"SPADE later measured FCN mIoU {PUBLISHED['methods']['crn']['miou']} on Cityscapes",
        "The cascade beats a single-scale network of similar size":
            "MTurk comparisons against an encoder–decoder and a full-resolution network (CRN preferred)",
        "The diversity loss gives distinct samples without losing fidelity":
            "Figures of K = 9 outputs per layout from the per-class min-over-K loss",
        "CRN beats pix2pix (the paper: human judges preferred CRN's images on Cityscapes)":
            "MTurk pairwise preference for CRN over pix2pix on Cityscapes and NYU",
    },
    "sims": {
        "SIMS is more realistic than CRN (SPADE on Cityscapes: FID 49.7 vs 104.7)":
            "MTurk preference over CRN and pix2pix; SPADE's Cityscapes FID "
            f"{PUBLISHED['methods']['sims']['fid']} (SIMS) vs {PUBLISHED['methods']['crn']['fid']} (CRN)",
        "…but less faithful to the layout (SPADE: mIoU 47.2 vs 52.4)":
            f"SPADE's Cityscapes mIoU {PUBLISHED['methods']['sims']['miou']} (SIMS) vs "
            f"{PUBLISHED['methods']['crn']['miou']} (CRN); the official README: outputs cannot "
            "guarantee to match the layout exactly",
        "The synthesis network is needed: the canvas alone is not an image":
            "Figures of canvases (holes, seams) next to the synthesised images",
        "Each canvas simulation (stenciling, colour transfer, boundary elision) helps":
            "Component ablation in the paper's user study",
        "Scoring the context as well as the shape retrieves more compatible segments":
            "The paper's retrieval uses context; the released code searches by mask IoU only",
        "The transformation network aligns retrieved segments and improves the result":
            "Ablation; the official README: no significant improvement on Cityscapes, essential on NYU",
        "The ordering network predicts which object is in front, and that helps the canvas":
            "Ordering network described and used for canvas composition; no separate ablation number",
    },
    "srn": {
        "CN improves colour and texture consistency between the known and the extrapolated region":
            "Ablation with and without CN (PSNR/SSIM and figures)",
        "RSV gives sharper semantic boundaries than plain L1 and the confidence-driven weight, at comparable fidelity":
            "Ablation of the reconstruction weighting (figures, PSNR/SSIM)",
        "SRN beats the encoder–decoder (ED) and SRN-HR":
            "Comparison with an encoder–decoder and the high-resolution variant (PSNR/SSIM, user study)",
        "Sub-pixel feature expansion beats deconvolution":
            "Ablation of the feature-expansion operator",
        "Fine-tuning with ID-MRF and the adversarial terms makes the extension more realistic "
        "(the paper: sharper, more natural texture)":
            "Figures before and after ID-MRF + adversarial fine-tuning",
        "A learned extrapolation beats mirroring the known region":
            "Implicit: every baseline in the paper is a learned model",
    },
    "analogy": {
        "SFT (relative layout features) beats conditioning on the target layout alone (SPADE-like)":
            "Ablation without SFT (quantitative table and figures in the ACM MM paper)",
        "SFT carries the source image into I′ (it translates the source's features; a generator conditioned on P′ "
        "alone can paint the one image it was trained on from memory)":
            "The method's design: γ and β modulate the source image's normalised features (method section, figures "
            "of edits that keep the source's look); not measured as such in the paper",
        "The fixed-point loss keeps the source when the layout does not change, and helps the edits":
            "Ablation without the fixed-point loss",
        "Ramping up the augmentation (progressive training) helps":
            "Ablation without progressive augmentation",
        "The semantic alignment loss makes I′ follow P′ (it needs its gradient, which the official code detaches)":
            "The paper's alignment loss; the released code computes it without a gradient to G",
        "The conditional single-image GAN beats Image Analogies on mean IoU / pixel accuracy (the paper's table)":
            "Quantitative table: mIoU / pixel accuracy against Image Analogies and other single-image methods",
        "I′ keeps the source's appearance (the paper's user study: similarity to the source)":
            "User study on similarity to the source image",
    },
    "seigan": {
        "Masks learned from boxes alone approach full supervision":
            "Abstract: masks beat other adversarial methods and approach full supervision (IoU tables, arXiv §4)",
        "The enhancement network makes composites more realistic":
            "Human assessors preferred the enhanced composites",
        "Inpainting restores a plausible background":
            "Figures of removed objects; inpainting is one of the three jointly trained parts",
        "The cycle as the paper writes it trains without collapsing (no stop-gradient needed)":
            "The training objective (§2) back-propagates the whole cycle; the paper's masks are not empty",
        "The cycle helps (the paper's ablation)":
            "Ablation without the cycle (arXiv §4)",
        "The identity loss helps (the paper's ablation)":
            "Ablation without the identity loss (arXiv §4)",
    },
}

def chapter_record_dirs(key: str, profile: str) -> list[Path]:
    """Where a chapter's record of ``profile`` may be, in order: the committed book record
    (book), ``reports/<profile>/<chapter>/`` (``python -m labkit.papers.<chapter>_runs``), then
    ``runs/<profile>/<notebook>/`` (``labkit reproduce``, which runs the notebook there). A dry run of
    the full profile (``LABKIT_DRY_RUN=1``) looks in the dry runs' folder only (:func:`labkit.train.dry_run_dir`)."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {list(PROFILE_NAMES)}")
    item = chapter(key)
    if profile == "book":
        return [REPO_ROOT / "reports" / "book" / key]
    if profile == "full" and dry_run_requested():   # a dry run reads dry runs only, never a real full record
        return [dry_run_dir(item.notebook), dry_run_dir(key)]
    return [REPO_ROOT / "reports" / profile / key, REPO_ROOT / "runs" / profile / item.notebook]


def read_chapter_record(key: str, profile: str = "book") -> dict:
    """A chapter's merged record through its run module's own checks (missing, stale, unfinished),
    from the first of :func:`chapter_record_dirs` that holds one."""
    folders = chapter_record_dirs(key, profile)
    found = next((folder for folder in folders if (folder / "metrics.json").is_file()), None)
    if found is None:
        raise FileNotFoundError(f"no {profile} record of chapter {key!r} in any of {[str(f) for f in folders]}; "
                                f"run `labkit reproduce --profile {profile} {key}` or "
                                f"`python -m labkit.papers.{key}_runs --profile {profile}`")
    return chapter(key).runs.read_record(profile, None if profile == "book" else found)


def read_records(profile: str = "book") -> tuple[dict[str, dict], dict[str, str]]:
    """({chapter: record}, {chapter: why it is left out}). Every chapter must have a complete
    book record (they are committed); for other profiles the report covers the chapters whose
    record is complete, and says of the others what is missing, stale or unfinished."""
    if profile not in PROFILE_NAMES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {list(PROFILE_NAMES)}")
    records, missing = {}, {}
    for item in CHAPTERS:
        try:
            records[item.key] = read_chapter_record(item.key, profile)
        except (FileNotFoundError, ValueError) as error:
            if profile == "book":
                raise
            missing[item.key] = str(error)
    return records, missing


def html_table(rows: list[dict], columns: list[tuple]) -> str:
    """An HTML table of ``rows``; ``columns`` is a list of (header, key, format), where key is a
    dict key or a callable of the row and format a format spec (e.g. ".3f") or None. Missing
    values (None) show as an en dash; text is escaped."""
    import html

    if not isinstance(rows, (list, tuple)) or not all(isinstance(row, dict) for row in rows):
        raise ValueError(f"rows must be a list of dicts, got {rows!r:.80}")
    if not isinstance(columns, (list, tuple)) or not all(
            isinstance(c, tuple) and len(c) == 3 and isinstance(c[0], str) for c in columns):
        raise ValueError(f"columns must be a list of (header, key or callable, format or None), got {columns!r:.80}")

    def cell(row, key, spec):
        value = key(row) if callable(key) else row.get(key)
        if value is None:
            return "–"
        if spec and isinstance(value, (int, float)) and not isinstance(value, bool):
            return format(value, spec)
        return html.escape(str(value))

    head = "".join(f"<th>{html.escape(header)}</th>" for header, _, _ in columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(row, key, spec)}</td>" for _, key, spec in columns) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def record_commit(record: dict) -> str:
    """The commit(s) the record's scoring runs came from, as one string."""
    commits = sorted({str(info.get("commit", "?"))[:7] + ("-dirty" if str(info.get("commit", "")).endswith("-dirty")
                                                          else "")
                      for info in (record.get("runs") or {}).values() if isinstance(info, dict)})
    return ", ".join(commits) or str((record.get("provenance") or {}).get("commit", "?"))[:7]


def claims_table(key: str, record: dict) -> list[dict]:
    """The chapter's claims: {claim, paper_evidence, measurement, verdict, chapter_verdict, section}.

    Raises KeyError when the chapter tests a claim the report has no paper evidence for,
    so a renamed or new claim cannot silently lose its paper column.
    """
    item = chapter(key)
    rows = []
    for row in item.runs.claims(record):
        evidence = PAPER_EVIDENCE[key].get(row["claim"])
        if evidence is None:
            raise KeyError(f"no paper evidence recorded for the {key} claim {row['claim']!r}; "
                           "add it to labkit.report.PAPER_EVIDENCE")
        if row["verdict"] not in VERDICTS:
            raise ValueError(f"unknown verdict {row['verdict']!r} from the {key} chapter; expected {list(VERDICTS)}")
        rows.append({"claim": row["claim"], "paper_evidence": evidence, "measurement": row["evidence"],
                     "verdict": VERDICTS[row["verdict"]], "chapter_verdict": row["verdict"],
                     "section": f"chapter {item.number}, § {item.claims_section}"})
    return rows


def verdict_counts(rows: list[dict]) -> dict:
    """How many of ``rows`` (from :func:`claims_table`) have each report verdict."""
    counts = {verdict: 0 for verdict in VERDICTS.values()}
    for row in rows:
        if not isinstance(row, dict) or row.get("verdict") not in counts:
            raise ValueError(f"rows must be claims_table rows with a verdict in {list(counts)}, got {row!r:.120}")
        counts[row["verdict"]] += 1
    return counts


def published_comparison(sims_record: dict) -> list[dict]:
    """SPADE's Cityscapes numbers for CRN and SIMS beside ours on the same held-out street layouts.

    Ours come from the SIMS chapter's record, which scored the CRN chapter's exported
    generator and SIMS on the same test layouts. Scales differ (percent vs fraction,
    Inception FID vs Fréchet on judge features), so only orderings compare.
    """
    ours = sims_record["metrics"]
    real = sims_record["reference"]["real_scenes"]
    rows = []
    for method, published in PUBLISHED["methods"].items():
        measured = ours[method]
        rows.append({"method": method, "spade_miou": published["miou"],
                     "spade_pixel_accuracy": published["pixel_accuracy"], "spade_fid": published["fid"],
                     "fcn_miou": measured["fcn_miou"], "fcn_pixel_accuracy": measured["fcn_pixel_accuracy"],
                     "frechet_distance": measured["frechet_distance"],
                     "fcn_miou_best_output": measured.get("fcn_miou_best_output"),
                     "frechet_distance_best_output": measured.get("frechet_distance_best_output"),
                     "eval_scenes": measured["eval_scenes"]})
    rows.append({"method": "real scenes", "spade_miou": None, "spade_pixel_accuracy": None, "spade_fid": None,
                 "fcn_miou": real["fcn_miou"], "fcn_pixel_accuracy": real["fcn_pixel_accuracy"],
                 "frechet_distance": real["frechet_distance"], "fcn_miou_best_output": None,
                 "frechet_distance_best_output": None, "eval_scenes": real["eval_scenes"]})
    return rows


def orderings_agree(rows: list[dict]) -> dict:
    """Whether our measurements order CRN and SIMS as SPADE's do, per metric (higher mIoU
    and accuracy are better, lower FID / Fréchet is better). ``miou_best_output`` compares
    with CRN's best output slot, the one image per layout a user of CRN would pick."""
    by = {r["method"]: r for r in rows}
    crn, sims = by["crn"], by["sims"]
    return {
        "miou": (crn["spade_miou"] > sims["spade_miou"]) == (crn["fcn_miou"] > sims["fcn_miou"]),
        "miou_best_output": ((crn["spade_miou"] > sims["spade_miou"])
                             == (crn["fcn_miou_best_output"] > sims["fcn_miou_best_output"])),
        "pixel_accuracy": ((crn["spade_pixel_accuracy"] > sims["spade_pixel_accuracy"])
                           == (crn["fcn_pixel_accuracy"] > sims["fcn_pixel_accuracy"])),
        "realism": (crn["spade_fid"] > sims["spade_fid"]) == (crn["frechet_distance"] > sims["frechet_distance"]),
    }


# --------------------------------------------------------------------------- cost and environment


def _training_segments(value, found: list) -> None:
    """Every provenance dict (it has ``wall_time_s`` and ``device``) inside a training entry."""
    if isinstance(value, dict):
        if "wall_time_s" in value and "device" in value:
            found.append(value)
            return
        for inner in value.values():
            _training_segments(inner, found)


def _segment_key(info: dict) -> tuple:
    return (info.get("finished_at"), info.get("command"), info.get("wall_time_s"))


def _minutes(segments: list[dict]) -> dict:
    cpu = sum(s["wall_time_s"] * int(s.get("threads") or 1) for s in segments
              if not str(s["device"]).startswith("cuda")) / 60
    gpu = sum(s["wall_time_s"] for s in segments if str(s["device"]).startswith("cuda")) / 60
    wall = sum(s["wall_time_s"] for s in segments) / 60
    return {"wall_minutes": wall, "cpu_core_minutes": cpu, "gpu_minutes": gpu, "runs": len(segments)}


def _process_key(info: dict) -> tuple:
    """The process a scoring run came from: one command at one commit on one device."""
    return (info.get("command"), info.get("commit"), str(info.get("device")), info.get("threads"))


def chapter_costs(records: dict[str, dict]) -> list[dict]:
    """Per chapter: the wall minutes, CPU core-minutes (wall × threads) and GPU-minutes of
    its recorded runs.

    ``training`` sums the training runs' own durations (each run counted once: a record
    can list the same run under several models). ``scoring`` is the wall time of the
    processes that scored the models: a scoring provenance's ``wall_time_s`` is the time
    since that process started, so it includes any training done in the same process,
    and the models a process scored share its time (the longest one is counted, once per
    command, commit, device and thread count). The two overlap where a process both trained
    and scored, so their sum is an upper bound of the chapter's cost.
    """
    if not isinstance(records, dict):
        raise ValueError(f"records must be a dict of chapter → record (read_records), got {type(records).__name__}")
    rows = []
    for key, record in records.items():
        training, scoring = [], []
        for entry in (record.get("training") or {}).values():
            _training_segments(entry, training)
        for info in (record.get("runs") or {}).values():
            _training_segments(info, scoring)
        training = list({_segment_key(s): s for s in training}.values())
        processes = {}
        for info in scoring:
            longest = processes.get(_process_key(info))
            if longest is None or info["wall_time_s"] > longest["wall_time_s"]:
                processes[_process_key(info)] = info
        devices = sorted({str(s["device"]) for s in training + scoring})
        rows.append({"chapter": key, "training": _minutes(training), "scoring": _minutes(list(processes.values())),
                     "devices": devices,
                     "threads": sorted({int(s.get("threads") or 1) for s in training + scoring})})
    return rows


def environment(device="cpu") -> dict:
    """Versions of what the report depends on, the device and the commit of this process."""
    import os
    import platform
    from importlib import metadata

    from .train import git_commit

    versions = {"python": platform.python_version()}
    for package in ("torch", "numpy", "kornia", "scikit-image", "torchmetrics", "matplotlib", "ipywidgets",
                    "jupyterlab", "papermill", "nbval", "jupyter-book", "labkit"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch.device or a name such as 'cpu' or 'cuda', got {device!r}") from None
    return {"versions": versions, "commit": git_commit(), "device": str(device),
            "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                            else platform.processor() or platform.machine()),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda_available": torch.cuda.is_available(), "platform": platform.platform()}


def timings(path=None) -> dict:
    """``reports/benchmarks/timings.json`` (``scripts/timed.py``): wall times of make test,
    make book and each notebook, with the commit and machine each was taken on."""
    path = Path(path) if path else REPO_ROOT / "reports" / "benchmarks" / "timings.json"
    if not path.is_file():
        raise FileNotFoundError(f"no timings at {path}; time a step with `python scripts/timed.py --out {path} "
                                "\"make test\" -- make test`")
    return read_json(path)


BENCHMARKS = REPO_ROOT / "reports" / "benchmarks"


def _benchmark_files(pattern: str, folder=None) -> list[Path]:
    return sorted(Path(folder or BENCHMARKS).glob(pattern))


def throughput_rows(folder=None) -> list[dict]:
    """One row per (benchmark file, chapter, mode) of the training-throughput benchmarks
    (``benchmarks/throughput.py``). A ``crn_throughput_<device>.json`` file counts as chapter
    crn, unless ``throughput_<device>.json`` (every chapter, that device) is there too."""
    rows = []
    files = _benchmark_files("*throughput_*.json", folder)
    names = {path.name for path in files}
    for path in files:
        if path.name.startswith("crn_throughput_") and path.name.removeprefix("crn_") in names:
            continue   # the older CRN-only file, superseded by the all-chapter run on that device
        record = read_json(path)
        metrics, info = record["metrics"], record.get("provenance", {})
        chapters = metrics.get("chapters") or {path.stem.split("_throughput")[0] or "crn": metrics}
        for key, result in chapters.items():
            for mode, timing in (result.get("modes") or {}).items():
                rows.append({"file": path.name, "chapter": key, "mode": mode,
                             "device": info.get("device_name") or metrics.get("device_type"),
                             "profile": metrics.get("profile", info.get("profile")),
                             "images_per_s": timing.get("images_per_s"),
                             "ratio": timing.get("ratio_to_fp32_eager"),
                             "flops_per_image": timing.get("flops_per_image", result.get("flops_per_image")),
                             "mfu": timing.get("mfu"), "skipped": timing.get("error"),
                             "commit": str(info.get("commit", "?"))[:7]})
    return rows


THROUGHPUT_COLUMNS = [("chapter", "chapter", None), ("mode", "mode", None), ("device", "device", None),
                      ("profile", "profile", None), ("images/s", "images_per_s", ".2f"),
                      ("× fp32 eager", "ratio", ".2f"), ("GFLOP per image",
                                                         lambda r: None if r["flops_per_image"] is None
                                                         else r["flops_per_image"] / 1e9, ".2f"),
                      ("MFU", "mfu", ".1%"), ("skipped", "skipped", None), ("commit", "commit", None),
                      ("file", "file", None)]


def benchmark_sources(folder=None) -> list[str]:
    """One line per benchmark file: its name, commit, device and when it ran."""
    lines = []
    for path in _benchmark_files("*.json", folder):
        if path.name == "timings.json":
            continue
        record = read_json(path)
        info, metrics = record.get("provenance", {}), record.get("metrics", {})
        load = (metrics.get("load_average_before"), metrics.get("load_average_after"))
        lines.append(f"{path.name}: commit {str(info.get('commit', '?'))[:7]}, {info.get('device', '?')} "
                     f"({info.get('device_name', '?')}), {info.get('threads', '?')} threads, "
                     f"finished {info.get('finished_at', '?')}"
                     + (f", 1-minute load average {load[0][0]} before and {load[1][0]} after" if all(load) else ""))
    return lines


def retrieval_curve(folder=None) -> dict[str, list[dict]]:
    """{device: [{memory_segments, ms_per_query}, …]} from ``sims_retrieval_<device>.json``
    (``benchmarks/sims_retrieval.py``), sorted by memory size."""
    curves = {}
    for path in _benchmark_files("sims_retrieval_*.json", folder):
        metrics = read_json(path)["metrics"]
        points = [{"memory_segments": p["memory_segments"], "ms_per_query": p["ms_per_query"]}
                  for p in metrics["points"]]
        curves[path.stem.removeprefix("sims_retrieval_")] = sorted(points, key=lambda p: p["memory_segments"])
    return curves


def record_environments(records: dict[str, dict]) -> list[dict]:
    """Per chapter: the devices, threads, versions and commits of its scoring runs."""
    if not isinstance(records, dict):
        raise ValueError(f"records must be a dict of chapter → record (read_records), got {type(records).__name__}")
    rows = []
    for key, record in records.items():
        runs = [info for info in (record.get("runs") or {}).values() if isinstance(info, dict)]
        versions = sorted({", ".join(f"{k} {v}" for k, v in sorted((info.get("versions") or {}).items()))
                           for info in runs})
        rows.append({"chapter": key, "devices": ", ".join(sorted({f"{i.get('device')} ({i.get('device_name')})"
                                                                   for i in runs})),
                     "threads": ", ".join(sorted({str(i.get("threads")) for i in runs})),
                     "versions": "; ".join(versions), "commits": record_commit(record)})
    return rows


ENVIRONMENT_COLUMNS = [("chapter", "chapter", None), ("device", "devices", None), ("threads", "threads", None),
                       ("versions", "versions", None), ("commits", "commits", None)]


def _shown_path(folder: Path) -> str:
    """``folder`` relative to the repository when inside it (a dry run's folder may be elsewhere)."""
    return str(folder.relative_to(REPO_ROOT)) if folder.is_relative_to(REPO_ROOT) else str(folder)


def full_run_status() -> list[dict]:
    """Per chapter: whether a ``full``-profile record exists, and where."""
    rows = []
    for item in CHAPTERS:
        folder = next((f for f in chapter_record_dirs(item.key, "full") if (f / "metrics.json").is_file()), None)
        rows.append({"chapter": item.key, "status": "recorded" if folder else "not run",
                     "where": _shown_path(folder) if folder else "–"})
    return rows


# --------------------------------------------------------------------------- the comparison run

# The comparison's settings: SIMS's profile gives the size, the layouts and the memory.
COMPARISON_PROFILES = {
    # eval_scenes: held-out layouts scored; timing_layouts: layouts timed per method;
    # figure_layouts: the layouts drawn side by side.
    "smoke": {"eval_scenes": 12, "timing_layouts": 2, "figure_layouts": 2},
    "book": {"eval_scenes": 400, "timing_layouts": 16, "figure_layouts": 4},
    "full": {"eval_scenes": 1000, "timing_layouts": 32, "figure_layouts": 4},
}
METHODS = ("crn", "pix2pix", "sims", "analogy_sft")
ANALOGY_SOURCE = "street5"   # the analogy generator whose source scene shares the layouts' size


@dataclass
class Method:
    """One layout-to-image method as the comparison runs it."""
    sample: object          # layout (N, C, H, W) → (N, K, 3, H, W) in [0, 1]
    parameters: int
    chapter: str            # the chapter whose record holds its training
    trained: tuple          # the networks trained for it, as named in that record
    note: str = ""
    training_part: str | None = None   # a single-image chapter's entry for this source only
    reset: object = None    # called before timing (SIMS: empty the canvas cache)
    memory_build_seconds: float | None = None   # SIMS: building the segment memory, once


def _analogy_method(profile: str, device) -> tuple[Method, tuple]:
    """The analogy chapter's SFT generator of one street source, given every layout as its target
    P′ and its own source (I, P): the only way a single-image model meets foreign layouts."""
    from .networks import count_parameters, one_hot_layout
    from .papers import analogy_runs

    path = REPO_ROOT / "checkpoints" / f"analogy_{profile}_{ANALOGY_SOURCE}.pt"
    generators, settings = analogy_runs.load_models(path, device=device)
    generator = generators["sft"]
    source = next(s for s in analogy_runs.source_images(settings) if s["name"] == ANALOGY_SOURCE)
    image = source["image"].float()[None].to(device)
    source_layout = one_hot_layout(source["labels"][None], source["num_classes"]).to(device)

    def sample(layout):
        with torch.no_grad():
            count = len(layout)
            output, _ = generator(image.expand(count, -1, -1, -1), source_layout.expand(count, -1, -1, -1), layout)
        return output[:, None]

    method = Method(sample, count_parameters(generator), "analogy", ("sft",),
                    f"single-image model of the source scene {ANALOGY_SOURCE}: every held-out layout is a large "
                    "edit of that one scene", training_part=ANALOGY_SOURCE)
    return method, tuple(settings["street_size"])


def _methods(profile: str, settings: dict, device, seed: int) -> tuple[dict[str, Method], dict]:
    """The methods whose exports exist at the comparison's size, and notes on the others."""
    from .networks import count_parameters
    from .papers import crn_runs, sims_runs

    methods, skipped = {}, {}
    for name in ("crn", "pix2pix"):
        _, generator, crn_settings = crn_runs.load_generator(crn_runs.exported_path(name, profile), device=device)
        if tuple(crn_settings["size"]) != tuple(settings["size"]):
            skipped[name] = f"the export is {tuple(crn_settings['size'])}, the layouts {tuple(settings['size'])}"
            continue
        methods[name] = Method(crn_runs.sampler(name, generator, crn_settings["samples"]),
                               count_parameters(generator), "crn", (name,))
    network, transformer, orderer, sims_settings = sims_runs.load_models(sims_runs.exported_path(profile), device)
    began = time.perf_counter()
    memory = sims_runs.training_memory(sims_settings, seed=seed)
    memory_seconds = time.perf_counter() - began
    cache = sims_runs.CanvasCache(memory, transformer, orderer, sims_settings["paste_margin"], seed=seed)
    methods["sims"] = Method(sims_runs.sims_sampler("sims", network, cache, device),
                             sum(count_parameters(m) for m in (network, transformer, orderer)), "sims",
                             ("sims", "transformer", "ordering"),
                             f"synthesis, transformation and ordering networks, plus a memory of {len(memory)} "
                             f"segments from {sims_settings['memory_scenes']} training scenes",
                             reset=lambda: (cache.store.clear(), cache.searches.clear()),
                             memory_build_seconds=memory_seconds)
    analogy, size = _analogy_method(profile, device)
    if size == tuple(settings["size"]):
        methods["analogy_sft"] = analogy
    else:
        skipped["analogy_sft"] = f"the source scene is {size}, the layouts {tuple(settings['size'])}"
    return methods, skipped


def _training_minutes(records: dict, method: Method) -> dict:
    segments = []
    for name in method.trained:
        entry = (records[method.chapter].get("training") or {}).get(name)
        if method.training_part is not None and isinstance(entry, dict):
            entry = entry.get(method.training_part)
        _training_segments(entry, segments)
    return _minutes(list({_segment_key(s): s for s in segments}.values()))


def _time_per_image(method: Method, labels: torch.Tensor, device) -> dict:
    """Seconds per layout and per output image on ``labels``, after one warm-up call
    (then ``method.reset``, so SIMS retrieves and builds every timed canvas afresh)."""
    import os

    from .synthesis import generate

    generate(method.sample, labels[:1], device=device)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if method.reset is not None:
        method.reset()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    began = time.perf_counter()
    outputs = generate(method.sample, labels, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - began
    return {"seconds_per_layout": seconds / len(labels), "seconds_per_image": seconds / (len(labels) * outputs.shape[1]),
            "timed_layouts": len(labels), "timing_threads": torch.get_num_threads(),
            # the 1-minute load average before and after: above the thread count, other work shared the CPU
            "timing_load_average": None if load_before is None else [round(load_before, 2),
                                                                    round(os.getloadavg()[0], 2)]}


def _record_stamps(records: dict) -> dict:
    """What identifies each chapter record the comparison read (its merge time and models)."""
    return {key: {"finished_at": (record.get("provenance") or {}).get("finished_at"),
                  "models": (record.get("provenance") or {}).get("models")} for key, record in records.items()}


SECOND_JUDGE_KEYS = ("fcn_miou", "fcn_pixel_accuracy", "fcn_miou_best_output", "frechet_distance")


def _second_judge_scores(scores: dict) -> dict:
    return {key: scores[key] for key in SECOND_JUDGE_KEYS if key in scores}


def compare_layout_to_image(profile: str = "book", device="cpu", seed: int = 0, out_dir=None,
                            methods=METHODS) -> dict:
    """Score every layout-to-image method on the same held-out layouts; write the record.

    For each method: the scores of :func:`labkit.synthesis.evaluate_synthesis` on the
    first ``eval_scenes`` test layouts at the SIMS profile's size (FCN mIoU and pixel
    accuracy over all K outputs and for the best output slot, Fréchet distance on
    judge features, diversity among the K outputs), its parameter count, the
    training time its chapter recorded, and the time to synthesise the last
    ``timing_layouts`` of those layouts on this device (SIMS: retrieval,
    transformation, ordering and canvas included; the memory is built
    beforehand and its build time recorded). When the second judge
    (:data:`labkit.judge.SECOND_JUDGE`, trained on other scenes and never used as a
    training feature) is committed, the same outputs are scored by it as well
    (``second_judge``: FCN mIoU and pixel accuracy, best-slot mIoU, Fréchet distance on
    its features), the real scenes too. Also draws the first
    ``figure_layouts`` layouts across methods.
    Writes ``<out_dir>/comparison.json`` and ``<out_dir>/comparison.png``.
    """
    from .data import render_batch
    from .judge import SECOND_JUDGE, load_judge
    from .metrics import _judge
    from .papers import sims
    from .plotting import write_png
    from .synthesis import generate, real_scene_scores, score_synthesis

    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; expected some of {list(METHODS)}")
    settings = {**select_profile(COMPARISON_PROFILES, profile),
                "size": tuple(select_profile(sims.PROFILES, profile)["size"])}
    device = torch.device(device)
    began = time.perf_counter()
    out_dir = Path(out_dir) if out_dir else record_dir_of_comparison(profile)
    records = {key: read_chapter_record(key, profile) for key in ("crn", "sims", "analogy")}
    judge = _judge(None, device)
    second_judge = load_judge(SECOND_JUDGE["path"], device) if SECOND_JUDGE["path"].is_file() else None
    available, skipped = _methods(profile, settings, device, seed)
    real_images, labels = render_batch(settings["size"], settings["eval_scenes"], split="test", seed=seed)

    metrics, figure_rows = {}, {}
    for name in methods:
        if name not in available:
            metrics[name] = {"applies": False, "note": skipped.get(name, "not available")}
            continue
        method = available[name]
        outputs = generate(method.sample, labels, device=device)
        scores = score_synthesis(outputs, labels, real_images, judge=judge, device=device)
        scores.pop("per_class_iou", None)
        if second_judge is not None:
            scores["second_judge"] = _second_judge_scores(
                score_synthesis(outputs, labels, real_images, judge=second_judge, device=device))
        del outputs
        metrics[name] = {**scores, "parameters": method.parameters, "applies": True, "note": method.note,
                         "trained_in_chapter": method.chapter, "training": _training_minutes(records, method),
                         **_time_per_image(method, labels[-settings["timing_layouts"]:], device)}
        if method.memory_build_seconds is not None:
            metrics[name]["memory_build_seconds"] = method.memory_build_seconds
        figure_rows[name] = generate(method.sample, labels[:settings["figure_layouts"]], device=device)[
            :, scores["best_output"]]
    reference = real_scene_scores(settings["size"], settings["eval_scenes"], judge=judge, seed=seed)
    if second_judge is not None:
        reference["second_judge"] = _second_judge_scores(
            real_scene_scores(settings["size"], settings["eval_scenes"], judge=second_judge, seed=seed))
    real, _ = render_batch(settings["size"], settings["figure_layouts"], split="test", seed=seed)
    write_png(comparison_figure(labels[:settings["figure_layouts"]], figure_rows, real),
              out_dir / "comparison.png", dpi=100, close=True)
    result = {"settings": {**settings, "size": list(settings["size"]), "seed": seed, "methods": list(methods)},
              "metrics": metrics, "reference": {"real_scenes": reference}, "figure": "comparison.png",
              "second_judge": None if second_judge is None else {
                  "source": second_judge.source, "widths": list(second_judge.widths),
                  "scores": second_judge.scores},
              "chapter_records": _record_stamps(records)}
    write_metrics(out_dir / "comparison.json", result,
                  provenance(profile, seed, device, wall_time_s=time.perf_counter() - began,
                             command=f"python -m labkit.report --profile {profile}"))
    return read_json(out_dir / "comparison.json")


def comparison_figure(labels: torch.Tensor, outputs: dict[str, torch.Tensor], real: torch.Tensor):
    """Rows: layout, each method's image (its best output slot), the real scene; columns: layouts."""
    from .bench import flat_label_images
    from .plotting import show_grid

    rows = [list(flat_label_images(labels))] + [list(images) for images in outputs.values()] + [list(real)]
    names = ["layout", *outputs, "real"]
    return show_grid(rows, row_labels=names, scale=1.9)


def record_dir_of_comparison(profile: str = "book") -> Path:
    """``reports/<profile>/report/``: where ``python -m labkit.report`` records the comparison
    (committed for book). Not moved by ``labkit reproduce``'s run folder, so the report notebook
    finds it from any run. A dry run of the full profile looks in its own folder
    (:func:`labkit.train.dry_run_dir`), never at a real full comparison."""
    if profile not in COMPARISON_PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(COMPARISON_PROFILES)}")
    if profile == "full" and dry_run_requested():
        return dry_run_dir(REPORT)
    return REPO_ROOT / "reports" / profile / REPORT


def read_comparison(profile: str = "book", out_dir=None) -> dict:
    """The comparison record; refused when missing, or when a chapter record it read has been
    merged again since (its numbers would then describe other runs)."""
    path = (Path(out_dir) if out_dir else record_dir_of_comparison(profile)) / "comparison.json"
    rerun = f"python -m labkit.report --profile {profile}"
    if not path.is_file():
        raise FileNotFoundError(f"no comparison at {path}; run `{rerun}`")
    record = read_json(path)
    stamps = record["metrics"].get("chapter_records", {})
    current = _record_stamps({key: read_chapter_record(key, profile) for key in stamps})
    changed = sorted(key for key in stamps if stamps[key] != current[key])
    if changed:
        raise ValueError(f"{path} was computed from older records of {changed}; run `{rerun}`")
    return record


TIMING_KEYS = ("seconds_per_layout", "seconds_per_image", "timed_layouts", "timing_threads", "timing_load_average")


def retime_comparison(profile: str = "book", device="cpu", seed: int = 0, out_dir=None) -> dict:
    """Measure the time per image of every method again, keeping the recorded scores.

    Timing is the one part of the comparison that depends on what else the machine is
    doing; this reruns only that part (the SIMS memory is rebuilt first, its build time
    recorded again) and writes the new timings, with their own provenance under
    ``timing_provenance``, into ``<out_dir>/comparison.json``.
    """
    from .checkpoints import write_json
    from .data import render_batch
    from .papers import sims

    device = torch.device(device)
    folder = Path(out_dir) if out_dir else record_dir_of_comparison(profile)
    record = read_comparison(profile, out_dir=folder)
    settings = {**select_profile(COMPARISON_PROFILES, profile),
                "size": tuple(select_profile(sims.PROFILES, profile)["size"])}
    began = time.perf_counter()
    available, _ = _methods(profile, settings, device, seed)
    _, labels = render_batch(settings["size"], settings["eval_scenes"], split="test", seed=seed)
    for name, scores in record["metrics"]["metrics"].items():
        if scores.get("applies") and name in available:
            method = available[name]
            scores.update(_time_per_image(method, labels[-settings["timing_layouts"]:], device))
            if method.memory_build_seconds is not None:
                scores["memory_build_seconds"] = method.memory_build_seconds
    record["timing_provenance"] = provenance(profile, seed, device, wall_time_s=time.perf_counter() - began,
                                             command=f"python -m labkit.report --profile {profile} --timing-only")
    write_json(folder / "comparison.json", record)
    return record


def main(argv=None) -> int:
    import argparse

    from .train import setup

    parser = argparse.ArgumentParser(prog="python -m labkit.report", description=compare_layout_to_image.__doc__
                                     .splitlines()[0])
    parser.add_argument("--profile", default="book", choices=sorted(COMPARISON_PROFILES))
    parser.add_argument("--device", default="auto", type=argparse_device)
    parser.add_argument("--threads", type=argparse_positive_int, default=2)
    parser.add_argument("--seed", type=argparse_seed, default=0)
    parser.add_argument("--out-dir", default=None, help="default: reports/<profile>/report/")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--timing-only", action="store_true",
                        help="measure the time per image again (on a quiet machine), keeping the recorded scores")
    args = parser.parse_args(argv)
    device = setup(seed=args.seed, threads=args.threads, device=args.device)
    if args.timing_only:
        record = retime_comparison(args.profile, device, args.seed, args.out_dir)
    else:
        record = compare_layout_to_image(args.profile, device, args.seed, args.out_dir, args.methods)
    for name, scores in record["metrics"]["metrics"].items():
        if scores.get("applies"):
            print(f"{name:<12} FCN-mIoU {scores['fcn_miou']:.3f} (best output {scores['fcn_miou_best_output']:.3f})  "
                  f"Fréchet {scores['frechet_distance']:.3f}  {scores['seconds_per_image'] * 1000:.1f} ms/image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
