"""The Semantic Image Analogy chapter's recorded runs: one generator per image and model.

    python -m labkit.papers.analogy_runs --profile book --export      # every model, every image
    python -m labkit.papers.analogy_runs --profile full --device cuda
    python -m labkit.papers.analogy_runs --profile book --models no_sft

A single-image GAN trains on one image: each trained model runs once per image of the
profile (StreetScenes scenes with a car, and scikit-image photographs), resumably, in
``<run dir>/train/<model>_<image>.pt``. Every output is scored on the same layout edits:
on street scenes each edit is a re-rendered scene (a car moved, scaled, removed or added),
so the edited layout has a true image; on photographs it has none. ``metrics.json`` merges
the per-model records ``models/<model>.json``. ``--export`` writes ``sft``, ``sft_one_plus_gamma`` and ``no_sft``
of each image in float16 to ``checkpoints/analogy_<profile>_<image>.pt``.
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..checkpoints import CheckpointError, load_checkpoint, read_json, save_checkpoint, write_json
from ..checks import check_device, check_int, check_pair, check_path, check_positive_int, check_seed
from ..claims import check_claims, verdict
from ..data import CLASS_INDEX, NUM_CLASSES, StreetScenes
from ..features import load_feature_extractor
from ..metrics import segmentation_scores
from ..networks import count_parameters
from .. import train
from . import _checks
from ..train import REPO_ROOT, fit, provenance, reports_dir, run_argument_parser, select_profile
from .analogy import (CHAPTER, MODEL_NAMES, MODEL_SPECS, PAPER_BETAS, PROFILES, RATIO_LIMIT, TRAINED_MODELS,
                      AnalogyGenerator, AnalogyTrainer, augmentation_grid, component_mask, edit_layout,
                      image_analogies, one_hot, photo_layout, warp_pair)

EXPORTED_MODELS = ("sft", "sft_one_plus_gamma", "no_sft")
EDIT_KINDS = ("move", "scale", "remove", "add")
METRIC_KEYS = ("alignment_miou", "alignment_pixel_accuracy", "judge_miou", "judge_pixel_accuracy",
               "psnr_ground_truth", "ssim_ground_truth", "psnr_changed_region", "perceptual_ground_truth",
               "appearance_distance", "grey_input_change", "identity_psnr")
GREY = 0.5
"""The flat grey that replaces the source image in the grey-input test."""
LOWER_IS_BETTER = ("appearance_distance", "perceptual_ground_truth")
"""Scores where lower is better; for every other score higher is better."""
PATCH_FEATURE_LAYERS = {"judge": ("enc1", "enc2"), "vgg19": ("relu1_1", "relu2_1")}


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; expected one of {MODEL_NAMES}")
    return name


def check_profile(profile: str) -> str:
    """One of the chapter's profile names."""
    if not isinstance(profile, str) or profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {sorted(PROFILES)}")
    return profile


IMAGE_KEYS = ("name", "kind", "image", "labels", "num_classes", "edits")


def check_image(image, name: str = "image") -> dict:
    """One of :func:`source_images`' entries: {name, kind, image (3, H, W) in [0, 1], labels (H, W) in
    [0, num_classes), num_classes, edits}."""
    from ..data.validation import check_images, check_label_map

    _checks.settings(image, IMAGE_KEYS, name)
    check_positive_int(image["num_classes"], f"{name}['num_classes']")
    pixels = check_images(image["image"], f"{name}['image']", ndim=(3,))
    labels = check_label_map(image["labels"], f"{name}['labels']", num_classes=image["num_classes"], ndim=(2,))
    if labels.shape != pixels.shape[-2:]:
        raise ValueError(f"{name}['labels'] {tuple(labels.shape)} must be the image's (H, W) {tuple(pixels.shape[-2:])}")
    return image


# --------------------------------------------------------------------------- images and edits

def _car_scenes(size, count: int, seed: int = 0, scan: int = 200):
    """The first ``count`` test scenes with a car at least H/6 tall whose box stays clear of the
    image border (so it can move), with that car's id. count in [1, scan]."""
    check_positive_int(scan, "scan"), check_int(count, "count", minimum=1, maximum=scan), check_seed(seed)
    scenes = StreetScenes(size=size, seed=seed, split="test", length=scan)
    height, width = scenes.size
    found = []
    for index in range(scan):
        sample = scenes[index]
        for obj in sample["objects"]:
            x0, y0, x1, y1 = obj["box"]
            if (obj["class_id"] == CLASS_INDEX["car"] and y1 - y0 >= height / 6 and x0 > width / 16
                    and x1 < width * 15 / 16 and obj["order"] == 0):
                found.append((index, obj["id"], sample))
                break
        if len(found) == count:
            return scenes, found
    raise ValueError(f"only {len(found)} of the first {scan} test scenes at {size} have a clear car; asked for {count}")


def street_edits(scenes: StreetScenes, index: int, car_id: int) -> list[dict]:
    """The four edits of scene ``index`` with a true answer, each re-rendered from an edited
    scene description: the car moved sideways by a quarter of the image width towards the
    centre, scaled by 1.3, removed, and a copy added a third of the width away."""
    _checks.instance(scenes, "scenes", StreetScenes, "labkit.data.StreetScenes")
    check_int(index, "index", minimum=0), check_int(car_id, "car_id")
    scene = scenes.scene(index)
    car = next((t for t in scene.instances if t.instance_id == car_id), None)
    if car is None or car.kind != "car":
        raise ValueError(f"car_id {car_id} is not a car of scene {index}; its cars are "
                         f"{[t.instance_id for t in scene.instances if t.kind == 'car']}")
    width = scenes.size[1]
    box = next(o for o in scenes.render(index, scene=scene)["objects"] if o["id"] == car_id)["box"]
    toward_centre = 1.0 if (box[0] + box[2]) / 2 < width / 2 else -1.0

    def lateral(pixels):   # render.py: foot_x = (u₀ + x / (2z)) · W
        return pixels * 2 * car.z / width

    def with_things(things):
        return dataclasses.replace(scene, things=things)

    others = [t for t in scene.things if t.instance_id != car_id]
    new_id = max(t.instance_id for t in scene.things) + 1
    edited = {
        "move": (with_things(others + [dataclasses.replace(car, x=car.x + toward_centre * lateral(width / 4))]), ()),
        "scale": (with_things(others + [dataclasses.replace(car, width=car.width * 1.3, height=car.height * 1.3)]),
                  ()),
        "remove": (scene, (car_id,)),
        "add": (with_things(scene.things + [dataclasses.replace(car, x=car.x + toward_centre * lateral(width / 3),
                                                                instance_id=new_id)]), ()),
    }
    edits = []
    for kind in EDIT_KINDS:
        description, remove = edited[kind]
        drawn = scenes.render(index, remove=remove, scene=description)
        edits.append({"name": kind, "labels": drawn["label"], "truth": drawn["image"]})
    return edits


def photo_image(name: str, size) -> np.ndarray:
    """scikit-image's photograph ``name`` (e.g. chelsea, coffee, astronaut), centre-cropped to the
    aspect of ``size`` and resized to it: (H, W, 3) float32 in [0, 1]."""
    import skimage.data
    from skimage.transform import resize

    if not isinstance(name, str) or name.startswith("_"):
        raise ValueError(f"name must be the name of a scikit-image photograph (e.g. 'coffee'), got {name!r}")
    height, width = check_pair(size, "size")
    loader = getattr(skimage.data, name, None)
    if loader is None or not callable(loader):
        raise ValueError(f"scikit-image has no photograph {name!r}")
    photo = np.asarray(loader(), np.float32) / 255.0
    if photo.ndim != 3 or photo.shape[2] < 3:
        raise ValueError(f"skimage.data.{name}() is not a colour photograph")
    photo = photo[..., :3]
    rows, cols = photo.shape[:2]
    if cols / rows > width / height:
        keep = int(round(rows * width / height))
        photo = photo[:, (cols - keep) // 2:(cols - keep) // 2 + keep]
    else:
        keep = int(round(cols * height / width))
        photo = photo[(rows - keep) // 2:(rows - keep) // 2 + keep]
    return resize(photo, (height, width), anti_aliasing=True).astype(np.float32)


def subject_label(labels: torch.Tensor) -> int:
    """The label whose largest region covers 3–30 % of the image and lies nearest its centre:
    the photograph's subject, for the automatic edits. labels (H, W) integer ids."""
    from .analogy import _label_tensor

    labels = _label_tensor(labels, "labels")
    height, width = labels.shape
    best, best_distance = None, None
    for label in torch.unique(labels).tolist():
        mask = component_mask(labels, label)
        share = float(mask.float().mean())
        if not 0.03 <= share <= 0.3:
            continue
        ys, xs = torch.nonzero(mask, as_tuple=True)
        distance = ((ys.float().mean() / height - 0.5) ** 2 + (xs.float().mean() / width - 0.5) ** 2).item()
        if best_distance is None or distance < best_distance:
            best, best_distance = label, distance
    if best is None:
        raise ValueError("no label covers 3–30 % of the photograph; choose another number of labels")
    return best


def photo_edits(labels: torch.Tensor) -> list[dict]:
    """The four edits of a photograph's layout, on its subject's largest region: moved by a sixth
    of the width towards the centre, scaled by 1.3, removed, and a copy added a third of the width
    away. No true image exists."""
    label = subject_label(labels)
    mask = component_mask(labels, label)
    width = labels.shape[1]
    toward_centre = 1 if torch.nonzero(mask)[:, 1].float().mean() < width / 2 else -1
    shifts = {"move": (0, toward_centre * width // 6), "add": (0, toward_centre * width // 3)}
    return [{"name": kind, "labels": edit_layout(labels, mask, kind, shift=shifts.get(kind, (0, 0)), factor=1.3,
                                                  label=label), "truth": None} for kind in EDIT_KINDS]


def source_images(settings: dict, seed: int = 0) -> list[dict]:
    """The profile's images: ``{name, kind, image (3, H, W), labels (H, W), num_classes, edits}``,
    street scenes first (each edit with its true ``truth`` image), then the photographs."""
    _checks.profile_settings(settings, PROFILES, ("street_size", "street_scenes", "photos", "photo_size",
                                                   "photo_labels")), check_seed(seed)
    images = []
    scenes, found = _car_scenes(settings["street_size"], settings["street_scenes"], seed)
    for index, car_id, sample in found:
        images.append({"name": f"street{index}", "kind": "street", "image": sample["image"],
                       "labels": sample["label"], "num_classes": NUM_CLASSES,
                       "edits": street_edits(scenes, index, car_id)})
    for name in settings["photos"]:
        photo = photo_image(name, settings["photo_size"])
        labels = torch.from_numpy(photo_layout(photo, settings["photo_labels"], seed=seed))
        images.append({"name": name, "kind": "photo", "image": torch.from_numpy(photo).permute(2, 0, 1).contiguous(),
                       "labels": labels, "num_classes": settings["photo_labels"], "edits": photo_edits(labels)})
    return images


# --------------------------------------------------------------------------- training

def _config(kind: str, name: str, image: dict, settings: dict, seed: int) -> dict:
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
    return {"kind": kind, "model": name, "image": image["name"], "seed": seed, **plain}


def patch_features(settings: dict, device, verbose: bool = False):
    """The frozen features of the patch coherence loss: the judge's enc1 and enc2, or VGG-19's
    relu1_1 and relu2_1 when the profile says "auto" and VGG-19 weights are there."""
    _checks.settings(settings, ("features",))
    kind = settings["features"]
    if kind not in ("auto",) + tuple(PATCH_FEATURE_LAYERS):
        raise ValueError(f"settings['features'] must be one of {('auto',) + tuple(PATCH_FEATURE_LAYERS)}, got {kind!r}")
    device = check_device(device)
    extractor = load_feature_extractor(kind, layers=None if kind == "auto" else PATCH_FEATURE_LAYERS[kind],
                                       device=device, verbose=verbose)
    if len(extractor.layer_names) != 2:
        extractor = load_feature_extractor(extractor.name, layers=PATCH_FEATURE_LAYERS[extractor.name],
                                           device=device, verbose=False)
    return extractor


def train_model(name: str, image: dict, settings: dict, device, run_dir: Path, features=None,
                max_minutes: float | None = None, progress: bool = True, seed: int = 0):
    """Train (or resume, or load) model ``name`` on ``image``; returns (generator, FitResult)."""
    spec = MODEL_SPECS[check_model_name(name)]
    if not spec["conditioning"]:
        raise ValueError(f"model {name!r} has no network to train")
    check_image(image), _checks.profile_settings(settings, PROFILES)
    device, run_dir = check_device(device), check_path(run_dir, "run_dir")
    _checks.minutes(max_minutes), check_seed(seed)
    torch.manual_seed(seed)   # the same initial weights whichever models ran before in this process
    trainer = AnalogyTrainer(image["image"][None], image["labels"][None], image["num_classes"], spec, settings,
                             features=features, seed=seed).to(device)
    optimizers = {part: torch.optim.Adam(params, lr=settings[lr], betas=PAPER_BETAS) for part, params, lr in (
        ("generator", trainer.generator.parameters(), "generator_lr"),
        ("discriminator", trainer.discriminator.parameters(), "discriminator_lr"),
        ("segmenter", trainer.segmenter.parameters(), "generator_lr"))}
    result = fit(trainer, optimizers["generator"], lambda step: step,
                 lambda model, step: model.iteration_loss(step, optimizers["discriminator"], optimizers["segmenter"]),
                 steps=settings["iterations"], checkpoint=Path(run_dir) / "train" / f"{name}_{image['name']}.pt",
                 max_minutes=max_minutes, progress=progress, description=f"{name} on {image['name']}",
                 config=dict(_config("analogy", name, image, settings, seed),
                             patch_features=features.describe() if features is not None else None),
                 extra_optimizers={k: v for k, v in optimizers.items() if k != "generator"})
    trainer.generator.eval()
    return trainer.generator, result


EVALUATION_SEGMENTER_WIDTHS = (16, 32, 64, 96)
EVALUATION_STREAM = 10 ** 9
"""Offset of the evaluation segmenter's random stream, so its augmentations are not G's."""


def train_evaluation_segmenter(image: dict, settings: dict, device, run_dir: Path, progress: bool = True,
                               seed: int = 0):
    """The evaluation segmenter of ``image``: a small U-Net (the judge's architecture, widths
    ``EVALUATION_SEGMENTER_WIDTHS``) trained on its own random full-strength joint augmentations
    of the image (batches of 4, cross-entropy). Another architecture and other warps than the
    auxiliary segmenter G trains against, so fooling that one does not fool this one for free."""
    from ..judge import JudgeNet

    check_image(image), _checks.profile_settings(settings, PROFILES, ("generator_lr", "segmenter_iterations"))
    device, run_dir = check_device(device), check_path(run_dir, "run_dir")
    check_seed(seed)
    torch.manual_seed(seed + 7)
    segmenter = JudgeNet(EVALUATION_SEGMENTER_WIDTHS, image["num_classes"]).to(device)
    optimizer = torch.optim.Adam(segmenter.parameters(), lr=settings["generator_lr"], betas=PAPER_BETAS)
    source, labels = image["image"][None], image["labels"][None]

    def batch(step):
        rng = torch.Generator().manual_seed(EVALUATION_STREAM + seed * 7919 + step)
        pairs = [warp_pair(source, labels, augmentation_grid(source.shape[-2:], 1.0, rng)[0]) for _ in range(4)]
        return torch.cat([p[0] for p in pairs]).to(device), torch.cat([p[1] for p in pairs]).to(device)

    fit(segmenter, optimizer, batch, lambda model, b: (F.cross_entropy(model(b[0]), b[1]), {}),
        steps=settings["segmenter_iterations"], checkpoint=Path(run_dir) / "train" / f"segmenter_{image['name']}.pt",
        progress=progress, description=f"evaluation segmenter, {image['name']}",
        config=_config("evaluation_segmenter", "segmenter", image, settings, seed))
    return segmenter.eval()


# --------------------------------------------------------------------------- evaluation

def analogy_output(name: str, generator, image: dict, target_labels: torch.Tensor, device="cpu") -> torch.Tensor:
    """I′ (3, H, W) on the CPU for model ``name`` (``generator`` None for image_analogies); target_labels
    (H, W) ids of the image's labels."""
    check_model_name(name), check_image(image)
    from ..data.validation import check_label_map

    target = check_label_map(target_labels, "target_labels", num_classes=image["num_classes"], ndim=(2,))
    if target.shape != image["labels"].shape:
        raise ValueError(f"target_labels {tuple(target.shape)} must be the image's (H, W) {tuple(image['labels'].shape)}")
    if name != "image_analogies":
        _checks.module(generator, "generator", AnalogyGenerator)
    device = check_device(device)
    if name == "image_analogies":
        return image_analogies(image["image"], image["labels"], target_labels, image["num_classes"])
    k = image["num_classes"]
    with torch.no_grad():
        output, _ = generator(image["image"][None].to(device), one_hot(image["labels"], k).to(device),
                              one_hot(target_labels, k).to(device))
    return output[0].float().cpu().clamp(0, 1)


def appearance_distance(output: torch.Tensor, source: torch.Tensor, patch: int = 5, stride: int = 2) -> float:
    """How far I′'s look is from I's: for every ``patch``×``patch`` RGB patch of the output
    (every ``stride`` pixels), the RMS difference to its nearest patch anywhere in the source,
    averaged. 0 when every output patch occurs in the source (a copy, or a collage of source
    patches); it ignores the layout, so the edit does not count against it. output and source (3, H, W)
    in [0, 1], at least ``patch`` pixels high and wide; patch and stride ≥ 1."""
    from ..data.validation import check_images

    check_images(output, "output", ndim=(3,)), check_images(source, "source", ndim=(3,))
    check_positive_int(patch, "patch"), check_positive_int(stride, "stride")
    for name, value in (("output", output), ("source", source)):
        if min(value.shape[-2:]) < patch:
            raise ValueError(f"{name} must be at least {patch}×{patch} pixels, got {tuple(value.shape)}")
    out = F.unfold(output[None], patch, stride=stride)[0].T
    src = F.unfold(source[None], patch)[0].T
    nearest = []
    for start in range(0, len(out), 1024):
        nearest.append(torch.cdist(out[start:start + 1024], src).min(dim=1).values)
    return float((torch.cat(nearest) ** 2 / out.shape[1]).sqrt().mean())


def _psnr(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    squared = (a - b) ** 2
    mse = squared.mean() if mask is None else (squared * mask).sum() / (3 * mask.sum()).clamp_min(1)
    return float(10 * torch.log10(1 / mse.clamp_min(1e-10)))


def changed_region(truth: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """(1, H, W) float: the pixels the true edit changed (any channel by more than 0.02), grown by
    one pixel. truth and source (3, H, W) in [0, 1], of one shape."""
    from ..data.validation import check_images

    check_images(truth, "truth", ndim=(3,)), check_images(source, "source", ndim=(3,))
    if truth.shape != source.shape:
        raise ValueError(f"truth {tuple(truth.shape)} and source {tuple(source.shape)} must have the same shape")
    changed = ((truth - source).abs().amax(dim=0, keepdim=True) > 0.02).float()
    return F.max_pool2d(changed[None], 3, 1, 1)[0]


def score_output(output: torch.Tensor, image: dict, edit: dict, segmenter, judge, device="cpu") -> dict:
    """Scores of one output I′ (3, H, W) for one edit.

    - ``alignment_miou`` / ``alignment_pixel_accuracy``: the image's evaluation segmenter on I′
      against P′ (the paper's metric);
    - ``judge_*``: the judge on I′ against P′ (street scenes);
    - ``psnr_ground_truth``, ``ssim_ground_truth``, ``perceptual_ground_truth`` (the judge's
      feature distance, :func:`labkit.metrics.perceptual_distance`): against the true edited
      image (street scenes), and ``psnr_changed_region`` on the pixels the edit changed;
    - ``appearance_distance``: :func:`appearance_distance` to the source.
    """
    from kornia.metrics import ssim

    from ..data.validation import check_images
    from ..metrics import perceptual_distance

    check_image(image), _checks.settings(edit, ("name", "labels", "truth"), "edit")
    check_images(output, "output", ndim=(3,))
    if output.shape != image["image"].shape:
        raise ValueError(f"output {tuple(output.shape)} must have the image's shape {tuple(image['image'].shape)}")
    _checks.function(segmenter, "segmenter", "images → logits"), check_device(device)
    if edit["truth"] is not None:
        _checks.module(judge, "judge")
    target = edit["labels"]
    with torch.no_grad():
        predicted = segmenter(output[None].to(device)).argmax(1)[0].cpu()
    aligned = segmentation_scores(predicted, target, image["num_classes"])
    scores = {"alignment_miou": aligned["miou"], "alignment_pixel_accuracy": aligned["pixel_accuracy"],
              "appearance_distance": appearance_distance(output, image["image"])}
    if edit["truth"] is not None:
        truth = edit["truth"]
        judged = segmentation_scores(judge.predict(output[None].to(next(judge.parameters()).device)).cpu()[0],
                                     target)
        scores.update(judge_miou=judged["miou"], judge_pixel_accuracy=judged["pixel_accuracy"],
                      psnr_ground_truth=_psnr(output, truth),
                      ssim_ground_truth=float(ssim(output[None], truth[None], 11).mean()),
                      perceptual_ground_truth=float(perceptual_distance(output[None], truth[None], judge)[0]),
                      psnr_changed_region=_psnr(output, truth, changed_region(truth, image["image"])))
    return scores


def average_scores(per_image: dict) -> dict:
    """Mean over the edits of each image, then over the images that have the key."""
    if not isinstance(per_image, dict) or not per_image:
        raise ValueError(f"per_image must be a non-empty dict {{image name: scores}}, got {per_image!r}")
    means = {}
    for key in METRIC_KEYS:
        if key == "identity_psnr":
            values = [r[key] for r in per_image.values() if key in r]
        else:
            values = [float(np.mean(found)) for r in per_image.values()
                      if (found := [e[key] for e in r["edits"].values() if key in e])]
        if values:
            means[key] = float(np.mean(values))
    return means


def evaluate_model(name: str, generators: dict, images: list[dict], segmenters: dict, judge, device="cpu") -> dict:
    """Score model ``name`` on every image's edits; ``generators``: image name → generator
    (empty for image_analogies). Adds ``identity_psnr``: PSNR of G(I, P, P) to I, and per edit
    ``grey_input_change``: the mean absolute change of I′ when the source image is replaced by
    flat grey (layouts unchanged). A model that keeps the source's appearance changes a lot; a
    model that paints from the layout alone hardly at all, whatever its alignment scores."""
    check_model_name(name)
    _check_evaluation_inputs(images, segmenters)
    if not isinstance(generators, dict):
        raise ValueError(f"generators must be a dict {{image name: generator}}, got {type(generators).__name__}")
    missing = [image["name"] for image in images if name != "image_analogies" and image["name"] not in generators]
    if missing:
        raise ValueError(f"generators lacks the images {missing}")
    per_image = {}
    for image in images:
        generator = generators.get(image["name"])
        grey_image = dict(image, image=torch.full_like(image["image"], GREY))
        edits = {}
        for edit in image["edits"]:
            output = analogy_output(name, generator, image, edit["labels"], device)
            edits[edit["name"]] = score_output(output, image, edit, segmenters[image["name"]], judge, device)
            on_grey = analogy_output(name, generator, grey_image, edit["labels"], device)
            edits[edit["name"]]["grey_input_change"] = float((output - on_grey).abs().mean())
        identity = analogy_output(name, generator, image, image["labels"], device)
        per_image[image["name"]] = {"edits": edits, "identity_psnr": _psnr(identity, image["image"])}
    return {**average_scores(per_image), "per_image": per_image}


def reference_scores(images: list[dict], segmenters: dict, judge, device="cpu") -> dict:
    """Two references on the same edits: ``ground_truth`` (the true edited street scenes: the
    reference for the alignment scores, not a ceiling: the segmenter learned from the source's own
    pixels) and ``source_copy`` (I′ = I, the edit ignored: the floor)."""
    _check_evaluation_inputs(images, segmenters)
    references = {}
    for reference in ("ground_truth", "source_copy"):
        per_image = {}
        for image in images:
            edits = {}
            for edit in image["edits"]:
                if reference == "ground_truth" and edit["truth"] is None:
                    continue
                output = edit["truth"] if reference == "ground_truth" else image["image"]
                edits[edit["name"]] = score_output(output, image, edit, segmenters[image["name"]], judge, device)
            if edits:
                per_image[image["name"]] = {"edits": edits}
        references[reference] = {**average_scores(per_image), "per_image": per_image}
    return references


def _check_evaluation_inputs(images, segmenters) -> None:
    if not _checks.names(images, "images"):
        raise ValueError("images must hold at least one image (see source_images)")
    for i, image in enumerate(images):
        check_image(image, f"images[{i}]")
    if not isinstance(segmenters, dict) or any(image["name"] not in segmenters for image in images):
        raise ValueError("segmenters must be a dict {image name: evaluation segmenter} covering every image")


def save_sample_figure(name: str, generators: dict, images: list[dict], path, device="cpu") -> Path:
    """A PNG of model ``name``'s outputs: one row per image, the source and each edit."""
    check_model_name(name), check_path(path, "path"), check_device(device)
    if not _checks.names(images, "images"):
        raise ValueError("images must hold at least one image (see source_images)")
    import matplotlib
    import matplotlib.pyplot as plt

    from ..plotting import to_numpy_image, write_png

    with matplotlib.rc_context({"figure.dpi": 100}):
        fig, axes = plt.subplots(len(images), 1 + len(EDIT_KINDS), figsize=(2.2 * (1 + len(EDIT_KINDS)),
                                                                             1.3 * len(images)), squeeze=False)
        for row, image in enumerate(images):
            axes[row, 0].imshow(to_numpy_image(image["image"]))
            axes[row, 0].set_ylabel(image["name"], fontsize=8)
            for col, edit in enumerate(image["edits"], start=1):
                output = analogy_output(name, generators.get(image["name"]), image, edit["labels"], device)
                axes[row, col].imshow(np.clip(to_numpy_image(output), 0, 1))
                axes[0, col].set_title(f"{name}: {edit['name']}", fontsize=8)
            axes[0, 0].set_title("source", fontsize=8)
            for ax in axes[row]:
                ax.set_xticks([]), ax.set_yticks([])
    return write_png(fig, path, close=True)


# --------------------------------------------------------------------------- inside SFT

def _layouts_of(generator, image: dict, target_labels) -> tuple[torch.Tensor, torch.Tensor]:
    _checks.module(generator, "generator", AnalogyGenerator), check_image(image)
    device = next(generator.parameters()).device
    k = image["num_classes"]
    return one_hot(image["labels"], k).to(device), one_hot(target_labels, k).to(device)


@contextmanager
def residual_padding(generator, mode: str):
    """Within the block, the SFT residual blocks of ``generator`` pad with ``mode`` ("reflect", as
    trained, or "zeros"); restored afterwards. For measuring what the padding does to γ and β."""
    _checks.module(generator, "generator", AnalogyGenerator)
    if mode not in ("reflect", "zeros"):
        raise ValueError(f"mode must be 'reflect' or 'zeros', got {mode!r}")
    convs = [m for m in generator.sft.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    before = [conv.padding_mode for conv in convs]
    try:
        for conv in convs:
            conv.padding_mode = mode
        yield generator
    finally:
        for conv, previous in zip(convs, before):
            conv.padding_mode = previous


def fixed_point_spread(generator, image: dict) -> list[dict]:
    """At P′ = P SFT's inputs are constant (ratio 1, difference 0), so γ and β should be too. Per
    scale l: the spatial standard deviation of γ^l and β^l (mean over channels), the largest
    deviation of any entry from its channel's spatial mean (``max_deviation``, γ and β together),
    and the means of γ^l and β^l, for the generator's source layout P."""
    source, _ = _layouts_of(generator, image, image["labels"])
    with torch.no_grad():
        params = generator.translation(source, source)

    def deviation(x):
        return float((x - x.mean(dim=(2, 3), keepdim=True)).abs().max())

    return [{"scale": level + 1, "gamma_spatial_std": float(gamma.std(dim=(2, 3)).mean()),
             "beta_spatial_std": float(beta.std(dim=(2, 3)).mean()),
             "max_deviation": max(deviation(gamma), deviation(beta)), "gamma_mean": float(gamma.mean()),
             "beta_mean": float(beta.mean())} for level, (gamma, beta) in enumerate(params)]


def ratio_statistics(generator, image: dict, target_labels) -> list[dict]:
    """How spiky the SFT ratio F(P′)/F(P) is for an edit P → P′, per scale l: the fraction of
    (channel, position) entries at the clip value ``RATIO_LIMIT``, and the largest |γ| at the
    positions where some channel is clipped and elsewhere. target_labels (H, W) ids of the image's labels."""
    source, target = _layouts_of(generator, image, target_labels)
    with torch.no_grad():
        features = generator.layout_features(torch.cat([source, target]))
        inputs = generator.sft.inputs([f[:1] for f in features], [f[1:] for f in features])
        params = generator.translation(source, target)
    rows = []
    for level, ((ratio, _), (gamma, _)) in enumerate(zip(inputs, params)):
        clipped = ratio >= RATIO_LIMIT
        at_clip = clipped.any(dim=1, keepdim=True).expand_as(gamma)
        rows.append({"scale": level + 1, "clipped_fraction": float(clipped.float().mean()),
                     "max_abs_gamma_at_clipped": float(gamma.abs()[at_clip].max()) if at_clip.any() else 0.0,
                     "max_abs_gamma_elsewhere": float(gamma.abs()[~at_clip].max()) if (~at_clip).any() else 0.0})
    return rows


# --------------------------------------------------------------------------- runs

def run(profile: str = "book", models=None, device="auto", max_minutes: float | None = None, run_dir=None,
        export=False, progress: bool = True, seed: int = 0) -> dict:
    """Train and score ``models`` (default: all) on every image of the profile; merge the records
    into ``<run dir>/metrics.json``. ``max_minutes`` bounds each (model, image) training.
    ``export``: True writes ``checkpoints/analogy_<profile>_<image>.pt`` for each image."""
    from ..metrics import _judge

    settings = select_profile(PROFILES, check_profile(profile))
    models = [check_model_name(name) for name in (MODEL_NAMES if models is None else _checks.names(models, "models"))]
    export = _checks.export_target(export)
    if export and not set(EXPORTED_MODELS) <= set(models):
        raise ValueError(f"export writes {EXPORTED_MODELS}; include them in models (got {models})")
    device = check_device(device)
    _checks.minutes(max_minutes), check_seed(seed)
    run_dir = check_path(run_dir, "run_dir") if run_dir is not None else reports_dir(profile, CHAPTER)
    command = f"python -m labkit.papers.analogy_runs --profile {profile}"
    images = source_images(settings, seed)
    segmenters = {image["name"]: train_evaluation_segmenter(image, settings, device, run_dir, progress, seed)
                  for image in images}
    judge = _judge(None, device)
    features = patch_features(settings, device, verbose=progress) if set(models) & set(TRAINED_MODELS) else None
    exported = {}
    for name in models:
        started = time.monotonic()
        generators, results, training = {}, {}, {"source": "no network: nearest-neighbour patch matching"}
        if MODEL_SPECS[name]["conditioning"]:
            training = {}
            for image in images:
                generators[image["name"]], results[image["name"]] = train_model(
                    name, image, settings, device, run_dir, features, max_minutes, progress, seed)
                training[image["name"]] = _training_record(run_dir, name, image["name"], results[image["name"]],
                                                           profile, seed, device, command + f" --models {name}")
            if name in EXPORTED_MODELS:
                exported[name] = generators
        scores = evaluate_model(name, generators, images, segmenters, judge, device)
        if generators:
            first = next(iter(generators.values()))
            scores.update(parameters=count_parameters(first), steps={k: r.steps_done for k, r in results.items()},
                          finished=all(r.finished for r in results.values()),
                          train_seconds=round(sum(r.wall_time_s for r in results.values()), 1))
        history = {k: r.history for k, r in results.items()}
        write_json(run_dir / "models" / f"{name}.json",
                   {"metrics": scores, "provenance": provenance(profile, seed, device,
                                                                wall_time_s=time.monotonic() - started,
                                                                command=command + f" --models {name}"),
                    "training": training, "history": history})
        save_sample_figure(name, generators, images, run_dir / "samples" / f"{name}.png", device)
        if progress:
            print(f"{name}: " + ", ".join(f"{k} {scores[k]:.4g}" for k in METRIC_KEYS if k in scores))
    if export:
        for image in images:
            path = exported_path(profile, image["name"]) if export is True else Path(export) / f"{image['name']}.pt"
            export_models({name: exported[name][image["name"]] for name in EXPORTED_MODELS}, image, settings, path,
                          segmenters[image["name"]])
    return merge_records(profile, run_dir, device, images, segmenters, judge, seed)


def _training_record(run_dir: Path, name: str, image: str, result, profile, seed, device, command) -> dict:
    """Provenance of the call that trained ``name`` on ``image`` (``train/<name>_<image>.json``),
    rewritten only when this call advanced the training."""
    path = Path(run_dir) / "train" / f"{name}_{image}.json"
    if result.steps_done > result.resumed_from or not path.is_file():
        write_json(path, provenance(profile, seed, device, wall_time_s=result.wall_time_s, command=command,
                                    steps=result.steps_done, finished=result.finished))
    return read_json(path)


def exported_path(profile: str, image: str) -> Path:
    check_profile(profile)
    if not isinstance(image, str) or not image or "/" in image:
        raise ValueError(f"image must be an image name such as 'street3' or 'coffee', got {image!r}")
    return REPO_ROOT / "checkpoints" / f"analogy_{profile}_{image}.pt"


def _half(module) -> dict:
    return {k: v.detach().cpu().half() if v.is_floating_point() else v.cpu() for k, v in module.state_dict().items()}


def export_models(generators: dict, image: dict, settings: dict, path, segmenter=None) -> Path:
    """The generators of one image in float16, with the image's name, its number of labels, the
    settings and (optionally) its evaluation segmenter, so a notebook can score new edits."""
    if not isinstance(generators, dict) or not generators:
        raise ValueError(f"generators must be a non-empty dict {{model name: generator}}, got {generators!r}")
    for name, generator in generators.items():
        if MODEL_SPECS.get(name, {}).get("conditioning") is None:
            raise ValueError(f"generators has an unknown model {name!r}; expected some of {TRAINED_MODELS}")
        _checks.module(generator, f"generators[{name!r}]", AnalogyGenerator)
    check_image(image), _checks.profile_settings(settings, PROFILES, ("width",))
    path = check_path(path, "path")
    _checks.module(segmenter, "segmenter", allow_none=True)
    plain = {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()}
    state = {"kind": "analogy-generators", "settings": plain, "image": image["name"],
             "num_classes": image["num_classes"], "generators": {n: _half(g) for n, g in generators.items()}}
    if segmenter is not None:
        state["evaluation_segmenter"] = _half(segmenter)
    return save_checkpoint(path, state)


def load_models(path, device="cpu") -> tuple[dict, dict]:
    """({model name: generator in eval mode}, settings) from an export."""
    path, device = check_path(path, "path"), check_device(device)
    if not path.is_file():
        raise FileNotFoundError(f"no exported analogy generators at {path}; train them with "
                                "`python -m labkit.papers.analogy_runs --profile book --export`")
    state = load_checkpoint(path)
    if state.get("kind") != "analogy-generators" or not {"generators", "settings", "num_classes"} <= set(state):
        raise CheckpointError(f"{path} is not an export of analogy generators (expected keys kind, settings, "
                              "num_classes, generators)")
    if not isinstance(state["settings"], dict) or not isinstance(state["generators"], dict):
        raise CheckpointError(f"{path}: settings and generators must be dicts")
    settings = {k: (tuple(v) if isinstance(v, list) else v) for k, v in state["settings"].items()}
    generators = {}
    for name, weights in state["generators"].items():
        if MODEL_SPECS.get(name, {}).get("conditioning") is None:
            raise CheckpointError(f"{path} holds an unknown model {name!r}; expected some of {TRAINED_MODELS}")
        try:
            generator = AnalogyGenerator(state["num_classes"], settings.get("width"), MODEL_SPECS[name]["conditioning"],
                                         MODEL_SPECS[name].get("gamma"), MODEL_SPECS[name].get("padding", "reflect"))
        except ValueError as error:
            raise CheckpointError(f"{path} holds settings this generator cannot be built from: {error}") from error
        try:
            generator.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in weights.items()})
        except (RuntimeError, AttributeError) as error:
            raise CheckpointError(f"{path}: the {name} weights do not fit: {str(error).splitlines()[0]}") from error
        generators[name] = generator.to(device).eval()
    return generators, settings


def load_evaluation_segmenter(path, device="cpu"):
    """The evaluation segmenter stored with an export (see :func:`train_evaluation_segmenter`)."""
    from ..judge import JudgeNet

    path, device = check_path(path, "path"), check_device(device)
    state = load_checkpoint(path)
    if "evaluation_segmenter" not in state or "num_classes" not in state:
        raise CheckpointError(f"{path} has no evaluation segmenter; export it with analogy_runs.run(..., export=...)")
    try:
        segmenter = JudgeNet(EVALUATION_SEGMENTER_WIDTHS, check_positive_int(state["num_classes"], "num_classes"))
        segmenter.load_state_dict({k: v.float() if v.is_floating_point() else v
                                   for k, v in state["evaluation_segmenter"].items()})
    except (RuntimeError, AttributeError, ValueError) as error:
        raise CheckpointError(f"{path}: the evaluation segmenter does not fit: {str(error).splitlines()[0]}") from error
    return segmenter.to(device).eval()


def merge_records(profile: str, run_dir, device, images=None, segmenters=None, judge=None, seed: int = 0) -> dict:
    """Rebuild ``<run dir>/metrics.json`` from ``models/*.json``; a model whose training has
    advanced since it was scored is listed as stale. The references are scored here when the
    images and segmenters are given, else kept from the previous metrics.json."""
    check_profile(profile)
    run_dir, device, seed = _checks.run_folder(run_dir), check_device(device), check_seed(seed)
    models = {p.stem: read_json(p) for p in sorted((run_dir / "models").glob("*.json"))}
    stale = []
    for name, r in models.items():
        for image, info in (r.get("training") or {}).items():
            path = run_dir / "train" / f"{name}_{image}.json"
            if isinstance(info, dict) and "steps" in info and path.is_file() and read_json(path) != info:
                stale.append(name)
                break
    if images is not None:
        reference = reference_scores(images, segmenters, judge, device)
    else:
        reference = read_json(run_dir / "metrics.json").get("reference", {})
    record = {"metrics": {name: r["metrics"] for name, r in models.items()}, "stale": sorted(stale),
              "runs": {name: r["provenance"] for name, r in models.items()},
              "training": {name: r.get("training") for name, r in models.items()},
              "histories": {name: r.get("history", {}) for name, r in models.items()},
              "reference": reference, "provenance": provenance(profile, seed, device, models=sorted(models))}
    write_json(run_dir / "metrics.json", record)
    return record


REQUIRED_MODELS = MODEL_NAMES


def record_dir(profile: str, run_dir=None) -> Path:
    """Where the runs of ``profile`` are recorded: the committed book record's folder, or the run dir."""
    check_profile(profile)
    return train.record_dir(profile, CHAPTER, None if run_dir is None else check_path(run_dir, "run_dir"))


def read_record(profile: str, run_dir=None) -> dict:
    """The recorded runs of ``profile`` (see :func:`labkit.train.read_run_record`)."""
    return train.read_run_record(record_dir(profile, run_dir) / "metrics.json", "labkit.papers.analogy_runs",
                                 profile, REQUIRED_MODELS)


def claims(record: dict) -> list[dict]:
    """The chapter's claims, each checked against a record by explicit comparisons.

    Rows {"claim", "evidence", "verdict"}: "holds" when every comparison favours the claim,
    "does not hold" when none does, "mixed" otherwise, "not measured" when the record lacks a
    model it needs. Higher alignment, PSNR, identity PSNR and grey-input change (more of I′
    comes from the source image) are better; a lower appearance distance and a lower perceptual
    distance to the true edit are better.
    """
    _checks.record(record)
    m = record["metrics"]

    def better(a, b, key):
        return m[a][key] < m[b][key] if key in LOWER_IS_BETTER else m[a][key] > m[b][key]

    def pair(a, b, key, digits=3):
        return f"{key} {m[a][key]:.{digits}f} vs {m[b][key]:.{digits}f}"

    def compare(a, b, keys, digits=3):
        return "; ".join(pair(a, b, k, digits) for k in keys), verdict(*(better(a, b, k) for k in keys))

    def sft():
        return ("SFT (relative layout features) beats conditioning on the target layout alone (SPADE-like)",
                *compare("sft", "no_sft", ("alignment_miou", "judge_miou", "psnr_ground_truth", "psnr_changed_region")))

    def uses_source():
        return ("SFT carries the source image into I′ (it translates the source's features; a generator "
                "conditioned on P′ alone can paint the one image it was trained on from memory)",
                *compare("sft", "no_sft", ("grey_input_change",)))

    def fixed_point():
        return ("The fixed-point loss keeps the source when the layout does not change, and helps the edits",
                *compare("sft", "no_fixed_point", ("identity_psnr", "psnr_ground_truth"), 2))

    def ramp():
        return ("Ramping up the augmentation (progressive training) helps",
                *compare("sft", "no_augmentation_ramp", ("alignment_miou", "psnr_ground_truth")))

    def alignment():
        return ("The semantic alignment loss makes I′ follow P′ (it needs its gradient, which the official "
                "code detaches)", *compare("sft", "alignment_detached", ("alignment_miou", "judge_miou")))

    def beats_image_analogies():
        return ("The conditional single-image GAN beats Image Analogies on mean IoU / pixel accuracy "
                "(the paper's table)", *compare("sft", "image_analogies", ("alignment_miou", "judge_miou",
                                                                            "psnr_ground_truth",
                                                                            "alignment_pixel_accuracy")))

    def appearance():
        evidence, result = compare("sft", "no_sft", ("appearance_distance",), 4)
        return ("I′ keeps the source's appearance (the paper's user study: similarity to the source)",
                f"{evidence} without SFT; "
                f"{record['reference']['source_copy']['appearance_distance']:.4f} for the source itself", result)

    return check_claims((sft, uses_source, fixed_point, ramp, alignment, beats_image_analogies, appearance))


def main(argv=None) -> int:
    parser = run_argument_parser("labkit.papers.analogy_runs", __doc__.split("\n")[0], PROFILES, CHAPTER,
                                 "write checkpoints/analogy_<profile>_<image>.pt",
                                 budget_help="training budget per model and image in this call")
    parser.add_argument("--models", nargs="+", default=None, choices=MODEL_NAMES, help="default: every model")
    return train.run_from_command_line(parser, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
