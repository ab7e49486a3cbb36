"""Photo textures and procedural noise for StreetScenes.

The photos are the ones scikit-image ships inside its wheel (no download):
``brick`` for facades, ``grass`` for terrain and foliage, ``gravel`` for
asphalt and paving. Each is turned into a zero-mean *detail map* (unit
standard deviation) that modulates a base colour:

    pixel = colour · (1 + contrast · detail)

Textures are designed for a 256-row canvas and rescaled (anti-aliased) to the
requested height, so a scene looks the same at every resolution. Each is
mirrored side by side so that a random crop of width ``2·H`` always fits.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..checks import check_int, check_non_empty, check_positive_int
from .validation import check_rng

TEXTURE_NAMES = ("flat", "brick", "grass", "gravel", "foliage", "fabric")
"""Index into the texture stack. ``flat`` is all zeros (no detail);
``foliage`` is the grass photo at a coarser scale; ``fabric`` is fine noise."""

_BASE_HEIGHT = 256


@lru_cache(maxsize=None)
def _photo_detail(name: str) -> np.ndarray:
    """(512, 512) float32 zero-mean, unit-std detail map of a bundled photo."""
    import skimage.data

    photo = getattr(skimage.data, name)().astype(np.float32) / 255.0
    if photo.ndim == 3:
        photo = photo.mean(axis=2)
    photo = photo - photo.mean()
    return photo / (photo.std() + 1e-6)


def _rescale(image: np.ndarray, factor: float) -> np.ndarray:
    from skimage.transform import rescale

    if abs(factor - 1.0) < 1e-6:
        return image.astype(np.float32)
    out = rescale(image, factor, anti_aliasing=factor < 1, order=1, preserve_range=True)
    out = out - out.mean()
    return (out / (out.std() + 1e-6)).astype(np.float32)


def texture_stack(height: int) -> np.ndarray:
    """(len(TEXTURE_NAMES), 2·T, 4·T) float32 mirrored detail mosaics for a
    canvas ``height`` rows tall (a positive integer), where ``T`` is the
    texture tile size there.

    A crop of (height, 2·height) at any offset in ``[0, T) × [0, 2·T)`` fits.
    """
    return _texture_stack(check_positive_int(height, "height"))


@lru_cache(maxsize=16)
def _texture_stack(height: int) -> np.ndarray:
    scale = height / _BASE_HEIGHT
    tiles = {
        "brick": _rescale(_photo_detail("brick"), 0.3 * scale),
        "grass": _rescale(_photo_detail("grass"), 0.5 * scale),
        "gravel": _rescale(_photo_detail("gravel"), 0.5 * scale),
        "foliage": _rescale(_photo_detail("grass"), 1.0 * scale),
    }
    size = max(height, 8)
    mosaics = []
    for name in TEXTURE_NAMES:
        if name == "flat":
            tile = np.zeros((size, size), np.float32)
        elif name == "fabric":
            rng = np.random.default_rng(1234)
            tile = rng.standard_normal((size, size)).astype(np.float32)
        else:
            tile = _fit_tile(tiles[name], size)
        mirrored = np.concatenate([tile, tile[:, ::-1]], axis=1)
        mirrored = np.concatenate([mirrored, mirrored[::-1]], axis=0)
        mosaics.append(np.concatenate([mirrored, mirrored], axis=1))
    return np.stack(mosaics)


def _fit_tile(tile: np.ndarray, size: int) -> np.ndarray:
    """Crop (or mirror-pad) a tile to (size, size)."""
    while tile.shape[0] < size or tile.shape[1] < size:
        tile = np.concatenate([tile, tile[::-1]], axis=0)
        tile = np.concatenate([tile, tile[:, ::-1]], axis=1)
    return np.ascontiguousarray(tile[:size, :size])


def texture_crops(offsets: np.ndarray, height: int, width: int) -> np.ndarray:
    """(len(TEXTURE_NAMES), height, width) detail maps.

    offsets: (len(TEXTURE_NAMES), 2) fractions in [0, 1) of where each crop
    starts, so the same scene picks the same part of each photo at any size.
    height: a positive integer; width: an integer in [1, 2·height].
    """
    height = check_positive_int(height, "height")
    width = check_int(width, "width", minimum=1, maximum=2 * height)
    offsets = np.asarray(offsets)
    if offsets.shape != (len(TEXTURE_NAMES), 2) or not np.issubdtype(offsets.dtype, np.number):
        raise ValueError(f"offsets must be a ({len(TEXTURE_NAMES)}, 2) array of fractions in [0, 1), "
                         f"got {offsets.dtype} array of shape {offsets.shape}")
    if not np.isfinite(offsets).all():
        raise ValueError("offsets contains NaN or infinite values")
    if offsets.min() < 0 or offsets.max() >= 1:
        raise ValueError(f"offsets must be fractions in [0, 1), got range [{offsets.min():.3g}, {offsets.max():.3g}]")
    stack = _texture_stack(height)
    tile = stack.shape[1] // 2
    crops = np.empty((stack.shape[0], height, width), np.float32)
    for k in range(stack.shape[0]):
        y0 = int(offsets[k, 0] * tile)
        x0 = int(offsets[k, 1] * (stack.shape[2] - width + 1))
        crops[k] = stack[k, y0:y0 + height, x0:x0 + width]
    return crops


@lru_cache(maxsize=64)
def _interpolation_matrix(size_out: int, size_in: int) -> np.ndarray:
    """(size_out, size_in) bilinear resampling matrix (align-corners)."""
    positions = np.linspace(0, size_in - 1, size_out)
    lower = np.clip(np.floor(positions).astype(int), 0, size_in - 2)
    frac = positions - lower
    matrix = np.zeros((size_out, size_in), np.float32)
    matrix[np.arange(size_out), lower] = 1 - frac
    matrix[np.arange(size_out), lower + 1] = frac
    return matrix


NOISE_OCTAVES = (3, 6, 12)


def noise_grids(rng: np.random.Generator, octaves: tuple[int, ...] = NOISE_OCTAVES) -> list[np.ndarray]:
    """Random control grids for :func:`smooth_noise`, (rows+1, 2·rows+1) each.

    rng: a ``numpy.random.Generator``; octaves: positive integers (rows per grid)."""
    check_rng(rng)
    octaves = check_non_empty(octaves, "octaves")
    for rows in octaves:
        check_positive_int(rows, "octaves entries")
    return [rng.uniform(-1, 1, (rows + 1, 2 * rows + 1)).astype(np.float32) for rows in octaves]


def smooth_noise(grids: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """(height, width) float32 fractal value noise in roughly [-1, 1].

    Each control grid is upsampled bilinearly to the canvas, so the noise has
    the same shape at every resolution; each finer octave gets half the
    amplitude of the previous one.

    grids: a non-empty list of finite 2-d arrays, each at least 2×2 (see
    :func:`noise_grids`); height and width: positive integers.
    """
    grids = check_non_empty(grids, "grids")
    height, width = check_positive_int(height, "height"), check_positive_int(width, "width")
    for k, grid in enumerate(grids):
        if not isinstance(grid, np.ndarray) or grid.ndim != 2 or min(grid.shape) < 2:
            raise ValueError(f"grids[{k}] must be a 2-d array of at least 2×2 control values, got "
                             f"{getattr(grid, 'shape', type(grid).__name__)}")
        if not np.isfinite(grid).all():
            raise ValueError(f"grids[{k}] contains NaN or infinite values")
    total = np.zeros((height, width), np.float32)
    amplitude = 1.0
    for grid in grids:
        total += amplitude * (_interpolation_matrix(height, grid.shape[0]) @ grid
                              @ _interpolation_matrix(width, grid.shape[1]).T)
        amplitude *= 0.5
    return total / 1.75
