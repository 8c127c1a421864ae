"""Where a teacher writes: one folder under the dataset root, beside the real labels.

A teacher's output is a label source in the Cityscapes layout (``ROOT/OUT/SPLIT/CITY/...``),
named by one folder under the root and read with ``depth_source=OUT`` or ``label_source=OUT``.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DOWNLOAD_FOLDERS", "check_folder_name", "check_not_download_folder"]

DOWNLOAD_FOLDERS = frozenset({"leftImg8bit", "rightImg8bit", "gtFine", "gtCoarse", "camera", "disparity", "vehicle"})
"""Folders of the Cityscapes download: a teacher that writes there would replace its files."""


def check_folder_name(name: str, example: str) -> None:
    """Check that ``name`` is one plain folder name (no path) under a dataset root.

    Args:
        name: The output folder name.
        example: A valid name, quoted in the error.

    Raises:
        ValueError: ``name`` is empty, ``.``/``..`` or a path.
    """
    if not name or Path(name).name != name or name in (".", ".."):
        raise ValueError(f"out must be a folder name under the dataset root (e.g. {example}), got {name!r}")


def check_not_download_folder(name: str, example: str) -> None:
    """Check that ``name`` is a plain folder name and no folder of the Cityscapes download.

    Args:
        name: The output folder name.
        example: A valid name, quoted in the error.

    Raises:
        ValueError: a bad name, or one of :data:`DOWNLOAD_FOLDERS`.
    """
    check_folder_name(name, example)
    if name in DOWNLOAD_FOLDERS:
        raise ValueError(
            f"out={name!r} is a folder of the Cityscapes download; writing the teacher there would replace its files. "
            f"Choose another name, e.g. {example}"
        )
