"""The ``kitti`` format: raw KITTI recordings with LiDAR depth, and the 200 semantic frames.

::

    ROOT/raw/DATE/DRIVE/image_02/data/FRAME.png                         the left colour camera (8-bit RGB)
    ROOT/data_depth_annotated/{train,val}/DRIVE/proj_depth/groundtruth/image_02/FRAME.png
                                                                        uint16, depth_m = value / 256, 0 = no point
    ROOT/data_semantics/training/image_2/NAME.png                      a labelled frame (8-bit RGB)
    ROOT/data_semantics/training/semantic/NAME.png                     Cityscapes label ids (uint8)

``DRIVE`` names start with their ``DATE`` (``2011_09_26_drive_0001_sync`` lies in
``raw/2011_09_26/``). The depth benchmark's ground truth lists the frames of ``train`` and ``val``;
each needs its raw image. The semantic labels are mapped to the 19 Cityscapes train ids with the
official table (:mod:`mtdense.data.labels`).

Splits (:data:`KITTI_SPLITS`):

- ``train``, ``val``: the depth frames (image + sparse depth, no segmentation);
- ``semantics``: the labelled frames (image + segmentation, no depth);
- ``semantics_train``, ``semantics_val``: the labelled frames without and with every fifth one
  (by sorted name; 160 and 40 of the 200): KITTI publishes no validation split of them, and a
  recipe that trains on some needs others to validate on;
- several joined by ``+`` (``train+semantics_train``): their frames together. A frame lacking a
  task the joined split has carries that task filled with "no label" (seg all 255, depth all 0),
  as the ``folder`` format does, so batches collate and the task's loss and metrics skip it;
- a part followed by ``*N`` (``train+semantics_train*50``) holds its frames ``N`` times: the
  160 labelled frames would otherwise be about one sample in 540 beside the 86,000 depth frames.

Sparse depth is evaluated over the points with ground truth; :func:`garg_crop_mask` and
:data:`KITTI_MAX_DEPTH_M` are the usual evaluation options (:func:`kitti_eval_depth` applies both).

Segmentation label sources (the paper's pseudo-label step): a teacher's labels for frames without
a semantic label lie in a folder beside the real ones, ``ROOT/OUT/PART/NAME.png`` (``PART`` the
split part the frame is listed in, ``train``, ``val`` or ``semantics``; ``NAME`` the frame's name,
``DRIVE_FRAME`` for a depth frame), in the encoding of ``semantic/`` (Cityscapes label ids, 0 =
unlabeled), as ``mtdense data pseudo-label --format kitti`` and a recipe stage's ``pseudo_label``
write them. ``sources={"seg": ["semantic", OUT]}`` reads a frame's real label where it has one
and the teacher's where it does not (:data:`REAL_SEG_SOURCE` names the real labels).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from mtdense.data.description import TASKS, DatasetInfo
from mtdense.data.folder import LayoutIssue, empty_label
from mtdense.data.frames import FrameDataset
from mtdense.data.image import read_image
from mtdense.data.labels import TRAIN_CLASS_NAMES, TRAIN_PALETTE, label_ids_to_train_ids

__all__ = [
    "RAW_FOLDER", "DEPTH_FOLDER", "SEMANTICS_FOLDER", "KITTI_MARKERS", "KITTI_SPLITS", "KITTI_DEPTH_SCALE",
    "KITTI_MAX_DEPTH_M", "GARG_CROP", "kitti_info", "KittiFrame", "raw_image_path", "scan_kitti_split",
    "list_kitti_frames", "read_kitti_depth", "read_kitti_semantic", "load_kitti_frame", "garg_crop_mask",
    "kitti_eval_depth", "KittiDataset", "REAL_SEG_SOURCE", "REAL_DEPTH_SOURCE", "REAL_SOURCES", "check_kitti_sources",
    "kitti_label_path", "with_label_sources",
]

RAW_FOLDER = "raw"
DEPTH_FOLDER = "data_depth_annotated"
SEMANTICS_FOLDER = "data_semantics"
KITTI_MARKERS = (RAW_FOLDER, DEPTH_FOLDER, SEMANTICS_FOLDER)
REAL_SEG_SOURCE = "semantic"
"""The source name of the real segmentation labels (``data_semantics/training/semantic/``)."""
REAL_DEPTH_SOURCE = "groundtruth"
"""The source name of the real depth (the depth benchmark's LiDAR ground truth)."""
REAL_SOURCES = {"seg": REAL_SEG_SOURCE, "depth": REAL_DEPTH_SOURCE}
"""Task -> the source name of its real labels (what samples record, what evaluation reads)."""
"""Folders of a KITTI root; any one of them tells the format."""

DEPTH_SPLITS = ("train", "val")
SEMANTIC_SPLITS = ("semantics", "semantics_train", "semantics_val")
KITTI_SPLITS = DEPTH_SPLITS + SEMANTIC_SPLITS
"""Split names; join several with ``+``."""

KITTI_DEPTH_SCALE = 256.0
"""``depth_m = png_value / 256`` in the depth benchmark's ground truth."""

KITTI_MAX_DEPTH_M = 80.0
"""The usual evaluation cap: ground truth beyond 80 m is left out, predictions are clipped to it."""

GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
"""The Garg et al. (2016) evaluation crop as fractions of the frame: rows top, bottom, columns left, right."""

_SEMANTIC_VAL_EVERY = 5  # semantics_val: every fifth labelled frame by sorted name
_DRIVE = re.compile(r"^(\d{4}_\d{2}_\d{2})_drive_\d{4}_sync$")
_GROUNDTRUTH = Path("proj_depth", "groundtruth", "image_02")
_RAW_IMAGES = Path("image_02", "data")
_FIX_DEPTH = "replace it with the file from data_depth_annotated.zip (the KITTI depth benchmark)"
_FIX_SEMANTIC = "replace it with the file from data_semantics.zip (the KITTI semantic benchmark)"


def kitti_info(tasks: Sequence[str] = ("seg", "depth")) -> DatasetInfo:
    """The KITTI description: the 19 Cityscapes train classes and colours, ignore 255, depth / 256."""
    return DatasetInfo(classes=tuple(TRAIN_CLASS_NAMES), colors=TRAIN_PALETTE, depth_scale=KITTI_DEPTH_SCALE,
                       tasks=tuple(tasks), format="kitti")


@dataclass(frozen=True)
class KittiFrame:
    """The files of one frame.

    Attributes:
        name: ``DRIVE_FRAME`` for a depth frame, the file stem (``000000_10``) for a labelled one.
        split: The split it was listed in (``train``, ``val`` or ``semantics``).
        image: The colour image.
        depth: The LiDAR ground truth, or None.
        semantic: The label-id PNG, or None.
        seg_source: Where ``semantic`` comes from: :data:`REAL_SEG_SOURCE`, a teacher's folder
            (listed with label sources, :func:`with_label_sources`), or ``""`` (none).
    """

    name: str
    split: str
    image: Path
    depth: Path | None = None
    semantic: Path | None = None
    seg_source: str | None = None

    @property
    def sources(self) -> dict[str, str]:
        """Task -> source of its label (``""``: none); the seg source as listed, else the real one."""
        seg = self.seg_source if self.seg_source is not None else (REAL_SEG_SOURCE if self.semantic else "")
        return {"seg": seg, "depth": REAL_DEPTH_SOURCE if self.depth is not None else ""}

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks this frame has labels for."""
        return tuple(t for t, p in (("seg", self.semantic), ("depth", self.depth)) if p is not None)

    def paths(self, tasks: Sequence[str]) -> dict[str, str]:
        """Files by role: ``image``, then ``label`` (seg) and ``depth`` for ``tasks``; ``""`` where
        the frame has no file (so the samples of one split collate)."""
        out = {"image": str(self.image)}
        for task in tasks:
            path = self.semantic if task == "seg" else self.depth
            out["label" if task == "seg" else "depth"] = "" if path is None else str(path)
        return out


def _check_root(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist; point it at the KITTI folder that holds "
                                f"{RAW_FOLDER}/, {DEPTH_FOLDER}/ and {SEMANTICS_FOLDER}/")
    if not any((root / m).is_dir() for m in KITTI_MARKERS):
        raise FileNotFoundError(f"{root} has none of {', '.join(m + '/' for m in KITTI_MARKERS)}; a KITTI root holds the "
                                f"raw recordings in {RAW_FOLDER}/DATE/DRIVE/, the depth benchmark in {DEPTH_FOLDER}/ and "
                                f"the semantic benchmark in {SEMANTICS_FOLDER}/")
    return root


def _split_parts(split: str) -> list[tuple[str, int]]:
    """``"train+semantics_train*50"`` -> ``[("train", 1), ("semantics_train", 50)]``."""
    parts: list[tuple[str, int]] = []
    for text in split.split("+"):
        name, star, count = text.partition("*")
        if name not in KITTI_SPLITS:
            raise ValueError(f"unknown kitti split {name!r} in {split!r}; known: {', '.join(KITTI_SPLITS)} "
                             "(join several with '+', e.g. train+semantics_train; repeat one with '*N')")
        if star and not (count.isdigit() and int(count) >= 1):
            raise ValueError(f"kitti split {split!r}: {text!r} repeats the frames '*{count}' times; give a whole "
                             "number >= 1, e.g. semantics_train*50")
        parts.append((name, int(count) if star else 1))
    names = [n for n, _ in parts]
    if len(set(names)) != len(names):
        raise ValueError(f"kitti split {split!r} names a part twice; repeat it with '*N' instead")
    if "semantics" in names and {"semantics_train", "semantics_val"} & set(names):
        raise ValueError(f"kitti split {split!r}: semantics already holds semantics_train and semantics_val")
    return parts


def raw_image_path(root: str | Path, drive: str, frame: str) -> Path:
    """``ROOT/raw/DATE/DRIVE/image_02/data/FRAME.png`` (``DATE``: the first 10 characters of ``DRIVE``)."""
    return _raw_dir(Path(root), drive) / f"{frame}.png"


def _raw_dir(root: Path, drive: str) -> Path:
    return root / RAW_FOLDER / drive[:10] / drive / _RAW_IMAGES


def _pngs(folder: Path) -> list[str]:
    """Stems of the ``*.png`` files in ``folder`` (sorted; none if it is missing)."""
    try:
        with os.scandir(folder) as it:
            return sorted(e.name[:-4] for e in it if e.name.endswith(".png") and not e.name.startswith("."))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _scan_depth(root: Path, split: str) -> tuple[list[KittiFrame], list[LayoutIssue]]:
    folder = root / DEPTH_FOLDER / split
    frames: list[KittiFrame] = []
    issues: list[LayoutIssue] = []
    if not folder.is_dir():
        return frames, issues
    for drive_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        drive = drive_dir.name
        if not _DRIVE.match(drive):
            issues.append(LayoutIssue("error", drive_dir, "not a KITTI drive name (DATE_drive_NNNN_sync, e.g. "
                                      "2011_09_26_drive_0001_sync): its raw images cannot be found",
                                      "restore the folder name of the download"))
            continue
        gt_dir = drive_dir / _GROUNDTRUTH
        stems = _pngs(gt_dir)
        if not stems:
            issues.append(LayoutIssue("warning", drive_dir, f"no depth maps in {_GROUNDTRUTH}/, not read",
                                      "extract data_depth_annotated.zip again, or remove the folder"))
            continue
        raw_dir = _raw_dir(root, drive)
        raw = set(_pngs(raw_dir))
        if not raw:
            issues.append(LayoutIssue("error", gt_dir, f"{len(stems)} depth maps but no raw images: the raw drive "
                                      f"folder {raw_dir} is missing or empty",
                                      f"extract the raw recording {drive} (from {drive[:10]}/{drive}.zip of the KITTI raw "
                                      f"data) into {root / RAW_FOLDER / drive[:10]}"))
            continue
        for stem in stems:
            if stem not in raw:
                issues.append(LayoutIssue("error", gt_dir / f"{stem}.png", f"no raw image {raw_dir / (stem + '.png')}",
                                          f"restore the frame in the raw drive folder {raw_dir}, or delete the depth map"))
            else:
                frames.append(KittiFrame(f"{drive}_{stem}", split, raw_dir / f"{stem}.png", depth=gt_dir / f"{stem}.png"))
    return frames, issues


def _scan_semantics(root: Path) -> tuple[list[KittiFrame], list[LayoutIssue], set[str]]:
    """The labelled frames, their problems, and the names held out as ``semantics_val``."""
    base = root / SEMANTICS_FOLDER / "training"
    image_dir, label_dir = base / "image_2", base / "semantic"
    images, labels = set(_pngs(image_dir)), _pngs(label_dir)
    issues = [LayoutIssue("error", label_dir / f"{s}.png", f"no image {image_dir / (s + '.png')}",
                          "restore the image from data_semantics.zip, or delete the stray label")
              for s in labels if s not in images]
    labelled = set(labels)
    issues += [LayoutIssue("warning", image_dir / f"{s}.png", f"no label {label_dir / (s + '.png')}; not read (the "
                           "semantics split holds the labelled frames)", "restore the label from data_semantics.zip")
               for s in sorted(images - labelled)]
    frames = [KittiFrame(s, "semantics", image_dir / f"{s}.png", semantic=label_dir / f"{s}.png")
              for s in labels if s in images]
    return frames, issues, set(labels[::_SEMANTIC_VAL_EVERY])


def scan_kitti_split(root: str | Path, split: str) -> tuple[list[KittiFrame], list[LayoutIssue]]:
    """List a split's frames and every layout problem, without decoding anything.

    Errors: a drive folder whose name is no KITTI drive, a depth map without its raw image (the
    whole raw drive folder missing counts once), a semantic label without its image. Warnings: a
    drive without depth maps, a semantic image without its label.

    Returns:
        Frames (depth frames by drive and frame, labelled frames by name; joined splits in the
        order named), and the problems found.

    Raises:
        FileNotFoundError: The root does not exist or holds no KITTI folder.
        ValueError: An unknown split name.
    """
    root = _check_root(Path(root))
    frames: list[KittiFrame] = []
    issues: list[LayoutIssue] = []
    semantics: tuple[list[KittiFrame], list[LayoutIssue], set[str]] | None = None
    for part, repeat in _split_parts(split):
        if part in DEPTH_SPLITS:
            found, problems = _scan_depth(root, part)
        else:
            if semantics is None:
                semantics = _scan_semantics(root)
                issues += semantics[1]
            found, problems, held_out = semantics[0], [], semantics[2]
            if part != "semantics":
                found = [f for f in found if (f.name in held_out) == (part == "semantics_val")]
        frames += found * repeat
        issues += problems
    return frames, issues


def _where(root: Path, part: str) -> Path:
    if part in DEPTH_SPLITS:
        return root / DEPTH_FOLDER / part
    return root / SEMANTICS_FOLDER / "training" / "semantic"


def list_kitti_frames(root: str | Path, split: str) -> list[KittiFrame]:
    """:func:`scan_kitti_split`, refusing a split with layout errors or without frames.

    Raises:
        FileNotFoundError: The root does not exist or holds no KITTI folder.
        ValueError: An unknown split, a layout error (the message names the first file and
            counts the rest), or an empty split (the message names the folder looked in).
    """
    root = Path(root)
    frames, issues = scan_kitti_split(root, split)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        more = f" ({len(errors) - 1} more problems: run 'mtdense data check {root}')" if len(errors) > 1 else ""
        raise ValueError(f"{errors[0]}{more}")
    if not frames:
        looked = ", ".join(dict.fromkeys(str(_where(root, p)) for p, _ in _split_parts(split)))
        raise ValueError(f"kitti split {split!r} has no frames (looked in {looked}); extract data_depth_annotated.zip "
                         f"(depth: {DEPTH_FOLDER}/{{train,val}}/DRIVE/) with the raw drives, or data_semantics.zip "
                         f"(labelled frames: {SEMANTICS_FOLDER}/training/) into {root}")
    return frames


def kitti_label_path(root: str | Path, source: str, frame: KittiFrame) -> Path:
    """Where a teacher's segmentation label of ``frame`` lies in source folder ``source``:
    ``ROOT/SOURCE/PART/NAME.png``."""
    return Path(root) / source / frame.split / f"{frame.name}.png"


def check_kitti_sources(sources: Any) -> dict[str, tuple[str, ...]]:
    """Check KITTI label sources: ``{"seg": [names]}`` only, plain folder names, each once, the
    real labels (:data:`REAL_SEG_SOURCE`) among them.

    Raises:
        ValueError: The message names the bad key or folder and what to give instead.
    """
    if not isinstance(sources, dict):
        raise ValueError(f"label sources are a mapping task -> folders, e.g. {{seg: [{REAL_SEG_SOURCE}, semantic_pseudo]}}")
    other = sorted(set(sources) - {"seg"})
    if other:
        raise ValueError(f"sources of {other[0]}: KITTI takes label sources for seg only (its depth is the LiDAR ground "
                         f"truth of every depth frame); remove {other[0]}")
    names = sources.get("seg", [])
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        return {}
    for name in names:
        if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
            raise ValueError(f"sources of seg: {name!r} is not a folder name; give a folder directly under the KITTI "
                             f"root (e.g. semantic_pseudo)")
        if name in KITTI_MARKERS:
            raise ValueError(f"sources of seg: {name}/ is a KITTI folder, not a label source; name a folder of its own "
                             f"(e.g. semantic_pseudo)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"sources of seg: {', '.join(twice)} named twice; name each folder once")
    if REAL_SEG_SOURCE not in names:
        raise ValueError(f"sources of seg: {names} leaves out the real labels; list {REAL_SEG_SOURCE!r} too, e.g. "
                         f"[{REAL_SEG_SOURCE}, {names[0]}]")
    return {"seg": tuple(names)}


def with_label_sources(root: str | Path, frames: Sequence[KittiFrame], sources: dict[str, Sequence[str]]) -> list[KittiFrame]:
    """The frames with each one's segmentation label taken from the first source that has one
    (:data:`REAL_SEG_SOURCE`: the frame's real label; another name: ``ROOT/NAME/PART/FRAME.png``).
    A source folder that does not exist yet holds nothing (a recipe stage writes it later)."""
    from dataclasses import replace

    names = check_kitti_sources(sources).get("seg", ())
    if not names:
        return list(frames)
    out = []
    for frame in frames:
        picked: tuple[str, Path | None] = ("", None)
        for name in names:
            path = frame.semantic if name == REAL_SEG_SOURCE else kitti_label_path(root, name, frame)
            if path is not None and (name == REAL_SEG_SOURCE or path.is_file()):
                picked = (name, path)
                break
        out.append(replace(frame, semantic=picked[1], seg_source=picked[0]))
    return out


# --- decoding ---------------------------------------------------------------------------------

def _decode(path: Path, what: str, fix: str) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    data = np.fromfile(path, dtype=np.uint8)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if array is None:
        raise ValueError(f"{path}: cannot decode this {what} (corrupt, truncated or not a PNG); {fix}")
    return array


def _describe(array: np.ndarray) -> str:
    channels = 1 if array.ndim == 2 else array.shape[2]
    return f"a {array.dtype} image with {channels} channel{'s' * (channels != 1)}"


def read_kitti_depth(path: str | Path) -> np.ndarray:
    """Read a depth benchmark ground-truth PNG as ``H x W`` float32 metres (``value / 256``, 0 = no point).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not decodable, or not one 16-bit channel (the message names the file).
    """
    path = Path(path)
    png = _decode(path, "depth map", _FIX_DEPTH)
    if png.dtype != np.uint16 or png.ndim != 2:
        raise ValueError(f"{path}: {_describe(png)}, not the 16-bit single-channel PNG of the depth benchmark "
                         f"(depth_m * 256, 0 = no point); {_FIX_DEPTH}")
    return (png.astype(np.float64) / KITTI_DEPTH_SCALE).astype(np.float32)


def read_kitti_semantic(path: str | Path) -> np.ndarray:
    """Read a semantic label PNG as ``H x W`` uint8 Cityscapes train ids (255 = ignore).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not decodable, not one 8-bit channel (e.g. a ``semantic_rgb`` file), or label
            ids outside the Cityscapes table (the message names the file and the ids).
    """
    path = Path(path)
    ids = _decode(path, "semantic label", _FIX_SEMANTIC)
    if ids.dtype != np.uint8 or ids.ndim != 2:
        raise ValueError(f"{path}: {_describe(ids)}, not one 8-bit channel of Cityscapes label ids; use the file from "
                         "semantic/ (not semantic_rgb/ or instance/) of data_semantics.zip")
    try:
        return label_ids_to_train_ids(ids)
    except ValueError as exc:
        what = str(exc).partition("; ")[0]
        raise ValueError(f"{path}: {what}; use the label-id file from semantic/ of data_semantics.zip, or relabel "
                         "those pixels with Cityscapes label ids (0 = unlabeled)") from exc


def _check_size(array: np.ndarray, path: Path, size: tuple[int, int], image: Path) -> None:
    if array.shape[:2] != size:
        raise ValueError(f"{path}: {array.shape[0]}x{array.shape[1]} (H x W) but its image {image} is {size[0]}x{size[1]}; "
                         "a frame's files must have one size (is it the ground truth of another camera or frame?)")


def load_kitti_frame(frame: KittiFrame, tasks: Sequence[str]) -> dict[str, Any]:
    """Decode one frame into a sample.

    Args:
        frame: From :func:`list_kitti_frames`.
        tasks: Tasks the sample carries; one the frame has no file for is filled with "no label"
            (seg all 255, depth all 0).

    Returns:
        ``image`` (H x W x 3 uint8 RGB); ``seg`` (H x W uint8 train ids, 255 = ignore) and
        ``depth`` (H x W float32 metres, 0 = no point) for ``tasks``; ``name``; ``paths``.

    Raises:
        ValueError: A file that does not decode, has the wrong bit depth or size, or label ids
            outside the Cityscapes table; the message names the file.
    """
    image = read_image(frame.image, colour_only=True)
    size = image.shape[:2]
    sample: dict[str, Any] = {"image": image}
    for task in tasks:
        path = frame.semantic if task == "seg" else frame.depth
        if path is None:
            sample[task] = empty_label(task, size)
            continue
        array = read_kitti_semantic(path) if task == "seg" else read_kitti_depth(path)
        _check_size(array, path, size, frame.image)
        sample[task] = array
    sample["name"] = frame.name
    sample["paths"] = frame.paths(tasks)
    if frame.seg_source is not None:
        sources = frame.sources
        sample["sources"] = {task: sources[task] for task in tasks}
    return sample


# --- evaluation options --------------------------------------------------------------------------

def garg_crop_mask(h: int, w: int) -> np.ndarray:
    """The Garg crop of an ``h x w`` frame as an ``h x w`` bool mask (True = evaluated).

    Rows ``int(0.40810811 h) .. int(0.99189189 h)`` and columns ``int(0.03594771 w) ..
    int(0.96405229 w)`` (end excluded), as the usual KITTI evaluation code cuts them.
    """
    if h < 1 or w < 1:
        raise ValueError(f"garg_crop_mask: the frame size must be positive, got {h} x {w}")
    top, bottom, left, right = (int(f * n) for f, n in zip(GARG_CROP, (h, h, w, w)))
    mask = np.zeros((h, w), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


def kitti_eval_depth(depth: Any, garg_crop: bool = True, max_depth_m: float | None = KITTI_MAX_DEPTH_M) -> Any:
    """Ground-truth depth with the evaluation options applied: 0 (invalid) outside the Garg crop
    and beyond ``max_depth_m``.

    Args:
        depth: ``... x H x W`` metres, 0 = invalid (a NumPy array or a torch tensor; the crop is
            taken of the last two dimensions, the ground truth's own size).
        garg_crop: Keep only the Garg crop (:func:`garg_crop_mask`).
        max_depth_m: Leave out ground truth beyond this; ``None``: no cap.

    Returns:
        The same type and shape, a copy.
    """
    h, w = depth.shape[-2:]
    keep = garg_crop_mask(h, w) if garg_crop else np.ones((h, w), dtype=bool)
    if isinstance(depth, np.ndarray):
        out = np.where(keep, depth, 0).astype(depth.dtype)
        return np.where(out > max_depth_m, 0, out).astype(depth.dtype) if max_depth_m is not None else out
    import torch

    out = depth * torch.from_numpy(keep).to(depth.device, depth.dtype)
    return out.masked_fill(out > max_depth_m, 0) if max_depth_m is not None else out


class KittiDataset(FrameDataset):
    """Samples of one split of a KITTI root (see the module docstring).

    Args:
        root: The folder that holds ``raw/``, ``data_depth_annotated/`` and ``data_semantics/``.
        split: ``train``, ``val``, ``semantics``, ``semantics_train``, ``semantics_val``, or
            several joined by ``+``, each optionally repeated ``*N`` times.
        transform: Called on each sample dict (see :mod:`mtdense.data.transforms`).
        cache_in_memory: Keep every decoded sample (before ``transform``) in memory after its
            first read (about 2.3 MB a depth frame at 375 x 1242; a repeated frame once per repeat).
        tasks: Tasks every sample carries, of ``seg`` and ``depth`` (default: those the split has
            labels for); a frame without a task's file carries "no label" for it, so a validation
            split without labelled frames still yields ``seg`` (all ignored).
        sources: Segmentation label sources, ``{"seg": ["semantic", OUT, ...]}`` in order of
            preference (see the module docstring); each sample then records in ``sources`` where
            its labels came from. ``None``: the real labels only.

    Attributes:
        info: :func:`kitti_info` with the tasks the split has (``seg`` for labelled frames,
            ``depth`` for depth frames), or ``tasks`` where given.
        classes: The 19 Cityscapes class names.
        frames: The listed :class:`KittiFrame` objects.

    Raises:
        FileNotFoundError: No root, or a root without any KITTI folder.
        ValueError: An unknown split, a layout error (see :func:`scan_kitti_split`), an empty
            split, or a task KITTI has no labels for (``normals``).
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache_in_memory: bool = False,
        tasks: Sequence[str] | None = None,
        sources: dict[str, Sequence[str]] | None = None,
    ):
        self.root = Path(root)
        self.split = split
        frames = list_kitti_frames(self.root, split)
        self.sources = check_kitti_sources(sources) if sources is not None else {}
        if self.sources:
            frames = with_label_sources(self.root, frames, self.sources)
        if tasks is None:
            tasks = [t for t in TASKS if any(t in f.tasks for f in frames)]
        tasks = [tasks] if isinstance(tasks, str) else list(tasks)
        unknown = [t for t in tasks if t not in ("seg", "depth")]
        if unknown:
            raise ValueError(f"KITTI has no labels for {', '.join(map(str, unknown))}; its tasks are seg and depth")
        has = tuple(t for t in TASKS if t in tasks)
        self.info = kitti_info(has)
        self._init_frames(frames, transform, cache_in_memory)

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    def load_frame(self, frame: KittiFrame) -> dict[str, Any]:
        return load_kitti_frame(frame, self.info.tasks)

    def __repr__(self) -> str:
        return (f"KittiDataset(root={str(self.root)!r}, split={self.split!r}, frames={len(self)}, "
                f"tasks={list(self.info.tasks)}" + (f", sources={ {t: list(v) for t, v in self.sources.items()} })"
                                                    if self.sources else ")"))
