"""SEIGAN (chapter 5) foundations: compositing, masks restricted to boxes, the fake pool, the cycle, data."""
import pytest
import torch

from labkit.data import CLASS_INDEX
from labkit.papers import seigan

SIZE = (32, 64)


@pytest.fixture(scope="module")
def pairs():
    objects = seigan.object_scenes(SIZE, 3, split="test")
    backgrounds = seigan.background_scenes(SIZE, 3, split="test", start=500)
    return objects, backgrounds


def _stack(objects, key):
    return torch.stack([o[key] for o in objects])


def test_compositing_with_a_full_mask_inside_the_box_returns_the_objects_box(pairs):
    objects, backgrounds = pairs
    x, boxes = _stack(objects, "image"), _stack(objects, "box")
    inside = seigan.box_masks(boxes, SIZE)
    z = seigan.composite(inside, x, backgrounds)
    assert torch.equal(z * inside, x * inside) and torch.equal(z * (1 - inside), backgrounds * (1 - inside))
    # with the true mask the object itself is pasted, and nothing else of x
    masks = _stack(objects, "mask")
    z = seigan.composite(masks, x, backgrounds)
    assert torch.equal(z[masks.expand_as(z) > 0], x[masks.expand_as(x) > 0])
    assert torch.equal(z[masks.expand_as(z) == 0], backgrounds[masks.expand_as(z) == 0])


def test_masks_are_zero_outside_the_box():
    boxes = torch.tensor([[4, 2, 20, 30], [0, 0, 64, 32]])
    masks = seigan.restrict_to_boxes(torch.rand(2, 1, *SIZE, generator=torch.Generator().manual_seed(0)), boxes)
    inside = seigan.box_masks(boxes, SIZE)
    assert (masks[inside == 0] == 0).all() and (masks[inside == 1] > 0).any()
    assert inside[0].sum() == 16 * 28 and inside[1].sum() == SIZE[0] * SIZE[1]


def test_box_masks_and_composites_reject_bad_input(pairs):
    objects, backgrounds = pairs
    x = _stack(objects, "image")
    with pytest.raises(ValueError, match="x0 < x1"):
        seigan.box_masks(torch.tensor([[10, 0, 5, 8]]), SIZE)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        seigan.box_masks(torch.tensor([1, 2, 3, 4]), SIZE)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        seigan.composite(torch.full((3, 1, *SIZE), 2.0), x, backgrounds)
    with pytest.raises(ValueError, match="must match"):
        seigan.composite(torch.ones(3, 1, *SIZE), x, backgrounds[:, :, :16])
    with pytest.raises(ValueError, match="do not fit"):
        seigan.cut_out(torch.ones(2, 1, *SIZE), x)


def test_image_pool_returns_stored_images_with_the_papers_probability():
    pool = seigan.ImagePool(size=10, probability=0.5, generator=torch.Generator().manual_seed(1))
    first = torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1)
    assert torch.equal(pool.query(first), first)   # filling: each fake comes straight back
    stored, trials = 0, 4000
    for step in range(trials):
        new = torch.full((1, 1, 1, 1), 100.0 + step)
        stored += int(pool.query(new).item() != new.item())
    assert abs(stored / trials - 0.5) < 0.03
    assert len(pool.images) == 10
    assert torch.equal(seigan.ImagePool(size=0).query(first), first)
    assert not seigan.ImagePool(size=0).query(first.clone().requires_grad_()).requires_grad   # fakes are detached
    with pytest.raises(ValueError, match="probability"):
        seigan.ImagePool(probability=1.5)


def test_image_pool_never_returns_stored_images_with_probability_zero_and_always_with_one():
    for probability, expect_new in ((0.0, True), (1.0, False)):
        pool = seigan.ImagePool(size=3, probability=probability)
        pool.query(torch.zeros(3, 1, 1, 1))
        out = pool.query(torch.ones(5, 1, 1, 1))
        assert bool((out == 1).all()) == expect_new


def test_the_cycle_of_an_identity_swap_is_exact(pairs):
    """No enhancement and no inpainting (both the identity), binary masks, and a segmenter that
    finds the pasted object: swapping twice returns x exactly, and y exactly outside the hole
    that the second cut leaves (the identity inpainter does not fill it)."""
    objects, backgrounds = pairs
    x, masks = _stack(objects, "image"), _stack(objects, "mask")
    out = seigan.double_swap(x, backgrounds, masks, segment=lambda images: masks, enhance=lambda z: z,
                             inpaint=lambda holed: holed)
    assert torch.equal(out["object_cycle"], x)
    assert torch.equal(out["background_cycle"], (1 - masks) * backgrounds)
    # with a soft mask the cycle is not exact: the check above is not vacuous
    soft = seigan.double_swap(x, backgrounds, masks * 0.5, segment=lambda images: masks * 0.5,
                              enhance=lambda z: z, inpaint=lambda holed: holed)
    assert not torch.allclose(soft["object_cycle"], x)


OBJECT_IDS = (CLASS_INDEX["car"], CLASS_INDEX["person"])


def _object_pixels(labels):
    return (labels == OBJECT_IDS[0]) | (labels == OBJECT_IDS[1])


def test_object_scenes_hold_one_object_whose_mask_is_the_whole_difference_from_its_background(pairs):
    """The paper's x = ⟨O, B_x⟩ and y = ⟨∅, B_y⟩: x holds exactly its one object (no other car or
    person, no contact shadow), so x and B_x differ on the object's mask and nowhere else; the
    backgrounds hold no object at all."""
    objects, backgrounds = pairs
    for o in objects:
        assert o["class"] in OBJECT_IDS
        mask, box = o["mask"], o["box"]
        assert mask.sum() > 0 and (mask * (1 - seigan.box_masks(box[None], SIZE)[0])).sum() == 0
        changed = (o["image"] - o["background"]).abs().amax(0) > 0
        assert not changed[mask[0] == 0].any()   # nothing but the object differs (no shadow, no other object)
        assert changed[mask[0] > 0].float().mean() > 0.99   # (a pixel clipped to white in both can be equal)
        assert torch.equal(_object_pixels(o["labels"]), mask[0] > 0)
        assert not _object_pixels(o["background_labels"]).any()
        ys, xs = torch.nonzero(mask[0], as_tuple=True)   # the box is the mask's extent
        assert box.tolist() == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
    _, labels = seigan.background_scenes(SIZE, 3, split="test", start=500, with_labels=True)
    assert not _object_pixels(labels).any()
    assert backgrounds.shape == (3, 3, *SIZE)
    # unpaired: no background is one of the object scenes' own backgrounds
    assert not any(torch.equal(b, o["background"]) for b in backgrounds for o in objects)


# --------------------------------------------------------------------------- networks and losses

def test_segmenter_masks_are_in_zero_one_and_zero_outside_the_box(pairs):
    objects, _ = pairs
    x, boxes = _stack(objects, "image"), _stack(objects, "box")
    torch.manual_seed(0)
    masks = seigan.Segmenter(base_width=4, depth=4)(x, boxes)
    inside = seigan.box_masks(boxes, SIZE)
    assert masks.shape == (3, 1, *SIZE) and masks.min() >= 0 and masks.max() <= 1
    assert (masks[inside == 0] == 0).all() and (masks[inside == 1] > 0).all()
    with pytest.raises(ValueError, match="divisible"):
        seigan.Segmenter(base_width=4, depth=4)(x[:, :, :24], boxes)
    with pytest.raises(ValueError, match="boxes"):
        seigan.Segmenter(base_width=4, depth=4)(x, boxes[:2])


def test_the_enhancer_starts_as_the_identity_and_the_inpainted_image_keeps_what_the_inpainter_sees(pairs):
    """x̂ = m ⊙ G_inp((1 − m) ⊙ x) + (1 − m) ⊙ x: G_inp's output shows in the hole only."""
    objects, backgrounds = pairs
    x, masks = _stack(objects, "image"), _stack(objects, "mask")
    torch.manual_seed(0)
    assert torch.equal(seigan.Enhancer(4, 4)(x), x)
    inpainter = seigan.Inpainter(4, 4)
    drawn = inpainter(seigan.cut_out(masks, x))
    assert drawn.shape == x.shape and drawn.min() >= 0 and drawn.max() <= 1
    filled = seigan.swap(x, backgrounds, masks, lambda z: z, inpainter)["inpainted"]
    hole = masks.expand_as(x) > 0
    assert torch.equal(filled[~hole], x[~hole]) and torch.equal(filled[hole], drawn[hole])
    assert not torch.equal(filled[hole], x[hole])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        seigan.Inpainter(4, 4)(x * 2 - 1)


def test_box_crops_frame_the_box_with_its_context():
    """A square box filled with one colour on another: with context 1 the crop is the box's colour
    throughout; with context 2 the window is twice the box, so its rim shows the outside; beyond the
    frame the crop is zero; and the crop passes gradients back to the image."""
    image = torch.full((1, 3, 32, 64), 0.25)
    image[..., 8:16, 20:28] = 0.75
    box = torch.tensor([[20, 8, 28, 16]])
    tight = seigan.box_crops(image, box, 8, context=1.0)   # one sample per pixel centre: exact
    assert tight.shape == (1, 3, 8, 8) and torch.allclose(tight, torch.full_like(tight, 0.75))
    upsampled = seigan.box_crops(image, box, 16, context=1.0)
    assert torch.allclose(upsampled[..., 1:-1, 1:-1], torch.full((1, 3, 14, 14), 0.75))   # rims blend bilinearly
    wide = seigan.box_crops(image, box, 16, context=2.0)
    assert torch.allclose(wide[..., 4:12, 4:12], torch.full((1, 3, 8, 8), 0.75))
    assert torch.allclose(wide[..., 0, :], torch.full((1, 3, 16), 0.25))
    edge = seigan.box_crops(image, torch.tensor([[0, 0, 8, 8]]), 16, context=2.0)
    assert float(edge[..., 0, 0].abs().max()) == 0.0   # outside the frame
    wanted = image.clone().requires_grad_()
    seigan.box_crops(wanted, box, 16).sum().backward()
    assert wanted.grad[..., 8:16, 20:28].abs().sum() > 0 and wanted.grad[..., :, :4].abs().sum() == 0


def test_pasting_elsewhere_moves_the_object_along_its_ground_line_and_the_cycle_brings_it_back(pairs):
    objects, backgrounds = pairs
    x, masks, boxes = _stack(objects, "image"), _stack(objects, "mask"), _stack(objects, "box")
    offsets = seigan.paste_offsets(boxes, SIZE[1], torch.Generator().manual_seed(3))
    moved_boxes = seigan.shift_boxes(boxes, offsets)
    assert (moved_boxes[:, 0] >= 0).all() and (moved_boxes[:, 2] <= SIZE[1]).all()
    assert torch.equal(moved_boxes[:, 1::2], boxes[:, 1::2]) and (offsets != 0).any()
    draws = torch.cat([seigan.paste_offsets(boxes, SIZE[1], torch.Generator().manual_seed(k)) for k in range(200)])
    lowest, highest = -boxes[:, 0], SIZE[1] - boxes[:, 2]
    assert int(draws.view(200, -1).min(0).values.sub(lowest).abs().max()) == 0   # every place can be drawn,
    assert int(draws.view(200, -1).max(0).values.sub(highest).abs().max()) == 0  # the edges included
    out = seigan.double_swap(x, backgrounds, masks, segment=lambda images: seigan.shift_images(masks, offsets),
                             enhance=lambda z: z, inpaint=lambda holed: holed, offsets=offsets)
    moved_masks = seigan.shift_images(masks, offsets)
    placed = moved_masks.expand_as(x) > 0
    assert torch.equal(out["pasted"][placed], seigan.shift_images(x, offsets)[placed])
    assert torch.equal(out["object_cycle"], x)
    # the second swap cuts and fills at the new place: ŷ̂ is ŷ with the moved hole left empty
    assert torch.equal(out["background_cycle"], (1 - moved_masks) * out["moved"])


def test_the_trainer_segments_and_judges_the_object_where_it_was_pasted(pairs):
    """With offsets, the second segmentation and D_obj's windows of z and ŷ use the moved boxes."""
    objects, backgrounds = pairs
    x, boxes = _stack(objects, "image"), _stack(objects, "box")
    torch.manual_seed(0)
    from labkit.features import load_feature_extractor

    trainer = seigan.SeiganTrainer(seigan.MODEL_SPECS["paste_elsewhere"], SMOKE, load_feature_extractor("judge"))
    offsets = seigan.paste_offsets(boxes, SIZE[1], torch.Generator().manual_seed(3))
    out = trainer(x, boxes, backgrounds, offsets=offsets)
    moved = seigan.shift_boxes(boxes, offsets)
    assert torch.equal(out["paste_boxes"], moved)
    outside = seigan.box_masks(moved, SIZE) == 0
    assert (out["second_masks"][outside] == 0).all() and (out["second_masks"][~outside] > 0).any()
    seen = []
    handle = trainer.object_discriminator.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    trainer.generator_terms(out, x, backgrounds, trainer.crops(out["pasted"], out["paste_boxes"]),
                            trainer.crops(out["moved"], out["paste_boxes"]))
    handle.remove()
    assert torch.equal(seen[0], seigan.box_crops(out["pasted"], moved, SMOKE["object_crop"]))


def test_background_reconstruction_loss_is_zero_for_the_background_itself(pairs):
    from labkit.features import load_feature_extractor

    _, backgrounds = pairs
    features = load_feature_extractor("judge", layers=("enc1", "enc2", "enc3", "enc4"))
    same, parts = seigan.background_reconstruction_loss(backgrounds, backgrounds, features)
    assert float(same) == 0.0 and parts == {"content": 0.0, "texture": 0.0}
    other, parts = seigan.background_reconstruction_loss(backgrounds.flip(0), backgrounds, features)
    assert parts["content"] > 0 and parts["texture"] > 0
    gram = seigan.gram_matrix(torch.ones(2, 3, 4, 5))
    assert gram.shape == (2, 3, 3) and torch.allclose(gram, torch.full((2, 3, 3), 1 / 3))


SMOKE = seigan.PROFILES["smoke"]


@pytest.mark.parametrize("name", seigan.TRAINED_MODELS)
def test_one_iteration_steps_the_discriminators_only_and_logs_the_models_losses(name, pairs):
    from labkit.features import load_feature_extractor

    objects, backgrounds = pairs
    torch.manual_seed(0)
    trainer = seigan.SeiganTrainer(seigan.MODEL_SPECS[name], SMOKE, load_feature_extractor("judge"))
    d_opt = torch.optim.Adam(trainer.discriminator_parameters(), lr=1e-3)
    generators = [p.detach().clone() for p in trainer.generator_parameters()]
    discriminators = [p.detach().clone() for p in trainer.discriminator_parameters()]
    batch = {"objects": _stack(objects, "image"), "boxes": _stack(objects, "box"), "backgrounds": backgrounds}
    loss, logs = trainer.iteration_loss(batch, d_opt)
    assert loss.requires_grad and torch.isfinite(loss)
    assert all(torch.equal(a, b) for a, b in zip(generators, trainer.generator_parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(discriminators, trainer.discriminator_parameters()))
    spec = seigan.MODEL_SPECS[name]
    assert ("object_reconstruction" in logs) == spec["cycle"] and ("background_reconstruction" in logs) == spec["cycle"]
    assert ("identity" in logs) == spec["identity"]
    assert (trainer.enhancer is None) == (not spec["enhance"])
    loss.backward()
    assert all(p.grad is not None for p in trainer.segmenter.parameters())
    assert not any(name.startswith("_features") for name, _ in trainer.named_parameters())


def test_the_trainer_keeps_the_frozen_features_out_of_its_state(pairs):
    from labkit.features import load_feature_extractor

    trainer = seigan.SeiganTrainer(seigan.MODEL_SPECS["seigan"], SMOKE, load_feature_extractor("judge"))
    assert not any("judge" in k or "features" in k for k in trainer.state_dict())
    count = sum(p.numel() for p in trainer.parameters())
    assert count == sum(p.numel() for p in trainer.generator_parameters()) + sum(
        p.numel() for p in trainer.discriminator_parameters())


def test_the_stop_gradient_keeps_the_objects_round_trip_from_training_the_inpainter(pairs):
    """With stop_gradient the loss ‖x̂̂ − x‖₁ reaches the segmenter and the enhancer but not the
    inpainter; without it (the paper's cycle as written) it reaches the inpainter too."""
    objects, backgrounds = pairs
    x, boxes = _stack(objects, "image"), _stack(objects, "box")
    for stop, reaches_inpainter in ((True, False), (False, True)):
        torch.manual_seed(0)
        trainer = seigan.SeiganTrainer(dict(seigan.MODEL_SPECS["seigan"], stop_gradient=stop), SMOKE)
        with torch.no_grad():   # a non-zero enhancer, so that gradients flow through it
            trainer.enhancer.net.up[1].weight.normal_(0, 0.01)
        out = trainer(x, boxes, backgrounds, cycle=True)
        torch.nn.functional.l1_loss(out["object_cycle"], x).backward()
        inpainter_grad = sum(float(p.grad.abs().sum()) for p in trainer.inpainter.parameters() if p.grad is not None)
        assert (inpainter_grad > 0) == reaches_inpainter
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.segmenter.parameters())
