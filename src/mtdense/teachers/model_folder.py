"""A trained mtdense model as the teacher of a folder dataset: segmentation, depth, normals or any
subset of what it predicts (a bigger mtdense model teaching a smaller one, or today's
pseudo-labels on any dataset).

Segmentation is kept where the model is confident, as :mod:`mtdense.teachers.seg` does for an
ONNX network: softmax at the network's size, mapped onto the dataset's classes (the model's own
classes when they are the dataset's, else through a class map), resized to the frame, the
dataset's ignore index under ``threshold``. Depth (metres) and normals are the model's outputs
at the frame's size, as :class:`~mtdense.inference.Predictor` gives them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mtdense.data.description import DESCRIPTION_FILE, DatasetInfo
from mtdense.data.labels import IGNORE_INDEX
from mtdense.teachers.folder import FrameInput, Labels, TeacherContext
from mtdense.teachers.onnx_image import resize_map
from mtdense.teachers.seg import ClassMap, check_threshold, class_balanced_thresholds, confident_labels, map_scores, softmax

__all__ = ["ModelTeacher", "MODEL_TASKS"]

MODEL_TASKS = ("seg", "depth", "normals")


class ModelTeacher:
    """An mtdense model (a checkpoint, or an exported file :class:`~mtdense.inference.Predictor` runs).

    Args:
        checkpoint: The model.
        tasks: What to label (default: every one of seg, depth, normals the model predicts).
        threshold: Least mapped softmax probability to keep a seg pixel, 0..1.
        size: Network input ``(H, W)`` (``None``: each frame's own size).
        device: ``cpu`` or ``cuda``.
        class_map: A class map YAML (model class -> dataset class) where the model's classes are
            not the dataset's.
        class_share: Keep at least this share of each class's predicted pixels, 0..1: a class
            whose pixels the model is rarely sure of gets its own, lower threshold
            (:func:`~mtdense.teachers.seg.class_balanced_thresholds`, counted over every frame of
            the split before the first is labelled). ``None``: one threshold for all classes.

    Raises:
        FileNotFoundError, ValueError: an unreadable model, a task it does not predict, a bad setting.
    """

    def __init__(self, checkpoint: str | Path, tasks: Sequence[str] | None = None, threshold: float = 0.9,
                 size: tuple[int, int] | None = None, device: str = "cpu", class_map: str | Path | None = None,
                 class_share: float | None = None):
        from mtdense.inference import Predictor

        self.checkpoint = Path(checkpoint)
        self.threshold = check_threshold(threshold)
        if class_share is not None and not 0.0 < class_share <= 1.0:
            raise ValueError(f"--class-share {class_share:g}: the share of each class's pixels to keep, in (0, 1]")
        self.class_share = None if class_share is None else float(class_share)
        self.class_thresholds: np.ndarray | None = None
        self.predictor = Predictor(self.checkpoint, device=device, size=tuple(size) if size else None)
        have = [t for t in MODEL_TASKS if t in self.predictor.runtime.tasks]
        if tasks is None:
            tasks = have
        unknown = [t for t in tasks if t not in MODEL_TASKS]
        if unknown:
            raise ValueError(f"--tasks: {unknown} are not tasks; choose from {', '.join(MODEL_TASKS)}")
        missing = [t for t in tasks if t not in have]
        if missing:
            raise ValueError(f"{self.checkpoint}: the model predicts {', '.join(have)}, not {', '.join(missing)}; drop "
                             f"{', '.join(missing)} from --tasks")
        self.tasks = tuple(t for t in MODEL_TASKS if t in tasks)
        if not self.tasks:
            raise ValueError("--tasks: give at least one of seg, depth, normals")
        if class_map is not None and "seg" not in self.tasks:
            raise ValueError("--class-map maps segmentation classes, but seg is not among --tasks")
        if class_share is not None and "seg" not in self.tasks:
            raise ValueError("--class-share sets segmentation thresholds, but seg is not among --tasks")
        self.class_map_path = Path(class_map) if class_map is not None else None
        self.class_map: ClassMap | None = None

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"model": str(self.checkpoint.resolve()), "tasks": list(self.tasks),
                               "input_size": list(self.predictor.size) if self.predictor.size else None}
        if "seg" in self.tasks:
            out["threshold"] = self.threshold
            if self.class_share is not None:
                out["class_share"] = self.class_share
            out.update(self.class_map.describe() if self.class_map is not None else {"class_map": None})
        return out

    def setup(self, info: DatasetInfo) -> None:
        if "seg" not in self.tasks:
            return
        model_classes = tuple(self.predictor.info.classes)
        if self.class_map_path is not None:
            self.class_map = ClassMap.from_yaml(self.class_map_path, info.classes, teacher_classes=model_classes)
        elif model_classes != tuple(info.classes):
            raise ValueError(f"{self.checkpoint}: the model's classes ({', '.join(model_classes)}) are not the dataset's "
                             f"({DESCRIPTION_FILE}: {', '.join(info.classes)}); give --class-map FILE mapping the model's "
                             "classes onto the dataset's, or label only depth / normals with --tasks")
        else:
            self.class_map = ClassMap.identity(model_classes)

    def bind(self, context: TeacherContext) -> None:
        if self.class_map is None:
            self.setup(context.info)
        if self.class_share is None or "seg" not in self.tasks:
            return
        saved = (context.previous or {}).get("class_thresholds")
        if saved is not None and len(saved) == len(context.info.classes):  # a resumed run: the same thresholds
            self.class_thresholds = np.asarray(saved, dtype=np.float32)
            return
        self.class_thresholds = class_balanced_thresholds(self._confidence_histograms(context), self.threshold,
                                                          self.class_share)

    @torch.inference_mode()
    def _confidence_histograms(self, context: TeacherContext, bins: int = 1000) -> np.ndarray:
        """``D x bins`` counts of every frame's pixels by their best dataset class and its probability
        (at the network's output size; unmapped pixels left out)."""
        from tqdm import tqdm

        from mtdense.data.image import read_image

        p = self.predictor
        d = len(context.info.classes)
        counts = np.zeros(d * bins, dtype=np.int64)
        with p.helper_threads():
            for frame in tqdm(context.frames, desc="class thresholds", unit="frame", disable=not context.progress):
                try:
                    rgb = read_image(frame.image, colour_only=True)
                except ValueError:
                    continue  # labelling reports the frame
                logits = p.runtime(p.preprocess([rgb]))["seg"][0].float().cpu().numpy()
                best, confidence = confident_labels(map_scores(softmax(logits), self.class_map), 0.0)
                inside = best != IGNORE_INDEX  # the unmapped classes won there
                b = np.minimum((confidence[inside] * bins).astype(np.int64), bins - 1)
                counts += np.bincount(best[inside].astype(np.int64) * bins + b, minlength=d * bins)
        return counts.reshape(d, bins)

    def state(self) -> dict[str, Any]:
        """The per-class thresholds (:attr:`class_share`), kept for a resumed run."""
        if self.class_thresholds is None:
            return {}
        return {"class_thresholds": [round(float(t), 4) for t in self.class_thresholds]}

    @torch.inference_mode()
    def label(self, batch: Sequence[FrameInput]) -> list[Labels | BaseException]:
        p = self.predictor
        out: list[Labels | None] = [None] * len(batch)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, item in enumerate(batch):
            groups.setdefault(tuple(item.rgb.shape[:2]), []).append(i)
        with p.helper_threads():
            for size, idx in groups.items():
                y = p.runtime(p.preprocess([batch[i].rgb for i in idx]))
                depth = normals = None
                if "depth" in self.tasks:  # one seg channel: postprocess resizes its labels for nothing else
                    depth = p.postprocess({"seg": y["seg"][:, :1], "depth": y["depth"]}, size)[1].cpu().numpy()
                if "normals" in self.tasks:
                    normals = p.postprocess_normals(y, size).permute(0, 2, 3, 1).cpu().numpy()
                logits = y["seg"].float().cpu().numpy() if "seg" in self.tasks else None
                for j, i in enumerate(idx):
                    maps: dict[str, np.ndarray] = {}
                    if logits is not None:
                        mapped = resize_map(map_scores(softmax(logits[j]), self.class_map), size)
                        threshold = self.threshold if self.class_thresholds is None else self.class_thresholds
                        maps["seg"] = confident_labels(mapped, threshold)[0]
                    if depth is not None:
                        maps["depth"] = depth[j].astype(np.float32)
                    if normals is not None:
                        maps["normals"] = np.ascontiguousarray(normals[j], dtype=np.float32)
                    out[i] = Labels(maps)
        return out  # type: ignore[return-value]
