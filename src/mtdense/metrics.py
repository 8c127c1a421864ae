"""Split-level metrics: segmentation from one confusion matrix, depth from accumulated sums.

Both are :class:`torchmetrics.Metric` subclasses whose states are sums (``dist_reduce_fx="sum"``),
so ``update`` per batch, ``compute`` once per split gives the figure over the whole split
(never a mean of per-batch figures), also across the processes of a distributed run.

* :class:`SegMetrics`: mIoU exactly as the official Cityscapes pixel-level script computes it
  (IoU = TP / (TP + FP + FN) over pixels whose ground truth is not ignored; a class with no
  ground truth and no prediction is NaN and left out of the mean), per-class IoU, pixel
  accuracy.
* :class:`DepthMetrics`: AbsRel, SqRel, RMSE, RMSE log and the delta < 1.25^k accuracies, in
  metres, over the pixels with a valid ground-truth depth, pooled over all pixels of the split.
* :class:`NormalsMetrics`: the angular error of surface normals in degrees, its mean and median
  and the share of pixels within 11.25, 22.5 and 30 degrees (the figures of MTAN and LibMTL on
  NYUv2), over the pixels with a ground-truth normal.

The number of classes and their names come from the data the model was trained on (its
:class:`~mtdense.data.description.DatasetInfo`), never from a global list: :func:`evaluate_split`
reads them from the checkpoint, and :func:`metrics_to_dict` takes the names it is given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torchmetrics import Metric

from mtdense.data.labels import IGNORE_INDEX, NUM_CLASSES
from mtdense.io import read_json

__all__ = ["SegMetrics", "DepthMetrics", "NormalsMetrics", "DEPTH_METRIC_NAMES", "NORMALS_METRIC_NAMES",
           "NORMALS_THRESHOLDS_DEG", "DELTA_METRICS", "metrics_to_dict", "format_metrics", "read_baseline",
           "multi_task_delta", "format_delta", "check_same_classes", "dataset_options", "evaluate_split"]

DEPTH_METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")
NORMALS_THRESHOLDS_DEG = (11.25, 22.5, 30.0)
NORMALS_METRIC_NAMES = ("normal_mean", "normal_median", "normal_11_25", "normal_22_5", "normal_30")
"""Keys of the normals figures: mean and median angular error (degrees), then the share of pixels
within each of :data:`NORMALS_THRESHOLDS_DEG`."""


class SegMetrics(Metric):
    """Confusion matrix over a split -> mIoU, per-class IoU, pixel accuracy.

    Args:
        num_classes: Number of classes ``K`` (a dataset's ``DatasetInfo.num_classes``; default
            19, the Cityscapes train ids).
        ignore_index: Ground-truth label that is not evaluated (255).

    ``update(preds, target)``: ``preds`` is ``B x C x H x W`` scores (arg-maxed here) or
    ``B x H x W`` class ids; ``target`` is ``B x H x W`` class ids with ``ignore_index``.
    ``compute()`` returns ``{"miou": scalar, "per_class_iou": C (NaN = class absent from both
    ground truth and prediction), "pixel_acc": scalar}``; the confusion matrix (rows = ground
    truth, columns = prediction) is ``self.confmat``.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, num_classes: int = NUM_CLASSES, ignore_index: int = IGNORE_INDEX, **kwargs):
        super().__init__(**kwargs)
        if num_classes < 1:
            raise ValueError(f"SegMetrics: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state("confmat", default=torch.zeros(num_classes, num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch. See the class docstring for shapes."""
        if preds.ndim == target.ndim + 1:
            if preds.shape[1] != self.num_classes:
                raise ValueError(f"SegMetrics: scores have {preds.shape[1]} channels, expected num_classes={self.num_classes}")
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise ValueError(
                f"SegMetrics: prediction {tuple(preds.shape)} and target {tuple(target.shape)} differ; resize the "
                f"prediction to the label size first"
            )
        keep = target != self.ignore_index
        t = target[keep].long()
        p = preds[keep].long()
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= self.num_classes):
            raise ValueError(
                f"SegMetrics: target ids {torch.unique(t[(t < 0) | (t >= self.num_classes)]).tolist()[:10]} outside "
                f"0..{self.num_classes - 1} (and not {self.ignore_index}); pass train ids, not label ids"
            )
        if p.numel() and (int(p.min()) < 0 or int(p.max()) >= self.num_classes):
            raise ValueError(f"SegMetrics: predicted ids outside 0..{self.num_classes - 1}")
        n = self.num_classes
        self.confmat += torch.bincount(t * n + p, minlength=n * n).reshape(n, n)

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"miou", "per_class_iou", "pixel_acc"}`` over everything seen since the last reset."""
        cm = self.confmat.double()
        tp = cm.diagonal()
        denom = cm.sum(0) + cm.sum(1) - tp  # TP + FP + FN
        iou = torch.where(denom > 0, tp / denom.clamp_min(1), torch.full_like(tp, float("nan")))
        total = cm.sum()
        return {
            "miou": iou.nanmean() if bool((denom > 0).any()) else torch.tensor(float("nan"), dtype=cm.dtype, device=cm.device),
            "per_class_iou": iou,
            "pixel_acc": tp.sum() / total if total > 0 else torch.tensor(float("nan"), dtype=cm.dtype, device=cm.device),
        }


class DepthMetrics(Metric):
    """Standard depth errors in metres over the pixels with a valid ground truth.

    Args:
        min_depth: Ground truth at or below this (metres) is invalid (0 = no disparity);
            predictions are clamped up to it so the logarithm and ratios stay finite.
        max_depth: Optional cap (metres): ground truth above it is not evaluated and
            predictions are clamped down to it (e.g. 80 m, the KITTI convention). ``None``:
            no cap.

    ``update(pred_m, target_m)`` takes ``B x H x W`` (or ``B x 1 x H x W``) depths in metres.
    ``compute()`` returns ``abs_rel = mean(|p - g| / g)``, ``sq_rel = mean((p - g)^2 / g)``,
    ``rmse = sqrt(mean((p - g)^2))``, ``rmse_log = sqrt(mean((ln p - ln g)^2))`` and
    ``delta{k} = fraction with max(p / g, g / p) < 1.25^k``, each a mean over all valid
    pixels of the split pooled together (NaN when there was none).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    _SUMS = ("n", "abs_rel", "sq_rel", "sq", "sq_log", "delta1", "delta2", "delta3")

    def __init__(self, min_depth: float = 1e-3, max_depth: float | None = None, **kwargs):
        super().__init__(**kwargs)
        if not min_depth > 0:
            raise ValueError(f"DepthMetrics: min_depth must be > 0 (metres), got {min_depth!r}")
        if max_depth is not None and not max_depth > min_depth:
            raise ValueError(f"DepthMetrics: max_depth ({max_depth!r}) must exceed min_depth ({min_depth!r}), or be None")
        self.min_depth = float(min_depth)
        self.max_depth = None if max_depth is None else float(max_depth)
        for name in self._SUMS:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred_m: torch.Tensor, target_m: torch.Tensor) -> None:
        """Add a batch of predicted and ground-truth depths (metres; ground truth 0 = invalid)."""
        if pred_m.ndim == 4 and pred_m.shape[1] == 1:
            pred_m = pred_m[:, 0]
        if target_m.ndim == 4 and target_m.shape[1] == 1:
            target_m = target_m[:, 0]
        if pred_m.shape != target_m.shape:
            raise ValueError(
                f"DepthMetrics: prediction {tuple(pred_m.shape)} and target {tuple(target_m.shape)} differ; resize the "
                f"prediction to the ground-truth size first"
            )
        g = target_m.double()
        valid = torch.isfinite(g) & (g > self.min_depth)
        if self.max_depth is not None:
            valid &= g <= self.max_depth
        g = g[valid]
        p = pred_m.double()[valid].clamp(min=self.min_depth, max=self.max_depth)
        if not bool(torch.isfinite(p).all()):
            raise ValueError("DepthMetrics: the prediction has NaN or infinite depths on valid pixels")
        diff = p - g
        ratio = torch.maximum(p / g, g / p)
        self.n += g.numel()
        self.abs_rel += (diff.abs() / g).sum()
        self.sq_rel += (diff.pow(2) / g).sum()
        self.sq += diff.pow(2).sum()
        self.sq_log += (p.log() - g.log()).pow(2).sum()
        self.delta1 += (ratio < 1.25).sum()
        self.delta2 += (ratio < 1.25**2).sum()
        self.delta3 += (ratio < 1.25**3).sum()

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3"}`` (float64 scalars)."""
        n = self.n
        if float(n) == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=n.device)
            return {k: nan.clone() for k in DEPTH_METRIC_NAMES}
        return {
            "abs_rel": self.abs_rel / n,
            "sq_rel": self.sq_rel / n,
            "rmse": (self.sq / n).sqrt(),
            "rmse_log": (self.sq_log / n).sqrt(),
            "delta1": self.delta1 / n,
            "delta2": self.delta2 / n,
            "delta3": self.delta3 / n,
        }


class NormalsMetrics(Metric):
    """Angular error of surface normals over the pixels with a ground-truth normal.

    The error of a pixel is the angle between the predicted and the ground-truth vector,
    ``degrees(acos(clip(p . g / (|p| |g|), -1, 1)))``. Ground truth that is all zero (or non-finite)
    is no label and not evaluated. Sums are pooled over the whole split: the mean and the shares
    within 11.25, 22.5 and 30 degrees are exact; the median comes from a histogram of the errors
    in bins of ``median_resolution`` degrees (0.01 by default), interpolated inside its bin, so it
    is within one bin of the exact median of all pixels and needs no list of every error.

    Args:
        median_resolution: Histogram bin width in degrees (``180 / median_resolution`` bins).

    ``update(pred, target)`` takes ``B x 3 x H x W`` vectors (channels first, as the network returns
    them and batches carry them). ``compute()`` returns
    ``{"normal_mean", "normal_median", "normal_11_25", "normal_22_5", "normal_30"}`` (float64
    scalars: degrees, then shares 0..1; NaN when no pixel was evaluated).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, median_resolution: float = 0.01, **kwargs):
        super().__init__(**kwargs)
        if not 0 < median_resolution <= 1:
            raise ValueError(f"NormalsMetrics: median_resolution must be in (0, 1] degrees, got {median_resolution!r}")
        self.bins = int(math.ceil(180.0 / median_resolution))
        self.resolution = 180.0 / self.bins
        self.add_state("n", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sum_deg", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("within", default=torch.zeros(len(NORMALS_THRESHOLDS_DEG), dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("histogram", default=torch.zeros(self.bins, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of ``B x 3 x H x W`` predicted and ground-truth normals (all-zero ground truth = no label)."""
        if pred.ndim != 4 or pred.shape[1] != 3 or pred.shape != target.shape:
            raise ValueError(f"NormalsMetrics: prediction {tuple(pred.shape)} and target {tuple(target.shape)} must both "
                             f"be B x 3 x H x W; resize the prediction to the ground-truth size first")
        g = target.double().movedim(1, -1)
        p = pred.double().movedim(1, -1)
        g_len = g.norm(dim=-1)
        valid = torch.isfinite(g).all(-1) & (g_len > 0)
        g, p, g_len = g[valid], p[valid], g_len[valid]
        p_len = p.norm(dim=-1)
        if not bool(torch.isfinite(p).all()) or bool((p_len == 0).any()):
            raise ValueError("NormalsMetrics: the prediction has NaN, infinite or zero-length normals on labelled pixels")
        cos = ((p * g).sum(-1) / (p_len * g_len)).clamp(-1.0, 1.0)
        err = torch.rad2deg(torch.acos(cos))
        self.n += err.numel()
        self.sum_deg += err.sum()
        self.within += torch.stack([(err < t).sum() for t in NORMALS_THRESHOLDS_DEG]).to(self.within)
        index = (err / self.resolution).long().clamp_(0, self.bins - 1)
        self.histogram += torch.bincount(index, minlength=self.bins).to(self.histogram)

    def _median(self) -> torch.Tensor:
        cum = self.histogram.cumsum(0)
        half = self.n / 2
        b = int(torch.searchsorted(cum, half))
        before = cum[b - 1] if b > 0 else torch.zeros((), dtype=cum.dtype, device=cum.device)
        inside = self.histogram[b]
        frac = (half - before) / inside if float(inside) > 0 else torch.zeros_like(half)
        return (b + frac) * self.resolution

    def compute(self) -> dict[str, torch.Tensor]:
        """The mean and median error in degrees and the shares within 11.25, 22.5 and 30 degrees."""
        if float(self.n) == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.n.device)
            return {k: nan.clone() for k in NORMALS_METRIC_NAMES}
        shares = self.within / self.n
        return {"normal_mean": self.sum_deg / self.n, "normal_median": self._median(),
                **{k: shares[i] for i, k in enumerate(NORMALS_METRIC_NAMES[2:])}}


def metrics_to_dict(
    seg: dict[str, torch.Tensor] | None,
    depth: dict[str, torch.Tensor] | None,
    class_names: Sequence[str] | None = None,
    normals: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """Plain-typed metrics (``metrics.json``): ``miou, pixel_acc, abs_rel, sq_rel, rmse, rmse_log,
    delta1, delta2, delta3``, with normals ``normal_mean, normal_median`` (degrees),
    ``normal_11_25, normal_22_5, normal_30`` (shares), then ``per_class_iou`` (per class name);
    NaN -> ``None``.

    Args:
        seg: :meth:`SegMetrics.compute` output, or ``None`` (no segmentation).
        depth: :meth:`DepthMetrics.compute` output, or ``None`` (no depth).
        class_names: The name of each class index, in order (``DatasetInfo.classes``); needed
            with ``seg``.
        normals: :meth:`NormalsMetrics.compute` output, or ``None`` (no normals).

    Raises:
        ValueError: ``seg`` without ``class_names``, or a name count other than the class count.
    """
    def num(v: torch.Tensor) -> float | None:
        f = float(v)
        return None if math.isnan(f) else f

    out: dict[str, Any] = {}
    if seg is not None:
        out["miou"] = num(seg["miou"])
        out["pixel_acc"] = num(seg["pixel_acc"])
    if depth is not None:
        out.update({k: num(depth[k]) for k in DEPTH_METRIC_NAMES})
    if normals is not None:
        out.update({k: num(normals[k]) for k in NORMALS_METRIC_NAMES})
    if seg is not None:
        iou = seg["per_class_iou"]
        if class_names is None:
            raise ValueError("metrics_to_dict: pass class_names (the model's DatasetInfo.classes) to name the per-class IoU")
        if len(class_names) != len(iou):
            raise ValueError(f"metrics_to_dict: {len(class_names)} class names ({', '.join(class_names)}) for "
                             f"{len(iou)} classes")
        out["per_class_iou"] = {str(n): num(v) for n, v in zip(class_names, iou)}
    return out


def format_metrics(metrics: dict[str, Any]) -> str:
    """A text table of :func:`metrics_to_dict` output (percentages for mIoU, accuracies)."""
    def fmt(v: float | None, pct: bool) -> str:
        if v is None:
            return f"{'n/a':>7}" if pct else f"{'n/a':>8}"
        return f"{100 * v:6.2f}%" if pct else f"{v:8.4f}"

    lines = []
    if "miou" in metrics:
        lines += [f"{'mIoU':<12}{fmt(metrics['miou'], True)}", f"{'pixel acc':<12}{fmt(metrics['pixel_acc'], True)}"]
    if "abs_rel" in metrics:
        lines.append("")
        lines.append("  ".join(f"{k:>9}" for k in DEPTH_METRIC_NAMES))
        lines.append("  ".join(f"{fmt(metrics[k], k.startswith('delta')).strip():>9}" for k in DEPTH_METRIC_NAMES))
    if "normal_mean" in metrics:
        heads = ("mean deg", "median deg", "< 11.25", "< 22.5", "< 30")
        lines.append("")
        lines.append("normals: " + "  ".join(f"{h:>10}" for h in heads))
        lines.append("         " + "  ".join(f"{fmt(metrics[k], i >= 2).strip():>10}" for i, k in enumerate(NORMALS_METRIC_NAMES)))
    if "per_class_iou" in metrics:
        lines.append("")
        lines.append("per-class IoU (n/a: class in neither ground truth nor prediction)")
        items = list(metrics["per_class_iou"].items())
        width = max([14] + [len(n) + 1 for n, _ in items])
        for i in range(0, len(items), 4):
            lines.append("  ".join(f"{n:<{width}}{fmt(v, True)}" for n, v in items[i : i + 4]))
    return "\n".join(lines)


DELTA_METRICS: dict[str, dict[str, bool]] = {
    "seg": {"miou": True, "pixel_acc": True},
    "depth": {"abs_rel": False, "sq_rel": False, "rmse": False, "rmse_log": False, "delta1": True, "delta2": True,
              "delta3": True},
    "normals": {"normal_mean": False, "normal_median": False, "normal_11_25": True, "normal_22_5": True,
                "normal_30": True},
}
"""The figures of each task that enter the multi-task Delta_m, and whether higher is better."""


def read_baseline(paths: str | Path | Sequence[str | Path]) -> dict[str, float]:
    """The single-task figures of one or more ``metrics.json`` files (as ``mtdense evaluate`` writes
    them, one per single-task model, or one file holding all), merged into one mapping.

    Only the keys of :data:`DELTA_METRICS` are read; the rest (``per_class_iou``, ``num_images``, ...)
    is ignored.

    Raises:
        FileNotFoundError: A file is missing.
        ValueError: Not a JSON object, a figure that is not a finite number, the same figure with
            two values in two files, or no figure at all (each message names the file and the key).
    """
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    known = {k for figures in DELTA_METRICS.values() for k in figures}
    merged: dict[str, float] = {}
    origin: dict[str, Path] = {}
    for path in files:
        data = read_json(path, "baseline file", "give the metrics.json of 'mtdense evaluate' on a single-task model",
                         fix="give the metrics.json of 'mtdense evaluate'")
        if not isinstance(data, dict):
            raise ValueError(f"{path}: holds a JSON {type(data).__name__}, not an object of figures such as "
                             f"{{\"miou\": 0.41, \"abs_rel\": 0.15}}")
        for key in sorted(known & set(data)):
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{path}: '{key}' is {value!r}, not a finite number; evaluate the single-task model "
                                 "again, or remove the key")
            if key in merged and merged[key] != float(value):
                raise ValueError(f"{path}: '{key}' is {value} here but {merged[key]} in {origin[key]}; give each "
                                 "single-task figure once")
            merged[key], origin[key] = float(value), path
    if not merged:
        raise ValueError(f"{', '.join(map(str, files))}: no single-task figure in it (looked for "
                         f"{', '.join(sorted(known))}); give the metrics.json of 'mtdense evaluate' on a single-task model")
    return merged


def multi_task_delta(metrics: dict[str, Any], baseline: dict[str, float]) -> dict[str, Any]:
    """The multi-task Delta_m of a model against single-task models, in percent (positive = better).

    Each figure ``k`` shared by ``metrics`` and ``baseline`` gives ``s_k (M_k - B_k) / B_k``, with
    ``s_k = +1`` where higher is better and ``-1`` where lower is (:data:`DELTA_METRICS`). Then

    * ``delta_m_mtan``: their mean over all figures, as the MTAN line of work computes it
      (Liu et al.; CAGrad, Nash-MTL on NYUv2: 9 figures averaged together);
    * ``delta_m_libmtl``: the mean over tasks of each task's mean, as LibMTL computes it (every
      task counts once, whatever its number of figures).

    Args:
        metrics: The multi-task model's figures (:func:`metrics_to_dict`).
        baseline: The single-task figures (:func:`read_baseline`).

    Returns:
        ``{"delta_m_mtan", "delta_m_libmtl"}`` (percent), ``"per_task"`` (percent per task) and
        ``"per_metric"`` (percent per figure, signed so that positive is better).

    Raises:
        ValueError: No figure in common, a figure the model has no value for, or a baseline of 0.
    """
    per_metric: dict[str, float] = {}
    per_task: dict[str, float] = {}
    for task, figures in DELTA_METRICS.items():
        changes = []
        for key, higher in figures.items():
            if key not in baseline or key not in metrics:
                continue
            value, base = metrics[key], baseline[key]
            if value is None or not math.isfinite(float(value)):
                raise ValueError(f"'{key}' has no value for this model (no labelled pixel of that task?); Delta_m needs "
                                 f"it beside the baseline's {base}")
            if base == 0:
                raise ValueError(f"the baseline's '{key}' is 0: Delta_m divides by it; give a baseline with a non-zero "
                                 f"'{key}', or remove the key")
            change = (1.0 if higher else -1.0) * (float(value) - base) / abs(base) * 100.0
            per_metric[key] = change
            changes.append(change)
        if changes:
            per_task[task] = sum(changes) / len(changes)
    if not per_metric:
        raise ValueError(f"the baseline ({', '.join(sorted(baseline))}) and this model's figures "
                         f"({', '.join(k for k in metrics if any(k in f for f in DELTA_METRICS.values()))}) have none "
                         "in common; compare figures of the same tasks")
    return {
        "delta_m_mtan": sum(per_metric.values()) / len(per_metric),
        "delta_m_libmtl": sum(per_task.values()) / len(per_task),
        "per_task": per_task,
        "per_metric": per_metric,
    }


def format_delta(delta: dict[str, Any]) -> str:
    """Lines of :func:`multi_task_delta` output."""
    n = len(delta["per_metric"])
    lines = [
        f"Delta_m (MTAN: mean over the {n} figures)             {delta['delta_m_mtan']:+.2f}%",
        f"Delta_m (LibMTL: mean over the {len(delta['per_task'])} tasks of their means)  {delta['delta_m_libmtl']:+.2f}%",
        "per task: " + ", ".join(f"{t} {v:+.2f}%" for t, v in delta["per_task"].items()),
        "per figure (positive = better): " + ", ".join(f"{k} {v:+.2f}%" for k, v in delta["per_metric"].items()),
    ]
    return "\n".join(lines)


def check_same_classes(root: str | Path, dataset_classes: Sequence[str], model_classes: Sequence[str]) -> None:
    """Refuse to score a model on a dataset of other classes.

    Raises:
        ValueError: The class names (or their order) differ; the message names ``root`` and
            both lists.
    """
    data, ours = tuple(dataset_classes), tuple(model_classes)
    if data != ours:
        raise ValueError(
            f"{root}: the dataset's {len(data)} classes ({', '.join(data)}) differ from the {len(ours)} the "
            f"checkpoint was trained on ({', '.join(ours)}); evaluate on data with the model's classes, in the same order"
        )


def dataset_options(root: str | Path, fmt: str, split: str, tasks: Sequence[str]) -> dict[str, Any]:
    """Options of :func:`mtdense.data.open_dataset` that load what a model of ``tasks`` is scored on:
    for the ``cityscapes`` layout, the surface normals (``load_normals``) when the model has a
    normals head and the root holds ``normals/SPLIT/`` (the synthetic city); nothing otherwise."""
    if fmt == "cityscapes" and "normals" in tasks:
        from mtdense.data.cityscapes import NORMALS_FOLDER

        if (Path(root) / NORMALS_FOLDER / split).is_dir():
            return {"load_normals": True}
    return {}


def evaluate_split(
    model: str | Path | torch.nn.Module,
    root: str | Path,
    split: str = "val",
    size: tuple[int, int] | None = None,
    out_dir: str | Path | None = None,
    save_predictions: bool = False,
    depth_source: str = "disparity",
    max_depth: float | None = None,
    batch_size: int = 4,
    num_workers: int = 2,
    device: str | torch.device = "cpu",
    progress: bool = True,
    format: str = "auto",
    garg_crop: bool = False,
) -> dict[str, Any]:
    """Evaluate a model on a dataset split at the labels' own resolution.

    Each image runs through the network at ``size`` (or its own size); logits, encoded depth and
    normals are resized bilinearly back to the label size before the argmax, the decoding and the
    renormalisation, so the figures compare with the official evaluation on the original label maps.

    The classes are the checkpoint's (:attr:`mtdense.inference.Predictor.info`): the metrics
    have its class count and name its classes, and a dataset whose class names differ is
    refused. Frames without a label of a task (a ``folder`` dataset may lack masks or depth for
    some) count for the other tasks only. A model with a normals head is scored on the normals of
    the data where it has them (:class:`NormalsMetrics`).

    Args:
        model: A model or a checkpoint path (anything :func:`mtdense.load_model` reads).
        root: Dataset root.
        split: The split (``train``, ``val``, ``test``, ...; Cityscapes' test has no public labels;
            KITTI: ``val``, ``semantics_val``, ``val+semantics_val``, ...).
        size: Network input ``(H, W)``; ``None`` keeps each image's size.
        out_dir: Writes ``metrics.json`` there (and predictions, if asked).
        save_predictions: Also write the predictions: for a model of the 19 Cityscapes classes
            ``predictions/labelIds/{name}_pred_labelIds.png`` (Cityscapes label ids, for the
            official script), for any other ``predictions/trainIds/{name}_pred_trainIds.png``
            (uint8 class indices 0..K-1 of the model's classes); and
            ``predictions/depth/{name}_pred_depth.png`` (uint16, ``round(depth_m * 256)``); with a
            normals head ``predictions/normals/{name}_pred_normals.png`` (8-bit RGB,
            ``round((n + 1) * 127.5)``).
        depth_source: Depth ground truth of the ``cityscapes`` format (``"disparity"`` or a
            teacher name); other formats have their own depth.
        max_depth: Optional depth cap in metres for the depth errors (ground truth beyond it is
            left out, predictions are clipped to it; KITTI's usual 80 m:
            :data:`mtdense.data.kitti.KITTI_MAX_DEPTH_M`).
        batch_size: Images per forward pass.
        num_workers: Loader worker processes.
        device: Where the network runs.
        progress: Show a tqdm progress bar.
        format: The dataset format, as :func:`mtdense.data.open_dataset` takes it (``auto``
            detects it from the layout).
        garg_crop: Score depth only inside the Garg et al. crop (:func:`mtdense.data.kitti.garg_crop_mask`),
            the KITTI convention; ``kitti`` format only.

    Returns:
        :func:`metrics_to_dict` output plus ``num_images`` and ``evaluation``: the settings the
        figures were computed with (``format``, ``split``, ``size``, ``garg_crop``,
        ``max_depth_m``, and ``depth_source`` for the ``cityscapes`` layout) and, for the
        ``folder``, ``cityscapes`` and ``kitti`` layouts, ``label_sources``: the folder each scored task's
        ground truth was read from (a folder dataset's real ``masks`` / ``depth`` / ``normals``,
        never a teacher's).

    Raises:
        ValueError: The dataset's classes differ from the model's (both are named), an empty
            split, an undetectable layout, or an option the format does not take.
    """
    from torch.utils.data import DataLoader
    from torchvision.transforms.v2 import functional as TF
    from tqdm import tqdm

    from mtdense.data.depth import depth_to_png16
    from mtdense.data.kitti import kitti_eval_depth
    from mtdense.data.labels import train_ids_to_label_ids
    from mtdense.data.normals import encode_normals
    from mtdense.data.open import detect_format, open_dataset
    from mtdense.data.transforms import EvalTransform
    from mtdense.inference import Predictor
    from mtdense.io import write_json_atomic, write_png_atomic
    from mtdense.outputs import has_cityscapes_classes

    predictor = Predictor(model, device=device)
    info = predictor.info
    fmt = detect_format(root) if format == "auto" else format
    options: dict[str, Any] = {}
    if fmt == "cityscapes":
        options["depth_source"] = depth_source
    elif depth_source != "disparity":
        raise ValueError(f"{root}: depth_source {depth_source!r} is an option of the cityscapes format; this dataset "
                         f"is in the {fmt} format, which has its own depth: leave it out")
    if garg_crop and fmt != "kitti":
        raise ValueError(f"{root}: the Garg crop is the KITTI evaluation convention (fractions of KITTI's frame); this "
                         f"dataset is in the {fmt} format: leave --garg-crop out, or evaluate a kitti dataset")
    has_normals = "normals" in predictor.runtime.tasks
    options.update(dataset_options(root, fmt, split, predictor.runtime.tasks))
    dataset = open_dataset(root, split, format=fmt, transform=EvalTransform(size=None, num_classes=info.num_classes),
                           **options)
    check_same_classes(root, dataset.classes, info.classes)
    if len(dataset) == 0:
        raise ValueError(f"{root}: split {split!r} has no frames to evaluate")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    seg_metric = SegMetrics(num_classes=info.num_classes).to(predictor.device)
    depth_metric = DepthMetrics(max_depth=max_depth).to(predictor.device)
    normals_metric = NormalsMetrics().to(predictor.device)
    label_ids = has_cityscapes_classes(info)
    seg_folder = "labelIds" if label_ids else "trainIds"
    pred_dir = Path(out_dir) / "predictions" if out_dir is not None else None
    if save_predictions:
        if pred_dir is None:
            raise ValueError("save_predictions needs out_dir: the folder the prediction PNGs are written to")
        for folder in (seg_folder, "depth") + (("normals",) if has_normals else ()):
            (pred_dir / folder).mkdir(parents=True, exist_ok=True)
    n = 0
    has_seg = has_depth = scored_normals = False
    for batch in tqdm(loader, desc=f"evaluate {split}", unit="batch", disable=not progress):
        image = batch["image"].to(predictor.device)
        label_size = tuple(image.shape[-2:])
        if size is not None and tuple(size) != label_size:
            image = TF.resize(image, list(size), antialias=True)
        out = predictor.infer(image, label_size)
        seg, depth = predictor.postprocess(out, label_size)
        normals = predictor.postprocess_normals(out, label_size)
        if "seg" in batch:
            seg_metric.update(seg, batch["seg"].to(predictor.device))
            has_seg = True
        if "depth" in batch:
            target = batch["depth"].to(predictor.device)
            if garg_crop:
                target = kitti_eval_depth(target, garg_crop=True, max_depth_m=None)
            depth_metric.update(depth, target)
            has_depth = True
        if normals is not None and "normals" in batch:
            normals_metric.update(normals, batch["normals"].to(predictor.device))
            scored_normals = True
        n += image.shape[0]
        if save_predictions:
            for j, (name, s, d) in enumerate(zip(batch["name"], seg.cpu().numpy(), depth.cpu().numpy())):
                s = train_ids_to_label_ids(s) if label_ids else s
                write_png_atomic(pred_dir / seg_folder / f"{name}_pred_{seg_folder}.png", s)
                write_png_atomic(pred_dir / "depth" / f"{name}_pred_depth.png", depth_to_png16(d))
                if normals is not None:
                    rgb = encode_normals(normals[j].permute(1, 2, 0).cpu().numpy())
                    write_png_atomic(pred_dir / "normals" / f"{name}_pred_normals.png", rgb[..., ::-1].copy())
    metrics = metrics_to_dict(seg_metric.compute() if has_seg else None, depth_metric.compute() if has_depth else None,
                              class_names=info.classes, normals=normals_metric.compute() if scored_normals else None)
    metrics["num_images"] = n
    metrics["evaluation"] = {"format": fmt, "split": split, "size": None if size is None else [int(v) for v in size],
                             "garg_crop": bool(garg_crop), "max_depth_m": None if max_depth is None else float(max_depth),
                             **({"depth_source": depth_source} if fmt == "cityscapes" else {})}
    scored = [t for t, done in (("seg", has_seg), ("depth", has_depth), ("normals", scored_normals)) if done]
    if fmt in ("folder", "cityscapes", "kitti"):
        from mtdense.data.folder import LABEL_FOLDERS
        from mtdense.data.kitti import REAL_SOURCES

        folders = {"folder": LABEL_FOLDERS, "cityscapes": {"seg": "gtFine", "depth": depth_source, "normals": "normals"},
                   "kitti": REAL_SOURCES}[fmt]
        metrics["evaluation"]["label_sources"] = {t: folders[t] for t in scored}
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / "metrics.json", metrics)
    return metrics
