"""Running a stereo teacher over a split: its disparity as a depth source beside the real one.

:func:`generate_teacher_disparity` writes a teacher's disparity as Cityscapes 16-bit PNGs
(``p = round(256 d + 1)``, 0 = no value) into ``ROOT/NAME/SPLIT/CITY/``, which
``CityscapesDataset(root, split, depth_source=NAME)`` reads like the shipped maps, and a
:class:`TeacherSummary` (counts, coverage, disparity range) beside them.

    >>> teacher = create_teacher("sgbm", lr_check=True, fill="background")
    >>> summary = generate_teacher_disparity("data/cityscapes", teacher, split="train", out="disparity_sgbm")
    >>> print(summary.format())
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mtdense.data.depth import decode_cityscapes_disparity, encode_cityscapes_disparity
from mtdense.data.image import read_image
from mtdense.io import write_json_atomic, write_png_atomic
from mtdense.items import item_failure, item_message
from mtdense.teachers.layout import check_not_download_folder
from mtdense.teachers.stereo import StereoTeacher

if TYPE_CHECKING:
    from mtdense.data.cityscapes import Frame

__all__ = ["TeacherSummary", "generate_teacher_disparity"]


@dataclass
class _Stats:
    pixels: int = 0
    valid: int = 0
    total_px: float = 0.0
    min_px: float = math.inf
    max_px: float = -math.inf
    frames: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, png: np.ndarray) -> None:
        valid = png > 0
        n = int(valid.sum())
        self.pixels += png.size
        self.valid += n
        self.frames[name] = n / png.size if png.size else 0.0
        if n:
            d = decode_cityscapes_disparity(png)[valid]
            self.total_px += float(d.sum(dtype=np.float64))
            self.min_px = min(self.min_px, float(d.min()))
            self.max_px = max(self.max_px, float(d.max()))

    def as_dict(self) -> dict[str, Any]:
        worst = min(self.frames, key=self.frames.__getitem__) if self.frames else None
        return {
            "coverage": self.valid / self.pixels if self.pixels else 0.0,
            "coverage_min": self.frames[worst] if worst else None,
            "worst_frame": worst,
            "mean_px": self.total_px / self.valid if self.valid else None,
            "min_px": self.min_px if self.valid else None,
            "max_px": self.max_px if self.valid else None,
        }


@dataclass
class TeacherSummary:
    """What :func:`generate_teacher_disparity` did.

    Attributes:
        split: The split.
        out_dir: ``ROOT/NAME/SPLIT``.
        teacher: The teacher's settings (:meth:`StereoTeacher.describe`).
        frames: Left/right pairs in the split (after ``limit``).
        written: PNGs computed in this run.
        skipped: PNGs that existed and were kept (a resumed run).
        seconds: Wall time of the run.
        stats: Over every PNG of the split (written or kept): ``coverage`` (share of pixels
            with a disparity, 0..1), ``coverage_min`` and ``worst_frame`` (the frame with the
            least), ``mean_px`` / ``min_px`` / ``max_px`` over valid pixels (None when none).
        frame_coverage: Per frame name, its share of pixels with a disparity.
        failed: Frames that could not be done: left image path -> one-line message naming the
            file at fault and the fix (an unreadable image, views of different sizes, ...).
    """

    split: str
    out_dir: Path
    teacher: dict[str, Any]
    frames: int
    written: int
    skipped: int
    seconds: float
    stats: dict[str, Any]
    frame_coverage: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def format(self) -> str:
        """A short human-readable report."""
        s = self.stats
        lines = [
            f"teacher {self.teacher.get('method')} on {self.split}: {self.frames} pairs, {self.written} computed, "
            f"{self.skipped} kept from an earlier run, {len(self.failed)} failed ({self.seconds:.1f} s) -> {self.out_dir}",
            f"coverage {100 * s['coverage']:.1f}% of pixels",
        ]
        if s["worst_frame"] is not None:
            lines[-1] += f" (lowest {100 * s['coverage_min']:.1f}%: {s['worst_frame']})"
        if s["mean_px"] is not None:
            lines.append(f"disparity mean {s['mean_px']:.2f} px, range {s['min_px']:.2f}..{s['max_px']:.2f} px")
        else:
            lines.append("no valid disparity at all: check that the views are a rectified left/right pair")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split, "out_dir": str(self.out_dir), "teacher": self.teacher, "frames": self.frames,
            "written": self.written, "skipped": self.skipped, "seconds": self.seconds, "stats": self.stats,
            "frame_coverage": self.frame_coverage, "failed": self.failed,
        }


def _teacher_png(teacher: StereoTeacher, f: Frame) -> np.ndarray:
    """One frame's teacher disparity, encoded as a Cityscapes PNG array."""
    left, right = read_image(f.image, colour_only=True), read_image(f.right, colour_only=True)
    if left.shape != right.shape:
        raise ValueError(f"{f.right}: {right.shape[1]} x {right.shape[0]} px, but its left view {f.image} is {left.shape[1]} x {left.shape[0]}")
    disp = np.asarray(teacher(left, right))
    if disp.shape != left.shape[:2]:
        raise ValueError(f"{teacher!r} returned a map of shape {disp.shape} for {f.image} ({left.shape[0]} x {left.shape[1]})")
    return encode_cityscapes_disparity(disp)


def generate_teacher_disparity(
    root: str | Path,
    teacher: StereoTeacher,
    split: str = "train",
    out: str = "disparity_teacher",
    overwrite: bool = False,
    limit: int | None = None,
    progress: bool = True,
    on_failure: Callable[[str], None] | None = None,
) -> TeacherSummary:
    """Run a stereo teacher over every left/right pair of a split and save its disparity.

    Writes ``ROOT/OUT/SPLIT/CITY/{name}_disparity.png`` (uint16, Cityscapes encoding
    ``p = round(256 d + 1)``, 0 = no value; disparities above 255.99 px saturate) for every
    ``leftImg8bit`` image with its ``rightImg8bit`` view, and ``ROOT/OUT/SPLIT_summary.json``
    (the teacher's settings, counts, coverage, per-frame coverage). Files are written
    atomically; PNGs that exist are kept unless ``overwrite``, so an interrupted run resumes.
    A frame that fails (an unreadable image or disparity, views of different sizes) is recorded
    in :attr:`TeacherSummary.failed` and the others go on.

    Args:
        root: Cityscapes root with ``leftImg8bit/`` and ``rightImg8bit/``.
        teacher: A :class:`~mtdense.teachers.stereo.StereoTeacher` (e.g. from
            :func:`~mtdense.teachers.stereo.create_teacher`).
        split: Split folder name (``train``, ``val``, ``test``, ``train_extra``).
        out: Output folder name under ``root``; train on it with ``depth_source=out``.
        overwrite: Recompute PNGs that already exist.
        limit: Only the first ``limit`` pairs (sorted by name).
        progress: Show a tqdm progress bar.
        on_failure: Called with each failed frame's one-line message as it fails.

    Returns:
        A :class:`TeacherSummary`.

    Raises:
        FileNotFoundError: no left images in the split, or a left image without its right view
            (the message names the file and the fix). ValueError: a bad ``out`` name.
        WriteError: an output that cannot be written (it would fail for every frame).
    """
    from tqdm import tqdm

    from mtdense.data.cityscapes import frame_file, list_frames, read_disparity_png

    check_not_download_folder(out, "disparity_sgbm")
    root = Path(root)
    frames = list_frames(root, split, depth_source=None, require_labels=False, load_right=True)
    if not frames:
        raise FileNotFoundError(f"{root / 'leftImg8bit' / split}: no *_leftImg8bit.png images; check the root and --split")
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        frames = frames[:limit]
    out_dir = root / out / split
    stats = _Stats()
    written = skipped = 0
    start = time.perf_counter()
    failed: dict[str, str] = {}
    for f in tqdm(frames, desc=f"teacher {split}", unit="pair", disable=not progress):
        target = frame_file(root, out, split, f.city, f.name, "disparity")
        try:
            if target.is_file() and not overwrite:
                try:
                    png = read_disparity_png(target)
                except ValueError as exc:
                    raise ValueError(f"{exc}; delete it or rerun with --overwrite to recompute it") from exc
                skipped += 1
            else:
                png = _teacher_png(teacher, f)
                write_png_atomic(target, png)
                written += 1
        except Exception as exc:
            if not item_failure(exc):
                raise
            failed[str(f.image)] = item_message(exc, f.image)
            if on_failure is not None:
                on_failure(failed[str(f.image)])
            continue
        stats.add(f.name, png)
    describe = getattr(teacher, "describe", None)
    summary = TeacherSummary(
        split=split, out_dir=out_dir, teacher=describe() if callable(describe) else {"method": repr(teacher)},
        frames=len(frames), written=written, skipped=skipped, seconds=time.perf_counter() - start,
        stats=stats.as_dict(), frame_coverage=stats.frames, failed=failed,
    )
    write_json_atomic(out_dir.parent / f"{split}_summary.json", summary.as_dict())
    return summary
