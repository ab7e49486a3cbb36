"""Bad input at the public entries of the paper modules (CRN, SIMS, SRN, analogy, SEIGAN).

Each row of the tables calls one public entry with one bad input and expects the error the
project's convention asks for (ValueError for a bad value, type or shape, FileNotFoundError for a
missing file, CheckpointError for a corrupt one), raised at the boundary, with a message that names
the argument. The rows are grouped by kind of bad input. Everything is tiny (32×64 at most, widths
of 2 to 4): no training happens here.
"""
from __future__ import annotations

import functools
import inspect
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from labkit.checkpoints import CheckpointError, save_checkpoint
from labkit.data import NUM_CLASSES, render_batch
from labkit.networks import one_hot_layout
from labkit.papers import (analogy, analogy_runs, crn, crn_runs, seigan, seigan_runs, sims, sims_runs, srn,
                           srn_runs)
from labkit.train import select_profile

SIZE = (32, 64)
NAN = float("nan")
# where a row would train or write if its check were missing: never the repository's reports/ or checkpoints/
RUN_DIR = Path(tempfile.gettempdir()) / "labkit-bad-input-papers" / "run"
MISSING = Path(tempfile.gettempdir()) / "labkit-bad-input-papers" / "missing"


def labels(n=1, size=SIZE, classes=NUM_CLASSES, seed=0):
    return torch.randint(0, classes, (n, *size), generator=torch.Generator().manual_seed(seed))


def layout(n=1, size=SIZE):
    return one_hot_layout(labels(n, size))


def images(n=1, size=SIZE, value=None):
    out = torch.rand(n, 3, *size, generator=torch.Generator().manual_seed(1))
    return out if value is None else out.fill_(value)


def with_value(tensor, value, where=(0,)):
    """A copy of ``tensor`` with one element set to ``value``."""
    out = tensor.contiguous().clone()
    out.view(-1)[where[0]] = value
    return out


# --------------------------------------------------------------------------- small objects, built once


@functools.lru_cache(maxsize=None)
def cascade():
    torch.manual_seed(0)
    return crn.CascadedRefinementNetwork(SIZE, (4, 4, 4, 4), samples=2)


@functools.lru_cache(maxsize=None)
def memory():
    return sims.SegmentMemory.from_scenes(SIZE, 4, (16, 32), seed=0)


@functools.lru_cache(maxsize=None)
def query():
    return sims.query_layout(render_batch(SIZE, 1, split="test")[1][0], memory())


@functools.lru_cache(maxsize=None)
def synthesis():
    torch.manual_seed(0)
    return sims.SynthesisNetwork(SIZE, (4, 4, 4))


@functools.lru_cache(maxsize=None)
def transformer():
    torch.manual_seed(0)
    return sims.SegmentTransformer(widths=(2, 2), crop=8)


@functools.lru_cache(maxsize=None)
def orderer():
    torch.manual_seed(0)
    return sims.OrderingNetwork(widths=(2, 2))


@functools.lru_cache(maxsize=None)
def extrapolator():
    torch.manual_seed(0)
    return srn.ExtrapolationNetwork("srn", 4)


@functools.lru_cache(maxsize=None)
def srn_trainer():
    torch.manual_seed(0)
    return srn.SRNTrainer(srn.ExtrapolationNetwork("srn", 4), SIZE, "rsv", 8, critic_width=2)


K = 4   # labels of the analogy image


@functools.lru_cache(maxsize=None)
def analogy_generator():
    torch.manual_seed(0)
    return analogy.AnalogyGenerator(K, width=2)


def analogy_layout(n=1, size=(32, 32)):
    return analogy.one_hot(labels(n, size, classes=K), K)


@functools.lru_cache(maxsize=None)
def analogy_image():
    image = images(1, (32, 32))[0]
    return {"name": "toy", "kind": "photo", "image": image, "labels": labels(1, (32, 32), K)[0], "num_classes": K,
            "edits": []}


@functools.lru_cache(maxsize=None)
def seigan_segmenter():
    torch.manual_seed(0)
    return seigan.Segmenter(2, 2)


def boxes(n=1):
    return torch.tensor([[4, 4, 20, 28]] * n)


SMOKE = {chapter: select_profile(module.PROFILES, "smoke")
         for chapter, module in (("crn", crn), ("sims", sims), ("srn", srn), ("analogy", analogy), ("seigan", seigan))}


def settings(chapter, **changes):
    return dict(SMOKE[chapter], **changes)


def seigan_trainer(**spec):
    torch.manual_seed(0)
    return seigan.SeiganTrainer(dict(seigan.MODEL_SPECS["seigan"], **spec), settings("seigan", width=2, depth=2,
                                                                                     discriminator_width=2))


def seigan_test_data(n=2):
    x = images(n)
    return {"objects": x, "boxes": boxes(n), "backgrounds": images(n, value=0.5), "masks": torch.zeros(n, 1, *SIZE),
            "classes": torch.zeros(n, dtype=torch.long)}


def row(call, match, error=ValueError, id=None):
    return pytest.param(call, error, match, id=id)


def optimizer():
    return torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])


# --------------------------------------------------------------------------- the table

WRONG_TYPE = [
    row(lambda: cascade()(labels()), "layout", id="crn-generator-label-map-not-layout"),
    row(lambda: crn.FeatureMatchingLoss("judge"), "extractor", id="crn-loss-extractor-name"),
    row(lambda: crn.CRNTrainer(cascade(), torch.nn.L1Loss()), "loss", id="crn-trainer-loss-module"),
    row(lambda: crn.CRNTrainer(cascade(), crn.FeatureMatchingLoss(None))([layout(), images()]), "batch",
        id="crn-trainer-batch-list"),
    row(lambda: crn.masked_layer_distance(np.zeros((1, 3, 4, 4)), torch.zeros(1, 1, 3, 4, 4), layout(1, (4, 4))),
        "real", id="crn-distance-numpy"),
    row(lambda: crn.diversity_objective([[[1.0]]]), "class_losses", id="crn-diversity-list"),
    row(lambda: crn.cascade_sizes("64x128"), "output_size", id="crn-cascade-sizes-string"),
    row(lambda: crn_runs.run("smoke", models="crn"), "models", id="crn-run-models-string"),
    row(lambda: crn_runs.run("smoke", models=["crn"], export="checkpoints/x.pt", run_dir=RUN_DIR, seed=-1), "export",
        id="crn-run-export-path"),
    row(lambda: crn_runs.build_generator("crn", [("size", (32, 64))]), "settings", id="crn-build-settings-list"),
    row(lambda: crn_runs.claims(["crn"]), "record", id="crn-claims-list"),
    row(lambda: sims.retrieve(memory(), 0, memory().grid_masks[0].float(), memory().grid_context[0]), "query_mask",
        id="sims-retrieve-float-mask"),
    row(lambda: sims.retrieve("memory", 0, memory().grid_masks[0], memory().grid_context[0]), "memory",
        id="sims-retrieve-memory-string"),
    row(lambda: sims.misaligned_batch(memory(), 0, 2, seed=-1), "seed", id="sims-misaligned-negative-seed"),
    row(lambda: sims.random_affine(torch.zeros(1, 1, 8, 8), 0), "rng", id="sims-random-affine-int-rng"),
    row(lambda: sims.dilate(torch.zeros(4, 4), 1), "mask", id="sims-dilate-float-mask"),
    row(lambda: sims.colour_transfer(images()[0], torch.ones(*SIZE), torch.zeros(6)), "mask",
        id="sims-colour-transfer-float-mask"),
    row(lambda: sims.coverage(query()), "canvases", id="sims-coverage-not-a-list"),
    row(lambda: sims.build_canvas(labels()[0], memory(), transformer="T"), "transformer",
        id="sims-build-canvas-transformer-string"),
    row(lambda: sims_runs.run("smoke", parts="retrieval"), "parts", id="sims-run-parts-string"),
    row(lambda: sims_runs.CanvasCache(memory(), None, None, 2).get(labels()[0].numpy().astype(float)), "label",
        id="sims-canvas-cache-float-label"),
    row(lambda: srn.ExtrapolationNetwork(["srn"]), "generator", id="srn-generator-list"),
    row(lambda: srn.SRNTrainer(torch.nn.Identity(), SIZE), "generator", id="srn-trainer-identity"),
    row(lambda: srn_trainer().pretrain_loss(images(2)), "batch", id="srn-pretrain-batch-tensor"),
    row(lambda: srn_trainer().finetune_loss({"image": images(2), "placement": "left"}, "adam"), "critic_optimizer",
        id="srn-finetune-optimizer-string"),
    row(lambda: srn.IDMRFLoss(lambda x: x), "extractor", id="srn-mrf-extractor-lambda"),
    row(lambda: srn.gradient_penalty("critic", images(2), images(2)), "critic", id="srn-gp-critic-string"),
    row(lambda: srn_runs.train_model("srn", SMOKE["srn"], "cpu", RUN_DIR, phases="finetune", seed=-1), "phases",
        id="srn-train-phases-string"),
    row(lambda: srn_runs.complete_images(None, images(2), "left"), "extrapolate", id="srn-complete-none"),
    row(lambda: srn_runs.extrapolator("srn", None), "generator", id="srn-extrapolator-no-generator"),
    row(lambda: analogy.augmentation_grid((32, 32), 0.5, 0), "generator", id="analogy-grid-int-generator"),
    row(lambda: analogy.edit_layout(labels(1, (8, 8))[0].float(), torch.ones(8, 8, dtype=torch.bool), "move"),
        "labels", id="analogy-edit-float-labels"),
    row(lambda: analogy.edit_layout(labels(1, (8, 8))[0], torch.ones(8, 8, dtype=torch.bool), "move", shift=3),
        "shift", id="analogy-edit-shift-int"),
    row(lambda: analogy.photo_layout("coffee", 3), "image", id="analogy-photo-layout-string"),
    row(lambda: analogy.patch_coherence_loss(torch.zeros(1, 2, 4, 4), [torch.zeros(1, 2, 4, 4)]),
        "target_features", id="analogy-patch-tensor-not-list"),
    row(lambda: analogy_runs.photo_image(3, (32, 48)), "name", id="analogy-photo-image-int"),
    row(lambda: seigan.ImagePool(generator=0), "generator", id="seigan-pool-int-generator"),
    row(lambda: seigan.double_swap(images(), images(), torch.zeros(1, 1, *SIZE), "segment", lambda z: z, lambda z: z),
        "segment", id="seigan-double-swap-string"),
    row(lambda: seigan.background_reconstruction_loss(images(), images(), None), "features",
        id="seigan-background-loss-no-features"),
    row(lambda: seigan_trainer().iteration_loss(seigan_test_data(), optimizer()), "features",
        id="seigan-cycle-without-features"),
    row(lambda: seigan_trainer(cycle=False).iteration_loss(seigan_test_data(), "sgd"), "discriminator_optimizer",
        id="seigan-iteration-optimizer-string"),
    row(lambda: seigan_runs.chapter_data(SMOKE["seigan"], splits="test"), "splits", id="seigan-splits-string"),
    row(lambda: seigan.paste_offsets(boxes(2), "64", torch.Generator()), "width", id="seigan-paste-offsets-width-str"),
    row(lambda: seigan.paste_offsets(boxes(2), SIZE[1], None), "generator", id="seigan-paste-offsets-no-generator"),
    row(lambda: seigan.shift_images(images(2), "ab"), "offsets", id="seigan-shift-offsets-string"),
    row(lambda: seigan_runs.early_dynamics({"train": {}, "test": {}}, SMOKE["seigan"], None, steps=5), "steps",
        id="seigan-early-steps-int"),
]

BOOL_AS_INT = [
    row(lambda: crn.CascadedRefinementNetwork(SIZE, (4, 4, 4, 4), samples=True), "samples",
        id="crn-samples-true"),
    row(lambda: crn.CascadedRefinementNetwork(SIZE, (4, True, 4, 4)), "widths", id="crn-width-true"),
    row(lambda: sims.retrieve(memory(), 0, memory().grid_masks[0], memory().grid_context[0], k=True), "k",
        id="sims-retrieve-k-true"),
    row(lambda: memory().mask(True), "index", id="sims-memory-mask-true"),
    row(lambda: srn.unknown_mask(SIZE, "left", batch=True), "batch", id="srn-unknown-mask-batch-true"),
    row(lambda: srn.SRNTrainer(srn.ExtrapolationNetwork("srn", 4), SIZE, critic_steps=True), "critic_steps",
        id="srn-critic-steps-true"),
    row(lambda: analogy.augmentation_strength(True, 10), "iteration", id="analogy-strength-iteration-true"),
    row(lambda: seigan.object_scenes(SIZE, True), "count", id="seigan-object-scenes-count-true"),
    row(lambda: seigan.ImagePool(size=False), "size", id="seigan-pool-size-false"),
]

FLOAT_AS_INT = [
    row(lambda: crn.CascadedRefinementNetwork(SIZE, (4, 4, 4, 4), samples=2.5), "samples", id="crn-samples-float"),
    row(lambda: crn.SingleScaleNetwork(SIZE, width=4.5, layers=2), "width", id="crn-single-scale-width-float"),
    row(lambda: crn.cascade_sizes((32.5, 64)), "output_size", id="crn-cascade-float-size"),
    row(lambda: sims.retrieve(memory(), 0, memory().grid_masks[0], memory().grid_context[0], k=2.5), "k",
        id="sims-retrieve-k-float"),
    row(lambda: memory().truncated(2.5), "count", id="sims-truncated-float"),
    row(lambda: srn.SRNTrainer(srn.ExtrapolationNetwork("srn", 4), SIZE, critic_steps=2.5), "critic_steps",
        id="srn-critic-steps-float"),
    row(lambda: srn.known_box((32.0, 64.0), "left"), "size", id="srn-known-box-float-size"),
    row(lambda: srn.subpixel_expand(torch.zeros(1, 4, 2, 2), 1.0, 2), "r1", id="srn-subpixel-float-ratio"),
    row(lambda: seigan.box_masks(torch.tensor([[1.5, 2.0, 8.0, 9.0]]), SIZE), "boxes", id="seigan-fractional-box"),
    row(lambda: seigan.shift_boxes(boxes(2), torch.tensor([1.5, 0.0])), "offsets", id="seigan-fractional-offset"),
    row(lambda: seigan.ImagePool(size=2.5), "size", id="seigan-pool-size-float"),
]

WRONG_SHAPE = [
    row(lambda: seigan.shift_images(images(2), torch.tensor([1])), "offsets", id="seigan-shift-offsets-short"),
    row(lambda: seigan.swap(images(2), images(2), torch.ones(2, 1, *SIZE), lambda z: z, lambda z: z,
                            offsets=torch.tensor([0])), "offsets", id="seigan-swap-offsets-short"),
    row(lambda: seigan.paste_offsets(torch.tensor([0, 0, 8, 8]), SIZE[1], torch.Generator()), "boxes",
        id="seigan-paste-offsets-flat-boxes"),
    row(lambda: seigan_runs.score_inpainting(images(2), dict(seigan_test_data(2), masks=torch.ones(2, 1, 8, 8),
                                                               true_backgrounds=images(2)), None, None),
        "masks", id="seigan-score-inpainting-mask-shape"),
    row(lambda: cascade()(layout(1, (16, 32))), "layout", id="crn-generator-wrong-size"),
    row(lambda: crn.RefinementModule(5, NUM_CLASSES, 7)(torch.zeros(1, 4, 4, 8), layout(1, (16, 32)), (8, 16)),
        "previous and layout", id="crn-refinement-module-channels"),
    row(lambda: crn.RefinementModule(0, NUM_CLASSES, 7)(None, layout(1, (16, 32)), (32, 64)), "size",
        id="crn-refinement-module-upsizing"),
    row(lambda: crn.FeatureMatchingLoss(None)(torch.rand(2, 1, 3, *SIZE), images(1), layout(2)), "real",
        id="crn-loss-batch-mismatch"),
    row(lambda: crn.FeatureMatchingLoss(None)(torch.rand(1, 1, 3, *SIZE), images(1), layout(2)), "layout",
        id="crn-loss-layout-batch"),
    row(lambda: sims.retrieve(memory(), 0, memory().grid_masks[0][:-1], memory().grid_context[0]), "query_mask",
        id="sims-retrieve-short-mask"),
    row(lambda: synthesis()(layout(2), images(1), torch.ones(2, 1, *SIZE)), "canvas", id="sims-synthesis-batch"),
    row(lambda: transformer()(images(1), torch.ones(1, 1, *SIZE), torch.ones(1, 1, 16, 32), layout(1)),
        "target_mask", id="sims-transformer-target-size"),
    row(lambda: orderer()(layout(1), torch.ones(1, 1, 16, 32), torch.ones(1, 1, 16, 32)), "mask_a",
        id="sims-ordering-mask-size"),
    row(lambda: sims.mask_iou(torch.ones(2, 4, 4), torch.ones(2, 4, 5)), "same shape", id="sims-mask-iou-shapes"),
    row(lambda: sims.SegmentTransformer.warp(images(1), torch.ones(1, 1, *SIZE), torch.zeros(2, 3)), "theta",
        id="sims-warp-theta"),
    row(lambda: sims.SegmentMemory.build(torch.zeros(1, 3, *SIZE, dtype=torch.uint8), labels(), (10, 10)), "grid",
        id="sims-memory-grid-not-dividing"),
    row(lambda: sims.paste_order(query(), torch.zeros(1, 4, 4, dtype=torch.bool), None, np.random.default_rng(0)),
        "regions", id="sims-paste-order-regions"),
    row(lambda: srn.context_normalization(torch.rand(2, 4, 8, 16), torch.ones(1, 1, *SIZE)), "mask",
        id="srn-cn-mask-batch"),
    row(lambda: srn.reconstruction_loss(images(2), images(2), torch.ones(2, 1, *SIZE), torch.ones(2, 1, 8, 8)),
        "weights", id="srn-reconstruction-weights-shape"),
    row(lambda: srn.reconstruction_loss(images(2), images(1), torch.ones(2, 1, *SIZE), torch.ones(2, 1, *SIZE)),
        "predicted", id="srn-reconstruction-broadcast"),
    row(lambda: srn.id_mrf_layer_loss(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 6)), "generated",
        id="srn-mrf-shapes"),
    row(lambda: extrapolator()(images(1, (30, 32)), "left"), "known", id="srn-known-not-multiple-of-4"),
    row(lambda: srn.GlobalCritic(SIZE, 2)(images(1, (16, 32))), "images", id="srn-global-critic-size"),
    row(lambda: srn.GlobalCritic((40, 64), 2), "size", id="srn-global-critic-not-multiple-of-16"),
    row(lambda: srn_trainer().pretrain_loss({"image": images(2, (64, 128)), "placement": "left"}), "image",
        id="srn-trainer-image-size"),
    row(lambda: srn.relative_spatial_variant_weights(torch.ones(1, 3, *SIZE), 8), "mask", id="srn-rsv-mask-rgb"),
    row(lambda: analogy_generator()(images(2, (32, 32)), analogy_layout(1), analogy_layout(1)), "source_layout",
        id="analogy-generator-batch"),
    row(lambda: analogy_generator().translation(analogy_layout(1), analogy_layout(1, (32, 40))), "target_layout",
        id="analogy-translation-sizes"),
    row(lambda: analogy.layout_ratio(torch.ones(1, 4, 4, 4), torch.ones(1, 4, 4, 2)), "target",
        id="analogy-ratio-shapes"),
    row(lambda: analogy_generator().sft.inputs([torch.ones(1, 4, 16, 16)], [torch.ones(1, 4, 16, 16)]),
        "source_features", id="analogy-sft-one-scale"),
    row(lambda: analogy.warp_pair(images(1, (8, 8)), labels(1, (8, 8)), torch.zeros(1, 8, 8, 3)), "grid",
        id="analogy-warp-grid"),
    row(lambda: analogy.translate(torch.rand(1, 2, 4, 4), torch.ones(1, 2, 4, 4), torch.zeros(1, 2, 2, 2)), "beta",
        id="analogy-translate-beta"),
    row(lambda: analogy.feature_matching_loss([torch.ones(1, 2, 4, 4)], [torch.ones(1, 2, 2, 2)]), "fake_features",
        id="analogy-feature-matching-shapes"),
    row(lambda: analogy.ResidualBlock(4)(torch.zeros(1, 3, 4, 4)), "x", id="analogy-residual-block-channels"),
    row(lambda: analogy.AnalogyTrainer(images(1, (30, 30)), labels(1, (30, 30), K), K, analogy.MODEL_SPECS["sft"],
                                       SMOKE["analogy"], lambda x: [x]), "multiples of 8",
        id="analogy-trainer-size"),
    row(lambda: seigan.composite(torch.ones(1, 1, *SIZE), images(1), images(1, (32, 32))), "must match",
        id="seigan-composite-sizes"),
    row(lambda: seigan.restrict_to_boxes(torch.ones(2, 1, *SIZE), boxes(1)), "boxes", id="seigan-restrict-boxes"),
    row(lambda: seigan.Enhancer(2, 2)(images(1), torch.zeros(1, 2, *SIZE)), "noise", id="seigan-enhancer-noise"),
    row(lambda: seigan.ImageDiscriminator(2)(images(1, (8, 8))), "images", id="seigan-discriminator-tiny"),
    row(lambda: seigan_runs.mask_iou(torch.ones(2, 1, 4, 4), torch.ones(1, 1, 4, 4)), "predicted",
        id="seigan-mask-iou-shapes"),
    row(lambda: seigan_trainer(cycle=False)(images(2), boxes(2), images(1)), "backgrounds",
        id="seigan-trainer-unpaired-sizes"),
]

EMPTY = [
    row(lambda: cascade()(layout(1)[:0]), "layout", id="crn-generator-empty-batch"),
    row(lambda: crn.FeatureMatchingLoss(None)(torch.rand(0, 1, 3, *SIZE), images(1)[:0], layout(1)[:0]), "real",
        id="crn-loss-empty-batch"),
    row(lambda: crn.diversity_objective(torch.zeros(0, 2, 3)), "class_losses", id="crn-diversity-empty"),
    row(lambda: crn.diversity_objective(torch.zeros(1, 0, 3)), "class_losses", id="crn-diversity-no-outputs"),
    row(lambda: synthesis()(layout(1)[:0], images(1)[:0], torch.ones(0, 1, *SIZE)), "layout",
        id="sims-synthesis-empty"),
    row(lambda: orderer()(layout(1)[:0], torch.ones(0, 1, *SIZE), torch.ones(0, 1, *SIZE)), "layout",
        id="sims-ordering-empty"),
    row(lambda: sims.SegmentMemory.build(torch.zeros(0, 3, *SIZE, dtype=torch.uint8), labels()[:0], (16, 32)),
        "images", id="sims-memory-no-scenes"),
    row(lambda: sims.misaligned_batch(memory().truncated(len(memory())).__class__(
        **{**{k: getattr(memory(), k) for k in ("size", "grid", "min_area", "images", "labels", "components")},
           **{k: getattr(memory(), k)[:0] for k in ("class_ids", "scene_ids", "component_ids", "boxes", "areas",
                                                      "grid_masks", "grid_context", "lab_stats")}}), 0, 2),
        "memory", id="sims-misaligned-empty-memory"),
    row(lambda: sims.lab_statistics(images()[0], torch.zeros(*SIZE, dtype=torch.bool)), "mask",
        id="sims-lab-statistics-empty-mask"),
    row(lambda: sims.coverage([]), "canvases", id="sims-coverage-empty"),
    row(lambda: sims_runs.retrieval_quality([], memory()), "canvases", id="sims-retrieval-quality-empty"),
    row(lambda: srn.crop_known(images(1)[:0], "left"), "images", id="srn-crop-empty"),
    row(lambda: extrapolator()(images(1, (32, 32))[:0], "left"), "known", id="srn-generator-empty"),
    row(lambda: srn.reflect_extrapolation(images(1, (32, 32))[:0], "left"), "known", id="srn-reflect-empty"),
    row(lambda: srn.id_mrf_layer_loss(torch.rand(0, 4, 8, 8), torch.rand(0, 4, 8, 8)), "generated",
        id="srn-mrf-empty"),
    row(lambda: srn_runs.evaluate_extrapolation(srn.reflect_extrapolation, SIZE, 2, placements=[]), "placements",
        id="srn-evaluate-no-placements"),
    row(lambda: analogy_generator()(images(1, (32, 32))[:0], analogy_layout(1)[:0], analogy_layout(1)[:0]),
        "image", id="analogy-generator-empty"),
    row(lambda: analogy.PatchDiscriminator(2)(images(1, (32, 32))[:0]), "images", id="analogy-discriminator-empty"),
    row(lambda: analogy.AuxiliarySegmenter(K, 2)(images(1, (32, 32))[:0]), "images", id="analogy-segmenter-empty"),
    row(lambda: analogy.fixed_point_loss([]), "params", id="analogy-fixed-point-empty"),
    row(lambda: analogy.feature_matching_loss([], []), "fake_features", id="analogy-feature-matching-empty"),
    row(lambda: seigan_segmenter()(images(1)[:0], boxes(1)[:0]), "images", id="seigan-segmenter-empty"),
    row(lambda: seigan.Inpainter(2, 2)(images(1)[:0]), "cut_outs", id="seigan-inpainter-empty"),
    row(lambda: seigan.composite(torch.ones(0, 1, *SIZE), images(1)[:0], images(1)[:0]), "objects",
        id="seigan-composite-empty"),
    row(lambda: seigan.ImagePool(4).query(torch.zeros(0, 3, 4, 4)), "images", id="seigan-pool-empty"),
    row(lambda: seigan.ImageDiscriminator(2)(images(1)[:0]), "images", id="seigan-discriminator-empty"),
    row(lambda: seigan_runs.batch_sampler({"objects": images(1)[:0], "boxes": boxes(1)[:0],
                                           "backgrounds": images(1)}, 2), "objects", id="seigan-sampler-empty"),
]

NOT_FINITE = [
    row(lambda: cascade()(with_value(layout(), NAN)), "layout", id="crn-generator-nan-layout"),
    row(lambda: crn.FeatureMatchingLoss(None)(torch.rand(1, 1, 3, *SIZE), with_value(images(), NAN), layout()),
        "real", id="crn-loss-nan-real"),
    row(lambda: crn.FeatureMatchingLoss(None)(with_value(torch.rand(1, 1, 3, *SIZE), math.inf), images(), layout()),
        "fake", id="crn-loss-inf-fake"),
    row(lambda: crn.masked_layer_distance(with_value(torch.rand(1, 2, 4, 4), NAN), torch.rand(1, 1, 2, 4, 4),
                                          layout(1, (4, 4))), "real", id="crn-distance-nan"),
    row(lambda: crn.diversity_objective(with_value(torch.rand(1, 2, 3), NAN)), "class_losses",
        id="crn-diversity-nan"),
    row(lambda: synthesis()(layout(), with_value(images(), NAN), torch.ones(1, 1, *SIZE)), "canvas",
        id="sims-synthesis-nan-canvas"),
    row(lambda: transformer()(images(), with_value(torch.ones(1, 1, *SIZE), NAN), torch.ones(1, 1, *SIZE), layout()),
        "mask", id="sims-transformer-nan-mask"),
    row(lambda: sims.transformation_loss(images(), torch.ones(1, 1, *SIZE), with_value(images(), NAN),
                                         torch.ones(1, 1, *SIZE)), "photo", id="sims-transformation-loss-nan"),
    row(lambda: sims.SegmentTransformer.warp(images(), torch.ones(1, 1, *SIZE), torch.full((1, 2, 3), NAN)),
        "theta", id="sims-warp-nan-theta"),
    row(lambda: extrapolator()(with_value(images(1, (32, 32)), NAN), "left"), "known", id="srn-generator-nan"),
    row(lambda: srn.context_normalization(with_value(torch.rand(1, 4, 8, 16), NAN), torch.ones(1, 1, *SIZE)),
        "features", id="srn-cn-nan-features"),
    row(lambda: srn.relative_spatial_variant_weights(with_value(torch.ones(1, 1, *SIZE), NAN), 8), "mask",
        id="srn-rsv-nan-mask"),
    row(lambda: srn.gradient_penalty(lambda x: x.sum((1, 2, 3)), with_value(images(2), NAN), images(2)), "real",
        id="srn-gp-nan"),
    row(lambda: analogy_generator()(images(1, (32, 32)), with_value(analogy_layout(), NAN), analogy_layout()),
        "source_layout", id="analogy-generator-nan-layout"),
    row(lambda: analogy.layout_ratio(torch.full((1, 2, 4, 4), math.inf), torch.ones(1, 2, 4, 4)), "target",
        id="analogy-ratio-inf"),
    row(lambda: analogy.photo_layout(np.full((8, 8, 3), np.nan, np.float32), 2), "image",
        id="analogy-photo-layout-nan"),
    row(lambda: seigan.check_masks(torch.full((1, 1, *SIZE), NAN), images()), "masks", id="seigan-nan-masks"),
    row(lambda: seigan.composite(torch.full((1, 1, *SIZE), NAN), images(), images()), "masks",
        id="seigan-composite-nan-masks"),
    row(lambda: seigan.cut_out(with_value(torch.ones(1, 1, *SIZE), math.inf), images()), "masks",
        id="seigan-cut-out-inf-masks"),
    row(lambda: seigan.box_masks(torch.tensor([[NAN, 0.0, 4.0, 4.0]]), SIZE), "boxes", id="seigan-nan-box"),
    row(lambda: seigan.Enhancer(2, 2)(images(), torch.full((1, 1, *SIZE), NAN)), "noise", id="seigan-nan-noise"),
]

OUT_OF_RANGE = [
    row(lambda: seigan.paste_offsets(torch.tensor([[0, 0, 80, 8]]), SIZE[1], torch.Generator()), "boxes",
        id="seigan-paste-offsets-box-wider-than-frame"),
    row(lambda: seigan.swap(images(1), images(1), seigan.box_masks(torch.tensor([[50, 0, 60, 8]]), SIZE), lambda z: z,
                            lambda z: z, offsets=torch.tensor([10])), "offsets", id="seigan-swap-offset-out-of-frame"),
    row(lambda: seigan_runs.mask_overlap(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)), "true masks",
        id="seigan-overlap-empty-truth"),
    row(lambda: cascade()(layout() * 2), "layout", id="crn-layout-above-one"),
    row(lambda: cascade()(layout() - 0.5), "layout", id="crn-layout-negative"),
    row(lambda: crn.FeatureMatchingLoss(None)(torch.rand(1, 1, 3, *SIZE), images() * 255, layout()), "real",
        id="crn-loss-real-0-255"),
    row(lambda: crn.FeatureMatchingLoss(None, momentum=1.5), "momentum", id="crn-loss-momentum"),
    row(lambda: crn.FeatureMatchingLoss(None, calibration_steps=-1), "calibration_steps",
        id="crn-loss-negative-calibration"),
    row(lambda: crn.diversity_objective(torch.rand(1, 2, 3), min_weight=-1.0), "min_weight",
        id="crn-diversity-negative-weight"),
    row(lambda: crn_runs.sampler("crn", cascade(), 0), "samples", id="crn-sampler-zero-samples"),
    row(lambda: crn_runs.train_model("crn", SMOKE["crn"], "cpu", RUN_DIR, max_minutes=-1, seed=-1), "max_minutes",
        id="crn-train-negative-budget"),
    row(lambda: crn_runs.train_model("crn", settings("crn", steps=-5), "cpu", RUN_DIR, seed=-1), "steps",
        id="crn-train-negative-steps"),
    row(lambda: crn_runs.train_model("crn", SMOKE["crn"], "cpu", RUN_DIR, seed=-1), "seed",
        id="crn-train-negative-seed"),
    row(lambda: crn_runs.build_generator("crn", settings("crn", samples=0)), "samples",
        id="crn-build-zero-samples"),
    row(lambda: synthesis()(layout(), images() * 2 - 1, torch.ones(1, 1, *SIZE)), "canvas",
        id="sims-canvas-minus-one-one"),
    row(lambda: synthesis()(layout(), images(), torch.full((1, 1, *SIZE), 2.0)), "mask", id="sims-mask-above-one"),
    row(lambda: sims.retrieve(memory(), NUM_CLASSES, memory().grid_masks[0], memory().grid_context[0]), "class_id",
        id="sims-retrieve-class-out-of-range"),
    row(lambda: sims.retrieve(memory(), -1, memory().grid_masks[0], memory().grid_context[0]), "class_id",
        id="sims-retrieve-negative-class-wraps"),
    row(lambda: sims.retrieve(memory(), 0, memory().grid_masks[0], memory().grid_context[0], k=0), "k",
        id="sims-retrieve-k-zero"),
    row(lambda: sims.retrieval_scores(memory(), 0, memory().grid_masks[0],
                                      torch.full_like(memory().grid_context[0], 40)), "query_context",
        id="sims-retrieval-context-ids"),
    row(lambda: memory().truncated(-5), "count", id="sims-truncated-negative"),
    row(lambda: memory().truncated(len(memory()) + 1), "count", id="sims-truncated-too-many"),
    row(lambda: memory().mask(len(memory())), "segment", IndexError, id="sims-memory-mask-out-of-range"),
    row(lambda: sims.SegmentMemory.from_scenes(SIZE, 0, (16, 32)), "count", id="sims-memory-zero-scenes"),
    row(lambda: sims.connected_segments(labels()[0].numpy(), -1), "min_area", id="sims-negative-min-area"),
    row(lambda: sims.dilate(torch.zeros(4, 4, dtype=torch.bool), -1), "radius", id="sims-dilate-negative"),
    row(lambda: sims.elision_mask(labels()[0], np.random.default_rng(0), band=0.0), "band", id="sims-elision-band"),
    row(lambda: sims.cut_side(torch.ones(1, 1, 4, 4), np.random.default_rng(0), most=2.0), "most",
        id="sims-cut-side-most"),
    row(lambda: sims.build_canvas(labels()[0], memory(), paste_margin=-2), "paste_margin",
        id="sims-build-canvas-negative-margin"),
    row(lambda: sims.retrieve_for_layout(labels()[0], memory(), rank=-1), "rank", id="sims-retrieve-negative-rank"),
    row(lambda: sims.ordering_pairs(SIZE, 0), "count", id="sims-ordering-pairs-zero"),
    row(lambda: sims.OrderingPairs(*(torch.zeros(1, 4, 4),) * 2, *(torch.zeros(2, dtype=torch.long),) * 4)
        .batch([5]), "index", id="sims-pairs-batch-out-of-range"),
    row(lambda: sims.SimulatedCanvases.build(memory(), only_scenes=[99]), "only_scenes",
        id="sims-simulated-scene-out-of-range"),
    row(lambda: sims.SimulatedCanvases.build(memory(), pool=0), "pool", id="sims-simulated-pool-zero"),
    row(lambda: sims_runs.CanvasCache(memory(), None, None, -1), "paste_margin", id="sims-cache-negative-margin"),
    row(lambda: sims_runs.evaluate_transformer(transformer(), SMOKE["sims"], batches=0), "batches",
        id="sims-evaluate-transformer-zero-batches"),
    row(lambda: sims_runs.benchmark_retrieval(settings("sims", retrieval_sizes=()), progress=False),
        "retrieval_sizes", id="sims-benchmark-no-sizes"),
    row(lambda: srn.context_normalization(torch.rand(1, 4, 8, 16), torch.ones(1, 1, *SIZE), NAN), "blend",
        id="srn-cn-nan-blend"),
    row(lambda: srn.context_normalization(torch.rand(1, 4, 8, 16), torch.full((1, 1, *SIZE), 3.0)), "mask",
        id="srn-cn-mask-above-one"),
    row(lambda: extrapolator()(images(1, (32, 32)) * 2 - 1, "left"), "known", id="srn-known-minus-one-one"),
    row(lambda: extrapolator()(images(1, (32, 32)), "left", blend=2.0), "blend", id="srn-generator-blend"),
    row(lambda: srn.ExtrapolationNetwork("srn", 1), "width", id="srn-generator-width-one"),
    row(lambda: srn.subpixel_expand(torch.zeros(1, 4, 2, 2), 0, 2), "r1", id="srn-subpixel-zero-ratio"),
    row(lambda: srn.propagation_kernel(8, sigma=0.0), "sigma", id="srn-kernel-zero-sigma"),
    row(lambda: srn.relative_spatial_variant_weights(torch.ones(1, 1, *SIZE), 8, iterations=1), "iterations",
        id="srn-rsv-one-iteration"),
    row(lambda: srn.confidence_driven_weights(torch.ones(1, 1, *SIZE), 8, iterations=0), "iterations",
        id="srn-confidence-zero-iterations"),
    row(lambda: srn.unknown_mask(SIZE, "left", batch=0), "batch", id="srn-unknown-mask-zero-batch"),
    row(lambda: srn.known_box((0, 0), "left"), "size", id="srn-known-box-zero-size"),
    row(lambda: srn.id_mrf_layer_loss(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8), bandwidth=0), "bandwidth",
        id="srn-mrf-zero-bandwidth"),
    row(lambda: srn.gradient_penalty(lambda x: x.sum((1, 2, 3)), images(2), images(2), mix=torch.full((2,), 2.0)),
        "mix", id="srn-gp-mix-range"),
    row(lambda: srn_runs.extrapolation_batch(None, -1, 2), "scenes", id="srn-batch-no-scenes"),
    row(lambda: srn_runs.complete_images(srn.reflect_extrapolation, images(2), "left", batch_size=0), "batch_size",
        id="srn-complete-zero-batch-size"),
    row(lambda: srn_runs.evaluate_extrapolation(srn.reflect_extrapolation, SIZE, 0), "count",
        id="srn-evaluate-zero-count"),
    row(lambda: analogy_generator()(images(1, (32, 32)) * 2 - 1, analogy_layout(), analogy_layout()), "image",
        id="analogy-image-minus-one-one"),
    row(lambda: analogy.one_hot(labels(1, (8, 8), classes=K), 0), "num_classes", id="analogy-one-hot-zero"),
    row(lambda: analogy.image_analogies(images()[0], labels()[0], labels()[0], NUM_CLASSES, passes=0), "passes",
        id="analogy-image-analogies-zero-passes"),
    row(lambda: analogy.photo_layout(np.ones((8, 8, 3), np.float32), 0), "clusters", id="analogy-zero-clusters"),
    row(lambda: analogy.photo_layout(np.ones((8, 8, 3), np.float32) * 2, 2), "image", id="analogy-photo-above-one"),
    row(lambda: analogy.photo_layout(np.ones((8, 8, 3), np.float32), 2, smoothing=4), "smoothing",
        id="analogy-photo-even-smoothing"),
    row(lambda: analogy.augmentation_strength(-1, 10), "iteration", id="analogy-negative-iteration"),
    row(lambda: analogy.augmentation_grid((32, 32), 1.5, torch.Generator()), "strength", id="analogy-strength"),
    row(lambda: analogy.patch_coherence_loss([torch.rand(1, 2, 4, 4)], [torch.rand(1, 2, 4, 4)], ((3, 2),),
                                             nearest=10), "nearest", id="analogy-patch-too-many-nearest"),
    row(lambda: analogy.patch_coherence_loss([torch.rand(1, 2, 2, 2)], [torch.rand(1, 2, 2, 2)], ((3, 2),)),
        "target_features", id="analogy-patch-bigger-than-map"),
    row(lambda: analogy.edit_layout(labels(1, (8, 8))[0], torch.ones(8, 8, dtype=torch.bool), "scale",
                                    factor=NAN), "factor", id="analogy-edit-nan-factor"),
    row(lambda: analogy.AnalogyGenerator(K, width=0), "width", id="analogy-generator-zero-width"),
    row(lambda: analogy.conv_block(3, 4, activation="gelu"), "activation", id="analogy-conv-block-activation"),
    row(lambda: analogy_runs.appearance_distance(images()[0], images()[0], patch=0), "patch",
        id="analogy-appearance-zero-patch"),
    row(lambda: analogy_runs._car_scenes((32, 64), 0), "count", id="analogy-car-scenes-zero"),
    row(lambda: analogy_runs.analogy_output("sft", analogy_generator(), analogy_image(),
                                            labels(1, (32, 32), classes=NUM_CLASSES)[0] + K), "target_labels",
        id="analogy-output-label-out-of-range"),
    row(lambda: seigan.object_scenes(SIZE, 0, scan_limit=50), "count", id="seigan-object-scenes-zero"),
    row(lambda: seigan.object_scenes(SIZE, -3, scan_limit=50), "count", id="seigan-object-scenes-negative"),
    row(lambda: seigan.object_scenes(SIZE, 5, scan_limit=3), "scan_limit", id="seigan-count-above-scan-limit"),
    row(lambda: seigan.object_scenes(SIZE, 2, min_height=2.0, scan_limit=50), "min_height", id="seigan-min-height"),
    row(lambda: seigan.box_masks(torch.tensor([[0, 0, 100, 8]]), SIZE), "boxes", id="seigan-box-outside"),
    row(lambda: seigan.check_masks(torch.full((1, 1, *SIZE), -0.5), images()), "masks", id="seigan-negative-masks"),
    row(lambda: seigan.ImagePool(size=-1), "size", id="seigan-pool-negative"),
    row(lambda: seigan.Segmenter(2, depth=1), "depth", id="seigan-segmenter-depth-one"),
    row(lambda: seigan_segmenter()(images() * 2 - 1, boxes()), "images", id="seigan-segmenter-minus-one-one"),
    row(lambda: seigan_runs.mask_iou(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 4, 4), threshold=2.0), "threshold",
        id="seigan-mask-iou-threshold"),
    row(lambda: seigan_runs.batch_sampler(seigan_test_data(), 0), "batch_size", id="seigan-sampler-zero-batch"),
    row(lambda: seigan_runs.batch_sampler(seigan_test_data(), 2)(-1), "step", id="seigan-sampler-negative-step"),
    row(lambda: seigan_runs.swap_outputs(None, seigan_test_data(), None), "masks", id="seigan-paste-without-masks"),
    row(lambda: seigan_runs.save_sample_figure("seigan", {"masks": torch.zeros(2, 1, *SIZE), "pasted": images(2),
                                                          "moved": images(2)}, seigan_test_data(), RUN_DIR / "x.png",
                                               pairs=6), "pairs", id="seigan-figure-more-pairs-than-given"),
    row(lambda: seigan.SeiganTrainer(seigan.MODEL_SPECS["seigan"], SMOKE["seigan"], seed=-1), "seed",
        id="seigan-trainer-negative-seed"),
]

NOT_ONE_HOT = [
    row(lambda: cascade()(layout() + layout().roll(1, 1)), "one-hot", id="crn-two-classes-per-pixel"),
    row(lambda: crn.FeatureMatchingLoss(None)(torch.rand(1, 1, 3, *SIZE), images(), torch.ones(1, 3, *SIZE)),
        "layout", id="crn-loss-all-classes"),
    row(lambda: crn.RefinementModule(0, NUM_CLASSES, 4)(None, layout(1).long(), (4, 8)), "layout",
        id="crn-refinement-integer-layout"),
    row(lambda: synthesis()(layout() + layout().roll(1, 1), images(), torch.ones(1, 1, *SIZE)), "one-hot",
        id="sims-synthesis-not-one-hot"),
    row(lambda: analogy_generator()(images(1, (32, 32)), analogy_layout() * 3, analogy_layout()), "source_layout",
        id="analogy-layout-times-three"),
    row(lambda: analogy.check_layout(torch.ones(1, K, 8, 8), K), "one-hot", id="analogy-check-layout-all-ones"),
    row(lambda: sims_runs.sims_sampler("canvas_only", None, sims_runs.CanvasCache(memory(), None, None, 2), "cpu")(
        labels()), "layout", id="sims-sampler-label-map"),
]

UNKNOWN_NAME = [
    row(lambda: crn_runs.exported_path("crn", "bok"), "profile", id="crn-exported-path-profile"),
    row(lambda: crn_runs.read_record("bok"), "profile", id="crn-read-record-profile"),
    row(lambda: crn_runs.load_generator(crn_runs.exported_path("crn", "book"), device="gpu"), "device",
        id="crn-load-bad-device"),
    row(lambda: crn_runs.train_model("crn", SMOKE["crn"], "tpu", RUN_DIR, seed=-1), "device",
        id="crn-train-bad-device"),
    row(lambda: sims.check_score(["mask"]), "retrieval score", id="sims-score-list"),
    row(lambda: sims.SegmentMemory.from_scenes(SIZE, 2, (16, 32), split="val"), "split", id="sims-memory-split"),
    row(lambda: sims_runs.simulations_of("sims_v2"), "unknown model", id="sims-simulations-of-unknown"),
    row(lambda: sims_runs.network_of("sims_v2"), "unknown model", id="sims-network-of-unknown"),
    row(lambda: sims_runs.canvas_options("sims_v2"), "unknown model", id="sims-canvas-options-unknown"),
    row(lambda: sims_runs.default_models("bok"), "profile", id="sims-default-models-profile"),
    row(lambda: sims_runs.read_record("bok"), "profile", id="sims-read-record-profile"),
    row(lambda: sims.SimulatedCanvases.build(memory(), only_scenes=[0]).canvas(0, np.random.default_rng(0),
                                                                               "elision"), "simulations",
        id="sims-canvas-simulations-string"),
    row(lambda: srn_runs.network_of("srn", "warmup"), "phase", id="srn-network-of-phase"),
    row(lambda: srn_runs.read_record("bok"), "profile", id="srn-read-record-profile"),
    row(lambda: srn_runs.record_dir("bok"), "profile", id="srn-record-dir-profile"),
    row(lambda: srn.reconstruction_weights(torch.ones(1, 1, *SIZE), ["rsv"], 8), "reconstruction weight",
        id="srn-weights-kind-list"),
    row(lambda: srn_runs.evaluate_extrapolation(srn.reflect_extrapolation, SIZE, 2, placements="left"),
        "placements", id="srn-evaluate-placements-string"),
    row(lambda: analogy_runs.exported_path("bok", "coffee"), "profile", id="analogy-exported-path-profile"),
    row(lambda: analogy_runs.read_record("bok"), "profile", id="analogy-read-record-profile"),
    row(lambda: analogy_runs.patch_features({"features": "vgg"}, "cpu"), "features", id="analogy-patch-features"),
    row(lambda: analogy.AnalogyTrainer(images(1, (32, 32)), labels(1, (32, 32), K), K, {"conditioning": "film"},
                                       SMOKE["analogy"], lambda x: [x]), "spec", id="analogy-trainer-spec"),
    row(lambda: seigan.object_scenes(SIZE, 1, split="val"), "split", id="seigan-object-scenes-split"),
    row(lambda: seigan_runs.exported_path("bok"), "profile", id="seigan-exported-path-profile"),
    row(lambda: seigan_runs.read_record("bok"), "profile", id="seigan-read-record-profile"),
    row(lambda: seigan_runs.reconstruction_features({"features": "inception"}, "cpu"), "features",
        id="seigan-reconstruction-features"),
    row(lambda: seigan.SeiganTrainer({"enhance": True}, SMOKE["seigan"]), "spec", id="seigan-trainer-spec"),
]

FILES = [
    row(lambda: crn_runs.load_generator(MISSING / "crn.pt"), "crn_runs", FileNotFoundError,
        id="crn-load-missing"),
    row(lambda: crn_runs.merge_records("smoke", MISSING / "run", "cpu"), "run_dir", FileNotFoundError,
        id="crn-merge-missing-run-dir"),
    row(lambda: crn_runs.load_generator(""), "path", id="crn-load-empty-path"),
    row(lambda: sims.SegmentMemory.load(None), "path", id="sims-memory-load-none"),
    row(lambda: sims_runs.load_models(MISSING / "sims.pt"), "sims_runs", FileNotFoundError,
        id="sims-load-missing"),
    row(lambda: srn_runs.load_models(MISSING / "srn.pt"), "srn_runs", FileNotFoundError, id="srn-load-missing"),
    row(lambda: analogy_runs.load_evaluation_segmenter(MISSING / "a.pt"), "a.pt", FileNotFoundError,
        id="analogy-segmenter-missing"),
    row(lambda: seigan_runs.load_supervised_segmenter(MISSING / "s.pt"), "seigan_runs", FileNotFoundError,
        id="seigan-supervised-missing"),
    row(lambda: seigan_trainer().set_extra_state({"noise": torch.Generator().get_state()}), "extra state",
        CheckpointError, id="seigan-trainer-extra-state"),
    row(lambda: seigan_runs.merge_records("smoke", MISSING / "run", "cpu"), "run_dir", FileNotFoundError,
        id="seigan-merge-missing-run-dir"),
]


@pytest.mark.parametrize("call, error, match", WRONG_TYPE + BOOL_AS_INT + FLOAT_AS_INT + WRONG_SHAPE + EMPTY
                         + NOT_FINITE + OUT_OF_RANGE + NOT_ONE_HOT + UNKNOWN_NAME + FILES)
def test_bad_input_is_refused_at_the_boundary_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


# --------------------------------------------------------------------------- corrupt exports


def _export(tmp_path, name, state):
    return save_checkpoint(tmp_path / name, state)


@pytest.mark.parametrize("load, state", [
    (crn_runs.load_generator, {"model_name": "crnn", "generator": {}, "settings": {}}),
    (crn_runs.load_generator, {"model_name": "crn", "generator": {}, "settings": {"size": [32, 64]}}),
    (sims_runs.load_models, {"kind": "sims-networks", "settings": {"size": [32, 64]}, "synthesis": {},
                             "transformer": {}, "ordering": {}}),
    (srn_runs.load_models, {"kind": "srn-generators", "settings": {"width": 4}, "generators": {"srn_v2": {}}}),
    (srn_runs.load_models, {"kind": "srn-generators", "settings": {"width": 4}, "generators": {"srn": {"a": 1}}}),
    (analogy_runs.load_models, {"kind": "analogy-generators", "settings": {"width": 0}, "num_classes": 4,
                                "generators": {"sft": {}}}),
    (analogy_runs.load_evaluation_segmenter, {"num_classes": 4, "evaluation_segmenter": {"x": torch.zeros(1)}}),
    (seigan_runs.load_models, {"kind": "seigan-generators", "settings": {"width": 2},
                               "networks": {"segmenter": {}, "enhancer": {}, "inpainter": {}}}),
    (seigan_runs.load_supervised_segmenter, {"kind": "seigan-extra", "settings": {"width": 2, "depth": 0},
                                             "networks": dict.fromkeys(seigan_runs.EXTRA_PARTS, {})}),
], ids=["crn-unknown-model", "crn-settings-missing", "sims-settings-missing", "srn-unknown-model",
        "srn-weights-not-tensors", "analogy-zero-width", "analogy-segmenter-misfit", "seigan-settings-missing",
        "seigan-depth-zero"])
def test_exports_that_cannot_be_built_are_checkpoint_errors_naming_the_file(tmp_path, load, state):
    path = _export(tmp_path, "export.pt", state)
    with pytest.raises(CheckpointError, match="export.pt"):
        load(path)


# --------------------------------------------------------------------------- fail fast, no side effects


def test_object_scenes_refuses_a_zero_count_before_scanning(monkeypatch):
    class NoScanning(seigan.StreetScenes):   # the default scan_limit is 20,000 scenes (7 minutes)
        def __getitem__(self, index):
            raise AssertionError("object_scenes rendered a scene before checking its count")

    monkeypatch.setattr(seigan, "StreetScenes", NoScanning)
    with pytest.raises(ValueError, match="count must be a positive integer, got 0"):
        seigan.object_scenes(SIZE, 0)


def test_object_scenes_stops_as_soon_as_the_count_is_out_of_reach():
    # no object is a whole image tall: after 2 of 5 scenes, 3 objects can no longer be found
    with pytest.raises(ValueError, match="count 3 cannot be met: 0 of the 3 train scenes scanned") as error:
        seigan.object_scenes(SIZE, 3, min_height=1.0, scan_limit=5)
    assert "only 2 of scan_limit 5 are left" in str(error.value)


def test_object_scenes_with_a_reachable_count_returns_what_it_always_did():
    found = seigan.object_scenes(SIZE, 2, split="test", scan_limit=50)
    again = seigan.object_scenes(SIZE, 2, split="test", scan_limit=len(range(found[-1]["index"] + 1)))
    assert [f["index"] for f in found] == [f["index"] for f in again]
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(found, again))


@pytest.mark.parametrize("read", [crn_runs.read_record, sims_runs.read_record, srn_runs.read_record,
                                  analogy_runs.read_record, seigan_runs.read_record])
def test_read_record_of_an_unknown_profile_creates_no_folder(read, tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_RUN_DIR", str(tmp_path / "runs"))
    with pytest.raises(ValueError, match="profile"):
        read("bok")
    assert not (tmp_path / "runs").exists()


# --------------------------------------------------------------------------- valid edge inputs still work


def test_a_batch_of_one_still_goes_through_every_generator():
    assert cascade()(layout(1)).shape == (1, 2, 3, *SIZE)
    image, logits = synthesis()(layout(1), images(1), torch.ones(1, 1, *SIZE))
    assert image.shape == (1, 3, *SIZE) and logits.shape == (1, NUM_CLASSES, *SIZE)
    assert extrapolator()(images(1, (32, 32)), "left").shape == (1, 3, 32, 64)
    output, params = analogy_generator().eval()(images(1, (32, 32)), analogy_layout(), analogy_layout())
    assert output.shape == (1, 3, 32, 32) and len(params) == 3
    assert seigan_segmenter()(images(1), boxes(1)).shape == (1, 1, *SIZE)


def test_void_pixels_and_area_resized_layouts_are_valid_layouts():
    labelled = labels(2)
    labelled[:, :4] = 255                                  # void: an all-zero layout vector
    coarse = one_hot_layout(labelled, size=(16, 32))       # area-resized: fractions that sum to 1 or 0
    assert crn.FeatureMatchingLoss(None)(torch.rand(2, 1, 3, 16, 32), images(2, (16, 32)), coarse)[0].isfinite()
    assert cascade()(one_hot_layout(labelled)).isfinite().all()


def test_a_layout_without_any_component_of_the_minimum_area_is_an_empty_query():
    checkerboard = (torch.arange(SIZE[0])[:, None] + torch.arange(SIZE[1])) % 2   # 4-connected: every pixel alone
    empty = sims.query_layout(checkerboard, memory())
    assert len(empty) == 0 and empty.grid_masks.shape == (0, 16 * 32)
    canvas = sims.build_canvas(checkerboard, memory())
    assert not canvas.filled.any() and canvas.order == []


def test_masks_exactly_zero_or_one_and_empty_box_lists_are_valid():
    x = images(2)
    assert torch.equal(seigan.check_masks(torch.ones(2, 1, *SIZE), x), torch.ones(2, 1, *SIZE))
    assert seigan.check_masks(torch.zeros(2, 1, *SIZE), x).sum() == 0
    assert seigan.box_masks(torch.zeros(0, 4, dtype=torch.long), SIZE).shape == (0, 1, *SIZE)
    assert seigan.box_masks(torch.tensor([[0.0, 0.0, 64.0, 32.0]]), SIZE).sum() == SIZE[0] * SIZE[1]


def test_profiles_of_every_chapter_are_valid_settings():
    from labkit.papers import _checks

    for module in (crn, sims, srn, analogy, seigan):
        for profile in module.PROFILES:
            _checks.profile_settings(module.PROFILES[profile], module.PROFILES)


# --------------------------------------------------------------------------- displayed code stays as it was


DISPLAYED = [crn.RefinementModule, crn.masked_layer_distance, crn.diversity_objective, sims.retrieval_scores,
             sims.SynthesisNetwork.forward, srn.subpixel_expand, srn.context_normalization, srn.reconstruction_loss,
             srn.id_mrf_layer_loss, srn.relative_spatial_variant_weights, srn.SRNTrainer.finetune_loss,
             analogy.layout_ratio, analogy.SemanticFeatureTranslation.inputs, seigan.composite, seigan.double_swap,
             seigan.ImagePool.query, seigan.Segmenter.forward, seigan.Enhancer.forward,
             seigan.background_reconstruction_loss]


@pytest.mark.parametrize("shown", DISPLAYED, ids=lambda shown: shown.__qualname__)
def test_the_code_a_chapter_displays_is_its_own_and_the_checks_are_documented(shown):
    """The notebooks show these with labkit.show_source, and nbval compares that output: their checks
    are attached from outside, so the source shown is unchanged and still the code that runs."""
    source = inspect.getsource(shown)
    assert "_checks" not in source
    function = shown.forward if isinstance(shown, type) else shown
    assert hasattr(function, "__wrapped__") and "Checked:" in function.__doc__
