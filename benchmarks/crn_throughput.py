"""CRN training throughput: layouts and output images per second.

    python benchmarks/crn_throughput.py                        # book profile, the best device here
    python benchmarks/crn_throughput.py --device cuda --profile full
    python benchmarks/crn_throughput.py --profile smoke --steps 2 --warmup 1 --out /tmp/x.json   # a quick check

One training step is what ``labkit.papers.crn_runs`` does for the ``crn``
model: the cascade of the profile's size and widths with K = ``samples``
outputs, the per-class masked feature-matching loss on the judge's encoder
features (``load_feature_extractor("judge")``) with the diversity objective,
backward, and an Adam step. Batches are pre-rendered training scenes already
on the device, so data rendering is not timed. Each step yields
``batch_size`` layouts and ``batch_size × samples`` output images.

Modes:

- ``fp32_eager``: float32, contiguous tensors, no compilation (every device);
- ``bf16_channels_last`` (CUDA): bfloat16 autocast and channels_last memory,
  what ``labkit.train.fit`` does on CUDA;
- ``bf16_channels_last_compile`` (CUDA): the same under ``torch.compile``; if
  compilation fails the mode is skipped and its error recorded.

Each mode starts from the same initial weights, runs ``--warmup`` steps
(compilation happens there; at least 3 when compiled), then ``--repeats`` timed runs of ``--steps``
steps (``torch.cuda.synchronize`` around each on CUDA); the median run is
reported. The result goes to ``reports/benchmarks/crn_throughput_<device
type>.json`` (written atomically, with provenance) and a table with each
mode's ratio to fp32 eager is printed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from labkit.features import load_feature_extractor
from labkit.networks import count_parameters
from labkit.papers.crn import PROFILES, CascadedRefinementNetwork, CRNTrainer, FeatureMatchingLoss
from labkit.synthesis import scene_batch, training_scenes
from labkit.train import REPO_ROOT, provenance, select_profile, setup, write_metrics

MODES = {
    # name: (bf16 autocast, channels_last, torch.compile)
    "fp32_eager": (False, False, False),
    "bf16_channels_last": (True, True, False),
    "bf16_channels_last_compile": (True, True, True),
}
BASELINE = "fp32_eager"
DISTINCT_BATCHES = 4   # batches cycled through while timing
COMPILE_MIN_WARMUP = 3   # compiled mode: at least this many warm-up steps, so no compilation is timed
SEED = 0


def default_modes(device: torch.device) -> list[str]:
    return list(MODES) if device.type == "cuda" else [BASELINE]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(settings: dict, device: torch.device, channels_last: bool) -> list[dict]:
    """``DISTINCT_BATCHES`` training batches of the profile, on ``device``."""
    batch_size = settings["batch_size"]
    scenes = training_scenes(settings["size"], min(settings["train_scenes"], DISTINCT_BATCHES * batch_size),
                             seed=SEED)
    batches = []
    for step in range(DISTINCT_BATCHES):
        batch = scene_batch(scenes, step, batch_size, seed=SEED)
        batch = {"layout": batch["layout"].to(device), "image": batch["image"].to(device)}
        if channels_last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) for k, v in batch.items()}
        batches.append(batch)
    return batches


def time_mode(mode: str, settings: dict, device: torch.device, extractor, steps: int, warmup: int,
              repeats: int) -> dict:
    """Train a fresh CRN in ``mode``; returns its throughput record."""
    bf16, channels_last, compiled = MODES[mode]
    if compiled:   # step 0 and step 1 take different branches of the loss' calibration: both get compiled
        warmup = max(warmup, COMPILE_MIN_WARMUP)
    torch.manual_seed(SEED)
    generator = CascadedRefinementNetwork(settings["size"], settings["widths"], settings["samples"])
    # calibration of the layer weights stays on for the whole benchmark, as in the first half of a real
    # run (its end would change the loss' control flow, and force a recompilation, mid-measurement)
    total_steps = warmup + steps * repeats
    criterion = FeatureMatchingLoss(extractor, calibration_steps=max(settings["steps"] // 2, total_steps + 1))
    trainer = CRNTrainer(generator, criterion).to(device).train()
    if channels_last:
        trainer = trainer.to(memory_format=torch.channels_last)
        extractor.to(memory_format=torch.channels_last)   # not a submodule of the trainer
    optimizer = torch.optim.Adam(generator.parameters(), lr=settings["learning_rate"])
    batches = make_batches(settings, device, channels_last)
    forward = torch.compile(trainer) if compiled else trainer

    def train_step(step: int) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss, _ = forward(batches[step % len(batches)])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    began = time.perf_counter()
    for step in range(warmup):
        train_step(step)
    synchronize(device)
    warmup_seconds = time.perf_counter() - began

    seconds, step, loss = [], warmup, None
    for _ in range(repeats):
        synchronize(device)
        began = time.perf_counter()
        for _ in range(steps):
            loss = train_step(step)
            step += 1
        synchronize(device)
        seconds.append(time.perf_counter() - began)
    if loss is not None and not torch.isfinite(loss).all():
        raise FloatingPointError(f"{mode}: the loss is {float(loss)}")

    median = statistics.median(seconds)
    layouts_per_s = settings["batch_size"] * steps / median
    record = {
        "layouts_per_s": round(layouts_per_s, 3),
        "images_per_s": round(layouts_per_s * settings["samples"], 3),
        "step_ms": round(1000 * median / steps, 3),
        "repeat_seconds": [round(s, 4) for s in seconds],
        "warmup_steps": warmup, "warmup_seconds": round(warmup_seconds, 3),
        "bf16_autocast": bf16, "channels_last": channels_last, "compiled": compiled,
        "final_loss": float(loss) if loss is not None else None,
    }
    if device.type == "cuda":
        record["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
    return record


def run_benchmark(settings: dict, device: torch.device, modes, steps: int, warmup: int, repeats: int) -> dict:
    extractor = load_feature_extractor("judge", device=device, verbose=False)
    results = {}
    for mode in modes:
        if MODES[mode][0] and device.type != "cuda":
            print(f"note: {mode} runs bf16 autocast on {device.type}; the default there is fp32 eager only")
        try:
            results[mode] = time_mode(mode, settings, device, extractor, steps, warmup, repeats)
        except Exception as error:   # a failed compilation skips its mode only
            if not MODES[mode][2]:
                raise
            message = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
            print(f"{mode} skipped, torch.compile failed: {message}", file=sys.stderr)
            results[mode] = {"skipped": True, "error": message}
            torch._dynamo.reset()
        finally:
            extractor.to(memory_format=torch.contiguous_format)
    baseline = results.get(BASELINE, {}).get("layouts_per_s")
    for record in results.values():
        if "layouts_per_s" in record:
            record["ratio_to_fp32_eager"] = round(record["layouts_per_s"] / baseline, 3) if baseline else None
    return {"modes": results, "extractor": extractor.describe(),
            "parameters": count_parameters(CascadedRefinementNetwork(settings["size"], settings["widths"],
                                                                      settings["samples"]))}


def table(results: dict) -> str:
    lines = [f"{'mode':<28} {'layouts/s':>10} {'images/s':>10} {'ms/step':>9} {'× fp32 eager':>13}"]
    for mode, record in results.items():
        if "layouts_per_s" not in record:
            lines.append(f"{mode:<28} skipped: {record.get('error', '')}")
            continue
        ratio = record.get("ratio_to_fp32_eager")
        lines.append(f"{mode:<28} {record['layouts_per_s']:>10.2f} {record['images_per_s']:>10.2f} "
                     f"{record['step_ms']:>9.1f} {'—' if ratio is None else f'{ratio:.2f}×':>13}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--profile", default="book", choices=sorted(PROFILES),
                        help="settings of labkit.papers.crn.PROFILES (default: book)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here; at least 3 when compiled)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=None,
                        help="default: all on CUDA, fp32_eager elsewhere")
    parser.add_argument("--out", default=None,
                        help="default: reports/benchmarks/crn_throughput_<device type>.json")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        parser.error("--steps and --repeats must be ≥ 1, --warmup ≥ 0")

    device = setup(seed=SEED, threads=args.threads, device=args.device)
    settings = select_profile(PROFILES, args.profile)
    modes = args.modes or default_modes(device)
    began = time.perf_counter()
    result = run_benchmark(settings, device, modes, args.steps, args.warmup, args.repeats)
    metrics = {
        "profile": args.profile, "device_type": device.type,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()
                     if k in ("size", "widths", "samples", "batch_size", "learning_rate")},
        "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
        "data": "pre-rendered batches on the device (rendering not timed)",
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        **result,
    }
    out = Path(args.out) if args.out else REPO_ROOT / "reports" / "benchmarks" / f"crn_throughput_{device.type}.json"
    path = write_metrics(out, metrics, provenance(args.profile, SEED, device, wall_time_s=time.perf_counter() - began,
                                                  benchmark="crn_throughput", argv=sys.argv[1:]))
    size = settings["size"]
    print(f"CRN {args.profile} ({size[0]}×{size[1]}, widths {settings['widths']}, K={settings['samples']}, "
          f"batch {settings['batch_size']}) on {device}, median of {args.repeats} × {args.steps} steps:")
    print(table(result["modes"]))
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
