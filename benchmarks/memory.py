"""How much accelerator memory each chapter's full-profile training step needs, measured on a CPU.

    python benchmarks/memory.py                      # every chapter → reports/benchmarks/memory_full_cpu.json
    python benchmarks/memory.py --chapter crn --profile smoke --out /tmp/m.json   # a quick check
    python benchmarks/memory.py --table              # print the README's table from the record

The step is the throughput benchmark's (``benchmarks/throughput.py``): one training
iteration of each chapter's main model, built from the chapter's own classes and
``PROFILES["full"]`` settings, at the full image size and batch. Each chapter is
measured twice, as ``labkit.train.fit`` trains: in float32, and under bf16 autocast
with channels_last networks (the CUDA path).

**What is measured.** After one warm-up step (so Adam's state exists, as in every
later step), the memory held between steps is counted from the live tensors:

- *parameters*: every network's weights and buffers, trained and frozen (the
  feature networks, critics and discriminators included);
- *optimizer state*: Adam's two moments (and step counters) of every optimizer.

Then a second step runs under ``torch.profiler`` with memory profiling, and its
memory timeline (``export_memory_timeline``, which sorts every allocation into
activations, gradients, temporaries, …) gives the **peak of the step**: the most
memory allocated at once during the forward pass, backward pass and optimizer step,
above the timeline's start (which holds the pre-existing tensors the step touches,
such as the optimizer's state, already counted above). *Total* = parameters +
optimizer state + peak of the step.

**What it is not.** A CUDA run adds the CUDA context, cuDNN/cuBLAS workspaces and
the caching allocator's fragmentation, and holds its data batches on the device:
the README's "smallest card" column allows :data:`HEADROOM` × the total plus
:data:`CUDA_CONTEXT_GIB`, an allowance, not a measurement. ``torch.compile`` changes the
activations (fusion usually lowers them). Where a GPU exists, ``--device cuda``
also records ``torch.cuda.max_memory_allocated`` of the same two steps, the
number that includes all of this except the context. Other networks of a chapter
(evaluation segmenters, ablations) train one at a time and are smaller than the
main model.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:   # run as `python benchmarks/memory.py` from anywhere
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import throughput  # noqa: E402
from labkit.checkpoints import read_json  # noqa: E402
from labkit.train import PROFILE_NAMES, REPO_ROOT, argparse_device, provenance, setup, write_metrics  # noqa: E402

MODES = ("fp32_eager", "bf16_channels_last")
MIB = 2 ** 20
BENCHMARKS = REPO_ROOT / "reports" / "benchmarks"
CARD_SIZES_GB = (16, 24, 40, 80)
HEADROOM, CUDA_CONTEXT_GIB = 1.3, 0.5
"""A card fits when it holds HEADROOM × the bf16 + channels_last total (workspaces, fragmentation,
the device's data batches) plus the CUDA context."""


def smallest_card(total_mib: float) -> str:
    """The smallest common card size (GB) that fits a step of ``total_mib`` (see :data:`HEADROOM`)."""
    needed_gb = (HEADROOM * total_mib / 1024 + CUDA_CONTEXT_GIB) * 2 ** 30 / 1e9
    return next((f"{size} GB" for size in CARD_SIZES_GB if size >= needed_gb), f"more than {CARD_SIZES_GB[-1]} GB")


def _storage_key(tensor: torch.Tensor):
    storage = tensor.untyped_storage()
    return (str(tensor.device), storage.data_ptr(), storage.nbytes())


def held_between_steps() -> dict:
    """Bytes of every live network's parameters and buffers, and of every live optimizer's state,
    each storage counted once (found through the garbage collector: the workloads keep their
    frozen networks inside closures)."""
    seen, totals = set(), {"parameters": 0, "optimizer_state": 0}

    def add(tensor, kind):
        if isinstance(tensor, torch.Tensor) and tensor.numel():
            key = _storage_key(tensor)
            if key not in seen:
                seen.add(key)
                totals[kind] += key[2]

    for obj in gc.get_objects():
        if isinstance(obj, torch.nn.Module):
            for tensor in list(obj.parameters(recurse=False)) + list(obj.buffers(recurse=False)):
                add(tensor, "parameters")
        elif isinstance(obj, torch.optim.Optimizer):
            for state in obj.state.values():
                for value in state.values():
                    add(value, "optimizer_state")
    return totals


def step_peak(workload, mode: str, device) -> dict:
    """Profile one training step; the memory timeline's peak (bytes) and its categories at the peak."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler import _memory_profiler

    bf16 = throughput.MODES[mode][0]
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities, profile_memory=True, record_shapes=True, with_stack=True) as prof:
        throughput.run_step(workload, 1, device, bf16)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "timeline.json"
        device_name = "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"
        prof.export_memory_timeline(str(path), device=device_name)
        _, sizes = json.loads(path.read_text())
    names = {index: (category.name.lower() if category is not None else "unknown")
             for category, index in _memory_profiler._CATEGORY_TO_INDEX.items()}
    if not sizes:
        return {"start": 0, "peak": 0, "at_peak": {}}
    totals = [sum(row) for row in sizes]
    at = max(range(len(totals)), key=totals.__getitem__)
    # the timeline starts with the tensors the step touches that existed before it (the optimizer's
    # state, the batch): held between steps, so counted there, not again here
    categories = {}
    for index, (value, before) in enumerate(zip(sizes[at], sizes[0])):
        name = names.get(index, "unknown")
        categories[name] = categories.get(name, 0) + value - before
    return {"start": totals[0], "peak": totals[at] - totals[0], "at_peak": {k: v for k, v in categories.items() if v}}


def measure(chapter: str, settings: dict, mode: str, device) -> dict:
    """The memory record of ``chapter``'s step in ``mode`` (MiB)."""
    started = time.monotonic()
    workload = throughput.build_workload(chapter, settings, device, mode)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    throughput.run_step(workload, 0, device, throughput.MODES[mode][0])   # Adam's state now exists
    workload.optimizer.zero_grad(set_to_none=True)
    held = held_between_steps()
    peak = step_peak(workload, mode, device)
    record = {
        "parameters_mib": round(held["parameters"] / MIB, 1),
        "optimizer_state_mib": round(held["optimizer_state"] / MIB, 1),
        "step_peak_mib": round(peak["peak"] / MIB, 1),
        "step_peak_categories_mib": {k: round(v / MIB, 1) for k, v in peak["at_peak"].items()},
        "timeline_start_mib": round(peak["start"] / MIB, 1),
        "total_mib": round((held["parameters"] + held["optimizer_state"] + peak["peak"]) / MIB, 1),
        "seconds": round(time.monotonic() - started, 1),
    }
    if device.type == "cuda":
        record["cuda_max_memory_allocated_mib"] = round(torch.cuda.max_memory_allocated(device) / MIB, 1)
    del workload
    gc.collect()
    return record


def table(record: dict) -> str:
    """The README's table from a memory record."""
    chapters = record["metrics"]["chapters"]
    lines = ["| chapter | batch × image | parameters | Adam state | step peak, fp32 | total, fp32 | "
             "step peak, bf16 + channels_last | total, bf16 + channels_last | smallest card |",
             "|---|---|---|---|---|---|---|---|---|"]

    def gib(mib):
        return f"{mib / 1024:.2f} GiB" if mib >= 1024 else f"{mib:.0f} MiB"

    for chapter in sorted(chapters, key=lambda c: throughput.CHAPTERS.index(c) if c in throughput.CHAPTERS else 99):
        entry = chapters[chapter]
        fp32, bf16 = entry["modes"]["fp32_eager"], entry["modes"]["bf16_channels_last"]
        lines.append(f"| {chapter} | {entry['batch']} | {gib(fp32['parameters_mib'])} | "
                     f"{gib(fp32['optimizer_state_mib'])} | {gib(fp32['step_peak_mib'])} | {gib(fp32['total_mib'])} | "
                     f"{gib(bf16['step_peak_mib'])} | {gib(bf16['total_mib'])} | {smallest_card(bf16['total_mib'])} |")
    return "\n".join(lines)


README_START, README_END = "<!-- memory:start -->", "<!-- memory:end -->"


def readme_block(record: dict) -> str:
    """The README's memory block (between its markers) from a memory record."""
    info = record["provenance"]
    return (f"{README_START}\n{table(record)}\n\nMeasured by `benchmarks/memory.py` on {info['device']} "
            f"({info.get('cpu_model') or info.get('device_name')}), commit `{info['commit'][:7]}`, "
            f"{record['metrics']['profile']} profile.\n{README_END}")


def write_readme(record: dict, readme: Path = REPO_ROOT / "README.md") -> None:
    """Replace the block between the README's memory markers."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise ValueError(f"{readme} has no {README_START} … {README_END} block")
    head, rest = text.split(README_START, 1)
    _, tail = rest.split(README_END, 1)
    readme.write_text(head + readme_block(record) + tail)


def batch_description(chapter: str, settings: dict) -> str:
    size = settings.get("size") or settings.get("street_size")
    if chapter == "analogy":
        return f"1 × {size[0]}×{size[1]} (street), {settings['photo_size'][0]}×{settings['photo_size'][1]} (photos)"
    return f"{settings['batch_size']} × {size[0]}×{size[1]}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/memory.py", description=__doc__.split("\n")[0])
    parser.add_argument("--chapter", default="all", help=f"one of {list(throughput.CHAPTERS)}, or all (default)")
    parser.add_argument("--profile", default="full", choices=PROFILE_NAMES)
    parser.add_argument("--device", default="cpu", type=argparse_device)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None,
                        help="default: reports/benchmarks/memory_full_<device type>.json (full profile only)")
    parser.add_argument("--table", action="store_true", help="print the README table from --out and exit")
    parser.add_argument("--write-readme", action="store_true",
                        help="rewrite the README's memory block from --out and exit")
    args = parser.parse_args(argv)
    if args.out is None and args.profile != "full":
        parser.error("--out is required for a profile other than full")
    out = Path(args.out) if args.out else BENCHMARKS / f"memory_full_{torch.device(args.device).type}.json"
    if args.table or args.write_readme:
        record = read_json(out)
        if args.write_readme:
            write_readme(record)
        print(readme_block(record) if args.write_readme else table(record))
        return 0
    chapters = list(throughput.CHAPTERS) if args.chapter == "all" else [throughput.check_chapter(args.chapter)]
    device = setup(seed=0, threads=args.threads, device=args.device)
    results = read_json(out)["metrics"]["chapters"] if out.is_file() else {}
    for chapter in chapters:
        settings = throughput.chapter_settings(chapter, args.profile)
        entry = {"batch": batch_description(chapter, settings), "modes": {}}
        for mode in MODES:
            print(f"{chapter}: {mode} …", flush=True)
            entry["modes"][mode] = measure(chapter, settings, mode, device)
            print(f"  {entry['modes'][mode]}", flush=True)
        results[chapter] = entry
        ordered = {c: results[c] for c in throughput.CHAPTERS if c in results}
        write_metrics(out, {"profile": args.profile, "chapters": ordered, "method": __doc__.split("\n\n")[2:5]},
                      provenance(args.profile, 0, device, cpu_model=throughput.cpu_model()))
    print(table(read_json(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
