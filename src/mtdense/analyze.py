"""Where a trained model is right and wrong over a dataset split.

:func:`analyze` runs a :class:`~mtdense.inference.Predictor` over the samples of any format
of :func:`mtdense.data.open_dataset` (``image`` uint8 RGB, ``seg`` class indices with 255 =
ignore, ``depth`` metres with 0 = invalid; a sample may lack either label) and accumulates,
over the whole split:

* segmentation: the confusion matrix, mIoU, per-class IoU, pixel accuracy
  (:class:`mtdense.metrics.SegMetrics`), over the classes of the model's dataset description
  (:attr:`~mtdense.inference.Predictor.info`), named by it in the plots and the JSON file;
* depth: AbsRel, SqRel, RMSE, RMSE log, delta accuracies (:class:`mtdense.metrics.DepthMetrics`),
  and the same per ground-truth distance bin (error against distance);
* depth distributions: 1000-bin histograms of ground-truth and predicted depth over the same
  (valid) pixels of the first ``hist_samples`` samples (the recipe looks at ~100);
* surface normals, for a model with a normals head and samples with ``normals``: the angular
  error (mean, median, shares within 11.25 / 22.5 / 30 degrees,
  :class:`mtdense.metrics.NormalsMetrics`), its histogram in 1-degree bins, and the first
  samples' predicted and ground-truth normals side by side.

:func:`write_report` turns that into pictures and a JSON file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mtdense.data.kitti import garg_crop_mask
from mtdense.data.labels import TRAIN_CLASS_NAMES
from mtdense.inference import Predictor
from mtdense.io import write_json_atomic
from mtdense.metrics import DepthMetrics, NormalsMetrics, SegMetrics

__all__ = ["DISTANCE_BINS_M", "Analysis", "analyze", "write_report"]

# Ground-truth distance bins (metres) for the error-against-distance curve.
DISTANCE_BINS_M = (0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 70.0, 100.0, 150.0, 250.0)


@dataclass
class Analysis:
    """Split-level results of :func:`analyze`.

    Attributes:
        seg: ``{"miou", "pixel_acc"}`` floats and ``"per_class_iou"`` (K floats, NaN = absent).
        confusion: K x K pixel counts, ``[ground truth, prediction]``.
        depth: ``{"abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3"}``.
        distance_edges: Bin edges in metres (:data:`DISTANCE_BINS_M`).
        distance_abs_rel: AbsRel per bin (NaN for an empty bin).
        distance_pixels: Valid pixels per bin.
        hist_edges: 1001 edges over 0..``max_depth`` m.
        hist_gt, hist_pred: Pixel counts per histogram bin.
        samples: Samples evaluated; ``hist_samples``: of which in the histograms.
        class_names: The names of the K classes, in order (the model's ``DatasetInfo.classes``).
        normals: ``{"normal_mean", "normal_median", "normal_11_25", "normal_22_5", "normal_30"}``,
            or ``None`` (no normals head, or no sample with normals).
        normals_edges: 181 edges over 0..180 degrees; ``normals_counts``: pixels per 1-degree bin.
        normals_examples: ``(image, predicted normals, ground-truth normals)`` of the first samples
            with normals.
        evaluation: The settings the depth figures were computed with (``max_depth_m``,
            ``garg_crop``), written into ``metrics.json``.
    """

    seg: dict
    confusion: np.ndarray
    depth: dict
    distance_edges: np.ndarray
    distance_abs_rel: np.ndarray
    distance_pixels: np.ndarray
    hist_edges: np.ndarray
    hist_gt: np.ndarray
    hist_pred: np.ndarray
    samples: int
    hist_samples: int
    class_names: tuple[str, ...] = tuple(TRAIN_CLASS_NAMES)
    normals: dict | None = None
    normals_edges: np.ndarray | None = None
    normals_counts: np.ndarray | None = None
    normals_examples: list = field(default_factory=list)
    evaluation: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.seg["per_class_iou"])
        if len(self.class_names) != k:
            raise ValueError(f"Analysis: {len(self.class_names)} class names for {k} classes")

    def summary(self) -> str:
        d = self.depth
        text = (
            f"{self.samples} samples: mIoU {100 * self.seg['miou']:.2f}%, pixel acc {100 * self.seg['pixel_acc']:.2f}% | "
            f"depth AbsRel {d['abs_rel']:.4f}, SqRel {d['sq_rel']:.4f}, RMSE {d['rmse']:.3f} m, RMSE log {d['rmse_log']:.4f}, "
            f"delta1 {100 * d['delta1']:.2f}%"
        )
        if self.normals is not None:
            n = self.normals
            text += (f" | normals mean {n['normal_mean']:.2f} deg, median {n['normal_median']:.2f} deg, "
                     f"< 11.25: {100 * n['normal_11_25']:.2f}%, < 22.5: {100 * n['normal_22_5']:.2f}%, "
                     f"< 30: {100 * n['normal_30']:.2f}%")
        return text

    def to_json(self) -> dict:
        def clean(v):
            return None if isinstance(v, float) and not np.isfinite(v) else v

        out = {
            "samples": self.samples,
            "segmentation": {
                "miou": clean(self.seg["miou"]), "pixel_acc": clean(self.seg["pixel_acc"]),
                "per_class_iou": {n: clean(float(v)) for n, v in zip(self.class_names, self.seg["per_class_iou"])},
            },
            "depth": {k: clean(float(v)) for k, v in self.depth.items()},
            "error_vs_distance": [
                {"from_m": float(a), "to_m": float(b), "abs_rel": clean(float(e)), "pixels": int(n)}
                for a, b, e, n in zip(self.distance_edges[:-1], self.distance_edges[1:], self.distance_abs_rel, self.distance_pixels)
            ],
            "classes": list(self.class_names),
            "confusion_matrix": self.confusion.tolist(),
            "evaluation": dict(self.evaluation),
        }
        if self.normals is not None:
            out["normals"] = {k: clean(float(v)) for k, v in self.normals.items()}
            out["normals_error_histogram"] = {"edges_deg": self.normals_edges.tolist(),
                                              "pixels": [int(c) for c in self.normals_counts]}
        return out


def analyze(
    predictor: Predictor,
    dataset: Sequence[dict],
    max_samples: int | None = None,
    hist_samples: int = 100,
    hist_bins: int = 1000,
    max_depth: float = 250.0,
    distance_edges: Sequence[float] = DISTANCE_BINS_M,
    progress: bool = True,
    normals_examples: int = 4,
    garg_crop: bool = False,
) -> Analysis:
    """Evaluate ``predictor`` over ``dataset`` and collect what :func:`write_report` draws.

    Args:
        predictor: Runs the model; its outputs come back at each sample's size. Its ``info``
            (the model's dataset description) gives the classes.
        dataset: Indexable samples with ``image`` (H x W x 3 uint8), ``seg`` (H x W class
            indices, 255 = ignore) and ``depth`` (H x W metres, 0 = invalid), e.g. a dataset of
            :func:`mtdense.data.open_dataset` without transform; a sample without ``seg`` or
            ``depth`` counts for the other task only.
        max_samples: Evaluate only the first N samples (``None``: all).
        hist_samples: Samples that feed the depth histograms.
        hist_bins: Histogram bins over ``[0, max_depth]`` m.
        max_depth: Histogram range and depth evaluation cap in metres (the depth target is
            clipped at 250 m in training).
        distance_edges: Ground-truth distance bins in metres for AbsRel against distance.
        progress: Show a tqdm bar.
        normals_examples: Samples with normals (the first ones) kept for the normals pictures.
        garg_crop: Score depth only inside the Garg et al. crop (KITTI's usual evaluation,
            :func:`mtdense.data.kitti.garg_crop_mask`); ground truth outside it counts nowhere,
            not in the histograms either.
    """
    n = len(dataset) if max_samples is None else min(max_samples, len(dataset))
    if n == 0:
        raise ValueError("the dataset is empty: nothing to analyze")
    info = predictor.info
    seg_metric = SegMetrics(info.num_classes)
    depth_metric = DepthMetrics(max_depth=max_depth)
    edges = np.asarray(distance_edges, dtype=np.float64)
    per_bin = [DepthMetrics(max_depth=max_depth) for _ in range(len(edges) - 1)]
    hist_edges = np.linspace(0.0, max_depth, hist_bins + 1)
    hist_gt = np.zeros(hist_bins, np.int64)
    hist_pred = np.zeros(hist_bins, np.int64)
    normals_metric = NormalsMetrics()  # fed where the prediction and the sample both have normals
    examples = []
    for i in tqdm(range(n), desc="analyze", unit="sample", disable=not progress):
        sample = dataset[i]
        pred = predictor.predict(sample["image"])
        if getattr(pred, "normals", None) is not None and sample.get("normals") is not None:
            gt_normals = np.asarray(sample["normals"], dtype=np.float32)
            normals_metric.update(torch.from_numpy(pred.normals).permute(2, 0, 1)[None],
                                  torch.from_numpy(gt_normals).permute(2, 0, 1)[None])
            if len(examples) < normals_examples:
                examples.append((np.asarray(sample["image"]), pred.normals, gt_normals))
        if "seg" in sample:
            seg_metric.update(torch.from_numpy(pred.seg)[None], torch.from_numpy(np.asarray(sample["seg"]))[None])
        if "depth" not in sample:
            continue
        gt_depth = np.asarray(sample["depth"], dtype=np.float32)
        if garg_crop:
            gt_depth = np.where(garg_crop_mask(*gt_depth.shape), gt_depth, np.float32(0))
        p = torch.from_numpy(pred.depth)[None]
        g = torch.from_numpy(gt_depth)[None]
        depth_metric.update(p, g)
        for b, metric in enumerate(per_bin):
            inside = (g > edges[b]) & (g <= edges[b + 1])
            metric.update(p, torch.where(inside, g, torch.zeros_like(g)))  # 0 = not evaluated
        if i < hist_samples:
            valid = np.isfinite(gt_depth) & (gt_depth > 0)
            hist_gt += np.histogram(gt_depth[valid], hist_edges)[0]
            hist_pred += np.histogram(pred.depth[valid], hist_edges)[0]
    seg = seg_metric.compute()
    normals = None
    normals_edges = normals_counts = None
    if float(normals_metric.n) > 0:
        normals = {k: float(v) for k, v in normals_metric.compute().items()}
        fine = normals_metric.histogram.cpu().numpy()
        normals_edges = np.arange(181, dtype=np.float64)
        starts = np.searchsorted(np.arange(len(fine)) * normals_metric.resolution, normals_edges[:-1] - 1e-9)
        normals_counts = np.add.reduceat(fine, starts).astype(np.int64)
    return Analysis(
        seg={"miou": float(seg["miou"]), "pixel_acc": float(seg["pixel_acc"]), "per_class_iou": seg["per_class_iou"].tolist()},
        confusion=seg_metric.confmat.cpu().numpy(),
        depth={k: float(v) for k, v in depth_metric.compute().items()},
        distance_edges=edges,
        distance_abs_rel=np.array([float(m.compute()["abs_rel"]) for m in per_bin]),
        distance_pixels=np.array([int(m.n) for m in per_bin]),
        hist_edges=hist_edges,
        hist_gt=hist_gt,
        hist_pred=hist_pred,
        samples=n,
        hist_samples=min(n, hist_samples),
        class_names=tuple(info.classes),
        normals=normals,
        normals_edges=normals_edges,
        normals_counts=normals_counts,
        normals_examples=examples,
        evaluation={"max_depth_m": float(max_depth), "garg_crop": bool(garg_crop)},
    )


def write_report(analysis: Analysis, out: str | Path) -> list[Path]:
    """Write ``depth_histogram.png``, ``class_iou.png``, ``confusion_matrix.png``,
    ``error_vs_distance.png``, with normals ``normals_error.png`` and ``normals_examples.png``, and
    ``metrics.json`` into ``out``; returns the paths."""
    from mtdense.viz import (
        plot_class_iou, plot_confusion_matrix, plot_depth_histograms, plot_error_vs_distance, plot_normals_error,
        plot_normals_examples,
    )

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        plot_depth_histograms(analysis.hist_edges, analysis.hist_gt, analysis.hist_pred, out / "depth_histogram.png"),
        plot_class_iou(analysis.seg["per_class_iou"], out / "class_iou.png", names=analysis.class_names),
        plot_confusion_matrix(analysis.confusion, out / "confusion_matrix.png", names=analysis.class_names),
        plot_error_vs_distance(analysis.distance_edges, analysis.distance_abs_rel, analysis.distance_pixels, out / "error_vs_distance.png"),
    ]
    if analysis.normals is not None:
        n = analysis.normals
        paths.append(plot_normals_error(analysis.normals_edges, analysis.normals_counts, out / "normals_error.png",
                                        mean=n["normal_mean"], median=n["normal_median"]))
        paths.append(plot_normals_examples(analysis.normals_examples, out / "normals_examples.png"))
    metrics = out / "metrics.json"
    write_json_atomic(metrics, analysis.to_json())
    return paths + [metrics]
