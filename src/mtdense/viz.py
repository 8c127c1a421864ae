"""Pictures of predictions and of analyses.

Panels (image | segmentation overlay | depth colour map with a scale bar in metres | surface
normals, for a model that predicts them) are drawn
with OpenCV and NumPy, fast enough for every frame of a video: the overlay colours the labels
through a 256-entry table (:func:`palette_table`). Their colours are a dataset's palette
(:attr:`mtdense.data.description.DatasetInfo.palette`), the Cityscapes one by default. Analysis
plots use matplotlib's object API (``Figure``, no global pyplot state) and are written to files;
class names come from the caller (a model's :class:`~mtdense.data.description.DatasetInfo`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import matplotlib
import numpy as np

from mtdense.data.labels import IGNORE_INDEX, TRAIN_CLASS_NAMES, TRAIN_PALETTE
from mtdense.io import atomic_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_DEPTH_RANGE", "palette_table", "overlay_segmentation", "colorize_depth", "colorize_normals", "depth_scale_bar",
    "make_panel", "put_label",
    "plot_depth_histograms", "plot_class_iou", "plot_confusion_matrix", "plot_error_vs_distance", "plot_normals_error",
    "plot_normals_examples",
]

DEFAULT_DEPTH_RANGE = (1.0, 100.0)  # metres; street scenes: 1 m (bonnet) .. 100 m (far buildings)
_TICKS_M = (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 300, 500)


def _check_image(image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an H x W x 3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")


def palette_table(palette: np.ndarray | Sequence[Sequence[int]] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The lookup tables that colour a label image: one entry per uint8 value.

    Args:
        palette: ``K x 3`` uint8 RGB, the colour of class ``k`` in row ``k`` (``K`` <= 255);
            ``None``: the 19 Cityscapes train-id colours.

    Returns:
        ``(colours, coloured)``: ``1 x 256 x 3`` uint8 RGB for :func:`cv2.LUT` (black past ``K``)
        and a ``256`` uint8 mask, 255 for the class values ``0..K-1`` and 0 for the rest (the
        ignore label 255 and any value that is no class), which are left uncoloured.
    """
    colours = TRAIN_PALETTE if palette is None else np.asarray(palette)
    if colours.ndim != 2 or colours.shape[1] != 3 or not 1 <= len(colours) <= IGNORE_INDEX:
        raise ValueError(f"palette must be K x 3 RGB with 1 <= K <= {IGNORE_INDEX}, got shape {colours.shape}")
    if colours.dtype != np.uint8:
        if colours.dtype.kind not in "iu" or colours.min() < 0 or colours.max() > 255:
            raise ValueError(f"palette colours must be integers 0..255, got dtype {colours.dtype}")
        colours = colours.astype(np.uint8)
    table = np.zeros((1, 256, 3), np.uint8)
    table[0, : len(colours)] = colours
    coloured = np.zeros(256, np.uint8)
    coloured[: len(colours)] = 255
    return table, coloured


def _as_labels(seg: np.ndarray) -> np.ndarray:
    """``seg`` as uint8 for the tables; integer values outside 0..255 become 255 (uncoloured)."""
    seg = np.asarray(seg)
    if seg.dtype == np.uint8:
        return seg
    if seg.dtype.kind not in "iu":
        raise ValueError(f"segmentation must hold integer class indices, got dtype {seg.dtype}")
    return np.where((seg >= 0) & (seg <= 255), seg, 255).astype(np.uint8)


def overlay_segmentation(image: np.ndarray, seg: np.ndarray, alpha: float = 0.5,
                         palette: np.ndarray | Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """Blend the palette colours of ``seg`` over ``image``.

    Class ``k`` becomes ``(1 - alpha) * image + alpha * palette[k]`` (rounded); the ignore label
    (255) and any value that is no class (``>= K``) are left as the image.

    Args:
        image: H x W x 3 uint8 RGB.
        seg: H x W class indices ``0..K-1`` (255 = ignore).
        alpha: Weight of the label colours, 0..1.
        palette: ``K x 3`` uint8 RGB class colours (:attr:`DatasetInfo.palette
            <mtdense.data.description.DatasetInfo.palette>`); ``None``: Cityscapes.

    Returns:
        H x W x 3 uint8 RGB.
    """
    _check_image(image)
    if seg.shape != image.shape[:2]:
        raise ValueError(f"segmentation {seg.shape} and image {image.shape[:2]} differ in size")
    out = np.empty_like(image)
    _overlay_into(out, image, _as_labels(seg), alpha, *palette_table(palette))
    return out


def _overlay_into(out: np.ndarray, image: np.ndarray, labels: np.ndarray, alpha: float, table: np.ndarray,
                  coloured: np.ndarray) -> None:
    """:func:`overlay_segmentation` of uint8 ``labels`` written into ``out`` (a panel's tile) with
    the tables of :func:`palette_table` (their channels in ``image``'s order)."""
    colours = cv2.LUT(cv2.merge([labels, labels, labels]), table)
    cv2.addWeighted(image, 1.0 - alpha, colours, alpha, 0.0, dst=out)
    keep = cv2.LUT(labels, coloured) == 0  # ignore and values past K: the image shows through
    if keep.any():
        out[keep] = image[keep]


@functools.lru_cache(maxsize=16)
def _lut(cmap: str) -> np.ndarray:
    """``cmap`` sampled at 256 points as uint8 RGB (cached; read-only)."""
    lut = (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).round().astype(np.uint8)
    lut.flags.writeable = False
    return lut


def _check_depth_range(depth_range: tuple[float, float]) -> tuple[float, float]:
    """``(near, far)`` in metres, refused unless ``0 < near < far``."""
    lo, hi = depth_range
    if not 0 < lo < hi:
        raise ValueError(f"depth_range must satisfy 0 < near < far (metres), got {depth_range}")
    return float(lo), float(hi)


def _depth_to_unit(depth: np.ndarray, depth_range: tuple[float, float]) -> np.ndarray:
    lo, hi = _check_depth_range(depth_range)
    d = np.clip(np.asarray(depth, dtype=np.float32), lo, hi)
    return (np.log(d) - np.log(lo)) / (np.log(hi) - np.log(lo))  # log scale: near detail stays visible


def colorize_depth(
    depth: np.ndarray, depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE, cmap: str = "turbo_r"
) -> np.ndarray:
    """Colour-code depth on a log scale; invalid pixels (0 or non-finite) are black.

    Args:
        depth: H x W depth in metres.
        depth_range: ``(near, far)`` in metres mapped to the ends of ``cmap``; values outside clip.
        cmap: A matplotlib colour map name (``turbo_r``: near = red, far = blue).

    Returns:
        H x W x 3 uint8 RGB.
    """
    depth_range = _check_depth_range(depth_range)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth must be H x W, got shape {depth.shape}")
    out = np.empty((*depth.shape, 3), np.uint8)
    _depth_into(out, depth, depth_range, _lut(cmap))
    return out


def _depth_into(out: np.ndarray, depth: np.ndarray, depth_range: tuple[float, float], lut: np.ndarray) -> None:
    """:func:`colorize_depth` of H x W float32 ``depth`` written into ``out`` (a panel's tile)
    through the 256 x 3 colour table ``lut`` (its channels in ``out``'s order)."""
    if depth.size < 16:  # OpenCV's arithmetic reads an array this small as a scalar: colour a row holding it
        row = np.ones((1, 16), np.float32)
        row[0, : depth.size] = depth.ravel()
        tile = np.empty((1, 16, 3), np.uint8)
        _depth_into(tile, row, depth_range, lut)
        out[...] = tile[0, : depth.size].reshape(out.shape)
        return
    lo, hi = depth_range
    # OpenCV, one pass per step (a panel per video frame): 4-5x faster than the NumPy expression
    # round((log(clip(d)) - log(near)) / (log(far) - log(near)) * 255), which it equals up to
    # the last bit of the logarithm (an index differs by at most one where it rounds).
    valid = (depth > 0) & (depth < np.inf)  # NaN: False
    logd = cv2.log(cv2.min(cv2.max(depth, float(lo)), float(hi)))
    scale = 255.0 / (np.log(hi) - np.log(lo))
    idx = cv2.convertScaleAbs(logd, alpha=scale, beta=-scale * float(np.log(lo)))  # rounds and saturates
    cv2.LUT(cv2.merge([idx, idx, idx]), lut.reshape(256, 1, 3), dst=out)
    if not valid.all():
        out[~valid] = 0  # invalid pixels black


def colorize_normals(normals: np.ndarray) -> np.ndarray:
    """Colour-code unit normals (camera coordinates: x right, y down, z forward) as
    ``round((n + 1) * 127.5)`` RGB, the normals PNG encoding: a wall facing the camera
    (0, 0, -1) is olive (128, 128, 0), the ground (0, -1, 0) purple (128, 0, 128), a wall on the
    right facing left (-1, 0, 0) teal (0, 128, 128); pixels without a normal (all zero or
    non-finite) are black.

    Args:
        normals: H x W x 3 vectors.

    Returns:
        H x W x 3 uint8 RGB.
    """
    from mtdense.data.normals import encode_normals

    return encode_normals(normals)


def depth_scale_bar(
    height: int, depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE, cmap: str = "turbo_r", width: int = 80
) -> np.ndarray:
    """A vertical colour bar for :func:`colorize_depth`, labelled in metres (near at the top).

    Returns:
        ``height x width x 3`` uint8 RGB.
    """
    bar = np.full((height, width, 3), 255, np.uint8)
    strip_w = max(8, width // 4)
    margin = 8
    rows = np.arange(margin, height - margin)
    t = (rows - margin) / max(1, height - 2 * margin - 1)
    bar[rows, 2 : 2 + strip_w] = _lut(cmap)[(t * 255).round().astype(int)][:, None, :]
    lo, hi = depth_range
    scale = max(0.35, min(0.6, height / 900))
    for tick in _TICKS_M:
        if lo <= tick <= hi:
            y = int(round(margin + _depth_to_unit(np.array(tick), depth_range) * (height - 2 * margin - 1)))
            cv2.line(bar, (2 + strip_w, y), (6 + strip_w, y), (0, 0, 0), 1)
            cv2.putText(bar, f"{tick} m", (8 + strip_w, y + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def put_label(image: np.ndarray, text: str, origin: tuple[int, int] = (8, 8)) -> np.ndarray:
    """Write ``text`` in white on a dark box at ``origin`` (top-left, pixels), in place; returns ``image``."""
    scale = max(0.4, min(1.2, image.shape[0] / 600))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = origin
    cv2.rectangle(image, (x, y), (x + w + 8, y + h + base + 8), (0, 0, 0), -1)
    cv2.putText(image, text, (x + 4, y + h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return image


def make_panel(
    image: np.ndarray,
    seg: np.ndarray,
    depth: np.ndarray,
    depth_range: tuple[float, float] = DEFAULT_DEPTH_RANGE,
    alpha: float = 0.5,
    cmap: str = "turbo_r",
    title: str | None = None,
    palette: np.ndarray | Sequence[Sequence[int]] | None = None,
    normals: np.ndarray | None = None,
    bgr: bool = False,
) -> np.ndarray:
    """Side-by-side panel: image | segmentation overlay | depth colour map + scale bar (| normals).

    Args:
        image: H x W x 3 uint8 RGB.
        seg: H x W class indices (255 = ignore).
        depth: H x W metres.
        depth_range: Colour map range in metres.
        alpha: Overlay weight of the label colours.
        cmap: Depth colour map.
        title: Optional text written on the image tile (e.g. the measured FPS).
        palette: ``K x 3`` uint8 RGB class colours, as :func:`overlay_segmentation`; ``None``: Cityscapes.
        normals: H x W x 3 unit normals, drawn by :func:`colorize_normals` after the scale bar;
            ``None``: no normals tile.
        bgr: Return the panel in OpenCV's BGR order (what a video or PNG writer takes), drawn
            so from the start: equal to ``cv2.cvtColor(make_panel(...), cv2.COLOR_RGB2BGR)``.

    Returns:
        ``H x (3 W + bar) x 3`` uint8 RGB, or BGR with ``bgr`` (``4 W + bar`` with normals).
    """
    _check_image(image)
    if depth.shape != image.shape[:2]:
        raise ValueError(f"depth {depth.shape} and image {image.shape[:2]} differ in size")
    if normals is not None and normals.shape != (*image.shape[:2], 3):
        raise ValueError(f"normals {normals.shape} must be H x W x 3 of the image's size {image.shape[:2]}")
    labels = _as_labels(seg)
    if labels.shape != image.shape[:2]:
        raise ValueError(f"segmentation {seg.shape} and image {image.shape[:2]} differ in size")
    depth_range = _check_depth_range(depth_range)
    table, coloured = palette_table(palette)
    lut = _lut(cmap)
    bar = _scale_bar(image.shape[0], depth_range, cmap)
    if bgr:  # the tables swap their channels, not the finished panel (one pass less over it)
        table, lut, bar = table[..., ::-1].copy(), lut[:, ::-1].copy(), bar[..., ::-1]
    h, w = image.shape[:2]
    panel = np.empty((h, (3 + (normals is not None)) * w + bar.shape[1], 3), np.uint8)
    tile = panel[:, :w]
    if bgr:
        cv2.cvtColor(image, cv2.COLOR_RGB2BGR, dst=tile)
    else:
        tile[...] = image
    _overlay_into(panel[:, w : 2 * w], tile, labels, alpha, table, coloured)  # before the title is drawn
    if title:
        put_label(tile, title)
    _depth_into(panel[:, 2 * w : 3 * w], np.asarray(depth, dtype=np.float32), depth_range, lut)
    panel[:, 3 * w : 3 * w + bar.shape[1]] = bar
    if normals is not None:
        tile = panel[:, 3 * w + bar.shape[1] :]
        tile[...] = colorize_normals(normals)
        if bgr:
            cv2.cvtColor(tile, cv2.COLOR_RGB2BGR, dst=tile)
    return panel


@functools.lru_cache(maxsize=8)
def _scale_bar(height: int, depth_range: tuple[float, float], cmap: str) -> np.ndarray:
    """The panel's :func:`depth_scale_bar` (cached: every frame of a video draws the same; read-only)."""
    bar = depth_scale_bar(height, depth_range, cmap, width=max(60, min(120, height // 6)))
    bar.flags.writeable = False
    return bar


# -- analysis plots ---------------------------------------------------------------------------
def _figure(**kwargs) -> Figure:
    """A matplotlib ``Figure``; imported here, by the plots, so that drawing panels (predict, serve)
    never loads matplotlib's figure machinery (0.27 s of every start)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


def plot_depth_histograms(edges: np.ndarray, gt_counts: np.ndarray, pred_counts: np.ndarray, path: str | Path) -> Path:
    """Histograms of ground-truth and predicted depth over the same pixels, overlaid.

    Args:
        edges: B + 1 bin edges in metres (the recipe uses 1000 bins).
        gt_counts, pred_counts: B pixel counts per bin.
        path: Output image file.
    """
    edges = np.asarray(edges, dtype=np.float64)
    fig = _figure(figsize=(9, 4))
    ax = fig.add_subplot()
    for counts, label, colour in ((gt_counts, "ground truth", "tab:blue"), (pred_counts, "predicted", "tab:orange")):
        c = np.asarray(counts, dtype=np.float64)
        if c.shape != (len(edges) - 1,):
            raise ValueError(f"{label}: {c.shape[0]} counts for {len(edges) - 1} bins")
        ax.stairs(c / max(1.0, c.sum()), edges, label=f"{label} ({int(c.sum()):,} px)", color=colour, fill=True, alpha=0.45)
    ax.set_xlabel("depth [m]")
    ax.set_ylabel("fraction of pixels")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_title(f"Depth distribution over pixels with valid ground truth ({len(edges) - 1} bins)")
    ax.legend()
    return _save(fig, path)


def plot_class_iou(iou: Sequence[float], path: str | Path, names: Sequence[str] = TRAIN_CLASS_NAMES) -> Path:
    """Horizontal bars of per-class IoU (0..1; NaN = class absent from the split), with the mean."""
    iou = np.asarray(iou, dtype=np.float64)
    if len(iou) != len(names):
        raise ValueError(f"{len(iou)} IoU values for {len(names)} class names")
    fig = _figure(figsize=(7, 0.3 * len(names) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.barh(y, np.nan_to_num(iou), color="tab:green")
    for yi, v in zip(y, iou):
        ax.text(min(np.nan_to_num(v), 0.9) + 0.01, yi, "n/a" if np.isnan(v) else f"{100 * v:.1f}", va="center", fontsize=8)
    ax.set_yticks(y, list(names))
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("IoU")
    ax.set_title(f"Per-class IoU (mIoU {100 * np.nanmean(iou) if np.isfinite(iou).any() else float('nan'):.1f}%)")
    return _save(fig, path)


def plot_confusion_matrix(confusion: np.ndarray, path: str | Path, names: Sequence[str] = TRAIN_CLASS_NAMES) -> Path:
    """Row-normalised confusion matrix (rows: ground truth, columns: prediction).

    Args:
        confusion: C x C pixel counts, ``confusion[gt, pred]``.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    if cm.shape != (len(names), len(names)):
        raise ValueError(f"confusion matrix of shape {cm.shape} for {len(names)} classes")
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig = _figure(figsize=(9, 8))
    ax = fig.add_subplot()
    im = ax.imshow(norm, vmin=0, vmax=1, cmap="Blues")
    ax.set_xticks(range(len(names)), list(names), rotation=90, fontsize=8)
    ax.set_yticks(range(len(names)), list(names), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("Confusion matrix (each row sums to 1)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_error_vs_distance(
    bin_edges: Sequence[float], abs_rel: Sequence[float], counts: Sequence[int], path: str | Path
) -> Path:
    """AbsRel per ground-truth depth bin, with the share of pixels per bin.

    Args:
        bin_edges: B + 1 bin edges in metres.
        abs_rel: B values of mean ``|pred - gt| / gt`` (NaN for empty bins).
        counts: B valid-pixel counts.
    """
    edges = np.asarray(bin_edges, dtype=np.float64)
    err = np.asarray(abs_rel, dtype=np.float64)
    n = np.asarray(counts, dtype=np.float64)
    centres = 0.5 * (edges[:-1] + edges[1:])
    fig = _figure(figsize=(8, 4))
    ax = fig.add_subplot()
    ax.plot(centres, err, "o-", color="tab:red", label="AbsRel")
    ax.set_xlabel("ground-truth depth [m]")
    ax.set_ylabel("AbsRel")
    ax.set_xscale("log")
    ax.set_xlim(max(0.5, edges[0]), edges[-1])  # the first bin starts at 0, which a log axis cannot show
    ax.grid(True, which="both", alpha=0.3)
    ax2 = ax.twinx()
    ax2.bar(centres, n / max(1.0, n.sum()), width=np.diff(edges) * 0.9, alpha=0.25, color="tab:gray", label="pixels")
    ax2.set_ylabel("fraction of valid pixels")
    ax.set_title("Depth error against distance")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    return _save(fig, path)


def plot_normals_error(edges: np.ndarray, counts: np.ndarray, path: str | Path, mean: float | None = None,
                       median: float | None = None) -> Path:
    """Histogram of the normals' angular error in degrees, with the 11.25 / 22.5 / 30 degree marks.

    Args:
        edges: B + 1 bin edges in degrees (0..180).
        counts: B pixel counts per bin.
        path: Output image file.
        mean, median: Drawn as vertical lines where given (degrees).
    """
    edges = np.asarray(edges, dtype=np.float64)
    c = np.asarray(counts, dtype=np.float64)
    if c.shape != (len(edges) - 1,):
        raise ValueError(f"{c.shape[0]} counts for {len(edges) - 1} bins")
    fig = _figure(figsize=(8, 4))
    ax = fig.add_subplot()
    ax.stairs(c / max(1.0, c.sum()), edges, color="tab:purple", fill=True, alpha=0.5, label=f"{int(c.sum()):,} px")
    for limit in (11.25, 22.5, 30.0):
        ax.axvline(limit, color="grey", linestyle=":", linewidth=1)
    for value, label, style in ((mean, "mean", "-"), (median, "median", "--")):
        if value is not None and np.isfinite(value):
            ax.axvline(value, color="black", linestyle=style, linewidth=1, label=f"{label} {value:.2f} deg")
    ax.set_xlabel("angular error [degrees]")
    ax.set_ylabel("fraction of pixels")
    ax.set_xlim(edges[0], edges[-1])
    ax.set_title("Surface normals: angular error over pixels with a ground-truth normal")
    ax.legend()
    return _save(fig, path)


def plot_normals_examples(examples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], path: str | Path) -> Path:
    """Rows of image | predicted normals | ground-truth normals | angular error (0..45 degrees).

    Args:
        examples: ``(image H x W x 3 uint8, predicted H x W x 3, ground truth H x W x 3)`` per row;
            ground truth all zero = no normal (black in the pictures).
        path: Output image file.
    """
    if not examples:
        raise ValueError("plot_normals_examples: no examples to draw")
    fig = _figure(figsize=(12, 2.6 * len(examples) + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(examples), 4))
    for row, (image, pred, gt) in zip(axes, examples):
        valid = np.abs(gt).sum(-1) > 0
        cos = (pred * gt).sum(-1) / np.maximum(np.linalg.norm(pred, axis=-1) * np.linalg.norm(gt, axis=-1), 1e-12)
        error = np.where(valid, np.degrees(np.arccos(np.clip(cos, -1, 1))), np.nan)
        for ax, (picture, title) in zip(row, ((image, "image"), (colorize_normals(pred), "predicted normals"),
                                              (colorize_normals(gt), "ground-truth normals"))):
            ax.imshow(picture)
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
        im = row[3].imshow(error, vmin=0, vmax=45, cmap="magma")
        row[3].set_title("angular error [deg]", fontsize=9)
        row[3].set_axis_off()
        fig.colorbar(im, ax=row[3], fraction=0.046)
    return _save(fig, path)
