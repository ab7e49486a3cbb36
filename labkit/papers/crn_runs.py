"""The CRN chapter's recorded runs: CRN, its ablations and the pix2pix baseline.

    python -m labkit.papers.crn_runs --profile book               # all five models
    python -m labkit.papers.crn_runs --profile full --device cuda --max-minutes 60
    python -m labkit.papers.crn_runs --profile book --models crn --export

Each model trains resumably (``<run dir>/train/<model>.pt``; run the same
command again to continue), is scored with :func:`labkit.synthesis.evaluate_synthesis`
and recorded in ``<run dir>/metrics.json`` (``reports/<profile>/crn/`` by
default) under ``metrics[<model>]``, with the provenance of the call that
scored it under ``runs[<model>]``, of the call that trained it under
``training[<model>]`` and its loss history under ``histories[<model>]``. ``--export`` also writes the generator in float16 to
``checkpoints/<model>_<profile>.pt`` for the notebook's "load, don't train" path.

The models (names fixed by the chapter's ablation table):

- ``crn``: the cascade, feature matching, K outputs with the diversity loss;
- ``crn_pixel_l1``: the same, but the loss sees only the pixels;
- ``crn_k1``: the same as ``crn`` with one output (no diversity loss);
- ``crn_single_scale``: a single full-resolution network of about the same
  parameter count, same loss; time-boxed (see ``single_scale_minutes``);
- ``pix2pix``: :mod:`labkit.pix2pix`, U-Net + PatchGAN, L1 + adversarial.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from ..checks import check_device, check_int, check_path, check_positive_int, check_seed
from ..claims import verdict
from ..checkpoints import CheckpointError, load_checkpoint, read_json, save_checkpoint, write_json
from ..features import load_feature_extractor
from ..networks import count_parameters
from ..pix2pix import Pix2Pix
from ..synthesis import evaluate_synthesis, real_scene_scores, scene_batch, training_scenes
from .. import train
from ..train import (REPO_ROOT, fit, provenance, reports_dir, run_argument_parser, select_profile)
from . import _checks
from .crn import (CHAPTER, MODEL_NAMES, PROFILES, CascadedRefinementNetwork, CRNTrainer, FeatureMatchingLoss,
                  SingleScaleNetwork)

GENERATOR_SETTINGS = ("size", "widths", "samples", "pix2pix_width", "discriminator_width")
"""What :func:`build_generator` reads of a profile's settings (all that an export keeps must include them)."""


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    return name


def check_profile(profile: str) -> str:
    """One of the chapter's profile names."""
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    return profile


def build_generator(name: str, settings: dict) -> torch.nn.Module:
    """The untrained generator of model ``name`` under a profile's ``settings``."""
    check_model_name(name)
    _checks.profile_settings(settings, PROFILES, GENERATOR_SETTINGS)
    size, samples = settings["size"], settings["samples"]
    if name == "pix2pix":
        return Pix2Pix(size, generator_width=settings["pix2pix_width"],
                       discriminator_width=settings["discriminator_width"]).generator
    if name == "crn_single_scale":
        cascade = CascadedRefinementNetwork(size, settings["widths"], samples)
        layers = 2 * len(cascade.refinement_modules)   # as many conv layers as the cascade
        width = SingleScaleNetwork.width_for_parameters(count_parameters(cascade), layers, samples)
        return SingleScaleNetwork(size, width, layers, samples)
    return CascadedRefinementNetwork(size, settings["widths"], 1 if name == "crn_k1" else samples)


def sampler(name: str, generator: torch.nn.Module, samples: int):
    """layout → (N, K, 3, H, W) in [0, 1] for evaluation (pix2pix: K dropout samples, K ≥ 1)."""
    check_model_name(name), _checks.module(generator, "generator"), check_positive_int(samples, "samples")
    if name == "pix2pix":
        return lambda layout: generator.sample(layout, samples).clamp(0, 1)
    return generator.sample


def train_model(name: str, settings: dict, device, run_dir: Path, max_minutes: float | None = None,
                progress: bool = True, seed: int = 0):
    """Train (or resume, or just load) model ``name``; returns (generator, FitResult).
    ``settings``: a profile's; ``max_minutes`` ≥ 0 or None; ``seed`` in [0, 2**32 − 1]."""
    check_model_name(name)
    _checks.profile_settings(settings, PROFILES)
    device = check_device(device)
    run_dir = check_path(run_dir, "run_dir")
    _checks.minutes(max_minutes), check_seed(seed)
    checkpoint = Path(run_dir) / "train" / f"{name}.pt"
    scenes = training_scenes(settings["size"], settings["train_scenes"], seed=seed)
    steps, batch_size = settings["steps"], settings["batch_size"]
    config = {"model": name, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}}
    config["seed"] = seed

    def batch_for_step(step):
        return {k: v.to(device) for k, v in scene_batch(scenes, step, batch_size, seed=seed).items()}

    torch.manual_seed(seed)
    if name == "pix2pix":
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ValueError("pix2pix trains in a single process: its loss steps the discriminator itself, "
                             "which DDP's gradient averaging does not cover; run it without torchrun")
        model = Pix2Pix(settings["size"], generator_width=settings["pix2pix_width"],
                        discriminator_width=settings["discriminator_width"]).to(device)
        optimizer, d_optimizer = model.optimizers()
        result = fit(model, optimizer, batch_for_step,
                     lambda m, b: m.loss(b["layout"], b["image"], d_optimizer), steps=steps,
                     checkpoint=checkpoint, max_minutes=max_minutes, progress=progress, description=name,
                     config=config, extra_optimizers={"discriminator": d_optimizer})
        return model.generator, result
    generator = build_generator(name, settings).to(device)
    extractor = None
    if name != "crn_pixel_l1":
        extractor = load_feature_extractor(settings.get("features", "auto"), device=device, verbose=progress)
    trainer = CRNTrainer(generator, FeatureMatchingLoss(extractor, calibration_steps=steps // 2)).to(device)
    optimizer = torch.optim.Adam(generator.parameters(), lr=settings["learning_rate"])
    if name == "crn_single_scale":
        budget = 60 * settings["single_scale_minutes"]
        spent = _spent_seconds(checkpoint)
        left = max(0.0, budget - spent) / 60
        max_minutes = left if max_minutes is None else min(max_minutes, left)
    result = fit(trainer, optimizer, batch_for_step, lambda m, b: m(b), steps=steps, checkpoint=checkpoint,
                 max_minutes=max_minutes, progress=progress, description=name, config=config)
    return generator, result


def _spent_seconds(checkpoint: Path) -> float:
    if not checkpoint.is_file():
        return 0.0
    return float(load_checkpoint(checkpoint).get("wall_time_s", 0.0))


def export_generator(name: str, generator: torch.nn.Module, settings: dict, path, record: dict | None = None) -> Path:
    """Write the generator alone, in float16, with its settings: the committed checkpoint."""
    check_model_name(name), _checks.module(generator, "generator")
    _checks.profile_settings(settings, PROFILES, GENERATOR_SETTINGS)
    path = check_path(path, "path")
    if record is not None:
        _checks.record(record, keys=(), name="record")
    state = {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu()
             for k, v in generator.state_dict().items()}
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
    return save_checkpoint(path, {"model_name": name, "generator": state, "settings": settings,
                                  "record": record or {}})


def load_generator(path, device="cpu") -> tuple[str, torch.nn.Module, dict]:
    """(model name, generator in eval mode, settings) from an exported checkpoint."""
    path = check_path(path, "path")
    device = check_device(device)
    if not path.is_file():
        raise FileNotFoundError(f"no exported CRN-chapter generator at {path}; train one with "
                                "`python -m labkit.papers.crn_runs --profile book --export`")
    state = load_checkpoint(path)
    if not {"model_name", "generator", "settings"} <= set(state) or not isinstance(state["settings"], dict) \
            or not isinstance(state["generator"], dict):
        raise CheckpointError(f"{path} is not an exported generator (expected keys model_name, generator, settings)")
    settings = {k: (tuple(v) if isinstance(v, list) else v) for k, v in state["settings"].items()}
    try:
        generator = build_generator(state["model_name"], settings)
    except ValueError as error:
        raise CheckpointError(f"{path} holds an export this code cannot build: {error}") from error
    try:
        generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state["generator"].items()})
    except RuntimeError as error:
        raise CheckpointError(f"{path} does not fit model {state['model_name']!r}: {str(error).splitlines()[0]}") from error
    return state["model_name"], generator.to(device).eval(), settings


def exported_path(name: str, profile: str) -> Path:
    check_model_name(name), check_profile(profile)
    return REPO_ROOT / "checkpoints" / f"{name}_{profile}.pt"


def run(profile: str = "book", models=MODEL_NAMES, device="auto", max_minutes: float | None = None,
        run_dir=None, export: bool = False, progress: bool = True, seed: int = 0) -> dict:
    """Train and score ``models``; merge their records into ``<run dir>/metrics.json``.

    ``max_minutes`` is the budget of *each* model's training in this call.
    Returns the whole metrics file as a dict.
    """
    settings = select_profile(PROFILES, check_profile(profile))
    # everything is checked before any training
    models = [check_model_name(name) for name in _checks.names(models, "models")]
    device = check_device(device)
    _checks.minutes(max_minutes), _checks.flag(export, "export"), check_seed(seed)
    run_dir = check_path(run_dir, "run_dir") if run_dir is not None else reports_dir(profile, CHAPTER)
    for name in models:
        started = time.monotonic()
        generator, result = train_model(name, settings, device, run_dir, max_minutes=max_minutes,
                                        progress=progress, seed=seed)
        scores = evaluate_synthesis(sampler(name, generator, settings["samples"]), settings["size"],
                                    settings["eval_scenes"], settings["diversity_layouts"], device=device, seed=seed)
        scores.update(parameters=count_parameters(generator), train_seconds=round(result.wall_time_s, 1),
                      steps=result.steps_done, finished=result.finished)
        run_info = provenance(profile, seed, device, wall_time_s=time.monotonic() - started,
                              command=f"python -m labkit.papers.crn_runs --profile {profile} --models {name}")
        # a call that only re-scores a finished model keeps the provenance of the call that trained it
        record_path = run_dir / "models" / f"{name}.json"
        previous = read_json(record_path) if record_path.is_file() else {}
        if result.steps_done > result.resumed_from or not previous:
            training = run_info
        else:
            training = previous.get("training", previous["provenance"])
        model_record = {"metrics": scores, "provenance": run_info, "history": result.history, "training": training}
        write_json(record_path, model_record)
        ranked = sorted(range(scores["samples_per_layout"]), key=lambda slot: -scores["fcn_miou_per_output"][slot])
        save_sample_grid(name, generator, settings, run_dir / "samples" / f"{name}.png", device, seed, slots=ranked)
        if export:
            export_generator(name, generator, settings, exported_path(name, profile), record=model_record)
        if progress:
            print(f"{name}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in scores.items()))
    return merge_records(profile, run_dir, device, seed)


SAMPLE_SCENES = 3   # test layouts in each model's sample grid


def save_sample_grid(name: str, generator, settings: dict, path, device, seed: int = 0, slots=None) -> Path:
    """A PNG of up to 4 outputs for each of the first test layouts, saved with the run,
    so the chapter can show every ablation's images without its weights.
    ``slots``: the output slots to show, in order (default 0, 1, …); runs pass
    them ranked by FCN-mIoU, best first."""
    check_model_name(name), _checks.module(generator, "generator")
    _checks.profile_settings(settings, PROFILES, ("size", "samples"))
    path, device, seed = check_path(path, "path"), check_device(device), check_seed(seed)
    if slots is not None and (isinstance(slots, (str, bytes)) or not isinstance(slots, (list, tuple, range))):
        raise ValueError(f"slots must be a list of output slots (integers), got {slots!r}")
    for slot in slots or ():
        check_int(slot, "slots[…]", minimum=0, maximum=settings["samples"] - 1)

    import matplotlib
    import matplotlib.pyplot as plt
    import numpy as np

    from ..data import colorize, render_batch
    from ..plotting import to_numpy_image, write_png
    from ..synthesis import generate

    _, labels = render_batch(settings["size"], SAMPLE_SCENES, split="test", seed=seed)
    outputs = generate(sampler(name, generator, settings["samples"]), labels, device=device)
    slots = list(range(outputs.shape[1]) if slots is None else slots)[:4]
    for slot in slots:
        check_int(slot, "slots[…]", minimum=0, maximum=outputs.shape[1] - 1)
    shown = len(slots)
    with matplotlib.rc_context({"figure.dpi": 100}):
        fig, axes = plt.subplots(SAMPLE_SCENES, shown + 1, figsize=(2.2 * (shown + 1), 1.25 * SAMPLE_SCENES),
                                 squeeze=False)
        for row in range(SAMPLE_SCENES):
            axes[row, 0].imshow(colorize(labels[row].numpy()))
            for col in range(shown):
                axes[row, col + 1].imshow(np.clip(to_numpy_image(outputs[row, slots[col]]), 0, 1))
        for ax in axes.flat:
            ax.set_xticks([]), ax.set_yticks([])
        axes[0, 0].set_title("layout", fontsize=9)
        for col in range(shown):
            axes[0, col + 1].set_title(f"{name} #{slots[col]}", fontsize=9)
    return write_png(fig, path, close=True)


def merge_records(profile: str, run_dir, device, seed: int = 0) -> dict:
    """Rebuild ``<run dir>/metrics.json`` from the per-model records in ``models/``
    (so models trained by separate processes end up in one file), with the
    real scenes' scores under ``reference``."""
    settings = select_profile(PROFILES, check_profile(profile))
    run_dir, device, seed = _checks.run_folder(run_dir), check_device(device), check_seed(seed)
    records = {p.stem: read_json(p) for p in sorted((run_dir / "models").glob("*.json"))}
    if not records:
        raise FileNotFoundError(f"run_dir {run_dir} has no model records (models/*.json) to merge; "
                                f"run `python -m labkit.papers.crn_runs --profile {profile} --run-dir {run_dir}` first")
    record = {"metrics": {name: r["metrics"] for name, r in records.items()},
              "runs": {name: r["provenance"] for name, r in records.items()},
              "training": {name: r.get("training", r["provenance"]) for name, r in records.items()},
              "histories": {name: r.get("history", []) for name, r in records.items()},
              "reference": {"real_scenes": real_scene_scores(settings["size"], settings["eval_scenes"], seed=seed)},
              "provenance": provenance(profile, seed, device, models=sorted(records))}
    write_json(run_dir / "metrics.json", record)
    return record


def main(argv=None) -> int:
    parser = run_argument_parser("labkit.papers.crn_runs", __doc__.split("\n")[0], PROFILES, CHAPTER,
                                 "write checkpoints/<model>_<profile>.pt", "training budget per model in this call")
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    return train.run_from_command_line(parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())


COMMITTED_RECORD = REPO_ROOT / "reports" / "book" / CHAPTER / "metrics.json"


def read_record(profile: str, run_dir=None) -> dict:
    """The recorded runs of ``profile``: the committed book record, or ``<run dir>/metrics.json``.
    Refused (with the command that fixes it) when a model is missing or stopped before its last
    step, except the single-scale baseline once its time budget (``single_scale_minutes``) is spent."""
    check_profile(profile)
    if run_dir is not None:
        check_path(run_dir, "run_dir")
    path = COMMITTED_RECORD if profile == "book" and run_dir is None else Path(run_dir or reports_dir(profile, CHAPTER)) / "metrics.json"
    record = read_json(path)
    metrics = record.get("metrics", {})
    missing = [name for name in MODEL_NAMES if name not in metrics]
    if missing:
        raise ValueError(f"{path} has no record of {missing}; run "
                         f"`python -m labkit.papers.crn_runs --profile {profile} --models {' '.join(missing)}`")
    budget = 60 * select_profile(PROFILES, profile)["single_scale_minutes"]
    unfinished = [name for name in MODEL_NAMES if metrics[name].get("finished") is False
                  and not (name == "crn_single_scale" and metrics[name].get("train_seconds", 0) >= 0.99 * budget)]
    if unfinished:
        raise ValueError(f"{path} has models that stopped before their last step: {unfinished}; run "
                         f"`python -m labkit.papers.crn_runs --profile {profile} --models {' '.join(unfinished)}`")
    return record


def claims(record: dict) -> list[dict]:
    """The chapter's claims, each checked against a record by explicit comparisons.

    Returns rows {"claim", "evidence", "verdict"}; the verdict is "holds" when
    every comparison listed for the claim favours it, "does not hold" when
    none does, and "mixed" otherwise; it is never typed by hand. Higher is
    better for FCN-mIoU and diversity, lower for the Fréchet distance. "best"
    is each model's best output slot, "all" pools all K outputs.
    """
    _checks.record(record, ("metrics", "reference"))
    missing = [name for name in MODEL_NAMES if name not in record["metrics"]]
    if missing or "real_scenes" not in record["reference"]:
        raise ValueError(f"record lacks {missing or ['reference.real_scenes']}; expected a complete CRN-chapter record "
                         "(see read_record)")
    m, real = record["metrics"], record["reference"]["real_scenes"]

    def value(name, key, best=False):
        return m[name][f"{key}_best_output"] if best else m[name][key]

    def better(a, b, key, best=False):
        first, second = value(a, key, best), value(b, key, best)
        return first < second if key == "frechet_distance" else first > second

    def fmt(name, key, best=False):
        number = value(name, key, best)
        return f"{number:.1f}" if key == "frechet_distance" else f"{number:.3f}"

    def usable(name):
        """Output slots whose FCN-mIoU reaches half the real scenes'."""
        return sum(score >= 0.5 * real["fcn_miou"] for score in m[name]["fcn_miou_per_output"])

    rows = []
    share = value("crn", "fcn_miou", best=True) / real["fcn_miou"]
    rows.append({
        "claim": "Feature matching without an adversarial loss yields recognisable layouts",
        "evidence": (f"crn's best output: FCN-mIoU {fmt('crn', 'fcn_miou', True)} = {share:.0%} of the real scenes' "
                     f"{real['fcn_miou']:.3f} (recognisable: at least 50%); pixel-L1 loss, best output: "
                     f"{fmt('crn_pixel_l1', 'fcn_miou', True)}; Fréchet (best) {fmt('crn', 'frechet_distance', True)} "
                     f"vs {fmt('crn_pixel_l1', 'frechet_distance', True)}"),
        "verdict": verdict(share >= 0.5, better("crn", "crn_pixel_l1", "fcn_miou", True),
                           better("crn", "crn_pixel_l1", "frechet_distance", True))})
    rows.append({
        "claim": "The cascade beats a single-scale network of similar size",
        "evidence": (f"best output: FCN-mIoU {fmt('crn', 'fcn_miou', True)} vs {fmt('crn_single_scale', 'fcn_miou', True)}, "
                     f"Fréchet {fmt('crn', 'frechet_distance', True)} vs "
                     f"{fmt('crn_single_scale', 'frechet_distance', True)}; {m['crn']['parameters']:,} vs "
                     f"{m['crn_single_scale']['parameters']:,} parameters, {m['crn']['steps']} vs "
                     f"{m['crn_single_scale']['steps']} steps in {m['crn']['train_seconds'] / 60:.0f} vs "
                     f"{m['crn_single_scale']['train_seconds'] / 60:.0f} min"),
        "verdict": verdict(better("crn", "crn_single_scale", "fcn_miou", True),
                           better("crn", "crn_single_scale", "frechet_distance", True))})
    k = m["crn"]["samples_per_layout"]
    rows.append({
        "claim": "The diversity loss gives distinct samples without losing fidelity",
        "evidence": (f"diversity {fmt('crn', 'diversity')} (K={k}) vs {fmt('crn_k1', 'diversity')} (K=1); "
                     f"{usable('crn')} of {k} outputs reach half the real FCN-mIoU; all outputs: FCN-mIoU "
                     f"{fmt('crn', 'fcn_miou')} vs {fmt('crn_k1', 'fcn_miou')} for K=1 (fidelity kept if within 0.02)"),
        "verdict": verdict(m["crn"]["diversity"] > m["crn_k1"]["diversity"],
                           m["crn"]["fcn_miou"] >= m["crn_k1"]["fcn_miou"] - 0.02)})
    rows.append({
        "claim": "CRN beats pix2pix (the paper: human judges preferred CRN's images on Cityscapes)",
        "evidence": (f"all outputs: FCN-mIoU {fmt('crn', 'fcn_miou')} vs {fmt('pix2pix', 'fcn_miou')}, Fréchet "
                     f"{fmt('crn', 'frechet_distance')} vs {fmt('pix2pix', 'frechet_distance')}; best output: "
                     f"FCN-mIoU {fmt('crn', 'fcn_miou', True)} vs {fmt('pix2pix', 'fcn_miou', True)}, Fréchet "
                     f"{fmt('crn', 'frechet_distance', True)} vs {fmt('pix2pix', 'frechet_distance', True)}"),
        "verdict": verdict(better("crn", "pix2pix", "fcn_miou"), better("crn", "pix2pix", "frechet_distance"),
                           better("crn", "pix2pix", "fcn_miou", True),
                           better("crn", "pix2pix", "frechet_distance", True))})
    return rows
