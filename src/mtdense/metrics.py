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
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torchmetrics import Metric

from mtdense.data.labels import IGNORE_INDEX, NUM_CLASSES

__all__ = ["SegMetrics", "DepthMetrics", "DEPTH_METRIC_NAMES", "metrics_to_dict", "format_metrics", "evaluate_split"]

DEPTH_METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")


class SegMetrics(Metric):
    """Confusion matrix over a split -> mIoU, per-class IoU, pixel accuracy.

    Args:
        num_classes: Number of classes (19 Cityscapes train ids).
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


def metrics_to_dict(seg: dict[str, torch.Tensor] | None, depth: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    """Plain-typed metrics (``metrics.json``): ``miou, pixel_acc, abs_rel, sq_rel, rmse, rmse_log,
    delta1, delta2, delta3, per_class_iou`` (per class name; NaN -> ``None``)."""
    from mtdense.data.labels import TRAIN_CLASS_NAMES

    def num(v: torch.Tensor) -> float | None:
        f = float(v)
        return None if math.isnan(f) else f

    out: dict[str, Any] = {}
    if seg is not None:
        out["miou"] = num(seg["miou"])
        out["pixel_acc"] = num(seg["pixel_acc"])
    if depth is not None:
        out.update({k: num(depth[k]) for k in DEPTH_METRIC_NAMES})
    if seg is not None:
        iou = seg["per_class_iou"]
        names = TRAIN_CLASS_NAMES if len(iou) == len(TRAIN_CLASS_NAMES) else [str(i) for i in range(len(iou))]
        out["per_class_iou"] = {n: num(v) for n, v in zip(names, iou)}
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
    if "per_class_iou" in metrics:
        lines.append("")
        lines.append("per-class IoU (n/a: class in neither ground truth nor prediction)")
        items = list(metrics["per_class_iou"].items())
        for i in range(0, len(items), 4):
            lines.append("  ".join(f"{n:<14}{fmt(v, True)}" for n, v in items[i : i + 4]))
    return "\n".join(lines)


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
) -> dict[str, Any]:
    """Evaluate a model on a Cityscapes-layout split at the labels' own resolution.

    Each image runs through the network at ``size`` (or its own size); logits and encoded
    depth are resized bilinearly back to the label size before the argmax and the decoding,
    so the figures compare with the official evaluation on the original label maps.

    Args:
        model: A model or a checkpoint path (anything :func:`mtdense.load_model` reads).
        root: Dataset root.
        split: ``train``, ``val`` or ``test`` (test has no public labels).
        size: Network input ``(H, W)``; ``None`` keeps each image's size.
        out_dir: Writes ``metrics.json`` there (and predictions, if asked).
        save_predictions: Also write ``predictions/labelIds/{name}_pred_labelIds.png``
            (Cityscapes label ids, for the official script) and
            ``predictions/depth/{name}_pred_depth.png`` (uint16, ``round(depth_m * 256)``).
        depth_source: Depth ground truth (``"disparity"`` or a teacher name).
        max_depth: Optional depth cap in metres for the depth errors.
        batch_size: Images per forward pass.
        num_workers: Loader worker processes.
        device: Where the network runs.
        progress: Show a tqdm progress bar.

    Returns:
        :func:`metrics_to_dict` output plus ``num_images``.
    """
    from torch.utils.data import DataLoader
    from torchvision.transforms.v2 import functional as TF
    from tqdm import tqdm

    from mtdense.data.cityscapes import CityscapesDataset
    from mtdense.data.labels import train_ids_to_label_ids
    from mtdense.data.transforms import EvalTransform
    from mtdense.data.depth import depth_to_png16
    from mtdense.inference import Predictor
    from mtdense.io import write_json_atomic, write_png_atomic

    predictor = Predictor(model, device=device)
    num_classes = predictor.model.tasks["seg"]
    dataset = CityscapesDataset(root, split, depth_source=depth_source, transform=EvalTransform(size=None))
    if len(dataset) == 0:
        raise ValueError(f"{root}: split {split!r} has no frames to evaluate")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False)
    seg_metric = SegMetrics(num_classes=num_classes).to(predictor.device)
    depth_metric = DepthMetrics(max_depth=max_depth).to(predictor.device)
    pred_dir = Path(out_dir) / "predictions" if out_dir is not None else None
    if save_predictions:
        if pred_dir is None:
            raise ValueError("save_predictions needs out_dir: the folder the prediction PNGs are written to")
        (pred_dir / "labelIds").mkdir(parents=True, exist_ok=True)
        (pred_dir / "depth").mkdir(parents=True, exist_ok=True)
    n = 0
    for batch in tqdm(loader, desc=f"evaluate {split}", unit="batch", disable=not progress):
        image = batch["image"].to(predictor.device)
        label_size = tuple(image.shape[-2:])
        if size is not None and tuple(size) != label_size:
            image = TF.resize(image, list(size), antialias=True)
        seg, depth = predictor.forward(image, out_size=label_size)
        seg_metric.update(seg, batch["seg"].to(predictor.device))
        depth_metric.update(depth, batch["depth"].to(predictor.device))
        n += image.shape[0]
        if save_predictions:
            for name, s, d in zip(batch["name"], seg.cpu().numpy(), depth.cpu().numpy()):
                write_png_atomic(pred_dir / "labelIds" / f"{name}_pred_labelIds.png", train_ids_to_label_ids(s))
                write_png_atomic(pred_dir / "depth" / f"{name}_pred_depth.png", depth_to_png16(d))
    metrics = metrics_to_dict(seg_metric.compute(), depth_metric.compute())
    metrics["num_images"] = n
    if out_dir is not None:
        write_json_atomic(Path(out_dir) / "metrics.json", metrics)
    return metrics
