"""Running a teacher over a split of a ``folder`` dataset: label sources beside the real labels.

A folder teacher labels frames of ``ROOT/images/SPLIT`` with segmentation, depth or normals and
:func:`label_folder_split` writes each of its outputs into a folder of its own,
``ROOT/OUT/SPLIT/NAME.png``, in exactly the encoding of the real labels of the format
(:mod:`mtdense.data.folder`), so that it reads as a label source later:

- seg: 8-bit class indices of the dataset's classes, the dataset's ``ignore_index`` where the
  teacher is unsure or has no such class (as ``masks/``);
- depth: 16-bit ``round(depth_m * depth_scale)``, 0 = no value (as ``depth/``; a depth beyond
  what 16 bits hold at that scale is written as no value, never clipped to a wrong one);
- normals: 8-bit RGB ``round((n + 1) * 127.5)``, 0 = no value (as ``normals/``).

The real label folders (``images``, ``masks``, ``depth``, ``normals``, ``right``) are never written.
Files are written atomically; each output folder keeps ``ROOT/OUT/SPLIT_summary.json`` (the
teacher's settings, the frames done, kept and skipped with the reason, coverage, per-class
shares, per-frame figures such as the fit residual of a monocular teacher), written before the
first PNG, so a folder is known as a teacher's and an interrupted run resumes: frames whose
outputs exist are kept unless ``overwrite``. A folder written with other settings, or holding
PNGs no teacher run recorded, is refused.

A teacher is any object with ``tasks`` (what it writes), ``describe()`` (its settings, JSON-ready),
optionally ``setup(info)`` (called first with the dataset description, before the settings are
compared with an earlier run's: a class map is read there), ``bind(context)`` (called once
before the first frame is computed, with the dataset; it may refuse the
dataset, or do work over all frames, such as a global alignment) and ``label(batch)`` (one result
per :class:`FrameInput`: a :class:`Labels`, or an exception for that frame, e.g.
:class:`FrameSkipped`). :class:`StereoDepthTeacher` is the stereo teachers' form of it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mtdense.data.description import DESCRIPTION_FILE, TASKS, DatasetInfo
from mtdense.data.folder import (
    IMAGE_FOLDER, LABEL_FOLDERS, RIGHT_FOLDER, FolderFrame, list_folder_frames, read_depth_png, read_folder_info,
    read_mask, read_normals_png, right_image,
)
from mtdense.data.image import read_image
from mtdense.data.labels import IGNORE_INDEX
from mtdense.data.normals import encode_normals
from mtdense.io import write_json_atomic, write_png_atomic
from mtdense.items import item_failure, item_message
from mtdense.teachers.layout import check_folder_name

__all__ = [
    "RESERVED_FOLDERS", "FrameInput", "Labels", "FrameSkipped", "TeacherError", "TeacherContext", "FolderTeacher",
    "FolderTeacherSummary", "label_folder_split", "summary_path", "encode_depth_png", "StereoDepthTeacher",
    "read_anchor_depth",
]

RESERVED_FOLDERS = frozenset({IMAGE_FOLDER, RIGHT_FOLDER, *LABEL_FOLDERS.values()})
"""The folders of the real data: a teacher never writes there."""

_SAVE_EVERY_S = 30.0  # seconds between two writes of the summary during a run (it grows with the frames)


@dataclass
class FrameInput:
    """One frame handed to a teacher: its files and its decoded image (``H x W x 3`` uint8 RGB)."""

    frame: FolderFrame
    rgb: np.ndarray


@dataclass
class Labels:
    """What a teacher gives for one frame.

    Attributes:
        outputs: Task -> map at the frame's size: ``seg`` ``H x W`` uint8 dataset class indices
            (255 = no label), ``depth`` ``H x W`` float32 metres (0 = no value), ``normals``
            ``H x W x 3`` float32 unit vectors (all 0 = no value).
        info: Figures about the frame for the summary (JSON-ready), e.g. ``{"residual": 0.03}``.
    """

    outputs: dict[str, np.ndarray]
    info: dict[str, Any] = field(default_factory=dict)


class TeacherError(ValueError):
    """A fault of the teacher or its settings found while labelling (a network whose class count
    is not its class map's, say): it would fail every frame, so the run stops with it."""


class FrameSkipped(ValueError):
    """A frame a teacher leaves out on purpose (no anchors, a poor fit, no right view).

    Args:
        message: ``FILE: what; what to do``.
        reason: A short key the summary groups the frames by (``no_anchors``, ``residual``, ...).
        info: Figures about the frame for the summary (e.g. the residual that dropped it).
    """

    def __init__(self, message: str, reason: str, info: dict[str, Any] | None = None):
        super().__init__(message)
        self.reason = reason
        self.info = dict(info or {})


@dataclass
class TeacherContext:
    """What :meth:`FolderTeacher.bind` gets.

    Attributes:
        root: The dataset root.
        split: The split.
        info: The dataset description.
        frames: Every frame of the split (after ``limit``).
        todo: The frames this run computes.
        previous: The ``state`` an earlier run of the same teacher saved (resuming), or None.
        progress: Whether to show progress bars.
    """

    root: Path
    split: str
    info: DatasetInfo
    frames: list[FolderFrame]
    todo: list[FolderFrame]
    previous: dict[str, Any] | None = None
    progress: bool = True


class FolderTeacher(Protocol):
    tasks: tuple[str, ...]

    def describe(self) -> dict[str, Any]: ...

    def bind(self, context: TeacherContext) -> None: ...

    def label(self, batch: Sequence[FrameInput]) -> list[Labels | BaseException]: ...


def summary_path(root: str | Path, out: str, split: str) -> Path:
    """``ROOT/OUT/SPLIT_summary.json``."""
    return Path(root) / out / f"{split}_summary.json"


def encode_depth_png(depth_m: np.ndarray, depth_scale: float) -> tuple[np.ndarray, int]:
    """Metres -> the folder format's 16-bit depth PNG: ``round(d * depth_scale)``, 0 = no value.

    Returns:
        The ``uint16`` map, and how many positive depths were beyond ``65535 / depth_scale`` m
        (written as no value, not clipped).
    """
    d = np.nan_to_num(np.asarray(depth_m, np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    v = np.rint(d * depth_scale)
    beyond = v > 65535
    v[beyond | (v < 0)] = 0
    return v.astype(np.uint16), int(beyond.sum())


def read_anchor_depth(path: Path, info: DatasetInfo, size: tuple[int, int], image: Path) -> np.ndarray:
    """A depth PNG of the folder encoding in metres, checked against its image's size."""
    depth = read_depth_png(path, info.depth_scale)
    if depth.shape != size:
        raise ValueError(f"{path}: {depth.shape[0]}x{depth.shape[1]} (H x W) but its image {image} is {size[0]}x{size[1]}; "
                         "depth must have its image's size")
    return depth


# -- the summary --------------------------------------------------------------------------------------
@dataclass
class FolderTeacherSummary:
    """What :func:`label_folder_split` did.

    Attributes:
        method: The teacher's name.
        split: The split.
        outputs: Task -> output folder under the root.
        teacher: Its settings.
        frames: Frames in the split (after ``limit``).
        written: Frames labelled in this run.
        kept: Frames whose outputs an earlier run wrote.
        skipped: Reason -> {frame name: one-line message} for frames not labelled (``unreadable``
            for an image or input that cannot be read, else the teacher's reason).
        pixels: Task -> pixels of the written and kept frames.
        valid: Task -> of those, pixels with a label.
        class_pixels: Labelled pixels per dataset class name (seg).
        depth_range: ``(min, max)`` metres over the valid depth (depth).
        beyond_range: Depths too far for the 16-bit encoding, written as no value.
        frame_info: Frame name -> its figures (``coverage`` per task, and the teacher's own).
        state: What the teacher saves for a resumed run (e.g. a global fit).
        seconds: Wall time.
        complete: Whether the run reached the end.
    """

    method: str
    split: str
    outputs: dict[str, str]
    teacher: dict[str, Any]
    frames: int = 0
    written: int = 0
    kept: int = 0
    skipped: dict[str, dict[str, str]] = field(default_factory=dict)
    pixels: dict[str, int] = field(default_factory=dict)
    valid: dict[str, int] = field(default_factory=dict)
    class_pixels: dict[str, int] = field(default_factory=dict)
    depth_range: tuple[float, float] | None = None
    beyond_range: int = 0
    frame_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    complete: bool = False

    @property
    def failed(self) -> dict[str, str]:
        """Every frame not labelled: name -> message."""
        return {name: msg for group in self.skipped.values() for name, msg in group.items()}

    def coverage(self) -> dict[str, float | None]:
        """Task -> share of the pixels of the labelled frames that have a label (0..1)."""
        return {t: (self.valid.get(t, 0) / self.pixels[t] if self.pixels.get(t) else None) for t in self.outputs}

    def class_shares(self) -> dict[str, float]:
        """Each dataset class's share of the labelled seg pixels, largest first."""
        total = sum(self.class_pixels.values())
        shares = {k: v / total for k, v in self.class_pixels.items() if v} if total else {}
        return dict(sorted(shares.items(), key=lambda kv: -kv[1]))

    def format(self) -> str:
        """A short human-readable report."""
        outs = ", ".join(f"{t} -> {o}/{self.split}" for t, o in self.outputs.items())
        lines = [f"teacher {self.method} on {self.split}: {self.frames} frames, {self.written} labelled, {self.kept} kept "
                 f"from an earlier run, {len(self.failed)} skipped ({self.seconds:.1f} s); {outs}"]
        for reason, group in self.skipped.items():
            names = list(group)
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            lines.append(f"  skipped ({reason}): {shown}")
        cov = ", ".join(f"{t} {100 * c:.1f}%" for t, c in self.coverage().items() if c is not None)
        if cov:
            lines.append(f"pixels with a label: {cov}")
        if self.depth_range is not None:
            lines.append(f"depth {self.depth_range[0]:.2f}..{self.depth_range[1]:.2f} m"
                         + (f"; {self.beyond_range} pixels beyond the 16-bit range written as no value"
                            if self.beyond_range else ""))
        residuals = [i["residual"] for i in self.frame_info.values() if isinstance(i.get("residual"), float)]
        if residuals:
            lines.append(f"fit residual (median relative error at the anchors): median {np.median(residuals):.3f}, "
                         f"worst {max(residuals):.3f}")
        if self.class_pixels:
            top = ", ".join(f"{k} {100 * v:.1f}%" for k, v in list(self.class_shares().items())[:6])
            lines.append(f"classes of the labelled pixels: {top or '-'}")
        return "\n".join(lines)

    def as_dict(self, task: str | None = None) -> dict[str, Any]:
        return {
            "method": self.method, "task": task, "split": self.split, "outputs": self.outputs, "teacher": self.teacher,
            "complete": self.complete, "frames": self.frames, "written": self.written, "kept": self.kept,
            "skipped": self.skipped, "coverage": self.coverage(), "class_shares": self.class_shares(),
            "class_pixels": self.class_pixels, "depth_range_m": list(self.depth_range) if self.depth_range else None,
            "beyond_range": self.beyond_range, "state": self.state, "seconds": self.seconds,
            "frame_info": self.frame_info,
        }


# -- the engine ---------------------------------------------------------------------------------------
def _check_outputs(root: Path, split: str, outputs: dict[str, str], teacher: dict[str, Any], method: str,
                   overwrite: bool) -> dict[str, Any] | None:
    """Refuse output folders that are real data, another teacher's or someone else's; return the
    earlier run's summary (same settings) or None."""
    if len(set(outputs.values())) != len(outputs):
        raise ValueError(f"two outputs would share one folder: {outputs}; give each task its own --out")
    previous = None
    for task, out in outputs.items():
        check_folder_name(out, f"{LABEL_FOLDERS[task]}_teacher")
        if out in RESERVED_FOLDERS or out == DESCRIPTION_FILE:
            raise ValueError(f"--out {out!r} is a folder of the real data under {root}; a teacher never writes there "
                             f"(it would replace real labels). Choose another name, e.g. {LABEL_FOLDERS[task]}_teacher")
        path = summary_path(root, out, split)
        folder = root / out / split
        if path.is_file():
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ValueError(f"{path}: unreadable teacher summary ({exc}); restore it, or delete {folder} with it "
                                 "to start again") from exc
            if not isinstance(old, dict) or old.get("task") != task:
                what = old.get("task") if isinstance(old, dict) else None
                raise ValueError(f"{root / out}: holds {what or 'something other than'} labels of a teacher, not {task}; "
                                 f"choose another --out")
            same = old.get("method") == method and old.get("teacher") == teacher
            if not same and not overwrite and folder.is_dir() and any(folder.glob("*.png")):
                raise ValueError(f"{folder}: written by a teacher with other settings ({path}); rerun with those to "
                                 "resume, add --overwrite to label every frame again, or choose another --out")
            if same:
                previous = old
        elif folder.is_dir() and any(folder.glob("*.png")):
            raise ValueError(f"{folder}: holds PNGs that no teacher run recorded (no {path.name}); a teacher does not "
                             "write among files it did not make. Choose another --out")
    return previous


def _read_output(task: str, path: Path, info: DatasetInfo) -> np.ndarray:
    if task == "seg":
        mask = read_mask(path)
        return np.where(mask == info.ignore_index, np.uint8(IGNORE_INDEX), mask).astype(np.uint8)
    if task == "depth":
        return read_depth_png(path, info.depth_scale)
    return read_normals_png(path)


def label_folder_split(
    root: str | Path,
    teacher: FolderTeacher,
    method: str,
    outputs: dict[str, str],
    split: str = "train",
    overwrite: bool = False,
    limit: int | None = None,
    batch_size: int = 4,
    progress: bool = True,
    on_failure: Callable[[str], None] | None = None,
) -> FolderTeacherSummary:
    """Run ``teacher`` over a split of a folder dataset and write its outputs (see the module docstring).

    Args:
        root: The folder dataset root (``dataset.yaml``, ``images/``).
        teacher: A :class:`FolderTeacher`.
        method: Its name, for the summary (``mono-onnx``, ``seg-onnx``, ``model``, ``sgbm``, ...).
        outputs: Task -> output folder under ``root``, for each of ``teacher.tasks``.
        split: The split.
        overwrite: Label frames whose outputs exist again (also with other settings).
        limit: Only the first ``limit`` frames (sorted by name).
        batch_size: Frames read and handed to the teacher at once.
        progress: Show a tqdm progress bar.
        on_failure: Called with each skipped frame's one-line message as it is skipped.

    Returns:
        A :class:`FolderTeacherSummary` (also saved as each output folder's ``SPLIT_summary.json``).

    Raises:
        FileNotFoundError, ValueError: no such dataset or split, a broken ``dataset.yaml``, an output
            folder that is the real data's, another teacher's or holds files no teacher wrote, or a
            dataset the teacher cannot label (no anchors at all, no right views, ...). WriteError:
            an output that cannot be written.
    """
    from tqdm import tqdm

    root = Path(root)
    if set(outputs) != set(teacher.tasks):
        raise ValueError(f"outputs {sorted(outputs)} do not match the teacher's tasks {list(teacher.tasks)}")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if batch_size < 1:
        raise ValueError(f"--batch must be >= 1, got {batch_size}")
    info = read_folder_info(root)
    frames = list_folder_frames(root, split)
    frames = frames[:limit] if limit is not None else frames
    setup = getattr(teacher, "setup", None)
    if callable(setup):  # checks against the dataset that need no frame (a class map's names)
        setup(info)
    settings = teacher.describe()
    previous = _check_outputs(root, split, outputs, settings, method, overwrite)
    tasks = [t for t in TASKS if t in outputs]
    summary = FolderTeacherSummary(method=method, split=split, outputs={t: outputs[t] for t in tasks}, teacher=settings,
                                   frames=len(frames))
    summary.pixels = {t: 0 for t in tasks}
    summary.valid = {t: 0 for t in tasks}
    class_counts = np.zeros(256, np.int64)
    depth_lo, depth_hi = math.inf, -math.inf
    old_info = (previous or {}).get("frame_info", {}) if not overwrite else {}
    start = time.perf_counter()

    def save() -> None:
        summary.seconds = time.perf_counter() - start
        summary.class_pixels = {name: int(class_counts[i]) for i, name in enumerate(info.classes)} if "seg" in tasks else {}
        summary.depth_range = (depth_lo, depth_hi) if depth_hi >= depth_lo else None
        for task in tasks:
            write_json_atomic(summary_path(root, outputs[task], split), summary.as_dict(task))

    def account(name: str, maps: dict[str, np.ndarray], extra: dict[str, Any]) -> None:
        nonlocal depth_lo, depth_hi
        entry = dict(extra)
        for task, m in maps.items():
            valid = (m != IGNORE_INDEX) if task == "seg" else (m > 0) if task == "depth" else m.any(axis=-1)
            n = int(valid.sum())
            summary.pixels[task] += int(valid.size)
            summary.valid[task] += n
            entry.setdefault("coverage", {})[task] = n / valid.size if valid.size else 0.0
            if task == "seg":
                class_counts[:] += np.bincount(m[valid].ravel(), minlength=256)[:256]
            elif task == "depth" and n:
                depth_lo, depth_hi = min(depth_lo, float(m[valid].min())), max(depth_hi, float(m[valid].max()))
        summary.frame_info[name] = entry

    def skip(frame: FolderFrame, exc: BaseException) -> None:
        reason = exc.reason if isinstance(exc, FrameSkipped) else "unreadable"
        message = item_message(exc, frame.image)
        summary.skipped.setdefault(reason, {})[frame.name] = message
        if isinstance(exc, FrameSkipped) and exc.info:
            summary.frame_info[frame.name] = {**exc.info, "skipped": reason}
        if on_failure is not None:
            on_failure(message)

    todo: list[FolderFrame] = []
    for f in frames:
        targets = {t: root / outputs[t] / split / f"{f.name}.png" for t in tasks}
        if overwrite or not all(p.is_file() for p in targets.values()):
            todo.append(f)
            continue
        try:  # an earlier run's outputs: kept when they decode (a damaged one is computed again)
            maps = {t: _read_output(t, p, info) for t, p in targets.items()}
        except ValueError:
            todo.append(f)
            continue
        summary.kept += 1
        account(f.name, maps, {k: v for k, v in old_info.get(f.name, {}).items() if k != "coverage"})
    if previous is not None and not overwrite:
        summary.state = dict(previous.get("state") or {})
    if todo:
        teacher.bind(TeacherContext(root=root, split=split, info=info, frames=frames, todo=todo,
                                    previous=summary.state or None, progress=progress))
        state = getattr(teacher, "state", None)
        summary.state = dict(state()) if callable(state) else {}
    save()  # before the first PNG: the folders are known as this teacher's from now on
    last_save = time.perf_counter()
    try:
        with tqdm(total=len(todo), desc=f"teacher {method} {split}", unit="frame", disable=not progress) as bar:
            for i in range(0, len(todo), batch_size):
                part = todo[i:i + batch_size]
                inputs: list[FrameInput] = []
                for f in part:
                    try:
                        inputs.append(FrameInput(f, read_image(f.image, colour_only=True)))
                    except Exception as exc:
                        if not item_failure(exc):
                            raise
                        skip(f, exc)
                results = _label(teacher, inputs)
                for item, result in zip(inputs, results):
                    f = item.frame
                    if isinstance(result, BaseException):
                        if isinstance(result, TeacherError) or not item_failure(result):
                            raise result
                        skip(f, result)
                        continue
                    maps = _encode_and_write(root, outputs, split, f, item.rgb.shape[:2], result, info, summary)
                    summary.written += 1
                    account(f.name, maps, result.info)
                bar.update(len(part))
                if time.perf_counter() - last_save >= _SAVE_EVERY_S:
                    save()
                    last_save = time.perf_counter()
        summary.complete = True
    finally:
        save()
    return summary


def _label(teacher: FolderTeacher, inputs: list[FrameInput]) -> list[Labels | BaseException]:
    """The teacher's results for a batch; where the batch as a whole fails with one frame's kind
    of fault (out of memory, say), each frame again on its own, so the fault is the frame's."""
    if not inputs:
        return []
    try:
        results = teacher.label(inputs)
    except Exception as exc:
        if isinstance(exc, TeacherError) or not item_failure(exc):
            raise
        if len(inputs) == 1:
            return [exc]
        return [r for item in inputs for r in _label(teacher, [item])]
    if len(results) != len(inputs):
        raise RuntimeError(f"{teacher!r} returned {len(results)} results for {len(inputs)} frames")
    return results


def _encode_and_write(root: Path, outputs: dict[str, str], split: str, frame: FolderFrame, size: tuple[int, int],
                      labels: Labels, info: DatasetInfo, summary: FolderTeacherSummary) -> dict[str, np.ndarray]:
    """Check and encode a frame's outputs, then write them; returns the maps as a reader sees them."""
    encoded: dict[str, np.ndarray] = {}
    maps: dict[str, np.ndarray] = {}
    for task, folder in outputs.items():
        m = labels.outputs.get(task)
        want = (*size, 3) if task == "normals" else size
        if m is None or tuple(m.shape) != tuple(want):
            got = "nothing" if m is None else f"shape {tuple(m.shape)}"
            raise RuntimeError(f"the teacher gave {got} as {task} of {frame.image}, not a map of {want}")
        if task == "seg":
            seg = np.asarray(m, np.uint8)
            bad = (seg >= info.num_classes) & (seg != IGNORE_INDEX)
            if bad.any():
                raise RuntimeError(f"the teacher gave class indices {np.unique(seg[bad]).tolist()[:5]} for {frame.image}; "
                                   f"the dataset has {info.num_classes} classes")
            encoded[task] = np.where(seg == IGNORE_INDEX, np.uint8(info.ignore_index), seg).astype(np.uint8)
            maps[task] = seg
        elif task == "depth":
            png, beyond = encode_depth_png(m, info.depth_scale)
            summary.beyond_range += beyond
            encoded[task] = png
            maps[task] = png.astype(np.float32) / np.float32(info.depth_scale)
        else:
            rgb = encode_normals(m)
            encoded[task] = np.ascontiguousarray(rgb[:, :, ::-1])  # the writer takes OpenCV's BGR order
            maps[task] = np.asarray(m, np.float32) * rgb.any(axis=-1, keepdims=True)
    for task, png in encoded.items():
        write_png_atomic(root / outputs[task] / split / f"{frame.name}.png", png)
    return maps


# -- stereo teachers on folder datasets ---------------------------------------------------------------
class StereoDepthTeacher:
    """A stereo teacher (``(left, right) -> disparity``, :mod:`mtdense.teachers.stereo`) as a folder
    teacher: depth in metres, ``baseline * fx / disparity``, from the frame and its right view
    ``ROOT/right/SPLIT/NAME.png`` with the rig of ``stereo:`` in ``dataset.yaml``
    (:class:`~mtdense.data.description.StereoRig`; ``fx`` in px at the size of ``images/``).

    A frame without a right view is skipped (``no_right``) and named.
    """

    tasks = ("depth",)

    def __init__(self, stereo: Any):
        self.stereo = stereo
        self.rig = None
        self.root: Path | None = None
        self.split = ""

    def describe(self) -> dict[str, Any]:
        describe = getattr(self.stereo, "describe", None)
        return dict(describe()) if callable(describe) else {"method": repr(self.stereo)}

    def bind(self, context: TeacherContext) -> None:
        from mtdense.data.description import read_stereo

        path = context.root / DESCRIPTION_FILE
        rig = read_stereo(path)
        if rig is None:
            raise ValueError(f"{path}: no 'stereo:' rig, so disparity cannot become metres; add 'stereo: {{baseline: B, "
                             "fx: F}}' (metres between the cameras, focal length in px at the size of images/)")
        folder = context.root / RIGHT_FOLDER / context.split
        if not folder.is_dir():
            raise ValueError(f"{folder}: no right views; a stereo teacher needs {RIGHT_FOLDER}/{context.split}/NAME.png "
                             "beside each image (named as the left one). Use --method mono-onnx for one camera")
        self.rig, self.root, self.split = rig, context.root, context.split

    def label(self, batch: Sequence[FrameInput]) -> list[Labels | BaseException]:
        out: list[Labels | BaseException] = []
        for item in batch:
            f = item.frame
            try:
                path = right_image(self.root, self.split, f.name)
                if path is None:
                    raise FrameSkipped(f"{f.image}: no right view {self.root / RIGHT_FOLDER / self.split / f.name}.png; "
                                       "add it, or label the frame with a monocular teacher", "no_right")
                right = read_image(path, colour_only=True)
                if right.shape != item.rgb.shape:
                    raise ValueError(f"{path}: {right.shape[1]} x {right.shape[0]} px, but its left view {f.image} is "
                                     f"{item.rgb.shape[1]} x {item.rgb.shape[0]}; a stereo pair must be rectified to one size")
                disparity = np.asarray(self.stereo(item.rgb, right))
                if disparity.shape != item.rgb.shape[:2]:
                    raise RuntimeError(f"{self.stereo!r} returned a map of shape {disparity.shape} for {f.image}")
                out.append(Labels({"depth": self.rig.depth(disparity)}))
            except Exception as exc:
                if not item_failure(exc):
                    raise
                out.append(exc)
        return out
