"""SEIGAN: segment, enhance and inpaint by swapping objects (Ostyakov, Suvorov, Logacheva,
Khomenko, Nikolenko, arXiv 1811.07630, 2018). No official code exists; every choice below
follows the paper's description and is stated.

This module is the chapter's foundation: the unpaired data, the three operations and the
fake-image pool. The networks, losses and training follow in the chapter's issue (#7).

Notation (the paper's §2.1). An object scene x = ⟨O, B_x⟩ holds an object O on a background
B_x, with its bounding box; a background y = ⟨∅, B_y⟩ holds none. One **swap**:

- **cut**: G_seg predicts the object's mask m ∈ [0, 1]^{H×W} inside the box of x (zero outside);
- **paste and enhance**: z = m ⊙ x + (1 − m) ⊙ y, and ŷ = G_enh(z, noise) = ⟨Ô, B̂_y⟩;
- **inpaint**: x̂ = G_inp((1 − m) ⊙ x) = ⟨∅, B̂_x⟩.

As in CycleGAN, the swap is applied a second time to (ŷ, x̂): the object goes back, giving
x̂̂ ≈ x, and ŷ's object is cut out and its hole inpainted, giving ŷ̂ ≈ y.

Shapes: images (N, 3, H, W) in [0, 1]; masks (N, 1, H, W) in [0, 1]; boxes (N, 4) as
(x0, y0, x1, y1) in pixels, x1 and y1 exclusive (StreetScenes' ``objects[i]["box"]``).
"""
from __future__ import annotations

import torch

from ..data import CLASS_INDEX, StreetScenes
from ..data.validation import check_images

CHAPTER = "seigan"
OBJECT_CLASSES = ("car", "person")
POOL_SIZE = 50
POOL_PROBABILITY = 0.5
"""CycleGAN's pool, which the paper uses: once full, each query returns a stored fake with
probability 0.5 (and stores the new one in its place), otherwise the new fake."""


# --------------------------------------------------------------------------- inputs

def check_masks(masks, images: torch.Tensor, name: str = "masks") -> torch.Tensor:
    """Masks (N, 1, H, W) float in [0, 1] that fit ``images`` (N, 3, H, W)."""
    if not isinstance(masks, torch.Tensor) or not masks.is_floating_point() or masks.dim() != 4 \
            or masks.shape[1] != 1:
        got = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"{name} must be float (N, 1, H, W), got {got}")
    if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"{name} {tuple(masks.shape)} do not fit images {tuple(images.shape)}")
    if masks.numel() and (masks.min() < 0 or masks.max() > 1):
        raise ValueError(f"{name} must be in [0, 1], got [{float(masks.min()):.3g}, {float(masks.max()):.3g}]")
    return masks


def box_masks(boxes, size) -> torch.Tensor:
    """boxes (N, 4) as (x0, y0, x1, y1), x1 and y1 exclusive → (N, 1, H, W) float, 1 inside."""
    boxes = torch.as_tensor(boxes)
    height, width = (int(v) for v in size)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) as (x0, y0, x1, y1), got {tuple(boxes.shape)}")
    x0, y0, x1, y1 = boxes.long().unbind(1)
    if (x0 < 0).any() or (y0 < 0).any() or (x1 > width).any() or (y1 > height).any() or (x1 <= x0).any() \
            or (y1 <= y0).any():
        raise ValueError(f"boxes must satisfy 0 ≤ x0 < x1 ≤ {width} and 0 ≤ y0 < y1 ≤ {height}, got {boxes.tolist()}")
    cols = torch.arange(width)[None, None, :]
    rows = torch.arange(height)[None, :, None]
    inside = ((cols >= x0[:, None, None]) & (cols < x1[:, None, None]) & (rows >= y0[:, None, None])
              & (rows < y1[:, None, None]))
    return inside[:, None].float()


# --------------------------------------------------------------------------- the three operations

def restrict_to_boxes(masks: torch.Tensor, boxes) -> torch.Tensor:
    """G_seg's output inside the box only: m ⊙ 1_box (the paper predicts the mask within the box)."""
    return masks * box_masks(boxes, masks.shape[-2:]).to(masks)


def composite(masks: torch.Tensor, objects: torch.Tensor, backgrounds: torch.Tensor) -> torch.Tensor:
    """Paste: z = m ⊙ x + (1 − m) ⊙ y for masks (N, 1, H, W), x and y (N, 3, H, W)."""
    check_images(objects, "objects", ndim=(4,))
    check_images(backgrounds, "backgrounds", ndim=(4,))
    if objects.shape != backgrounds.shape:
        raise ValueError(f"objects {tuple(objects.shape)} and backgrounds {tuple(backgrounds.shape)} must match")
    check_masks(masks, objects)
    return masks * objects + (1 - masks) * backgrounds


def cut_out(masks: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The inpainter's input: (1 − m) ⊙ x."""
    check_images(images, "images", ndim=(4,))
    check_masks(masks, images)
    return (1 - masks) * images


def swap(objects, backgrounds, masks, enhance, inpaint) -> dict:
    """One swap of object scenes x and backgrounds y, with the object masks m of x:
    ``{"pasted": z, "moved": ŷ = enhance(z), "inpainted": x̂ = inpaint((1 − m) ⊙ x)}``.
    ``enhance`` and ``inpaint`` map (N, 3, H, W) → (N, 3, H, W)."""
    pasted = composite(masks, objects, backgrounds)
    return {"pasted": pasted, "moved": enhance(pasted), "inpainted": inpaint(cut_out(masks, objects))}


def double_swap(objects, backgrounds, masks, segment, enhance, inpaint) -> dict:
    """Swap, then swap back (the paper's cycle). The second swap cuts the object out of ŷ with
    ``segment(ŷ)`` (masks of the same shape) and pastes it onto x̂.

    Returns the first swap's outputs and ``"object_cycle"`` x̂̂ ≈ x, ``"background_cycle"``
    ŷ̂ ≈ y, and ``"second_masks"``."""
    first = swap(objects, backgrounds, masks, enhance, inpaint)
    second_masks = segment(first["moved"])
    second = swap(first["moved"], first["inpainted"], second_masks, enhance, inpaint)
    return {**first, "second_masks": second_masks, "object_cycle": second["moved"],
            "background_cycle": second["inpainted"]}


# --------------------------------------------------------------------------- the fake pool

class ImagePool:
    """A buffer of past fakes for the discriminators (CycleGAN's, used by the paper).

    ``query(images)`` goes through the batch one image at a time. Until the pool holds
    ``size`` images each one is stored and returned. After that, with probability
    ``probability`` a random stored image is returned and the new one takes its place;
    otherwise the new image is returned and the pool is unchanged. ``size`` 0 disables it.
    Draws come from ``generator`` so a run is reproducible.
    """

    def __init__(self, size: int = POOL_SIZE, probability: float = POOL_PROBABILITY,
                 generator: torch.Generator | None = None):
        if size < 0 or not 0 <= probability <= 1:
            raise ValueError(f"pool size must be ≥ 0 and probability in [0, 1], got {size} and {probability}")
        self.size, self.probability = int(size), float(probability)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images
        returned = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                returned.append(image)
            elif torch.rand(1, generator=self.generator).item() < self.probability:
                index = int(torch.randint(len(self.images), (1,), generator=self.generator))
                returned.append(self.images[index])
                self.images[index] = image.clone()
            else:
                returned.append(image)
        return torch.stack(returned)


# --------------------------------------------------------------------------- unpaired StreetScenes data

def object_scenes(size, count: int, split: str = "train", seed: int = 0, start: int = 0,
                  min_height: float = 1 / 6, scan_limit: int = 20_000) -> list[dict]:
    """X: ``count`` scenes with an object, each ``{"image", "box", "class", "mask", "background",
    "index", "object_id"}``. The object is the nearest car or person at least ``min_height`` of
    the image tall. ``mask`` (1, H, W) is its true mask and ``background`` (3, H, W) the same
    scene rendered without it (and without a car's contact shadow, so it differs from x just
    outside the mask too): both are for evaluation only, never for training."""
    scenes = StreetScenes(size=size, seed=seed, split=split, length=start + scan_limit)
    wanted = {CLASS_INDEX[c] for c in OBJECT_CLASSES}
    found = []
    for index in range(start, start + scan_limit):
        sample = scenes[index]
        candidates = [o for o in sample["objects"] if o["class_id"] in wanted
                      and o["box"][3] - o["box"][1] >= min_height * scenes.size[0]]
        if not candidates:
            continue
        chosen = min(candidates, key=lambda o: o["order"])
        found.append({"image": sample["image"], "box": torch.tensor(chosen["box"]), "class": chosen["class_id"],
                      "mask": (sample["instances"] == chosen["id"]).float()[None],
                      "background": scenes.render(index, remove=[chosen["id"]])["image"], "index": index,
                      "object_id": chosen["id"]})
        if len(found) == count:
            return found
    raise ValueError(f"only {len(found)} of {scan_limit} {split} scenes at {size} have a clear object; "
                     f"asked for {count}")


def background_scenes(size, count: int, split: str = "train", seed: int = 0, start: int = 0) -> torch.Tensor:
    """Y: ``count`` scenes rendered with every car and person removed, (count, 3, H, W). Draw them
    from other scene indices than X (``start``) so that X and Y are unpaired."""
    scenes = StreetScenes(size=size, seed=seed, split=split, length=start + count)
    return torch.stack([scenes.render(i, remove=[t.instance_id for t in scenes.scene(i).instances])["image"]
                        for i in range(start, start + count)])
