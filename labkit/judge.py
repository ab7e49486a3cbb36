"""The judge: a small segmentation network that every chapter is scored by.

CRN, SIMS and the analogy paper measure a synthesised image by running a
pretrained segmentation network on it and comparing the prediction with the
input layout (the "FCN-score"). No pretrained network can be downloaded
here, so the course trains its own on StreetScenes and commits the weights
(``checkpoints/judge.pt``, stored in float16). Its encoder also serves as
the offline feature extractor for perceptual losses and the Fréchet
distance (see :mod:`labkit.features` and :mod:`labkit.metrics`).

Retrain with ``python -m labkit.judge train`` (``make judge``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .checks import (check_device, check_int, check_non_empty, check_number, check_path, check_positive_int,
                     check_seed, check_tensor)
from .data import NUM_CLASSES, SPLITS, check_size, render_batch
from .data.validation import check_images, check_rng
from .train import REPO_ROOT, argparse_minutes, argparse_positive_int, fit, git_commit, setup

JUDGE_PATH = REPO_ROOT / "checkpoints" / "judge.pt"
JUDGE_WIDTHS = (24, 48, 96, 160)
# A second, independent judge for the report: other widths, other training scenes (data seed 1
# instead of the seed 0 every chapter trains on), another batch seed. It never supplies training
# features, so its scores show how much of a result is the first judge's taste.
SECOND_JUDGE = {"path": REPO_ROOT / "checkpoints" / "judge_b.pt", "widths": (16, 32, 64, 128), "seed": 1,
                "data_seed": 1, "steps": 2000, "workdir": REPO_ROOT / "runs" / "judge_b"}
EVAL_SCENES = 256
EVAL_SIZES = ((64, 128), (128, 256))


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class JudgeNet(nn.Module):
    """A four-level U-Net.

    images (N, 3, H, W) in [0, 1], N ≥ 1, H and W multiples of 8 → logits
    (N, NUM_CLASSES, H, W). ``encoder_features`` returns the four encoder
    stages ``enc1`` … ``enc4`` at strides 1, 2, 4, 8 with
    ``JUDGE_WIDTHS`` channels (it needs H and W ≥ 8, no multiple, and checks
    the shape only).

    widths: a non-empty sequence of positive integers, one per level;
    num_classes: a positive integer.
    """

    feature_names = ("enc1", "enc2", "enc3", "enc4")

    def __init__(self, widths=JUDGE_WIDTHS, num_classes: int = NUM_CLASSES):
        super().__init__()
        widths = _check_widths(widths)
        num_classes = check_positive_int(num_classes, "num_classes")
        self.widths = tuple(widths)
        self.register_buffer("mean", torch.tensor([0.45, 0.45, 0.45]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)
        self.encoders = nn.ModuleList()
        cin = 3
        for width in widths:
            self.encoders.append(_conv_block(cin, width))
            cin = width
        self.decoders = nn.ModuleList(
            _conv_block(widths[k + 1] + widths[k], widths[k]) for k in reversed(range(len(widths) - 1)))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.source = "untrained"

    def _check_images(self, images, multiple: int = 1, values: bool = True) -> torch.Tensor:
        if values:
            images = check_images(images, "images", ndim=(4,), non_empty=True)
        else:
            check_tensor(images, "images", shape="(N, 3, H, W)", ndim=4, channels=3, finite=False)
        smallest = 2 ** (len(self.widths) - 1)   # every pooled stage keeps at least one pixel
        height, width = images.shape[-2:]
        if min(height, width) < smallest:
            raise ValueError(f"images must be at least {smallest}×{smallest} pixels for the judge's "
                             f"{len(self.widths)} levels, got {height}×{width}")
        if height % multiple or width % multiple:
            raise ValueError(f"images must have H and W divisible by {multiple} for the judge, got {(height, width)}")
        return images

    def encoder_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """images (N, 3, H, W) float, N ≥ 1, H and W ≥ 8 → the encoder stages.

        Only the shape is checked here, not the values: perceptual losses call this every
        training step on generator outputs that are not clamped to [0, 1] (CRN's)."""
        return self._encoder_features(self._check_images(images, values=False))

    def _encoder_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = (images - self.mean) / self.std
        features = []
        for k, encoder in enumerate(self.encoders):
            if k > 0:
                x = F.avg_pool2d(x, 2)
            x = encoder(x)
            features.append(x)
        return features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self._logits(self._check_images(images, multiple=8))

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        features = self._encoder_features(images)
        x = features[-1]
        for decoder, skip in zip(self.decoders, reversed(features[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = decoder(torch.cat([x, skip], dim=1))
        return self.head(x)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """(N, 3, H, W) → (N, H, W) int64 class indices.

        Averages the class probabilities of the image and of its mirror image
        (street scenes are left-right symmetric); on held-out scenes this gains
        a little mIoU over a single pass, mostly on poles and persons.

        images: N ≥ 1 images in [0, 1], H and W multiples of 8; batch_size: a positive integer.
        """
        images = self._check_images(images, multiple=8)
        batch_size = check_positive_int(batch_size, "batch_size")
        was_training = self.training
        self.eval()
        predictions = []
        device = next(self.parameters()).device
        for i in range(0, len(images), batch_size):
            batch = images[i:i + batch_size].to(device)
            probabilities = self._logits(batch).softmax(1) + self._logits(batch.flip(-1)).softmax(1).flip(-1)
            predictions.append(probabilities.argmax(1))
        self.train(was_training)
        return torch.cat(predictions).to(images.device)


def _check_widths(widths) -> tuple[int, ...]:
    if isinstance(widths, (str, bytes)):
        raise ValueError(f"widths must be a non-empty sequence of positive integers, got {widths!r}")
    widths = check_non_empty(widths, "widths")
    for width in widths:
        if not isinstance(width, (int, np.integer)) or isinstance(width, bool) or width < 1:
            raise ValueError(f"widths must be a non-empty sequence of positive integers, got {widths}")
    return tuple(int(w) for w in widths)


_CACHE: dict = {}


def load_judge(path=None, device="cpu") -> JudgeNet:
    """The committed judge (cached per path and device), in eval mode.

    path: None (``checkpoints/judge.pt``) or a path to a judge checkpoint;
    device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``, ``"auto"`` or a torch.device
    that exists here."""
    path = check_path(path, "path") if path is not None else JUDGE_PATH
    device = check_device(device)
    key = (str(path.resolve()), str(device))
    if key not in _CACHE:
        if not path.is_file():
            raise FileNotFoundError(f"judge weights not found at {path}; retrain them with `make judge`")
        state = load_checkpoint(path)
        if "model" not in state or "widths" not in state:
            raise CheckpointError(f"{path} is not a judge checkpoint (expected keys 'model' and 'widths')")
        try:
            judge = JudgeNet(widths=state["widths"])
        except ValueError as error:
            raise CheckpointError(f"{path} is not a usable judge checkpoint: {error}") from error
        try:
            judge.load_state_dict({k: v.float() for k, v in state["model"].items()})
        except RuntimeError as error:
            raise CheckpointError(f"{path} does not fit JudgeNet{tuple(state['widths'])}: "
                                  f"{str(error).splitlines()[0]}") from error
        judge.source = str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)
        judge.scores = state.get("scores", {})
        _CACHE[key] = judge.to(device).eval()
    return _CACHE[key]


def evaluate(judge: JudgeNet, sizes=EVAL_SIZES, count: int = EVAL_SCENES, split: str = "test") -> dict:
    """mIoU and pixel accuracy of the judge on held-out real scenes.

    sizes: a non-empty sequence of StreetScenes sizes (H, 2·H); count: a positive integer."""
    from .metrics import _check_judge, segmentation_scores

    if judge is None:
        raise ValueError("judge must be a JudgeNet (labkit.judge.load_judge()), got None")
    _check_judge(judge)
    expected = f"sizes must be a non-empty sequence of (H, W) sizes such as ((64, 128),), got {sizes!r}"
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
        raise ValueError(expected)
    sizes = check_non_empty(sizes, "sizes")
    if not all(hasattr(size, "__len__") for size in sizes):
        raise ValueError(expected)
    sizes = [check_size(size, "sizes entries") for size in sizes]
    count = check_positive_int(count, "count")
    if not isinstance(split, str) or split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")

    scores = {}
    for size in sizes:
        images, labels = render_batch(size, count, split)
        prediction = judge.predict(images)
        scores[f"{size[0]}x{size[1]}"] = segmentation_scores(prediction, labels)
    return scores


def degrade(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Random blur, noise and colour changes of a training batch.

    Generated images are softer, noisier and differently coloured than the
    crisp renders; a judge trained on renders alone scores a slightly blurred
    real scene far below the scene itself, which would make the FCN-score
    measure sharpness instead of layout. Half the batches stay clean.

    images: (N, 3, H, W) in [0, 1]; rng: a ``numpy.random.Generator``.
    """
    from kornia.filters import gaussian_blur2d

    check_images(images, "images", ndim=(4,), non_empty=True)
    check_rng(rng)

    if rng.random() < 0.5:
        return images
    if rng.random() < 0.6:
        sigma = float(rng.uniform(0.3, 1.5))
        size = 2 * int(np.ceil(3 * sigma)) + 1
        images = gaussian_blur2d(images, (size, size), (sigma, sigma))
    if rng.random() < 0.4:
        noise = torch.from_numpy(rng.standard_normal(images.shape).astype(np.float32))
        images = images + float(rng.uniform(0.01, 0.08)) * noise
    if rng.random() < 0.6:
        gains = torch.from_numpy(rng.uniform(0.8, 1.2, (1, 3, 1, 1)).astype(np.float32))
        images = images * gains + float(rng.uniform(-0.08, 0.08))
    return images.clamp(0, 1)


def train_judge(steps: int = 3000, batch_size: int = 12, scenes: tuple[int, int] = (4000, 1500),
                lr: float = 2e-3, seed: int = 0, out=JUDGE_PATH, max_minutes: float | None = None,
                workdir=REPO_ROOT / "runs" / "judge", widths=JUDGE_WIDTHS, data_seed: int = 0) -> dict:
    """Train the judge on StreetScenes' train split at 64×128 and 128×256.

    Steps alternate between the two resolutions; horizontal flips double
    the scenes. The final weights go to ``out`` in float16 with their scores.
    ``data_seed`` picks the procedural scenes (0: the ones every chapter trains on);
    ``widths`` the encoder widths (see :data:`SECOND_JUDGE`).

    Every argument is checked before anything is rendered: ``steps`` a positive
    integer, ``batch_size`` an integer ≥ 4 (the large-size steps take a quarter
    of it), ``scenes`` two positive integers of at least ``batch_size`` and
    ``batch_size // 4`` scenes, ``lr`` > 0, ``max_minutes`` > 0 or None.
    """
    steps = check_positive_int(steps, "steps")
    batch_size = check_int(batch_size, "batch_size", minimum=4)
    if isinstance(scenes, (str, bytes)) or not hasattr(scenes, "__len__") or len(scenes) != 2:
        raise ValueError(f"scenes must be a pair (small, large) of scene counts, got {scenes!r}")
    scenes = (check_int(scenes[0], "scenes[0]", minimum=batch_size),
              check_int(scenes[1], "scenes[1]", minimum=batch_size // 4))
    check_number(lr, "lr", minimum=0.0, strict_minimum=True)
    check_seed(seed), check_seed(data_seed, "data_seed")
    check_number(max_minutes, "max_minutes", minimum=0.0, strict_minimum=True, allow_none=True)
    out, workdir, widths = check_path(out, "out"), check_path(workdir, "workdir"), _check_widths(widths)
    device = setup(seed=seed, threads=None)
    began = time.monotonic()
    config = {"steps": steps, "batch_size": batch_size, "scenes": list(scenes), "lr": lr, "seed": seed,
              "widths": list(widths), "data_seed": data_seed}
    small = render_batch((64, 128), scenes[0], "train", seed=data_seed)
    large = render_batch((128, 256), scenes[1], "train", seed=data_seed, start=scenes[0])
    judge = JudgeNet(widths=widths).to(device)
    optimizer = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)

    def batch_for_step(step: int):
        images, labels = (small, large)[step % 2]
        rng = np.random.default_rng([seed, step])
        index = torch.from_numpy(rng.choice(len(images), batch_size // (1 + 3 * (step % 2)), replace=False))
        x, y = images[index], labels[index]
        if rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return degrade(x, rng).to(device), y.to(device)

    def loss_fn(model, batch):
        x, y = batch
        logits = model(x)
        return F.cross_entropy(logits, y), {}

    checkpoint = Path(workdir) / "judge_training.pt"
    if checkpoint.is_file() and load_checkpoint(checkpoint).get("step", 0) >= steps:
        checkpoint.unlink()   # a finished run: retrain from scratch; an interrupted one resumes
    fit_began = time.monotonic()
    result = fit(judge, optimizer, batch_for_step, loss_fn, steps=steps, scheduler=scheduler,
                 checkpoint=checkpoint, checkpoint_every=250, max_minutes=max_minutes,
                 description="judge", config=config)
    # Training time of earlier, interrupted calls adds to this call's rendering, training and evaluation.
    earlier_training_s = result.wall_time_s - (time.monotonic() - fit_began)
    if not result.finished:
        print(f"stopped at step {result.steps_done}/{steps}; run again to resume")
        return {}
    judge.eval()
    scores = evaluate(judge)
    wall_time_s = time.monotonic() - began + earlier_training_s
    state = {
        "model": {k: v.half() if v.is_floating_point() else v for k, v in judge.state_dict().items()},
        "widths": list(judge.widths), "scores": scores, "history": result.history,
        "train": {"steps": steps, "batch_size": batch_size, "scenes": list(scenes), "lr": lr, "seed": seed,
                  "data_seed": data_seed, "commit": git_commit(), "wall_time_s": round(wall_time_s, 1),
                  "torch": str(torch.__version__)},
    }
    save_checkpoint(out, state)
    _CACHE.clear()
    return scores


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m labkit.judge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="retrain the judge and overwrite checkpoints/judge.pt")
    train.add_argument("--steps", type=argparse_positive_int, default=None,
                       help="default: 3000 (the second judge: 2000)")
    train.add_argument("--max-minutes", type=argparse_minutes, default=None)
    train.add_argument("--second", action="store_true",
                       help="train the report's second judge (SECOND_JUDGE) into checkpoints/judge_b.pt")
    score = sub.add_parser("evaluate", help="score the committed judge on held-out scenes")
    score.add_argument("--record", action="store_true",
                       help="store the scores (and this commit) in checkpoints/judge.pt")
    args = parser.parse_args(argv)
    if args.command == "train":
        if args.second:
            second = SECOND_JUDGE
            print(train_judge(steps=args.steps or second["steps"], seed=second["seed"], out=second["path"],
                              max_minutes=args.max_minutes, workdir=second["workdir"], widths=second["widths"],
                              data_seed=second["data_seed"]))
        else:
            print(train_judge(steps=args.steps or 3000, max_minutes=args.max_minutes))
        return
    setup(threads=None)
    scores = evaluate(load_judge())
    print(scores)
    if args.record:
        state = load_checkpoint(JUDGE_PATH)
        state["scores"] = scores
        state["scores_commit"] = git_commit()
        save_checkpoint(JUDGE_PATH, state)


if __name__ == "__main__":
    main()
