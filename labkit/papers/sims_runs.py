"""The SIMS chapter's recorded runs.

    python -m labkit.papers.sims_runs --profile book                       # everything
    python -m labkit.papers.sims_runs --profile book --parts transformer ordering
    python -m labkit.papers.sims_runs --profile book --parts synthesis --models sims sims_no_elision
    python -m labkit.papers.sims_runs --profile full --device cuda --max-minutes 60 --export

Parts, in the order they run:

- ``retrieval``: the vectorised retrieval against the per-candidate loop at
  each memory size of the profile (times and whether their top-k agree);
- ``transformer``: train the spatial transformer on simulated misalignments,
  then measure the mask IoU of retrieved segments before and after alignment;
- ``ordering``: train the ordering network on StreetScenes' depth order and
  measure its accuracy on test scenes;
- ``synthesis``: train the synthesis network of each model in ``--models``
  (the ``sims_no_<simulation>`` models retrain it without that simulation),
  build the test canvases and score every model with
  :func:`labkit.synthesis.evaluate_synthesis`; ``crn`` and ``pix2pix`` are
  the CRN chapter's exported book generators, scored on the same layouts.

Training resumes from ``<run dir>/train/<name>.pt``. Each part writes
``<run dir>/parts/<part>.json`` and each model ``<run dir>/models/<model>.json``
(metrics, the provenance of the call that scored it and of the call that
trained it, the loss history); all of them are merged into
``<run dir>/metrics.json``. ``--export`` writes the transformer, the ordering
network and the ``sims`` synthesis network in float16 to
``checkpoints/sims_<profile>.pt``, the notebook's "load, don't train" path.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checks import check_device, check_non_negative_int, check_path, check_positive_int, check_seed
from ..claims import check_claims, verdict
from ..checkpoints import CheckpointError, load_checkpoint, read_json, save_checkpoint, write_json
from ..data import NUM_CLASSES, check_label_map, render_batch
from ..features import load_feature_extractor
from ..networks import count_parameters, one_hot_layout
from ..synthesis import evaluate_synthesis, real_scene_scores, training_scenes
from ..train import (REPO_ROOT, check_dry_run_arguments, fit, provenance, reports_dir, run_argument_parser,
                     select_profile, setup)
from . import _checks
from .crn import FeatureMatchingLoss
from .sims import (CHAPTER, MODEL_NAMES, PROFILES, SIMULATIONS, OrderingNetwork, SegmentMemory, SegmentTransformer,
                   SimulatedCanvases, SIMSTrainer, SynthesisNetwork, build_canvas, coverage, misaligned_batch,
                   bottom_edge_rule, check_score, mask_iou, ordering_accuracy, ordering_pairs, query_layout, retrieve,
                   retrieve_loop,
                   retrieve_for_layout,
                   transformation_loss)

PARTS = ("retrieval", "transformer", "ordering", "synthesis")
BASELINES = ("crn", "pix2pix")
TRAINED_MODELS = ("sims", "sims_no_stenciling", "sims_no_colour_transfer", "sims_no_elision")
COMMITTED_RECORD = REPO_ROOT / "reports" / "book" / CHAPTER / "metrics.json"


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or name not in MODEL_NAMES + BASELINES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES + BASELINES}")
    return name


def check_profile(profile: str) -> str:
    """One of the chapter's profile names."""
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    return profile


def simulations_of(name: str) -> tuple[str, ...]:
    """The canvas simulations model ``name``'s synthesis network trains with."""
    check_model_name(name)
    return tuple(s for s in SIMULATIONS if name != f"sims_no_{s}")


def network_of(name: str) -> str:
    """The synthesis network a model uses: its own if it retrains one, else ``sims``'."""
    check_model_name(name)
    return name if name in TRAINED_MODELS else "sims"


def canvas_options(name: str) -> dict:
    """How model ``name`` builds its test canvases."""
    check_model_name(name)
    return {"score": "mask" if name == "sims_mask_only_retrieval" else "mask+context",
            "transform": name != "sims_no_transformation", "order": name != "sims_no_ordering"}


_MEMORY: dict = {}


def training_memory(settings: dict, seed: int = 0, progress: bool = False) -> SegmentMemory:
    """The memory of the first ``memory_scenes`` training scenes (built once per process)."""
    _checks.profile_settings(settings, PROFILES, ("size", "grid", "memory_scenes")), check_seed(seed)
    key = (tuple(settings["size"]), tuple(settings["grid"]), settings["memory_scenes"], seed)
    if key not in _MEMORY:
        scenes = training_scenes(settings["size"], settings["memory_scenes"], seed=seed)
        _MEMORY.clear()
        _MEMORY[key] = SegmentMemory.build(scenes.images, scenes.labels, settings["grid"], progress=progress,
                                           source={"dataset": "StreetScenes", "split": "train", "seed": seed,
                                                   "start": 0, "count": settings["memory_scenes"]})
    return _MEMORY[key]


CONFIG_KEYS = {
    "transformer": ("size", "grid", "memory_scenes", "batch_size", "transformer_widths", "transformer_crop",
                    "transformer_steps", "transformer_learning_rate"),
    "ordering": ("size", "batch_size", "ordering_widths", "ordering_steps", "ordering_scenes", "learning_rate"),
    "synthesis": ("size", "grid", "memory_scenes", "batch_size", "synthesis_widths", "synthesis_steps",
                  "learning_rate", "features"),
}


def _config(part: str, settings: dict, seed: int, **extra) -> dict:
    """What a checkpoint of ``part`` depends on: resuming under another config is an error,
    while changing an unrelated setting of the profile is not."""
    config = {"part": part, "seed": seed, **extra}
    config.update({k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()
                   if k in CONFIG_KEYS[part]})
    return config


# --------------------------------------------------------------------------- training


class _TransformerTrainer(torch.nn.Module):
    def __init__(self, transformer: SegmentTransformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, batch):
        warped, warped_mask, _ = self.transformer.align(batch["pixels"], batch["mask"], batch["target_mask"],
                                                        batch["layout"])
        return transformation_loss(warped, warped_mask, batch["photo"], batch["target_mask"])


class _OrderingTrainer(torch.nn.Module):
    def __init__(self, network: OrderingNetwork):
        super().__init__()
        self.network = network

    def forward(self, batch):
        logits = self.network(batch["layout"], batch["mask_a"], batch["mask_b"])
        loss = F.binary_cross_entropy_with_logits(logits, batch["a_in_front"])
        return loss, {"accuracy": float(((logits > 0).float() == batch["a_in_front"]).float().mean())}


def _check_training(settings, device, run_dir, max_minutes, seed):
    _checks.profile_settings(settings, PROFILES), _checks.minutes(max_minutes), check_seed(seed)
    return check_device(device), check_path(run_dir, "run_dir")


def train_transformer(settings: dict, device, run_dir: Path, max_minutes=None, progress=True, seed: int = 0):
    """Train (or resume, or load) the spatial transformer; returns (transformer in eval mode, FitResult)."""
    device, run_dir = _check_training(settings, device, run_dir, max_minutes, seed)
    memory = training_memory(settings, seed, progress)
    transformer = SegmentTransformer(widths=settings["transformer_widths"], crop=settings["transformer_crop"]).to(device)
    optimizer = torch.optim.Adam(transformer.parameters(), lr=settings["transformer_learning_rate"])

    def batch_for_step(step):
        batch = misaligned_batch(memory, step, 2 * settings["batch_size"], seed)
        return {k: v.to(device) for k, v in batch.items()}

    torch.manual_seed(seed)
    result = fit(_TransformerTrainer(transformer), optimizer, batch_for_step, lambda m, b: m(b),
                 steps=settings["transformer_steps"], checkpoint=Path(run_dir) / "train" / "transformer.pt",
                 max_minutes=max_minutes, progress=progress, description="transformer",
                 config=_config("transformer", settings, seed))
    return transformer.eval(), result


def train_orderer(settings: dict, device, run_dir: Path, max_minutes=None, progress=True, seed: int = 0):
    """Train (or resume, or load) the ordering network; returns (network in eval mode, FitResult, pairs)."""
    device, run_dir = _check_training(settings, device, run_dir, max_minutes, seed)
    pairs = ordering_pairs(settings["size"], settings["ordering_scenes"][0], split="train", seed=seed)
    network = OrderingNetwork(widths=settings["ordering_widths"]).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings["learning_rate"])
    batch_size = 4 * settings["batch_size"]

    def batch_for_step(step):
        index = np.random.default_rng([seed, step, 3]).integers(0, len(pairs), batch_size)
        return {k: v.to(device) for k, v in pairs.batch(index).items()}

    torch.manual_seed(seed)
    result = fit(_OrderingTrainer(network), optimizer, batch_for_step, lambda m, b: m(b),
                 steps=settings["ordering_steps"], checkpoint=Path(run_dir) / "train" / "ordering.pt",
                 max_minutes=max_minutes, progress=progress, description="ordering",
                 config=_config("ordering", settings, seed))
    return network.eval(), result, len(pairs)


def train_synthesis(name: str, settings: dict, device, run_dir: Path, max_minutes=None, progress=True,
                    seed: int = 0):
    """Train the synthesis network of ``name`` (one of :data:`TRAINED_MODELS`) on simulated canvases."""
    if not isinstance(name, str) or name not in TRAINED_MODELS:
        raise ValueError(f"{name!r} trains no synthesis network of its own; expected one of {TRAINED_MODELS}")
    device, run_dir = _check_training(settings, device, run_dir, max_minutes, seed)
    memory = training_memory(settings, seed, progress)
    canvases = _simulated(memory, seed, progress)
    simulations = simulations_of(name)
    network = SynthesisNetwork(settings["size"], settings["synthesis_widths"]).to(device)
    extractor = load_feature_extractor(settings.get("features", "auto"), device=device, verbose=progress)
    steps = settings["synthesis_steps"]
    trainer = SIMSTrainer(network, FeatureMatchingLoss(extractor, calibration_steps=steps // 2)).to(device)
    optimizer = torch.optim.Adam(network.parameters(), lr=settings["learning_rate"])

    def batch_for_step(step):
        batch = canvases.batch(step, settings["batch_size"], seed=seed, simulations=simulations)
        return {k: v.to(device) for k, v in batch.items()}

    torch.manual_seed(seed)
    result = fit(trainer, optimizer, batch_for_step, lambda m, b: m(b), steps=steps,
                 checkpoint=Path(run_dir) / "train" / f"{name}.pt", max_minutes=max_minutes, progress=progress,
                 description=name, config=_config("synthesis", settings, seed, model=name,
                                                  simulations=list(simulations)))
    return network.eval(), result


_SIMULATED: dict = {}


def _simulated(memory: SegmentMemory, seed: int, progress: bool) -> SimulatedCanvases:
    key = (id(memory), seed)
    if key not in _SIMULATED:
        _SIMULATED.clear()
        _SIMULATED[key] = SimulatedCanvases.build(memory, seed=seed, progress=progress)
    return _SIMULATED[key]


# --------------------------------------------------------------------------- evaluation


class CanvasCache:
    """Test canvases per (layout, canvas options), so the models that share canvases build them once."""

    def __init__(self, memory: SegmentMemory, transformer, orderer, paste_margin: int, seed: int = 0):
        _checks.instance(memory, "memory", SegmentMemory, "a SegmentMemory")
        _checks.module(transformer, "transformer", SegmentTransformer, allow_none=True)
        _checks.module(orderer, "orderer", OrderingNetwork, allow_none=True)
        check_non_negative_int(paste_margin, "paste_margin"), check_seed(seed)
        self.memory, self.transformer, self.orderer = memory, transformer, orderer
        self.paste_margin, self.seed, self.store, self.searches = paste_margin, seed, {}, {}

    def get(self, label: torch.Tensor, score="mask+context", transform=True, order=True):
        """The canvas of ``label`` (H, W) class ids at the memory's size, built once per options."""
        label = check_label_map(label, "label", ndim=(2,))
        check_score(score), _checks.flag(transform, "transform"), _checks.flag(order, "order")
        layout_key = label.numpy().tobytes()
        key = (layout_key, score, transform, order)
        if key not in self.store:
            if (layout_key, score) not in self.searches:   # the search is shared by the canvas variants
                self.searches[layout_key, score] = retrieve_for_layout(label, self.memory, score)
            self.store[key] = build_canvas(label, self.memory, self.transformer if transform else None,
                                           self.orderer if order else None, score=score,
                                           paste_margin=self.paste_margin, seed=self.seed,
                                           retrieval=self.searches[layout_key, score])
        return self.store[key]


def sims_sampler(name: str, network: SynthesisNetwork | None, cache: CanvasCache, device):
    """layout (N, C, H, W) → (N, 1, 3, H, W): model ``name`` on its own canvases.
    ``canvas_only`` (network None) returns the canvas itself, holes black."""
    options = canvas_options(name)
    _checks.module(network, "network", SynthesisNetwork, allow_none=name == "canvas_only")
    _checks.instance(cache, "cache", CanvasCache)
    device = check_device(device)

    def sample(layout):
        _checks.layout(layout, NUM_CLASSES, cache.memory.size)
        labels = layout.argmax(1).cpu()
        built = [cache.get(label, **options) for label in labels]
        canvas = torch.stack([c.canvas for c in built]).to(device)
        mask = torch.stack([c.filled for c in built]).float()[:, None].to(device)
        if network is None:
            return (canvas * mask)[:, None]
        with torch.no_grad():
            return network.sample(layout, canvas, mask)

    return sample


def context_iou(query_context: torch.Tensor, context: torch.Tensor) -> float:
    """IoU of two grid contexts (gh·gw,) of class ids, 255 = not context: agreeing cells over either's."""
    for name, value in (("query_context", query_context), ("context", context)):
        if not isinstance(value, torch.Tensor) or value.dim() != 1 or value.is_floating_point():
            raise ValueError(f"{name} must be an integer tensor (gh·gw,), got "
                             f"{tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__}")
    if query_context.shape != context.shape:
        raise ValueError(f"query_context {tuple(query_context.shape)} and context {tuple(context.shape)} must match")
    in_query, in_candidate = query_context != 255, context != 255
    agree = int((in_query & in_candidate & (query_context == context)).sum())
    return agree / max(int((in_query | in_candidate).sum()), 1)


def retrieval_quality(canvases, memory: SegmentMemory) -> dict:
    """Mean over retrieved components of the full-resolution mask IoU with the query
    component and the grid context IoU of the retrieved segment (at least one retrieved segment)."""
    if not _checks.names(canvases, "canvases"):
        raise ValueError("canvases must hold at least one Canvas, got an empty list")
    _checks.instance(memory, "memory", SegmentMemory, "a SegmentMemory")
    masks, contexts = [], []
    for c in canvases:
        for k, index in enumerate(c.retrieved):
            if index is None:
                continue
            masks.append(float(c.iou_before[k]))
            contexts.append(context_iou(c.query.grid_context[k], memory.grid_context[index]))
    if not masks:
        raise ValueError("canvases retrieved no segment at all: there is no retrieval to rate")
    return {"mask_iou": float(np.mean(masks)), "context_iou": float(np.mean(contexts)), "segments": len(masks)}


def benchmark_retrieval(settings: dict, seed: int = 0, progress: bool = True) -> dict:
    """Vectorised vs per-candidate loop at each memory size of the profile.

    The memory is cut from as many training scenes as the largest size needs
    (real segments, no copies); the queries are every component of the first
    ``retrieval_queries`` test layouts. Times are per query, in milliseconds.
    """
    _checks.profile_settings(settings, PROFILES, ("size", "grid", "memory_scenes", "retrieval_sizes", "top_k",
                                                   "retrieval_queries")), check_seed(seed)
    sizes = settings["retrieval_sizes"]
    per_scene = max(1.0, len(training_memory(settings, seed)) / settings["memory_scenes"])
    scenes = int(np.ceil(max(sizes) / per_scene * 1.05)) + 8
    big = SegmentMemory.from_scenes(settings["size"], scenes, settings["grid"], seed=seed, progress=progress)
    while len(big) < max(sizes):
        scenes = int(scenes * 1.1) + 8
        big = SegmentMemory.from_scenes(settings["size"], scenes, settings["grid"], seed=seed, progress=progress)
    _, labels = render_batch(settings["size"], settings["retrieval_queries"], split="test", seed=seed)
    queries = [(q, k) for q in (query_layout(label, big) for label in labels) for k in range(len(q))]
    rows = []
    for size in sizes:
        memory = big.truncated(size)
        vectorised, looped, identical = [], [], True
        for q, k in queries:
            args = (memory, int(q.class_ids[k]), q.grid_masks[k], q.grid_context[k])
            started = time.perf_counter()
            top, top_scores = retrieve(*args, k=settings["top_k"])
            vectorised.append(time.perf_counter() - started)
            started = time.perf_counter()
            reference, reference_scores = retrieve_loop(*args, k=settings["top_k"])
            looped.append(time.perf_counter() - started)
            identical &= top.tolist() == reference and top_scores.tolist() == reference_scores
        rows.append({"segments": len(memory), "queries": len(queries), "top_k": settings["top_k"],
                     "vectorised_ms": 1000 * float(np.mean(vectorised)), "loop_ms": 1000 * float(np.mean(looped)),
                     "speedup": float(np.mean(looped) / np.mean(vectorised)), "identical_top_k": bool(identical)})
        if progress:
            print(f"retrieval over {len(memory):,} segments: {rows[-1]['vectorised_ms']:.3f} ms vectorised, "
                  f"{rows[-1]['loop_ms']:.1f} ms loop, identical: {identical}")
    return {"rows": rows, "memory_scenes": scenes, "threads": torch.get_num_threads()}


def evaluate_transformer(transformer: SegmentTransformer, settings: dict, seed: int = 0, batches: int = 8) -> dict:
    """Mask IoU with the target before and after alignment, on simulated misalignments
    of *test* segments (a memory of test scenes, never trained on). ``batches`` ≥ 1 of 16 pairs."""
    _checks.module(transformer, "transformer", SegmentTransformer)
    _checks.profile_settings(settings, PROFILES, ("size", "grid", "eval_scenes"))
    check_seed(seed), check_positive_int(batches, "batches")
    test_memory = SegmentMemory.from_scenes(settings["size"], max(8, settings["eval_scenes"] // 4), settings["grid"],
                                            seed=seed, split="test")
    before, after = [], []
    with torch.no_grad():
        device = next(transformer.parameters()).device
        for step in range(batches):
            batch = misaligned_batch(test_memory, step, 16, seed=seed + 1)
            _, warped_mask, _ = transformer.align(*(batch[k].to(device) for k in ("pixels", "mask", "target_mask",
                                                                                   "layout")))
            before.append(mask_iou(batch["mask"], batch["target_mask"]))
            after.append(mask_iou(warped_mask.cpu(), batch["target_mask"]))
    before, after = torch.cat(before), torch.cat(after)
    return {"simulated_iou_before": float(before.mean()), "simulated_iou_after": float(after.mean()),
            "simulated_improved_share": float((after > before).double().mean()), "simulated_pairs": len(before)}


def _write_part(run_dir: Path, part: str, metrics: dict, run_info: dict, training=None, history=None) -> dict:
    """``parts/<part>.json``; ``training`` only for the parts that train a network."""
    record = {"metrics": metrics, "provenance": run_info, "history": history or []}
    if training is not None:
        record["training"] = training
    write_json(Path(run_dir) / "parts" / f"{part}.json", record)
    return record


def _training_record(run_dir: Path, network: str, result, make_info) -> dict:
    """The provenance of the call that trained ``network``, kept in ``train/<network>.json``
    next to its checkpoint: rewritten when this call advanced the training, read back when
    it only loaded a finished network. ``make_info(result)`` builds it."""
    path = Path(run_dir) / "train" / f"{network}.json"
    if result.steps_done > result.resumed_from or not path.is_file():
        write_json(path, make_info(result))
    return read_json(path)


def default_models(profile: str) -> tuple[str, ...]:
    """Every model; the CRN-chapter baselines only where their exports match the profile's size
    (the smoke profile's 32×64 has none)."""
    check_profile(profile)
    return MODEL_NAMES if profile == "smoke" else MODEL_NAMES + BASELINES


def run(profile: str = "book", parts=PARTS, models=None, device="auto",
        max_minutes: float | None = None, run_dir=None, export=False, progress: bool = True,
        seed: int = 0) -> dict:
    """Run the chosen parts; merge every record into ``<run dir>/metrics.json``; return it.

    ``max_minutes`` is the training budget of *each* network in this call.
    ``export``: True writes ``checkpoints/sims_<profile>.pt``, a path writes there.
    """
    settings = select_profile(PROFILES, check_profile(profile))
    unknown = sorted(map(str, set(_checks.names(parts, "parts")) - set(PARTS)))
    if unknown:
        raise ValueError(f"unknown parts {unknown}; expected some of {PARTS}")
    models = [check_model_name(name) for name in (default_models(profile) if models is None
                                                  else _checks.names(models, "models"))]
    device = check_device(device)
    _checks.minutes(max_minutes), _checks.export_target(export), check_seed(seed)
    run_dir = check_path(run_dir, "run_dir") if run_dir is not None else reports_dir(profile, CHAPTER)
    command = f"python -m labkit.papers.sims_runs --profile {profile}"

    def info(started, **extra):
        return provenance(profile, seed, device, wall_time_s=time.monotonic() - started, **extra)

    def trained_info(what):
        return lambda result: provenance(profile, seed, device, wall_time_s=result.wall_time_s, command=command + what,
                                         steps=result.steps_done, finished=result.finished)

    if "retrieval" in parts:
        started = time.monotonic()
        metrics = benchmark_retrieval(settings, seed, progress)
        _write_part(run_dir, "retrieval", metrics, info(started, command=command + " --parts retrieval"))

    needs_canvases = "synthesis" in parts and any(name not in BASELINES for name in models)
    transformer = orderer = None
    networks_state = {}
    if "transformer" in parts or needs_canvases:
        started = time.monotonic()
        transformer, result = train_transformer(settings, device, run_dir, max_minutes, progress, seed)
        training = _training_record(run_dir, "transformer", result, trained_info(" --parts transformer"))
        networks_state["transformer"] = {"steps": result.steps_done, "finished": result.finished}
        if "transformer" in parts or result.steps_done > result.resumed_from:   # its record follows its weights
            metrics = evaluate_transformer(transformer, settings, seed)
            metrics.update(steps=result.steps_done, finished=result.finished,
                           train_seconds=round(result.wall_time_s, 1), parameters=count_parameters(transformer))
            _write_part(run_dir, "transformer", metrics, info(started, command=command + " --parts transformer"),
                        training, result.history)
    if "ordering" in parts or needs_canvases:
        started = time.monotonic()
        orderer, result, train_pairs = train_orderer(settings, device, run_dir, max_minutes, progress, seed)
        training = _training_record(run_dir, "ordering", result, trained_info(" --parts ordering"))
        networks_state["ordering"] = {"steps": result.steps_done, "finished": result.finished}
        if "ordering" in parts or result.steps_done > result.resumed_from:
            test_pairs = ordering_pairs(settings["size"], settings["ordering_scenes"][1], split="test", seed=seed)
            scores = ordering_accuracy(orderer, test_pairs, device=device)
            metrics = {"accuracy": scores["accuracy"], "test_pairs": scores["pairs"], "train_pairs": train_pairs,
                       "bottom_edge_rule_accuracy": bottom_edge_rule(test_pairs)["accuracy"],
                       "steps": result.steps_done, "finished": result.finished,
                       "train_seconds": round(result.wall_time_s, 1), "parameters": count_parameters(orderer)}
            _write_part(run_dir, "ordering", metrics, info(started, command=command + " --parts ordering"),
                        training, result.history)

    if "synthesis" in parts:
        cache = None
        if needs_canvases:
            memory = training_memory(settings, seed, progress)
            cache = CanvasCache(memory, transformer, orderer, settings["paste_margin"], seed)
        networks, results, trainings = {}, {}, {}
        for own in dict.fromkeys(network_of(name) for name in models if name not in BASELINES + ("canvas_only",)):
            networks[own], results[own] = train_synthesis(own, settings, device, run_dir, max_minutes, progress, seed)
            trainings[own] = _training_record(run_dir, own, results[own],
                                              trained_info(f" --parts synthesis --models {own}"))
        for name in models:
            started = time.monotonic()
            network = result = None
            if name in BASELINES:
                sample = _baseline_sampler(name, profile, settings, device)
                if sample is None:
                    if progress:
                        print(f"{name}: no export of the CRN chapter's {name} at {settings['size']} "
                              f"(checkpoints/{name}_{profile}.pt); left out of this record")
                    continue
                training = {"source": f"the CRN chapter's exported {name} (see reports/<profile>/crn/)"}
            else:
                if name != "canvas_only":
                    network, result = networks[network_of(name)], results[network_of(name)]
                sample = sims_sampler(name, network, cache, device)
                training = (trainings[network_of(name)] if network is not None
                            else {"source": "no trained synthesis network: the canvas itself"})
            scores = evaluate_synthesis(sample, settings["size"], settings["eval_scenes"], device=device, seed=seed)
            scores.update(parameters=None if network is None else count_parameters(network))
            if name not in BASELINES:
                scores.update(network=None if network is None else network_of(name),
                              canvas=dict(canvas_options(name), networks=networks_state))
            if name in TRAINED_MODELS:   # the models that own their network carry its training cost
                scores.update(train_seconds=round(result.wall_time_s, 1), steps=result.steps_done,
                              finished=result.finished)
            run_info = info(started, command=command + f" --parts synthesis --models {name}")
            write_json(run_dir / "models" / f"{name}.json",
                       {"metrics": scores, "provenance": run_info, "training": training,
                        "history": [] if result is None or name not in TRAINED_MODELS else result.history})
            if progress:
                print(f"{name}: FCN-mIoU {scores['fcn_miou']:.3f}, pixel accuracy {scores['fcn_pixel_accuracy']:.3f}, "
                      f"Fréchet {scores['frechet_distance']:.3f}")
        if needs_canvases:
            _, labels = render_batch(settings["size"], settings["eval_scenes"], split="test", seed=seed)
            started = time.monotonic()
            quality, cover = {}, None
            for score in ("mask", "mask+context"):
                built = [cache.get(label, score=score) for label in labels]
                quality[score] = retrieval_quality(built, memory)
                if score == "mask+context":
                    cover = coverage(built)
                    iou_before = torch.cat([c.iou_before for c in built])
                    iou_after = torch.cat([c.iou_after for c in built])
                    keep = ~torch.isnan(iou_before)
            _write_part(run_dir, "canvas", {"retrieval_quality": quality, "coverage": cover,
                                            "retrieved_iou_before": float(iou_before[keep].mean()),
                                            "retrieved_iou_after": float(iou_after[keep].mean()),
                                            "memory_segments": len(memory), "networks": networks_state},
                        info(started, command=command + " --parts synthesis"))
        if export and "sims" in networks:
            path = exported_path(profile) if export is True else Path(export)
            export_models(networks["sims"], transformer, orderer, settings, path)
        if "sims" in networks and cache is not None:
            save_canvas_figure(networks["sims"], cache, settings, run_dir / "samples" / "sims.png", device, seed)
    return merge_records(profile, run_dir, device, seed)


def _baseline_sampler(name: str, profile: str, settings: dict, device):
    """The CRN chapter's exported generator ``name`` of this profile (or of the book
    profile) at the SIMS profile's size, as an evaluation sampler; None if there is none
    (run ``python -m labkit.papers.crn_runs --profile <profile> --models <name> --export``)."""
    from .crn_runs import exported_path as crn_exported, load_generator, sampler

    for candidate in dict.fromkeys((profile, "book")):
        path = crn_exported(name, candidate)
        if path.is_file():
            _, generator, crn_settings = load_generator(path, device=device)
            if tuple(crn_settings["size"]) == tuple(settings["size"]):
                return sampler(name, generator, crn_settings["samples"])
    return None


SAMPLE_SCENES = 3


def save_canvas_figure(network, cache: CanvasCache, settings: dict, path, device, seed: int = 0) -> Path:
    """A PNG of layout → canvas → SIMS output for the first test layouts."""
    _checks.module(network, "network", SynthesisNetwork), _checks.instance(cache, "cache", CanvasCache)
    _checks.profile_settings(settings, PROFILES, ("size",))
    path, device, seed = check_path(path, "path"), check_device(device), check_seed(seed)

    import matplotlib
    import matplotlib.pyplot as plt

    from ..data import colorize
    from ..plotting import to_numpy_image, write_png

    _, labels = render_batch(settings["size"], SAMPLE_SCENES, split="test", seed=seed)
    with matplotlib.rc_context({"figure.dpi": 100}):
        fig, axes = plt.subplots(SAMPLE_SCENES, 3, figsize=(6.6, 1.25 * SAMPLE_SCENES), squeeze=False)
        for row, label in enumerate(labels):
            c = cache.get(label)
            out = network.sample(one_hot_layout(label[None], network.num_classes).to(device), c.canvas[None].to(device),
                                 c.filled[None, None].float().to(device))
            for col, image in enumerate((colorize(label.numpy()), to_numpy_image(c.canvas * c.filled),
                                         to_numpy_image(out[0, 0].cpu()))):
                axes[row, col].imshow(np.clip(image, 0, 1) if image.dtype != np.uint8 else image)
        for ax, title in zip(axes[0], ("layout", "canvas", "sims")):
            ax.set_title(title, fontsize=9)
        for ax in axes.flat:
            ax.set_xticks([]), ax.set_yticks([])
    return write_png(fig, path, close=True)


# --------------------------------------------------------------------------- export and records


def exported_path(profile: str) -> Path:
    check_profile(profile)
    return REPO_ROOT / "checkpoints" / f"sims_{profile}.pt"


def _half(module) -> dict:
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in module.state_dict().items()}


def export_models(network: SynthesisNetwork, transformer: SegmentTransformer, orderer: OrderingNetwork,
                  settings: dict, path) -> Path:
    """The three trained networks in float16, with the profile's settings."""
    _checks.module(network, "network", SynthesisNetwork)
    _checks.module(transformer, "transformer", SegmentTransformer)
    _checks.module(orderer, "orderer", OrderingNetwork)
    _checks.profile_settings(settings, PROFILES, EXPORT_SETTINGS)
    path = check_path(path, "path")
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
    return save_checkpoint(path, {"kind": "sims-networks", "settings": plain, "synthesis": _half(network),
                                  "transformer": _half(transformer), "ordering": _half(orderer)})


def load_models(path, device="cpu") -> tuple[SynthesisNetwork, SegmentTransformer, OrderingNetwork, dict]:
    """(synthesis network, transformer, ordering network, settings) from an export, in eval mode."""
    path, device = check_path(path, "path"), check_device(device)
    if not path.is_file():
        raise FileNotFoundError(f"no exported SIMS networks at {path}; train them with "
                                "`python -m labkit.papers.sims_runs --profile book --export`")
    state = load_checkpoint(path)
    if state.get("kind") != "sims-networks" or not {"synthesis", "transformer", "ordering", "settings"} <= set(state):
        raise CheckpointError(f"{path} is not an export of the SIMS networks "
                              "(expected keys kind, settings, synthesis, transformer, ordering)")
    if not isinstance(state["settings"], dict):
        raise CheckpointError(f"{path}: settings must be a dict, got {type(state['settings']).__name__}")
    settings = {k: (tuple(v) if isinstance(v, list) else v) for k, v in state["settings"].items()}
    try:
        _checks.profile_settings(settings, PROFILES, EXPORT_SETTINGS)
        networks = (SynthesisNetwork(settings["size"], settings["synthesis_widths"]),
                    SegmentTransformer(widths=settings["transformer_widths"], crop=settings["transformer_crop"]),
                    OrderingNetwork(widths=settings["ordering_widths"]))
    except ValueError as error:
        raise CheckpointError(f"{path} holds settings these networks cannot be built from: {error}") from error
    for network, key in zip(networks, ("synthesis", "transformer", "ordering")):
        try:
            network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state[key].items()})
        except (RuntimeError, AttributeError) as error:
            raise CheckpointError(f"{path}: the {key} weights do not fit: {str(error).splitlines()[0]}") from error
        network.to(device).eval()
    return (*networks, settings)


def merge_records(profile: str, run_dir, device, seed: int = 0) -> dict:
    """Rebuild ``<run dir>/metrics.json`` from ``models/*.json`` and ``parts/*.json``."""
    settings = select_profile(PROFILES, check_profile(profile))
    run_dir, device, seed = _checks.run_folder(run_dir), check_device(device), check_seed(seed)
    models = {p.stem: read_json(p) for p in sorted((run_dir / "models").glob("*.json"))}
    parts = {p.stem: read_json(p) for p in sorted((run_dir / "parts").glob("*.json"))}
    metrics = {name: r["metrics"] for name, r in models.items()}
    if "ordering" in parts:
        metrics["ordering_accuracy"] = parts["ordering"]["metrics"]["accuracy"]
        metrics["ordering"] = parts["ordering"]["metrics"]
    if "retrieval" in parts:
        metrics["retrieval"] = parts["retrieval"]["metrics"]["rows"]
    if "transformer" in parts:
        metrics["transformation"] = parts["transformer"]["metrics"]
    if "canvas" in parts:
        metrics["canvas"] = parts["canvas"]["metrics"]
    # a model scored with a network that has been retrained since is stale: rerun it
    stale = sorted(name for name, r in models.items()
                   if (r["metrics"].get("network") or name) in models and r["metrics"].get("network")
                   and r.get("training") != models[r["metrics"]["network"]].get("training"))
    record = {"metrics": metrics, "stale": stale,
              "runs": {name: r["provenance"] for name, r in {**models, **parts}.items()},
              "training": {name: r.get("training", r["provenance"]) for name, r in {**models, **parts}.items()},
              "histories": {name: r.get("history", []) for name, r in {**models, **parts}.items()},
              "reference": {"real_scenes": real_scene_scores(settings["size"], settings["eval_scenes"], seed=seed)},
              "provenance": provenance(profile, seed, device, models=sorted(models), parts=sorted(parts))}
    write_json(run_dir / "metrics.json", record)
    return record


EXPORT_SETTINGS = ("size", "synthesis_widths", "transformer_widths", "transformer_crop", "ordering_widths")
"""What :func:`load_models` builds the networks from: an export's settings must hold them."""

REQUIRED = ("ordering_accuracy", "retrieval", "transformation", "canvas")
"""Besides every model of :data:`MODEL_NAMES`; the CRN-chapter baselines are optional (the claims
that need them are then "not measured")."""


def read_record(profile: str, run_dir=None) -> dict:
    """The recorded runs of ``profile``: the committed book record, or ``<run dir>/metrics.json``."""
    check_profile(profile)
    if run_dir is not None:
        check_path(run_dir, "run_dir")
    path = (COMMITTED_RECORD if profile == "book" and run_dir is None
            else Path(run_dir or reports_dir(profile, CHAPTER)) / "metrics.json")
    record = read_json(path)
    missing = [name for name in REQUIRED + MODEL_NAMES if name not in record.get("metrics", {})]
    if missing:
        raise ValueError(f"{path} has no record of {missing}; run `python -m labkit.papers.sims_runs --profile "
                         f"{profile}`")
    if record.get("stale"):
        raise ValueError(f"{path}: {record['stale']} were scored with a network that was retrained since; rerun "
                         f"`python -m labkit.papers.sims_runs --profile {profile} --parts synthesis --models "
                         f"{' '.join(record['stale'])}`")
    unfinished = sorted(name for name, m in record["metrics"].items() if isinstance(m, dict) and m.get("finished") is False)
    if unfinished:
        networks = [name for name in unfinished if name in ("transformation", "ordering")]
        parts = ["transformer" if name == "transformation" else name for name in networks]
        models = [name for name in unfinished if name not in networks]
        fix = " ".join(f"--parts {' '.join(parts + (['synthesis'] if models else []))}".split()) \
            + (f" --models {' '.join(models)}" if models else "")
        raise ValueError(f"{path} has networks that stopped before their last step: {unfinished}; run "
                         f"`python -m labkit.papers.sims_runs --profile {profile} {fix}`")
    return record


def claims(record: dict) -> list[dict]:
    """The chapter's claims, each checked against a record by explicit comparisons.

    Rows {"claim", "evidence", "verdict"}: "holds" when every comparison listed
    favours the claim, "does not hold" when none does, "mixed" otherwise, and
    "not measured" when the record lacks a model it needs (the smoke profile
    has no CRN-chapter baselines). Never typed by hand. Lower Fréchet distance
    and higher FCN-mIoU are better. CRN is read at its best output slot (SPADE
    scored the single image of each method) and pooled over its K outputs.
    """
    _checks.record(record)
    m = record["metrics"]

    def fid(name, best=False):
        return m[name]["frechet_distance_best_output" if best else "frechet_distance"]

    def miou(name, best=False):
        return m[name]["fcn_miou_best_output" if best else "fcn_miou"]

    def realism():
        return ("SIMS is more realistic than CRN (SPADE on Cityscapes: FID 49.7 vs 104.7)",
                f"Fréchet {fid('sims'):.3f} vs CRN {fid('crn'):.3f} (all outputs) and {fid('crn', True):.3f} "
                f"(best output); vs pix2pix {fid('pix2pix'):.3f}",
                verdict(fid("sims") < fid("crn"), fid("sims") < fid("crn", True)))

    def fidelity():
        return ("…but less faithful to the layout (SPADE: mIoU 47.2 vs 52.4)",
                f"FCN-mIoU {miou('sims'):.3f} vs CRN {miou('crn'):.3f} (all outputs) and {miou('crn', True):.3f} "
                f"(best output); vs pix2pix {miou('pix2pix'):.3f}",
                verdict(miou("sims") < miou("crn"), miou("sims") < miou("crn", True)))

    def synthesis_needed():
        return ("The synthesis network is needed: the canvas alone is not an image",
                f"canvas alone: FCN-mIoU {miou('canvas_only'):.3f}, Fréchet {fid('canvas_only'):.3f}; after "
                f"synthesis: {miou('sims'):.3f}, {fid('sims'):.3f}",
                verdict(fid("sims") < fid("canvas_only"), miou("sims") > miou("canvas_only")))

    def simulations():
        names = [s for s in SIMULATIONS if f"sims_no_{s}" in m]
        return ("Each canvas simulation (stenciling, colour transfer, boundary elision) helps",
                "; ".join(f"without {s.replace('_', ' ')}: Fréchet {fid(f'sims_no_{s}'):.3f}, FCN-mIoU "
                          f"{miou(f'sims_no_{s}'):.3f}" for s in names) + f" (all: {fid('sims'):.3f}, {miou('sims'):.3f})",
                verdict(*[fid("sims") < fid(f"sims_no_{s}") for s in names],
                        *[miou("sims") > miou(f"sims_no_{s}") for s in names]))

    def context():
        quality = m["canvas"]["retrieval_quality"]
        return ("Scoring the context as well as the shape retrieves more compatible segments",
                f"context IoU of the retrieved segments {quality['mask+context']['context_iou']:.3f} vs "
                f"{quality['mask']['context_iou']:.3f} with the mask alone (mask IoU "
                f"{quality['mask+context']['mask_iou']:.3f} vs {quality['mask']['mask_iou']:.3f}); images: Fréchet "
                f"{fid('sims'):.3f} vs {fid('sims_mask_only_retrieval'):.3f}, FCN-mIoU {miou('sims'):.3f} vs "
                f"{miou('sims_mask_only_retrieval'):.3f}",
                verdict(fid("sims") < fid("sims_mask_only_retrieval"), miou("sims") > miou("sims_mask_only_retrieval")))

    def transformation():
        t, canvas = m["transformation"], m["canvas"]
        return ("The transformation network aligns retrieved segments and improves the result",
                f"simulated misalignments: mask IoU {t['simulated_iou_before']:.3f} → {t['simulated_iou_after']:.3f}; "
                f"retrieved test segments: {canvas['retrieved_iou_before']:.3f} → {canvas['retrieved_iou_after']:.3f}; "
                f"images: Fréchet {fid('sims'):.3f} vs {fid('sims_no_transformation'):.3f} without it, FCN-mIoU "
                f"{miou('sims'):.3f} vs {miou('sims_no_transformation'):.3f}",
                verdict(canvas["retrieved_iou_after"] > canvas["retrieved_iou_before"],
                        fid("sims") < fid("sims_no_transformation"), miou("sims") > miou("sims_no_transformation")))

    def ordering():
        o = m["ordering"]
        return ("The ordering network predicts which object is in front, and that helps the canvas",
                f"accuracy {o['accuracy']:.3f} on {o['test_pairs']} test pairs, against chance (0.5) and the rule "
                f"'lower bottom edge is nearer' ({o['bottom_edge_rule_accuracy']:.3f}); images: Fréchet {fid('sims'):.3f} vs "
                f"{fid('sims_no_ordering'):.3f} with a random order, FCN-mIoU {miou('sims'):.3f} vs "
                f"{miou('sims_no_ordering'):.3f}",
                verdict(o["accuracy"] > 0.5, o["accuracy"] > o["bottom_edge_rule_accuracy"],
                        fid("sims") < fid("sims_no_ordering"), miou("sims") > miou("sims_no_ordering")))

    return check_claims((realism, fidelity, synthesis_needed, simulations, context, transformation, ordering))


def main(argv=None) -> int:
    parser = run_argument_parser("labkit.papers.sims_runs", __doc__.split("\n")[0], PROFILES, CHAPTER,
                                 "write checkpoints/sims_<profile>.pt")
    parser.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    parser.add_argument("--models", nargs="+", default=None, choices=MODEL_NAMES + BASELINES,
                        help="default: every model (no CRN-chapter baselines in the smoke profile)")
    args = parser.parse_args(argv)
    check_dry_run_arguments(parser, args)
    device = setup(seed=args.seed, threads=args.threads, device=args.device)
    run(args.profile, args.parts, args.models, device, args.max_minutes, args.run_dir, args.export, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
