"""The ``folder`` format: a user's own data, any class list, any mix of labels per frame.

::

    ROOT/dataset.yaml               classes: [name, ...]; optional colors, ignore_index, depth_scale
    ROOT/images/SPLIT/NAME.png      (or .jpg, or another image format OpenCV reads) the frame
    ROOT/masks/SPLIT/NAME.png       8-bit class index 0..K-1, ignore_index = unlabelled   (optional)
    ROOT/depth/SPLIT/NAME.png       16-bit, depth_m = value / depth_scale, 0 = invalid     (optional)
    ROOT/normals/SPLIT/NAME.png     8-bit RGB, n = rgb / 127.5 - 1, (0, 0, 0) = invalid     (optional)
    ROOT/right/SPLIT/NAME.png       the right view of a stereo rig (``stereo:`` in dataset.yaml), read by
                                    stereo teachers only                                    (optional)

Teachers write further label sources in the same encodings beside these (``ROOT/OUT/SPLIT/NAME.png``,
e.g. ``masks_teacher/``, ``depth_mono/``). By default the dataset reads only the folders above; with
``sources`` (task -> folders in order of preference, e.g. ``{"seg": ["masks", "masks_teacher"]}``)
each frame's label of a task comes from the first of those folders that has it, a frame with none
gets "no label", and each sample records in ``sources`` the folder every task's label came from
(``""``: none). The real folders (``masks/``, ``depth/``, ``normals/``) decide which tasks the
dataset has (:func:`folder_tasks`) and are what evaluation reads.

Labels are paired with images by name, never by list order. A frame may lack any label
(asymmetric annotations): its sample then carries that task filled with "no label" (seg all 255,
depth all 0, normals all 0), so batches collate and the task's loss and metrics skip it while the
frame still trains the other tasks. Which tasks the dataset has is decided by its label folders
(:func:`folder_tasks`): one with at least one PNG in any split.

Listing (:func:`scan_split`) finds every layout problem (a label without its image, two images of
one name, a label that is not a PNG); :func:`list_folder_frames` raises on them and
:mod:`mtdense.data.check` lists them all. Decoding (:func:`load_folder_frame`) refuses a file
that does not decode, has the wrong bit depth, differs in size from its image or holds a mask
value that is no class, naming the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np

from mtdense.data.frames import FrameDataset
from mtdense.data.description import DESCRIPTION_FILE, TASKS, DatasetInfo, read_dataset_yaml
from mtdense.data.image import IMAGE_SUFFIXES, read_image
from mtdense.data.labels import IGNORE_INDEX
from mtdense.data.normals import read_normals_png

__all__ = [
    "IMAGE_FOLDER", "LABEL_FOLDERS", "FolderFrame", "LayoutIssue", "folder_tasks", "read_folder_info",
    "list_folder_splits", "scan_split", "list_folder_frames", "read_mask", "mask_to_seg", "read_depth_png",
    "read_normals_png", "empty_label", "load_folder_frame", "FolderDataset", "RIGHT_FOLDER", "right_image",
    "check_source_name", "check_sources",
]

IMAGE_FOLDER = "images"
LABEL_FOLDERS = {"seg": "masks", "depth": "depth", "normals": "normals"}
"""Folder of each task's label files (PNG, named as their image)."""

_ROLES = {"seg": "label", "depth": "depth", "normals": "normals"}  # sample["paths"] keys

RIGHT_FOLDER = "right"
"""Folder of the right views of a stereo rig (``right/SPLIT/NAME.png``), named as their left image."""


def right_image(root: str | Path, split: str, name: str) -> Path | None:
    """The right view ``ROOT/right/SPLIT/NAME.*`` of frame ``name`` (any image suffix), or None."""
    folder = Path(root) / RIGHT_FOLDER / split
    for suffix in IMAGE_SUFFIXES:
        for candidate in (folder / f"{name}{suffix}", folder / f"{name}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


@dataclass(frozen=True)
class FolderFrame:
    """The files of one frame, matched by name.

    Attributes:
        name: The image's file name without its suffix.
        split: The split folder.
        image: ``images/SPLIT/NAME.*``.
        mask, depth, normals: The label files, or None where the frame has none.
        sources: ``(task, folder)`` pairs for every task: the folder the label was read from
            (``""``: none), where the frame was listed with label sources (:func:`scan_split`);
            empty otherwise.
    """

    name: str
    split: str
    image: Path
    mask: Path | None = None
    depth: Path | None = None
    normals: Path | None = None
    sources: tuple[tuple[str, str], ...] = ()

    def label(self, task: str) -> Path | None:
        """The frame's label file of ``task`` (``seg``, ``depth``, ``normals``)."""
        return self.mask if task == "seg" else getattr(self, task)

    def source(self, task: str) -> str:
        """The folder the label of ``task`` comes from (``masks``, ``masks_teacher``, ...); ``""``
        where the frame has none."""
        if self.label(task) is None:
            return ""
        return dict(self.sources).get(task, LABEL_FOLDERS[task])

    def paths(self, tasks: Sequence[str] = TASKS) -> dict[str, str]:
        """Files by role: ``image``, then ``label`` (the mask), ``depth``, ``normals`` for ``tasks``;
        ``""`` where the frame has no file (every sample of a dataset has the same keys, so
        samples collate)."""
        out = {"image": str(self.image)}
        out.update({_ROLES[t]: "" if (p := self.label(t)) is None else str(p) for t in tasks})
        return out


@dataclass(frozen=True)
class LayoutIssue:
    """A problem found while listing a split (not decoding).

    Attributes:
        severity: ``"error"`` (loading refuses the split) or ``"warning"`` (the file is not read).
        file: The file or folder concerned.
        message: What is wrong.
        fix: What to do.
    """

    severity: str
    file: Path
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}: {self.message}; {self.fix}"


def _check_root(root: Path) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist; point it at the folder that holds "
                                f"{DESCRIPTION_FILE} and {IMAGE_FOLDER}/")
    if not (root / IMAGE_FOLDER).is_dir():
        raise FileNotFoundError(f"{root} has no {IMAGE_FOLDER}/ folder; a folder dataset keeps its frames in "
                                f"{IMAGE_FOLDER}/SPLIT/NAME.png (or .jpg)")
    return root


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def folder_tasks(root: str | Path) -> tuple[str, ...]:
    """The tasks with labels: those whose folder (``masks/``, ``depth/``, ``normals/``) holds at
    least one ``SPLIT/*.png``, in :data:`~mtdense.data.description.TASKS` order."""
    root = Path(root)

    def has_png(folder: Path) -> bool:
        splits = [p for p in folder.iterdir() if p.is_dir() and _visible(p)] if folder.is_dir() else []
        return any(p.suffix.lower() == ".png" and _visible(p) for split in splits for p in split.iterdir())

    return tuple(t for t in TASKS if has_png(root / LABEL_FOLDERS[t]))


def read_folder_info(root: str | Path) -> DatasetInfo:
    """``ROOT/dataset.yaml`` with the tasks found in the label folders (see :func:`folder_tasks`).

    Raises:
        FileNotFoundError: No ``dataset.yaml``.
        ValueError: A broken ``dataset.yaml`` (the message names the file and the key).
    """
    root = Path(root)
    return read_dataset_yaml(root / DESCRIPTION_FILE, tasks=folder_tasks(root), format="folder")


def list_folder_splits(root: str | Path) -> list[str]:
    """Split folders under ``ROOT/images/`` (sorted)."""
    root = _check_root(Path(root))
    return sorted(p.name for p in (root / IMAGE_FOLDER).iterdir() if p.is_dir() and _visible(p))


def check_source_name(task: str, name: str) -> None:
    """Refuse a label source that cannot hold ``task``'s labels: not a plain folder name, the
    images' or right views' folder, or another task's real label folder.

    Raises:
        ValueError: The message names the task, the folder and what to give instead.
    """
    if task not in LABEL_FOLDERS:
        raise ValueError(f"{task!r} is not a task; label sources are given for {', '.join(LABEL_FOLDERS)}")
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ValueError(f"{name!r} is not a folder name; give a folder directly under the dataset root, as "
                         f"'mtdense data teacher' writes it (e.g. {LABEL_FOLDERS[task]}_teacher)")
    others = {LABEL_FOLDERS[t]: t for t in LABEL_FOLDERS if t != task}
    if name in (IMAGE_FOLDER, RIGHT_FOLDER) or name in others:
        what = f"the real {others[name]} labels" if name in others else "frames, not labels"
        raise ValueError(f"{name}/ holds {what}; a {task} source holds labels in the encoding of "
                         f"{LABEL_FOLDERS[task]}/ (e.g. {LABEL_FOLDERS[task]} or {LABEL_FOLDERS[task]}_teacher)")


def check_sources(root: str | Path, sources: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Check label sources against a dataset root: known tasks, good folder names, each named once,
    each folder there.

    Returns:
        ``{task: (folder, ...)}`` in :data:`~mtdense.data.description.TASKS` order.

    Raises:
        ValueError: A bad task or folder name, a folder named twice (the message names it).
        FileNotFoundError: A source folder that is not under ``root`` (the message says how to write it).
    """
    root = Path(root)
    out: dict[str, tuple[str, ...]] = {}
    for task, names in sources.items():
        names = [names] if isinstance(names, str) else list(names)
        if not names:
            raise ValueError(f"sources of {task}: no folder given; list one or more, e.g. [{LABEL_FOLDERS.get(task, 'masks')}]")
        for name in names:
            try:
                check_source_name(task, name)
            except ValueError as exc:
                raise ValueError(f"sources of {task}: {exc}") from None
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"sources of {task}: {', '.join(twice)} named twice; name each folder once")
        for name in names:
            if not (root / name).is_dir() and name != LABEL_FOLDERS[task]:
                raise FileNotFoundError(f"{root / name}: no such label source of {task}; write it with 'mtdense data "
                                        f"teacher {root} --out ...' (a teacher's folder), or fix the name")
        out[task] = tuple(names)
    return {t: out[t] for t in TASKS if t in out}


def _scan_labels(root: Path, name: str, split: str, task: str, images: dict[str, Path],
                 issues: list[LayoutIssue]) -> dict[str, Path]:
    """The label files of ``ROOT/name/SPLIT`` by frame name, with their layout problems."""
    found: dict[str, Path] = {}
    label_dir = root / name / split
    if not label_dir.is_dir():
        return found
    folder = root / IMAGE_FOLDER / split
    for path in sorted(filter(_visible, label_dir.iterdir())):
        if path.is_dir():
            issues.append(LayoutIssue("warning", path, "a sub-folder of a label folder is not read",
                                      f"put label files directly in {name}/{split}/"))
        elif path.suffix.lower() != ".png":
            issues.append(LayoutIssue("error", path, f"{name}/ files must be PNG (lossy formats change "
                                      f"{'class indices' if task == 'seg' else 'values'})",
                                      "save it as a PNG named as its image"))
        elif path.stem not in images:
            issues.append(LayoutIssue("error", path, f"no image {path.stem}.* in {folder}",
                                      "restore the image, or delete the stray label (a misnamed file pairs with nothing)"))
        elif path.stem in found:
            issues.append(LayoutIssue("error", path, f"a second {name}/ file named {path.stem!r}",
                                      "remove or rename one of them"))
        else:
            found[path.stem] = path
    return found


def scan_split(root: str | Path, split: str,
               sources: Mapping[str, Sequence[str]] | None = None) -> tuple[list[FolderFrame], list[LayoutIssue]]:
    """List a split's frames and every layout problem, without decoding anything.

    Errors: two images with one name (``a.png`` and ``a.jpg``), a label file that is not a PNG
    (JPEG compression changes class indices and depth), a label whose image is missing.
    Warnings: a file in ``images/SPLIT`` that is not an image, a sub-folder (the format is flat).

    Args:
        root: The dataset root.
        split: The split folder.
        sources: Task -> label folders in order of preference (see the module docstring); a
            frame's label of such a task is the first folder's that has one, and every frame
            records the folders in :attr:`FolderFrame.sources`. ``None``: the real folders.

    Returns:
        Frames sorted by name (labels paired by name; of two images with one name, the first in
        sorted order), and the problems found.

    Raises:
        FileNotFoundError: The root, its ``images/`` or the split does not exist.
    """
    root = _check_root(Path(root))
    folder = root / IMAGE_FOLDER / split
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} does not exist; splits under {root / IMAGE_FOLDER}: "
                                f"{', '.join(list_folder_splits(root)) or 'none'}")
    issues: list[LayoutIssue] = []
    images: dict[str, Path] = {}
    for path in sorted(filter(_visible, folder.iterdir())):
        if path.is_dir():
            issues.append(LayoutIssue("warning", path, "a sub-folder of a split is not read (the format is flat: "
                                      f"{IMAGE_FOLDER}/{split}/NAME.png)", "move its images up, or into a split of its own"))
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            issues.append(LayoutIssue("warning", path, "not an image file, not read",
                                      f"remove it, or give it an image suffix ({', '.join(IMAGE_SUFFIXES)})"))
        elif path.stem in images:
            issues.append(LayoutIssue("error", path, f"a second image named {path.stem!r} (beside {images[path.stem].name}); "
                                      "labels pair with images by name", "remove or rename one of them"))
        else:
            images[path.stem] = path
    if sources is None:
        labels = {task: _scan_labels(root, name, split, task, images, issues) for task, name in LABEL_FOLDERS.items()}
        frames = [FolderFrame(stem, split, image, *(labels[t].get(stem) for t in TASKS))
                  for stem, image in sorted(images.items())]
        return frames, issues
    folders = {t: tuple(sources.get(t, (LABEL_FOLDERS[t],))) for t in TASKS}
    found = {t: [(name, _scan_labels(root, name, split, t, images, issues)) for name in folders[t]] for t in TASKS}
    frames = []
    for stem, image in sorted(images.items()):
        picked = {t: next(((name, files[stem]) for name, files in found[t] if stem in files), ("", None)) for t in TASKS}
        frames.append(FolderFrame(stem, split, image, *(picked[t][1] for t in TASKS),
                                  sources=tuple((t, picked[t][0]) for t in TASKS)))
    return frames, issues


def list_folder_frames(root: str | Path, split: str,
                       sources: Mapping[str, Sequence[str]] | None = None) -> list[FolderFrame]:
    """:func:`scan_split` (with its ``sources``), refusing a split with layout errors.

    Raises:
        FileNotFoundError: The root, its ``images/`` or the split does not exist.
        ValueError: A layout error (the message names the first file and counts the rest), or a
            split without images.
    """
    frames, issues = scan_split(root, split, sources)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        more = f" ({len(errors) - 1} more problems: run 'mtdense data check {root}')" if len(errors) > 1 else ""
        raise ValueError(f"{errors[0]}{more}")
    if not frames:
        raise ValueError(f"{Path(root) / IMAGE_FOLDER / split}: no images in this split; put the frames there as "
                         f"NAME.png or NAME.jpg")
    return frames


# --- decoding ---------------------------------------------------------------------------------

def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask PNG as ``H x W`` uint8 class indices (values not yet checked).

    Grey (``L``) and palette (``P``) PNGs are read as their indices, so a mask saved with a
    colour palette keeps its class indices.

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a decodable PNG, or not one 8-bit channel (the message names the file).
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: mask not found")
    try:
        with Image.open(path) as im:
            im.load()
            fmt, mode, mask = im.format, im.mode, np.array(im)
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: cannot decode this mask (corrupt, truncated or not an image); "
                         "replace it with a good copy") from exc
    if fmt != "PNG":
        raise ValueError(f"{path}: a {fmt} file, not a PNG; masks must be lossless 8-bit PNGs of class indices")
    if mode not in ("L", "P"):
        raise ValueError(f"{path}: a {mode} image, not one 8-bit channel of class indices; save the mask as an 8-bit "
                         "grey (or palette) PNG holding 0..K-1 and the ignore index (a colour mask must be mapped to "
                         "indices first)")
    return mask


def mask_to_seg(mask: np.ndarray, info: DatasetInfo, path: str | Path) -> np.ndarray:
    """Class indices as samples carry them: ``0..K-1``, the dataset's ignore index mapped to 255.

    Raises:
        ValueError: Values that are neither a class index nor the ignore index (the message
            names the file and the values).
    """
    k, ignore = info.num_classes, info.ignore_index
    bad = (mask >= k) & (mask != ignore)
    if bad.any():
        values = np.unique(mask[bad]).tolist()
        shown = ", ".join(map(str, values[:10])) + (f" (and {len(values) - 10} more)" if len(values) > 10 else "")
        raise ValueError(f"{path}: mask values {shown} on {int(bad.sum())} pixels are not class indices 0..{k - 1} "
                         f"nor the ignore index {ignore}; relabel them, or add the classes to {DESCRIPTION_FILE}")
    seg = np.ascontiguousarray(mask, dtype=np.uint8)
    if ignore != IGNORE_INDEX:
        seg = np.where(seg == ignore, np.uint8(IGNORE_INDEX), seg)
    return seg


def read_depth_png(path: str | Path, depth_scale: float) -> np.ndarray:
    """Read a 16-bit depth PNG as ``H x W`` float32 metres (``value / depth_scale``, 0 = invalid).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not decodable, or not one 16-bit channel (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: depth map not found")
    data = np.fromfile(path, dtype=np.uint8)
    png = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if png is None:
        raise ValueError(f"{path}: cannot decode this depth map (corrupt, truncated or not a PNG); replace it with a "
                         "good copy")
    if png.dtype != np.uint16 or png.ndim != 2:
        channels = 1 if png.ndim == 2 else png.shape[2]
        raise ValueError(f"{path}: a {png.dtype} image with {channels} channel{'s' * (channels != 1)}, not a 16-bit "
                         f"single-channel depth PNG; write depth_m * depth_scale ({depth_scale:g}) rounded to uint16, "
                         "0 = no depth (mtdense.data.depth.depth_to_png16 does for 256)")
    return (png.astype(np.float64) / depth_scale).astype(np.float32)


def _check_size(array: np.ndarray, path: Path, size: tuple[int, int], image: Path) -> None:
    if array.shape[:2] != size:
        raise ValueError(f"{path}: {array.shape[0]}x{array.shape[1]} (H x W) but its image {image} is "
                         f"{size[0]}x{size[1]}; labels must have their image's size (resize with nearest "
                         "neighbour, or replace the file)")


def empty_label(task: str, size: tuple[int, int]) -> np.ndarray:
    """The "no label" map of ``task``: seg all 255, depth all 0, normals all 0."""
    if task == "seg":
        return np.full(size, IGNORE_INDEX, dtype=np.uint8)
    if task == "depth":
        return np.zeros(size, dtype=np.float32)
    if task == "normals":
        return np.zeros((*size, 3), dtype=np.float32)
    raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


def load_folder_frame(frame: FolderFrame, info: DatasetInfo, tasks: Sequence[str] | None = None) -> dict[str, Any]:
    """Decode one frame into a sample.

    Args:
        frame: From :func:`list_folder_frames`.
        info: The dataset description (classes, ignore index, depth scale).
        tasks: Tasks to load (default: ``info.tasks``); a task the frame has no file for is
            filled with "no label" (:func:`empty_label`).

    Returns:
        ``image`` (H x W x 3 uint8 RGB); per task ``seg`` (H x W uint8, 255 = ignore), ``depth``
        (H x W float32 metres, 0 = invalid), ``normals`` (H x W x 3 float32 unit vectors,
        all-zero = invalid); ``name``; ``paths`` (role -> file, ``""`` for a label the frame lacks);
        for a frame listed with label sources, ``sources`` (task -> the folder its label came from,
        ``""`` where it has none).

    Raises:
        ValueError: A file that does not decode, has the wrong bit depth or size, or (a mask)
            holds values that are no class; the message names the file.
    """
    tasks = info.tasks if tasks is None else tasks
    image = read_image(frame.image, colour_only=True)
    size = image.shape[:2]
    sample: dict[str, Any] = {"image": image}
    for task in tasks:
        path = frame.label(task)
        if path is None:
            sample[task] = empty_label(task, size)
            continue
        if task == "seg":
            mask = read_mask(path)
            _check_size(mask, path, size, frame.image)
            sample[task] = mask_to_seg(mask, info, path)
        elif task == "depth":
            depth = read_depth_png(path, info.depth_scale)
            _check_size(depth, path, size, frame.image)
            sample[task] = depth
        else:
            normals = read_normals_png(path)
            _check_size(normals, path, size, frame.image)
            sample[task] = normals
    sample["name"] = frame.name
    sample["paths"] = frame.paths(tasks)
    if frame.sources:
        sample["sources"] = {task: frame.source(task) for task in tasks}
    return sample


class FolderDataset(FrameDataset):
    """Samples of one split of a ``folder`` dataset (see the module docstring).

    Args:
        root: The folder that holds ``dataset.yaml`` and ``images/``.
        split: Split folder name.
        transform: Called on each sample dict (see :mod:`mtdense.data.transforms`).
        cache_in_memory: Keep every decoded sample (before ``transform``) in memory after its
            first read; with loader workers each worker holds its own copy.
        tasks: Tasks to load, a subset of the dataset's (default: all it has).
        sources: Task -> label folders in order of preference (``{"seg": ["masks",
            "masks_teacher"]}``): a frame's label is the first folder's that has one, and each
            sample records where its labels came from in ``sources``; a task named here may be
            loaded even where the real folder has no labels. ``None``: the real folders only.

    Attributes:
        info: The :class:`~mtdense.data.description.DatasetInfo` (``tasks`` as loaded).
        classes: The class names.
        frames: The listed :class:`FolderFrame` objects, sorted by name.
        sources: The label sources (``{}``: the real folders).

    Raises:
        FileNotFoundError: No root, ``images/``, split, ``dataset.yaml`` or source folder.
        ValueError: A broken ``dataset.yaml``, a layout error (see :func:`scan_split`), an
            empty split, a task asked for that the dataset has no labels for, or a bad source.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache_in_memory: bool = False,
        tasks: Sequence[str] | None = None,
        sources: Mapping[str, Sequence[str]] | None = None,
    ):
        self.root = Path(root)
        self.split = split
        _check_root(self.root)
        info = read_folder_info(self.root)
        self.sources = check_sources(self.root, sources) if sources is not None else {}
        have = [t for t in TASKS if t in info.tasks or t in self.sources]
        if tasks is not None or self.sources:
            tasks = have if tasks is None else [tasks] if isinstance(tasks, str) else list(tasks)
            missing = [t for t in tasks if t not in have]
            if missing:
                folders = ", ".join(f"{LABEL_FOLDERS[t]}/" if t in LABEL_FOLDERS else repr(t) for t in missing)
                raise ValueError(f"{self.root}: no labels for {', '.join(missing)} (no PNG in {folders}); this dataset "
                                 f"has {', '.join(have) or 'no labels'}")
            info = DatasetInfo.from_dict({**info.to_dict(), "tasks": tasks})
        self.info = info
        frames = list_folder_frames(self.root, split, self.sources if sources is not None else None)
        self._init_frames(frames, transform, cache_in_memory)

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)

    def load_frame(self, frame: FolderFrame) -> dict[str, Any]:
        return load_folder_frame(frame, self.info)

    def __repr__(self) -> str:
        return (f"FolderDataset(root={str(self.root)!r}, split={self.split!r}, frames={len(self)}, "
                f"classes={len(self.classes)}, tasks={list(self.info.tasks)}"
                + (f", sources={ {t: list(v) for t, v in self.sources.items()} })" if self.sources else ")"))
