"""Data: the Cityscapes label table, depth encodings, the dataset formats (Cityscapes, folder,
NYUv2, KITTI) behind :func:`open_dataset`, the dataset description, joint transforms, a pre-resized
cache, the synthetic stereo city and stereo teachers.

Submodules are imported where they are used (``from mtdense.data.cityscapes import
CityscapesDataset``) so that importing :mod:`mtdense` stays light; ``open_dataset``,
``detect_format`` and ``DatasetInfo`` are importable from here and load their modules on first use.
"""

from __future__ import annotations

from typing import Any

__all__ = ["open_dataset", "detect_format", "DatasetInfo"]

_LAZY = {"open_dataset": "mtdense.data.open", "detect_format": "mtdense.data.open",
         "DatasetInfo": "mtdense.data.description"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mtdense.data' has no attribute {name!r}")
