"""Frames from recordings: videos -> a ``folder`` dataset (``ROOT/images/SPLIT/NAME.png``).

:func:`extract_frames` decodes one video or every video of a folder with OpenCV and writes the
frames it picks as lossless PNGs named ``VIDEO_FRAME.png`` (the video's file stem and the
frame's index in the video, from 0, zero-padded), so a frame can always be traced back to its
recording and several recordings share one split without a clash:

- Picking: every ``every``-th frame, or ``fps`` frames per second of video (the first frame of
  each ``1 / fps`` slot, timed by the container's frame rate), at most ``max_frames`` per video;
  optionally resized to ``size`` and with near-duplicates left out (``min_change``: a frame
  whose mean absolute grey difference from the last frame kept, on a 64 px wide thumbnail, is
  below that many grey levels, 0..255).
- Names: two videos with one stem (``a/clip.mp4``, ``b/clip.mp4``, ``clip.avi``) get
  ``clip`` and ``clip-2``. Which video holds which name is kept in
  ``ROOT/images/SPLIT_frames.json`` (with the settings it was extracted with), so a later run
  adds recordings to the split without renaming or mixing earlier ones.
- Resume: frames already written are kept, not written again; a video extracted before with
  other settings is refused (its frames would mix two samplings).
- Faults: a frame OpenCV cannot decode (a damaged or truncated file), or one of another size
  than the video's first, is reported in one line naming the video and the frame and left
  out; the others go on. A video that cannot be opened is refused when it is the only input,
  reported and left out when it is one of a folder's.

:func:`write_dataset_yaml` writes the ``dataset.yaml`` the folder format needs, and
:func:`classes_from` reads a class list from a teacher (an mtdense checkpoint, or a YAML file).

    >>> summary = extract_frames("drives/", "data/mine", split="train", fps=2, min_change=3)
    >>> print(summary.format())
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtdense.data.description import DESCRIPTION_FILE, read_dataset_yaml
from mtdense.data.image import IMAGE_SUFFIXES, VIDEO_SUFFIXES, read_image
from mtdense.io import prepare_dir, read_yaml, write_json_atomic, write_png_atomic, write_yaml_atomic

__all__ = [
    "FrameSampling", "VideoFrames", "FramesSummary", "list_videos", "extract_frames", "record_path",
    "write_dataset_yaml", "classes_from", "THUMB_WIDTH",
]

THUMB_WIDTH = 64
"""Width in px of the grey thumbnail on which ``min_change`` compares frames."""

_MAX_FAILED_GRABS = 25  # consecutive frames that fail to decode before the rest is taken as missing
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a video to write, and how.

    Attributes:
        every: Every ``every``-th frame (1: all), counted from frame 0.
        fps: Frames per second of video to keep instead (``None``: use ``every``).
        max_frames: At most this many frames per video (``None``: no limit).
        size: Resize to ``(H, W)`` (``None``: the video's size).
        min_change: Leave out a frame whose mean absolute grey difference from the last one
            kept is under this many grey levels (0..255; ``None``: keep every picked frame).
    """

    every: int = 1
    fps: float | None = None
    max_frames: int | None = None
    size: tuple[int, int] | None = None
    min_change: float | None = None

    def __post_init__(self) -> None:
        if int(self.every) != self.every or self.every < 1:
            raise ValueError(f"--every must be a whole number >= 1, got {self.every}")
        if self.fps is not None and not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"--fps must be > 0 frames per second, got {self.fps}")
        if self.fps is not None and self.every != 1:
            raise ValueError("give --every or --fps, not both")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"--max must be >= 1, got {self.max_frames}")
        if self.size is not None:
            if len(self.size) != 2 or min(self.size) < 1:
                raise ValueError(f"--size must be H W > 0, got {self.size}")
            object.__setattr__(self, "size", (int(self.size[0]), int(self.size[1])))
        if self.min_change is not None and not (math.isfinite(self.min_change) and 0 <= self.min_change <= 255):
            raise ValueError(f"--min-change is a grey-level difference, 0..255; got {self.min_change}")

    def as_dict(self) -> dict[str, Any]:
        return {"every": int(self.every), "fps": self.fps, "max_frames": self.max_frames,
                "size": list(self.size) if self.size else None, "min_change": self.min_change}

    def picks(self, index: int, video_fps: float) -> bool:
        """Whether frame ``index`` (from 0) of a video at ``video_fps`` is picked (before
        ``max_frames`` and ``min_change``)."""
        if self.fps is None:
            return index % self.every == 0
        if self.fps >= video_fps:
            return True
        slot = math.floor(index * self.fps / video_fps + 1e-9)
        return index == 0 or slot > math.floor((index - 1) * self.fps / video_fps + 1e-9)


@dataclass
class VideoFrames:
    """What :func:`extract_frames` did with one video.

    Attributes:
        source: The video file.
        name: The stem its frames are named with (``NAME_FRAME.png``).
        announced: Frames the container announces (0 where it does not tell).
        decoded: Frames read (decoded or grabbed).
        written: Frames written in this run.
        kept: Picked frames that were already there (an earlier run).
        near_duplicates: Picked frames left out by ``min_change``.
        unreadable: Picked frames that could not be decoded (indices).
        undecodable: All frames that could not be decoded, picked or not.
        error: Why the video was left out whole (it cannot be opened), else None.
    """

    source: str
    name: str
    announced: int = 0
    decoded: int = 0
    written: int = 0
    kept: int = 0
    near_duplicates: int = 0
    unreadable: list[int] = field(default_factory=list)
    undecodable: int = 0
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "name": self.name, "announced": self.announced, "decoded": self.decoded,
                "written": self.written, "kept": self.kept, "near_duplicates": self.near_duplicates,
                "unreadable": self.unreadable, "undecodable": self.undecodable, "error": self.error}


@dataclass
class FramesSummary:
    """What :func:`extract_frames` did.

    Attributes:
        root: The dataset root.
        split: The split.
        sampling: The settings.
        videos: One :class:`VideoFrames` per input video, in order.
        failed: What was left out: ``VIDEO frame N`` (or the video) -> one-line message.
        seconds: Wall time.
        dataset_yaml: The ``dataset.yaml`` written in this run, or None.
    """

    root: Path
    split: str
    sampling: FrameSampling
    videos: list[VideoFrames] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    dataset_yaml: Path | None = None

    @property
    def written(self) -> int:
        return sum(v.written for v in self.videos)

    @property
    def kept(self) -> int:
        return sum(v.kept for v in self.videos)

    @property
    def near_duplicates(self) -> int:
        return sum(v.near_duplicates for v in self.videos)

    def format(self) -> str:
        """A short human-readable report."""
        out = self.root / "images" / self.split
        lines = [f"frames for {self.split}: {len(self.videos)} video{'s' * (len(self.videos) != 1)}, {self.written} written, "
                 f"{self.kept} kept from an earlier run, {self.near_duplicates} near-duplicates left out, "
                 f"{len(self.failed)} skipped ({self.seconds:.1f} s) -> {out}"]
        for v in self.videos:
            if v.error:
                lines.append(f"  {v.source}: left out ({v.error})")
            else:
                lines.append(f"  {v.source} -> {v.name}_*.png: {v.written + v.kept} frames of {v.decoded} read"
                             + (f", {len(v.unreadable)} unreadable" if v.unreadable else ""))
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "split": self.split, "sampling": self.sampling.as_dict(),
                "videos": [v.as_dict() for v in self.videos], "written": self.written, "kept": self.kept,
                "near_duplicates": self.near_duplicates, "failed": self.failed, "seconds": self.seconds,
                "dataset_yaml": str(self.dataset_yaml) if self.dataset_yaml else None}


def record_path(root: str | Path, split: str) -> Path:
    """``ROOT/images/SPLIT_frames.json``: which video each name of the split came from, and how."""
    return Path(root) / "images" / f"{split}_frames.json"


def list_videos(path: str | Path) -> list[Path]:
    """The video of ``path`` (a file), or the videos directly in ``path`` (a folder), sorted.

    Raises:
        FileNotFoundError: No such file or folder.
        ValueError: A file that is not a video, or a folder without videos.
    """
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            raise ValueError(f"{path}: an image, not a video; put images straight into ROOT/images/SPLIT/ "
                             "(they need no extraction)")
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ValueError(f"{path}: not a video file (known suffixes: {', '.join(VIDEO_SUFFIXES)}); give a video or a "
                             "folder of videos")
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such video or folder; check the path")
    videos = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES
                    and not p.name.startswith("."))
    if not videos:
        raise ValueError(f"{path}: no video files in this folder (suffixes {', '.join(VIDEO_SUFFIXES)}); give a video "
                         "or a folder that holds videos")
    return videos


def _read_record(path: Path, split: str) -> dict[str, Any]:
    if not path.is_file():
        return {"split": split, "videos": {}}
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable frame record ({exc}); restore it, or delete it (earlier frames are then "
                         "treated as someone else's and new videos get new names)") from exc
    if not isinstance(data, dict) or not isinstance(data.get("videos"), dict):
        raise ValueError(f"{path}: not a frame record (no 'videos' mapping); restore it or delete it")
    return data


def _identity(path: Path) -> dict[str, Any]:
    """What tells one recording from another: its file name and size (not its folder, so a moved
    video is still the same one)."""
    return {"file": path.name, "bytes": path.stat().st_size}


def _choose_name(video: Path, record: dict[str, Any], taken: set[str], folder: Path) -> tuple[str, bool]:
    """The name stem of ``video``'s frames and whether an earlier run used it for this video."""
    ident = _identity(video)
    for name, entry in record["videos"].items():
        if {"file": entry.get("file"), "bytes": entry.get("bytes")} == ident and name not in taken:
            return name, True
    base = _SAFE.sub("_", video.stem).strip("._") or "video"
    # Frames no record lists belong to someone else: their stems are not reused.
    existing = {p.stem.rsplit("_", 1)[0] for p in folder.glob("*_*.png")} if folder.is_dir() else set()
    name, n = base, 1
    while name in record["videos"] or name in taken or name in existing:
        n += 1
        name = f"{base}-{n}"
    return name, False


def _thumb(bgr: np.ndarray) -> np.ndarray:
    h, w = bgr.shape[:2]
    tw = min(THUMB_WIDTH, w)
    th = max(1, round(h * tw / w))
    grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (tw, th), interpolation=cv2.INTER_AREA).astype(np.float32)


def _ranges(indices: Sequence[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for i in indices:
        if out and i == out[-1][1] + 1:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def _frames_label(video: Path, lo: int, hi: int) -> str:
    return f"{video} frame {lo}" if lo == hi else f"{video} frames {lo}-{hi}"


def _extract_one(video: Path, name: str, out_dir: Path, sampling: FrameSampling, bar: Any,
                 fail: Callable[[str, str], None]) -> VideoFrames:
    result = VideoFrames(source=str(video), name=name)
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            raise ValueError(f"{video}: OpenCV cannot open this video (corrupt, or a codec this OpenCV build lacks); "
                             "re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4) or remove it")
        video_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        if sampling.fps is not None and not 0 < video_fps < 1000:
            raise ValueError(f"{video}: the container tells no frame rate, so --fps cannot time its frames; use --every N")
        result.announced = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        digits = max(6, len(str(max(result.announced - 1, 0))))
        picked = 0
        shape: tuple[int, ...] | None = None
        last: np.ndarray | None = None
        index, failed_run = 0, 0
        reported: list[tuple[int, str]] = []  # (index, why) of picked frames that are left out
        while sampling.max_frames is None or picked < sampling.max_frames:
            if not cap.grab():
                if index < result.announced and failed_run < _MAX_FAILED_GRABS:
                    # A frame that does not decode: FFmpeg drops its packet and goes on with the next one.
                    if sampling.picks(index, video_fps):
                        reported.append((index, "could not be decoded (a damaged or truncated file)"))
                    result.undecodable += 1
                    index, failed_run = index + 1, failed_run + 1
                    bar.update(1)
                    continue
                break
            failed_run = 0
            i, index = index, index + 1
            result.decoded += 1
            bar.update(1)
            if not sampling.picks(i, video_fps):
                continue
            target = out_dir / f"{name}_{i:0{digits}d}.png"
            if target.is_file() and sampling.min_change is None and _readable(target):
                result.kept += 1
                picked += 1
                continue
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                reported.append((i, "could not be decoded (a damaged or truncated file)"))
                result.undecodable += 1
                continue
            if shape is None:
                shape = bgr.shape
            elif bgr.shape != shape:
                reported.append((i, f"is {bgr.shape[1]} x {bgr.shape[0]}, not the video's {shape[1]} x {shape[0]}"))
                continue
            if sampling.size is not None and bgr.shape[:2] != sampling.size:
                h, w = sampling.size
                shrink = h * w < bgr.shape[0] * bgr.shape[1]
                bgr = cv2.resize(bgr, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            if sampling.min_change is not None:
                thumb = _thumb(bgr)
                if last is not None and float(np.abs(thumb - last).mean()) < sampling.min_change:
                    result.near_duplicates += 1
                    continue
                last = thumb
            picked += 1
            if target.is_file() and _readable(target):
                result.kept += 1
            else:
                write_png_atomic(target, bgr)
                result.written += 1
        if 0 < index < result.announced and failed_run >= _MAX_FAILED_GRABS:
            rest = [j for j in range(index, result.announced) if sampling.picks(j, video_fps)]
            result.undecodable += result.announced - index
            if sampling.max_frames is not None:
                rest = rest[: max(0, sampling.max_frames - picked)]
            reported += [(j, "could not be decoded (a damaged or truncated file)") for j in rest]
        if result.decoded == 0:
            raise ValueError(f"{video}: no frame could be decoded (a damaged file, or a codec this OpenCV build lacks); "
                             "re-encode it or remove it")
    finally:
        cap.release()
    result.unreadable = sorted(j for j, _ in reported)
    by_reason: dict[str, list[int]] = {}
    for j, why in reported:
        by_reason.setdefault(why, []).append(j)
    for why, indices in by_reason.items():
        for lo, hi in _ranges(sorted(indices)):
            fix = "re-encode or replace the video" if "decoded" in why else "re-encode the video at one frame size"
            fail(_frames_label(video, lo, hi), f"{_frames_label(video, lo, hi)}: {why}; {fix}")
    return result


def _readable(path: Path) -> bool:
    """Whether an earlier run's frame decodes (a damaged one is written again)."""
    try:
        read_image(path, colour_only=True)
    except (ValueError, OSError):
        return False
    return True


def extract_frames(
    source: str | Path,
    root: str | Path,
    split: str = "train",
    sampling: FrameSampling | None = None,
    progress: bool = True,
    on_failure: Callable[[str], None] | None = None,
) -> FramesSummary:
    """Write the picked frames of a video (or of every video of a folder) into a folder dataset.

    Writes ``ROOT/images/SPLIT/NAME_FRAME.png`` (see the module docstring) atomically, and
    ``ROOT/images/SPLIT_frames.json`` (per video: its file, size, name stem, settings, counts).

    Args:
        source: A video file, or a folder whose videos (directly in it) are all extracted.
        root: The dataset root.
        split: The split folder under ``images/``.
        sampling: Which frames (default: all).
        progress: Show a tqdm progress bar.
        on_failure: Called with each one-line message of what is left out, as it happens.

    Returns:
        A :class:`FramesSummary`.

    Raises:
        FileNotFoundError: No such source. ValueError: a source that is not a video (or a folder
            without any), a single video that cannot be opened or decoded, a video extracted
            before with other settings, an unreadable record, a bad split name.
        WriteError: An output that cannot be written.
    """
    from tqdm import tqdm

    sampling = sampling or FrameSampling()
    if not split or Path(split).name != split or split in (".", ".."):
        raise ValueError(f"--split must be one folder name (e.g. train), got {split!r}")
    videos = list_videos(source)
    root = Path(root)
    out_dir = root / "images" / split
    rec_path = record_path(root, split)
    record = _read_record(rec_path, split)
    names: list[tuple[Path, str]] = []
    taken: set[str] = set()
    for video in videos:
        name, known = _choose_name(video, record, taken, out_dir)
        if known:
            before = record["videos"][name].get("sampling")
            if before != sampling.as_dict():
                raise ValueError(
                    f"{video}: extracted into {out_dir} before with other settings ({_settings(before)}, not "
                    f"{_settings(sampling.as_dict())}); rerun with those to resume, or extract into another --split or ROOT")
        taken.add(name)
        names.append((video, name))
    prepare_dir(out_dir)
    summary = FramesSummary(root=root, split=split, sampling=sampling)
    start = time.perf_counter()

    def fail(key: str, message: str) -> None:
        summary.failed[key] = message
        if on_failure is not None:
            on_failure(message)

    total = sum(_announced(v) for v in videos)
    with tqdm(total=total or None, desc=f"frames {split}", unit="frame", disable=not progress) as bar:
        for video, name in names:
            # Recorded before its first frame is written, so an interrupted run resumes under the same name.
            entry = record["videos"].setdefault(name, {})
            entry.update({**_identity(video), "source": str(video.resolve()), "sampling": sampling.as_dict()})
            write_json_atomic(rec_path, record)
            try:
                result = _extract_one(video, name, out_dir, sampling, bar, fail)
            except ValueError as exc:
                if len(videos) == 1:
                    raise
                result = VideoFrames(source=str(video), name=name, error=str(exc).removeprefix(f"{video}: "))
                fail(str(video), str(exc))
            summary.videos.append(result)
            if result.error is not None and not any(out_dir.glob(f"{name}_*.png")):
                del record["videos"][name]
            else:
                entry.update({"frames": result.written + result.kept, "announced": result.announced,
                              "unreadable": result.unreadable})
            write_json_atomic(rec_path, record)
    summary.seconds = time.perf_counter() - start
    return summary


def _announced(video: Path) -> int:
    cap = cv2.VideoCapture(str(video))
    try:
        return max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))) if cap.isOpened() else 0
    finally:
        cap.release()


def _settings(d: dict[str, Any] | None) -> str:
    if not d:
        return "unknown"
    parts = [f"--fps {d['fps']:g}" if d.get("fps") else f"--every {d.get('every', 1)}"]
    if d.get("max_frames"):
        parts.append(f"--max {d['max_frames']}")
    if d.get("size"):
        parts.append(f"--size {d['size'][0]} {d['size'][1]}")
    if d.get("min_change") is not None:
        parts.append(f"--min-change {d['min_change']:g}")
    return " ".join(parts)


# -- the dataset description ---------------------------------------------------------------------------
def write_dataset_yaml(root: str | Path, classes: Sequence[str], depth_scale: float = 256.0) -> Path:
    """Write ``ROOT/dataset.yaml`` with ``classes`` and ``depth_scale`` (checked as the reader
    checks them; a file that exists is never replaced).

    Raises:
        ValueError: A bad class list, or a ``dataset.yaml`` that exists already.
    """
    from mtdense.data.description import DatasetInfo

    path = Path(root) / DESCRIPTION_FILE
    if path.exists():
        raise ValueError(f"{path}: exists already; edit it instead")
    info = DatasetInfo(classes=tuple(classes), depth_scale=depth_scale)
    write_yaml_atomic(path, {"classes": list(info.classes), "depth_scale": info.depth_scale})
    read_dataset_yaml(path)  # what was written reads back
    return path


def classes_from(path: str | Path) -> list[str]:
    """A teacher's class list: the classes of an mtdense checkpoint (``.pth``, ``.safetensors``,
    ``.ckpt``), or the ``classes`` (a ``dataset.yaml``) or ``teacher_classes`` (a class map of
    ``mtdense data teacher --method seg-onnx``) list of a YAML file.

    Raises:
        FileNotFoundError: No such file. ValueError: a file that holds no class list.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; give an mtdense checkpoint or a YAML file with a class list")
    if path.suffix.lower() in (".pth", ".pt", ".safetensors", ".ckpt"):
        from mtdense.data.description import model_dataset_info
        from mtdense.models import load_model

        return list(model_dataset_info(load_model(path)).classes)
    if path.suffix.lower() not in (".yaml", ".yml"):
        raise ValueError(f"{path}: neither an mtdense checkpoint (.pth, .safetensors, .ckpt) nor a YAML file; give one "
                         "of those, or list the classes with --classes")
    data = read_yaml(path)
    for key in ("classes", "teacher_classes"):
        if isinstance(data, dict) and isinstance(data.get(key), list) and data[key]:
            names = data[key]
            if not all(isinstance(n, str) for n in names):
                raise ValueError(f"{path}: '{key}' holds entries that are not names ({names!r}); quote them")
            return list(names)
    raise ValueError(f"{path}: holds no 'classes' or 'teacher_classes' list; give a dataset.yaml, a class map with "
                     "'teacher_classes', or an mtdense checkpoint")
