"""Training throughput of each chapter's main model: images/s, FLOPs and MFU, mode by mode.

On a GPU (all three modes, with MFU; not run on a GPU yet: an estimate of 10–20
minutes for all chapters at the full profile, much of it ``torch.compile``'s warm-up)::

    python benchmarks/throughput.py --chapter all --profile full --device cuda

On this course's 2-core CPU (fp32 eager and bf16 + channels_last, no compilation)::

    python benchmarks/throughput.py --chapter all --profile book --device cpu --threads 2
    python benchmarks/throughput.py --chapter srn --profile smoke --steps 2 --repeats 1 --out /tmp/x.json  # a check

One timed **step** is one iteration of what the chapter's run module does for
its main model, built from the chapter's own classes and ``PROFILES`` settings:

- ``crn``: the ``crn`` model of ``crn_runs``: the cascade with K = ``samples``
  outputs, CRN's per-class feature-matching loss with the diversity objective on
  the chapter's feature network, backward, one Adam step. One **image** is one
  of the K outputs: a step makes ``batch_size × samples`` images.
- ``sims``: the synthesis network G of ``sims_runs.train_synthesis`` (model
  ``sims``): G on (layout, simulated canvas, mask), feature matching + 10 ×
  cross-entropy, backward, one Adam step. One image per layout of the batch.
  The canvases are simulated from a memory of the first ``SIMS_MEMORY_SCENES``
  training scenes (the run uses ``memory_scenes``): that changes what the
  canvases hold, not what the step costs.
- ``srn``: the ``srn`` model's **second phase** (``SRNTrainer.finetune_loss``;
  FEN + CPN with sub-pixel expansion and context normalisation):
  ``critic_steps`` WGAN-GP steps of the global and contextual critics (each
  with its gradient penalty, a double backward), then the generator's RSV
  reconstruction + ID-MRF + adversarial loss, backward, one Adam step. One
  image is one extrapolated output; a step makes ``batch_size`` of them (the
  critics see ``critic_steps × batch_size`` real images). The four placements
  take turns, as in the run, so timed steps come in whole cycles of 4.
- ``analogy``: the ``sft`` generator of ``analogy_runs`` on the profile's first
  image: one ``AnalogyTrainer.iteration_loss`` (a discriminator step, an
  auxiliary-segmenter step, then the generator's losses), backward, one Adam
  step. Every 5th iteration is a reconstruction iteration, as in the run, so
  timed steps come in whole cycles of 5. One image is the one I′ of an
  iteration (batch 1). The joint augmentation of each iteration (CPU warps) is
  data preparation: the 5 iterations' augmented pairs are computed once,
  before timing, and replayed.
- ``seigan``: ``SeiganTrainer.iteration_loss`` of model ``seigan``: the double
  swap (G_seg, G_enh, G_inp, twice), one step of both discriminators on pooled
  fakes (D_obj on windows around the box), the generators' adversarial, cycle, background perceptual/texture and
  identity losses, backward, one Adam step. One image is one (object scene,
  background) pair. The pools of past fakes are filled before timing, as they
  are after the first iterations of a run.

Batches are rendered before timing and are on the device; ``DISTINCT_BATCHES``
of them (SRN: one per placement) are cycled. Each mode builds its networks
afresh from the same seed, so all modes start from the same initial weights
(``initial_weights_checksum`` shows it). Modes:

- ``fp32_eager``: float32, contiguous tensors, no compilation;
- ``bf16_channels_last``: bfloat16 autocast around the loss (as
  ``labkit.train.fit`` does on CUDA), channels_last networks and batches;
- ``bf16_channels_last_compile``: the same with ``torch.compile`` (in place,
  ``nn.Module.compile``) on the networks each chapter lists in
  ``compiled_networks``. SRN's critics stay eager (their gradient penalty needs
  a double backward, which compiled graphs do not support), and so does the
  analogy discriminator (its spectral norm updates its power-iteration vectors
  in place at every call; compiled, the generator's backward then fails). A
  failed compilation (or bf16 kernel) skips its mode and records the error.

Default modes: all three on CUDA, the first two elsewhere. Each mode runs
``--warmup`` steps (compiled: at least 3 and two cycles; the compilation happens
there), then ``--repeats`` timed runs of ``--steps`` steps, both rounded up to
whole cycles (``torch.cuda.synchronize`` around each run on CUDA); the median
run is reported as images/s, ms/step and the ratio to fp32 eager, with the
peak memory on CUDA.

**FLOPs.** One cycle of steps is counted with
``torch.utils.flop_counter.FlopCounterMode`` after one untimed cycle (so one-off
work such as SRN's cached RSV weights is not counted), in fp32 eager on the
benchmark device: forward and backward of every network the step runs, frozen
feature networks and critics/discriminators included. The counter counts
matrix multiplications and convolutions (not element-wise ops, norms or
optimizer updates). Achieved FLOP/s = FLOPs per step / median step time. On
CUDA the model FLOPs utilisation (MFU) is that over the device's dense bf16
peak from ``PEAK_BF16_TFLOPS`` (null, with the reason, for a device not in the
table), for every mode; on a CPU it is null ("no peak table for CPUs").

Results go to ``reports/benchmarks/throughput_<device type>.json`` for
``--chapter all`` and ``throughput_<chapter>_<device type>.json`` for one
chapter (atomically via ``labkit.train.write_metrics``, with provenance), with
the load average before and after each chapter and the whole run; the file is
rewritten after each chapter (``"finished": false`` until the last), so a run
cut short keeps what it measured. A table is printed at the end.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:   # run as `python benchmarks/throughput.py` from anywhere
    sys.path.insert(0, str(ROOT))

from labkit.networks import count_parameters  # noqa: E402
from labkit.train import (PROFILE_NAMES, REPO_ROOT, argparse_device, argparse_positive_int, provenance,  # noqa: E402
                          select_profile, setup, write_metrics)

CHAPTERS = ("crn", "sims", "srn", "analogy", "seigan")
MODES = {
    # name: (bf16 autocast, channels_last, torch.compile)
    "fp32_eager": (False, False, False),
    "bf16_channels_last": (True, True, False),
    "bf16_channels_last_compile": (True, True, True),
}
BASELINE = "fp32_eager"
DISTINCT_BATCHES = 4          # pre-rendered batches cycled while timing
COMPILE_MIN_WARMUP = 3        # compiled modes: at least this many warm-up steps (and two cycles)
SIMS_MEMORY_SCENES = 32       # scenes of the memory the SIMS canvases are simulated from
CALIBRATING = 10 ** 9
"""CRN's and SIMS's feature-matching loss calibrates its layer weights over the first half of a
run, then freezes them. The benchmark keeps calibrating, as in the first half of a run (the
freeze changes the loss' control flow, which would force a recompilation mid-measurement)."""
SEED = 0
PEAK_BF16_TFLOPS = {"H100 SXM": 989.4, "H100 PCIe": 756.0, "H200": 989.4}
"""Dense (no sparsity) bf16 tensor-core peaks in TFLOP/s, NVIDIA's data sheets."""
CPU_NOTE = "no peak table for CPUs"
FLOP_COUNTER = ("torch.utils.flop_counter.FlopCounterMode, fp32 eager: matmuls and convolutions, forward and "
                "backward of every network in the step; element-wise ops, norms and optimizer updates not counted")


# --------------------------------------------------------------------------- workloads

@dataclass
class Workload:
    """One chapter's training iteration, ready to run.

    ``loss(step)`` runs everything of iteration ``step`` up to the main model's loss
    (discriminator and critic steps included, as the chapter's ``loss_fn`` for ``fit``
    does); :func:`run_step` then zeroes ``optimizer``'s gradients, calls backward and
    steps it, as ``fit`` does. Inputs repeat every ``cycle`` steps."""

    chapter: str
    loss: Callable[[int], torch.Tensor]
    optimizer: torch.optim.Optimizer
    images_per_step: int
    image: str
    step: str
    cycle: int = 1
    parameters: dict = field(default_factory=dict)
    features: dict | None = None
    compiled: list = field(default_factory=list)
    modules: list = field(default_factory=list)   # the trained networks, for the weight checksum


def _channels_last(value):
    if isinstance(value, torch.Tensor) and value.dim() == 4:
        return value.contiguous(memory_format=torch.channels_last)
    return value


def _to_device(batch: dict, device, channels_last: bool) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device)
            value = _channels_last(value) if channels_last else value
        out[key] = value
    return out


def _prepare(modules, extractors, device, channels_last: bool) -> None:
    """Networks to the device, and with channels_last their 4-D weights too. The frozen
    feature networks are not submodules of the chapters' trainers, so they come apart."""
    for module in list(modules) + [e for e in extractors if e is not None]:
        module.to(device)
        if channels_last:
            module.to(memory_format=torch.channels_last)


def _compile(modules, compiled: bool) -> None:
    if compiled:
        for module in modules:
            module.compile()   # in place: parameters and state_dict keys stay the chapter's own


def _plain(settings: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}


def build_crn(settings, device, channels_last=False, compiled=False) -> Workload:
    from labkit.features import load_feature_extractor
    from labkit.papers.crn import CascadedRefinementNetwork, CRNTrainer, FeatureMatchingLoss
    from labkit.synthesis import scene_batch, training_scenes

    batch_size = settings["batch_size"]
    scenes = training_scenes(settings["size"], min(settings["train_scenes"], DISTINCT_BATCHES * batch_size), seed=SEED)
    batches = [_to_device(scene_batch(scenes, s, batch_size, seed=SEED), device, channels_last)
               for s in range(DISTINCT_BATCHES)]
    extractor = load_feature_extractor(settings.get("features", "auto"), device=device, verbose=False)
    torch.manual_seed(SEED)
    generator = CascadedRefinementNetwork(settings["size"], settings["widths"], settings["samples"])
    trainer = CRNTrainer(generator, FeatureMatchingLoss(extractor, calibration_steps=CALIBRATING)).train()
    _prepare([trainer], [extractor], device, channels_last)
    optimizer = torch.optim.Adam(generator.parameters(), lr=settings["learning_rate"])
    _compile([trainer], compiled)

    def loss(step):
        return trainer(batches[step % len(batches)])[0]

    return Workload("crn", loss, optimizer, batch_size * settings["samples"],
                    image=f"one of the K = {settings['samples']} outputs of a layout ({batch_size} layouts per step)",
                    step="cascade forward, per-class feature matching with the diversity objective, backward, Adam",
                    parameters={"generator": count_parameters(generator)}, features=extractor.describe(),
                    compiled=["CRNTrainer (generator and loss)"], modules=[generator])


def build_sims(settings, device, channels_last=False, compiled=False) -> Workload:
    from labkit.features import load_feature_extractor
    from labkit.papers.crn import FeatureMatchingLoss
    from labkit.papers.sims import SegmentMemory, SimulatedCanvases, SIMSTrainer, SynthesisNetwork

    batch_size = settings["batch_size"]
    memory = SegmentMemory.from_scenes(settings["size"], min(settings["memory_scenes"], SIMS_MEMORY_SCENES),
                                       settings["grid"], seed=SEED)
    canvases = SimulatedCanvases.build(memory, seed=SEED)
    batches = [_to_device(canvases.batch(s, batch_size, seed=SEED), device, channels_last)
               for s in range(DISTINCT_BATCHES)]
    extractor = load_feature_extractor(settings.get("features", "auto"), device=device, verbose=False)
    torch.manual_seed(SEED)
    network = SynthesisNetwork(settings["size"], settings["synthesis_widths"])
    trainer = SIMSTrainer(network, FeatureMatchingLoss(extractor, calibration_steps=CALIBRATING)).train()
    _prepare([trainer], [extractor], device, channels_last)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings["learning_rate"])
    _compile([trainer], compiled)

    def loss(step):
        return trainer(batches[step % len(batches)])[0]

    return Workload("sims", loss, optimizer, batch_size,
                    image=f"one synthesised image per layout ({batch_size} per step)",
                    step="synthesis network on simulated canvases, feature matching + 10 × cross-entropy, "
                         "backward, Adam",
                    parameters={"synthesis_network": count_parameters(network)}, features=extractor.describe(),
                    compiled=["SIMSTrainer (synthesis network and loss)"], modules=[network])


def build_srn(settings, device, channels_last=False, compiled=False) -> Workload:
    from labkit.features import load_feature_extractor
    from labkit.papers.srn import MODEL_SPECS, MRF_LAYERS, PAPER_BETAS, PLACEMENTS, IDMRFLoss, SRNTrainer
    from labkit.papers.srn_runs import build_generator, extrapolation_batch
    from labkit.synthesis import training_scenes

    batch_size, critic_steps = settings["batch_size"], settings["critic_steps"]
    per_step = batch_size * critic_steps
    scenes = training_scenes(settings["size"], min(settings["train_scenes"], DISTINCT_BATCHES * per_step), seed=SEED)
    batches = [_to_device(extrapolation_batch(scenes, s, per_step, seed=SEED), device, channels_last)
               for s in range(len(PLACEMENTS))]   # one batch per placement, in the run's order
    kind = settings.get("features", "auto")   # as srn_runs.train_model: the two ID-MRF layers
    extractor = load_feature_extractor(kind, layers=None if kind == "auto" else MRF_LAYERS[kind], device=device,
                                       verbose=False)
    if len(extractor.layer_names) != 2:
        extractor = load_feature_extractor(extractor.name, layers=MRF_LAYERS[extractor.name], device=device,
                                           verbose=False)
    spec = MODEL_SPECS["srn"]
    torch.manual_seed(SEED)
    generator = build_generator("srn", settings)
    torch.manual_seed(SEED + 1)
    trainer = SRNTrainer(generator, settings["size"], spec["reconstruction"], settings["rsv_kernel"],
                         settings["critic_width"], mrf=IDMRFLoss(extractor), critic_steps=critic_steps).train()
    _prepare([trainer], [extractor], device, channels_last)
    critic_optimizer = torch.optim.Adam(trainer.critic_parameters(), lr=settings["learning_rate"], betas=PAPER_BETAS)
    optimizer = torch.optim.Adam(generator.parameters(), lr=settings["learning_rate"], betas=PAPER_BETAS)
    _compile([generator], compiled)

    def loss(step):
        return trainer.finetune_loss(batches[step % len(batches)], critic_optimizer)[0]

    return Workload("srn", loss, optimizer, batch_size,
                    image=f"one extrapolated output per sample ({batch_size} per step; the critics also see "
                          f"{per_step} real images)",
                    step=f"phase 2: {critic_steps} WGAN-GP step(s) of both critics, then RSV + ID-MRF + "
                         "adversarial loss, backward, Adam",
                    cycle=len(PLACEMENTS),
                    parameters={"generator": count_parameters(generator),
                                "critics": sum(p.numel() for p in trainer.critic_parameters())},
                    features=extractor.describe(), compiled=["ExtrapolationNetwork (FEN + CPN)"],
                    modules=[trainer])


def build_analogy(settings, device, channels_last=False, compiled=False) -> Workload:
    from labkit.papers.analogy import MODEL_SPECS, PAPER_BETAS, RECONSTRUCTION_EVERY, AnalogyTrainer
    from labkit.papers.analogy_runs import patch_features, source_images

    image = source_images(settings, seed=SEED)[0]
    features = patch_features(settings, device)
    torch.manual_seed(SEED)
    trainer = AnalogyTrainer(image["image"][None], image["labels"][None], image["num_classes"], MODEL_SPECS["sft"],
                             settings, features=features, seed=SEED).train()
    # the iterations' augmented pairs (CPU warps) are prepared once; each replay gets a fresh copy of
    # the iteration's random generator, so the swap, noise and patch draws are the iteration's own
    prepared = []
    for iteration in range(RECONSTRUCTION_EVERY):
        aug_image, aug_labels, rng = trainer.augmented(iteration)
        prepared.append((aug_image, aug_labels, rng.get_state()))
    _prepare([trainer], [features], device, channels_last)
    prepared = [(_channels_last(a.to(device)) if channels_last else a.to(device), b.to(device), state)
                for a, b, state in prepared]

    def augmented(iteration):
        aug_image, aug_labels, state = prepared[iteration % len(prepared)]
        rng = torch.Generator()
        rng.set_state(state)
        return aug_image, aug_labels, rng

    trainer.augmented = augmented   # this instance only
    optimizers = {part: torch.optim.Adam(params, lr=settings[lr], betas=PAPER_BETAS) for part, params, lr in (
        ("generator", trainer.generator.parameters(), "generator_lr"),
        ("discriminator", trainer.discriminator.parameters(), "discriminator_lr"),
        ("segmenter", trainer.segmenter.parameters(), "generator_lr"))}
    # D stays eager: its spectral norm updates the power-iteration vectors in place at every call, and a
    # compiled D saves them for its backward by reference (the generator's backward then fails)
    _compile([trainer.generator, trainer.segmenter], compiled)

    def loss(step):
        return trainer.iteration_loss(step, optimizers["discriminator"], optimizers["segmenter"])[0]

    height, width = image["image"].shape[-2:]
    return Workload("analogy", loss, optimizers["generator"], 1,
                    image=f"the one generated image I′ of an iteration ({image['name']}, {height}×{width})",
                    step="a discriminator step, an auxiliary-segmenter step, the generator's losses (reconstruction "
                         "every 5th iteration, else patch coherence + alignment), backward, Adam",
                    cycle=RECONSTRUCTION_EVERY,
                    parameters={"generator": count_parameters(trainer.generator),
                                "discriminator": count_parameters(trainer.discriminator),
                                "segmenter": count_parameters(trainer.segmenter)},
                    features=features.describe(), compiled=["generator", "segmenter"],
                    modules=[trainer])


def build_seigan(settings, device, channels_last=False, compiled=False) -> Workload:
    from labkit.papers.seigan import CYCLEGAN_BETAS, MODEL_SPECS, SeiganTrainer
    from labkit.papers.seigan_runs import batch_sampler, chapter_data, reconstruction_features

    batch_size = settings["batch_size"]
    count = min(settings["train_objects"], settings["train_backgrounds"], DISTINCT_BATCHES * batch_size)
    data = chapter_data(dict(settings, train_objects=count, train_backgrounds=count), seed=SEED, splits=("train",))
    sampler = batch_sampler(data["train"], batch_size, SEED, device)   # images on the device, boxes on the CPU
    batches = [{k: _channels_last(v) if channels_last and k != "boxes" else v for k, v in sampler(s).items()}
               for s in range(DISTINCT_BATCHES)]
    features = reconstruction_features(settings, device)
    torch.manual_seed(SEED)
    trainer = SeiganTrainer(MODEL_SPECS["seigan"], settings, features, SEED).train()
    _prepare([trainer], [features], device, channels_last)
    # the pools of past fakes, full as in a run: D_obj's hold windows around the box, D_bg's whole images
    filler = torch.cat([b["objects"] for b in batches])
    crops = trainer.crops(filler, torch.cat([torch.as_tensor(b["boxes"]) for b in batches]))
    for kind, pool in trainer.pools.items():
        stored = crops if kind in ("pasted", "moved") else filler
        pool.images = [stored[i % len(stored)].clone() for i in range(pool.size)]
    generator_optimizer = torch.optim.Adam(trainer.generator_parameters(), lr=settings["learning_rate"],
                                           betas=CYCLEGAN_BETAS)
    discriminator_optimizer = torch.optim.Adam(trainer.discriminator_parameters(), lr=settings["learning_rate"],
                                               betas=CYCLEGAN_BETAS)
    networks = {"segmenter": trainer.segmenter, "enhancer": trainer.enhancer, "inpainter": trainer.inpainter,
                "background_discriminator": trainer.background_discriminator,
                "object_discriminator": trainer.object_discriminator}
    networks = {k: v for k, v in networks.items() if v is not None}
    _compile(networks.values(), compiled)

    def loss(step):
        return trainer.iteration_loss(batches[step % len(batches)], discriminator_optimizer)[0]

    return Workload("seigan", loss, generator_optimizer, batch_size,
                    image=f"one (object scene, background) pair swapped both ways ({batch_size} per step)",
                    step="double swap (segment, enhance, inpaint, twice), one step of both discriminators on pooled "
                         "fakes, adversarial + cycle + background perceptual/texture + identity losses, backward, Adam",
                    parameters={"generators": sum(p.numel() for p in trainer.generator_parameters()),
                                "discriminators": sum(p.numel() for p in trainer.discriminator_parameters())},
                    features=features.describe(), compiled=list(networks), modules=[trainer])


BUILDERS = {"crn": build_crn, "sims": build_sims, "srn": build_srn, "analogy": build_analogy, "seigan": build_seigan}


def check_chapter(chapter: str) -> str:
    if chapter not in BUILDERS:
        raise ValueError(f"unknown chapter {chapter!r}; expected one of {list(CHAPTERS)} or 'all'")
    return chapter


def check_modes(modes) -> list[str]:
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise ValueError(f"unknown modes {unknown}; expected some of {list(MODES)}")
    return list(modes)


def chapter_settings(chapter: str, profile: str) -> dict:
    """The chapter's ``PROFILES[profile]`` (an unknown chapter or profile raises, naming the known ones)."""
    import importlib

    profiles = importlib.import_module(f"labkit.papers.{check_chapter(chapter)}").PROFILES
    return select_profile(profiles, profile)


def build_workload(chapter: str, settings: dict, device, mode: str = BASELINE, seed: int = SEED) -> Workload:
    """Chapter ``chapter``'s training iteration under ``settings`` in ``mode``, from seed ``seed``."""
    _, channels_last, compiled = MODES[check_modes([mode])[0]]
    torch.manual_seed(seed)
    return BUILDERS[check_chapter(chapter)](settings, torch.device(device), channels_last=channels_last,
                                            compiled=compiled)


def describe(workload: Workload) -> dict:
    """What a chapter's step is: the JSON's per-chapter description."""
    return {"step": workload.step, "image": workload.image, "images_per_step": workload.images_per_step,
            "cycle": workload.cycle, "parameters": workload.parameters, "features": workload.features}


def weights_checksum(workload: Workload) -> float:
    """Σ of every trained weight, in float64: equal across modes when they start alike."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum().cpu() for m in workload.modules for p in m.parameters()))


def run_step(workload: Workload, step: int, device, bf16: bool) -> torch.Tensor:
    """One training iteration, as ``labkit.train.fit`` runs it: the loss under autocast, then
    zero_grad, backward and the main optimizer's step outside it."""
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        loss = workload.loss(step)
    workload.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    workload.optimizer.step()
    return loss.detach()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def whole_cycles(steps: int, cycle: int) -> int:
    return -(-max(steps, 0) // cycle) * cycle


# --------------------------------------------------------------------------- FLOPs and MFU

class _GlobalOnly:
    """Stands in for FlopCounterMode's module tracker, so every FLOP is counted under "Global"
    only: the tracker's backward hooks fail inside ``torch.autograd.grad`` (SRN's gradient
    penalty), and no per-module breakdown is reported."""

    parents = {"Global"}

    def __enter__(self):
        return self

    def __exit__(self, *args):
        return False


def count_step_flops(workload: Workload, device, first_step: int, steps: int) -> float:
    """FLOPs per step over ``workload``'s steps ``first_step`` … ``first_step + steps − 1`` (fp32)."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        for step in range(first_step, first_step + steps):
            run_step(workload, step, device, bf16=False)
    return counter.get_total_flops() / steps


def count_flops(chapter: str, settings: dict, device) -> dict:
    """Model FLOPs of one training step (forward + backward of every network it runs), counted
    in fp32 eager over one cycle, after one untimed cycle."""
    device = torch.device(device)
    workload = build_workload(chapter, settings, device, BASELINE)
    for step in range(workload.cycle):   # one-off work (SRN's cached RSV weights …) is not counted
        run_step(workload, step, device, bf16=False)
    per_step = count_step_flops(workload, device, workload.cycle, workload.cycle)
    return {"flops_per_step": per_step, "flops_per_image": per_step / workload.images_per_step,
            "flops_counted_steps": workload.cycle, "flop_counter": FLOP_COUNTER}


def peak_for_name(name: str) -> tuple[float | None, str]:
    """(dense bf16 peak in FLOP/s, the table entry) for a CUDA device name, else (None, why)."""
    upper = name.upper()
    if "MIG" in upper:
        return None, f"{name!r} is a MIG slice: its share of the peak is not in the table"
    if "H200" in upper:
        key = "H200"
    elif "H100" in upper and "PCIE" in upper:
        key = "H100 PCIe"
    elif "H100" in upper and ("SXM" in upper or "HBM3" in upper) and "NVL" not in upper:
        key = "H100 SXM"   # torch names the SXM part "NVIDIA H100 80GB HBM3"
    else:
        return None, f"device {name!r} is not in the peak table {sorted(PEAK_BF16_TFLOPS)}"
    return PEAK_BF16_TFLOPS[key] * 1e12, key


def peak_bf16_flops(device) -> tuple[float | None, str]:
    device = torch.device(device)
    if device.type == "cuda":
        return peak_for_name(torch.cuda.get_device_name(device))
    return None, CPU_NOTE if device.type == "cpu" else f"no peak table for {device.type} devices"


# --------------------------------------------------------------------------- timing

def time_workload(workload: Workload, mode: str, device, steps: int, warmup: int, repeats: int,
                  round_to_cycle: bool = True) -> dict:
    """Time ``workload`` (built for ``mode``): ``warmup`` steps, then ``repeats`` runs of ``steps``
    steps, both rounded up to whole cycles; the record of the median run. (``round_to_cycle``
    False is for quick checks only: the steps of a cycle differ in cost.)"""
    bf16, channels_last, compiled = MODES[mode]
    device = torch.device(device)
    cycle = workload.cycle if round_to_cycle else 1
    steps, warmup = whole_cycles(steps, cycle), whole_cycles(warmup, cycle)
    if compiled:   # every distinct step of the cycle is compiled before timing
        warmup = whole_cycles(max(warmup, COMPILE_MIN_WARMUP, 2 * workload.cycle), cycle)
    checksum = weights_checksum(workload)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    began = time.perf_counter()
    for step in range(warmup):
        run_step(workload, step, device, bf16)
    synchronize(device)
    warmup_seconds = time.perf_counter() - began
    seconds, step, loss = [], warmup, None
    for _ in range(repeats):
        synchronize(device)
        began = time.perf_counter()
        for _ in range(steps):
            loss = run_step(workload, step, device, bf16)
            step += 1
        synchronize(device)
        seconds.append(time.perf_counter() - began)
    final_loss = float(loss)
    if not torch.isfinite(loss).all():
        raise FloatingPointError(f"{workload.chapter} {mode}: the loss is {final_loss}")
    median = statistics.median(seconds)
    record = {
        "images_per_s": round(workload.images_per_step * steps / median, 3),
        "steps_per_s": round(steps / median, 4),
        "step_ms": round(1000 * median / steps, 3),
        "repeat_seconds": [round(s, 4) for s in seconds],
        "timed_steps_per_repeat": steps, "warmup_steps": warmup, "warmup_seconds": round(warmup_seconds, 3),
        "bf16_autocast": bf16, "channels_last": channels_last, "compiled": compiled,
        "compiled_networks": workload.compiled if compiled else [],
        "initial_weights_checksum": checksum, "final_loss": final_loss,
    }
    if device.type == "cuda":
        record["peak_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2 ** 20, 1)
    return record


def time_mode(chapter: str, mode: str, settings: dict, device, steps: int, warmup: int,
              repeats: int) -> tuple[dict, dict]:
    """Train the chapter's main model afresh in ``mode``: (its throughput record, :func:`describe`)."""
    workload = build_workload(chapter, settings, device, mode)
    return time_workload(workload, mode, device, steps, warmup, repeats), describe(workload)


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else None."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def benchmark_chapter(chapter: str, settings: dict, device, modes, steps: int, warmup: int, repeats: int,
                      flops: bool = True) -> dict:
    """Every mode of one chapter, its FLOPs and, on CUDA, its MFU."""
    device = torch.device(device)
    load_before, began = load_average(), time.perf_counter()
    results, description = {}, None
    for mode in check_modes(modes):
        try:
            results[mode], description = time_mode(chapter, mode, settings, device, steps, warmup, repeats)
        except Exception as error:   # a failed compilation (or bf16 kernel) skips its mode only
            if mode == BASELINE:
                raise
            text = str(error).strip()
            message = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"
            print(f"{chapter} {mode} skipped: {message}", file=sys.stderr)
            results[mode] = {"skipped": True, "error": message}
        finally:
            if MODES[mode][2]:
                torch._dynamo.reset()   # one chapter's compiled code never counts against the next's limits
    baseline = results.get(BASELINE, {}).get("images_per_s")
    for record in results.values():
        if "images_per_s" in record:
            record["ratio_to_fp32_eager"] = round(record["images_per_s"] / baseline, 3) if baseline else None
    out = {**(description or {}), "settings": _plain({k: v for k, v in settings.items() if k != "profile"}),
           "modes": results}
    if flops:
        counted = count_flops(chapter, settings, device)
        out.update(counted)
        peak, source = peak_bf16_flops(device)
        out["peak_bf16_flops_per_s"], out["peak_source"] = peak, source
        for record in results.values():
            if "steps_per_s" not in record:
                continue
            record["achieved_flops_per_s"] = counted["flops_per_step"] * record["steps_per_s"]
            record["mfu"] = record["achieved_flops_per_s"] / peak if peak else None
            record["mfu_note"] = f"achieved model FLOP/s over the dense bf16 peak of {source}" if peak else source
    out["load_average_before"], out["load_average_after"] = load_before, load_average()
    out["seconds"] = round(time.perf_counter() - began, 1)
    return out


# --------------------------------------------------------------------------- output

def table(chapters: dict) -> str:
    lines = [f"{'chapter':<8} {'mode':<27} {'images/s':>9} {'ms/step':>9} {'× fp32':>7} {'GFLOP/img':>10} "
             f"{'TFLOP/s':>8} {'MFU':>6} {'peak MiB':>9}"]
    for chapter, result in chapters.items():
        for mode, record in result["modes"].items():
            if "images_per_s" not in record:
                lines.append(f"{chapter:<8} {mode:<27} skipped: {record.get('error', '')}")
                continue
            ratio, mfu = record.get("ratio_to_fp32_eager"), record.get("mfu")
            gflop, achieved = result.get("flops_per_image"), record.get("achieved_flops_per_s")
            lines.append(
                f"{chapter:<8} {mode:<27} {record['images_per_s']:>9.2f} {record['step_ms']:>9.1f} "
                f"{'—' if ratio is None else f'{ratio:.2f}':>7} {'—' if gflop is None else f'{gflop / 1e9:.3f}':>10} "
                f"{'—' if achieved is None else f'{achieved / 1e12:.4f}':>8} "
                f"{'—' if mfu is None else f'{100 * mfu:.1f}%':>6} {record.get('peak_memory_mib', '—'):>9}")
    return "\n".join(lines)


def default_modes(device: torch.device) -> list[str]:
    return list(MODES) if device.type == "cuda" else ["fp32_eager", "bf16_channels_last"]


def default_out(chapter: str, device: torch.device) -> Path:
    name = f"throughput_{device.type}.json" if chapter == "all" else f"throughput_{chapter}_{device.type}.json"
    return REPO_ROOT / "reports" / "benchmarks" / name


def argument_parser(description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=description or __doc__.splitlines()[0],
        epilog="on a GPU: python benchmarks/throughput.py --chapter all --profile full --device cuda")
    parser.add_argument("--chapter", default="all", help=f"one of {list(CHAPTERS)}, or all (default)")
    parser.add_argument("--profile", default="book", help=f"one of {list(PROFILE_NAMES)} (default book)")
    parser.add_argument("--device", default="auto", type=argparse_device, help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--steps", type=argparse_positive_int, default=10, help="timed steps per repeat (rounded up to whole cycles)")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps first (whole cycles; compiled: at least 3 and two cycles)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--threads", type=argparse_positive_int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--modes", nargs="+", default=None,
                        help=f"some of {list(MODES)}; default: all on CUDA, the first two elsewhere")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count (and MFU)")
    parser.add_argument("--note", default=None, help="free text kept with the result (e.g. 'shared CPU')")
    parser.add_argument("--out", default=None,
                        help="default: reports/benchmarks/throughput_[<chapter>_]<device type>.json")
    return parser


def main(argv=None, parser: argparse.ArgumentParser | None = None, out_for: Callable | None = None,
         benchmark: str = "throughput") -> int:
    parser = parser or argument_parser()
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.repeats < 1:
        parser.error("--steps and --repeats must be ≥ 1, --warmup ≥ 0")
    try:   # every name is checked before anything runs
        chapters = list(CHAPTERS) if args.chapter == "all" else [check_chapter(args.chapter)]
        settings = {c: chapter_settings(c, args.profile) for c in chapters}
        check_modes(args.modes or [])
    except ValueError as error:
        parser.error(str(error))
    device = setup(seed=SEED, threads=args.threads, device=args.device)
    modes = args.modes or default_modes(device)
    began, load_before = time.perf_counter(), load_average()
    out = Path(args.out) if args.out else (out_for or default_out)(args.chapter, device)
    results = {}

    def write(finished: bool):
        metrics = {
            "profile": args.profile, "device_type": device.type,
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "cpu_model": cpu_model(), "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "steps": args.steps, "warmup": args.warmup, "repeats": args.repeats, "modes_run": modes,
            "data": "pre-rendered batches on the device (rendering not timed)",
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "load_average_before": load_before, "load_average_after": load_average(), "note": args.note,
            "finished": finished, "chapters": results,
        }
        info = provenance(args.profile, SEED, device, wall_time_s=time.perf_counter() - began, benchmark=benchmark,
                          argv=list(sys.argv[1:] if argv is None else argv))
        return write_metrics(out, metrics, info), metrics

    for chapter in chapters:   # the file is rewritten after each chapter, so a killed run keeps what it measured
        print(f"{chapter}: {', '.join(modes)} …", flush=True)
        results[chapter] = benchmark_chapter(chapter, settings[chapter], device, modes, args.steps, args.warmup,
                                             args.repeats, flops=not args.no_flops)
        if chapter != chapters[-1]:
            write(finished=False)
    path, metrics = write(finished=True)
    print(f"{args.profile} profile on {device} ({torch.get_num_threads()} threads), median of {args.repeats} "
          f"repeats; load average {load_before} → {metrics['load_average_after']}")
    print(table(results))
    for chapter, result in results.items():
        print(f"  {chapter}: one image = {result.get('image')}")
    print("wrote", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
