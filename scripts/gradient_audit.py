"""Gradient audit: every trainable model's float32 gradients against a float64 reference, as trained.

    python scripts/gradient_audit.py [--models crn analogy_sft ...] [--output PATH]

For each model of each chapter, in the configuration its chapter trains it in at the book
profile (batch size, widths, and inputs made by the chapter's own batch builders, so their
memory layout is what training saw), :func:`labkit.gradients.parameter_gradients` compares the
float32 parameter gradients with a float64 reference (elementary-op instance norm, contiguous
inputs). Writes ``reports/benchmarks/gradient_audit.json``: per model its chapter, batch size,
input layouts, min and median cosine, the fraction of parameters below 0.999 and the 5 worst.

Runs against older checkouts too (copy this script and ``labkit/gradients.py`` into one): it
uses only APIs that exist before the instance-norm fix (4d4198f) and imports the labkit of the
checkout it sits in. Weights are the initial ones with every parameter moved by 10 % of its
spread (as after a few steps; see ``trained``): at init, zero-initialised heads block gradients
and instance-norm weights of exactly 1 have a gradient that is zero up to eps. One thread.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # this checkout's labkit, not an installed one
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import labkit  # noqa: E402
from labkit import networks  # noqa: E402
from labkit.checkpoints import write_json  # noqa: E402
from labkit.gradients import (ZERO_REFERENCE, gradient_cosines, instance_norm_gradient_bug,  # noqa: E402
                              parameter_gradients)
from labkit.train import select_profile  # noqa: E402

BAR = 0.999
OUTPUT = ROOT / "reports" / "benchmarks" / "gradient_audit.json"
SEED = 0


def trained(model: nn.Module, seed: int = 1) -> nn.Module:
    """Every parameter plus 10 % of its spread (1 where it has none) of Gaussian noise
    (:func:`labkit.gradients.perturb_weights` where this checkout has it)."""
    perturb = getattr(labkit.gradients, "perturb_weights", None)
    if perturb is not None:
        return perturb(model, seed)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            spread = float(p.std()) if p.numel() > 1 and float(p.std()) > 0 else 1.0
            p.add_(0.1 * spread * torch.randn(p.shape, generator=g))
    return model


def fresh(build) -> nn.Module:
    """A model as :func:`audit` builds it: seeded, then :func:`trained` (for the inputs it generates)."""
    torch.manual_seed(SEED)
    return trained(build())


def layout_of(t: torch.Tensor) -> str:
    if t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous():
        return "channels_last"
    return "contiguous" if t.is_contiguous() else "strided view"


class Both(nn.Module):
    """A discriminator's step: its outputs on real and on generated inputs (``shared`` go to both)."""

    def __init__(self, net: nn.Module, shared: int = 0):
        super().__init__()
        self.net, self.shared = net, shared

    def forward(self, *args):
        shared, (real, fake) = args[:self.shared], args[self.shared:]
        return self.net(*shared, real), self.net(*shared, fake)


class Align(nn.Module):
    """SIMS' transformer as trained (θ, then the warp). ``sims._crop_frames`` returns float32 whatever
    its input; its frames take the masks' dtype here so that the float64 reference runs."""

    def __init__(self, transformer):
        super().__init__()
        self.transformer = transformer

    def forward(self, *inputs):
        from labkit.papers import sims
        crop_frames = sims._crop_frames
        sims._crop_frames = lambda masks, margin=0.25: tuple(t.to(masks.dtype) for t in crop_frames(masks, margin))
        try:
            return self.transformer.align(*inputs)
        finally:
            sims._crop_frames = crop_frames


class CriticObjective(nn.Module):
    """An SRN critic's WGAN-GP objective as SRNTrainer.finetune_loss computes it (GP: a double backward)."""

    def __init__(self, critic, contextual: bool):
        super().__init__()
        self.critic, self.contextual = critic, contextual

    def forward(self, real, fake, mask, mix):
        from labkit.papers import srn
        if self.contextual:
            score, region = (lambda x: self.critic(x, mask)), F.interpolate(F.max_pool2d(mask, 8), scale_factor=8)
        else:
            score, region = self.critic, mask
        return (score(fake).mean() - score(real).mean()
                + srn.GRADIENT_PENALTY_WEIGHT * srn.gradient_penalty(score, real, fake, region, mix))


class AnalogyThroughCritics(nn.Module):
    """G's loss path through D and S (both frozen, as in AnalogyTrainer.iteration_loss): G's gradients only."""

    def __init__(self, generator, discriminator, segmenter):
        super().__init__()
        self.generator, self.discriminator, self.segmenter = generator, discriminator.requires_grad_(False), \
            segmenter.requires_grad_(False)

    def forward(self, image, source_layout, target_layout):
        fake, params = self.generator(image, source_layout, target_layout)
        return fake, params, self.discriminator(fake), self.segmenter(fake)


# --------------------------------------------------------------------------- the chapters' models

def judge_models():
    from labkit.data import render_batch
    from labkit.judge import JUDGE_WIDTHS, SECOND_JUDGE, JudgeNet, degrade
    import numpy as np
    images, _ = render_batch((64, 128), 12, "train")   # train_judge: batch 12 at 64×128 (3 at 128×256)
    batch = (degrade(images, np.random.default_rng([0, 0])),)
    note = "train_judge's even steps: batch 12 at 64×128 (odd steps: 3 at 128×256)"
    yield "judge", "judge", lambda: JudgeNet(JUDGE_WIDTHS), batch, note
    yield "judge_b", "judge", lambda: JudgeNet(SECOND_JUDGE["widths"]), batch, note


def crn_models():
    from labkit.networks import count_parameters
    from labkit.papers.crn import PROFILES, CascadedRefinementNetwork, SingleScaleNetwork
    from labkit.pix2pix import Pix2Pix
    from labkit.synthesis import scene_batch, training_scenes
    s = select_profile(PROFILES, "book")
    batch = scene_batch(training_scenes(s["size"], 16), 0, s["batch_size"])
    layout = batch["layout"]
    yield "crn", "crn", lambda: CascadedRefinementNetwork(s["size"], s["widths"], s["samples"]), (layout,), \
        "crn_pixel_l1 and crn_k1 (one output) train the same network"

    def single_scale():
        cascade = CascadedRefinementNetwork(s["size"], s["widths"], s["samples"])
        layers = 2 * len(cascade.refinement_modules)
        width = SingleScaleNetwork.width_for_parameters(count_parameters(cascade), layers, s["samples"])
        return SingleScaleNetwork(s["size"], width, layers, s["samples"])
    yield "crn_single_scale", "crn", single_scale, (layout,), ""

    def pix2pix():
        return Pix2Pix(s["size"], generator_width=s["pix2pix_width"], discriminator_width=s["discriminator_width"])
    yield "pix2pix_generator", "crn", lambda: pix2pix().generator, (layout,), "dropout masks matched"
    with torch.no_grad():
        fake = fresh(lambda: pix2pix().generator)._generate(layout)
    yield "pix2pix_discriminator", "crn", lambda: Both(pix2pix().discriminator, shared=1), \
        (layout, batch["image"], fake), "D on (layout, real) and (layout, G's output)"


def sims_models():
    from labkit.papers.sims import (PROFILES, OrderingNetwork, SegmentMemory, SegmentTransformer,
                                    SimulatedCanvases, SynthesisNetwork, misaligned_batch, ordering_pairs)
    from labkit.synthesis import training_scenes
    s = select_profile(PROFILES, "book")
    scenes = training_scenes(s["size"], 32)
    memory = SegmentMemory.build(scenes.images, scenes.labels, s["grid"])
    b = misaligned_batch(memory, 0, 2 * s["batch_size"])   # train_transformer: batch 2·batch_size
    yield "sims_transformer", "sims", \
        lambda: Align(SegmentTransformer(widths=s["transformer_widths"], crop=s["transformer_crop"])), \
        (b["pixels"], b["mask"], b["target_mask"], b["layout"]), "θ and the warp (align)"
    pairs = ordering_pairs(s["size"], 32)
    b = pairs.batch(torch.arange(4 * s["batch_size"]) % len(pairs))   # train_orderer: batch 4·batch_size
    yield "sims_ordering", "sims", lambda: OrderingNetwork(widths=s["ordering_widths"]), \
        (b["layout"], b["mask_a"], b["mask_b"]), ""
    b = SimulatedCanvases.build(memory).batch(0, s["batch_size"])
    yield "sims_synthesis", "sims", lambda: SynthesisNetwork(s["size"], s["synthesis_widths"]), \
        (b["layout"], b["canvas"], b["mask"]), ""


def srn_models():
    from labkit.papers.srn import (PROFILES, ContextualCritic, ExtrapolationNetwork, GlobalCritic, crop_known,
                                   unknown_mask)
    from labkit.papers.srn_runs import extrapolation_batch
    from labkit.synthesis import training_scenes
    s = select_profile(PROFILES, "book")
    batch = extrapolation_batch(training_scenes(s["size"], 16), 0, s["batch_size"])
    image, placement = batch["image"], batch["placement"]
    known = crop_known(image, placement)
    variants = {"srn": ("srn", "subpixel", True), "srn_no_cn": ("srn", "subpixel", False),
                "srn_deconv": ("srn", "deconv", True), "srn_bilinear": ("srn", "bilinear", True),
                "srn_hr": ("srn_hr", None, True), "srn_ed": ("ed", None, True)}
    for name, (generator, expansion, cn) in variants.items():
        yield name, "srn", (lambda g=generator, e=expansion, c=cn: ExtrapolationNetwork(g, s["width"], e, c)), \
            (known, placement), f"placement {placement!r}" + ("; srn_l1, srn_confidence: srn's network"
                                                             if name == "srn" else "")
    with torch.no_grad():
        predicted = fresh(lambda: ExtrapolationNetwork("srn", s["width"]))(known, placement)
    mask = unknown_mask(image.shape[-2:], placement, len(image))
    real = image * 2 - 1
    fake = (predicted * 2 - 1) * mask + real * (1 - mask)
    mix = torch.rand(len(image), generator=torch.Generator().manual_seed(SEED))
    for name, contextual in (("srn_global_critic", False), ("srn_contextual_critic", True)):
        build = (lambda c=contextual: CriticObjective(ContextualCritic(s["critic_width"]) if c
                                                      else GlobalCritic(s["size"], s["critic_width"]), c))
        yield name, "srn", build, (real, fake, mask, mix), "WGAN-GP objective on real and completed images"


def analogy_models():
    import numpy as np
    from labkit.judge import JudgeNet
    from labkit.papers import analogy
    from labkit.papers.analogy_runs import EVALUATION_SEGMENTER_WIDTHS, photo_image
    s = select_profile(analogy.PROFILES, "book")
    photo = photo_image(s["photos"][0], s["photo_size"])   # the street scenes: the same networks, 9 labels
    labels = torch.from_numpy(np.asarray(analogy.photo_layout(photo, s["photo_labels"], seed=SEED)))
    image, k = torch.from_numpy(photo).permute(2, 0, 1).contiguous()[None], s["photo_labels"]
    spec = analogy.MODEL_SPECS["sft"]
    trainer = analogy.AnalogyTrainer(image, labels[None], k, spec, s, features=lambda x: [x], seed=SEED)
    # a sampling-mode iteration at full augmentation strength, drawn as AnalogyTrainer.iteration_loss does:
    # early on P_aug = P (the ramp), SFT sits at its fixed point and E_seg gets no gradient at all
    iteration = s["ramp_iterations"] + 1
    iteration += iteration % analogy.RECONSTRUCTION_EVERY == 0
    aug_image, aug_labels, rng = trainer.augmented(iteration)
    source_image, source_labels, target_image, target_labels = image, labels[None], aug_image, aug_labels
    if torch.rand(1, generator=rng).item() < 0.5:
        source_image, target_image, source_labels, target_labels = target_image, source_image, target_labels, \
            source_labels
    noise = (torch.rand(source_image.shape, generator=rng) - 0.5) * 2 / 255
    inputs = ((source_image + noise).clamp(0, 1), analogy.one_hot(source_labels, k), analogy.one_hot(target_labels, k))
    for name in ("sft", "no_sft", "sft_one_plus_gamma"):
        if name not in analogy.MODEL_SPECS:
            continue
        spec = analogy.MODEL_SPECS[name]
        extra = (spec["gamma"],) if "gamma" in spec else ()
        yield f"analogy_{name}", "analogy", \
            (lambda c=spec["conditioning"], e=extra: analogy.AnalogyGenerator(k, s["width"], c, *e)), inputs, \
            (f"batch 1 (one image), iteration {iteration}; no_fixed_point, no_augmentation_ramp, "
             "alignment_detached: sft's network")
    width = s["width"]
    with torch.no_grad():
        fake, _ = fresh(lambda: analogy.AnalogyGenerator(k, width))(*inputs)
    yield "analogy_sft_through_d_and_s", "analogy", \
        lambda: AnalogyThroughCritics(analogy.AnalogyGenerator(k, width), analogy.PatchDiscriminator(width),
                                      analogy.AuxiliarySegmenter(k, width)), inputs, \
        "G's gradients through its own outputs and the frozen D and S (adversarial, matching, alignment)"
    yield "analogy_patch_discriminator", "analogy", lambda: Both(analogy.PatchDiscriminator(width)), \
        (target_image, fake), "D on the real target and G's output"
    yield "analogy_auxiliary_segmenter", "analogy", lambda: analogy.AuxiliarySegmenter(k, width), (aug_image,), \
        "S on the augmented real image"
    rng = torch.Generator().manual_seed(SEED)
    pairs = [analogy.warp_pair(image, labels[None], analogy.augmentation_grid(image.shape[-2:], 1.0, rng)[0])
             for _ in range(4)]   # train_evaluation_segmenter: batches of 4 warps
    yield "analogy_evaluation_segmenter", "analogy", lambda: JudgeNet(EVALUATION_SEGMENTER_WIDTHS, k), \
        (torch.cat([p[0] for p in pairs]),), ""


def seigan_models():
    from labkit.papers.seigan import (MODEL_SPECS, PROFILES, Enhancer, ImageDiscriminator, Inpainter,
                                      SeiganTrainer, Segmenter, cut_out, object_scenes)
    from labkit.papers import seigan_runs
    s = select_profile(PROFILES, "book")
    objects = object_scenes(s["size"], 8)
    emptied = object_scenes(s["size"], 8, start=getattr(seigan_runs, "BACKGROUND_START", 50_000))
    data = {"objects": torch.stack([o["image"] for o in objects]), "boxes": torch.stack([o["box"] for o in objects]),
            "backgrounds": torch.stack([o["background"] for o in emptied])}
    b = seigan_runs.batch_sampler(data, s["batch_size"])(0)
    x, boxes, y = b["objects"], b["boxes"], b["backgrounds"]
    width, depth = s["width"], s["depth"]
    yield "seigan_segmenter", "seigan", lambda: Segmenter(width, depth), (x, boxes), \
        "supervised_segmenter trains the same network at batch 2·batch_size"
    trainer = fresh(lambda: SeiganTrainer(MODEL_SPECS["seigan"], s))
    with torch.no_grad():
        out = trainer(x, boxes, y, cycle=False)
    noise = torch.randn(x[:, :1].shape, generator=torch.Generator().manual_seed(SEED))
    yield "seigan_enhancer", "seigan", lambda: Enhancer(width, depth), (out["pasted"], noise), ""
    yield "seigan_inpainter", "seigan", lambda: Inpainter(width, depth), (cut_out(out["masks"], x),), ""
    yield "seigan_discriminator", "seigan", lambda: Both(ImageDiscriminator(s["discriminator_width"])), \
        (y, out["inpainted"]), "D_bg on real backgrounds and inpainted ones"
    crops = (trainer.crops(x, boxes), trainer.crops(out["pasted"], out["paste_boxes"]))
    yield "seigan_object_discriminator", "seigan", lambda: Both(ImageDiscriminator(s["discriminator_width"])), \
        crops, "D_obj on the windows around the box (seigan.box_crops) of real x and of pastes"


CHAPTERS = {
    judge_models: ("judge", "judge_b"),
    crn_models: ("crn", "crn_single_scale", "pix2pix_generator", "pix2pix_discriminator"),
    sims_models: ("sims_transformer", "sims_ordering", "sims_synthesis"),
    srn_models: ("srn", "srn_no_cn", "srn_deconv", "srn_bilinear", "srn_hr", "srn_ed", "srn_global_critic",
                 "srn_contextual_critic"),
    analogy_models: ("analogy_sft", "analogy_no_sft", "analogy_sft_one_plus_gamma", "analogy_sft_through_d_and_s",
                     "analogy_patch_discriminator", "analogy_auxiliary_segmenter", "analogy_evaluation_segmenter"),
    seigan_models: ("seigan_segmenter", "seigan_enhancer", "seigan_inpainter", "seigan_discriminator",
                    "seigan_object_discriminator"),
}
"""Each chapter's audited models (``analogy_sft_one_plus_gamma`` only where the chapter has it)."""
METHOD = {
    "reference": "float64 copy of the model, contiguous float64 inputs, instance norm from elementary ops "
                 "(labkit.gradients.elementary_instance_norms); the same loss and random draws",
    "tested": "float32, inputs exactly as the chapter's batch builders make them (layouts recorded per input)",
    "loss": "labkit.gradients.projection_loss: a fixed random projection of every floating output, the weights "
            "in each output's memory layout (the critics: their WGAN-GP objective)",
    "weights": "initial weights plus 10 % of each parameter's spread of Gaussian noise (seed 1), as after a few "
               "steps; widths, sizes and batch sizes of the book profile (none reduced)",
    "cosine": "per parameter, between the float32 and the float64 gradient; see labkit.gradients.gradient_cosines",
}


def audit(name, chapter, build, inputs, note) -> dict:
    began = time.perf_counter()
    torch.manual_seed(SEED)
    model = trained(build())
    batch = next(t.shape[0] for t in inputs if isinstance(t, torch.Tensor) and t.dim() == 4)
    tested, reference = parameter_gradients(model, lambda n, g: inputs, batch_size=batch, seed=SEED)
    cosines = gradient_cosines(tested, reference)
    values = sorted(cosines.values())
    norms = {k: float(g.norm()) for k, g in reference.items() if g is not None}
    zero = sorted(k for k, v in norms.items() if v <= ZERO_REFERENCE * sum(x * x for x in norms.values()) ** 0.5)
    return {"chapter": chapter, "batch_size": batch, "parameters": len(cosines),
            "weights": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "inputs": [{"shape": list(t.shape), "strides": list(t.stride()), "layout": layout_of(t)} if
                       isinstance(t, torch.Tensor) else repr(t) for t in inputs],
            "widths_reduced": False, "min_cosine": values[0], "median_cosine": statistics.median(values),
            "fraction_below_bar": sum(v < BAR for v in values) / len(values),
            "worst": [[k, cosines[k]] for k in sorted(cosines, key=cosines.get)[:5]],
            "zero_reference_gradients": {"count": len(zero), "names": zero[:12]},
            "seconds": round(time.perf_counter() - began, 1), "note": note}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", help="audit only these (default: all)")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"default: {OUTPUT.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    known = [name for names in CHAPTERS.values() for name in names]
    wanted = set(args.models or known)
    if wanted - set(known):
        parser.error(f"unknown models {sorted(wanted - set(known))}; expected some of {known}")
    torch.set_num_threads(1)
    began, records = time.perf_counter(), {}
    for chapter, names in CHAPTERS.items():
        if wanted.isdisjoint(names):
            continue
        for name, chapter_name, build, inputs, note in chapter():
            if name not in wanted:
                continue
            records[name] = r = audit(name, chapter_name, build, inputs, note)
            print(f"{name:32s} batch {r['batch_size']:2d}  min {r['min_cosine']:+.6f}  median {r['median_cosine']:.6f}"
                  f"  below {r['fraction_below_bar']:.3f}  ({r['seconds']} s)", flush=True)
    try:
        from labkit.train import provenance
        info = provenance("book", SEED, "cpu", wall_time_s=time.perf_counter() - began)
    except Exception:   # an older labkit: the essentials
        from labkit.train import git_commit
        info = {"commit": git_commit(), "versions": {"torch": str(torch.__version__)}}
    payload = {"description": __doc__.split("\n\n")[0], "bar": BAR, "method": METHOD, "models": records,
               "instance_norm_guard": hasattr(networks, "GUARD_INSTANCE_NORM_GRADIENT"),
               "instance_norm_gradient_bug": {"batch_1": instance_norm_gradient_bug(1),
                                              "batch_2": instance_norm_gradient_bug(2)},
               "labkit": str(Path(labkit.__file__).resolve().parent), "provenance": info}
    print(f"wrote {write_json(args.output, payload)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
