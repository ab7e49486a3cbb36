"""Figures shared by the chapters: image grids, label maps, curves, matrices."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch

from .data import CLASS_NAMES, CLASSES, PALETTE, colorize


def to_numpy_image(image) -> np.ndarray:
    """(3, H, W) tensor in [0, 1] → (H, W, 3) array; (H, W) labels → colours."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu()
        if image.dim() == 2:
            return colorize(image.numpy())
        return image.permute(1, 2, 0).clamp(0, 1).numpy()
    image = np.asarray(image)
    return colorize(image) if image.ndim == 2 else image


def features_to_rgb(features: torch.Tensor) -> np.ndarray:
    """(D, h, w) feature map → (h, w, 3) image: its first three principal components.

    A look inside a network: positions with similar feature vectors get
    similar colours. Each component is stretched to [0, 1] (its sign is
    arbitrary, so compare structure, not hue, across maps).
    """
    if not isinstance(features, torch.Tensor) or features.dim() != 3:
        raise ValueError(f"features must be a (D, h, w) tensor, got {getattr(features, 'shape', type(features))}")
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
    """(H, W) instance ids → (H, W, 3) float image: a distinct colour per id, dark grey background."""
    instances = np.asarray(instances.cpu() if isinstance(instances, torch.Tensor) else instances)
    colours = plt.get_cmap("tab10")(np.arange(10))[:, :3]
    out = np.where((instances > 0)[..., None], colours[(instances - 1) % 10], 0.15)
    return out.astype(np.float32)


def show_grid(rows, titles=None, row_labels=None, scale: float = 2.2, figure_title: str | None = None):
    """Show a grid of images; ``rows`` is a list of lists of images or label maps."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(scale * 2 * n_cols, scale * n_rows), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r, c]
            ax.axis("off")
            if c < len(row) and row[c] is not None:
                ax.imshow(to_numpy_image(row[c]), interpolation="nearest")
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
    """Training curves from a :class:`labkit.train.FitResult` history."""
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
    """Row-normalised confusion matrix with class names."""
    confusion = np.asarray(confusion, dtype=float)
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
    """Outline StreetScenes objects on an image axis, tagged with ``label_key``."""
    from matplotlib.patches import Rectangle

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
    or the ``labkit reproduce`` run folder), atomically; returns the path."""
    from .train import reports_dir

    return write_png(fig, reports_dir(profile, chapter) / "figures" / f"{name}.png", dpi=100)


def write_png(fig, path, dpi=None, close: bool = False):
    """Write ``fig`` as a PNG (tight bounding box) to ``path`` atomically; returns the path.
    ``dpi`` None keeps the figure's own; ``close`` closes the figure afterwards."""
    import io

    from .checkpoints import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", **({"dpi": dpi} if dpi is not None else {}))
    if close:
        plt.close(fig)
    return atomic_write_bytes(path, buffer.getvalue())
