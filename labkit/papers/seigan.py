"""SEIGAN: segment, enhance and inpaint by swapping objects (Ostyakov, Suvorov, Logacheva,
Khomenko, Nikolenko, arXiv 1811.07630, 2018). No official code exists; every choice below
follows the paper's description and is stated.

Notation (the paper's §2.1). An object scene x = ⟨O, B_x⟩ holds an object O on a background
B_x, with its bounding box; a background y = ⟨∅, B_y⟩ holds none. One **swap**:

- **cut**: G_seg predicts the object's mask m ∈ [0, 1]^{H×W} inside the box of x (zero outside);
- **paste and enhance**: z = m ⊙ x + (1 − m) ⊙ y, and ŷ = G_enh(z, noise) = ⟨Ô, B̂_y⟩;
- **inpaint**: x̂ = G_inp((1 − m) ⊙ x) = ⟨∅, B̂_x⟩, composited into the hole:
  x̂ = m ⊙ G_inp((1 − m) ⊙ x) + (1 − m) ⊙ x (the usual form; the paper writes G_inp's output).

As in CycleGAN, the swap is applied a second time to (ŷ, x̂): the object goes back, giving
x̂̂ ≈ x, and ŷ's object is cut out and its hole inpainted, giving ŷ̂ ≈ y.

Losses (the paper's §2.2–2.4; the weights are ours, see ``LOSS_WEIGHTS``):

- l_bg^adv: D_bg tells real backgrounds y from the inpainted x̂ and ŷ̂;
- l_obj^adv: D_obj tells real object scenes x from composites (z and ŷ), on a window
  around the object's box (:func:`box_crops`);
- l_obj^rec = ‖x̂̂ − x‖₁, the object's round trip;
- l_bg^rec(ŷ̂, y): perceptual on early features plus texture (Gram matrices) on deeper ones;
- l_id = ‖G_enh(x) − x‖₁: the enhancer leaves a real object scene alone;
- the discriminators see fakes through CycleGAN's pool of past fakes.

Shapes: images (N, 3, H, W) in [0, 1]; masks (N, 1, H, W) in [0, 1]; boxes (N, 4) as
(x0, y0, x1, y1) in pixels, x1 and y1 exclusive (StreetScenes' ``objects[i]["box"]``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import (check_choice, check_int, check_non_negative_int, check_number, check_pair, check_positive_int,
                      check_probability, check_seed)
from ..data import CLASS_INDEX, StreetScenes
from ..data.validation import check_images
from ..networks import float32_region
from ..pix2pix import PatchDiscriminator, UNetSkipBlock, lsgan_loss
from ..train import register_dry_run
from . import _checks

CHAPTER = "seigan"
OBJECT_CLASSES = ("car", "person")
POOL_SIZE = 50
POOL_PROBABILITY = 0.5
"""CycleGAN's pool, which the paper uses: once full, each query returns a stored fake with
probability 0.5 (and stores the new one in its place), otherwise the new fake."""
CROP_CONTEXT = 1.5
"""D_obj's window around a box: a square of side 1.5 × the box's longer side, centred on the box."""
PASTE_PLACES = ("same", "elsewhere")
"""Where the object goes in y: where it was in x, or at a random new place (``paste_elsewhere``)."""


# --------------------------------------------------------------------------- inputs

def check_masks(masks, images: torch.Tensor, name: str = "masks") -> torch.Tensor:
    """Masks (N, 1, H, W) float in [0, 1] (NaN and ±inf refused) that fit ``images`` (N, 3, H, W)."""
    if not isinstance(masks, torch.Tensor) or not masks.is_floating_point() or masks.dim() != 4 \
            or masks.shape[1] != 1:
        got = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ValueError(f"{name} must be float (N, 1, H, W), got {got}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be (N, 3, H, W) for the {name} to fit, got {got}")
    if masks.shape[0] != images.shape[0] or masks.shape[-2:] != images.shape[-2:]:
        raise ValueError(f"{name} {tuple(masks.shape)} do not fit images {tuple(images.shape)}")
    if masks.numel():
        low, high = (float(v) for v in torch.aminmax(masks.detach()))
        if not (low >= 0 and high <= 1):   # NaN fails both comparisons, so it is refused too
            raise ValueError(f"{name} must have values in [0, 1], got range [{low:.3g}, {high:.3g}]")
    return masks


def box_masks(boxes, size) -> torch.Tensor:
    """boxes (N, 4) as (x0, y0, x1, y1) in whole pixels, x1 and y1 exclusive → (N, 1, H, W) float, 1 inside."""
    try:
        boxes = torch.as_tensor(boxes)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"boxes must be (N, 4) as (x0, y0, x1, y1) in pixels, got {type(boxes).__name__}") from None
    height, width = check_pair(size, "size")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) as (x0, y0, x1, y1), got {tuple(boxes.shape)}")
    if boxes.dtype == torch.bool or boxes.is_complex() or (
            boxes.is_floating_point() and boxes.numel() and not bool((boxes == boxes.round()).all())):
        raise ValueError(f"boxes must be whole pixel coordinates (integers), got {boxes.dtype} "
                         f"{boxes.tolist()[:4]}{' …' if len(boxes) > 4 else ''}")
    x0, y0, x1, y1 = boxes.long().unbind(1)
    if (x0 < 0).any() or (y0 < 0).any() or (x1 > width).any() or (y1 > height).any() or (x1 <= x0).any() \
            or (y1 <= y0).any():
        raise ValueError(f"boxes must satisfy 0 ≤ x0 < x1 ≤ {width} and 0 ≤ y0 < y1 ≤ {height}, got {boxes.tolist()}")
    cols = torch.arange(width, device=boxes.device)[None, None, :]
    rows = torch.arange(height, device=boxes.device)[None, :, None]
    inside = ((cols >= x0[:, None, None]) & (cols < x1[:, None, None]) & (rows >= y0[:, None, None])
              & (rows < y1[:, None, None]))
    return inside[:, None].float()


# --------------------------------------------------------------------------- the three operations

def restrict_to_boxes(masks: torch.Tensor, boxes) -> torch.Tensor:
    """G_seg's output inside the box only: m ⊙ 1_box (the paper predicts the mask within the box);
    masks (N, 1, H, W) float, finite, with one box (N, 4) each."""
    _checks.tensor(masks, "masks", shape="(N, 1, H, W)", ndim=4, channels=1)
    if len(torch.as_tensor(boxes)) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(torch.as_tensor(boxes))} boxes")
    return masks * box_masks(boxes, masks.shape[-2:]).to(masks)


def composite(masks: torch.Tensor, objects: torch.Tensor, backgrounds: torch.Tensor) -> torch.Tensor:
    """Paste: z = m ⊙ x + (1 − m) ⊙ y for masks (N, 1, H, W), x and y (N, 3, H, W)."""
    check_images(objects, "objects", ndim=(4,))
    check_images(backgrounds, "backgrounds", ndim=(4,))
    if objects.shape != backgrounds.shape:
        raise ValueError(f"objects {tuple(objects.shape)} and backgrounds {tuple(backgrounds.shape)} must match")
    check_masks(masks, objects)
    return masks * objects + (1 - masks) * backgrounds


def _check_composite(masks: torch.Tensor, objects: torch.Tensor, backgrounds: torch.Tensor) -> None:
    """objects and backgrounds: at least one image (the rest is checked by the function itself)."""
    _checks.images_batch(objects, "objects"), _checks.images_batch(backgrounds, "backgrounds")


# the chapter displays composite: this check is attached here, outside its source
composite = _checks.checked(_check_composite)(composite)


def box_crops(images: torch.Tensor, boxes, size: int, context: float = CROP_CONTEXT) -> torch.Tensor:
    """D_obj's view of an image: a square window around each box, of side ``context`` × the box's
    longer side and centred on it, resampled bilinearly to ``size`` × ``size`` (zeros beyond the
    frame). images (N, C, H, W) float, boxes (N, 4) as :func:`box_masks` → (N, C, size, size);
    differentiable in the images."""
    _checks.tensor(images, "images", shape="(N, C, H, W)", ndim=4, finite=False)
    inside = box_masks(boxes, images.shape[-2:])   # checks the boxes against the frame
    if len(inside) != len(images):
        raise ValueError(f"{len(images)} images but {len(inside)} boxes")
    check_int(size, "size", minimum=1), check_number(context, "context", minimum=0.0, strict_minimum=True)
    height, width = images.shape[-2:]
    x0, y0, x1, y1 = torch.as_tensor(boxes).to(torch.float32).unbind(1)
    side = context * torch.maximum(x1 - x0, y1 - y0)
    theta = torch.zeros(len(images), 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = side / width, (x0 + x1) / width - 1
    theta[:, 1, 1], theta[:, 1, 2] = side / height, (y0 + y1) / height - 1
    grid = F.affine_grid(theta.to(images), [len(images), images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def check_offsets(offsets, count: int, name: str = "offsets") -> torch.Tensor:
    """``count`` whole-pixel horizontal offsets (count,) as a long tensor: integers, or floats with
    whole values; anything else is refused naming ``name``."""
    try:
        offsets = torch.as_tensor(offsets)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be ({count},) whole pixel offsets, got {type(offsets).__name__}") from None
    if offsets.shape != (count,) or offsets.dtype == torch.bool or offsets.is_complex() or (
            offsets.is_floating_point() and not bool((offsets == offsets.round()).all())):
        raise ValueError(f"{name} must be ({count},) whole pixel offsets (integers), got {offsets.dtype} "
                         f"{tuple(offsets.shape)}")
    return offsets.long()


def shift_boxes(boxes, offsets) -> torch.Tensor:
    """boxes (N, 4) moved right by ``offsets`` (N,) whole pixels (left where negative)."""
    boxes = torch.as_tensor(boxes).long()
    offsets = check_offsets(offsets, len(boxes))
    return boxes + torch.stack([offsets, torch.zeros_like(offsets)] * 2, dim=1)


def shift_images(images: torch.Tensor, offsets) -> torch.Tensor:
    """Each image (N, C, H, W) rolled right by its offset (N,) in whole pixels. Where a box moved
    by :func:`shift_boxes` stays in the frame, everything inside it moves intact (what wraps
    round lies outside it, where the masks are zero)."""
    _checks.tensor(images, "images", shape="(N, C, H, W)", ndim=4, finite=False)
    offsets = check_offsets(offsets, len(images))
    return torch.stack([torch.roll(image, int(offset), dims=-1) for image, offset in zip(images, offsets)])


def _check_masks_stay_in_frame(masks: torch.Tensor, offsets: torch.Tensor) -> None:
    """Each mask (N, 1, H, W), moved right by its offset, must keep its non-zero columns in the frame."""
    width = masks.shape[-1]
    used = masks.detach().flatten(1, 2).amax(1) > 0          # (N, W): columns the mask covers
    columns = torch.arange(width, device=masks.device)
    for k in range(len(masks)):
        if used[k].any():
            first, last = int(columns[used[k]].min()), int(columns[used[k]].max())
            if first + int(offsets[k]) < 0 or last + int(offsets[k]) >= width:
                raise ValueError(f"offsets[{k}] = {int(offsets[k])} moves mask {k} (columns {first}–{last}) out of the "
                                 f"frame of width {width}")


def paste_offsets(boxes, width: int, generator: torch.Generator) -> torch.Tensor:
    """Remez et al.'s "paste at a new place", along the object's own ground line: per box (N, 4),
    a whole-pixel horizontal offset drawn uniformly among those that keep the box in a frame of
    ``width`` (the height, and so the object's scale on the ground plane, stay the same).
    The boxes must lie in the frame (0 ≤ x0 < x1 ≤ width); draws come from ``generator``."""
    check_positive_int(width, "width")
    _checks.instance(generator, "generator", torch.Generator, "a torch.Generator")
    boxes = torch.as_tensor(boxes)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) as (x0, y0, x1, y1), got {tuple(boxes.shape)}")
    box_masks(boxes, (int(boxes[:, 3].max()) if len(boxes) else 1, width))   # x0 < x1 ≤ width, whole pixels
    boxes = boxes.long()
    low, high = -boxes[:, 0], width - boxes[:, 2]
    draws = torch.rand(len(boxes), generator=generator)
    return low + (draws * (high - low + 1).float()).long().clamp(max=(high - low))


def cut_out(masks: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The inpainter's input: (1 − m) ⊙ x; images (N, 3, H, W) in [0, 1], N ≥ 1, masks as :func:`check_masks`."""
    _checks.images_batch(images, "images")
    check_masks(masks, images)
    return (1 - masks) * images


def swap(objects, backgrounds, masks, enhance, inpaint, offsets=None) -> dict:
    """One swap of object scenes x and backgrounds y, with the object masks m of x:

        z = m ⊙ x + (1 − m) ⊙ y,   ŷ = enhance(z),   x̂ = m ⊙ inpaint((1 − m) ⊙ x) + (1 − m) ⊙ x,

    returned as ``{"pasted": z, "moved": ŷ, "inpainted": x̂}``: the inpainter fills the hole and
    the pixels it can see stay x's. ``offsets`` (N,) pastes each object that many pixels to the
    right in y (m and x shifted by :func:`shift_images`); None pastes it where it was.
    ``enhance`` and ``inpaint`` map (N, 3, H, W) → (N, 3, H, W)."""
    _checks.function(enhance, "enhance", "(N, 3, H, W) → (N, 3, H, W)")
    _checks.function(inpaint, "inpaint", "(N, 3, H, W) → (N, 3, H, W)")
    if offsets is not None:
        check_masks(masks, objects)
        offsets = check_offsets(offsets, len(masks))
        _check_masks_stay_in_frame(masks, offsets)
    placed_masks, placed = (masks, objects) if offsets is None else \
        (shift_images(masks, offsets), shift_images(objects, offsets))
    pasted = composite(placed_masks, placed, backgrounds)
    filled = composite(masks, inpaint(cut_out(masks, objects)), objects)
    return {"pasted": pasted, "moved": enhance(pasted), "inpainted": filled}


def double_swap(objects, backgrounds, masks, segment, enhance, inpaint, stop_gradient: bool = False,
                offsets=None) -> dict:
    """Swap, then swap back (the paper's cycle). The second swap cuts the object out of ŷ with
    ``segment(ŷ)`` (masks of the same shape, in the box where the object was pasted) and pastes
    it back onto x̂ where it came from (``-offsets``).

    With ``stop_gradient`` the second swap pastes onto x̂ detached, so the object's round trip
    x̂̂ ≈ x cannot train the inpainter (the ``seigan_stop_gradient`` variant; the paper has none).

    Returns the first swap's outputs and ``"object_cycle"`` x̂̂ ≈ x, ``"background_cycle"``
    ŷ̂ ≈ y, and ``"second_masks"``."""
    first = swap(objects, backgrounds, masks, enhance, inpaint, offsets)
    second_masks = segment(first["moved"])
    background = first["inpainted"].detach() if stop_gradient else first["inpainted"]
    back = None if offsets is None else -torch.as_tensor(offsets)
    second = swap(first["moved"], background, second_masks, enhance, inpaint, back)
    return {**first, "second_masks": second_masks, "object_cycle": second["moved"],
            "background_cycle": second["inpainted"]}


def _check_double_swap(objects, backgrounds, masks, segment, enhance, inpaint, stop_gradient: bool = False,
                       offsets=None) -> None:
    """segment, enhance and inpaint callables; stop_gradient True or False (the images and masks are
    checked by :func:`composite`)."""
    _checks.function(segment, "segment", "moved (N, 3, H, W) → masks (N, 1, H, W)")
    _checks.function(enhance, "enhance", "(N, 3, H, W) → (N, 3, H, W)")
    _checks.function(inpaint, "inpaint", "(N, 3, H, W) → (N, 3, H, W)")
    _checks.flag(stop_gradient, "stop_gradient")


# the chapter displays double_swap: its checks are attached here, outside its source
double_swap = _checks.checked(_check_double_swap)(double_swap)


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
        check_non_negative_int(size, "size"), check_probability(probability, "probability")
        _checks.instance(generator, "generator", torch.Generator, "a torch.Generator", allow_none=True)
        self.size, self.probability = int(size), float(probability)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        if self.size == 0:
            return images.detach()
        returned = []
        for image in images.detach():
            if len(self.images) < self.size:
                self.images.append(image.clone())
                returned.append(image)
            elif torch.rand(1, generator=self.generator).item() < self.probability:
                index = int(torch.randint(len(self.images), (1,), generator=self.generator))
                returned.append(self.images[index].to(image.device))
                self.images[index] = image.clone()
            else:
                returned.append(image)
        return torch.stack(returned)


def _check_pool_query(self, images: torch.Tensor) -> None:
    """images (N, …) a tensor with N ≥ 1, each image of the shape of those already stored."""
    _checks.tensor(images, "images", shape="(N, 3, H, W)", floating=False, finite=False)
    if images.dim() < 2:
        raise ValueError(f"images must be a batch (N, …) of images, got shape {tuple(images.shape)}")
    if self.images and tuple(images.shape[1:]) != tuple(self.images[0].shape):
        raise ValueError(f"images must each have the shape of the stored ones, {tuple(self.images[0].shape)}, got "
                         f"{tuple(images.shape[1:])}")


# the chapter displays query: its checks are attached here, outside its source
ImagePool.query = _checks.checked(_check_pool_query)(ImagePool.query)


# --------------------------------------------------------------------------- unpaired StreetScenes data

def object_scenes(size, count: int, split: str = "train", seed: int = 0, start: int = 0,
                  min_height: float = 1 / 6, scan_limit: int = 20_000) -> list[dict]:
    """X: ``count`` scenes x = ⟨O, B_x⟩ holding one object each, as dicts ``{"image", "labels",
    "box", "class", "mask", "background", "background_labels", "index", "object_id"}``.

    The object O is the scene's nearest car or person at least ``min_height`` of the image tall.
    Every other car and person is left out of the rendering, and cars and persons are drawn
    without contact shadows, so that B_x holds no object (as the paper's backgrounds
    y = ⟨∅, B_y⟩) and the object's mask is the whole difference between x and B_x. ``box`` is
    its visible extent, ``mask`` (1, H, W) its true mask and ``background`` (3, H, W) B_x, the
    same scene without it: mask and background are for evaluation only, never for training.

    ``count`` ≥ 1 scenes from the ``scan_limit`` ≥ 1 scenes from ``start`` ≥ 0; ``min_height`` in (0, 1].
    The scan stops, with an error, as soon as the scenes left cannot make up ``count``."""
    check_positive_int(count, "count"), check_positive_int(scan_limit, "scan_limit")
    check_choice(split, "split", ("train", "test")), check_seed(seed), check_non_negative_int(start, "start")
    check_number(min_height, "min_height", minimum=0.0, maximum=1.0, strict_minimum=True)
    if count > scan_limit:
        raise ValueError(f"count must be at most scan_limit ({scan_limit}): each scene gives at most one object, "
                         f"got {count}")
    scenes = StreetScenes(size=size, seed=seed, split=split, length=start + scan_limit)
    wanted = {CLASS_INDEX[c] for c in OBJECT_CLASSES}
    found = []
    scanned = 0
    for index in range(start, start + scan_limit):
        if len(found) + scan_limit - scanned < count:   # even if every scene left had an object
            break
        scanned += 1
        sample = scenes[index]
        candidates = [o for o in sample["objects"] if o["class_id"] in wanted
                      and o["box"][3] - o["box"][1] >= min_height * scenes.size[0]]
        if not candidates:
            continue
        chosen = min(candidates, key=lambda o: o["order"])
        others = [o.instance_id for o in scenes.scene(index).instances if o.instance_id != chosen["id"]]
        alone = scenes.render(index, remove=others, shadows=False)
        emptied = scenes.render(index, remove=others + [chosen["id"]], shadows=False)
        (drawn,) = [o for o in alone["objects"] if o["id"] == chosen["id"]]
        found.append({"image": alone["image"], "labels": alone["label"], "box": torch.tensor(drawn["box"]),
                      "class": chosen["class_id"], "mask": (alone["instances"] == chosen["id"]).float()[None],
                      "background": emptied["image"], "background_labels": emptied["label"], "index": index,
                      "object_id": chosen["id"]})
        if len(found) == count:
            return found
    raise ValueError(f"count {count} cannot be met: {len(found)} of the {scanned} {split} scenes scanned "
                     f"at {tuple(scenes.size)} have a clear object, and only {scan_limit - scanned} of "
                     f"scan_limit {scan_limit} are left; ask for fewer or raise scan_limit")


def background_scenes(size, count: int, split: str = "train", seed: int = 0, start: int = 0,
                      with_labels: bool = False):
    """Y: ``count`` backgrounds, (count, 3, H, W), and with ``with_labels`` their label maps
    (count, H, W) too. Each is a scene of the same kind as X's with no car or person at all
    (y = ⟨∅, B_y⟩), so that Y has the distribution of X's backgrounds B_x. Draw them from other
    scene indices than X (``start``) so that X and Y are unpaired."""
    _checks.flag(with_labels, "with_labels")
    found = object_scenes(size, count, split=split, seed=seed, start=start)
    images = torch.stack([f["background"] for f in found])
    return (images, torch.stack([f["background_labels"] for f in found])) if with_labels else images


# --------------------------------------------------------------------------- networks

def _unet(in_channels: int, out_channels: int, base_width: int, depth: int) -> nn.Module:
    """pix2pix's U-Net body (:class:`labkit.pix2pix.UNetSkipBlock`) with ``depth`` downsamplings,
    widths base, 2·base, 4·base, 8·base, 8·base, …; (N, in, H, W) → (N, out, H, W) in [−1, 1]."""
    check_positive_int(base_width, "base_width"), check_int(depth, "depth", minimum=2)
    channels = [min(base_width * 2 ** i, base_width * 8) for i in range(depth)]
    block = None
    for level in reversed(range(1, depth)):
        block = UNetSkipBlock(channels[level - 1], channels[level], block)
    return UNetSkipBlock(out_channels, channels[0], block, in_channels=in_channels, out_channels=out_channels,
                         outermost=True)


def _check_size(images: torch.Tensor, depth: int, name: str) -> None:
    height, width = images.shape[-2:]
    if height % 2 ** depth or width % 2 ** depth:
        raise ValueError(f"{name} H and W must be divisible by 2**depth = {2 ** depth}, got {(height, width)}")


class Segmenter(nn.Module):
    """G_seg: (x (N, 3, H, W), boxes (N, 4)) → m (N, 1, H, W) in [0, 1], zero outside each box.

    The image and its box (as a binary channel) enter a U-Net; a sigmoid-like output
    (tanh + 1) / 2 gives the mask, multiplied by the box: m = G_seg(x, box) ⊙ 1_box.
    """

    def __init__(self, base_width: int = 16, depth: int = 5):
        super().__init__()
        self.depth = check_int(depth, "depth", minimum=2)
        self.net = _unet(4, 1, base_width, depth)

    def forward(self, images: torch.Tensor, boxes) -> torch.Tensor:
        check_images(images, "images", ndim=(4,))
        _check_size(images, self.depth, "images")
        inside = box_masks(boxes, images.shape[-2:]).to(images)
        if len(inside) != len(images):
            raise ValueError(f"{len(images)} images but {len(inside)} boxes")
        return (self.net(torch.cat([images * 2 - 1, inside], dim=1)) + 1) / 2 * inside


class Enhancer(nn.Module):
    """G_enh: the composite z (N, 3, H, W) and a noise channel → ŷ (N, 3, H, W) in [0, 1].

    ŷ = clip(z + r(z, ε), 0, 1), ε ~ N(0, 1) per pixel: a residual on the composite, whose last
    layer starts at zero so that G_enh starts as the identity (our choice; the paper draws
    G_enh as a U-Net whose output is the image).
    """

    def __init__(self, base_width: int = 16, depth: int = 5):
        super().__init__()
        self.depth = check_int(depth, "depth", minimum=2)
        self.net = _unet(4, 3, base_width, depth)
        last = self.net.up[1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def forward(self, composites: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        check_images(composites, "composites", ndim=(4,))
        _check_size(composites, self.depth, "composites")
        if noise is None:
            noise = torch.randn_like(composites[:, :1])
        return (composites + self.net(torch.cat([composites * 2 - 1, noise], dim=1))).clamp(0, 1)


def _check_segmenter_inputs(self, images: torch.Tensor, boxes) -> None:
    """images (N, 3, H, W) in [0, 1] with N ≥ 1 (sizes and boxes are checked by forward itself)."""
    _checks.images_batch(images, "images")


def _check_enhancer_inputs(self, composites: torch.Tensor, noise: torch.Tensor | None = None) -> None:
    """composites (N, 3, H, W) in [0, 1], N ≥ 1; noise None or (N, 1, H, W) float, finite."""
    _checks.images_batch(composites, "composites")
    if noise is not None:
        _checks.tensor(noise, "noise", shape="(N, 1, H, W)", ndim=4, channels=1)
        if noise.shape[0] != composites.shape[0] or noise.shape[-2:] != composites.shape[-2:]:
            raise ValueError(f"noise must be ({composites.shape[0]}, 1, {composites.shape[-2]}, "
                             f"{composites.shape[-1]}) for these composites, got {tuple(noise.shape)}")


# the chapter displays both forwards: their checks are attached here, outside their source
Segmenter.forward = _checks.checked(_check_segmenter_inputs)(Segmenter.forward)
Enhancer.forward = _checks.checked(_check_enhancer_inputs)(Enhancer.forward)


class Inpainter(nn.Module):
    """G_inp: the cut-out (1 − m) ⊙ x (N, 3, H, W) → x̂ (N, 3, H, W) in [0, 1], the whole image
    (the paper's input: the hole is only visible as missing pixels; no mask channel)."""

    def __init__(self, base_width: int = 16, depth: int = 5):
        super().__init__()
        self.depth = check_int(depth, "depth", minimum=2)
        self.net = _unet(3, 3, base_width, depth)

    def forward(self, cut_outs: torch.Tensor) -> torch.Tensor:
        """cut_outs (N, 3, H, W) in [0, 1], N ≥ 1, H and W divisible by 2**depth."""
        _checks.images_batch(cut_outs, "cut_outs")
        _check_size(cut_outs, self.depth, "cut_outs")
        return (self.net(cut_outs * 2 - 1) + 1) / 2


class ImageDiscriminator(nn.Module):
    """D_bg or D_obj: pix2pix's PatchGAN on an image alone, (N, 3, H, W) → (N, 1, h, w) logits
    (least-squares targets 1 for real, 0 for fake)."""

    def __init__(self, base_width: int = 32, layers: int = 3):
        super().__init__()
        check_positive_int(base_width, "base_width"), check_positive_int(layers, "layers")
        self.layers = layers
        self.net = PatchDiscriminator(num_classes=0, base_width=base_width, layers=layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (N, 3, H, W) in [0, 1], N ≥ 1, H and W ≥ 2**(layers + 1)."""
        _checks.images_batch(images, "images")
        if min(images.shape[-2:]) < 2 ** (self.layers + 1):
            raise ValueError(f"images H and W must be at least {2 ** (self.layers + 1)} for {self.layers} strided "
                             f"layers, got {tuple(images.shape[-2:])}")
        return self.net(images.new_zeros(images.shape[0], 0, *images.shape[-2:]), images)


# --------------------------------------------------------------------------- losses

def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N, C, C): G = F Fᵀ / (C·H·W); features float, non-empty."""
    _checks.tensor(features, "features", shape="(N, C, H, W)", ndim=4, finite=False)
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def background_reconstruction_loss(reconstructed: torch.Tensor, backgrounds: torch.Tensor, features,
                                   content_layers: int = 2) -> tuple[torch.Tensor, dict]:
    """The paper's l_bg^rec between ŷ̂ and y: a perceptual (content) term on the first feature
    layers and a texture (Gram) term on the rest (the paper: VGG-19's first and last five layers),

        l_bg^rec = Σ_{l < k} ‖φ_l(ŷ̂) − φ_l(y)‖₁ + Σ_{l ≥ k} ‖Gram(φ_l(ŷ̂)) − Gram(φ_l(y))‖₁ · C_l,

    with ``features`` a frozen extractor returning a list of (N, C_l, h, w) maps and k =
    ``content_layers``. The Gram term is scaled by C_l so both terms are of order one.
    Returns (loss, {"content", "texture"})."""
    got, want = features(reconstructed), features(backgrounds)
    content = sum(F.l1_loss(a, b) for a, b in zip(got[:content_layers], want[:content_layers]))
    with float32_region():   # Gram matrices in float32: bf16 would quantise the difference
        texture = sum(F.l1_loss(gram_matrix(a.float()), gram_matrix(b.float())) * a.shape[1]
                      for a, b in zip(got[content_layers:], want[content_layers:]))
    return content + texture, {"content": float(content.detach()), "texture": float(texture.detach())}


def _check_background_reconstruction(reconstructed: torch.Tensor, backgrounds: torch.Tensor, features,
                                     content_layers: int = 2) -> None:
    """reconstructed and backgrounds (N, 3, H, W) in [0, 1] of one shape, N ≥ 1; features a frozen
    extractor (images → list of maps); content_layers ≥ 0."""
    _checks.images_batch(reconstructed, "reconstructed"), _checks.images_batch(backgrounds, "backgrounds")
    if reconstructed.shape != backgrounds.shape:
        raise ValueError(f"reconstructed {tuple(reconstructed.shape)} and backgrounds {tuple(backgrounds.shape)} "
                         "must have the same shape")
    _checks.function(features, "features", "a frozen feature extractor: images → list of (N, C_l, h, w) maps")
    check_non_negative_int(content_layers, "content_layers")


_background_reconstruction_loss = background_reconstruction_loss   # the trainer's inputs are checked already
background_reconstruction_loss = _checks.checked(_check_background_reconstruction)(background_reconstruction_loss)


# --------------------------------------------------------------------------- the models of the chapter

_PAPER = {"enhance": True, "cycle": True, "identity": True, "stop_gradient": False, "paste": "same"}
MODEL_SPECS = {
    "seigan": dict(_PAPER),
    "seigan_stop_gradient": dict(_PAPER, stop_gradient=True),
    "no_enhancement": dict(_PAPER, enhance=False, identity=False),
    "no_cycle": dict(_PAPER, cycle=False),
    "no_identity": dict(_PAPER, identity=False),
    "paste_elsewhere": dict(_PAPER, paste="elsewhere"),
}
"""The trained models: SEIGAN's cycle as the paper writes it, and its variants. ``no_enhancement``
pastes plainly (ŷ = z, so it has no identity loss either); ``no_cycle`` trains the first swap
only (no x̂̂, ŷ̂: no object or background reconstruction losses); ``no_identity`` drops
‖G_enh(x) − x‖₁; ``seigan_stop_gradient`` keeps the object's round trip from training the
inpainter (see :func:`double_swap`); ``paste_elsewhere`` pastes each object at a random new place
on its ground line (Remez et al.'s cut-and-paste, :func:`paste_offsets`)."""
TRAINED_MODELS = tuple(MODEL_SPECS)
REFERENCE_MODELS = ("bbox_as_mask", "supervised_segmenter")
MODEL_NAMES = TRAINED_MODELS + REFERENCE_MODELS

LOSS_WEIGHTS = {"object_adversarial": 1.0, "background_adversarial": 1.0, "object_reconstruction": 10.0,
                "background_reconstruction": 1.0, "identity": 5.0}
"""Our weights (the paper's are not given in what we could read): adversarial terms 1, the
object cycle 10 as CycleGAN's λ, identity 5 as CycleGAN's 0.5·λ, the background texture 1."""
CYCLEGAN_LEARNING_RATE = 2e-4
CYCLEGAN_BETAS = (0.5, 0.999)

PROFILES = {
    "smoke": {"size": (32, 64), "train_objects": 12, "train_backgrounds": 12, "test_pairs": 24, "batch_size": 2,
              "iterations": 4, "width": 4, "depth": 4, "discriminator_width": 8, "segmenter_iterations": 4,
              "pool_size": 4, "object_crop": 24, "learning_rate": CYCLEGAN_LEARNING_RATE, "features": "judge"},
    "book": {"size": (64, 128), "train_objects": 800, "train_backgrounds": 800, "test_pairs": 320,
             "batch_size": 4, "iterations": 2500, "width": 16, "depth": 5, "discriminator_width": 32,
             "segmenter_iterations": 1500, "pool_size": POOL_SIZE, "object_crop": 32,
             "learning_rate": CYCLEGAN_LEARNING_RATE, "features": "judge"},
    "full": {"size": (128, 256), "train_objects": 6000, "train_backgrounds": 6000, "test_pairs": 500,
             "batch_size": 8, "iterations": 40000, "width": 32, "depth": 6, "discriminator_width": 64,
             "segmenter_iterations": 10000, "pool_size": POOL_SIZE, "object_crop": 64,
             "learning_rate": CYCLEGAN_LEARNING_RATE, "features": "auto"},
}
DRY_RUN = register_dry_run(PROFILES, {"size": (64, 128), "iterations": 2, "segmenter_iterations": 2,
                                      "train_objects": 16, "train_backgrounds": 16, "test_pairs": 24})
"""How ``python -m labkit.dry_run seigan`` shrinks the full profile: 2 steps per network, a few scenes."""
DRY_RUN_NOTE = (f"The dry run keeps the full profile's networks (width {PROFILES['full']['width']}, depth "
                f"{PROFILES['full']['depth']}, D width {PROFILES['full']['discriminator_width']}, "
                f"{PROFILES['full']['object_crop']}-pixel object windows), batch {PROFILES['full']['batch_size']} and "
                f"losses, on {DRY_RUN['size'][0]}×{DRY_RUN['size'][1]} scenes instead of {PROFILES['full']['size'][0]}×"
                f"{PROFILES['full']['size'][1]} (a full-size step is too slow for a 2-core CPU: "
                f"reports/benchmarks/throughput_full_cpu.json), with {DRY_RUN['train_objects']} training objects and "
                f"backgrounds, and {DRY_RUN['test_pairs']} test pairs (the chapter's figures show pairs up to index 23).")


class SeiganTrainer(nn.Module):
    """G_seg, G_enh, G_inp, D_bg, D_obj and the fake pools; one training iteration.

    ``iteration_loss(batch, discriminator_optimizer)`` runs the double swap of a batch
    ``{"objects" x (B, 3, H, W), "boxes" (B, 4), "backgrounds" y (B, 3, H, W)}`` (x and y
    unpaired), steps both discriminators on real images and pooled fakes, and returns the
    generators' loss (the caller steps the generators). With c(·) D_obj's window around the
    object's box (:func:`box_crops`; for z and ŷ, the box where the object was pasted):

        L_G = ½[l_adv(D_obj(c(ŷ))) + l_adv(D_obj(c(z)))] + l_bg^adv(x̂, ŷ̂)
              + 10 ‖x̂̂ − x‖₁ + l_bg^rec(ŷ̂, y) + 5 ‖G_enh(x) − x‖₁
        L_D_obj = (D_obj(c(x)) − 1)² + ½ [D_obj(c(z))² + D_obj(c(ŷ))²]     (c(z), c(ŷ) from the pool)
        L_D_bg  = (D_bg(y) − 1)² + ½ [D_bg(x̂)² + D_bg(ŷ̂)²]                (x̂, ŷ̂ from the pool)

    The term on the plain paste z lets D_obj reach G_seg directly, not only through G_enh (which
    can repair a seam itself); without an enhancer ŷ = z and the term is counted once. The second
    swap segments ŷ inside the box where the object was pasted.
    """

    def __init__(self, spec: dict, settings: dict, features=None, seed: int = 0):
        super().__init__()
        _checks.settings(spec, ("enhance", "cycle", "identity", "stop_gradient", "paste"), "spec")
        for key in ("enhance", "cycle", "identity", "stop_gradient"):
            _checks.flag(spec[key], f"spec[{key!r}]")
        check_choice(spec["paste"], "spec['paste']", PASTE_PLACES)
        _checks.profile_settings(settings, PROFILES, ("width", "depth", "discriminator_width", "pool_size",
                                                      "object_crop"))
        check_int(settings["object_crop"], "settings['object_crop']", minimum=24)   # a 3-layer PatchGAN's least
        if features is not None:
            _checks.function(features, "features", "a frozen feature extractor: images → list of feature maps")
        check_seed(seed)
        self.spec, self.settings = dict(spec), dict(settings)
        width, depth = settings["width"], settings["depth"]
        self.segmenter = Segmenter(width, depth)
        self.enhancer = Enhancer(width, depth) if spec["enhance"] else None
        self.inpainter = Inpainter(width, depth)
        self.background_discriminator = ImageDiscriminator(settings["discriminator_width"])
        self.object_discriminator = ImageDiscriminator(settings["discriminator_width"])
        self._features = (features,)   # frozen and not a submodule: kept out of state_dict and the optimizers
        self.noise = torch.Generator().manual_seed(seed * 7919 + 101)
        self.places = torch.Generator().manual_seed(seed * 7919 + 202)   # paste_elsewhere's new places
        self.pools = {kind: ImagePool(settings["pool_size"], POOL_PROBABILITY,
                                      torch.Generator().manual_seed(seed * 7919 + 1000 + k))
                      for k, kind in enumerate(("pasted", "moved", "inpainted", "background_cycle"))}

    def get_extra_state(self) -> dict:
        """The random streams and the pools' contents, so that a resumed run continues exactly."""
        return {"noise": self.noise.get_state(), "places": self.places.get_state(),
                "pools": {kind: {"generator": pool.generator.get_state(), "images": [i.cpu() for i in pool.images]}
                          for kind, pool in self.pools.items()}}

    def set_extra_state(self, state: dict) -> None:
        """Restore what :meth:`get_extra_state` saved (``load_state_dict`` calls this)."""
        if not isinstance(state, dict) or not {"noise", "pools"} <= set(state) or not isinstance(state["pools"], dict) \
                or not set(state["pools"]) <= set(self.pools):
            from ..checkpoints import CheckpointError

            raise CheckpointError("the SEIGAN trainer's extra state must be a dict with 'noise' and 'pools' (one per "
                                  f"kind of fake, {sorted(self.pools)}), as get_extra_state writes it")
        self.noise.set_state(state["noise"])
        if "places" in state:
            self.places.set_state(state["places"])
        for kind, saved in state["pools"].items():
            self.pools[kind].generator.set_state(saved["generator"])
            self.pools[kind].images = list(saved["images"])

    def generator_parameters(self):
        return [p for name, p in self.named_parameters() if not name.startswith(("background_discriminator",
                                                                                   "object_discriminator"))]

    def discriminator_parameters(self):
        return list(self.background_discriminator.parameters()) + list(self.object_discriminator.parameters())

    def enhance(self, composites: torch.Tensor) -> torch.Tensor:
        """ŷ = G_enh(z, ε), or z itself for the plain paste (``no_enhancement``); composites (N, 3, H, W) in [0, 1]."""
        _checks.images_batch(composites, "composites")
        if self.enhancer is None:
            return composites
        noise = torch.randn(composites[:, :1].shape, generator=self.noise).to(composites)
        return self.enhancer(composites, noise)

    def crops(self, images: torch.Tensor, boxes) -> torch.Tensor:
        """D_obj's view: :func:`box_crops` at the profile's ``object_crop`` size."""
        return box_crops(images, boxes, self.settings["object_crop"])

    def forward(self, objects: torch.Tensor, boxes, backgrounds: torch.Tensor, cycle: bool = True,
                offsets=None) -> dict:
        """The swap (and with ``cycle`` the swap back): ``{"masks", "pasted", "moved", "inpainted",
        "paste_boxes"}`` and ``"second_masks", "object_cycle", "background_cycle"``. objects and
        backgrounds (N, 3, H, W) in [0, 1] of one shape, boxes (N, 4); ``offsets`` (N,) pastes each
        object that many pixels to the right (None: where it was)."""
        _check_pairs(objects, backgrounds)
        _checks.flag(cycle, "cycle")
        masks = self.segmenter(objects, boxes)
        paste_boxes = torch.as_tensor(boxes) if offsets is None else shift_boxes(boxes, offsets)
        if offsets is not None:
            box_masks(paste_boxes, objects.shape[-2:])   # the moved boxes must stay in the frame
        if not cycle:
            out = swap(objects, backgrounds, masks, self.enhance, self.inpainter, offsets)
        else:
            out = double_swap(objects, backgrounds, masks, lambda moved: self.segmenter(moved, paste_boxes),
                              self.enhance, self.inpainter, self.spec["stop_gradient"], offsets)
        return {"masks": masks, "paste_boxes": paste_boxes, **out}

    def iteration_loss(self, batch: dict, discriminator_optimizer) -> tuple[torch.Tensor, dict]:
        """batch {"objects", "boxes", "backgrounds"} as :meth:`forward`; discriminator_optimizer a torch
        optimizer; the cycle models need the trainer's ``features``."""
        _checks.batch(batch, ("objects", "boxes", "backgrounds"))
        _checks.instance(discriminator_optimizer, "discriminator_optimizer", torch.optim.Optimizer,
                         "a torch.optim.Optimizer")
        if self.spec["cycle"] and self._features[0] is None:
            raise ValueError("features must be given to SeiganTrainer for a model with the cycle: the background "
                             "reconstruction loss compares their maps (see seigan_runs.reconstruction_features)")
        x, boxes, y = batch["objects"], batch["boxes"], batch["backgrounds"]
        cycle = self.spec["cycle"]
        offsets = paste_offsets(boxes, x.shape[-1], self.places) if self.spec["paste"] == "elsewhere" else None
        out = self(x, boxes, y, cycle=cycle, offsets=offsets)
        d_obj, d_bg = self.object_discriminator, self.background_discriminator
        logs = {"mask_mean": float(out["masks"].detach().sum() / box_masks(boxes, x.shape[-2:]).sum())}
        pasted_crops = self.crops(out["pasted"], out["paste_boxes"])
        moved_crops = self.crops(out["moved"], out["paste_boxes"]) if self.enhancer is not None else None

        # discriminators first, on real images and pooled (detached) fakes, so that the
        # generators' adversarial terms below see the updated D
        object_fakes = [self.pools["pasted"].query(pasted_crops)]
        if self.enhancer is not None:
            object_fakes.append(self.pools["moved"].query(moved_crops))
        background_fakes = [self.pools["inpainted"].query(out["inpainted"])]
        if cycle:
            background_fakes.append(self.pools["background_cycle"].query(out["background_cycle"]))
        object_d = lsgan_loss(d_obj(self.crops(x, boxes)), True) \
            + sum(lsgan_loss(d_obj(f), False) for f in object_fakes) / len(object_fakes)
        background_d = lsgan_loss(d_bg(y), True) + sum(lsgan_loss(d_bg(f), False) for f in background_fakes) \
            / len(background_fakes)
        discriminator_optimizer.zero_grad(set_to_none=True)
        (0.5 * (object_d + background_d)).backward()
        discriminator_optimizer.step()
        logs.update(object_discriminator=float(object_d.detach()), background_discriminator=float(background_d.detach()))

        # generators (the caller steps them; the gradients this leaves on D are cleared by D's next step)
        terms = self.generator_terms(out, x, y, pasted_crops, moved_crops)
        loss = sum(LOSS_WEIGHTS[name] * value for name, value in terms.items())
        logs.update({name: float(value.detach()) for name, value in terms.items()})
        return loss, logs

    def generator_terms(self, out: dict, objects: torch.Tensor, backgrounds: torch.Tensor,
                        pasted_crops: torch.Tensor, moved_crops: torch.Tensor | None) -> dict:
        """The generators' loss terms, unweighted, in the order they are summed (weights
        ``LOSS_WEIGHTS``): ``object_adversarial``, ``background_adversarial`` and, with the cycle,
        ``object_reconstruction`` and ``background_reconstruction``, and ``identity`` where the spec
        has it. ``out`` is :meth:`forward`'s output for (objects, backgrounds); the crops are D_obj's
        windows of z and ŷ at the paste boxes (``moved_crops`` None without an enhancer)."""
        d_obj, d_bg = self.object_discriminator, self.background_discriminator
        cycle = "object_cycle" in out
        object_adversarial = lsgan_loss(d_obj(pasted_crops), True)
        if self.enhancer is not None:
            object_adversarial = (object_adversarial + lsgan_loss(d_obj(moved_crops), True)) / 2
        generated_backgrounds = [out["inpainted"]] + ([out["background_cycle"]] if cycle else [])
        terms = {"object_adversarial": object_adversarial,
                 "background_adversarial": sum(lsgan_loss(d_bg(f), True) for f in generated_backgrounds)
                 / len(generated_backgrounds)}
        if cycle:
            terms["object_reconstruction"] = F.l1_loss(out["object_cycle"], objects)
            terms["background_reconstruction"], _ = _background_reconstruction_loss(out["background_cycle"],
                                                                                     backgrounds, self._features[0])
        if self.spec["identity"]:
            terms["identity"] = F.l1_loss(self.enhance(objects), objects)
        return terms


def _check_pairs(objects, backgrounds) -> None:
    _checks.images_batch(objects, "objects"), _checks.images_batch(backgrounds, "backgrounds")
    if objects.shape != backgrounds.shape:
        raise ValueError(f"objects {tuple(objects.shape)} and backgrounds {tuple(backgrounds.shape)} must match")


_BOOK = PROFILES["book"]
DEVIATIONS = [
    "No official code exists. Every architecture, weight and schedule below is our choice from the paper's "
    "description; the reference notes could not verify the paper's layer counts, loss weights or numbers.",
    f"Data: procedural StreetScenes at {_BOOK['size'][0]}×{_BOOK['size'][1]} (book) instead of real photographs, "
    "built to the paper's definitions x = ⟨O, B_x⟩ and y = ⟨∅, B_y⟩. X: scenes whose nearest car or person is "
    f"at least a sixth of the image tall ({_BOOK['train_objects']} for training), rendered with that object only "
    "(every other car and person left out), with its box. Y: scenes of the same kind rendered with no car or "
    "person at all. X and Y come from disjoint scene indices and are drawn independently in every batch. The true "
    "masks and backgrounds are used only to evaluate, and to train the supervised reference.",
    "Cars and persons are drawn without contact shadows in this chapter (the other chapters' scenes have them), "
    "so that x and its background differ exactly on the object's mask. With shadows, a mask clipped to the box "
    "leaves the shadow behind, and no mask is both correct and realistic to paste.",
    "The object is pasted where it was (the same box in y), except in `paste_elsewhere`, which pastes it at a "
    "random place on the same image row (Remez et al.'s cut-and-paste, kept on the object's ground line so that "
    "its scale fits). The paper's enhancement network also handles objects whose size or place does not fit the "
    "new background; that case is not exercised here.",
    f"Generators: pix2pix U-Nets ({_BOOK['depth']} downsamplings, base width {_BOOK['width']}) for all three, "
    "not the paper's architectures. G_seg receives the box as a fourth input channel and its mask is "
    "multiplied by the box. G_enh adds a residual to z, with a zero-initialised last layer (it starts as the "
    "identity), and one channel of per-pixel Gaussian noise. G_inp receives (1 − m) ⊙ x only, as in the "
    "paper, and its output is composited into the hole: x̂ = m ⊙ G_inp((1 − m) ⊙ x) + (1 − m) ⊙ x, the usual "
    "form of inpainting (the paper writes x̂ = G_inp((1 − m) ⊙ x)).",
    f"Discriminators: pix2pix PatchGANs on the image alone (3 strided layers, width "
    f"{_BOOK['discriminator_width']}), least-squares GAN losses (CycleGAN's). D_bg judges whole images. D_obj "
    f"judges a window around the object's box (a square of {CROP_CONTEXT:g} × the box's longer side, resampled "
    f"to {_BOOK['object_crop']}×{_BOOK['object_crop']} at the book profile), not the whole image: on the whole "
    "frame it cannot know where the object is. D_obj judges both the plain paste z and the enhanced ŷ as fakes, "
    "and the generators' object adversarial term averages the two, so that G_seg hears D_obj directly and not "
    "only through G_enh (which can repair a seam itself). Both discriminators step first in each iteration, "
    "then the generators (CycleGAN steps the generators first).",
    "The main model `seigan` is the cycle as the paper writes it: the object's round trip x̂̂ ≈ x trains the "
    "inpainter too. `seigan_stop_gradient` pastes the object back onto x̂ detached (our earlier deviation, "
    "which the previous set-up needed to keep its masks from collapsing); it is recorded for comparison.",
    f"Loss weights (ours): {', '.join(f'{k} {v:g}' for k, v in LOSS_WEIGHTS.items())}. The background "
    "adversarial term averages over x̂ and ŷ̂.",
    "Background reconstruction: the judge's encoder (our scene segmenter, stages enc1–enc2 for the "
    "perceptual L1, enc3–enc4 for the Gram-matrix L1, scaled by the channel count) instead of VGG-19's first "
    "and last five layers; the full profile uses VGG-19 when its weights are supplied.",
    f"Schedule: {_BOOK['iterations']:,} iterations at batch {_BOOK['batch_size']} (book), Adam at "
    f"{CYCLEGAN_LEARNING_RATE:g} with β = {CYCLEGAN_BETAS} for everything, no learning-rate decay. One "
    "training run per model, except `seigan`: three training seeds on the same scenes.",
    f"Fake pools: one per kind of fake (z, ŷ, x̂, ŷ̂), {POOL_SIZE} images each, probability {POOL_PROBABILITY}.",
    "Evaluation: the paper measured mask IoU on real photographs against other weakly supervised methods "
    "and a supervised segmenter, and realism by human assessors. Here masks are thresholded at ½ and "
    "compared with the true masks; the references are the box itself and G_seg's architecture trained on "
    "the true masks; realism is a Fréchet distance and an FCN-score on our judge's features (a network "
    "trained on these scenes, not Inception); inpainting is scored in the hole against the true background, "
    "with a classical biharmonic fill of the true hole as a reference.",
]
