"""Check a dataset tree (Cityscapes, folder or KITTI format): read every file and report what is
wrong and how to fix it.

:func:`check_dataset` lists a tree with the helpers of its format's module
(:mod:`mtdense.data.cityscapes`, :mod:`mtdense.data.folder`, :mod:`mtdense.data.kitti`), reads each
frame's files in threads and returns a :class:`DataCheckReport`: counts and depth statistics per
split, and a list of :class:`Problem` s, each naming the file and the fix. ``mtdense data check``
prints its :meth:`DataCheckReport.summary`. The format is told by the root (:func:`tree_format`):
``dataset.yaml`` (or ``images/`` without ``leftImg8bit/``) is the folder format, ``raw/``,
``data_depth_annotated/`` or ``data_semantics/`` without ``leftImg8bit/`` is KITTI, anything else
is checked as Cityscapes.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from mtdense.data import depth as depth_lib
from mtdense.data.cityscapes import (
    CAMERA_FOLDER,
    IMAGE_FOLDER,
    RIGHT_FOLDER,
    SUFFIXES,
    Frame,
    _check_root,
    _image_files,
    _stem,
    frame_file,
    list_splits,
    read_camera,
    read_disparity_png,
    read_label_ids,
)
from mtdense.data.description import DESCRIPTION_FILE, TASKS, DatasetInfo
from mtdense.data.folder import (
    IMAGE_FOLDER as FOLDER_IMAGES,
    LABEL_FOLDERS,
    FolderFrame,
    folder_tasks,
    list_folder_splits,
    mask_to_seg,
    read_folder_info,
    read_depth_png,
    read_mask,
    read_normals_png,
    scan_split,
)
from mtdense.data.folder import _check_root as _check_folder_root
from mtdense.data.image import read_image
from mtdense.data.kitti import (
    DEPTH_FOLDER as KITTI_DEPTH_FOLDER,
    DEPTH_SPLITS as KITTI_DEPTH_SPLITS,
    KITTI_MARKERS,
    SEMANTICS_FOLDER as KITTI_SEMANTICS_FOLDER,
    KittiFrame,
    kitti_info,
    read_kitti_depth,
    read_kitti_semantic,
    scan_kitti_split,
)
from mtdense.data.kitti import _check_root as _check_kitti_root
from mtdense.data.kitti import _split_parts as _kitti_split_parts
from mtdense.data.kitti import _where as _kitti_folder
from mtdense.data.labels import label_ids_to_train_ids

__all__ = ["Problem", "SplitStats", "DataCheckReport", "tree_format", "check_dataset", "check_folder_dataset",
           "check_kitti_dataset"]


def _read_colour(path: Path):
    return read_image(path, colour_only=True)


@dataclass
class Problem:
    """One thing wrong with a dataset tree.

    Attributes:
        severity: ``"error"`` (loading would fail or be wrong) or ``"warning"``.
        file: The file (or folder) concerned.
        message: What is wrong.
        fix: What to do about it.
    """

    severity: str
    file: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}\n      fix: {self.fix}"


@dataclass
class SplitStats:
    """What :func:`check_dataset` found in one split.

    Attributes:
        images: Images listed.
        labels, disparities, cameras, rights: Images that have that counterpart (Cityscapes;
            ``labels`` also the semantic labels of KITTI).
        masks, depths, normals: Images that have that label (folder format; ``depths`` also
            the LiDAR ground truth of KITTI).
        checked: Frames whose files were read.
        depth_checked: Read frames whose disparity (depth) map could be decoded.
        valid_share_sum: Sum over read frames of the share of valid disparity (depth) pixels.
        disparity_range: ``(min, max)`` valid disparity in px over the read frames.
        depth_range: ``(min, max)`` valid depth in m over the read frames.
    """

    images: int = 0
    labels: int = 0
    disparities: int = 0
    cameras: int = 0
    rights: int = 0
    masks: int = 0
    depths: int = 0
    normals: int = 0
    checked: int = 0
    depth_checked: int = 0
    valid_share_sum: float = 0.0
    disparity_range: tuple[float, float] | None = None
    depth_range: tuple[float, float] | None = None

    def _extend(self, name: str, lo: float, hi: float) -> None:
        old = getattr(self, name)
        setattr(self, name, (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi)))


@dataclass
class DataCheckReport:
    """The result of :func:`check_dataset`.

    Attributes:
        root: The checked root.
        depth_source: The checked disparity folder (None: depth not checked; Cityscapes only).
        splits: Per-split counts and statistics.
        problems: Errors and warnings, each naming a file and a fix.
        format: ``cityscapes``, ``folder`` or ``kitti``.
        info: The folder or KITTI dataset's description (None: Cityscapes, or a broken ``dataset.yaml``).
    """

    root: Path
    depth_source: str | None
    splits: dict[str, SplitStats] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    format: str = "cityscapes"
    info: DatasetInfo | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No errors (warnings alone are fine)."""
        return not self.errors

    def summary(self, max_problems: int = 20) -> str:
        """A table of counts per split, then the errors and warnings (``max_problems`` of each)."""
        tables = {"folder": self._folder_table, "kitti": self._kitti_table}
        lines = tables.get(self.format, self._cityscapes_table)()
        for title, items in (("Errors", self.errors), ("Warnings", self.warnings)):
            if not items:
                continue
            lines += ["", f"{title} ({len(items)}):"]
            lines += [f"  - {p}" for p in items[:max_problems]]
            if len(items) > max_problems:
                lines.append(f"  ... and {len(items) - max_problems} more {title.lower()}")
        n_err, n_warn = len(self.errors), len(self.warnings)
        lines.append("")
        if n_err:
            lines.append(f"FAILED: {n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}")
        else:
            lines.append(f"OK: no errors, {n_warn} warning{'s' * (n_warn != 1)}")
        return "\n".join(lines)

    def _folder_table(self) -> list[str]:
        about = (f"{self.info.num_classes} classes, labels for {', '.join(self.info.tasks) or 'nothing'}"
                 if self.info is not None else f"{DESCRIPTION_FILE} unreadable")
        lines = [f"Folder dataset {self.root} ({about})", ""]
        lines.append(f"{'split':<12}{'images':>8}{'masks':>8}{'depth':>8}{'normals':>9}{'read':>7}{'valid depth':>13}"
                     f"  {'depth m':<16}")
        for name, s in self.splits.items():
            share = f"{100 * s.valid_share_sum / s.depth_checked:.1f}%" if s.depth_checked else "-"
            dep = f"{s.depth_range[0]:.2f}..{s.depth_range[1]:.2f}" if s.depth_range else "-"
            lines.append(f"{name:<12}{s.images:>8}{s.masks:>8}{s.depths:>8}{s.normals:>9}{s.checked:>7}{share:>13}"
                         f"  {dep:<16}")
        return lines

    def _kitti_table(self) -> list[str]:
        lines = [f"KITTI tree {self.root} (depth from {KITTI_DEPTH_FOLDER}/, labels from {KITTI_SEMANTICS_FOLDER}/)", ""]
        lines.append(f"{'split':<12}{'images':>8}{'depth':>8}{'labels':>8}{'read':>7}{'valid depth':>13}  {'depth m':<16}")
        for name, s in self.splits.items():
            share = f"{100 * s.valid_share_sum / s.depth_checked:.1f}%" if s.depth_checked else "-"
            dep = f"{s.depth_range[0]:.2f}..{s.depth_range[1]:.2f}" if s.depth_range else "-"
            lines.append(f"{name:<12}{s.images:>8}{s.depths:>8}{s.labels:>8}{s.checked:>7}{share:>13}  {dep:<16}")
        return lines

    def _cityscapes_table(self) -> list[str]:
        depth = f"{self.depth_source}/" if self.depth_source else "none"
        lines = [f"Cityscapes tree {self.root} (depth from {depth})", ""]
        header = f"{'split':<12}{'images':>8}{'labels':>8}{'disparity':>10}{'camera':>8}{'right':>7}{'read':>7}" \
                 f"{'valid disp':>12}  {'disparity px':<16}{'depth m':<16}"
        lines.append(header)
        for name, s in self.splits.items():
            share = f"{100 * s.valid_share_sum / s.depth_checked:.1f}%" if s.depth_checked else "-"
            disp = f"{s.disparity_range[0]:.2f}..{s.disparity_range[1]:.2f}" if s.disparity_range else "-"
            dep = f"{s.depth_range[0]:.1f}..{s.depth_range[1]:.1f}" if s.depth_range else "-"
            lines.append(f"{name:<12}{s.images:>8}{s.labels:>8}{s.disparities:>10}{s.cameras:>8}{s.rights:>7}"
                         f"{s.checked:>7}{share:>12}  {disp:<16}{dep:<16}")
        return lines


_FIX_REPLACE = "replace it with the file from the Cityscapes download (or regenerate the frame)"
_BASELINE_RANGE_M = (0.05, 1.5)  # stereo rigs on cars: Cityscapes 0.21 m, KITTI 0.54 m
_FX_OVER_WIDTH = (0.25, 4.0)  # horizontal field of view between about 14 and 127 degrees


def _files_by_stem(root: Path, folder: str | None, split: str, role: str) -> dict[tuple[str, str], Path]:
    if folder is None or not (root / folder / split).is_dir():
        return {}
    return {(p.parent.name, _stem(p, role)): p for p in (root / folder / split).glob(f"*/*{SUFFIXES[role]}")}


def _check_frame(frame: Frame, check_depth: bool) -> tuple[list[Problem], dict[str, Any]]:
    """Read one frame's files; return its problems and its disparity statistics."""
    problems: list[Problem] = []
    stats: dict[str, Any] = {}

    def error(path: Path, message: str, fix: str = _FIX_REPLACE) -> None:
        problems.append(Problem("error", str(path), message, fix))

    def warn(path: Path, message: str, fix: str) -> None:
        problems.append(Problem("warning", str(path), message, fix))

    def read(reader: Callable[[Path], Any], path: Path) -> Any:
        return _read_into(problems, reader, path, _FIX_REPLACE)

    image = read(_read_colour, frame.image)
    size = None if image is None else image.shape[:2]

    def same_size(array: np.ndarray, path: Path, what: str) -> bool:
        if size is not None and array.shape[:2] != size:
            error(path, f"{what} is {array.shape[0]}x{array.shape[1]} but its image {frame.image} is {size[0]}x{size[1]}",
                  "replace it with the file that belongs to this image (same stem, same size)")
            return False
        return True

    if frame.label is not None:
        ids = read(read_label_ids, frame.label)
        if ids is not None and same_size(ids, frame.label, "label"):
            try:
                label_ids_to_train_ids(ids)
            except ValueError as exc:
                error(frame.label, str(exc), "use the *_gtFine_labelIds.png of the download (ids 0..33), "
                      "or relabel the listed ids")
    camera = None
    if frame.camera is not None and check_depth:
        camera = read(read_camera, frame.camera)
        if camera is not None:
            b, fx = camera["baseline"], camera["fx"]
            if not _BASELINE_RANGE_M[0] <= b <= _BASELINE_RANGE_M[1]:
                warn(frame.camera, f"baseline {b:g} m is implausible for a car stereo rig "
                     f"({_BASELINE_RANGE_M[0]}..{_BASELINE_RANGE_M[1]} m; Cityscapes: 0.209 m)",
                     "check the unit (metres) and the file")
            if size is not None:
                h, w = size
                if not _FX_OVER_WIDTH[0] <= fx / w <= _FX_OVER_WIDTH[1]:
                    warn(frame.camera, f"fx {fx:g} px is implausible for a {w} px wide image (fx / width = {fx / w:.2f})",
                         "scale the intrinsics with the image (mtdense data cache does) or fix the file")
                if not (0 <= camera["u0"] <= w and 0 <= camera["v0"] <= h):
                    warn(frame.camera, f"principal point ({camera['u0']:g}, {camera['v0']:g}) px lies outside the "
                         f"{w}x{h} image", "scale the intrinsics with the image (mtdense data cache does) or fix the file")
    if frame.disparity is not None:
        png = read(read_disparity_png, frame.disparity)
        if png is not None and same_size(png, frame.disparity, "disparity map"):
            disparity = depth_lib.decode_cityscapes_disparity(png)
            valid = disparity > 0
            stats["valid_share"] = float(valid.mean()) if valid.size else 0.0
            if valid.any():
                stats["disparity"] = (float(disparity[valid].min()), float(disparity[valid].max()))
                if camera is not None:
                    bf = camera["baseline"] * camera["fx"]
                    stats["depth"] = (bf / stats["disparity"][1], bf / stats["disparity"][0])
            if stats["valid_share"] < 0.01:
                warn(frame.disparity, f"only {100 * stats['valid_share']:.2f}% of the pixels have a disparity",
                     "check that this is the right folder and encoding (uint16, p = 256 d + 1, 0 = invalid)")
    if frame.right is not None:
        right = read(_read_colour, frame.right)
        if right is not None:
            same_size(right, frame.right, "right view")
    return problems, stats


def check_dataset(
    root: str | Path,
    splits: list[str] | None = None,
    depth_source: str | None = "disparity",
    limit: int | None = None,
    progress: bool = True,
    workers: int | None = None,
    format: str = "auto",
) -> DataCheckReport:
    """Check a Cityscapes tree: counts, missing or orphaned files, unreadable PNGs, label ids,
    sizes, disparity coverage and range, camera sanity. A folder-format root is checked by
    :func:`check_folder_dataset` instead (``depth_source`` does not apply there).

    Counterparts are matched by stem. Missing labels (disparity maps) are errors when some frames
    of a split have them, a warning when none does (an unlabelled split, or a split without depth);
    a disparity map without a camera file is an error; files with no image are warnings.

    Args:
        root: Cityscapes root.
        splits: Splits to check (default: every folder under ``leftImg8bit/``).
        depth_source: Disparity folder to check; ``None``: depth and camera are not checked.
        limit: Read at most this many evenly spaced frames per split (counts cover all).
        progress: Show a tqdm progress bar.
        workers: Reader threads (default: up to 4, one per CPU).
        format: ``cityscapes``, ``folder``, ``kitti`` or ``auto`` (:func:`tree_format`).

    Returns:
        The report: ``.ok`` is False when there are errors; ``.summary()`` is for people.

    Raises:
        FileNotFoundError: The root, its ``leftImg8bit/`` or a named split does not exist.
        ValueError: A format other than these.
    """
    if format == "auto":
        format = tree_format(root)
    if format == "folder":
        return check_folder_dataset(root, splits, limit=limit, progress=progress, workers=workers)
    if format == "kitti":
        return check_kitti_dataset(root, splits, limit=limit, progress=progress, workers=workers)
    if format != "cityscapes":
        raise ValueError(f"'mtdense data check' reads the cityscapes, folder and kitti formats, not {format!r}")
    root = _check_root(Path(root))
    splits = list(splits) if splits else list_splits(root)
    report = DataCheckReport(root=root, depth_source=depth_source)
    jobs: list[tuple[str, Frame]] = []
    for split in splits:
        images = _image_files(root, split)
        stats = report.splits[split] = SplitStats(images=len(images))
        found = {
            "label": _files_by_stem(root, "gtFine", split, "label"),
            "disparity": _files_by_stem(root, depth_source, split, "disparity"),
            "camera": _files_by_stem(root, CAMERA_FOLDER, split, "camera"),
            "right": _files_by_stem(root, RIGHT_FOLDER, split, "right"),
        }
        keys = {(p.parent.name, _stem(p, "image")): p for p in images}
        have = {role: [k for k in keys if k in files] for role, files in found.items()}
        stats.labels, stats.disparities = len(have["label"]), len(have["disparity"])
        stats.cameras, stats.rights = len(have["camera"]), len(have["right"])
        frames = []
        for (city, name), image in keys.items():
            frames.append(Frame(name, split, city, image, found["label"].get((city, name)),
                                found["disparity"].get((city, name)) if depth_source else None,
                                found["camera"].get((city, name)), found["right"].get((city, name))))
        _missing_problems(report, root, split, frames, stats, depth_source)
        for role, files in found.items():
            folder = {"label": "gtFine", "disparity": depth_source, "camera": CAMERA_FOLDER, "right": RIGHT_FOLDER}[role]
            for key in sorted(set(files) - set(keys)):
                report.problems.append(Problem(
                    "warning", str(files[key]), f"no image {frame_file(root, IMAGE_FOLDER, split, key[0], key[1], 'image')}",
                    f"delete the stray {folder}/ file, or restore its image (a misnamed file pairs with nothing)"))
        jobs += [(split, f) for f in _spread(frames, limit)]
    _check_frames(report, jobs, lambda frame: _check_frame(frame, depth_source is not None), workers, progress)
    return report


def _spread(frames: list, limit: int | None) -> list:
    """At most ``limit`` frames, spread evenly over the list."""
    if limit is None or len(frames) <= limit:
        return frames
    return [frames[int(i)] for i in np.linspace(0, len(frames) - 1, limit).round().astype(int)]


def _check_frames(report, jobs: list, check, workers: int | None, progress: bool) -> None:
    """Decode and check every ``(split, frame)`` job in threads; problems and statistics go into ``report``."""
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda job: check(job[1]), jobs)
        for (split, _), (problems, frame_stats) in tqdm(zip(jobs, results), total=len(jobs), desc="data check",
                                                         unit="frame", disable=not progress):
            stats = report.splits[split]
            stats.checked += 1
            report.problems += problems
            if "valid_share" in frame_stats:
                stats.depth_checked += 1
                stats.valid_share_sum += frame_stats["valid_share"]
            for key, name in (("disparity", "disparity_range"), ("depth", "depth_range")):
                if key in frame_stats:
                    stats._extend(name, *frame_stats[key])


def _missing_problems(report: DataCheckReport, root: Path, split: str, frames: list[Frame], stats: SplitStats,
                      depth_source: str | None) -> None:
    n = len(frames)
    add = report.problems.append
    if n and stats.labels == 0:
        add(Problem("warning", str(root / "gtFine" / split), f"none of the {n} images of split {split!r} has a label",
                    "fine for unlabelled data (e.g. train_extra); to train or evaluate on it, extract "
                    "gtFine_trainvaltest.zip into the root"))
    elif stats.labels < n:
        for f in frames:
            if f.label is None:
                add(Problem("error", str(frame_file(root, "gtFine", split, f.city, f.name, "label")),
                            f"label missing for {f.image}",
                            "restore the file from gtFine_trainvaltest.zip, or remove the image"))
    if depth_source is None:
        return
    if n and stats.disparities == 0:
        add(Problem("warning", str(root / depth_source / split), f"none of the {n} images of split {split!r} has a "
                    f"disparity map in {depth_source}/", "extract disparity_trainvaltest.zip into the root, or run "
                    f"'mtdense data teacher' to write a teacher's maps, if this split needs depth"))
    elif stats.disparities < n:
        for f in frames:
            if f.disparity is None:
                add(Problem("error", str(frame_file(root, depth_source, split, f.city, f.name, "disparity")),
                            f"disparity map missing for {f.image}",
                            "restore the file (or rerun 'mtdense data teacher', which writes only missing maps)"))
    for f in frames:
        if f.disparity is not None and f.camera is None:
            add(Problem("error", str(frame_file(root, CAMERA_FOLDER, split, f.city, f.name, "camera")),
                        f"camera file missing for {f.disparity}: depth = baseline * fx / disparity needs it",
                        "extract camera_trainvaltest.zip into the root"))
    if 0 < stats.rights < n:
        for f in frames:
            if f.right is None:
                add(Problem("warning", str(frame_file(root, RIGHT_FOLDER, split, f.city, f.name, "right")),
                            f"right view missing for {f.image} (only stereo teachers need it)",
                            "extract rightImg8bit_trainvaltest.zip into the root"))


# --- the folder format --------------------------------------------------------------------------

_FOLDER_FIX = "replace it with a good copy, or delete the frame's files"


def tree_format(root: str | Path) -> str:
    """``folder`` for a root with ``dataset.yaml``, or with ``images/`` and no ``leftImg8bit/``;
    ``kitti`` for one with ``raw/``, ``data_depth_annotated/`` or ``data_semantics/`` and no
    ``leftImg8bit/``; ``cityscapes`` otherwise."""
    root = Path(root)
    if (root / DESCRIPTION_FILE).is_file():
        return "folder"
    if (root / IMAGE_FOLDER).is_dir():
        return "cityscapes"
    if (root / FOLDER_IMAGES).is_dir():
        return "folder"
    return "kitti" if any((root / m).is_dir() for m in KITTI_MARKERS) else "cityscapes"


def _read_into(problems: list[Problem], reader: Callable[[Path], Any], path: Path, default_fix: str = _FOLDER_FIX) -> Any:
    """``reader(path)``, or None with its error added to ``problems`` as "what" and "fix" (the
    readers say "FILE: what is wrong; what to do"; ``default_fix`` where they give no fix)."""
    try:
        return reader(path)
    except (ValueError, FileNotFoundError) as exc:
        message = str(exc)
        message = message[len(str(path)) + 2:] if message.startswith(f"{path}: ") else message
        what, _, fix = message.partition("; ")
        problems.append(Problem("error", str(path), what, fix or default_fix))
        return None


def _check_folder_frame(frame: FolderFrame, info: DatasetInfo | None) -> tuple[list[Problem], dict[str, Any]]:
    """Read one frame of a folder dataset; return its problems and its depth statistics."""
    problems: list[Problem] = []
    stats: dict[str, Any] = {}
    image = _read_into(problems, _read_colour, frame.image)
    size = None if image is None else image.shape[:2]

    def same_size(array: np.ndarray, path: Path) -> bool:
        if size is not None and array.shape[:2] != size:
            problems.append(Problem("error", str(path), f"{array.shape[0]}x{array.shape[1]} (H x W) but its image "
                                    f"{frame.image} is {size[0]}x{size[1]}",
                                    "labels must have their image's size (resize with nearest neighbour)"))
            return False
        return True

    if frame.mask is not None:
        mask = _read_into(problems, read_mask, frame.mask)
        if mask is not None and same_size(mask, frame.mask) and info is not None:
            _read_into(problems, lambda p: mask_to_seg(mask, info, p), frame.mask)
    if frame.depth is not None:
        scale = info.depth_scale if info is not None else 256.0
        depth = _read_into(problems, lambda p: read_depth_png(p, scale), frame.depth)
        if depth is not None and same_size(depth, frame.depth):
            valid = depth > 0
            stats["valid_share"] = float(valid.mean()) if valid.size else 0.0
            if valid.any():
                stats["depth"] = (float(depth[valid].min()), float(depth[valid].max()))
    if frame.normals is not None:
        normals = _read_into(problems, read_normals_png, frame.normals)
        if normals is not None:
            same_size(normals, frame.normals)
    return problems, stats


def check_folder_dataset(
    root: str | Path,
    splits: list[str] | None = None,
    limit: int | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> DataCheckReport:
    """Check a folder-format dataset: ``dataset.yaml``, layout, and every file of every frame.

    Errors: a broken or missing ``dataset.yaml``; two images of one name; a label that is not a
    PNG or has no image (also a label folder for a split ``images/`` lacks); a file that does not
    decode; a mask that is not one 8-bit channel or holds values that are no class nor the ignore
    index; a depth map that is not 16-bit; normals that encode no unit vector; a label whose size
    differs from its image. Warnings: files that are not read (not an image, in a sub-folder), a
    split without any label of a task the dataset has (the task is neither trained nor evaluated
    there). A frame without some labels is fine (asymmetric annotations).

    Args:
        root: The folder that holds ``dataset.yaml`` and ``images/``.
        splits: Splits to check (default: every folder under ``images/``).
        limit: Read at most this many evenly spaced frames per split (counts and layout cover all).
        progress: Show a tqdm progress bar.
        workers: Reader threads (default: up to 4, one per CPU).

    Raises:
        FileNotFoundError: The root, its ``images/`` or a named split does not exist.
    """
    root = _check_folder_root(Path(root))
    report = DataCheckReport(root=root, depth_source=None, format="folder")
    add = report.problems.append
    try:
        report.info = read_folder_info(root)
    except (ValueError, FileNotFoundError) as exc:
        what, _, fix = str(exc).removeprefix(f"{root / DESCRIPTION_FILE}: ").partition("; ")
        add(Problem("error", str(root / DESCRIPTION_FILE), what, fix or "fix the file"))
    tasks = report.info.tasks if report.info is not None else folder_tasks(root)
    known = list_folder_splits(root)
    for name in LABEL_FOLDERS.values():
        label_root = root / name
        if not label_root.is_dir():
            continue
        for split_dir in sorted(p for p in label_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if split_dir.name not in known and next(split_dir.iterdir(), None) is not None:
                add(Problem("error", str(split_dir), f"labels of split {split_dir.name!r} but no "
                            f"{FOLDER_IMAGES}/{split_dir.name}/ folder",
                            "restore the images, or rename the folder to the split its images are in"))
    jobs: list[tuple[str, FolderFrame]] = []
    for split in list(splits) if splits else known:
        frames, issues = scan_split(root, split)
        report.problems += [Problem(i.severity, str(i.file), i.message, i.fix) for i in issues]
        stats = report.splits[split] = SplitStats(images=len(frames))
        stats.masks = sum(f.mask is not None for f in frames)
        stats.depths = sum(f.depth is not None for f in frames)
        stats.normals = sum(f.normals is not None for f in frames)
        if not frames:
            add(Problem("error", str(root / FOLDER_IMAGES / split), "no images in this split",
                        "put the frames there as NAME.png or NAME.jpg, or remove the folder"))
        for task in TASKS:
            count = {"seg": stats.masks, "depth": stats.depths, "normals": stats.normals}[task]
            if task in tasks and frames and count == 0:
                add(Problem("warning", str(root / LABEL_FOLDERS[task] / split),
                            f"none of the {len(frames)} images of split {split!r} has a {LABEL_FOLDERS[task]}/ file: "
                            f"{task} is neither trained nor evaluated on this split",
                            f"fine for data without {task} labels; otherwise add {LABEL_FOLDERS[task]}/{split}/NAME.png"))
        jobs += [(split, f) for f in _spread(frames, limit)]
    _check_frames(report, jobs, lambda frame: _check_folder_frame(frame, report.info), workers, progress)
    return report


# --- the kitti format ---------------------------------------------------------------------------

_KITTI_FIX = "replace it with the file from the KITTI download"


def _check_kitti_frame(frame: KittiFrame) -> tuple[list[Problem], dict[str, Any]]:
    """Read one KITTI frame; return its problems and its depth statistics."""
    problems: list[Problem] = []
    stats: dict[str, Any] = {}
    image = _read_into(problems, _read_colour, frame.image, _KITTI_FIX)
    size = None if image is None else image.shape[:2]

    def same_size(array: np.ndarray, path: Path) -> bool:
        if size is not None and array.shape[:2] != size:
            problems.append(Problem("error", str(path), f"{array.shape[0]}x{array.shape[1]} (H x W) but its image "
                                    f"{frame.image} is {size[0]}x{size[1]}",
                                    "a frame's files must have one size; replace it with the file of this frame"))
            return False
        return True

    if frame.semantic is not None:
        seg = _read_into(problems, read_kitti_semantic, frame.semantic, _KITTI_FIX)
        if seg is not None:
            same_size(seg, frame.semantic)
    if frame.depth is not None:
        depth = _read_into(problems, read_kitti_depth, frame.depth, _KITTI_FIX)
        if depth is not None and same_size(depth, frame.depth):
            valid = depth > 0
            stats["valid_share"] = float(valid.mean()) if valid.size else 0.0
            if valid.any():
                stats["depth"] = (float(depth[valid].min()), float(depth[valid].max()))
            else:
                problems.append(Problem("warning", str(frame.depth), "no LiDAR point in this depth map",
                                        "check that it is the groundtruth/ file of the download"))
    return problems, stats


def _kitti_splits(root: Path) -> list[str]:
    splits = [s for s in KITTI_DEPTH_SPLITS if (root / KITTI_DEPTH_FOLDER / s).is_dir()]
    return splits + (["semantics"] if (root / KITTI_SEMANTICS_FOLDER / "training").is_dir() else [])


def check_kitti_dataset(
    root: str | Path,
    splits: list[str] | None = None,
    limit: int | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> DataCheckReport:
    """Check a KITTI root (see :mod:`mtdense.data.kitti`): layout, and every file of every frame.

    Errors: a drive folder that is no KITTI drive name; a depth map without its raw image (a
    missing raw drive folder counts once, naming the folder expected); a semantic label without
    its image; a file that does not decode; a depth map that is not 16-bit or a label that is not
    8-bit; label ids outside the Cityscapes table; a depth map or label whose size differs from
    its image; a split without frames. Warnings: a drive without depth maps, a semantic image
    without its label, a depth map without any LiDAR point.

    Args:
        root: The folder that holds ``raw/``, ``data_depth_annotated/``, ``data_semantics/``.
        splits: Splits to check (default: ``train``, ``val`` and ``semantics``, those present).
        limit: Read at most this many evenly spaced frames per split (counts and layout cover all).
        progress: Show a tqdm progress bar.
        workers: Reader threads (default: up to 4, one per CPU).

    Raises:
        FileNotFoundError: The root does not exist or holds no KITTI folder.
        ValueError: An unknown split name.
    """
    root = _check_kitti_root(Path(root))
    report = DataCheckReport(root=root, depth_source=None, format="kitti", info=kitti_info())
    splits = list(splits) if splits else _kitti_splits(root)
    if not splits:
        report.problems.append(Problem("error", str(root), f"neither {KITTI_DEPTH_FOLDER}/train, {KITTI_DEPTH_FOLDER}/val "
                                       f"nor {KITTI_SEMANTICS_FOLDER}/training: no frames to train or evaluate on",
                                       "extract data_depth_annotated.zip (with the raw drives it names into raw/) or "
                                       "data_semantics.zip into the root"))
    jobs: list[tuple[str, KittiFrame]] = []
    for split in splits:
        frames, issues = scan_kitti_split(root, split)
        report.problems += [Problem(i.severity, str(i.file), i.message, i.fix) for i in issues]
        stats = report.splits[split] = SplitStats(images=len(frames))
        stats.depths = sum(f.depth is not None for f in frames)
        stats.labels = sum(f.semantic is not None for f in frames)
        if not frames and not any(i.severity == "error" for i in issues):
            report.problems.append(Problem("error", str(_kitti_folder(root, _kitti_split_parts(split)[0][0])),
                                           f"kitti split {split!r} has no frames",
                                           "extract the download into the root, or leave the split out"))
        jobs += [(split, f) for f in _spread(frames, limit)]
    _check_frames(report, jobs, _check_kitti_frame, workers, progress)
    return report
