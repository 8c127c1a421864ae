"""Write frames in the Cityscapes layout, generate a whole city, read its settings back, preview it.

Written per frame (``{city}_{index:06d}_000019``), exactly as in the Cityscapes download:

- ``leftImg8bit/``, ``rightImg8bit/``: 8-bit RGB PNGs;
- ``gtFine/``: ``*_labelIds.png`` (label ids), ``*_color.png`` (RGBA, official colours),
  ``*_instanceIds.png`` (uint16, ``id * 1000 + k`` for cars and persons) and
  ``*_polygons.json`` (outer contours, drawn in order they rebuild the label map);
- ``disparity/``: uint16, ``p = round(256 d + 1)``, 0 where there is no disparity (sky);
- ``camera/``: ``extrinsic.baseline`` (0.209313 m) and ``intrinsic.fx, fy, u0, v0`` scaled
  from the Cityscapes values to the image size;
- ``normals/``: ``*_normals.png``, the exact normal of each visible surface of the left view in
  its camera coordinates, 8-bit RGB ``round((n + 1) * 127.5)``, ``(0, 0, 0)`` for the sky (not
  part of the Cityscapes download; :mod:`mtdense.data.normals`).

``mtdense_synthetic.json`` at the root records the settings (:func:`city_settings` reads it)
and is written last, so its presence means the city is complete. The same seed gives the same
bytes.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mtdense.data.depth import encode_cityscapes_disparity
from mtdense.data.labels import CLASSES, LABEL_ID_COLORS, TRAIN_CLASS_NAMES
from mtdense.data.normals import encode_normals
from mtdense.data.synthetic.camera import StereoCamera, _check_size
from mtdense.data.synthetic.render import Frame, render_frame
from mtdense.data.synthetic.sampling import frame_rng
from mtdense.data.synthetic.scene import _HAS_INSTANCES, _NAME

__all__ = [
    "CITIES", "SyntheticCity", "frame_name", "write_frame", "generate_city", "city_settings", "is_generated_city",
    "save_preview",
]


CITIES = {
    "train": ("ashford", "brookvale", "carrick", "dunmore"),
    "val": ("westfield",),
    "test": ("kingsbury",),
}
"""Made-up city names per split (frame ``i`` of a split lives in ``cities[i % len(cities)]``)."""

_META_FILE = "mtdense_synthetic.json"
_PARTIAL_FILE = ".mtdense_synthetic_partial"
_GENERATED = ("leftImg8bit", "rightImg8bit", "gtFine", "disparity", "camera", "normals")
_FORMAT_VERSION = 2  # 2: normals/ written


def frame_name(split: str, index: int) -> tuple[str, str]:
    """``(city, stem)`` of frame ``index`` of ``split``, e.g. ``("westfield", "westfield_000003_000019")``."""
    cities = CITIES.get(split, (split.replace("_", ""),))
    city = cities[index % len(cities)]
    return city, f"{city}_{index:06d}_000019"


def _polygons(label: np.ndarray, instance: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Cityscapes polygon objects and the matching instance-id image.

    One polygon per connected region (its outer contour), ordered by enclosed area, largest
    first: a region that lies in a hole of another encloses less, so drawing the polygons in
    this order (as ``cityscapesscripts`` does) rebuilds the label map. Instances of a class are
    numbered in that order too (``id * 1000 + k``).
    """
    regions = []
    for lid in np.unique(label).tolist():
        in_label = label == lid
        objs = np.unique(instance[in_label]).tolist() if lid in _HAS_INSTANCES else [0]
        for obj in objs:
            mask = (in_label & (instance == obj)) if lid in _HAS_INSTANCES else in_label
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for c in contours:
                pts = c.reshape(-1, 2)
                if len(pts) < 3:  # a single pixel or a line: a polygon needs three points
                    pts = np.concatenate([pts, pts[::-1], pts])[:3]
                regions.append((cv2.contourArea(c), len(pts), lid, obj, pts[0].tolist(), pts.tolist()))
    regions.sort(key=lambda r: (-r[0], -r[1], r[2], r[3], r[4]))
    objects, number, seen = [], {}, {}
    for i, (_, _, lid, obj, _, pts) in enumerate(regions):
        objects.append({"label": _NAME[lid], "polygon": pts, "deleted": 0, "verified": 0, "id": i, "user": "mtdense"})
        if obj and (lid, obj) not in number:
            seen[lid] = seen.get(lid, -1) + 1
            number[(lid, obj)] = lid * 1000 + seen[lid]
    ids = label.astype(np.uint16)
    for (lid, obj), value in number.items():
        ids[(instance == obj) & (label == lid)] = value
    return objects, ids


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path} (disk full or no permission?)")


def write_frame(root: str | Path, split: str, index: int, frame: Frame) -> np.ndarray:
    """Write one frame in the Cityscapes layout under ``root``.

    Returns:
        Pixel count of each label id in the left label map (length 256).
    """
    root = Path(root)
    city, stem = frame_name(split, index)
    dirs = {name: root / name / split / city for name in _GENERATED}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    h, w = frame.camera.size
    left, right = frame.left, frame.right
    _write_png(dirs["leftImg8bit"] / f"{stem}_leftImg8bit.png", cv2.cvtColor(left.image, cv2.COLOR_RGB2BGR))
    _write_png(dirs["rightImg8bit"] / f"{stem}_rightImg8bit.png", cv2.cvtColor(right.image, cv2.COLOR_RGB2BGR))
    gt = dirs["gtFine"]
    _write_png(gt / f"{stem}_gtFine_labelIds.png", left.label)
    rgba = np.concatenate([LABEL_ID_COLORS[left.label], np.full((h, w, 1), 255, np.uint8)], axis=2)
    _write_png(gt / f"{stem}_gtFine_color.png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    objects, instance_ids = _polygons(left.label, left.instance)
    _write_png(gt / f"{stem}_gtFine_instanceIds.png", instance_ids)
    (gt / f"{stem}_gtFine_polygons.json").write_text(
        json.dumps({"imgHeight": h, "imgWidth": w, "objects": objects}, separators=(",", ":"))
    )
    _write_png(dirs["disparity"] / f"{stem}_disparity.png", encode_cityscapes_disparity(frame.disparity()))
    (dirs["camera"] / f"{stem}_camera.json").write_text(json.dumps(frame.camera_json(), indent=2) + "\n")
    _write_png(dirs["normals"] / f"{stem}_normals.png", cv2.cvtColor(encode_normals(left.normals), cv2.COLOR_RGB2BGR))
    return np.bincount(left.label.ravel(), minlength=256).astype(np.int64)


@dataclass
class SyntheticCity:
    """What :func:`generate_city` wrote.

    Attributes:
        root: The dataset root.
        frames: Frames per split (``{"train": n, "val": n, "test": n}``).
        size: ``(H, W)``.
        seed: The seed.
        seconds: Wall time of the generation.
        label_pixels: Left-view pixel count per label id (length 256).
    """

    root: Path
    frames: dict[str, int]
    size: tuple[int, int]
    seed: int
    seconds: float
    label_pixels: np.ndarray = field(repr=False)

    def class_frequencies(self) -> dict[str, float]:
        """Share of all left-view pixels per train class present, in train-id order."""
        total = max(int(self.label_pixels.sum()), 1)
        out = {}
        for c in sorted((c for c in CLASSES if 0 <= c.train_id < len(TRAIN_CLASS_NAMES)), key=lambda c: c.train_id):
            n = int(self.label_pixels[c.id])
            if n:
                out[c.name] = n / total
        return out


def _worker_init() -> None:
    cv2.setNumThreads(1)  # parallel over frames, not inside them


def _pool_context() -> multiprocessing.context.BaseContext:
    """Workers started fresh (forkserver, else spawn), never forked from the caller: a child
    forked from a process whose OpenCV thread pool is running hangs in ``cv2.setNumThreads``."""
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def _generate_chunk(root: Path, seed: int, size: tuple[int, int], tasks: list[tuple[str, int]]) -> np.ndarray:
    counts = np.zeros(256, np.int64)
    for split, index in tasks:
        counts += write_frame(root, split, index, render_frame(seed, split, index, size))
    return counts


def _prepare_root(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file; give a folder for the generated city")
    ours = (root / _META_FILE).is_file() or (root / _PARTIAL_FILE).is_file()
    present = [name for name in _GENERATED if (root / name).exists()]
    if present and not ours:
        raise FileExistsError(
            f"{root} already holds {', '.join(present)} that the generator did not write (no {_META_FILE}); "
            f"it is left alone: choose an empty folder, or delete those folders first"
        )
    if ours:
        if not overwrite:
            raise FileExistsError(
                f"{root} already holds a generated city ({_META_FILE}); pass overwrite=True "
                f"('mtdense data synth --overwrite') to replace it, or choose another folder"
            )
        for name in present:
            shutil.rmtree(root / name)
        for name in (_META_FILE, _PARTIAL_FILE, "preview.png"):
            (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def generate_city(
    out: str | Path,
    n_train: int,
    n_val: int,
    n_test: int = 0,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
    overwrite: bool = False,
) -> SyntheticCity:
    """Generate a synthetic stereo city in the Cityscapes layout under ``out``.

    Args:
        out: Dataset root to create.
        n_train, n_val, n_test: Frames per split (all labelled).
        size: ``(H, W)`` in pixels; the Cityscapes intrinsics are scaled to it.
        seed: The same seed gives the same files, whatever the number of workers.
        progress: Show a tqdm progress bar.
        workers: Processes; ``None``: ``min(2, CPU count)``; 0 or 1: this process.
        overwrite: Replace a city generated earlier in ``out``.

    Returns:
        A :class:`SyntheticCity` summary.

    Raises:
        FileExistsError: ``out`` already holds a generated city and ``overwrite`` is False, or
            holds Cityscapes folders the generator did not write (never replaced).
        ValueError: a negative frame count, a bad size or seed.
    """
    start = time.perf_counter()
    root = Path(out)
    size = _check_size(tuple(size))
    frames = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    if any(n < 0 for n in frames.values()):
        raise ValueError(f"frame counts must be >= 0, got {frames}")
    frame_rng(seed, "train", 0)  # validates the seed
    _prepare_root(root, overwrite)
    (root / _PARTIAL_FILE).write_text("generation in progress or interrupted; delete this folder or pass --overwrite\n")
    tasks = [(split, i) for split, n in frames.items() for i in range(n)]
    workers = min(2, os.cpu_count() or 1) if workers is None else max(0, int(workers))
    counts = np.zeros(256, np.int64)
    with tqdm(total=len(tasks), desc="synth", unit="frame", disable=not progress) as bar:
        if workers <= 1 or len(tasks) < 2 * workers:
            for task in tasks:
                counts += _generate_chunk(root, seed, size, [task])
                bar.update(1)
        else:
            chunk = max(1, min(8, len(tasks) // (4 * workers)))
            chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
            with ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(), initializer=_worker_init) as pool:
                futures = {pool.submit(_generate_chunk, root, seed, size, c): len(c) for c in chunks}
                for fut in as_completed(futures):
                    counts += fut.result()
                    bar.update(futures[fut])
    camera = StereoCamera.cityscapes(size)
    meta = {
        "generator": "mtdense.data.synthetic", "format_version": _FORMAT_VERSION, "seed": int(seed),
        "size": list(size), "frames": frames,
        "cities": {s: sorted({frame_name(s, i)[0] for i in range(n)}) for s, n in frames.items()},
        "camera": {"baseline": camera.baseline, "fx": camera.fx, "fy": camera.fy, "u0": camera.u0, "v0": camera.v0},
        "label_pixels": {_NAME[i]: int(n) for i, n in enumerate(counts) if n},
    }
    tmp = root / (_META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(root / _META_FILE)  # written last: its presence means the city is complete
    (root / _PARTIAL_FILE).unlink(missing_ok=True)
    return SyntheticCity(root=root, frames=frames, size=size, seed=int(seed), seconds=time.perf_counter() - start,
                         label_pixels=counts)


def city_settings(root: str | Path) -> dict | None:
    """The settings a generated city was made with, read from its meta file.

    Args:
        root: A folder that may hold a city written by :func:`generate_city`.

    Returns:
        The contents of ``root/mtdense_synthetic.json`` (``generator``, ``format_version``,
        ``seed``, ``size`` as ``[H, W]``, ``frames`` per split, ``cities``, ``camera``,
        ``label_pixels``), or ``None`` when there is no such file: ``root`` is missing, is not
        a generated city, or its generation never finished (the file is written last).

    Raises:
        ValueError: the meta file is unreadable, not JSON or not a JSON object.
    """
    path = Path(root) / _META_FILE
    if not path.is_file():
        return None
    fix = f"generate the city again ('mtdense data synth {Path(root)} --overwrite')"
    try:
        settings = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable or corrupt meta file of a generated city ({exc}); {fix}") from exc
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: the meta file of a generated city holds {type(settings).__name__}, "
                         f"not a JSON object; {fix}")
    return settings


def is_generated_city(root: str | Path) -> bool:
    """Whether ``root`` holds a complete city written by :func:`generate_city`.

    Raises:
        ValueError: the meta file is there but unreadable or corrupt (see :func:`city_settings`).
    """
    return city_settings(root) is not None


def _read(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"cannot read {path}: missing or corrupt; generate the city again ('mtdense data synth')")
    return image


def save_preview(root: str | Path, path: str | Path, n: int = 4, split: str = "train") -> Path:
    """Save a picture of the first ``n`` frames of ``split``: left | right | labels | disparity per row.

    Args:
        root: A generated city (or any Cityscapes tree with right views and disparity).
        path: Output PNG.
        n: Frames (rows).
        split: Which split.

    Returns:
        ``path``.
    """
    root, path = Path(root), Path(path)
    lefts = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))[: max(0, int(n))]
    if not lefts:
        raise FileNotFoundError(
            f"{root / 'leftImg8bit' / split}: no frames to preview; generate them first "
            f"('mtdense data synth {root} --n-train N')"
        )
    rows = []
    for left_path in lefts:
        city, stem = left_path.parent.name, left_path.name[: -len("_leftImg8bit.png")]
        left = _read(left_path, cv2.IMREAD_COLOR)
        h, w = left.shape[:2]
        right_path = root / "rightImg8bit" / split / city / f"{stem}_rightImg8bit.png"
        right = _read(right_path, cv2.IMREAD_COLOR) if right_path.is_file() else np.zeros_like(left)
        ids = _read(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", cv2.IMREAD_GRAYSCALE)
        labels = cv2.cvtColor(LABEL_ID_COLORS[np.minimum(ids, len(LABEL_ID_COLORS) - 1)], cv2.COLOR_RGB2BGR)
        disp_path = root / "disparity" / split / city / f"{stem}_disparity.png"
        disp = _read(disp_path).astype(np.float32) if disp_path.is_file() else np.zeros((h, w), np.float32)
        valid = disp > 0
        scale = np.percentile(disp[valid], 99) if valid.any() else 1.0
        disp_col = cv2.applyColorMap(np.clip(disp / scale * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
        disp_col[~valid] = 0
        row = np.concatenate([left, right, labels, disp_col], axis=1)
        if w > 512:
            row = cv2.resize(row, (4 * 512, round(h * 512 / w)), interpolation=cv2.INTER_AREA)
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_png(path, np.concatenate(rows, axis=0))
    return path
