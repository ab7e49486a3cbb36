"""SIMS retrieval time against the size of the segment memory.

    python benchmarks/sims_retrieval.py                                   # book settings, CPU (the chapter's device)
    python benchmarks/sims_retrieval.py --device cuda                     # on a GPU: descriptors on the device
    python benchmarks/sims_retrieval.py --profile full --device cuda --sizes 100 1000 10000 100000
    python benchmarks/sims_retrieval.py --profile smoke --sizes 20 50 --queries 2 --out /tmp/x.json   # a check

What is timed is the search half of ``labkit.papers.sims.build_canvas``: for
every connected component of a query layout, ``sims.retrieve`` scores all
same-class segments of the memory at once (mask IoU + context IoU on the
profile's retrieval grid, ``--score mask+context`` as the chapter; ``mask`` is
the official code's) and keeps the top ``top_k``. One **query** is one test
layout with all its components; the time per component is reported too. The
query descriptors (``sims.query_layout``: connected components and grid
descriptors) do not depend on the memory and are timed apart, once.

The memory is the chapter's own: ``SegmentMemory.from_scenes`` over as many
StreetScenes training scenes as the largest size needs, all real segments (no
copies; about 12 per scene at 64×128, so 10,000 segments take ~800 scenes and
some tens of seconds to build on a 2-core CPU, not timed). Each size is the
first N segments of it (``SegmentMemory.truncated``), so the memories are
nested and their segments come from whole scenes. With ``--device cuda`` the
memory's descriptors (and the queries') are copied to the GPU first.

For each size, ``--repeats`` passes over the whole query batch are timed
(``torch.cuda.synchronize`` after each on CUDA) and the median pass is
reported, as ms per query layout and ms per component. The top-k of the first
components is checked against ``sims.retrieve_loop`` at every size.

Threads: one by default. A query's work is small (a gather over the
candidates' grid cells), and with two intra-op threads on a 2-core CPU whose
other core is busy, each op waits for the busy core: in a check on this
course's machine under another process' load, 1,000 segments took ~0.6 ms per
component with one thread and ~50 ms with two.

The curve goes to ``reports/benchmarks/sims_retrieval_<device type>.json``
(atomically via ``labkit.train.write_metrics``, with provenance and the load
average before and after), and a table is printed.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:   # run as `python benchmarks/sims_retrieval.py` from anywhere
    sys.path.insert(0, str(ROOT))

from labkit.data import render_batch  # noqa: E402
from labkit.papers.sims import (PROFILES, RETRIEVAL_SCORES, SegmentMemory, query_layout, retrieve,  # noqa: E402
                                retrieve_loop)
from labkit.train import (REPO_ROOT, argparse_device, argparse_positive_int, provenance, select_profile,  # noqa: E402
                          setup, write_metrics)

DEFAULT_SIZES = (100, 300, 1_000, 3_000, 10_000)
DEFAULT_QUERIES = 16
CHECKED_COMPONENTS = 3   # per size, compared with the loop reference
SEED = 0
QUERY_SEED = 0           # test split: never in the (training) memory
_DESCRIPTORS = ("class_ids", "scene_ids", "component_ids", "boxes", "areas", "grid_masks", "grid_context",
                "lab_stats")


def check_sizes(sizes) -> list[int]:
    sizes = [int(s) for s in sizes]
    if not sizes or any(s < 1 for s in sizes):
        raise ValueError(f"memory sizes must be ≥ 1 segment, got {sizes}")
    return sorted(set(sizes))


def build_bank(settings: dict, segments: int, seed: int = SEED) -> tuple[SegmentMemory, dict]:
    """A memory of at least ``segments`` real segments from the first training scenes."""
    began = time.perf_counter()
    probe = SegmentMemory.from_scenes(settings["size"], 16, settings["grid"], seed=seed)
    per_scene = max(1.0, len(probe) / 16)
    scenes = max(16, int(np.ceil(segments / per_scene * 1.05)) + 4)
    bank = probe if scenes == 16 and len(probe) >= segments else None
    while bank is None or len(bank) < segments:
        bank = SegmentMemory.from_scenes(settings["size"], scenes, settings["grid"], seed=seed)
        scenes = int(scenes * 1.1) + 8
    return bank, {"scenes": len(bank.labels), "segments": len(bank), "segments_per_scene": round(len(bank) / len(bank.labels), 2),
                  "real_segments_only": True, "build_seconds": round(time.perf_counter() - began, 1),
                  "source": "SegmentMemory.from_scenes, StreetScenes train split"}


def on_device(memory: SegmentMemory, device) -> SegmentMemory:
    """The same memory with its retrieval descriptors on ``device`` (images stay on the CPU)."""
    device = torch.device(device)
    if device.type == "cpu":
        return memory
    return SegmentMemory(size=memory.size, grid=memory.grid, min_area=memory.min_area, images=memory.images,
                         labels=memory.labels, components=memory.components, source=memory.source,
                         **{k: getattr(memory, k).to(device) for k in _DESCRIPTORS})


def query_batch(settings: dict, memory: SegmentMemory, layouts: int) -> tuple[list, float]:
    """(the components of ``layouts`` test layouts as (class, grid mask, grid context) per layout,
    ms per layout to compute their descriptors)."""
    _, labels = render_batch(settings["size"], layouts, split="test", seed=QUERY_SEED)
    began = time.perf_counter()
    queries = [query_layout(label, memory) for label in labels]
    descriptor_ms = 1000 * (time.perf_counter() - began) / layouts
    return [[(int(q.class_ids[k]), q.grid_masks[k], q.grid_context[k]) for k in range(len(q))] for q in queries], \
        descriptor_ms


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_retrieval(memory: SegmentMemory, queries: list, top_k: int, score: str, repeats: int, device) -> dict:
    """Median of ``repeats`` timed passes of every component of every query layout."""
    device = torch.device(device)
    placed = [[(c, m.to(device), x.to(device)) for c, m, x in layout] for layout in queries]
    components = sum(len(layout) for layout in placed)
    for layout in placed[:1]:   # one untimed pass over a layout: allocations, lazy initialisation
        for class_id, mask, context in layout:
            retrieve(memory, class_id, mask, context, k=top_k, score=score)
    seconds = []
    for _ in range(repeats):
        _synchronize(device)
        began = time.perf_counter()
        for layout in placed:
            for class_id, mask, context in layout:
                retrieve(memory, class_id, mask, context, k=top_k, score=score)
        _synchronize(device)
        seconds.append(time.perf_counter() - began)
    median = statistics.median(seconds)
    candidates = [len(memory.by_class[c]) for layout in placed for c, _, _ in layout]
    return {"ms_per_query": 1000 * median / len(placed), "ms_per_component": 1000 * median / max(components, 1),
            "pass_ms": [round(1000 * s, 3) for s in seconds], "mean_candidates_per_component": float(np.mean(candidates))
            if candidates else 0.0}


def matches_loop(memory: SegmentMemory, cpu_memory: SegmentMemory, queries: list, top_k: int, score: str,
                 device) -> bool:
    """Whether the first components' top-k equals the per-candidate loop's (on the CPU memory)."""
    checked = [q for layout in queries for q in layout][:CHECKED_COMPONENTS]
    for class_id, mask, context in checked:
        found, values = retrieve(memory, class_id, mask.to(device), context.to(device), k=top_k, score=score)
        reference, reference_values = retrieve_loop(cpu_memory, class_id, mask, context, k=top_k, score=score)
        if found.cpu().tolist() != reference or not np.allclose(values.cpu().numpy(), reference_values):
            return False
    return True


def retrieval_curve(settings: dict, sizes=DEFAULT_SIZES, queries: int = DEFAULT_QUERIES, repeats: int = 5,
                    device="cpu", score: str = "mask+context", top_k: int | None = None, progress: bool = True) -> dict:
    """Time per query against the memory size: the metrics of the result file."""
    if score not in RETRIEVAL_SCORES:
        raise ValueError(f"unknown retrieval score {score!r}; expected one of {RETRIEVAL_SCORES}")
    if queries < 1 or repeats < 1:
        raise ValueError(f"queries and repeats must be ≥ 1, got {queries} and {repeats}")
    sizes, device = check_sizes(sizes), torch.device(device)
    top_k = int(top_k or settings["top_k"])
    bank, bank_info = build_bank(settings, max(sizes))
    batch, descriptor_ms = query_batch(settings, bank, queries)
    if progress:
        print(f"memory: {bank_info['segments']:,} real segments from {bank_info['scenes']:,} scenes "
              f"({bank_info['build_seconds']} s to build); {queries} query layouts, "
              f"{sum(map(len, batch))} components", flush=True)
    points = []
    for size in sizes:
        cpu_memory = bank.truncated(size)
        memory = on_device(cpu_memory, device)
        point = {"memory_segments": len(memory), **time_retrieval(memory, batch, top_k, score, repeats, device),
                 "matches_loop_reference": matches_loop(memory, cpu_memory, batch, top_k, score, device)}
        points.append(point)
        if progress:
            print(f"  {size:>7,} segments: {point['ms_per_query']:8.3f} ms per query, "
                  f"{point['ms_per_component']:.4f} ms per component", flush=True)
    return {"profile": settings.get("profile"), "device_type": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "score": score, "top_k": top_k, "grid": list(settings["grid"]), "size": list(settings["size"]),
            "query_layouts": queries, "query_components": sum(map(len, batch)), "repeats": repeats,
            "query": "one test layout: every connected component of it retrieved (sims.retrieve)",
            "query_descriptor_ms_per_layout": round(descriptor_ms, 3), "bank": bank_info, "points": points}


def table(metrics: dict) -> str:
    lines = [f"{'segments':>9} {'ms/query':>10} {'ms/component':>13} {'candidates':>11} {'= loop':>7}"]
    for p in metrics["points"]:
        lines.append(f"{p['memory_segments']:>9,} {p['ms_per_query']:>10.3f} {p['ms_per_component']:>13.4f} "
                     f"{p['mean_candidates_per_component']:>11.0f} {str(p['matches_loop_reference']):>7}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="book", help="settings of labkit.papers.sims.PROFILES (default book)")
    parser.add_argument("--device", default="cpu", type=argparse_device, help="cpu (default, as the chapter), cuda or cuda:N")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES), help="memory sizes, segments")
    parser.add_argument("--queries", type=int, default=DEFAULT_QUERIES, help="query layouts (test scenes)")
    parser.add_argument("--repeats", type=int, default=5, help="timed passes per size; the median is reported")
    parser.add_argument("--score", default="mask+context", choices=RETRIEVAL_SCORES)
    parser.add_argument("--top-k", type=int, default=None, help="default: the profile's top_k")
    parser.add_argument("--threads", type=argparse_positive_int, default=1,
                        help="CPU threads (torch.set_num_threads; default 1, see the module docstring)")
    parser.add_argument("--note", default=None, help="free text kept with the result (e.g. 'shared CPU')")
    parser.add_argument("--out", default=None, help="default: reports/benchmarks/sims_retrieval_<device type>.json")
    args = parser.parse_args(argv)
    try:
        settings = select_profile(PROFILES, args.profile)
        check_sizes(args.sizes)
    except ValueError as error:
        parser.error(str(error))
    device = setup(seed=SEED, threads=args.threads, device=args.device)
    began, load_before = time.perf_counter(), _load_average()
    metrics = retrieval_curve(settings, args.sizes, args.queries, args.repeats, device, args.score, args.top_k)
    metrics.update(threads=torch.get_num_threads(), load_average_before=load_before,
                   load_average_after=_load_average(), note=args.note)
    out = Path(args.out) if args.out else REPO_ROOT / "reports" / "benchmarks" / f"sims_retrieval_{device.type}.json"
    path = write_metrics(out, metrics, provenance(args.profile, SEED, device, wall_time_s=time.perf_counter() - began,
                                                  benchmark="sims_retrieval",
                                                  argv=list(sys.argv[1:] if argv is None else argv)))
    print(f"SIMS retrieval ({args.score}, top {metrics['top_k']}) on {device}, median of {args.repeats} passes over "
          f"{args.queries} layouts ({metrics['query_components']} components); load average {load_before} → "
          f"{metrics['load_average_after']}")
    print(table(metrics))
    print("wrote", path)
    return 0


def _load_average():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


if __name__ == "__main__":
    raise SystemExit(main())
