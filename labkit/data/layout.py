"""What a StreetScenes scene *is*, before it is drawn.

A :class:`Scene` is a plain description in resolution-free units, sampled
from a random generator once and then rendered at any size by
:mod:`labkit.data.render`. Editing a scene (move a car, raise the horizon)
is ``dataclasses.replace`` on this description followed by a new render.

Geometry: a pinhole camera one *unit* above flat ground (1 unit ≈ 1.5 m).
With ``v`` the image row as a fraction of the height and ``v_h`` the
horizon, a ground point at distance ``z`` appears on row

    v = v_h + s,   s = 1 / z          (the perspective scale)

and an object ``h`` units tall stands ``h · s`` of the image height tall.
Lateral world position ``x`` maps to column ``u = u_v + x · s / 2`` (the
image is twice as wide as tall), where ``u_v`` is the vanishing point.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .textures import TEXTURE_NAMES, noise_grids
from .validation import check_rng

CAR_COLOURS = np.array([
    (0.92, 0.92, 0.90), (0.08, 0.08, 0.09), (0.62, 0.63, 0.65), (0.70, 0.08, 0.07),
    (0.10, 0.20, 0.55), (0.12, 0.30, 0.15), (0.85, 0.70, 0.10), (0.35, 0.25, 0.18),
], np.float32)
BRICK_HUES = np.array([
    (0.55, 0.27, 0.20), (0.72, 0.62, 0.48), (0.50, 0.50, 0.52), (0.80, 0.76, 0.68),
    (0.45, 0.33, 0.28), (0.62, 0.55, 0.45),
], np.float32)


@dataclass
class Facade:
    """A building block along one side of the street, between depths
    ``z_near`` and ``z_far``; ``height`` in camera heights above the ground."""
    z_near: float
    z_far: float
    height: float
    colour: np.ndarray
    contrast: float
    window_spacing: float
    floor_height: float
    window_colour: np.ndarray


@dataclass
class Thing:
    """A countable object standing on the ground at depth ``z`` and lateral
    position ``x``. Cars and persons are instances (``instance_id`` > 0) and
    can be removed; trees and poles are scenery."""
    kind: str  # "car" | "person" | "tree" | "pole"
    z: float
    x: float
    width: float
    height: float
    colours: np.ndarray  # (k, 3) kind-specific palette
    instance_id: int = 0
    variant: float = 0.0  # kind-specific shape parameter in [0, 1)


@dataclass
class Scene:
    horizon: float
    vanishing_u: float
    road_slopes: tuple[float, float]      # (left, right): u per unit of s
    sidewalk_slopes: tuple[float, float]
    terrain_slopes: tuple[float, float]
    facades: tuple[list[Facade], list[Facade]]
    skyline: tuple[str, float]            # ("building" | "vegetation", height in v)
    colours: dict[str, np.ndarray]
    lane_mark: float                      # lateral position of the centre line
    things: list[Thing]
    gain: float
    temperature: float
    side_shade: tuple[float, float]
    texture_offsets: np.ndarray
    noise: list[np.ndarray] = field(default_factory=list)

    @property
    def instances(self) -> list[Thing]:
        return [t for t in self.things if t.instance_id > 0]


def _jitter(rng, colour, amount):
    return np.clip(np.asarray(colour, np.float32) + rng.uniform(-amount, amount, 3), 0, 1).astype(np.float32)


def _sample_facades(rng, rows_depth_limit=60.0) -> list[Facade]:
    blocks, z = [], 0.3
    while z < rows_depth_limit:
        length = rng.uniform(2.0, 7.0)
        if rng.random() < 0.2:  # a gap between buildings
            z += rng.uniform(0.6, 2.5)
            continue
        hue = BRICK_HUES[rng.integers(len(BRICK_HUES))]
        blocks.append(Facade(
            z_near=z, z_far=z + length, height=rng.uniform(2.0, 7.0),
            colour=_jitter(rng, hue, 0.08), contrast=rng.uniform(0.08, 0.3),
            window_spacing=rng.uniform(0.8, 1.6), floor_height=rng.uniform(1.7, 2.3),
            window_colour=_jitter(rng, (0.18, 0.22, 0.28), 0.08)))
        z += length
    return blocks


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw one scene. Every random number is drawn here, so rendering
    the returned description is deterministic at any resolution.

    rng: a ``numpy.random.Generator`` (``np.random.default_rng(seed)``)."""
    check_rng(rng)
    horizon = rng.uniform(0.36, 0.5)
    vanishing_u = rng.uniform(0.3, 0.7)
    below = 1.0 - horizon
    road = ((vanishing_u - rng.uniform(-0.2, 0.25)) / below, (rng.uniform(0.75, 1.2) - vanishing_u) / below)
    sidewalk = tuple(a * rng.uniform(1.35, 1.9) for a in road)
    terrain = tuple(b * (rng.uniform(1.3, 1.9) if rng.random() < 0.4 else 1.0) for b in sidewalk)
    facades = tuple(_sample_facades(rng) if rng.random() < 0.9 else [] for _ in range(2))
    skyline = ("building" if rng.random() < 0.65 else "vegetation", rng.uniform(0.015, 0.07))
    overcast = rng.random()
    palette = {
        "road": _jitter(rng, (0.30, 0.30, 0.32), 0.05),
        "sidewalk": _jitter(rng, (0.62, 0.58, 0.56), 0.06),
        "curb": _jitter(rng, (0.75, 0.74, 0.72), 0.04),
        "terrain": _jitter(rng, (0.50, 0.58, 0.28), 0.07),
        "vegetation": _jitter(rng, (0.16, 0.32, 0.10), 0.05),
        "sky_top": np.array((0.25 + 0.4 * overcast, 0.45 + 0.3 * overcast, 0.85 - 0.05 * overcast), np.float32),
        "sky_horizon": np.array((0.75 + 0.1 * overcast, 0.85, 0.95), np.float32),
        "lane": _jitter(rng, (0.85, 0.85, 0.80), 0.05),
    }
    lane_mark = rng.uniform(0.35, 0.65)

    things: list[Thing] = []
    left_x, right_x = -2 * road[0], 2 * road[1]           # road edges, world x
    side_x = (-2 * sidewalk[0], 2 * sidewalk[1])           # sidewalk outer edges
    terrain_x = (-2 * terrain[0], 2 * terrain[1])
    for _ in range(rng.integers(0, 8)):
        # Cars keep clear of each other so they never interpenetrate.
        for _attempt in range(8):
            z = 1.0 / rng.uniform(0.075, 0.45)
            x = rng.uniform(left_x + 0.7, right_x - 0.7)
            if all(abs(z - t.z) > 2.5 or abs(x - t.x) > 1.4 for t in things if t.kind == "car"):
                colours = np.stack([
                    _jitter(rng, CAR_COLOURS[rng.integers(len(CAR_COLOURS))], 0.05),
                    _jitter(rng, (0.12, 0.14, 0.17), 0.05),   # glass
                    _jitter(rng, (0.75, 0.05, 0.05), 0.08),   # tail lights
                ])
                things.append(Thing("car", z, x, rng.uniform(1.1, 1.35), rng.uniform(0.95, 1.3),
                                    colours, variant=rng.random()))
                break
    for _ in range(rng.integers(0, 7)):
        z = 1.0 / rng.uniform(0.09, 0.45)
        side = rng.integers(2)
        if rng.random() < 0.2:
            x = rng.uniform(left_x, right_x)
        else:
            x = rng.uniform(side_x[0], left_x) if side == 0 else rng.uniform(right_x, side_x[1])
        colours = np.stack([
            rng.uniform(0.05, 0.95, 3).astype(np.float32),           # shirt
            _jitter(rng, (0.2, 0.2, 0.3), 0.15),                    # trousers
            _jitter(rng, (0.80, 0.62, 0.50) if rng.random() < 0.6 else (0.45, 0.30, 0.22), 0.05),
            _jitter(rng, (0.12, 0.08, 0.05), 0.08),                  # hair
        ])
        things.append(Thing("person", z, x, rng.uniform(0.32, 0.42), rng.uniform(1.08, 1.25),
                            colours, variant=rng.random()))
    for side in (0, 1):
        outer, inner = (terrain_x[0], side_x[0]) if side == 0 else (terrain_x[1], side_x[1])
        for _ in range(rng.integers(0, 5)):
            z = rng.uniform(1.5, 30.0)
            x = rng.uniform(min(outer, inner), max(outer, inner)) if outer != inner else inner * rng.uniform(0.85, 0.97)
            things.append(Thing("tree", z, x, rng.uniform(1.6, 3.0), rng.uniform(2.8, 5.5),
                                np.stack([_jitter(rng, palette["vegetation"], 0.06),
                                          _jitter(rng, (0.28, 0.2, 0.12), 0.04)]),
                                variant=rng.random()))
    for _ in range(rng.integers(0, 4)):
        side = rng.integers(2)
        edge = left_x if side == 0 else right_x
        outer = side_x[side]
        things.append(Thing("pole", rng.uniform(1.5, 25.0), edge + 0.2 * (outer - edge), 0.12,
                            rng.uniform(3.0, 4.5), np.stack([_jitter(rng, (0.45, 0.46, 0.48), 0.08)]),
                            variant=rng.random()))

    # Instance ids follow sampling order, so removing objects never renumbers the others.
    instance_id = 0
    for thing in things:
        if thing.kind in ("car", "person"):
            instance_id += 1
            thing.instance_id = instance_id
    return Scene(
        horizon=horizon, vanishing_u=vanishing_u, road_slopes=road, sidewalk_slopes=sidewalk,
        terrain_slopes=terrain, facades=facades, skyline=skyline, colours=palette,
        lane_mark=lane_mark, things=things, gain=rng.uniform(0.7, 1.2),
        temperature=rng.uniform(-0.12, 0.12), side_shade=(rng.uniform(0.65, 1.0), rng.uniform(0.65, 1.0)),
        texture_offsets=rng.random((len(TEXTURE_NAMES), 2)), noise=noise_grids(rng))
