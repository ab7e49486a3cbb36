"""The SEIGAN chapter's recorded runs: SEIGAN, its ablations and the mask references.

    python -m labkit.papers.seigan_runs --profile book --export      # every model
    python -m labkit.papers.seigan_runs --profile full --device cuda
    python -m labkit.papers.seigan_runs --profile book --models no_cycle

Training sees unpaired object scenes X (with their boxes) and backgrounds Y, nothing else.
StreetScenes also knows every object's true mask and the true background behind it; the
evaluation uses them on held-out pairs (x_i, y_i) of the test split:

- ``mask_iou``: IoU of G_seg's mask (> 0.5) with the true mask, averaged over the test objects
  (and per class in ``mask_iou_per_class``); ``mask_precision`` and ``mask_recall`` (the share of
  the predicted mask on the object, the share of the object covered) and ``mask_area_ratio``
  (predicted over true area) tell a box-like mask from a collapsed one;
- inpainting, scored in **the hole**, the pixels the object hid (x and its true background B_x
  differ nowhere else): ``inpaint_psnr`` and ``inpaint_ssim`` (the SSIM map averaged over the
  hole) of x̂ against B_x, ``inpaint_perceptual`` (the judge's perceptual distance, whole image,
  which outside the hole compares equal pixels), ``inpaint_psnr_box`` over the object's box, and
  ``inpaint_frechet``, the Fréchet distance of the x̂ to the true backgrounds;
- ``frechet_distance``: composites ŷ against real object scenes (judge features);
  ``fcn_miou`` / ``fcn_pixel_accuracy``: the judge on ŷ against the layout the paste intends
  (y's labels with the object's class on its true mask).

``bbox_as_mask`` (the box itself as the mask: the floor) and ``supervised_segmenter`` (G_seg
trained on the true masks: the ceiling) have masks only; their composites are plain pastes.
Each trained network resumes from ``<run dir>/train/<model>.pt``; ``metrics.json`` merges the
per-model records ``models/<model>.json``. ``--export`` writes SEIGAN's three generators to
``checkpoints/seigan_<profile>.pt``, and its two discriminators with the supervised segmenter to
``checkpoints/seigan_<profile>_extra.pt`` (float16).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import train
from ..checkpoints import CheckpointError, load_checkpoint, read_json, save_checkpoint, write_json
from ..checks import check_device, check_int, check_path, check_positive_int, check_seed
from ..claims import beyond_spread, check_claims, verdict
from ..data import CLASS_NAMES
from ..features import load_feature_extractor
from ..metrics import fcn_score, frechet_distance_from_embeddings, judge_embeddings
from ..networks import float32_region
from ..pix2pix import lsgan_loss
from ..train import REPO_ROOT, fit, provenance, reports_dir, run_argument_parser, select_profile
from . import _checks
from .seigan import (CHAPTER, CYCLEGAN_BETAS, LOSS_WEIGHTS, MODEL_NAMES, MODEL_SPECS, PROFILES, TRAINED_MODELS,
                     SeiganTrainer, Segmenter, box_masks, composite)

BACKGROUND_START = 50_000
REFERENCE_START = 25_000
"""Backgrounds are drawn from scene indices from 50,000 on, and the test's reference object scenes
from 25,000 on, far from the indices the object scenes scan, so that no background is the
emptied version of an object scene and no reference scene is one of the pasted ones."""
METRIC_KEYS = ("mask_iou", "mask_precision", "mask_recall", "inpaint_psnr", "inpaint_ssim", "inpaint_perceptual",
               "inpaint_psnr_box", "inpaint_frechet", "frechet_distance", "fcn_miou", "fcn_pixel_accuracy")
COLLAPSED_AREA_RATIO = 0.5
"""A model whose masks cover, on average, less than half the true masks' area has collapsed
towards the empty mask: the shortcut the cycle allows, since with m = 0 nothing is pasted and
x̂̂ = G_enh(x) ≈ x satisfies the object's round trip."""
EVALUATION_NOISE_SEED = 1234


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    return name


def check_profile(profile: str) -> str:
    """One of the chapter's profile names."""
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    return profile


TRAIN_KEYS = ("objects", "boxes", "backgrounds")
TEST_KEYS = TRAIN_KEYS + ("masks", "classes", "labels", "true_backgrounds", "object_labels", "reference_objects")


def _check_data(value, keys, name: str) -> dict:
    """A part of :func:`chapter_data` holding ``keys``, its objects and backgrounds at least one image each."""
    _checks.settings(value, keys, name)
    for key in ("objects", "backgrounds"):
        _checks.images_batch(value[key], f"{name}[{key!r}]")
    if len(value["boxes"]) != len(value["objects"]):
        raise ValueError(f"{name}: {len(value['objects'])} objects but {len(value['boxes'])} boxes")
    return value


# --------------------------------------------------------------------------- data

def chapter_data(settings: dict, seed: int = 0, splits=("train", "test")) -> dict:
    """The profile's unpaired training sets and held-out test pairs, for the ``splits`` asked for:

    - ``train``: ``objects`` (N, 3, H, W), ``boxes`` (N, 4), ``classes`` (N,), ``backgrounds``
      (M, 3, H, W); ``masks`` (N, 1, H, W) for the supervised reference only;
    - ``test``: the same for ``test_pairs`` pairs (object i goes onto background i), plus
      ``true_backgrounds`` (each object scene without its object), ``object_labels``,
      ``background_labels``, ``labels`` (the layout a paste intends: y's labels with the object's
      class on its true mask) and ``reference_objects``: as many other real object scenes, the
      real set the composites' Fréchet distance is measured against.

    Object scenes, backgrounds and reference scenes come from disjoint ranges of scene indices
    (``indices``, ``background_indices``)."""
    from .seigan import object_scenes

    _checks.profile_settings(settings, PROFILES, ("size", "train_objects", "train_backgrounds", "test_pairs"))
    check_seed(seed)
    splits = _checks.names(splits, "splits")
    unknown = [split for split in splits if split not in ("train", "test")]
    if unknown or not splits:
        raise ValueError(f"splits must be some of ('train', 'test'), got {splits}")
    size = settings["size"]
    counts = {"train": (settings["train_objects"], settings["train_backgrounds"]),
              "test": (settings["test_pairs"], settings["test_pairs"])}
    data = {}
    for split in splits:
        if split not in counts:
            raise ValueError(f"unknown split {split!r}; expected 'train' or 'test'")
        objects_count, backgrounds_count = counts[split]
        scenes = object_scenes(size, objects_count, split=split, seed=seed)
        emptied = object_scenes(size, backgrounds_count, split=split, seed=seed, start=BACKGROUND_START)
        part = {"objects": torch.stack([s["image"] for s in scenes]), "boxes": torch.stack([s["box"] for s in scenes]),
                "classes": torch.tensor([s["class"] for s in scenes]),
                "masks": torch.stack([s["mask"] for s in scenes]),
                "backgrounds": torch.stack([s["background"] for s in emptied]),
                "indices": [s["index"] for s in scenes], "background_indices": [s["index"] for s in emptied]}
        if split == "test":
            part["true_backgrounds"] = torch.stack([s["background"] for s in scenes])
            part["object_labels"] = torch.stack([s["labels"] for s in scenes])
            part["background_labels"] = torch.stack([s["background_labels"] for s in emptied])
            labels = part["background_labels"].clone()
            for i, s in enumerate(scenes):
                labels[i][s["mask"][0] > 0] = s["class"]
            part["labels"] = labels
            reference = object_scenes(size, objects_count, split=split, seed=seed, start=REFERENCE_START)
            part["reference_objects"] = torch.stack([s["image"] for s in reference])
            part["reference_indices"] = [s["index"] for s in reference]
        data[split] = part
    return data


def batch_sampler(train_data: dict, batch_size: int, seed: int = 0, device="cpu"):
    """step → the step's batch: ``batch_size`` object scenes and, independently, ``batch_size``
    backgrounds, drawn with a generator seeded by (seed, step), so a resumed run sees the same batches.
    batch_size ≥ 1; the batch of a step ≥ 0."""
    _check_data(train_data, TRAIN_KEYS, "train_data")
    check_positive_int(batch_size, "batch_size"), check_seed(seed)
    device = check_device(device)
    objects, boxes, backgrounds = train_data["objects"], train_data["boxes"], train_data["backgrounds"]

    def batch(step: int) -> dict:
        check_int(step, "step", minimum=0)
        rng = torch.Generator().manual_seed(seed * 1_000_003 + step)
        i = torch.randint(len(objects), (batch_size,), generator=rng)
        j = torch.randint(len(backgrounds), (batch_size,), generator=rng)
        return {"objects": objects[i].to(device), "boxes": boxes[i], "backgrounds": backgrounds[j].to(device)}
    return batch


# --------------------------------------------------------------------------- training

def _config(name: str, settings: dict, seed: int, features=None) -> dict:
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
    config = {"kind": "seigan", "model": name, "seed": seed, **plain, "loss_weights": dict(LOSS_WEIGHTS),
              "spec": MODEL_SPECS.get(name)}
    if features is not None:
        config["perceptual_features"] = features.describe()
    return config


def reconstruction_features(settings: dict, device, verbose: bool = False):
    """The frozen features of l_bg^rec: the judge's four encoder stages (content on the first two,
    texture on the last two), or VGG-19's relu1_1 … relu4_1 when the profile says "auto" and the
    weights are there."""
    _checks.settings(settings, ("features",))
    kind = settings["features"]
    if kind not in ("auto", "judge", "vgg19"):
        raise ValueError(f"settings['features'] must be 'auto', 'judge' or 'vgg19', got {kind!r}")
    device = check_device(device)
    layers = {"judge": ("enc1", "enc2", "enc3", "enc4"), "vgg19": ("relu1_1", "relu2_1", "relu3_1", "relu4_1")}
    extractor = load_feature_extractor(kind, layers=None if kind == "auto" else layers[kind], device=device,
                                       verbose=verbose)
    if tuple(extractor.layer_names) != layers[extractor.name]:
        extractor = load_feature_extractor(extractor.name, layers=layers[extractor.name], device=device,
                                           verbose=False)
    return extractor


def train_model(name: str, data: dict, settings: dict, device, run_dir: Path, features,
                max_minutes: float | None = None, progress: bool = True, seed: int = 0,
                stop_after: int | None = None):
    """Train (or resume, or load) model ``name``; returns (trainer in eval mode, FitResult).
    ``stop_after`` ends this call after that many steps (an interruption, for the tests)."""
    if not isinstance(name, str) or name not in TRAINED_MODELS:
        raise ValueError(f"model {name!r} has no networks to train; trained models are {TRAINED_MODELS}")
    _checks.settings(data, ("train",), "data"), _check_data(data["train"], TRAIN_KEYS, "data['train']")
    _checks.profile_settings(settings, PROFILES)
    device, run_dir = check_device(device), check_path(run_dir, "run_dir")
    _checks.minutes(max_minutes), check_seed(seed)
    if stop_after is not None:
        check_positive_int(stop_after, "stop_after")
    torch.manual_seed(seed)   # the same initial weights whichever models ran before in this process
    trainer = SeiganTrainer(MODEL_SPECS[name], settings, features, seed).to(device)
    generator_optimizer = torch.optim.Adam(trainer.generator_parameters(), lr=settings["learning_rate"],
                                           betas=CYCLEGAN_BETAS)
    discriminator_optimizer = torch.optim.Adam(trainer.discriminator_parameters(), lr=settings["learning_rate"],
                                               betas=CYCLEGAN_BETAS)
    result = fit(trainer, generator_optimizer, batch_sampler(data["train"], settings["batch_size"], seed, device),
                 lambda model, batch: model.iteration_loss(batch, discriminator_optimizer),
                 steps=settings["iterations"], checkpoint=Path(run_dir) / "train" / f"{name}.pt",
                 max_minutes=max_minutes, progress=progress, description=name,
                 config=_config(name, settings, seed, features), stop_after=stop_after,
                 extra_optimizers={"discriminator": discriminator_optimizer})
    return trainer.eval(), result


def train_supervised_segmenter(data: dict, settings: dict, device, run_dir: Path, max_minutes=None,
                               progress: bool = True, seed: int = 0):
    """The ceiling: G_seg's architecture trained on the true masks (binary cross-entropy inside
    the box; outside it the mask is zero by construction), batches of 2·batch_size."""
    _checks.settings(data, ("train",), "data"), _check_data(data["train"], TRAIN_KEYS + ("masks",), "data['train']")
    _checks.profile_settings(settings, PROFILES)
    device, run_dir = check_device(device), check_path(run_dir, "run_dir")
    _checks.minutes(max_minutes), check_seed(seed)
    torch.manual_seed(seed)
    segmenter = Segmenter(settings["width"], settings["depth"]).to(device)
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=settings["learning_rate"], betas=CYCLEGAN_BETAS)
    train_data = data["train"]

    def batch(step):
        rng = torch.Generator().manual_seed(seed * 1_000_003 + step)
        i = torch.randint(len(train_data["objects"]), (2 * settings["batch_size"],), generator=rng)
        return {"objects": train_data["objects"][i].to(device), "boxes": train_data["boxes"][i],
                "masks": train_data["masks"][i].to(device)}

    def loss_fn(model, b):
        inside = box_masks(b["boxes"], b["objects"].shape[-2:]).to(device)
        masks = model(b["objects"], b["boxes"])
        with float32_region():   # CUDA autocast refuses binary_cross_entropy
            masks = masks.float().clamp(1e-6, 1 - 1e-6)
            loss = (F.binary_cross_entropy(masks, b["masks"], reduction="none") * inside).sum() / inside.sum()
        return loss, {}

    result = fit(segmenter, optimizer, batch, loss_fn, steps=settings["segmenter_iterations"],
                 checkpoint=Path(run_dir) / "train" / "supervised_segmenter.pt", max_minutes=max_minutes,
                 progress=progress, description="supervised segmenter",
                 config=_config("supervised_segmenter", settings, seed))
    return segmenter.eval(), result


# --------------------------------------------------------------------------- evaluation

def mask_iou(predicted: torch.Tensor, true: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(N,) IoU of (predicted > threshold) with the true binary masks, both (N, 1, H, W), N ≥ 1;
    threshold in [0, 1]."""
    _checks.tensor(predicted, "predicted", shape="(N, 1, H, W)", ndim=4, channels=1)
    _checks.tensor(true, "true", shape="(N, 1, H, W)", ndim=4, channels=1, floating=False)
    if predicted.shape != true.shape:
        raise ValueError(f"predicted {tuple(predicted.shape)} and true {tuple(true.shape)} masks must have the same shape")
    from ..checks import check_probability

    check_probability(threshold, "threshold")
    hard = predicted > threshold
    truth = true > 0.5
    intersection = (hard & truth).flatten(1).sum(1).double()
    union = (hard | truth).flatten(1).sum(1).double()
    return intersection / union.clamp(min=1)


def mask_overlap(predicted: torch.Tensor, true: torch.Tensor, threshold: float = 0.5) -> dict:
    """(N,) precision |p ∩ t| / |p|, recall |p ∩ t| / |t| and area ratio |p| / |t| of (predicted >
    threshold) against the true masks, both (N, 1, H, W); an empty prediction has precision 0. Every
    true mask must be non-empty (the ratios are relative to it)."""
    mask_iou(predicted, true, threshold)   # the same checks
    if not bool((true > 0.5).flatten(1).any(1).all()):
        raise ValueError("true masks must each cover at least one pixel: precision, recall and area are relative to it")
    hard, truth = predicted > threshold, true > 0.5
    both = (hard & truth).flatten(1).sum(1).double()
    predicted_area, true_area = hard.flatten(1).sum(1).double(), truth.flatten(1).sum(1).double()
    return {"precision": both / predicted_area.clamp(min=1), "recall": both / true_area.clamp(min=1),
            "area_ratio": predicted_area / true_area.clamp(min=1)}


def _psnr(a: torch.Tensor, b: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(N,) PSNR of images in [0, 1], over the pixels where ``weights`` (N, 1, H, W) is 1."""
    mse = ((a - b) ** 2 * weights).flatten(1).sum(1) / (3 * weights.flatten(1).sum(1)).clamp(min=1)
    return 10 * torch.log10(1 / mse.clamp(min=1e-10))


@torch.no_grad()
def swap_outputs(trainer: SeiganTrainer | None, test: dict, masks: torch.Tensor | None = None, device="cpu",
                 batch_size: int = 32) -> dict:
    """The first swap on the test pairs, on the CPU: ``{"masks", "pasted", "moved", "inpainted"}``.
    With ``trainer`` None it is a plain paste with the given ``masks`` (no enhancement, no inpainting).
    G_enh's noise comes from a fixed seed, so the scores are reproducible. batch_size ≥ 1."""
    _checks.module(trainer, "trainer", SeiganTrainer, allow_none=True)
    _check_data(test, TRAIN_KEYS, "test")
    if trainer is None:
        from .seigan import check_masks

        if masks is None:
            raise ValueError("masks must be given for a plain paste (trainer None)")
        check_masks(masks, test["objects"])
    check_positive_int(batch_size, "batch_size")
    device = check_device(device)
    outputs = {k: [] for k in ("masks", "pasted", "moved", "inpainted")}
    if trainer is not None:
        trainer.noise.manual_seed(EVALUATION_NOISE_SEED)
    for start in range(0, len(test["objects"]), batch_size):
        part = slice(start, start + batch_size)
        x, boxes, y = test["objects"][part].to(device), test["boxes"][part], test["backgrounds"][part].to(device)
        if trainer is None:
            m = masks[part].to(device)
            out = {"masks": m, "pasted": composite(m, x, y)}
            out["moved"] = out["pasted"]
        else:
            out = trainer(x, boxes, y, cycle=False)
        for key in outputs:
            if key in out:
                outputs[key].append(out[key].float().cpu())
    return {k: torch.cat(v) for k, v in outputs.items() if v}


def score_masks(masks: torch.Tensor, test: dict) -> dict:
    """Mask IoU of ``masks`` (N, 1, H, W) against the test set's true masks, overall and per class."""
    _checks.settings(test, ("masks", "classes"), "test")
    ious = mask_iou(masks, test["masks"])
    overlap = mask_overlap(masks, test["masks"])
    per_class = {CLASS_NAMES[int(c)]: float(ious[test["classes"] == c].mean()) for c in torch.unique(test["classes"])}
    return {"mask_iou": float(ious.mean()), "mask_iou_per_class": per_class,
            "mask_precision": float(overlap["precision"].mean()), "mask_recall": float(overlap["recall"].mean()),
            "mask_area_ratio": float(overlap["area_ratio"].mean())}


def score_composites(composites: torch.Tensor, test: dict, judge, real_embeddings: torch.Tensor) -> dict:
    """FCN-score of ``composites`` (N, 3, H, W) against the intended layouts, and their Fréchet distance to
    ``real_embeddings``."""
    _checks.settings(test, ("labels",), "test"), _checks.images_batch(composites, "composites")
    if len(composites) != len(test["labels"]):
        raise ValueError(f"{len(composites)} composites for {len(test['labels'])} test layouts")
    fcn = fcn_score(composites, test["labels"], judge)
    return {"frechet_distance": frechet_distance_from_embeddings(judge_embeddings(composites, judge), real_embeddings),
            "fcn_miou": fcn["miou"], "fcn_pixel_accuracy": fcn["pixel_accuracy"]}


def score_inpainting(inpainted: torch.Tensor, test: dict, judge, background_embeddings: torch.Tensor) -> dict:
    """``inpainted`` (N, 3, H, W) in [0, 1] against the true backgrounds, in the hole the object left
    (its true mask): PSNR, SSIM (the SSIM map averaged over the hole; its 11×11 windows around a thin
    hole also cover exact pixels outside it, which raises the score of every method alike) and the
    judge's perceptual distance (whole image); PSNR over the box; and the Fréchet distance to
    ``background_embeddings``."""
    from kornia.metrics import ssim

    from ..metrics import perceptual_distance

    _checks.settings(test, ("true_backgrounds", "boxes", "masks"), "test"), _checks.images_batch(inpainted, "inpainted")
    if inpainted.shape != test["true_backgrounds"].shape:
        raise ValueError(f"inpainted {tuple(inpainted.shape)} must have the true backgrounds' shape "
                         f"{tuple(test['true_backgrounds'].shape)}")
    from .seigan import check_masks

    check_masks(test["masks"], inpainted, "test['masks']")
    truth, hole = test["true_backgrounds"], (test["masks"] > 0.5).float()
    inside = box_masks(test["boxes"], truth.shape[-2:])
    ssim_map = ssim(inpainted, truth, 11).mean(1, keepdim=True)
    perceptual = torch.cat([perceptual_distance(inpainted[i:i + 64], truth[i:i + 64], judge)
                            for i in range(0, len(truth), 64)])
    return {"inpaint_psnr": float(_psnr(inpainted, truth, hole).mean()),
            "inpaint_ssim": float(((ssim_map * hole).flatten(1).sum(1) / hole.flatten(1).sum(1).clamp(min=1)).mean()),
            "inpaint_perceptual": float(perceptual.mean()),
            "inpaint_psnr_box": float(_psnr(inpainted, truth, inside).mean()),
            "inpaint_frechet": frechet_distance_from_embeddings(judge_embeddings(inpainted, judge),
                                                                background_embeddings)}


def real_embeddings(test: dict, judge) -> dict:
    """Judge embeddings of the real sets the Fréchet distances compare with: other real test
    object scenes than the pasted ones (for composites), and the true backgrounds behind the
    test objects (for inpainting)."""
    _checks.settings(test, ("reference_objects", "true_backgrounds"), "test")
    return {"objects": judge_embeddings(test["reference_objects"], judge),
            "backgrounds": judge_embeddings(test["true_backgrounds"], judge)}


def evaluate_trained(trainer: SeiganTrainer, test: dict, judge, embeddings: dict, device="cpu") -> tuple[dict, dict]:
    """Every score of a trained model on the test pairs, and its outputs."""
    _checks.module(trainer, "trainer", SeiganTrainer), _checks.settings(embeddings, ("objects", "backgrounds"),
                                                                          "embeddings")
    outputs = swap_outputs(trainer, test, device=device)
    scores = {**score_masks(outputs["masks"], test),
              **score_inpainting(outputs["inpainted"], test, judge, embeddings["backgrounds"]),
              **score_composites(outputs["moved"], test, judge, embeddings["objects"])}
    return scores, outputs


PRESSURE_PAIRS = 64
SATURATED = 0.01
"""A mask value within 0.01 of 0 or 1: G_seg's tanh is then so flat (dm/da = 2m(1 − m) < 0.02)
that a loss's push on m barely reaches the segmenter's weights."""


def mask_pressures(trainer: SeiganTrainer, test: dict, pairs: int = PRESSURE_PAIRS, device="cpu") -> dict:
    """Which loss term pushes the learned mask which way, on the first ``pairs`` test pairs (all of
    them if there are fewer).

    For each generator loss term L_k (weighted by ``LOSS_WEIGHTS``; pasted in place, the second
    swap as in training) the push on the mask is −∂L_k/∂m, averaged over the **object** pixels
    (the true mask) and over the **background in the box** (box minus true mask), and the same
    through G_seg's output nonlinearity, −∂L_k/∂a = −∂L_k/∂m · 2m(1 − m) with m = (tanh a + 1)/2.
    A positive push grows the mask there. Values are per pixel and summed over the batch
    (so that they do not shrink with the batch size). Also returned: the share of box pixels
    whose mask is saturated (within ``SATURATED`` of 0 or 1)."""
    _checks.module(trainer, "trainer", SeiganTrainer), _check_data(test, ("masks",) + TRAIN_KEYS, "test")
    check_int(pairs, "pairs", minimum=1)
    pairs = min(pairs, len(test["objects"]))
    device = check_device(device)
    if trainer._features[0] is None and trainer.spec["cycle"]:
        raise ValueError("the trainer needs its features (trainer._features) to compute the cycle's terms")
    from .seigan import check_masks

    check_masks(test["masks"], test["objects"], "test['masks']")
    x, boxes = test["objects"][:pairs].to(device), test["boxes"][:pairs]
    y = test["backgrounds"][:pairs].to(device)
    truth = (test["masks"][:pairs] > 0.5).float().to(device)
    inside = box_masks(boxes, x.shape[-2:]).to(device)
    regions = {"object": truth, "background_in_box": inside * (1 - truth)}
    noise, was_training = trainer.noise.get_state(), trainer.training
    trainer.noise.manual_seed(EVALUATION_NOISE_SEED)
    trainer.eval()
    try:
        out = trainer(x, boxes, y, cycle=trainer.spec["cycle"])
        masks = out["masks"]
        pasted_crops = trainer.crops(out["pasted"], out["paste_boxes"])
        moved_crops = trainer.crops(out["moved"], out["paste_boxes"]) if trainer.enhancer is not None else None
        terms = trainer.generator_terms(out, x, y, pasted_crops, moved_crops)
        slope = 2 * masks.detach() * (1 - masks.detach())
        pressures = {}
        for name, value in terms.items():
            (gradient,) = torch.autograd.grad(LOSS_WEIGHTS[name] * value, masks, retain_graph=True, allow_unused=True)
            push = torch.zeros_like(masks) if gradient is None else -gradient * len(x)   # identity: no path to m
            pressures[name] = {f"{where}_{kind}": float((g * region).sum() / region.sum().clamp(min=1))
                               for where, region in regions.items()
                               for kind, g in (("mask", push), ("logit", push * slope))}
    finally:   # the trainer is left as it was: its mode and its noise stream
        trainer.train(was_training)
        trainer.noise.set_state(noise)
    near = ((masks.detach() < SATURATED) | (masks.detach() > 1 - SATURATED)).float()
    return {"terms": pressures, "saturated_share": float((near * inside).sum() / inside.sum()),
            "pairs": pairs}


EARLY_STEPS = (0, 10, 20, 40, 80, 160)
PROBE_STEPS = 300
DRY_RUN_SCHEDULE = ((0, 1, 2), 2)
"""(early steps, probe steps) of the diagnostics in a dry run of the full profile
(:mod:`labkit.dry_run`): the same code, two steps each."""


def diagnostic_schedule(settings: dict) -> tuple[tuple[int, ...], int]:
    """(early steps, probe steps) of :func:`diagnostics` under ``settings``: :data:`EARLY_STEPS` and
    :data:`PROBE_STEPS`, or :data:`DRY_RUN_SCHEDULE` when the settings are a dry run's."""
    return DRY_RUN_SCHEDULE if settings.get("dry_run") else (EARLY_STEPS, PROBE_STEPS)


def early_dynamics(data: dict, settings: dict, features, device="cpu", seed: int = 0,
                   steps=EARLY_STEPS, pairs: int = PRESSURE_PAIRS) -> list[dict]:
    """The first ``max(steps)`` iterations of ``seigan`` replayed from the recorded run's initial
    weights, batches and random streams (in memory, no checkpoint), with :func:`mask_pressures` and
    the masks' area over the true masks' (:func:`mask_overlap`) on the first ``pairs`` test pairs
    at each of ``steps`` (those beyond the profile's iterations are dropped): what moves the masks
    before the discriminators have learned anything. The replay is exact on the CPU, where
    :func:`labkit.train.fit` trains in float32; a CUDA run trains under bf16 autocast, which the
    replay does not use."""
    _checks.settings(data, ("train", "test"), "data"), _checks.profile_settings(settings, PROFILES)
    if isinstance(steps, (int, str, bytes)) or not hasattr(steps, "__iter__"):
        raise ValueError(f"steps must be a list of iteration numbers ≥ 0, got {steps!r}")
    steps = sorted({check_int(step, "steps", minimum=0) for step in steps if step <= settings["iterations"]})
    if not steps:
        raise ValueError(f"steps must hold at least one iteration number in [0, {settings['iterations']}]")
    pairs = min(check_int(pairs, "pairs", minimum=1), len(data["test"]["objects"]))
    device, seed = check_device(device), check_seed(seed)
    torch.manual_seed(seed)   # as train_model: the recorded run's initial weights
    trainer = SeiganTrainer(MODEL_SPECS["seigan"], settings, features, seed).to(device)
    generator_optimizer = torch.optim.Adam(trainer.generator_parameters(), lr=settings["learning_rate"],
                                           betas=CYCLEGAN_BETAS)
    discriminator_optimizer = torch.optim.Adam(trainer.discriminator_parameters(), lr=settings["learning_rate"],
                                               betas=CYCLEGAN_BETAS)
    batches = batch_sampler(data["train"], settings["batch_size"], seed, device)
    test = data["test"]
    rows = []
    for step in range(steps[-1] + 1):
        if step in steps:
            pressures = mask_pressures(trainer, test, pairs, device)
            with torch.no_grad():
                masks = trainer.segmenter(test["objects"][:pairs].to(device), test["boxes"][:pairs]).float().cpu()
            area = float(mask_overlap(masks, test["masks"][:pairs])["area_ratio"].mean())
            rows.append({"step": step, "mask_area_ratio": area, **pressures})
        if step == steps[-1]:
            break
        trainer.train()
        loss, _ = trainer.iteration_loss(batches(step), discriminator_optimizer)
        generator_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        generator_optimizer.step()
    return rows


def _auc(real: torch.Tensor, fake: torch.Tensor) -> float:
    """The probability that a random real scores above a random fake (ties count half)."""
    real, fake = real.flatten().double(), fake.flatten().double()
    above = (real[:, None] > fake[None, :]).double().mean() + 0.5 * (real[:, None] == fake[None, :]).double().mean()
    return float(above)


def paste_detectability(data: dict, settings: dict, device="cpu", seed: int = 0, steps: int = PROBE_STEPS) -> dict:
    """Can a discriminator see a paste at all on this data? For each kind of mask (``empty``: nothing
    pasted, z = y, the collapsed mask; ``box``, the whole box; ``true_mask``), a fresh D_obj (the
    profile's architecture, on the same windows around the box) trains ``steps`` steps to tell real object scenes from pastes of their objects
    onto backgrounds (least squares, Adam, batches of 2·batch_size), on the training split only;
    returned is its AUC on the test pairs (0.5: cannot tell; 1: always tells)."""
    _checks.settings(data, ("train", "test"), "data"), _checks.profile_settings(settings, PROFILES)
    device, seed = check_device(device), check_seed(seed)
    check_positive_int(steps, "steps")
    from .seigan import ImageDiscriminator, box_crops

    size, batch = settings["object_crop"], 2 * settings["batch_size"]
    train_part, test = data["train"], data["test"]
    kinds = {"empty": lambda part, i: torch.zeros_like(part["masks"][i]),
             "box": lambda part, i: box_masks(part["boxes"][i], part["objects"].shape[-2:]),
             "true_mask": lambda part, i: part["masks"][i]}
    result = {"steps": steps}
    for kind, masks_of in kinds.items():
        torch.manual_seed(seed)
        discriminator = ImageDiscriminator(settings["discriminator_width"]).to(device)
        optimizer = torch.optim.Adam(discriminator.parameters(), lr=settings["learning_rate"], betas=CYCLEGAN_BETAS)
        rng = torch.Generator().manual_seed(seed * 1_000_003 + 77)
        for _ in range(steps):
            i = torch.randint(len(train_part["objects"]), (batch,), generator=rng)
            j = torch.randint(len(train_part["backgrounds"]), (batch,), generator=rng)
            x, boxes = train_part["objects"][i], train_part["boxes"][i]
            fake = composite(masks_of(train_part, i), x, train_part["backgrounds"][j])
            real_crops = box_crops(x, boxes, size).to(device)
            fake_crops = box_crops(fake, boxes, size).to(device)
            loss = lsgan_loss(discriminator(real_crops), True) + lsgan_loss(discriminator(fake_crops), False)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        every = torch.arange(len(test["objects"]))
        with torch.no_grad():
            real = discriminator(box_crops(test["objects"], test["boxes"], size).to(device)).float().mean((1, 2, 3))
            fake = composite(masks_of(test, every), test["objects"], test["backgrounds"])
            fake = discriminator(box_crops(fake, test["boxes"], size).to(device)).float().mean((1, 2, 3))
        result[kind] = _auc(real.cpu(), fake.cpu())
    return result


def diagnostics(data: dict, settings: dict, features, device="cpu", seed: int = 0) -> dict:
    """The chapter's experiments on why the masks go where they go: :func:`early_dynamics` and
    :func:`paste_detectability`."""
    early_steps, probe_steps = diagnostic_schedule(settings)
    return {"early_dynamics": early_dynamics(data, settings, features, device, seed, steps=early_steps),
            "paste_detectability": paste_detectability(data, settings, device, seed, steps=probe_steps)}


def evaluate_masks(masks: torch.Tensor, test: dict, judge, embeddings: dict) -> tuple[dict, dict]:
    """A mask-only model: its masks' IoU and its plain pastes' Fréchet distance and FCN-score."""
    _checks.settings(embeddings, ("objects", "backgrounds"), "embeddings")
    outputs = swap_outputs(None, test, masks)
    return {**score_masks(masks, test), **score_composites(outputs["pasted"], test, judge, embeddings["objects"])}, \
        outputs


def reference_scores(test: dict, judge, embeddings: dict) -> dict:
    """The references every model is read against:
    ``true_mask_paste`` (a plain paste with the true mask: the best a paste without enhancement can do),
    ``object_left_in`` (x itself as the "inpainting": the floor of the inpainting scores),
    ``biharmonic_fill`` (classical inpainting of the true hole, scikit-image's biharmonic
    equation: what a method with no learning does when it is told exactly where the object is),
    ``real_object_scenes`` (the FCN-score of the real x against their own layouts, the judge's ceiling)."""
    _check_data(test, TEST_KEYS, "test"), _checks.settings(embeddings, ("objects", "backgrounds"), "embeddings")
    true_paste = swap_outputs(None, test, test["masks"])["pasted"]
    real_fcn = fcn_score(test["objects"], test["object_labels"], judge)
    return {"true_mask_paste": {**score_masks(test["masks"], test),
                                **score_composites(true_paste, test, judge, embeddings["objects"])},
            "object_left_in": score_inpainting(test["objects"], test, judge, embeddings["backgrounds"]),
            "biharmonic_fill": score_inpainting(biharmonic_fill(test["objects"], test["masks"]), test, judge,
                                                embeddings["backgrounds"]),
            "real_object_scenes": {"fcn_miou": real_fcn["miou"], "fcn_pixel_accuracy": real_fcn["pixel_accuracy"]}}


def biharmonic_fill(images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Classical inpainting (scikit-image's ``inpaint_biharmonic``) of ``images`` (N, 3, H, W) in
    [0, 1] where ``masks`` (N, 1, H, W) > ½; the other pixels are returned unchanged."""
    from skimage.restoration import inpaint_biharmonic

    _checks.images_batch(images, "images")
    from .seigan import check_masks

    check_masks(masks, images)
    filled = []
    for image, mask in zip(images, masks):
        hole = mask[0].numpy() > 0.5
        if not hole.any():
            filled.append(image)
            continue
        out = inpaint_biharmonic(image.permute(1, 2, 0).double().numpy(), hole, channel_axis=-1)
        filled.append(torch.from_numpy(out).permute(2, 0, 1).to(images.dtype).clamp(0, 1))
    return torch.stack(filled)


SAMPLE_PAIRS = 6


def save_sample_figure(name: str, outputs: dict, test: dict, path, pairs: int = SAMPLE_PAIRS) -> Path:
    """A PNG of ``name``'s first test pairs: rows x, y, m, z, ŷ (and x̂ where there is an inpainter);
    1 ≤ pairs ≤ the test pairs."""
    check_model_name(name), _checks.settings(outputs, ("masks", "pasted", "moved"), "outputs")
    _check_data(test, TRAIN_KEYS, "test"), check_path(path, "path")
    check_int(pairs, "pairs", minimum=1, maximum=min(len(test["objects"]), len(outputs["masks"])))
    import matplotlib
    import matplotlib.pyplot as plt

    from ..plotting import to_numpy_image, write_png

    rows = [("x", test["objects"]), ("y", test["backgrounds"]), ("m", outputs["masks"].expand(-1, 3, -1, -1)),
            ("z = paste", outputs["pasted"]), ("ŷ", outputs["moved"])]
    if "inpainted" in outputs:
        rows.append(("x̂ = inpaint", outputs["inpainted"]))
    with matplotlib.rc_context({"figure.dpi": 100}):
        fig, axes = plt.subplots(len(rows), pairs, figsize=(1.9 * pairs, 1.05 * len(rows)), squeeze=False)
        for r, (label, images) in enumerate(rows):
            for c in range(pairs):
                axes[r, c].imshow(np.clip(to_numpy_image(images[c]), 0, 1))
                axes[r, c].set_xticks([]), axes[r, c].set_yticks([])
            axes[r, 0].set_ylabel(label, fontsize=8)
        fig.suptitle(name, fontsize=9)
    return write_png(fig, path, close=True)


# --------------------------------------------------------------------------- runs

def run(profile: str = "book", models=None, device="auto", max_minutes: float | None = None, run_dir=None,
        export=False, progress: bool = True, seed: int = 0) -> dict:
    """Train and score ``models`` (default: all); merge the records into ``<run dir>/metrics.json``.
    ``max_minutes`` bounds each network's training in this call. ``export`` True writes
    ``checkpoints/seigan_<profile>.pt`` and ``checkpoints/seigan_<profile>_extra.pt``; a folder
    writes ``seigan.pt`` and ``seigan_extra.pt`` there."""
    from ..metrics import _judge

    settings = select_profile(PROFILES, check_profile(profile))
    models = [check_model_name(name) for name in (MODEL_NAMES if models is None else _checks.names(models, "models"))]
    export = _checks.export_target(export)
    if export and not {"seigan", "supervised_segmenter"} <= set(models):
        raise ValueError(f"export writes seigan and supervised_segmenter; include them in models (got {models})")
    device = check_device(device)
    _checks.minutes(max_minutes), check_seed(seed)
    run_dir = check_path(run_dir, "run_dir") if run_dir is not None else reports_dir(profile, CHAPTER)
    command = f"python -m labkit.papers.seigan_runs --profile {profile}"
    data = chapter_data(settings, seed)
    test = data["test"]
    judge = _judge(None, device)
    embeddings = real_embeddings(test, judge)
    features = reconstruction_features(settings, device, verbose=progress) \
        if set(models) & set(TRAINED_MODELS) else None
    exported = {}
    for name in models:
        started = time.monotonic()
        result, network = None, None
        training = {"source": "no network: the bounding box is the mask"}
        if name == "supervised_segmenter":
            network, result = train_supervised_segmenter(data, settings, device, run_dir, max_minutes, progress, seed)
        elif name in TRAINED_MODELS:
            network, result = train_model(name, data, settings, device, run_dir, features, max_minutes, progress,
                                          seed)
        if result is not None:   # recorded before scoring, so a crash while scoring cannot pair old and new
            training = _training_record(run_dir, name, result, profile, seed, device, command + f" --models {name}")
        if name == "bbox_as_mask":
            scores, outputs = evaluate_masks(box_masks(test["boxes"], test["objects"].shape[-2:]), test, judge,
                                             embeddings)
        elif name == "supervised_segmenter":
            with torch.no_grad():
                masks = torch.cat([network(test["objects"][i:i + 32].to(device), test["boxes"][i:i + 32]).float().cpu()
                                   for i in range(0, len(test["objects"]), 32)])
            scores, outputs = evaluate_masks(masks, test, judge, embeddings)
        else:
            scores, outputs = evaluate_trained(network, test, judge, embeddings, device)
        model_diagnostics = None
        if name in TRAINED_MODELS:
            model_diagnostics = {"mask_pressures": mask_pressures(network, test, device=device)}
        if result is not None:
            exported[name] = network
            parts = network.generator_parameters() if name in TRAINED_MODELS else list(network.parameters())
            scores.update(parameters=sum(p.numel() for p in parts), steps=result.steps_done,
                          finished=result.finished, train_seconds=round(result.wall_time_s, 1))
        write_json(run_dir / "models" / f"{name}.json",
                   {"metrics": scores, "provenance": provenance(profile, seed, device,
                                                                wall_time_s=time.monotonic() - started,
                                                                command=command + f" --models {name}"),
                    "training": training, "history": result.history if result is not None else [],
                    **({"diagnostics": model_diagnostics} if model_diagnostics else {})})
        save_sample_figure(name, outputs, test, run_dir / "samples" / f"{name}.png")
        if progress:
            print(f"{name}: " + ", ".join(f"{k} {scores[k]:.4g}" for k in METRIC_KEYS if k in scores))
    if "seigan" in models:
        early_steps, probe_steps = diagnostic_schedule(settings)
        config = {**_config("seigan", settings, seed, features), "early_steps": list(early_steps),
                  "probe_steps": probe_steps, "probe_kinds": ["empty", "box", "true_mask"],
                  "pressure_pairs": PRESSURE_PAIRS}
        path = run_dir / "diagnostics.json"
        if not path.is_file() or read_json(path).get("config") != config:
            started = time.monotonic()
            found = diagnostics(data, settings, features, device, seed)
            write_json(path, {"config": config, **found,
                              "provenance": provenance(profile, seed, device, wall_time_s=time.monotonic() - started,
                                                       command=command + " --models seigan")})
    if export:
        export_models(exported["seigan"], exported["supervised_segmenter"], settings, profile,
                      None if export is True else export)
    return merge_records(profile, run_dir, device, reference_scores(test, judge, embeddings), seed)


def seed_run(profile: str, name: str, training_seed: int, device="auto", run_dir=None, max_minutes=None,
             progress: bool = True, seed: int = 0) -> dict:
    """Model ``name`` trained again with another ``training_seed`` (its initial weights, batch order,
    the enhancer's noise and the pools' draws) on the same data (data seed ``seed``: the same scenes)
    and scored on the same test pairs. Recorded as ``<run dir>/seeds/<name>_seed<k>.json`` with its
    sample figure (``.png``); its
    checkpoint resumes from ``<run dir>/seeds/seed<k>/train/``. The spread over training seeds says
    which differences between models one training run can resolve."""
    from ..metrics import _judge

    settings = select_profile(PROFILES, check_profile(profile))
    if not isinstance(name, str) or name not in TRAINED_MODELS:
        raise ValueError(f"model {name!r} has no networks to train; trained models are {TRAINED_MODELS}")
    check_seed(training_seed, "training_seed"), check_seed(seed)
    if training_seed == seed:
        raise ValueError(f"training_seed {training_seed} is the recorded run's own seed; pick another")
    device, run_dir = check_device(device), (check_path(run_dir, "run_dir") if run_dir is not None
                                             else reports_dir(profile, CHAPTER))
    command = (f"python -m labkit.papers.seigan_runs --profile {profile} --models {name} "
               f"--training-seed {training_seed}")
    data = chapter_data(settings, seed)
    judge = _judge(None, device)
    features = reconstruction_features(settings, device, verbose=progress)
    started = time.monotonic()
    seed_dir = Path(run_dir) / "seeds" / f"seed{training_seed}"
    network, result = train_model(name, data, settings, device, seed_dir, features, max_minutes, progress,
                                  training_seed)
    training = _training_record(seed_dir, name, result, profile, training_seed, device, command)
    scores, outputs = evaluate_trained(network, data["test"], judge, real_embeddings(data["test"], judge), device)
    scores.update(steps=result.steps_done, finished=result.finished, train_seconds=round(result.wall_time_s, 1))
    save_sample_figure(name, outputs, data["test"], Path(run_dir) / "seeds" / f"{name}_seed{training_seed}.png")
    record = {"model": name, "training_seed": training_seed, "data_seed": seed, "metrics": scores, "training": training,
              "provenance": provenance(profile, seed, device, wall_time_s=time.monotonic() - started, command=command)}
    write_json(Path(run_dir) / "seeds" / f"{name}_seed{training_seed}.json", record)
    return record


def _training_record(run_dir: Path, name: str, result, profile, seed, device, command) -> dict:
    """Provenance of the call that trained ``name`` (``train/<name>.json``), rewritten only when
    this call advanced the training."""
    path = Path(run_dir) / "train" / f"{name}.json"
    if not path.is_file() or result.steps_done > result.resumed_from or read_json(path).get("steps") != result.steps_done:
        write_json(path, provenance(profile, seed, device, wall_time_s=result.wall_time_s, command=command,
                                    steps=result.steps_done, finished=result.finished))
    return read_json(path)


def merge_records(profile: str, run_dir, device, reference: dict | None = None, seed: int = 0) -> dict:
    """Rebuild ``<run dir>/metrics.json`` from ``models/*.json``; a model whose training has
    advanced since it was scored is listed as stale. ``reference`` None keeps the previous one."""
    check_profile(profile)
    run_dir, device, seed = _checks.run_folder(run_dir), check_device(device), check_seed(seed)
    if reference is not None and not isinstance(reference, dict):
        raise ValueError(f"reference must be a dict of reference scores or None, got {type(reference).__name__}")
    models = {p.stem: read_json(p) for p in sorted((run_dir / "models").glob("*.json"))}
    stale = []
    for name, r in models.items():
        info = r.get("training") or {}
        path = run_dir / "train" / f"{name}.json"
        if "steps" in info and path.is_file() and read_json(path) != info:
            stale.append(name)
    if reference is None:
        reference = read_json(run_dir / "metrics.json").get("reference", {})
    record = {"metrics": {name: r["metrics"] for name, r in models.items()}, "stale": sorted(stale),
              "runs": {name: r["provenance"] for name, r in models.items()},
              "training": {name: r.get("training") for name, r in models.items()},
              "histories": {name: r.get("history", []) for name, r in models.items()},
              "diagnostics": {**({"models": {name: r["diagnostics"] for name, r in models.items()
                                            if "diagnostics" in r}}),
                              **({k: v for k, v in read_json(run_dir / "diagnostics.json").items() if k != "config"}
                                 if (run_dir / "diagnostics.json").is_file() else {})},
              "seed_runs": {p.stem: read_json(p) for p in sorted((run_dir / "seeds").glob("*.json"))},
              "reference": reference, "provenance": provenance(profile, seed, device, models=sorted(models))}
    write_json(run_dir / "metrics.json", record)
    return record


# --------------------------------------------------------------------------- exports

def exported_path(profile: str, extra: bool = False) -> Path:
    """``checkpoints/seigan_<profile>.pt`` (G_seg, G_enh, G_inp) or, with ``extra``,
    ``checkpoints/seigan_<profile>_extra.pt`` (D_bg, D_obj and the supervised segmenter)."""
    check_profile(profile), _checks.flag(extra, "extra")
    return REPO_ROOT / "checkpoints" / f"seigan_{profile}{'_extra' if extra else ''}.pt"


def _half(module) -> dict:
    return {k: v.half() if v.is_floating_point() else v for k, v in module.state_dict().items()}


GENERATOR_PARTS = ("segmenter", "enhancer", "inpainter")
EXPORT_SETTINGS = ("width", "depth", "discriminator_width", "pool_size", "object_crop")
"""What :func:`load_models` builds the networks from: an export's settings must hold them."""
EXTRA_PARTS = ("background_discriminator", "object_discriminator", "supervised_segmenter")


def export_models(trainer: SeiganTrainer, supervised: Segmenter, settings: dict, profile: str,
                  folder=None) -> tuple[Path, Path]:
    """SEIGAN's generators, and its discriminators with the supervised segmenter, in float16:
    two files, each under 8 MB at the book profile."""
    _checks.module(trainer, "trainer", SeiganTrainer), _checks.module(supervised, "supervised", Segmenter)
    if trainer.enhancer is None:
        raise ValueError("trainer must have an enhancer (a model with enhance=True, such as seigan) to export")
    _checks.profile_settings(settings, PROFILES, EXPORT_SETTINGS), check_profile(profile)
    if folder is not None:
        check_path(folder, "folder")
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
    paths = (exported_path(profile), exported_path(profile, True)) if folder is None else \
        (Path(folder) / "seigan.pt", Path(folder) / "seigan_extra.pt")
    networks = {part: _half(getattr(trainer, part)) for part in GENERATOR_PARTS}
    save_checkpoint(paths[0], {"kind": "seigan-generators", "settings": plain, "networks": networks})
    extra = {part: _half(getattr(trainer, part)) for part in EXTRA_PARTS[:2]}
    extra["supervised_segmenter"] = _half(supervised)
    save_checkpoint(paths[1], {"kind": "seigan-extra", "settings": plain, "networks": extra})
    return paths


def load_models(path, device="cpu", extra=None) -> tuple[SeiganTrainer, dict]:
    """(a SeiganTrainer in eval mode holding the exported G_seg, G_enh and G_inp, and the
    settings) from ``checkpoints/seigan_<profile>.pt``. With ``extra`` (the ``_extra.pt`` file)
    its trained discriminators too; without it they keep their random initial weights."""
    device = check_device(device)
    state = _read_export(path, "seigan-generators", GENERATOR_PARTS)
    settings = {k: (tuple(v) if isinstance(v, list) else v) for k, v in state["settings"].items()}
    try:
        trainer = SeiganTrainer(MODEL_SPECS["seigan"], settings)
    except ValueError as error:
        raise CheckpointError(f"{path} holds settings these networks cannot be built from: {error}") from error
    for part in GENERATOR_PARTS:
        _load(getattr(trainer, part), state["networks"][part], path, part)
    if extra is not None:
        extra_state = _read_export(extra, "seigan-extra", EXTRA_PARTS)
        for part in EXTRA_PARTS[:2]:
            _load(getattr(trainer, part), extra_state["networks"][part], extra, part)
    return trainer.to(device).eval(), settings


def load_supervised_segmenter(path, device="cpu") -> Segmenter:
    """The supervised reference segmenter from ``checkpoints/seigan_<profile>_extra.pt``."""
    device = check_device(device)
    state = _read_export(path, "seigan-extra", EXTRA_PARTS)
    try:
        _checks.profile_settings(state["settings"], PROFILES, ("width", "depth"))
        segmenter = Segmenter(state["settings"]["width"], state["settings"]["depth"])
    except ValueError as error:
        raise CheckpointError(f"{path} holds settings the segmenter cannot be built from: {error}") from error
    _load(segmenter, state["networks"]["supervised_segmenter"], path, "supervised_segmenter")
    return segmenter.to(device).eval()


def _read_export(path, kind: str, parts) -> dict:
    path = check_path(path, "path")
    if not path.is_file():
        raise FileNotFoundError(f"no exported SEIGAN networks at {path}; train them with "
                                "`python -m labkit.papers.seigan_runs --profile book --export`")
    state = load_checkpoint(path)
    if state.get("kind") != kind or not isinstance(state.get("networks"), dict) or not isinstance(
            state.get("settings"), dict) or not set(parts) <= set(state["networks"]):
        raise CheckpointError(f"{path} is not a {kind} export (expected kind {kind!r}, settings and networks "
                              f"{list(parts)})")
    return state


def _load(module, weights: dict, path, part: str) -> None:
    try:
        module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
    except (RuntimeError, AttributeError) as error:
        raise CheckpointError(f"{path}: the {part} weights do not fit: {str(error).splitlines()[0]}") from error


# --------------------------------------------------------------------------- the record and the claims

REQUIRED_MODELS = MODEL_NAMES


def record_dir(profile: str, run_dir=None) -> Path:
    """Where the runs of ``profile`` are recorded: the committed book record's folder, or the run dir."""
    check_profile(profile)
    return train.record_dir(profile, CHAPTER, None if run_dir is None else check_path(run_dir, "run_dir"))


def read_record(profile: str, run_dir=None) -> dict:
    """The recorded runs of ``profile`` (see :func:`labkit.train.read_run_record`)."""
    return train.read_run_record(record_dir(profile, run_dir) / "metrics.json", "labkit.papers.seigan_runs",
                                 profile, REQUIRED_MODELS)


def seed_spread(record: dict, model: str = "seigan") -> dict:
    """{metric: range} of ``model``'s scores over its training seeds: the recorded run and its
    ``seed_runs`` (max − min, so with three seeds the range of three runs). Empty when the record
    has no seed run of ``model``."""
    _checks.record(record, ("metrics",))
    runs = [record["metrics"][model]] + [r["metrics"] for r in record.get("seed_runs", {}).values()
                                         if r.get("model") == model]
    if len(runs) < 2:
        return {}
    keys = [k for k, v in runs[0].items() if isinstance(v, float) and all(isinstance(r.get(k), float) for r in runs)]
    return {k: max(r[k] for r in runs) - min(r[k] for r in runs) for k in keys}


def claims(record: dict) -> list[dict]:
    """The paper's claims, each checked against a record by explicit comparisons (see
    :func:`labkit.claims.verdict`). Where the record holds seed runs of ``seigan``, a comparison
    whose difference is within seigan's range over its training seeds (:func:`seed_spread`, which
    stands in for every model's) is not resolved and does not count. Higher IoU, PSNR, SSIM and
    FCN-scores are better; lower Fréchet and perceptual distances are better."""
    _checks.record(record, ("metrics", "reference"))
    m, ref = record["metrics"], record["reference"]
    spread = seed_spread(record)
    seeds = 1 + sum(r.get("model") == "seigan" for r in record.get("seed_runs", {}).values())

    def compare(key, ours, other, lower_is_better=False, unresolved=None, label=None):
        outcome = beyond_spread(ours, other, spread.get(key), lower_is_better)
        if outcome is None and unresolved is not None:
            unresolved.append(label or key)
        return outcome

    def noted(evidence: str, unresolved: list) -> str:
        if not unresolved:
            return evidence
        return evidence + (f" [within seigan's range over {seeds} training seeds, so not resolved: "
                           f"{', '.join(unresolved)}]")

    def masks():
        ours, floor, ceiling = (m[k]["mask_iou"] for k in ("seigan", "bbox_as_mask", "supervised_segmenter"))
        evidence = f"mask IoU {ours:.3f}: box as mask {floor:.3f}, fully supervised {ceiling:.3f}"
        unresolved = []
        if ceiling <= floor:   # no gap to close: the supervised reference itself does not beat the box
            above_floor = compare("mask_iou", ours, floor, unresolved=unresolved, label="mask IoU above the box's")
            return ("Masks learned from boxes alone approach full supervision",
                    noted(evidence + " (the supervised reference does not beat the box, so only the floor is tested)",
                          unresolved), verdict(above_floor))
        closed = (ours - floor) / (ceiling - floor)
        tests = (compare("mask_iou", ours, floor, unresolved=unresolved, label="mask IoU above the box's"),
                 compare("mask_iou", ours, floor + 0.5 * (ceiling - floor), unresolved=unresolved,
                         label="mask IoU past half the gap"))
        return ("Masks learned from boxes alone approach full supervision",
                noted(evidence + f" ({closed:.0%} of the gap from the box to full supervision closed; the claim asks "
                      "for at least half)", unresolved), verdict(*tests))

    def enhancement():
        ours, plain, unresolved = m["seigan"], m["no_enhancement"], []
        tests = (compare("frechet_distance", ours["frechet_distance"], plain["frechet_distance"], True, unresolved),
                 compare("fcn_miou", ours["fcn_miou"], plain["fcn_miou"], unresolved=unresolved))
        return ("The enhancement network makes composites more realistic",
                noted(f"Fréchet distance {ours['frechet_distance']:.3f} vs {plain['frechet_distance']:.3f} with a plain "
                      f"paste; FCN mIoU {ours['fcn_miou']:.3f} vs {plain['fcn_miou']:.3f}", unresolved), verdict(*tests))

    def inpainting():
        left, classical, ours = ref["object_left_in"], ref.get("biharmonic_fill"), m["seigan"]
        evidence = (f"in the hole: PSNR {ours['inpaint_psnr']:.2f} dB vs {left['inpaint_psnr']:.2f} dB with the object "
                    f"left in, perceptual distance {ours['inpaint_perceptual']:.3f} vs {left['inpaint_perceptual']:.3f}; "
                    f"Fréchet distance to real backgrounds {ours['inpaint_frechet']:.3f} vs {left['inpaint_frechet']:.3f}")
        if classical is not None:
            evidence += (f" (classical biharmonic fill of the true hole: {classical['inpaint_psnr']:.2f} dB, "
                         f"{classical['inpaint_perceptual']:.3f}, {classical['inpaint_frechet']:.3f})")
        unresolved = []
        tests = (compare("inpaint_psnr", ours["inpaint_psnr"], left["inpaint_psnr"], unresolved=unresolved),
                 compare("inpaint_perceptual", ours["inpaint_perceptual"], left["inpaint_perceptual"], True, unresolved),
                 compare("inpaint_frechet", ours["inpaint_frechet"], left["inpaint_frechet"], True, unresolved))
        return ("Inpainting restores a plausible background", noted(evidence, unresolved), verdict(*tests))

    def cycle_as_written():
        ours, stopped = m["seigan"], m["seigan_stop_gradient"]
        # "no stop-gradient needed": the stop-gradient does not give resolvably better masks
        stop_helps = beyond_spread(stopped["mask_iou"], ours["mask_iou"], spread.get("mask_iou"))
        return ("The cycle as the paper writes it trains without collapsing (no stop-gradient needed)",
                f"masks' area {ours['mask_area_ratio']:.2f} × the true masks' (collapsed below "
                f"{COLLAPSED_AREA_RATIO:g}); mask IoU {ours['mask_iou']:.3f} vs {stopped['mask_iou']:.3f} with x̂'s "
                "gradient stopped in the second swap" + (" (a difference within seigan's range over its training "
                                                         "seeds)" if stop_helps is None else ""),
                verdict(ours["mask_area_ratio"] >= COLLAPSED_AREA_RATIO, stop_helps is not True))

    def ablation(other: str, what: str):
        def check():
            keys = ("mask_iou", "inpaint_psnr", "frechet_distance")
            unresolved = []
            tests = [compare(k, m["seigan"][k], m[other][k], k == "frechet_distance", unresolved) for k in keys]
            return (f"The {what} helps (the paper's ablation)",
                    noted("; ".join(f"{k} {m['seigan'][k]:.3f} vs {m[other][k]:.3f} without" for k in keys), unresolved),
                    verdict(*tests))
        return check

    return check_claims((masks, enhancement, inpainting, cycle_as_written, ablation("no_cycle", "cycle"),
                         ablation("no_identity", "identity loss")))


def main(argv=None) -> int:
    parser = run_argument_parser("labkit.papers.seigan_runs", __doc__.split("\n")[0], PROFILES, CHAPTER,
                                 "write checkpoints/seigan_<profile>.pt and seigan_<profile>_extra.pt")
    parser.add_argument("--models", nargs="+", default=None, choices=MODEL_NAMES, help="default: every model")
    parser.add_argument("--training-seed", type=int, default=None,
                        help="train the one model of --models again with this training seed on the same data "
                             "(seeds/<model>_seed<k>.json), then re-merge the record")
    args = parser.parse_args(argv)
    train.check_dry_run_arguments(parser, args)
    if args.training_seed is None:
        return train.run_from_command_line(parser, run, argv)
    if not args.models or len(args.models) != 1:
        parser.error("--training-seed needs exactly one model in --models")
    device = train.setup(seed=args.seed, threads=args.threads, device=args.device)
    seed_run(args.profile, args.models[0], args.training_seed, device, args.run_dir, args.max_minutes, seed=args.seed)
    run_dir = Path(args.run_dir) if args.run_dir is not None else reports_dir(args.profile, CHAPTER)
    if (run_dir / "metrics.json").is_file():   # otherwise the first run of the record merges it
        merge_records(args.profile, run_dir, device, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
