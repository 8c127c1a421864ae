"""The city the synthetic-city tests share (generated once, by the ``city`` fixture of conftest.py)
and helpers to find and read its files."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SIZE = (128, 256)
SEED = 5


def files(root: Path, folder: str, split: str, suffix: str) -> list[Path]:
    return sorted(root.glob(f"{folder}/{split}/*/*_{suffix}"))


def read(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert image is not None, path
    return image
