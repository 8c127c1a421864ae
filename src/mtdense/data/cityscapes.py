"""The Cityscapes layout: list frames, decode their files, serve samples.

A Cityscapes root holds, per split and city, files that share a name stem
``{city}_{seq}_{frame}``::

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png         RGB image (the frame)
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png           label ids 0..33 (uint8)
    disparity/{split}/{city}/{stem}_disparity.png              uint16, d = (p - 1) / 256 px, p = 0 invalid
    camera/{split}/{city}/{stem}_camera.json                   extrinsic.baseline (m), intrinsic.fx/fy/u0/v0 (px)
    rightImg8bit/{split}/{city}/{stem}_rightImg8bit.png        right stereo view
    normals/{split}/{city}/{stem}_normals.png                  surface normals, 8-bit RGB (the synthetic city only;
                                                               n = rgb / 127.5 - 1, (0, 0, 0) = none)

Listing (:func:`list_frames`) only finds files and pairs them by stem, never by list order;
decoding (:func:`load_frame`) turns them into arrays: train ids (official table), depth in metres
from this image's own calibration. Augmentation lives in :mod:`mtdense.data.transforms`.
Teacher disparity maps (``mtdense data teacher``) live in a parallel folder with the same naming
and encoding and are read with ``depth_source=FOLDER``. :mod:`mtdense.data.check` reads a
whole tree and reports what is wrong with it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np
from tqdm import tqdm

from mtdense.data import depth as depth_lib
from mtdense.data.frames import FrameDataset
from mtdense.data.image import read_image
from mtdense.data.labels import NUM_CLASSES, label_ids_to_train_ids
from mtdense.data.normals import read_normals_png

__all__ = [
    "IMAGE_FOLDER", "RIGHT_FOLDER", "CAMERA_FOLDER", "NORMALS_FOLDER", "SUFFIXES",
    "Frame", "frame_file", "list_splits", "list_frames",
    "read_label_ids", "read_disparity_png", "read_camera", "load_frame", "class_pixel_counts",
    "CityscapesDataset",
]

IMAGE_FOLDER = "leftImg8bit"
RIGHT_FOLDER = "rightImg8bit"
CAMERA_FOLDER = "camera"
NORMALS_FOLDER = "normals"
SUFFIXES = {
    "image": "_leftImg8bit.png",
    "label": "_gtFine_labelIds.png",
    "disparity": "_disparity.png",
    "camera": "_camera.json",
    "right": "_rightImg8bit.png",
    "normals": "_normals.png",
}
"""File name ending of each counterpart; the file name is ``{stem}{suffix}``."""

_ROLES = ("image", "label", "disparity", "camera", "right", "normals")


@dataclass(frozen=True)
class Frame:
    """The files of one frame, matched by name stem.

    Attributes:
        name: Stem ``{city}_{seq}_{frame}`` shared by all of the frame's files.
        split: ``train``, ``val``, ``test``, ...
        city: City folder name.
        image: Left RGB image (``leftImg8bit``).
        label: ``*_gtFine_labelIds.png`` (None when not listed or absent).
        disparity: ``*_disparity.png`` of the chosen depth source (None without depth).
        camera: ``*_camera.json`` (None when absent and not needed).
        right: Right view ``*_rightImg8bit.png`` (None unless asked for).
        normals: Surface normals ``*_normals.png`` (None unless asked for).
    """

    name: str
    split: str
    city: str
    image: Path
    label: Path | None = None
    disparity: Path | None = None
    camera: Path | None = None
    right: Path | None = None
    normals: Path | None = None

    def paths(self) -> dict[str, Path]:
        """The frame's files by role (``image``, ``label``, ``disparity``, ``camera``, ``right``,
        ``normals``), present ones only."""
        return {role: getattr(self, role) for role in _ROLES if getattr(self, role) is not None}


def frame_file(root: str | Path, folder: str, split: str, city: str, name: str, role: str) -> Path:
    """``ROOT/{folder}/{split}/{city}/{name}{suffix}`` with the file ending of ``role`` (see :data:`SUFFIXES`)."""
    return Path(root) / folder / split / city / f"{name}{SUFFIXES[role]}"


def _stem(path: Path, role: str) -> str:
    return path.name[: -len(SUFFIXES[role])]


def _check_root(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(
            f"dataset root {root} does not exist; point it at the Cityscapes root, the folder that holds "
            f"leftImg8bit/, gtFine/, disparity/ and camera/"
        )
    if not (root / IMAGE_FOLDER).is_dir():
        raise FileNotFoundError(
            f"{root} has no {IMAGE_FOLDER}/ folder; point the root at the folder that holds {IMAGE_FOLDER}/ "
            f"(extract leftImg8bit_trainvaltest.zip there, or generate a tree with 'mtdense data synth')"
        )
    return root


def list_splits(root: str | Path) -> list[str]:
    """Split folders under ``ROOT/leftImg8bit/`` (sorted)."""
    root = _check_root(Path(root))
    return sorted(p.name for p in (root / IMAGE_FOLDER).iterdir() if p.is_dir())


def _image_files(root: Path, split: str) -> list[Path]:
    folder = _check_root(root) / IMAGE_FOLDER / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"{folder} does not exist; splits under {root / IMAGE_FOLDER}: {', '.join(list_splits(root)) or 'none'}"
        )
    return sorted(folder.glob(f"*/*{SUFFIXES['image']}"))


def _missing_error(what: str, missing: list[tuple[Path, Path]], total: int, folder: Path, fix: str) -> FileNotFoundError:
    path, image = missing[0]
    return FileNotFoundError(
        f"{len(missing)} of {total} images in {folder} have no {what}; the first missing file is {path} "
        f"(for {image}). Fix: {fix}"
    )


def list_frames(
    root: str | Path,
    split: str,
    depth_source: str | None = "disparity",
    require_labels: bool = True,
    load_right: bool = False,
    label_source: str = "gtFine",
    load_normals: bool = False,
) -> list[Frame]:
    """List a split's frames and pair each image with its counterparts by name stem.

    Args:
        root: Cityscapes root (holds ``leftImg8bit/``).
        split: Split folder (``train``, ``val``, ``test``, ``train_extra``, ...).
        depth_source: Folder of ``*_disparity.png`` maps (``"disparity"``: the shipped SGBM maps,
            or a stereo teacher's folder); ``None``: no depth, and no camera file needed.
        require_labels: A missing label file raises; ``False`` lists it as ``None``.
        load_right: Also pair the right view (required when asked for).
        label_source: Folder of ``*_gtFine_labelIds.png`` files (``gtFine``, or pseudo-labels).
        load_normals: Also pair the surface normals ``normals/.../*_normals.png`` (required when
            asked for; the synthetic city writes them).

    Returns:
        Frames sorted by name.

    Raises:
        FileNotFoundError: The root or split does not exist, or a required counterpart is
            missing (the message names the first missing file, the count and the fix).
    """
    root = Path(root)
    images = _image_files(root, split)
    frames: list[Frame] = []
    missing: dict[str, list[tuple[Path, Path]]] = {"label": [], "disparity": [], "camera": [], "right": [], "normals": []}
    for image in images:
        city, name = image.parent.name, _stem(image, "image")
        label = frame_file(root, label_source, split, city, name, "label")
        camera = frame_file(root, CAMERA_FOLDER, split, city, name, "camera")
        disparity = right = normals = None
        if not label.is_file():
            if require_labels:
                missing["label"].append((label, image))
            label = None
        if depth_source is not None:
            disparity = frame_file(root, depth_source, split, city, name, "disparity")
            if not disparity.is_file():
                missing["disparity"].append((disparity, image))
            if not camera.is_file():
                missing["camera"].append((camera, image))
        elif not camera.is_file():
            camera = None
        if load_right:
            right = frame_file(root, RIGHT_FOLDER, split, city, name, "right")
            if not right.is_file():
                missing["right"].append((right, image))
        if load_normals:
            normals = frame_file(root, NORMALS_FOLDER, split, city, name, "normals")
            if not normals.is_file():
                missing["normals"].append((normals, image))
        frames.append(Frame(name, split, city, image, label, disparity, camera, right, normals))
    folder = root / IMAGE_FOLDER / split
    fixes = {
        "label": (
            f"label file ({label_source}/)",
            f"extract gtFine_trainvaltest.zip into {root} (it holds the *_gtFine_labelIds.png files)"
            if label_source == "gtFine" else f"write the missing labels into {root / label_source} "
            f"('mtdense data pseudo-label ... --out {label_source}')",
        ),
        "disparity": (
            f"disparity map ({depth_source}/)",
            f"extract disparity_trainvaltest.zip into {root}" if depth_source == "disparity" else
            f"run 'mtdense data teacher {root} --split {split} --out {depth_source}' to write the teacher's maps",
        ),
        "camera": ("camera file (camera/)", f"extract camera_trainvaltest.zip into {root}: depth = baseline * fx / "
                   f"disparity needs each image's own calibration"),
        "right": ("right view (rightImg8bit/)", f"extract rightImg8bit_trainvaltest.zip into {root}"),
        "normals": ("surface normals (normals/)", f"generate the synthetic city again with this version of mtdense "
                    f"('mtdense data synth {root} --overwrite' writes normals/; the real Cityscapes has none)"),
    }
    alternatives = {
        "label": "; or pass require_labels=False to list images without labels",
        "disparity": "; or pass depth_source=None to load no depth",
        "camera": "; or pass depth_source=None to load no depth",
        "right": "; or do not ask for the right view (load_right=False)",
        "normals": "; or leave normals out of model.tasks (load_normals=False)",
    }
    for role, items in missing.items():
        if items:
            what, fix = fixes[role]
            raise _missing_error(what, items, len(images), folder, fix + alternatives[role])
    frames.sort(key=lambda f: (f.name, f.city))
    return frames


# --- decoding ---------------------------------------------------------------------------------

def _decode_png(path: str | Path, flags: int, what: str) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist ({what})")
    data = np.fromfile(path, dtype=np.uint8)
    array = cv2.imdecode(data, flags) if data.size else None
    if array is None:
        raise ValueError(
            f"{path}: cannot decode this {what} (corrupt, truncated or not a PNG); replace it with a good copy "
            f"from the dataset download, or delete the frame's files"
        )
    return array


def read_label_ids(path: str | Path) -> np.ndarray:
    """Read a ``*_gtFine_labelIds.png`` as ``H x W`` uint8 label ids (not yet checked against the table).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Corrupt file, or not a single-channel 8-bit label-id image (e.g. a
            ``*_color.png`` or ``*_instanceIds.png``).
    """
    ids = _decode_png(path, cv2.IMREAD_UNCHANGED, "label-id image")
    if ids.dtype != np.uint8 or ids.ndim != 2:
        raise ValueError(
            f"{path}: expected a single-channel 8-bit label-id image, got {ids.dtype} with shape {ids.shape}; "
            f"use the *_gtFine_labelIds.png file (not *_color.png or *_instanceIds.png)"
        )
    return ids


def read_disparity_png(path: str | Path) -> np.ndarray:
    """Read a Cityscapes ``*_disparity.png`` as ``H x W`` uint16 (decode with
    :func:`mtdense.data.depth.decode_cityscapes_disparity`).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Corrupt file, or not a single-channel 16-bit image.
    """
    png = _decode_png(path, cv2.IMREAD_UNCHANGED, "disparity map")
    if png.dtype != np.uint16 or png.ndim != 2:
        raise ValueError(
            f"{path}: expected a single-channel 16-bit disparity PNG, got {png.dtype} with shape {png.shape}; "
            f"Cityscapes disparity is stored as uint16 p = 256 d + 1 (0 = invalid): re-encode it with "
            f"mtdense.data.depth.encode_cityscapes_disparity"
        )
    return png


def read_camera(path: str | Path) -> dict[str, float]:
    """Read a Cityscapes ``*_camera.json``.

    Returns:
        ``{"baseline": m, "fx": px, "fy": px, "u0": px, "v0": px}`` as floats.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not JSON, a missing or non-numeric key, or a baseline / focal length that
            is not positive (the message names the file and the key).
    """
    path = Path(path)
    fix = "replace it with the file from camera_trainvaltest.zip (extrinsic.baseline in m, intrinsic.fx, fy, u0, v0 in px)"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON camera file ({exc}); {fix}") from exc
    camera = {}
    for section, key in (("extrinsic", "baseline"), ("intrinsic", "fx"), ("intrinsic", "fy"),
                         ("intrinsic", "u0"), ("intrinsic", "v0")):
        part = data.get(section) if isinstance(data, dict) else None
        if not isinstance(part, dict) or key not in part:
            raise ValueError(f"{path}: no '{section}.{key}' in the camera file; {fix}")
        value = part[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{path}: '{section}.{key}' is {value!r}, not a finite number; {fix}")
        camera[key] = float(value)
    for key in ("baseline", "fx", "fy"):
        if camera[key] <= 0:
            raise ValueError(f"{path}: {key} = {camera[key]} must be > 0; {fix}")
    return camera


def _check_size(array: np.ndarray, path: Path, size: tuple[int, int], image: Path, what: str) -> None:
    if array.shape[:2] != size:
        raise ValueError(
            f"{path} is {array.shape[0]}x{array.shape[1]} (H x W) but its image {image} is {size[0]}x{size[1]}: "
            f"the {what} belongs to another image or was resized on its own; replace it with the matching file"
        )


def _kept_rows(height: int, crop_bottom: float) -> int:
    """Rows left of a ``height``-row map once the bottom fraction ``crop_bottom`` is removed."""
    return height - int(round(height * crop_bottom))


def _train_ids(label_ids: np.ndarray, path: Path) -> np.ndarray:
    """:func:`label_ids_to_train_ids`, with the label file named in its error."""
    try:
        return label_ids_to_train_ids(label_ids)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def class_pixel_counts(root: str | Path, split: str = "train", label_source: str = "gtFine", crop_bottom: float = 0.0,
                       progress: bool = False) -> np.ndarray:
    """Labelled pixels per train class over a split's label files (labels only; nothing else decoded).

    What :func:`mtdense.losses.enet_class_weights` needs. ``crop_bottom`` removes the bottom
    fraction of each map, as the dataset does.

    Returns:
        int64 array of :data:`~mtdense.data.labels.NUM_CLASSES` counts.

    Raises:
        FileNotFoundError / ValueError: as :func:`list_frames` and :func:`read_label_ids`; an
            unknown label id names its file.
    """
    frames = list_frames(root, split, depth_source=None, label_source=label_source)
    counts = np.zeros(NUM_CLASSES, np.int64)
    for frame in tqdm(frames, desc=f"class pixels {split}", unit="label", disable=not progress):
        train = _train_ids(read_label_ids(frame.label), frame.label)
        if crop_bottom > 0:
            train = train[: _kept_rows(train.shape[0], crop_bottom)]
        counts += np.bincount(train.ravel(), minlength=256)[:NUM_CLASSES]
    return counts


def load_frame(frame: Frame, clean_disparity: bool = False, crop_bottom: float = 0.0) -> dict[str, Any]:
    """Decode one frame's files into a sample (the layout of ``docs/internals.md``).

    Args:
        frame: From :func:`list_frames`.
        clean_disparity: Clean the disparity map with :func:`mtdense.data.depth.clean_disparity`
            (border crop, resize back, median, Telea inpainting) before converting it to depth.
        crop_bottom: Fraction of the height removed at the bottom of every map (ego vehicle).

    Returns:
        ``image`` (H x W x 3 uint8 RGB); ``seg`` (H x W uint8 train ids, 255 = ignore) when the
        frame has a label; ``depth`` (H x W float32 metres, 0 = invalid) and ``camera`` (dict)
        when it has a disparity map; ``right`` (H x W x 3 uint8) when listed; ``normals`` (H x W x
        3 float32 unit vectors, all zero = none) when listed; ``name``; ``paths`` (role -> file).

    Raises:
        ValueError: An unreadable file, a map whose size differs from the image, a label id
            outside the official table or a bad camera file (the message names the file).
    """
    image = read_image(frame.image, colour_only=True)
    size = image.shape[:2]
    sample: dict[str, Any] = {"image": image}
    if frame.label is not None:
        ids = read_label_ids(frame.label)
        _check_size(ids, frame.label, size, frame.image, "label")
        sample["seg"] = _train_ids(ids, frame.label)
    camera = None
    if frame.disparity is not None:
        if frame.camera is None:
            raise ValueError(f"{frame.disparity}: a disparity map needs its camera file to give depth; list the frame with list_frames")
        png = read_disparity_png(frame.disparity)
        _check_size(png, frame.disparity, size, frame.image, "disparity map")
        disparity = depth_lib.decode_cityscapes_disparity(png)
        if clean_disparity:
            disparity = depth_lib.clean_disparity(disparity)
        camera = read_camera(frame.camera)
        sample["depth"] = depth_lib.disparity_to_depth(disparity, camera["baseline"], camera["fx"])
    if frame.right is not None:
        right = read_image(frame.right, colour_only=True)
        _check_size(right, frame.right, size, frame.image, "right view")
        sample["right"] = right
    if frame.normals is not None:
        normals = read_normals_png(frame.normals)
        _check_size(normals, frame.normals, size, frame.image, "normals map")
        sample["normals"] = normals
    if crop_bottom > 0:
        keep = _kept_rows(size[0], crop_bottom)
        if keep < 1:
            raise ValueError(f"crop_bottom={crop_bottom} leaves nothing of the {size[0]}-row image {frame.image}")
        for key in ("image", "seg", "depth", "right", "normals"):
            if key in sample:
                sample[key] = np.ascontiguousarray(sample[key][:keep])
    if camera is not None:
        sample["camera"] = camera
    sample["name"] = frame.name
    sample["paths"] = {role: str(p) for role, p in frame.paths().items()}
    return sample


class CityscapesDataset(FrameDataset):
    """Samples of a Cityscapes-layout split: image, train-id segmentation, depth in metres.

    Args:
        root: Cityscapes root (``leftImg8bit/``, ``gtFine/``, ``disparity/``, ``camera/``).
        split: Split folder name.
        depth_source: Disparity folder (``"disparity"``: shipped SGBM maps, or a stereo
            teacher's folder); ``None``: no ``depth`` / ``camera`` in the samples.
        transform: Called on each sample dict (see :mod:`mtdense.data.transforms`).
        clean_disparity: Clean the disparity before converting it (see :func:`load_frame`).
        crop_bottom: Fraction of the height removed at the bottom (0.2 in the recipe), ``[0, 1)``.
        load_right: Also load the right view (``right``).
        label_source: Folder of ``*_gtFine_labelIds.png`` files.
        require_labels: A missing label raises; ``False``: such samples have no ``seg``.
        load_normals: Also load the surface normals (``normals/``, written by the synthetic city;
            a frame without its file raises).
        cache_in_memory: Keep every decoded sample (before ``transform``) in memory after its
            first read, so later epochs skip decoding. For splits that fit in RAM (about
            ``H * W * 8`` bytes a frame: image, train ids, depth); with loader workers each
            worker holds its own copy.

    Attributes:
        frames: The listed :class:`Frame` objects, sorted by name.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        depth_source: str | None = "disparity",
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        clean_disparity: bool = False,
        crop_bottom: float = 0.0,
        load_right: bool = False,
        label_source: str = "gtFine",
        require_labels: bool = True,
        cache_in_memory: bool = False,
        load_normals: bool = False,
    ):
        if not 0.0 <= crop_bottom < 1.0:
            raise ValueError(f"crop_bottom must be in [0, 1), got {crop_bottom}")
        if clean_disparity and depth_source is None:
            raise ValueError("clean_disparity=True needs a depth_source (the disparity maps to clean)")
        self.root = Path(root)
        self.split = split
        self.depth_source = depth_source
        self.clean_disparity = bool(clean_disparity)
        self.crop_bottom = float(crop_bottom)
        self.load_normals = bool(load_normals)
        frames = list_frames(root, split, depth_source=depth_source, require_labels=require_labels,
                             load_right=load_right, label_source=label_source, load_normals=load_normals)
        self._init_frames(frames, transform, cache_in_memory)

    def load_frame(self, frame: Frame) -> dict[str, Any]:
        return load_frame(frame, clean_disparity=self.clean_disparity, crop_bottom=self.crop_bottom)

    def __repr__(self) -> str:
        return (f"CityscapesDataset(root={str(self.root)!r}, split={self.split!r}, frames={len(self)}, "
                f"depth_source={self.depth_source!r}, crop_bottom={self.crop_bottom})")
