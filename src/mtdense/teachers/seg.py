"""Segmentation teachers: a network with its own class list, mapped onto the dataset's classes.

A class map is a YAML file::

    teacher_classes: [background, person, bicycle, car, bus]   # optional: the network's classes, in order
    map:                                                        # teacher class (name or index) -> dataset class
      person: person
      car: vehicle
      bus: vehicle
      2: bicycle
      background: null                                          # null, or left out: ignored

:class:`ClassMap` reads it against the dataset's classes. A pixel's probability of a dataset class
is the sum of the softmax probabilities of the teacher classes mapped to it (:func:`map_scores`;
``car`` and ``bus`` both count for ``vehicle``); the pixel gets the most probable dataset class
where that sum is at least the threshold, and "no label" where it is under it or where the
unmapped teacher classes together are more probable (:func:`confident_labels`). Scores are
mapped at the network's size and resized to the frame's (bilinear; both steps are linear, so
the order does not matter), so memory grows with the dataset's classes, not the teacher's.

:class:`OnnxSegTeacher` is a segmentation network exported to ONNX (one image in, ``N x K x h x
w`` class scores out) as a folder teacher.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mtdense.data.description import DatasetInfo
from mtdense.data.labels import IGNORE_INDEX
from mtdense.io import read_yaml
from mtdense.items import item_failure
from mtdense.teachers.folder import FrameInput, Labels, TeacherContext, TeacherError
from mtdense.teachers.onnx_image import OnnxImageNet, resize_map

__all__ = ["class_balanced_thresholds", "ClassMap", "softmax", "map_scores", "confident_labels", "OnnxSegTeacher", "check_threshold"]

_MAP_KEYS = ("teacher_classes", "map")


def check_threshold(threshold: float) -> float:
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0.0 <= threshold <= 1.0):
        raise ValueError(f"--threshold is a softmax probability, 0..1; got {threshold}")
    return float(threshold)


@dataclass(frozen=True)
class ClassMap:
    """Teacher class index -> dataset class index.

    Attributes:
        path: The YAML file it came from (None: built in code).
        teacher_classes: The teacher's class names (None where the file gives none).
        targets: Teacher class index -> dataset class index, for the mapped classes.
        dataset_classes: The dataset's class names.
    """

    path: Path | None
    teacher_classes: tuple[str, ...] | None
    targets: dict[int, int]
    dataset_classes: tuple[str, ...]

    @classmethod
    def from_yaml(cls, path: str | Path, dataset_classes: Sequence[str], teacher_classes: Sequence[str] | None = None
                  ) -> "ClassMap":
        """Read a class map (see the module docstring).

        Args:
            path: The YAML file.
            dataset_classes: The dataset's class names.
            teacher_classes: The teacher's class names where it carries them (an mtdense model);
                a ``teacher_classes`` list in the file must then equal them.

        Raises:
            FileNotFoundError: No such file. ValueError: not YAML, an unknown key, a teacher
                class that is not the teacher's, a dataset class that is not the dataset's, a
                teacher class mapped twice; the message names the file and the entry.
        """
        path = Path(path)
        data = read_yaml(path, "class map", "write one (teacher_classes: [...], map: {teacher class: dataset class})")
        if not isinstance(data, dict) or "map" not in data:
            raise ValueError(f"{path}: a class map needs a 'map:' mapping of teacher class (name or index) -> dataset "
                             "class name, and optionally 'teacher_classes: [names]'")
        unknown = [k for k in data if k not in _MAP_KEYS]
        if unknown:
            raise ValueError(f"{path}: '{unknown[0]}' is not a key of a class map; known: {', '.join(_MAP_KEYS)}")
        names = data.get("teacher_classes")
        if names is not None:
            if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"{path}: 'teacher_classes' must be a list of class names, got {names!r}")
            if len(set(names)) != len(names):
                raise ValueError(f"{path}: 'teacher_classes' names a class twice")
            if teacher_classes is not None and list(names) != list(teacher_classes):
                raise ValueError(f"{path}: 'teacher_classes' {names} are not the teacher's classes {list(teacher_classes)}; "
                                 "drop the list (the teacher carries its own) or correct it")
        names = tuple(names) if names is not None else (tuple(teacher_classes) if teacher_classes is not None else None)
        mapping = data["map"]
        if not isinstance(mapping, dict) or not mapping:
            raise ValueError(f"{path}: 'map' must be a non-empty mapping of teacher class -> dataset class, got {mapping!r}")
        dataset_classes = tuple(dataset_classes)
        targets: dict[int, int] = {}
        for key, value in mapping.items():
            if isinstance(key, bool) or not isinstance(key, (int, str)):
                raise ValueError(f"{path}: map key {key!r} is neither a teacher class name nor an index")
            if isinstance(key, int):
                if key < 0 or (names is not None and key >= len(names)):
                    size = f"0..{len(names) - 1}" if names is not None else ">= 0"
                    raise ValueError(f"{path}: map key {key} is no teacher class index ({size})")
                index = key
            else:
                if names is None:
                    raise ValueError(f"{path}: map key {key!r} names a teacher class, but the file has no "
                                     "'teacher_classes' list to look it up in; add the list, or map by index")
                if key not in names:
                    raise ValueError(f"{path}: map key {key!r} is not a teacher class; the teacher's classes are "
                                     f"{', '.join(names)}")
                index = names.index(key)
            if value is None:
                continue
            if not isinstance(value, str) or value not in dataset_classes:
                raise ValueError(f"{path}: map entry {key!r}: {value!r} is not a class of the dataset; its classes are "
                                 f"{', '.join(dataset_classes)} (null, or leaving the entry out, ignores the class)")
            if index in targets:
                raise ValueError(f"{path}: teacher class {key!r} (index {index}) is mapped twice")
            targets[index] = dataset_classes.index(value)
        return cls(path=path, teacher_classes=names, targets=targets, dataset_classes=dataset_classes)

    @classmethod
    def identity(cls, classes: Sequence[str]) -> "ClassMap":
        """Each class to itself (a teacher trained on the dataset's classes)."""
        classes = tuple(classes)
        return cls(path=None, teacher_classes=classes, targets={i: i for i in range(len(classes))}, dataset_classes=classes)

    def check_teacher_count(self, k: int, source: str | Path) -> None:
        """Raise where the teacher's ``k`` class scores do not fit the map.

        Raises:
            TeacherError: ``k`` differs from the ``teacher_classes`` count, or the map names an
                index ``>= k``; the message names ``source`` and the map file.
        """
        if self.teacher_classes is not None and k != len(self.teacher_classes):
            raise TeacherError(f"{source}: gives {k} class scores, but {self.path or 'the class map'} names "
                               f"{len(self.teacher_classes)} teacher classes; correct teacher_classes")
        high = [i for i in self.targets if i >= k]
        if high:
            raise TeacherError(f"{self.path or 'the class map'}: maps teacher class index {max(high)}, but {source} gives "
                               f"only {k} class scores (0..{k - 1})")

    def matrix(self, k: int) -> np.ndarray:
        """``(D + 1) x k`` float32: row ``d`` sums the teacher classes of dataset class ``d``;
        the last row the unmapped ones."""
        m = np.zeros((len(self.dataset_classes) + 1, k), np.float32)
        for t in range(k):
            m[self.targets.get(t, len(self.dataset_classes)), t] = 1.0
        return m

    def describe(self) -> dict[str, Any]:
        names = self.teacher_classes
        return {"class_map": str(self.path.resolve()) if self.path else None,
                "map": {(names[t] if names else str(t)): self.dataset_classes[d] for t, d in sorted(self.targets.items())}}


def softmax(scores: np.ndarray) -> np.ndarray:
    """Softmax over the first axis of ``K x h x w`` scores."""
    s = np.asarray(scores, np.float32)
    e = np.exp(s - s.max(axis=0, keepdims=True))
    return e / e.sum(axis=0, keepdims=True)


def map_scores(probabilities: np.ndarray, class_map: ClassMap) -> np.ndarray:
    """``K x h x w`` teacher probabilities -> ``(D + 1) x h x w``: per dataset class the sum of its
    teacher classes' probabilities, then the unmapped classes' sum."""
    k = probabilities.shape[0]
    return np.tensordot(class_map.matrix(k), probabilities, axes=(1, 0)).astype(np.float32)


def confident_labels(mapped: np.ndarray, threshold: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(D + 1) x H x W`` mapped probabilities -> ``(labels, confidence)``: ``H x W`` uint8 dataset
    class indices (255 where the best class's probability is under ``threshold`` or where the
    unmapped classes are more probable) and ``H x W`` float32 probability of the best class.
    ``threshold`` is one probability, or ``D`` of them, one per dataset class (the best class's
    applies to a pixel)."""
    best = mapped.argmax(axis=0)
    d = mapped.shape[0] - 1
    confidence = np.take_along_axis(mapped, best[None], axis=0)[0]
    if np.ndim(threshold):
        per_class = np.append(np.asarray(threshold, dtype=np.float32), np.float32(np.inf))  # unmapped: never kept
        keep = (best < d) & (confidence >= per_class[best])
    else:
        keep = (best < d) & (confidence >= threshold)
    return np.where(keep, best, IGNORE_INDEX).astype(np.uint8), confidence.astype(np.float32)


class OnnxSegTeacher:
    """A segmentation network exported to ONNX, mapped onto the dataset's classes.

    Args:
        net: The network (its first output: ``N x K x h x w`` class scores, logits).
        class_map: The class map YAML file.
        threshold: Least mapped softmax probability to keep a pixel, 0..1.
    """

    tasks = ("seg",)

    def __init__(self, net: OnnxImageNet, class_map: str | Path, threshold: float = 0.9):
        self.net = net
        self.class_map_path = Path(class_map)
        self.threshold = check_threshold(threshold)
        self.class_map: ClassMap | None = None

    def describe(self) -> dict[str, Any]:
        cm = self.class_map.describe() if self.class_map is not None else {"class_map": str(self.class_map_path.resolve())}
        return {**self.net.describe(), **cm, "threshold": self.threshold}

    def setup(self, info: DatasetInfo) -> None:
        """Read the class map against the dataset's classes (before :meth:`describe` is saved)."""
        self.class_map = ClassMap.from_yaml(self.class_map_path, info.classes)
        shape = self.net.session.get_outputs()[0].shape
        if len(shape) == 4 and isinstance(shape[1], int):
            self.class_map.check_teacher_count(shape[1], self.net.path)

    def bind(self, context: TeacherContext) -> None:
        if self.class_map is None or self.class_map.dataset_classes != tuple(context.info.classes):
            self.setup(context.info)

    def label(self, batch: Sequence[FrameInput]) -> list[Labels | BaseException]:
        raws = self.net.run([item.rgb for item in batch])
        out: list[Labels | BaseException] = []
        for item, raw in zip(batch, raws):
            self.class_map.check_teacher_count(raw.shape[0], self.net.path)
            try:
                mapped = resize_map(map_scores(softmax(raw), self.class_map), item.rgb.shape[:2])
                labels, _ = confident_labels(mapped, self.threshold)
                out.append(Labels({"seg": labels}))
            except Exception as exc:
                if not item_failure(exc):
                    raise
                out.append(exc)
        return out


def class_balanced_thresholds(histograms: np.ndarray, threshold: float, share: float) -> np.ndarray:
    """Per-class thresholds that keep at least ``share`` of each class's pixels (class-balanced
    self-training, Zou et al., ECCV 2018): for class ``c``, the least of ``threshold`` and the
    probability above which ``share`` of the pixels predicted as ``c`` lie. A class the teacher
    is sure of keeps ``threshold``; a thin class whose pixels the teacher is rarely sure of (poles,
    traffic lights) keeps its most confident ``share`` instead of almost nothing.

    Args:
        histograms: ``D x B`` counts of the pixels predicted as each class by their probability,
            ``B`` equal bins over ``[0, 1]``.
        threshold: The global threshold, 0..1.
        share: The share of each class's pixels kept at least, 0..1.

    Returns:
        ``D`` float32 thresholds (``threshold`` for a class never predicted).
    """
    counts = np.asarray(histograms, dtype=np.float64)
    bins = counts.shape[1]
    out = np.full(counts.shape[0], threshold, dtype=np.float32)
    for c, row in enumerate(counts):
        total = row.sum()
        if total <= 0:
            continue
        above = np.cumsum(row[::-1])[::-1]  # pixels in bin b or higher
        # the highest bin edge with at least `share` of the class's pixels at or above it
        k = int(np.nonzero(above >= share * total)[0].max())
        out[c] = min(threshold, k / bins)
    return out
