"""A pre-resized copy of a Cityscapes tree, in the same layout, for when decoding is the bottleneck.

Full-size 2048 x 1024 PNGs cost far more to decode than a 1/4-resolution training step needs.
:func:`cache_dataset` writes a copy at a smaller size that :class:`~mtdense.data.cityscapes.CityscapesDataset`
reads like the original:

- images (left and right): area interpolation when shrinking, bilinear when enlarging;
- label ids and disparity: exact nearest neighbour (``INTER_NEAREST_EXACT``: the source pixel
  whose centre is nearest, the same pixel the image's resampling centres on);
- disparity *values* times the x factor, and the camera intrinsics scaled with the image
  (``fx`` by the x factor, ``fy`` by the y factor, the principal point mapped like a pixel
  centre), so depth = baseline * fx / disparity is unchanged (up to the 1/256 px quantisation).

Only the files the dataset reads are copied: ``*_leftImg8bit.png``, ``*_rightImg8bit.png``,
``*_gtFine_labelIds.png`` of every label folder, ``*_disparity.png`` of every depth folder and
``*_camera.json``. The run is resumable: files already in the cache are skipped, and the
settings are stored in ``OUT/mtdense_cache.json`` so a rerun with other settings is refused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from mtdense.data import depth as depth_lib
from mtdense.data.cityscapes import (
    CAMERA_FOLDER, RIGHT_FOLDER, SUFFIXES, Frame, frame_file, list_frames, list_splits,
    read_camera, read_disparity_png, read_label_ids,
)
from mtdense.data.image import read_image
from mtdense.io import encode_image, write_bytes_atomic, write_json_atomic
from mtdense.items import item_failure, item_message

__all__ = ["CACHE_META_FILE", "CacheSummary", "cache_dataset", "find_map_folders"]

CACHE_META_FILE = "mtdense_cache.json"
"""Settings of a cache, at its root."""


@dataclass
class CacheSummary:
    """What :func:`cache_dataset` did.

    Attributes:
        out: The cache root.
        frames: Frames per split.
        sizes: Source ``(H, W)`` -> cached ``(H, W)``, for every size met.
        seconds: Wall time.
        written: Files written.
        skipped: Files already in the cache (left as they were).
        depth_folders: Disparity folders copied.
        label_folders: Label folders copied.
        failed: Frames not cached (none of their files written): image path -> one-line
            message naming the file at fault and the fix.
    """

    out: Path
    frames: dict[str, int] = field(default_factory=dict)
    sizes: dict[tuple[int, int], tuple[int, int]] = field(default_factory=dict)
    seconds: float = 0.0
    written: int = 0
    skipped: int = 0
    depth_folders: list[str] = field(default_factory=list)
    label_folders: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def find_map_folders(root: str | Path, splits: Sequence[str], role: str) -> list[str]:
    """Top-level folders of ``root`` holding ``{split}/{city}/*{suffix}`` files of ``role``
    (``"disparity"``: the shipped maps and stereo teachers' outputs; ``"label"``: gtFine and pseudo-labels)."""
    root = Path(root)
    found = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if any(next((folder / s).glob(f"*/*{SUFFIXES[role]}"), None) is not None for s in splits):
            found.append(folder.name)
    return found


def _png_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` from a PNG header, without decoding (falls back to decoding)."""
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return int.from_bytes(head[20:24], "big"), int.from_bytes(head[16:20], "big")
    return read_image(path, colour_only=True).shape[:2]


def _target_size(size_hw: tuple[int, int], scale: float | None, size: tuple[int, int] | None) -> tuple[int, int]:
    if size is not None:
        return size
    return max(1, int(round(size_hw[0] * scale))), max(1, int(round(size_hw[1] * scale)))


def _scaled_camera(path: Path, sx: float, sy: float) -> bytes:
    read_camera(path)  # validates; the file is rewritten with every other field kept
    data = json.loads(path.read_text())
    k = data["intrinsic"]
    # A pixel centre u maps to (u + 0.5) * s - 0.5 under resizing: so does the principal point.
    k["fx"], k["u0"] = k["fx"] * sx, (k["u0"] + 0.5) * sx - 0.5
    k["fy"], k["v0"] = k["fy"] * sy, (k["v0"] + 0.5) * sy - 0.5
    return (json.dumps(data, indent=2) + "\n").encode()


def _cache_frame(
    frame: Frame, files: list[tuple[str, Path, Path]], scale: float | None, size: tuple[int, int] | None,
    overwrite: bool,
) -> tuple[tuple[int, int], tuple[int, int], int, int]:
    """Resize one frame's files; returns source size, cached size, files written, files skipped.

    Every file is encoded before any is written: a frame that fails leaves nothing in the cache.
    """
    todo = [(role, src, dst) for role, src, dst in files if overwrite or not dst.is_file()]
    skipped = len(files) - len(todo)
    if not todo:
        src_hw = _png_size(frame.image)
        return src_hw, _target_size(src_hw, scale, size), 0, skipped
    image = read_image(frame.image, colour_only=True)
    src_hw = image.shape[:2]
    dst_hw = _target_size(src_hw, scale, size)
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    dsize = (dst_hw[1], dst_hw[0])
    shrink = sx <= 1 and sy <= 1
    encoded: list[tuple[Path, bytes]] = []
    for role, src, dst in todo:
        if role in ("image", "right"):
            rgb = image if role == "image" else read_image(src, colour_only=True)
            if rgb.shape[:2] != src_hw:
                raise ValueError(f"{src} is {rgb.shape[0]}x{rgb.shape[1]} but its image {frame.image} is "
                                 f"{src_hw[0]}x{src_hw[1]}; replace it with the matching file")
            out = cv2.resize(rgb, dsize, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            data = encode_image(dst, cv2.cvtColor(out, cv2.COLOR_RGB2BGR))
        elif role in ("label", "disparity"):
            array = read_label_ids(src) if role == "label" else read_disparity_png(src)
            if array.shape != src_hw:
                raise ValueError(f"{src} is {array.shape[0]}x{array.shape[1]} but its image {frame.image} is "
                                 f"{src_hw[0]}x{src_hw[1]}; replace it with the matching file")
            if role == "label":
                data = encode_image(dst, cv2.resize(array, dsize, interpolation=cv2.INTER_NEAREST_EXACT))
            else:
                disparity = depth_lib.decode_cityscapes_disparity(array)
                disparity = cv2.resize(disparity, dsize, interpolation=cv2.INTER_NEAREST_EXACT) * np.float32(sx)
                data = encode_image(dst, depth_lib.encode_cityscapes_disparity(disparity))
        else:
            data = _scaled_camera(src, sx, sy)
        encoded.append((dst, data))
    for dst, data in encoded:
        # Atomic: an interrupted run never leaves a truncated file that a rerun would skip.
        write_bytes_atomic(dst, data)
    return src_hw, dst_hw, len(todo), skipped


def cache_dataset(
    root: str | Path,
    out: str | Path,
    scale: float | None = None,
    size: tuple[int, int] | None = None,
    splits: Sequence[str] | None = None,
    depth_folders: Sequence[str] | None = None,
    right: bool = True,
    workers: int = 2,
    overwrite: bool = False,
    progress: bool = True,
    on_failure: Callable[[str], None] | None = None,
) -> CacheSummary:
    """Write a resized copy of a Cityscapes tree in the same layout (see the module docstring).

    Args:
        root: Source Cityscapes root.
        out: Cache root (must differ from ``root``).
        scale: Resize factor for both axes (e.g. 0.5); exclusive with ``size``.
        size: Fixed output ``(H, W)`` for every frame; exclusive with ``scale``.
        splits: Splits to copy (default: every split folder under ``leftImg8bit/``).
        depth_folders: Disparity folders to copy (default: every folder holding
            ``*_disparity.png`` files); an empty list copies no depth.
        right: Copy the right views where present.
        workers: Threads.
        overwrite: Rewrite files already in the cache.
        progress: Show a tqdm progress bar.
        on_failure: Called with each failed frame's one-line message as it fails.

    Returns:
        A :class:`CacheSummary`. A frame with a source file that is unreadable or of the wrong
        size is not cached, and is listed in its ``failed`` (the message names the file); the
        other frames go on.

    Raises:
        ValueError: Bad settings, ``out`` is ``root``, or ``out`` holds a cache made with other
            settings.
        FileNotFoundError: The root, a split or a named depth folder does not exist.
        WriteError: An output that cannot be written (it would fail for every frame).
    """
    from tqdm import tqdm

    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale (e.g. 0.5) and size (H, W)")
    if scale is not None and not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    if size is not None:
        size = (int(size[0]), int(size[1]))
        if min(size) < 1:
            raise ValueError(f"size must be (H, W) with H, W >= 1, got {size}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root, out = Path(root), Path(out)
    splits = list(splits) if splits else list_splits(root)
    if out.resolve() == root.resolve():
        raise ValueError(f"the cache {out} must differ from the dataset root {root}: the cache replaces files by resized ones")
    if depth_folders is None:
        depth_folders = find_map_folders(root, splits, "disparity")
    else:
        depth_folders = list(depth_folders)
        for name in depth_folders:
            if not (root / name).is_dir():
                raise FileNotFoundError(f"depth folder {root / name} does not exist; depth folders in {root}: "
                                        f"{', '.join(find_map_folders(root, splits, 'disparity')) or 'none'}")
    label_folders = find_map_folders(root, splits, "label")

    settings = {"source": str(root.resolve()), "scale": scale, "size": list(size) if size else None}
    meta = out / CACHE_META_FILE
    if meta.is_file() and not overwrite:
        old = json.loads(meta.read_text())
        if {k: old.get(k) for k in ("scale", "size")} != {k: settings[k] for k in ("scale", "size")}:
            raise ValueError(
                f"{out} holds a cache made with scale={old.get('scale')}, size={old.get('size')}; rerun with those "
                f"settings to complete it, choose another folder, or pass overwrite=True to rewrite it"
            )
    write_json_atomic(meta, settings)

    summary = CacheSummary(out=out, depth_folders=list(depth_folders), label_folders=label_folders)
    jobs: list[tuple[Frame, list[tuple[str, Path, Path]]]] = []
    for split in splits:
        frames = list_frames(root, split, depth_source=None, require_labels=False)
        summary.frames[split] = len(frames)
        for f in frames:
            candidates = [("image", f.image)]
            candidates += [("label", frame_file(root, folder, split, f.city, f.name, "label")) for folder in label_folders]
            candidates += [("disparity", frame_file(root, folder, split, f.city, f.name, "disparity"))
                           for folder in depth_folders]
            candidates.append(("camera", frame_file(root, CAMERA_FOLDER, split, f.city, f.name, "camera")))
            if right:
                candidates.append(("right", frame_file(root, RIGHT_FOLDER, split, f.city, f.name, "right")))
            files = [(role, src, out / src.relative_to(root)) for role, src in candidates if src.is_file()]
            jobs.append((f, files))

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_cache_frame, f, files, scale, size, overwrite): f for f, files in jobs}
        try:
            for future in tqdm(as_completed(futures), total=len(futures), desc=f"cache {out.name}", unit="frame",
                               disable=not progress):
                try:
                    src_hw, dst_hw, written, skipped = future.result()
                except Exception as exc:
                    if not item_failure(exc):
                        raise
                    image = futures[future].image
                    summary.failed[str(image)] = item_message(exc, image)
                    if on_failure is not None:
                        on_failure(summary.failed[str(image)])
                    continue
                summary.sizes[tuple(src_hw)] = tuple(dst_hw)
                summary.written += written
                summary.skipped += skipped
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    summary.seconds = time.perf_counter() - start
    return summary

