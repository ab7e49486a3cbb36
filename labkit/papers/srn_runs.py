"""The SRN chapter's recorded runs: SRN, its ablations and the baselines.

    python -m labkit.papers.srn_runs --profile book --export      # every model
    python -m labkit.papers.srn_runs --profile full --device cuda --max-minutes 60
    python -m labkit.papers.srn_runs --profile book --models srn_no_cn

Each trained model runs the paper's two phases resumably: reconstruction alone
(``<run dir>/train/<model>_pretrain.pt``), then fine-tuning with ID-MRF and the
two WGAN-GP critics (``train/<model>_finetune.pt``). Run the same command again
to continue an interrupted run. Every model is scored by
:func:`evaluate_extrapolation` on the same test scenes and the four placements,
and recorded in ``models/<model>.json``; ``metrics.json`` merges them.
``--export`` writes ``srn`` and ``srn_pretrain`` in float16 to
``checkpoints/srn_<profile>.pt`` for the notebook's "load, don't train" path.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from ..checks import check_device, check_non_negative_int, check_path, check_positive_int, check_seed
from ..claims import check_claims, verdict
from ..checkpoints import CheckpointError, load_checkpoint, read_json, save_checkpoint, write_json
from ..data import render_batch
from ..features import load_feature_extractor
from ..metrics import confusion_matrix, frechet_distance, scores_from_confusion
from ..networks import count_parameters
from ..synthesis import training_scenes
from .. import train
from ..train import (REPO_ROOT, fit, provenance, reports_dir, run_argument_parser, select_profile)
from . import _checks
from .srn import (CHAPTER, MODEL_NAMES, MODEL_SPECS, MRF_LAYERS, PAPER_BETAS, PLACEMENTS, PROFILES,
                  ExtrapolationNetwork, IDMRFLoss, SRNTrainer, check_placement, crop_known, known_box,
                  reflect_extrapolation, unknown_mask)

EXPORTED_MODELS = ("srn", "srn_pretrain")
METRIC_KEYS = ("psnr_unknown", "ssim_unknown", "fcn_miou_unknown", "fcn_pixel_accuracy_unknown", "frechet_distance",
               "colour_error_unknown", "edge_sharpness_unknown")


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    return name


def check_profile(profile: str) -> str:
    """One of the chapter's profile names."""
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    return profile


PHASES = ("pretrain", "finetune")


def check_phase(phase: str) -> str:
    if not isinstance(phase, str) or phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; expected one of {PHASES}")
    return phase


def spec_of(name: str) -> dict:
    spec = MODEL_SPECS[check_model_name(name)]
    return MODEL_SPECS[spec["same_as"]] if "same_as" in spec else spec


def phases_of(name: str) -> tuple[str, ...]:
    """The training phases model ``name`` goes through: none for ``reflect``, the first
    alone for ``srn_pretrain``, both for the others."""
    if not spec_of(name).get("generator"):
        return ()
    return ("pretrain",) if MODEL_SPECS[name].get("phase") == "pretrain" else ("pretrain", "finetune")


def network_of(name: str, phase: str = "pretrain") -> str:
    """Whose checkpoint model ``name`` uses for ``phase``: ``srn_pretrain`` and
    ``srn_reconstruction_only`` share ``srn``'s first phase; every second phase is the model's own."""
    check_model_name(name), check_phase(phase)
    return name if phase == "finetune" else MODEL_SPECS[name].get("same_as", name)


def build_generator(name: str, settings: dict) -> ExtrapolationNetwork:
    """The untrained generator of model ``name`` (not ``reflect``) with a profile's ``width``."""
    spec = spec_of(name)
    _checks.profile_settings(settings, PROFILES, ("width",))
    if not spec.get("generator"):
        raise ValueError(f"model {name!r} has no network")
    return ExtrapolationNetwork(spec["generator"], settings["width"], spec["expansion"], spec["context_norm"])


def extrapolation_batch(scenes, step: int, batch_size: int, seed: int = 0) -> dict:
    """The batch of training step ``step``: random training scenes (flipped at random),
    and the placement ``PLACEMENTS[step mod 4]``. A function of (seed, step) only; step ≥ 0, batch_size ≥ 1."""
    from ..synthesis import SceneTensors, scene_batch

    _checks.instance(scenes, "scenes", SceneTensors, "labkit.synthesis.SceneTensors (see training_scenes)")
    check_non_negative_int(step, "step"), check_positive_int(batch_size, "batch_size"), check_seed(seed)

    images = scene_batch(scenes, step, batch_size, seed=seed)["image"]
    return {"image": images, "placement": PLACEMENTS[step % len(PLACEMENTS)]}


def _config(name: str, phase: str, settings: dict, seed: int) -> dict:
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items() if k != "eval_scenes"}
    return {"model": name, "phase": phase, "seed": seed, **plain}


def train_model(name: str, settings: dict, device, run_dir: Path, max_minutes: float | None = None,
                progress: bool = True, seed: int = 0, phases=None):
    """Train (or resume, or load) the network of model ``name`` through ``phases``
    (default :func:`phases_of`); returns (generator, {phase: FitResult}). ``max_minutes``
    bounds the whole call. The first phase's checkpoint is ``network_of(name)``'s."""
    spec = spec_of(name)
    if not spec.get("generator"):
        raise ValueError(f"model {name!r} has no network to train")
    phases = phases_of(name) if phases is None else tuple(check_phase(p) for p in _checks.names(phases, "phases"))
    _checks.profile_settings(settings, PROFILES), _checks.minutes(max_minutes), check_seed(seed)
    device, run_dir = check_device(device), check_path(run_dir, "run_dir")
    finetune_terms = MODEL_SPECS[name].get("finetune_terms", True)
    device = torch.device(device)
    torch.manual_seed(seed)   # the same initial weights whichever models ran before in this process
    generator = build_generator(name, settings).to(device)
    scenes = training_scenes(settings["size"], settings["train_scenes"], seed=seed)
    batch_size, pretrain_steps = settings["batch_size"], settings["pretrain_steps"]
    mrf = None
    if "finetune" in phases and finetune_terms:
        kind = settings.get("features", "auto")
        extractor = load_feature_extractor(kind, layers=None if kind == "auto" else MRF_LAYERS[kind],
                                           device=device, verbose=progress)
        if len(extractor.layer_names) != 2:   # "auto" picked one: rebuild with its two ID-MRF layers
            extractor = load_feature_extractor(extractor.name, layers=MRF_LAYERS[extractor.name], device=device,
                                               verbose=False)
        mrf = IDMRFLoss(extractor)
    torch.manual_seed(seed + 1)
    trainer = SRNTrainer(generator, settings["size"], spec["reconstruction"], settings["rsv_kernel"],
                         settings["critic_width"], mrf=mrf, critic_steps=settings["critic_steps"],
                         adversarial=finetune_terms).to(device)
    betas = PAPER_BETAS
    optimizer = torch.optim.Adam(generator.parameters(), lr=settings["learning_rate"], betas=betas)
    began = time.monotonic()

    def left():
        return None if max_minutes is None else max(0.0, max_minutes - (time.monotonic() - began) / 60)

    def batch_for(offset, images_per_step=batch_size):
        return lambda step: {k: v.to(device) if isinstance(v, torch.Tensor) else v
                             for k, v in extrapolation_batch(scenes, offset + step, images_per_step, seed).items()}

    def unwrapped(model):   # under torchrun fit passes the DDP wrapper
        return getattr(model, "module", model)

    results = {}
    first = network_of(name, "pretrain")
    results["pretrain"] = fit(trainer, optimizer, batch_for(0), lambda m, b: unwrapped(m).pretrain_loss(b),
                              steps=pretrain_steps, checkpoint=Path(run_dir) / "train" / f"{first}_pretrain.pt",
                              max_minutes=left(), progress=progress, description=f"{first} pretrain",
                              config=_config(first, "pretrain", settings, seed))
    if "finetune" in phases and results["pretrain"].finished:
        critic_optimizer = torch.optim.Adam(trainer.critic_parameters(), lr=settings["learning_rate"], betas=betas)
        optimizer = torch.optim.Adam(generator.parameters(), lr=settings["learning_rate"], betas=betas)
        # each critic step sees its own images (the official code draws a batch per session run)
        results["finetune"] = fit(trainer, optimizer, batch_for(pretrain_steps, batch_size * settings["critic_steps"]),
                                  lambda m, b: unwrapped(m).finetune_loss(b, critic_optimizer),
                                  steps=settings["finetune_steps"],
                                  checkpoint=Path(run_dir) / "train" / f"{name}_finetune.pt",
                                  max_minutes=left(), progress=progress, description=f"{name} fine-tune",
                                  config=dict(_config(name, "finetune", settings, seed),
                                              **({"mrf_features": mrf.extractor.describe()} if finetune_terms
                                                 else {"finetune_terms": False})),
                                  extra_optimizers={"critic": critic_optimizer})
    generator.eval()
    return generator, results


# --------------------------------------------------------------------------- evaluation

def extrapolator(name: str, generator: ExtrapolationNetwork | None):
    """(known (N, 3, h, w), placement) → full image (N, 3, H, W) in [0, 1] for model ``name``
    (``generator`` None only for ``reflect``)."""
    check_model_name(name)
    if name == "reflect":
        return reflect_extrapolation
    _checks.module(generator, "generator", ExtrapolationNetwork)
    return lambda known, placement: generator(known, placement)


def complete_images(extrapolate, images: torch.Tensor, placement: str, device="cpu", batch_size: int = 32):
    """Run ``extrapolate`` on the known regions of ``images`` (N, 3, H, W) and paste the
    known pixels back: the completed images (N, 3, H, W) on the CPU. images in [0, 1], N ≥ 1."""
    _checks.function(extrapolate, "extrapolate", "(known, placement) → images")
    _checks.images_batch(images, "images"), check_placement(placement)
    device = check_device(device)
    check_positive_int(batch_size, "batch_size")
    mask = unknown_mask(images.shape[-2:], placement)
    outputs = []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size]
            predicted = extrapolate(crop_known(chunk, placement).to(device), placement).float().cpu().clamp(0, 1)
            if predicted.shape != chunk.shape:
                raise ValueError(f"extrapolation of {placement!r} returned {tuple(predicted.shape)}, "
                                 f"expected {tuple(chunk.shape)}")
            outputs.append(predicted * mask + chunk * (1 - mask))
    return torch.cat(outputs)


def forward_class_changes(labels: torch.Tensor) -> torch.Tensor:
    """(N, H, W) → (N, H, W) bool: pixels whose right or lower neighbour has another class,
    i.e. the pixels whose forward difference (:func:`gradient_magnitude`) crosses a class
    boundary. ``sims.label_boundaries`` marks both sides of a boundary instead, which would
    also count differences that stay inside one class."""
    if not isinstance(labels, torch.Tensor) or labels.dim() != 3 or labels.is_floating_point():
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels must be an integer tensor (N, H, W), got {got}")
    edges = torch.zeros_like(labels, dtype=torch.bool)
    edges[:, :, :-1] |= labels[:, :, :-1] != labels[:, :, 1:]
    edges[:, :-1, :] |= labels[:, :-1, :] != labels[:, 1:, :]
    return edges


def gradient_magnitude(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) → (N, H, W): |∇| of the grey image by forward differences (0 on the last row/column)."""
    _checks.tensor(images, "images", shape="(N, 3, H, W)", ndim=4, channels=3)
    grey = images.mean(dim=1)
    dx = torch.zeros_like(grey)
    dy = torch.zeros_like(grey)
    dx[:, :, :-1] = grey[:, :, 1:] - grey[:, :, :-1]
    dy[:, :-1, :] = grey[:, 1:, :] - grey[:, :-1, :]
    return (dx ** 2 + dy ** 2).sqrt()


def unknown_region_scores(completed: torch.Tensor, real: torch.Tensor, labels: torch.Tensor, placement: str,
                          judge) -> dict:
    """Scores of completed images (N, 3, H, W) against the real ones on the unknown region.

    - ``psnr_unknown``: per image, 10·log10(1 / MSE over the unknown pixels), averaged (dB);
    - ``ssim_unknown``: the SSIM map (Gaussian window 11) averaged over the unknown pixels;
    - ``fcn_miou_unknown`` / ``fcn_pixel_accuracy_unknown``: the judge's segmentation of the
      completed image against the true layout, on the unknown pixels only;
    - ``frechet_distance``: judge embeddings of the completed images against the real ones;
    - ``colour_error_unknown``: |mean colour of the unknown region − the real one's|, averaged
      over channels and images: does the extension keep the scene's lighting and tint?
    - ``edge_sharpness_unknown``: mean |∇| of the output on the true layout's class boundaries in the
      unknown region, over the same for the real image (1 = as sharp as the real scene; below 1 is
      blur, above 1 ringing or noise). Differences reaching into the known region are left out, so
      a seam does not count as sharpness. Claims compare |log| of it: closer to 1 is better.
    """
    from kornia.metrics import ssim as ssim_map

    from ..data.validation import check_image_label_pair
    from ..metrics import _judge

    check_image_label_pair(real, labels)
    _checks.images_batch(completed, "completed")
    if completed.shape != real.shape:
        raise ValueError(f"completed {tuple(completed.shape)} must have the real images' shape {tuple(real.shape)}")
    check_placement(placement)

    mask = unknown_mask(real.shape[-2:], placement, len(real))
    region = mask[:, 0].bool()
    squared = ((completed - real) ** 2 * mask).sum(dim=(1, 2, 3)) / (3 * mask.sum(dim=(1, 2, 3)))
    psnr = (10 * torch.log10(1 / squared.clamp_min(1e-10))).mean()
    ssim = (ssim_map(completed, real, 11) * mask).sum() / (3 * mask.sum())
    judge = _judge(judge, "cpu") if judge is None else judge
    predictions = judge.predict(completed.to(next(judge.parameters()).device)).cpu()
    scores = scores_from_confusion(confusion_matrix(predictions[region], labels[region]))
    count = mask.sum(dim=(2, 3))
    colour = (((completed * mask).sum(dim=(2, 3)) - (real * mask).sum(dim=(2, 3))) / count).abs().mean()
    inside = region.clone()   # the pixel and the neighbours its forward differences read are all unknown
    inside[:, :, :-1] &= region[:, :, 1:]
    inside[:, :-1, :] &= region[:, 1:, :]
    edges = forward_class_changes(labels) & inside
    sharpness = gradient_magnitude(completed)[edges].mean() / gradient_magnitude(real)[edges].mean().clamp_min(1e-8)
    return {"psnr_unknown": float(psnr), "ssim_unknown": float(ssim), "fcn_miou_unknown": scores["miou"],
            "fcn_pixel_accuracy_unknown": scores["pixel_accuracy"],
            "frechet_distance": frechet_distance(completed, real, judge=judge),
            "colour_error_unknown": float(colour), "edge_sharpness_unknown": float(sharpness)}


def evaluate_extrapolation(extrapolate, size, count: int, device="cpu", judge=None, seed: int = 0,
                           placements=PLACEMENTS) -> dict:
    """Score ``extrapolate`` on the first ``count`` test scenes at ``size``, for each placement.

    Returns the :func:`unknown_region_scores` averaged over the placements at the top
    level and per placement under ``per_placement``. The Fréchet distance is computed
    per placement (``count`` completed images against the same ``count`` real ones)
    and averaged, so it is only comparable between runs with the same ``count``.
    ``count`` ≥ 1; ``placements`` a non-empty list of :data:`PLACEMENTS`.
    """
    from ..metrics import _judge

    _checks.function(extrapolate, "extrapolate", "(known, placement) → images")
    check_positive_int(count, "count"), check_seed(seed)
    placements = [check_placement(p) for p in _checks.names(placements, "placements")]
    if not placements:
        raise ValueError("placements must name at least one placement")
    device = check_device(device)

    real, labels = render_batch(size, count, split="test", seed=seed)
    judge = _judge(judge, device) if judge is None else judge
    per_placement = {}
    for placement in placements:
        completed = complete_images(extrapolate, real, placement, device)
        per_placement[placement] = unknown_region_scores(completed, real, labels, placement, judge)
    mean = {key: float(np.mean([per_placement[p][key] for p in placements])) for key in METRIC_KEYS}
    return {**mean, "per_placement": per_placement, "eval_scenes": count, "placements": list(placements)}


def real_scene_reference(size, count: int, seed: int = 0) -> dict:
    """What the real scenes score: the judge's FCN-mIoU on the true unknown regions (the
    ceiling), and the Fréchet distance between ``count`` training and test scenes (the floor
    that sampling noise alone gives at this set size). count ≥ 1."""
    from ..metrics import _judge

    check_positive_int(count, "count"), check_seed(seed)

    real, labels = render_batch(size, count, split="test", seed=seed)
    train, _ = render_batch(size, count, split="train", seed=seed)
    judge = _judge(None, "cpu")
    predictions = judge.predict(real)
    ceiling = {}
    for placement in PLACEMENTS:
        region = unknown_mask(size, placement, count)[:, 0].bool()
        ceiling[placement] = scores_from_confusion(confusion_matrix(predictions[region], labels[region]))["miou"]
    return {"fcn_miou_unknown": float(np.mean(list(ceiling.values()))), "fcn_miou_unknown_per_placement": ceiling,
            "frechet_distance": frechet_distance(train, real, judge=judge), "eval_scenes": count}


SAMPLE_SCENES = 2


def frame_known_region(ax, size, placement: str, color: str = "yellow"):
    """Draw the known region's outline on a matplotlib axis showing a (H, W) = ``size`` image."""
    from matplotlib.axes import Axes
    from matplotlib.patches import Rectangle

    _checks.instance(ax, "ax", Axes, "a matplotlib Axes")

    top, left, h, w = known_box(size, placement)
    ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, edgecolor=color, linewidth=1))


def save_sample_figure(name: str, extrapolate, settings: dict, path, device, seed: int = 0) -> Path:
    """A PNG with the completed images of the first test scenes for every placement
    (the known region framed), saved with the run so the chapter can show every
    model without its weights."""
    check_model_name(name), _checks.function(extrapolate, "extrapolate", "(known, placement) → images")
    _checks.profile_settings(settings, PROFILES, ("size",))
    path, device, seed = check_path(path, "path"), check_device(device), check_seed(seed)
    import matplotlib
    import matplotlib.pyplot as plt

    from ..plotting import to_numpy_image, write_png

    real, _ = render_batch(settings["size"], SAMPLE_SCENES, split="test", seed=seed)
    with matplotlib.rc_context({"figure.dpi": 100}):
        fig, axes = plt.subplots(SAMPLE_SCENES, len(PLACEMENTS), figsize=(2.4 * len(PLACEMENTS), 1.3 * SAMPLE_SCENES),
                                 squeeze=False)
        for col, placement in enumerate(PLACEMENTS):
            completed = complete_images(extrapolate, real, placement, device)
            for row in range(SAMPLE_SCENES):
                ax = axes[row, col]
                ax.imshow(np.clip(to_numpy_image(completed[row]), 0, 1))
                frame_known_region(ax, settings["size"], placement)
                ax.set_xticks([]), ax.set_yticks([])
            axes[0, col].set_title(f"{name}: {placement}", fontsize=8)
    return write_png(fig, path, close=True)


# --------------------------------------------------------------------------- runs

def run(profile: str = "book", models=None, device="auto", max_minutes: float | None = None, run_dir=None,
        export=False, progress: bool = True, seed: int = 0) -> dict:
    """Train and score ``models`` (default: all); merge their records into ``<run dir>/metrics.json``.

    ``max_minutes`` is the training budget of *each* network in this call (both phases).
    ``export``: True writes ``checkpoints/srn_<profile>.pt``, a path writes there.
    """
    settings = select_profile(PROFILES, check_profile(profile))
    models = [check_model_name(name) for name in (MODEL_NAMES if models is None else _checks.names(models, "models"))]
    device = check_device(device)
    _checks.minutes(max_minutes), _checks.export_target(export), check_seed(seed)
    run_dir = check_path(run_dir, "run_dir") if run_dir is not None else reports_dir(profile, CHAPTER)
    command = f"python -m labkit.papers.srn_runs --profile {profile}"
    exported = {}
    for name in models:
        started = time.monotonic()
        generator, results, training = None, {}, {"source": "no network: the known region mirrored"}
        if name != "reflect":
            generator, results = train_model(name, settings, device, run_dir, max_minutes, progress, seed)
            training = {phase: _training_record(run_dir, network_of(name, phase), phase, result, profile, seed,
                                                device, command + f" --models {network_of(name, phase)}")
                        for phase, result in results.items()}
            if name in EXPORTED_MODELS:
                exported[name] = generator
        scores = evaluate_extrapolation(extrapolator(name, generator), settings["size"], settings["eval_scenes"],
                                        device=device, seed=seed)
        if generator is not None:
            scores.update(parameters=count_parameters(generator), network=network_of(name),
                          steps={p: r.steps_done for p, r in results.items()},
                          finished=all(r.finished for r in results.values()) and len(results) == len(phases_of(name)),
                          train_seconds=round(sum(r.wall_time_s for r in results.values()), 1))
        history = [dict(entry, phase=phase) for phase, r in results.items() for entry in r.history]
        write_json(run_dir / "models" / f"{name}.json",
                   {"metrics": scores, "provenance": provenance(profile, seed, device,
                                                                wall_time_s=time.monotonic() - started,
                                                                command=command + f" --models {name}"),
                    "training": training, "history": history})
        save_sample_figure(name, extrapolator(name, generator), settings, run_dir / "samples" / f"{name}.png",
                           device, seed)
        if progress:
            print(f"{name}: " + ", ".join(f"{k} {scores[k]:.4g}" for k in METRIC_KEYS))
    if export and set(EXPORTED_MODELS) <= set(exported):
        path = exported_path(profile) if export is True else Path(export)
        export_models(exported, settings, path)
    return merge_records(profile, run_dir, device, seed)


def _training_record(run_dir: Path, network: str, phase: str, result, profile, seed, device, command) -> dict:
    """The provenance of the call that trained ``network``'s ``phase``, kept next to its
    checkpoint (``train/<network>_<phase>.json``): rewritten when this call advanced the
    training, read back when it only loaded a finished phase."""
    path = Path(run_dir) / "train" / f"{network}_{phase}.json"
    if result.steps_done > result.resumed_from or not path.is_file():
        write_json(path, provenance(profile, seed, device, wall_time_s=result.wall_time_s, command=command,
                                    steps=result.steps_done, finished=result.finished))
    return read_json(path)


def exported_path(profile: str) -> Path:
    check_profile(profile)
    return REPO_ROOT / "checkpoints" / f"srn_{profile}.pt"


def export_models(generators: dict, settings: dict, path) -> Path:
    """``srn`` and ``srn_pretrain`` in float16, with the profile's settings."""
    if not isinstance(generators, dict) or not generators:
        raise ValueError(f"generators must be a non-empty dict {{model name: generator}}, got {generators!r}")
    for name, generator in generators.items():
        check_model_name(name), _checks.module(generator, f"generators[{name!r}]", ExtrapolationNetwork)
    _checks.profile_settings(settings, PROFILES, ("width",))
    path = check_path(path, "path")
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
    state = {name: {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu()
                    for k, v in generator.state_dict().items()} for name, generator in generators.items()}
    return save_checkpoint(path, {"kind": "srn-generators", "settings": plain, "generators": state})


def load_models(path, device="cpu") -> tuple[dict, dict]:
    """({model name: generator in eval mode}, settings) from an export."""
    path, device = check_path(path, "path"), check_device(device)
    if not path.is_file():
        raise FileNotFoundError(f"no exported SRN generators at {path}; train them with "
                                "`python -m labkit.papers.srn_runs --profile book --export`")
    state = load_checkpoint(path)
    if state.get("kind") != "srn-generators" or not {"generators", "settings"} <= set(state):
        raise CheckpointError(f"{path} is not an export of the SRN generators (expected keys kind, settings, "
                              "generators)")
    if not isinstance(state["settings"], dict) or not isinstance(state["generators"], dict):
        raise CheckpointError(f"{path}: settings and generators must be dicts")
    settings = {k: (tuple(v) if isinstance(v, list) else v) for k, v in state["settings"].items()}
    generators = {}
    for name, weights in state["generators"].items():
        try:
            generator = build_generator(name, settings)
        except ValueError as error:
            raise CheckpointError(f"{path} holds a generator this code cannot build: {error}") from error
        try:
            generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
        except (RuntimeError, AttributeError) as error:
            raise CheckpointError(f"{path}: the {name} weights do not fit: {str(error).splitlines()[0]}") from error
        generators[name] = generator.to(device).eval()
    return generators, settings


def merge_records(profile: str, run_dir, device, seed: int = 0) -> dict:
    """Rebuild ``<run dir>/metrics.json`` from ``models/*.json``.

    A model whose record was scored with training that has advanced since (its
    ``train/<network>_<phase>.json`` differs from the one it copied) is listed as stale.
    """
    settings = select_profile(PROFILES, check_profile(profile))
    run_dir, device, seed = _checks.run_folder(run_dir), check_device(device), check_seed(seed)
    models = {p.stem: read_json(p) for p in sorted((run_dir / "models").glob("*.json"))}
    stale = []
    for name, r in models.items():
        for phase, info in (r.get("training") or {}).items():
            if phase not in PHASES:   # e.g. reflect's {"source": …}: no network, nothing to go stale
                continue
            path = run_dir / "train" / f"{network_of(name, phase)}_{phase}.json"
            if isinstance(info, dict) and path.is_file() and read_json(path) != info:
                stale.append(name)
                break
    record = {"metrics": {name: r["metrics"] for name, r in models.items()}, "stale": sorted(stale),
              "runs": {name: r["provenance"] for name, r in models.items()},
              "training": {name: r.get("training") for name, r in models.items()},
              "histories": {name: r.get("history", []) for name, r in models.items()},
              "reference": {"real_scenes": real_scene_reference(settings["size"], settings["eval_scenes"], seed)},
              "provenance": provenance(profile, seed, device, models=sorted(models))}
    write_json(run_dir / "metrics.json", record)
    return record


REQUIRED_MODELS = ("srn", "srn_no_cn", "srn_l1", "srn_confidence", "srn_deconv", "srn_hr", "ed", "reflect")


def record_dir(profile: str, run_dir=None) -> Path:
    """Where the runs of ``profile`` are recorded: the committed book record's folder, or the run dir."""
    check_profile(profile)
    return train.record_dir(profile, CHAPTER, None if run_dir is None else check_path(run_dir, "run_dir"))


def read_record(profile: str, run_dir=None) -> dict:
    """The recorded runs of ``profile`` (see :func:`labkit.train.read_run_record`)."""
    return train.read_run_record(record_dir(profile, run_dir) / "metrics.json", "labkit.papers.srn_runs", profile,
                                 REQUIRED_MODELS)


COMPARED = (("psnr_unknown", "PSNR", +1), ("ssim_unknown", "SSIM", +1), ("fcn_miou_unknown", "FCN-mIoU", +1),
            ("frechet_distance", "Fréchet", -1))


def claims(record: dict) -> list[dict]:
    """The chapter's claims, each checked against a record by explicit comparisons.

    Rows {"claim", "evidence", "verdict"}: "holds" when every comparison favours the
    claim, "does not hold" when none does, "mixed" otherwise, "not measured" when the
    record lacks a model it needs. Never typed by hand. Higher PSNR, SSIM and FCN-mIoU
    are better; lower Fréchet distance and colour error are better; an edge-sharpness
    ratio nearer 1 (in log terms) is better.
    "Comparable fidelity" means a PSNR within 0.5 dB.
    """
    _checks.record(record)
    m = record["metrics"]

    def better(a, b, key, sign):
        if key == "edge_sharpness_unknown":   # as sharp as the real scene (ratio 1) is best
            return abs(math.log(max(m[a][key], 1e-8))) < abs(math.log(max(m[b][key], 1e-8)))
        return (m[a][key] - m[b][key]) * sign > 0

    def compare(a, b):
        return ", ".join(f"{label} {m[a][key]:.3f} vs {m[b][key]:.3f}" for key, label, _ in COMPARED)

    def beats(a, b):
        return [better(a, b, key, sign) for key, _, sign in COMPARED]

    def context_norm():
        return ("CN improves colour and texture consistency between the known and the extrapolated region",
                f"colour error {m['srn']['colour_error_unknown']:.4f} vs {m['srn_no_cn']['colour_error_unknown']:.4f} "
                f"without CN; Fréchet {m['srn']['frechet_distance']:.3f} vs {m['srn_no_cn']['frechet_distance']:.3f}",
                verdict(better("srn", "srn_no_cn", "colour_error_unknown", -1),
                        better("srn", "srn_no_cn", "frechet_distance", -1)))

    def rsv():
        def row(other):
            return (f"vs {other}: edge sharpness {m['srn']['edge_sharpness_unknown']:.3f} vs "
                    f"{m[other]['edge_sharpness_unknown']:.3f}, PSNR {m['srn']['psnr_unknown']:.2f} vs "
                    f"{m[other]['psnr_unknown']:.2f} dB")
        tests = []
        for other in ("srn_l1", "srn_confidence"):
            tests += [better("srn", other, "edge_sharpness_unknown", +1),
                      abs(m["srn"]["psnr_unknown"] - m[other]["psnr_unknown"]) <= 0.5]
        return ("RSV gives sharper semantic boundaries than plain L1 and the confidence-driven weight, "
                "at comparable fidelity", f"{row('srn_l1')}; {row('srn_confidence')}", verdict(*tests))

    def architecture():
        return ("SRN beats the encoder–decoder (ED) and SRN-HR",
                f"vs ED: {compare('srn', 'ed')}; vs SRN-HR: {compare('srn', 'srn_hr')}",
                verdict(*beats("srn", "ed"), *beats("srn", "srn_hr")))

    def subpixel():
        return ("Sub-pixel feature expansion beats deconvolution",
                compare("srn", "srn_deconv"), verdict(*beats("srn", "srn_deconv")))

    def finetuning():
        plain = "srn_reconstruction_only"
        return ("Fine-tuning with ID-MRF and the adversarial terms makes the extension more realistic "
                "(the paper: sharper, more natural texture)",
                f"Fréchet {m['srn']['frechet_distance']:.3f} vs {m[plain]['frechet_distance']:.3f} for the same steps "
                f"with the reconstruction loss alone ({m['srn_pretrain']['frechet_distance']:.3f} after the first "
                f"phase); edge sharpness {m['srn']['edge_sharpness_unknown']:.3f} vs "
                f"{m[plain]['edge_sharpness_unknown']:.3f} ({m['srn_pretrain']['edge_sharpness_unknown']:.3f}); "
                f"PSNR {m['srn']['psnr_unknown']:.2f} vs {m[plain]['psnr_unknown']:.2f} dB",
                verdict(better("srn", plain, "frechet_distance", -1),
                        better("srn", plain, "edge_sharpness_unknown", +1)))

    def learned():
        return ("A learned extrapolation beats mirroring the known region",
                compare("srn", "reflect"), verdict(*beats("srn", "reflect")))

    return check_claims((context_norm, rsv, architecture, subpixel, finetuning, learned))


def main(argv=None) -> int:
    parser = run_argument_parser("labkit.papers.srn_runs", __doc__.split("\n")[0], PROFILES, CHAPTER,
                                 "write checkpoints/srn_<profile>.pt")
    parser.add_argument("--models", nargs="+", default=None, choices=MODEL_NAMES, help="default: every model")
    return train.run_from_command_line(parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
