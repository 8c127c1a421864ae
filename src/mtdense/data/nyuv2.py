"""The preprocessed NYUv2 of MTAN and LibMTL: 13 classes, depth and surface normals, indoors.

::

    ROOT/{train,val}/image/{i}.npy     H x W x 3 float, RGB in [0, 1]
    ROOT/{train,val}/label/{i}.npy     H x W float class index 0..12, -1 = ignore
    ROOT/{train,val}/depth/{i}.npy     H x W x 1 float metres, 0 = invalid
    ROOT/{train,val}/normal/{i}.npy    H x W x 3 float in [-1, 1], all-zero = invalid

795 train and 654 val frames at 288 x 384. Arrays are read with ``allow_pickle=False``: a file
that would need unpickling (an object array) is refused, never executed. Samples have the form of
every other dataset: ``image`` uint8, ``seg`` uint8 with 255 = ignore, ``depth`` float32 metres,
``normals`` float32 unit vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mtdense.data.description import DatasetInfo
from mtdense.data.frames import FrameDataset
from mtdense.data.labels import IGNORE_INDEX

__all__ = ["NYUV2_CLASSES", "NYUV2_FOLDERS", "nyuv2_info", "NYUv2Frame", "list_nyuv2_splits", "list_nyuv2_frames",
           "read_npy", "load_nyuv2_frame", "NYUv2Dataset"]

NYUV2_CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table",
                 "tv", "wall", "window")
"""Names of label values 0..12, in the order of the MTAN / LibMTL preprocessing."""

NYUV2_FOLDERS = {"image": "image", "seg": "label", "depth": "depth", "normals": "normal"}
"""Folder of each array under ``ROOT/SPLIT/``."""

_TOLERANCE = 1e-3  # slack on the [0, 1] and [-1, 1] ranges for float rounding in the preprocessing
_NPY_MAGIC = b"\x93NUMPY"


def nyuv2_info() -> DatasetInfo:
    """The NYUv2 description: 13 classes (default palette), seg + depth + normals, ignore 255."""
    return DatasetInfo(classes=NYUV2_CLASSES, tasks=("seg", "depth", "normals"), format="nyuv2")


@dataclass(frozen=True)
class NYUv2Frame:
    """The four arrays of one frame, ``ROOT/SPLIT/{image,label,depth,normal}/{name}.npy``."""

    name: str
    split: str
    image: Path
    label: Path
    depth: Path
    normal: Path

    def paths(self) -> dict[str, str]:
        """Files by role: ``image``, ``label``, ``depth``, ``normals``."""
        return {"image": str(self.image), "label": str(self.label), "depth": str(self.depth), "normals": str(self.normal)}


def _check_root(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist; point it at the preprocessed NYUv2 folder that "
                                "holds train/ and val/ (each with image/, label/, depth/, normal/)")
    return root


def list_nyuv2_splits(root: str | Path) -> list[str]:
    """Split folders of ``root`` that hold an ``image/`` folder (sorted)."""
    root = _check_root(Path(root))
    return sorted(p.name for p in root.iterdir() if (p / "image").is_dir())


def _order(path: Path) -> tuple[int, int | str]:
    return (0, int(path.stem)) if path.stem.isdigit() else (1, path.stem)


def list_nyuv2_frames(root: str | Path, split: str) -> list[NYUv2Frame]:
    """List a split's frames (sorted by number) and pair the four arrays by name.

    Raises:
        FileNotFoundError: The root or split does not exist, the split has no ``image/*.npy``,
            or an array is missing (the message names the first missing file and the count).
    """
    root = _check_root(Path(root))
    image_dir = root / split / NYUV2_FOLDERS["image"]
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir} does not exist; splits under {root}: "
                                f"{', '.join(list_nyuv2_splits(root)) or 'none'} (NYUv2 has train and val)")
    images = sorted(image_dir.glob("*.npy"), key=_order)
    if not images:
        raise FileNotFoundError(f"{image_dir}: no .npy arrays; expected {{i}}.npy per frame (the MTAN / LibMTL "
                                "preprocessed NYUv2)")
    frames, missing = [], []
    for image in images:
        files = {role: root / split / folder / image.name for role, folder in NYUV2_FOLDERS.items() if role != "image"}
        missing += [p for p in files.values() if not p.is_file()]
        frames.append(NYUv2Frame(image.stem, split, image, files["seg"], files["depth"], files["normals"]))
    if missing:
        raise FileNotFoundError(f"{missing[0]}: missing ({len(missing)} arrays missing in {root / split}); every frame "
                                "needs image/, label/, depth/ and normal/ arrays of the same name: restore the files "
                                "from the download")
    return frames


def read_npy(path: str | Path, what: str) -> np.ndarray:
    """Load one ``.npy`` array without unpickling anything.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a ``.npy`` file, truncated, or an object array (which would need
            unpickling); the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    try:
        with open(path, "rb") as f:
            magic = f.read(len(_NPY_MAGIC))
            f.seek(0)
            if magic != _NPY_MAGIC:
                raise ValueError("no .npy header")
            array = np.load(f, allow_pickle=False)
    except ValueError as exc:
        if magic == _NPY_MAGIC and "allow_pickle" in str(exc):
            raise ValueError(f"{path}: holds Python objects (an object array), which are not unpickled; save the "
                             f"{what} as a plain numeric array with np.save") from exc
        raise ValueError(f"{path}: not a readable .npy array ({exc}); replace it with a good copy") from exc
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc}); replace it with a good copy") from exc
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{path}: a {array.dtype} array; the {what} must be numeric")
    return array


def _shape_error(path: Path, array: np.ndarray, expected: str) -> ValueError:
    return ValueError(f"{path}: shape {array.shape}, expected {expected}")


def _check_size(path: Path, array: np.ndarray, size: tuple[int, int], image: Path) -> None:
    if array.shape[:2] != size:
        raise ValueError(f"{path}: {array.shape[0]}x{array.shape[1]} (H x W) but its image {image} is "
                         f"{size[0]}x{size[1]}; the arrays of a frame must have one size")


def _finite(path: Path, array: np.ndarray, what: str) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ValueError(f"{path}: {int((~np.isfinite(array)).sum())} values of the {what} are NaN or infinite")


def _image(path: Path) -> np.ndarray:
    a = read_npy(path, "image")
    if a.ndim != 3 or a.shape[2] != 3:
        raise _shape_error(path, a, "H x W x 3 (RGB)")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    _finite(path, a, "image")
    if a.size and (a.min() < -_TOLERANCE or a.max() > 1 + _TOLERANCE):
        raise ValueError(f"{path}: image values span {float(a.min()):g}..{float(a.max()):g}, expected floats in [0, 1]")
    return np.rint(np.clip(a.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)


def _seg(path: Path, k: int) -> np.ndarray:
    a = read_npy(path, "label")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise _shape_error(path, a, "H x W")
    _finite(path, a, "label")
    bad = (a != np.round(a)) | (a < -1) | (a >= k)
    if bad.any():
        values = np.unique(a[bad])[:10].tolist()
        raise ValueError(f"{path}: label values {values} are not class indices 0..{k - 1} nor -1 (ignore)")
    return np.where(a < 0, IGNORE_INDEX, a).astype(np.uint8)


def _depth(path: Path) -> np.ndarray:
    a = read_npy(path, "depth")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise _shape_error(path, a, "H x W x 1 (or H x W)")
    _finite(path, a, "depth")
    if (a < 0).any():
        raise ValueError(f"{path}: {int((a < 0).sum())} negative depths; depth is in metres, 0 = invalid")
    return a.astype(np.float32)


def _normals(path: Path) -> np.ndarray:
    a = read_npy(path, "normals")
    if a.ndim != 3 or a.shape[2] != 3:
        raise _shape_error(path, a, "H x W x 3")
    _finite(path, a, "normals")
    if a.size and (a.min() < -1 - _TOLERANCE or a.max() > 1 + _TOLERANCE):
        raise ValueError(f"{path}: normal components span {float(a.min()):g}..{float(a.max()):g}, expected [-1, 1]")
    n = a.astype(np.float64)
    length = np.linalg.norm(n, axis=2)
    valid = length > 1e-6
    out = np.zeros(n.shape, dtype=np.float32)
    out[valid] = (n[valid] / length[valid, None]).astype(np.float32)
    return out


def load_nyuv2_frame(frame: NYUv2Frame, num_classes: int = len(NYUV2_CLASSES)) -> dict[str, Any]:
    """Decode one frame.

    Returns:
        ``image`` (H x W x 3 uint8 RGB, ``round(255 x)``), ``seg`` (H x W uint8, -1 -> 255),
        ``depth`` (H x W float32 metres, 0 = invalid), ``normals`` (H x W x 3 float32,
        renormalised to unit length, all-zero = invalid), ``name``, ``paths``.

    Raises:
        ValueError: An unreadable array, a wrong shape, values out of range, arrays of different
            sizes (the message names the file).
    """
    image = _image(frame.image)
    size = image.shape[:2]
    sample: dict[str, Any] = {"image": image}
    for key, path, read in (("seg", frame.label, lambda p: _seg(p, num_classes)), ("depth", frame.depth, _depth),
                            ("normals", frame.normal, _normals)):
        array = read(path)
        _check_size(path, array, size, frame.image)
        sample[key] = array
    sample["name"] = frame.name
    sample["paths"] = frame.paths()
    return sample


class NYUv2Dataset(FrameDataset):
    """Samples of one split of the preprocessed NYUv2 (see the module docstring).

    Args:
        root: The folder that holds ``train/`` and ``val/``.
        split: ``train`` or ``val``.
        transform: Called on each sample dict (see :mod:`mtdense.data.transforms`).
        cache_in_memory: Keep every decoded sample (before ``transform``) in memory after its
            first read (about 1.3 MB a frame at 288 x 384).

    Attributes:
        info: :func:`nyuv2_info`.
        classes: The 13 class names.
        frames: The listed :class:`NYUv2Frame` objects, sorted by number.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache_in_memory: bool = False,
    ):
        self.root = Path(root)
        self.split = split
        self.info = nyuv2_info()
        self._init_frames(list_nyuv2_frames(self.root, split), transform, cache_in_memory)

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    def load_frame(self, frame: NYUv2Frame) -> dict[str, Any]:
        return load_nyuv2_frame(frame, self.info.num_classes)

    def __repr__(self) -> str:
        return f"NYUv2Dataset(root={str(self.root)!r}, split={self.split!r}, frames={len(self)})"
