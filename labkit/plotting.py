"""Figures shared by the chapters: image grids, label maps, curves, matrices."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .checks import check_number, check_path
from .data import CLASS_NAMES, CLASSES, NUM_CLASSES, PALETTE, colorize


def to_numpy_image(image) -> np.ndarray:
    """(3, H, W) tensor in [0, 1] → (H, W, 3) array; (H, W) labels → colours.

    Accepted: a float tensor (C, H, W) with C in 1, 3, 4 (clamped to [0, 1],
    NaN refused), an integer tensor or array (H, W) of class ids (see
    :func:`labkit.data.colorize`), or an array (H, W, C) with C in 1, 3, 4,
    passed through."""
    return _to_numpy_image(image, "image")


def _to_numpy_image(image, name: str) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 2:
            return _colorize(image.numpy(), name)
        if image.dim() != 3 or image.shape[0] not in (1, 3, 4) or not image.is_floating_point():
            raise ValueError(f"{name} must be a float tensor (3, H, W) (or 1 or 4 channels) or an integer "
                             f"label map (H, W), got {image.dtype} tensor of shape {tuple(image.shape)}")
        if image.numel() and not bool(torch.isfinite(image).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
        return image.permute(1, 2, 0).clamp(0, 1).numpy()
    if isinstance(image, (str, bytes)) or image is None:
        raise ValueError(f"{name} must be an image tensor or array, got {image!r}")
    image = np.asarray(image)
    if image.ndim == 2:
        return _colorize(image, name)
    if image.ndim != 3 or image.shape[-1] not in (1, 3, 4) or not np.issubdtype(image.dtype, np.number):
        raise ValueError(f"{name} must be an array (H, W, 3) (or 1 or 4 channels) or an integer label map "
                         f"(H, W), got {image.dtype} array of shape {image.shape}")
    return image


def _colorize(label: np.ndarray, name: str) -> np.ndarray:
    try:
        return colorize(label)
    except ValueError as error:   # colorize names its argument "label"
        raise ValueError(f"{name}: {error}") from None


def features_to_rgb(features: torch.Tensor) -> np.ndarray:
    """(D, h, w) feature map → (h, w, 3) image: its first three principal components.

    A look inside a network: positions with similar feature vectors get
    similar colours. Each component is stretched to [0, 1] (its sign is
    arbitrary, so compare structure, not hue, across maps). features: finite, D ≥ 3, h·w ≥ 3.
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        raise ValueError(f"features must be a (D, h, w) tensor, got {getattr(features, 'shape', type(features))}")
    if not features.is_floating_point():
        raise ValueError(f"features must be a float tensor, got dtype {features.dtype}")
    if not bool(torch.isfinite(features.detach()).all()):
        raise ValueError("features contains NaN or infinite values")
    d, h, w = features.shape
    flat = features.detach().float().cpu().reshape(d, h * w).T      # (h·w, D)
    flat = flat - flat.mean(0, keepdim=True)
    if d < 3 or h * w < 3:
        raise ValueError(f"need at least 3 channels and 3 positions, got {tuple(features.shape)}")
    _, _, vectors = torch.linalg.svd(flat, full_matrices=False)
    components = flat @ vectors[:3].T                                  # (h·w, 3)
    low, high = components.min(0).values, components.max(0).values
    components = (components - low) / (high - low).clamp_min(1e-8)
    return components.reshape(h, w, 3).numpy()


def colorize_instances(instances) -> np.ndarray:
    """(H, W) instance ids (integers ≥ 0, 0 = none) → (H, W, 3) float image: a distinct colour
    per id, dark grey background."""
    instances = np.asarray(instances.cpu() if isinstance(instances, torch.Tensor) else instances)
    if not np.issubdtype(instances.dtype, np.integer):
        raise ValueError(f"instances must hold integer ids, got dtype {instances.dtype}")
    if instances.size and instances.min() < 0:
        raise ValueError(f"instances must hold ids ≥ 0 (0 = no instance), got minimum {instances.min()}")
    colours = plt.get_cmap("tab10")(np.arange(10))[:, :3]
    out = np.where((instances > 0)[..., None], colours[(instances - 1) % 10], 0.15)
    return out.astype(np.float32)


def show_grid(rows, titles=None, row_labels=None, scale: float = 2.2, figure_title: str | None = None):
    """Show a grid of images; ``rows`` is a list of lists of images or label maps.

    Each entry is anything :func:`to_numpy_image` takes, or None for an empty
    cell. rows: a non-empty list of non-empty rows; titles: at most one per
    column; row_labels: one per row; scale: a number > 0."""
    if isinstance(rows, (str, bytes)) or not hasattr(rows, "__len__") or len(rows) == 0:
        raise ValueError(f"rows must be a non-empty list of rows (lists of images), got {type(rows).__name__}")
    for r, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not hasattr(row, "__len__") or len(row) == 0 or \
                (isinstance(row, (torch.Tensor, np.ndarray)) and row.ndim < 3):
            raise ValueError(f"rows[{r}] must be a non-empty list of images, got "
                             f"{getattr(row, 'shape', None) or type(row).__name__}")
    if row_labels is not None and (isinstance(row_labels, str) or len(row_labels) != len(rows)):
        raise ValueError(f"row_labels must give one label per row ({len(rows)}), got {row_labels!r}")
    check_number(scale, "scale", minimum=0.0, strict_minimum=True)
    images = [[None if image is None else _to_numpy_image(image, f"rows[{r}][{c}]") for c, image in enumerate(row)]
              for r, row in enumerate(rows)]
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(scale * 2 * n_cols, scale * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(row) and images[r][c] is not None:
                ax.imshow(images[r][c], interpolation="nearest")
            if titles is not None and r == 0 and c < len(titles):
                ax.set_title(titles[c], fontsize=9)
        if row_labels is not None:
            axes[r, 0].text(-0.03, 0.5, row_labels[r], transform=axes[r, 0].transAxes, ha="right",
                            va="center", fontsize=9)
    if figure_title:
        fig.suptitle(figure_title)
    fig.tight_layout()
    return fig


def plot_history(history: list[dict], keys=("loss",), ax=None, title: str | None = None, log: bool = False):
    """Training curves from a :class:`labkit.train.FitResult` history.

    history: a list of dicts, each with ``"step"`` and every name in ``keys``
    (one name or a sequence of names)."""
    keys = (keys,) if isinstance(keys, str) else tuple(keys)
    if not keys:
        raise ValueError("keys must name at least one logged value, got an empty sequence")
    if isinstance(history, (str, bytes, dict)) or not hasattr(history, "__iter__"):
        raise ValueError(f"history must be a list of dicts (FitResult.history), got {type(history).__name__}")
    history = list(history)
    for i, entry in enumerate(history):
        missing = [k for k in ("step", *keys) if not isinstance(entry, dict) or k not in entry]
        if missing:
            has = sorted(entry) if isinstance(entry, dict) else type(entry).__name__
            raise ValueError(f"history[{i}] lacks {missing} (keys asked for: {list(keys)}); it has {has}")
    ax = ax or plt.subplots(figsize=(6, 3))[1]
    steps = [h["step"] for h in history]
    for key in keys:
        ax.plot(steps, [h[key] for h in history], label=key)
    ax.set_xlabel("step")
    if log:
        ax.set_yscale("log")
    if len(keys) > 1:
        ax.legend()
    if title:
        ax.set_title(title)
    return ax


def plot_confusion(confusion, ax=None, title: str = "confusion (rows: truth, normalised)"):
    """Row-normalised confusion matrix with class names.

    confusion: a square (C, C) matrix of finite, non-negative counts, C ≤ NUM_CLASSES."""
    if isinstance(confusion, torch.Tensor):
        confusion = confusion.detach().cpu().numpy()
    confusion = np.asarray(confusion, dtype=float)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1] or not 1 <= len(confusion) <= NUM_CLASSES:
        raise ValueError(f"confusion must be a square (C, C) matrix with 1 ≤ C ≤ {NUM_CLASSES}, got shape "
                         f"{confusion.shape}")
    if not np.isfinite(confusion).all() or confusion.min() < 0:
        raise ValueError("confusion must hold finite, non-negative counts")
    normalised = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    ax = ax or plt.subplots(figsize=(5.5, 5))[1]
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    names = CLASS_NAMES[:len(confusion)]
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    for i in range(len(names)):
        for j in range(len(names)):
            if normalised[i, j] >= 0.005:
                ax.text(j, i, f"{normalised[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if normalised[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_title(title, fontsize=10)
    return ax


def draw_boxes(ax, objects, color="yellow", label_key: str = "order"):
    """Outline StreetScenes objects on an image axis, tagged with ``label_key``.

    objects: dicts with ``"box"`` (x0, y0, x1, y1) and ``label_key``, as ``StreetScenes`` samples hold."""
    from matplotlib.patches import Rectangle

    objects = list(objects) if not isinstance(objects, dict) else [objects]
    for i, obj in enumerate(objects):
        box = obj.get("box") if isinstance(obj, dict) else None
        if box is None or label_key not in obj or len(box) != 4:
            raise ValueError(f"objects[{i}] must be a dict with 'box' (x0, y0, x1, y1) and {label_key!r}, got {obj!r}")
    for obj in objects:
        x0, y0, x1, y1 = obj["box"]
        ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color=color, lw=1))
        ax.text(x0, y0 - 1, str(obj[label_key]), color=color, fontsize=7, va="bottom")


def class_table_html() -> str:
    """The class table as HTML, with colour swatches."""
    rows = "".join(
        f"<tr><td>{c.index}</td><td>{c.name}</td><td>{c.cityscapes_train_id}</td><td>{c.cityscapes_label_id}</td>"
        f"<td>{c.color}</td><td style='background: rgb{c.color}; width: 3em'></td>"
        f"<td>{'yes' if c.is_instance else ''}</td></tr>" for c in CLASSES)
    return ("<table><tr><th>index</th><th>name</th><th>Cityscapes trainId</th><th>Cityscapes labelId</th>"
            f"<th>colour</th><th></th><th>instances</th></tr>{rows}</table>")


__all__ = ["to_numpy_image", "features_to_rgb", "colorize_instances", "show_grid", "plot_history", "plot_confusion", "draw_boxes",
           "class_table_html", "save_figure", "write_png", "PALETTE"]


def save_figure(fig, name: str, profile: str, chapter: str):
    """Save ``fig`` as PNG under the run's folder (``reports/<profile>/<chapter>/figures/``,
    or the ``labkit reproduce`` run folder), atomically; returns the path.
    name: a file name without folders or suffix."""
    from .train import reports_dir

    _check_figure(fig)
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"name must be a file name without folders (e.g. 'samples'), got {name!r}")

    return write_png(fig, reports_dir(profile, chapter) / "figures" / f"{name}.png", dpi=100)


def write_png(fig, path, dpi=None, close: bool = False):
    """Write ``fig`` as a PNG (tight bounding box) to ``path`` atomically; returns the path.
    ``dpi`` None keeps the figure's own (else a number > 0); ``close`` closes the figure afterwards."""
    import io

    from .checkpoints import atomic_write_bytes

    _check_figure(fig)
    path = check_path(path, "path")
    check_number(dpi, "dpi", minimum=0.0, strict_minimum=True, allow_none=True)

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", **({"dpi": dpi} if dpi is not None else {}))
    if close:
        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())


def _check_figure(fig) -> None:
    if not callable(getattr(fig, "savefig", None)):
        raise ValueError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
