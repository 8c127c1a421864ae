"""What a dataset is about: its class names and colours, its ignore label, its depth encoding and
the tasks it has labels for.

A :class:`DatasetInfo` travels with the data (every dataset of :func:`mtdense.data.open.open_dataset`
has ``.info``) so that whatever comes later (losses, metrics, pictures, a checkpoint) reads the
class names from the data, never from a global constant. It is plain data: :meth:`DatasetInfo.to_dict`
holds only ``str`` / ``int`` / ``float`` / ``list`` (a weights-only ``torch.load`` reads it) and
:meth:`DatasetInfo.from_dict` checks it again on the way back.

The ``folder`` format describes itself in ``ROOT/dataset.yaml`` (:func:`read_dataset_yaml`)::

    classes: [floor, wall, person]     # required: names of class indices 0..K-1
    colors: [[128, 64, 128], ...]      # optional: K RGB triples 0..255 (default: default_palette(K))
    ignore_index: 255                  # optional: mask value of unlabelled pixels, K..255 (default 255)
    depth_scale: 256                   # optional: depth_m = png_value / depth_scale (default 256)
    stereo: {baseline: 0.54, fx: 721.5} # optional: the rig of right/SPLIT/NAME.png views (metres, px
                                       # at the size of images/), for stereo teachers (read_stereo)

``ignore_index`` describes the files; samples always carry 255 for ignored pixels
(:data:`mtdense.data.labels.IGNORE_INDEX`), whatever the files use.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mtdense.data.labels import IGNORE_INDEX, TRAIN_CLASS_NAMES, TRAIN_PALETTE
from mtdense.io import read_yaml

__all__ = ["TASKS", "FORMATS", "DESCRIPTION_FILE", "DatasetInfo", "default_palette", "read_dataset_yaml",
           "model_dataset_info", "StereoRig", "read_stereo"]

TASKS = ("seg", "depth", "normals")
"""Every task a dataset may have labels for, in this canonical order."""

FORMATS = ("cityscapes", "folder", "nyuv2", "kitti")
"""Dataset formats by name (``data.format`` in a recipe)."""

DESCRIPTION_FILE = "dataset.yaml"
"""The file that describes a ``folder`` dataset, at its root."""

_YAML_KEYS = ("classes", "colors", "ignore_index", "depth_scale", "stereo")
_DICT_KEYS = ("classes", "colors", "ignore_index", "depth_scale", "tasks", "format")
_GRID_LEVELS = 8  # candidate colours: an 8 x 8 x 8 RGB grid
_MIN_LIGHTNESS = 20.0  # CIELAB L*: darker candidates are too close to the black of ignored pixels


def _lab(rgb: np.ndarray) -> np.ndarray:
    """``N x 3`` uint8 RGB -> CIELAB (L* 0..100, a*, b*) as float64."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.uint8).reshape(-1, 1, 3), cv2.COLOR_RGB2LAB)
    return lab.reshape(-1, 3).astype(np.float64) * (100 / 255, 1, 1) - (0, 128, 128)


@lru_cache(maxsize=1)
def _palette_sequence() -> tuple[tuple[int, int, int], ...]:
    """255 colours: the 19 Cityscapes ones, then farthest-point picks (see :func:`default_palette`)."""
    levels = np.linspace(0, 255, _GRID_LEVELS).round().astype(np.uint8)
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), axis=-1).reshape(-1, 3)
    lab = _lab(grid)
    keep = lab[:, 0] >= _MIN_LIGHTNESS
    grid, lab = grid[keep], lab[keep]
    chosen = [tuple(int(c) for c in rgb) for rgb in TRAIN_PALETTE.tolist()]
    nearest = np.linalg.norm(lab[:, None] - _lab(TRAIN_PALETTE)[None], axis=2).min(axis=1)
    while len(chosen) < IGNORE_INDEX:
        i = int(np.argmax(nearest))  # ties: the first in grid order, so the sequence is fixed
        chosen.append(tuple(int(c) for c in grid[i]))
        nearest = np.minimum(nearest, np.linalg.norm(lab - lab[i], axis=1))
    return tuple(chosen)


def default_palette(num_classes: int) -> np.ndarray:
    """Distinct colours for ``num_classes`` classes (up to 255), the same for the same ``K`` every time.

    The first 19 are the official Cityscapes train-id colours (a street dataset looks familiar,
    and the set was chosen to be told apart). Each further colour is the one of an 8 x 8 x 8 RGB
    grid farthest, in CIELAB (roughly perceptual) distance, from every colour chosen before it:
    the 20th differs from all 19 by about 58 Lab units, the 64th still by about 22. Candidates
    darker than L* = 20 are left out, since pictures paint ignored pixels black. A fixed
    farthest-point rule rather than a colormap such as tab20: it gives any K up to 255, never
    repeats and keeps the colours of a smaller K when K grows.

    Returns:
        ``K x 3`` uint8 RGB.
    """
    if not 0 <= num_classes <= IGNORE_INDEX:
        raise ValueError(f"num_classes must be in 0..{IGNORE_INDEX}, got {num_classes}")
    return np.array(_palette_sequence()[:num_classes], dtype=np.uint8).reshape(num_classes, 3)


def _fail(source: str, key: str | None, message: str) -> ValueError:
    where = f"{source}: " if key is None else f"{source}: '{key}' "
    return ValueError(where + message)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _check_classes(value: Any, source: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise _fail(source, "classes", f"must be a non-empty list of class names, got {value!r}; "
                    "write e.g. 'classes: [floor, wall, person]'")
    for i, name in enumerate(value):
        if not isinstance(name, str):
            raise _fail(source, "classes", f"entry {i} is {name!r} ({type(name).__name__}), not a string; "
                        "quote it (YAML reads yes / no / null / numbers as other types)")
        if not name.strip():
            raise _fail(source, "classes", f"entry {i} is an empty name; give every class a name")
    seen: dict[str, int] = {}
    for i, name in enumerate(value):
        if name in seen:
            raise _fail(source, "classes", f"name {name!r} appears twice (entries {seen[name]} and {i}); "
                        "class names must be unique")
        seen[name] = i
    if len(value) > IGNORE_INDEX:
        raise _fail(source, "classes", f"has {len(value)} names; at most {IGNORE_INDEX} classes fit an 8-bit mask "
                    f"beside the ignore label")
    return tuple(value)


def _check_colors(value: Any, k: int, source: str) -> tuple[tuple[int, int, int], ...]:
    if not isinstance(value, (list, tuple)):
        raise _fail(source, "colors", f"must be a list of {k} [r, g, b] triples, got {value!r}")
    if len(value) != k:
        raise _fail(source, "colors", f"has {len(value)} entries but there are {k} classes; give one [r, g, b] "
                    "per class, in the order of 'classes', or leave 'colors' out for the default palette")
    out = []
    for i, rgb in enumerate(value):
        if (not isinstance(rgb, (list, tuple)) or len(rgb) != 3 or not all(_is_int(c) for c in rgb)
                or not all(0 <= c <= 255 for c in rgb)):
            raise _fail(source, "colors", f"entry {i} is {rgb!r}; each colour is [r, g, b] with integers 0..255")
        out.append((int(rgb[0]), int(rgb[1]), int(rgb[2])))
    return tuple(out)


def _check_ignore(value: Any, k: int, source: str) -> int:
    if not _is_int(value) or not k <= value <= 255:
        raise _fail(source, "ignore_index", f"is {value!r}; it must be an integer from {k} (the number of classes) "
                    "to 255: the mask value of unlabelled pixels, outside the class indices 0..K-1")
    return int(value)


def _check_depth_scale(value: Any, source: str) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value) or value <= 0):
        raise _fail(source, "depth_scale", f"is {value!r}; it must be a number > 0 (depth_m = png_value / depth_scale, "
                    "e.g. 256, or 1000 for millimetres)")
    return float(value)


def _check_tasks(value: Any, source: str) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise _fail(source, "tasks", f"must be a list of task names out of {list(TASKS)}, got {value!r}")
    unknown = [t for t in value if t not in TASKS]
    if unknown:
        raise _fail(source, "tasks", f"holds {unknown}, not tasks; known: {list(TASKS)}")
    if len(set(value)) != len(value):
        raise _fail(source, "tasks", f"names a task twice: {list(value)}")
    return tuple(t for t in TASKS if t in value)


def _check_keys(data: Any, allowed: Sequence[str], source: str) -> None:
    if not isinstance(data, Mapping):
        raise _fail(source, None, f"must be a mapping of keys {list(allowed)}, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise _fail(source, str(key), f"is not a known key{hint}; known keys: {', '.join(allowed)}")


@dataclass(frozen=True)
class DatasetInfo:
    """The description of a dataset.

    Attributes:
        classes: Names of class indices ``0..K-1``.
        colors: One RGB colour (ints 0..255) per class; default: :func:`default_palette`.
        ignore_index: Mask value of unlabelled pixels in the files, ``K..255``. Samples always
            use 255 (the files' value is mapped to it).
        depth_scale: ``depth_m = png_value / depth_scale`` for 16-bit depth PNGs.
        tasks: The tasks the data has labels for, a subset of :data:`TASKS` in that order.
        format: The dataset format (one of :data:`FORMATS`).

    Raises:
        ValueError: A field out of its range (as :meth:`from_dict`).
    """

    classes: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...] = field(default=())
    ignore_index: int = IGNORE_INDEX
    depth_scale: float = 256.0
    tasks: tuple[str, ...] = ("seg",)
    format: str = "folder"

    def __post_init__(self) -> None:
        source = "dataset description"
        classes = _check_classes(self.classes, source)
        colors = self.colors.tolist() if isinstance(self.colors, np.ndarray) else list(self.colors)
        if not colors:
            colors = default_palette(len(classes)).tolist()
        if self.format not in FORMATS:
            raise _fail(source, "format", f"is {self.format!r}; known formats: {', '.join(FORMATS)}")
        set_ = object.__setattr__  # frozen: normalise the fields once, here
        set_(self, "classes", classes)
        set_(self, "colors", _check_colors(colors, len(classes), source))
        set_(self, "ignore_index", _check_ignore(self.ignore_index, len(classes), source))
        set_(self, "depth_scale", _check_depth_scale(self.depth_scale, source))
        set_(self, "tasks", _check_tasks(self.tasks, source))

    @property
    def num_classes(self) -> int:
        """``K``, the number of classes."""
        return len(self.classes)

    @property
    def palette(self) -> np.ndarray:
        """``K x 3`` uint8 RGB, the colour of each class index."""
        return np.array(self.colors, dtype=np.uint8).reshape(self.num_classes, 3)

    def colorize(self, seg: np.ndarray) -> np.ndarray:
        """``H x W`` class indices (255 = ignore) -> ``H x W x 3`` uint8 RGB; ignore and any value
        outside ``0..K-1`` are black."""
        seg = np.asarray(seg)
        if seg.dtype.kind not in "iu":
            raise ValueError(f"seg must hold integer class indices, got {seg.dtype}")
        lut = np.zeros((256, 3), dtype=np.uint8)
        lut[: self.num_classes] = self.palette
        return lut[np.clip(seg, 0, 255).astype(np.intp)]

    @classmethod
    def cityscapes(cls, tasks: Sequence[str] = ("seg", "depth")) -> "DatasetInfo":
        """The 19 Cityscapes train classes with their official colours, ignore 255."""
        return cls(classes=tuple(TRAIN_CLASS_NAMES), colors=TRAIN_PALETTE,
                   ignore_index=IGNORE_INDEX, depth_scale=256.0, tasks=tuple(tasks), format="cityscapes")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (``str`` / ``int`` / ``float`` / ``list`` only) for a checkpoint or a JSON file."""
        return {
            "classes": list(self.classes),
            "colors": [list(c) for c in self.colors],
            "ignore_index": int(self.ignore_index),
            "depth_scale": float(self.depth_scale),
            "tasks": list(self.tasks),
            "format": str(self.format),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "dataset description") -> "DatasetInfo":
        """The inverse of :meth:`to_dict`; every field is checked again.

        Args:
            data: ``classes`` (required), ``colors``, ``ignore_index``, ``depth_scale``, ``tasks``,
                ``format`` (optional).
            source: Where the data came from (a file, a checkpoint), named in errors.

        Raises:
            ValueError: An unknown key or a bad value; the message names ``source`` and the key.
        """
        _check_keys(data, _DICT_KEYS, source)
        return _build(data, source, tasks=data.get("tasks", ("seg",)), format=data.get("format", "folder"))

    def __repr__(self) -> str:
        return (f"DatasetInfo(format={self.format!r}, classes={list(self.classes)}, tasks={list(self.tasks)}, "
                f"ignore_index={self.ignore_index}, depth_scale={self.depth_scale:g})")


def _build(data: Mapping[str, Any], source: str, tasks: Any, format: str) -> DatasetInfo:
    """Check ``data`` field by field with ``source`` in the messages, then build the info."""
    if "classes" not in data:
        raise _fail(source, "classes", "is missing; list the class names of mask values 0..K-1, "
                    "e.g. 'classes: [floor, wall, person]'")
    classes = _check_classes(data["classes"], source)
    k = len(classes)
    colors = _check_colors(data["colors"], k, source) if data.get("colors") is not None else ()
    ignore = _check_ignore(data["ignore_index"], k, source) if "ignore_index" in data else IGNORE_INDEX
    scale = _check_depth_scale(data["depth_scale"], source) if "depth_scale" in data else 256.0
    tasks = _check_tasks(tasks, source)
    if format not in FORMATS:
        raise _fail(source, "format", f"is {format!r}; known formats: {', '.join(FORMATS)}")
    return DatasetInfo(classes=classes, colors=colors, ignore_index=ignore, depth_scale=scale, tasks=tasks, format=format)


def read_dataset_yaml(path: str | Path, tasks: Sequence[str] = ("seg",), format: str = "folder") -> DatasetInfo:
    """Read a ``dataset.yaml`` (keys: ``classes``, optional ``colors``, ``ignore_index``, ``depth_scale``).

    Args:
        path: The file.
        tasks: The tasks the data has (the format decides, not the file).
        format: The format name recorded in the info.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not YAML, not a mapping, an unknown key or a bad value; the message names
            the file and the key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no dataset description; write one with at least 'classes: [name, ...]' "
                                f"(the class names of mask values 0..K-1)")
    data = read_yaml(path)
    if data is None:
        raise ValueError(f"{path}: the file is empty; write at least 'classes: [name, ...]'")
    _check_keys(data, _YAML_KEYS, str(path))
    if data.get("stereo") is not None:
        _check_stereo(data["stereo"], str(path))
    return _build(data, str(path), tasks=tasks, format=format)


@dataclass(frozen=True)
class StereoRig:
    """The stereo rig of a ``folder`` dataset's ``right/`` views (``stereo:`` in ``dataset.yaml``).

    Attributes:
        baseline: Distance between the two cameras, metres.
        fx: Focal length in px at the size of the images in ``images/``.
    """

    baseline: float
    fx: float

    def depth(self, disparity_px: np.ndarray) -> np.ndarray:
        """Disparity in px -> depth in metres (``baseline * fx / d``; 0 where ``d <= 0`` or not finite)."""
        d = np.nan_to_num(np.asarray(disparity_px, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        out = np.zeros(d.shape, np.float64)
        np.divide(self.baseline * self.fx, d, out=out, where=d > 0)
        return out.astype(np.float32)


def _check_stereo(value: Any, source: str) -> StereoRig:
    example = "write e.g. 'stereo: {baseline: 0.54, fx: 721.5}' (metres between the cameras, focal length in px)"
    if not isinstance(value, Mapping) or set(value) != {"baseline", "fx"}:
        raise _fail(source, "stereo", f"is {value!r}; it needs exactly the keys baseline and fx; {example}")
    for key in ("baseline", "fx"):
        v = value[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise _fail(source, "stereo", f"{key} is {v!r}, not a number > 0; {example}")
    return StereoRig(baseline=float(value["baseline"]), fx=float(value["fx"]))


def read_stereo(path: str | Path) -> StereoRig | None:
    """The ``stereo:`` rig of a ``dataset.yaml``, or None where it has none.

    Raises:
        FileNotFoundError, ValueError: As :func:`read_dataset_yaml` (the whole file is checked).
    """
    import yaml

    read_dataset_yaml(path)
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return None if data.get("stereo") is None else _check_stereo(data["stereo"], str(path))


def model_dataset_info(model: Any) -> DatasetInfo:
    """The description of the data a model was trained on.

    Args:
        model: A :class:`~mtdense.models.MultiTaskNet` (or anything with ``dataset_info``, plain
            data or ``None``, and ``tasks``, a mapping of task -> channels).

    Returns:
        Its saved :class:`DatasetInfo`; for a model without one (a checkpoint from before the
        description was saved), the Cityscapes description with the model's tasks.

    Raises:
        ValueError: The saved description is broken, or its class count differs from the
            model's segmentation channels.
    """
    tasks = dict(getattr(model, "tasks", None) or {"seg": len(TRAIN_CLASS_NAMES)})
    saved = getattr(model, "dataset_info", None)
    if saved is None:
        return DatasetInfo.cityscapes(tasks=[t for t in TASKS if t in tasks])
    if isinstance(saved, DatasetInfo):
        info = saved
    else:
        info = DatasetInfo.from_dict(saved, source="the checkpoint's dataset_info")
    if "seg" in tasks and tasks["seg"] != info.num_classes:
        raise ValueError(f"the checkpoint's dataset_info names {info.num_classes} classes but the model has "
                         f"{tasks['seg']} segmentation outputs")
    return info
