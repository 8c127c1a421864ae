"""One entry point for every dataset format: :func:`open_dataset`.

Whatever the format, the dataset it returns is a torch ``Dataset`` with ``.info`` (a
:class:`~mtdense.data.description.DatasetInfo`) and ``.classes`` (the class names), whose samples
are dicts of ``image`` (H x W x 3 uint8), ``seg`` (H x W uint8, 255 = ignore), ``depth`` (H x W
float32 metres, 0 = invalid) and ``normals`` (H x W x 3 float32 unit vectors, all-zero = invalid)
where the data has them, with ``name`` and ``paths``.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from mtdense.data.cityscapes import IMAGE_FOLDER as CITYSCAPES_IMAGE_FOLDER
from mtdense.data.cityscapes import CityscapesDataset
from mtdense.data.description import DESCRIPTION_FILE, FORMATS, DatasetInfo
from mtdense.data.folder import FolderDataset
from mtdense.data.kitti import KITTI_MARKERS, KittiDataset
from mtdense.data.nyuv2 import NYUV2_FOLDERS, NYUv2Dataset

__all__ = ["detect_format", "open_dataset"]


class _Cityscapes(CityscapesDataset):
    """:class:`CityscapesDataset` with the description every format's dataset carries."""

    def __init__(self, root: str | Path, split: str, **kwargs: Any):
        super().__init__(root, split, **kwargs)
        tasks = ["seg"] + (["depth"] if self.depth_source is not None else []) + (["normals"] if self.load_normals else [])
        self.info = DatasetInfo.cityscapes(tasks=tasks)

    @property
    def classes(self) -> list[str]:
        return list(self.info.classes)


def detect_format(root: str | Path) -> str:
    """The format of a dataset root, from its layout.

    ``folder``: ``ROOT/dataset.yaml``; ``cityscapes``: ``ROOT/leftImg8bit/``; ``nyuv2``:
    ``ROOT/{train,val,...}/image/*.npy``; ``kitti``: ``ROOT/raw/``, ``ROOT/data_depth_annotated/``
    or ``ROOT/data_semantics/``.

    Raises:
        FileNotFoundError: The root does not exist.
        ValueError: None of the above (the message says what was looked for).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset root {root} does not exist")
    if (root / DESCRIPTION_FILE).is_file():
        return "folder"
    if (root / CITYSCAPES_IMAGE_FOLDER).is_dir():
        return "cityscapes"
    image = NYUV2_FOLDERS["image"]
    if any(next((p / image).glob("*.npy"), None) is not None for p in root.iterdir() if (p / image).is_dir()):
        return "nyuv2"
    if any((root / m).is_dir() for m in KITTI_MARKERS):
        return "kitti"
    raise ValueError(
        f"{root}: not a dataset layout mtdense knows; looked for {DESCRIPTION_FILE} (folder format), "
        f"{CITYSCAPES_IMAGE_FOLDER}/ (Cityscapes), SPLIT/{image}/*.npy (preprocessed NYUv2) and "
        f"{', '.join(m + '/' for m in KITTI_MARKERS)} (KITTI). For your own data "
        f"write {DESCRIPTION_FILE} ('classes: [name, ...]') beside images/SPLIT/; or name the format with "
        f"format=... ({', '.join(FORMATS)})"
    )


def open_dataset(root: str | Path, split: str, format: str = "auto", **kwargs: Any) -> Dataset:
    """Open one split of a dataset in any known format.

    Args:
        root: The dataset root.
        split: The split (``train``, ``val``, ...; a folder name of the format).
        format: ``auto`` (:func:`detect_format`), ``cityscapes``, ``folder``, ``nyuv2`` or ``kitti``.
        **kwargs: Passed to the format's dataset: ``transform`` and ``cache_in_memory`` for all;
            ``tasks`` (folder, kitti); ``sources`` (folder, kitti: label folders per task in order of
            preference, see :class:`~mtdense.data.folder.FolderDataset`); ``depth_source``,
            ``crop_bottom``, ``label_source``, ... (Cityscapes, see
            :class:`~mtdense.data.cityscapes.CityscapesDataset`).

    Returns:
        A :class:`~mtdense.data.cityscapes.CityscapesDataset`, :class:`~mtdense.data.folder.FolderDataset`,
        :class:`~mtdense.data.nyuv2.NYUv2Dataset` or :class:`~mtdense.data.kitti.KittiDataset`, each
        with ``.info`` and ``.classes``.

    Raises:
        ValueError: An unknown format name, an undetectable layout, or what the format's dataset
            raises.
        FileNotFoundError: The root or split does not exist.
    """
    if format == "auto":
        format = detect_format(root)
    classes = {"cityscapes": (_Cityscapes, CityscapesDataset), "folder": (FolderDataset, FolderDataset),
               "nyuv2": (NYUv2Dataset, NYUv2Dataset), "kitti": (KittiDataset, KittiDataset)}
    if format not in classes:
        raise ValueError(f"unknown dataset format {format!r}; known: auto, {', '.join(FORMATS)}")
    cls, documented = classes[format]
    accepted = [n for n in inspect.signature(documented).parameters if n not in ("root", "split")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"the {format} format takes no {', '.join(unknown)}; its options: {', '.join(accepted)}")
    return cls(root, split, **kwargs)
