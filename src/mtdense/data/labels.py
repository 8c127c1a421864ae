"""The official Cityscapes label table (torchvision's copy of ``cityscapesscripts.helpers.labels``).

Ground truth ships as label ids (0..33, -1 for the licence plate); training uses the 19 train
ids (0..18) with 255 = ignore. Both mappings are look-up tables built from the table itself,
never an in-place remap in id order (which collapses classes into each other).
"""

from __future__ import annotations

import numpy as np
from torchvision.datasets import Cityscapes

__all__ = [
    "CLASSES", "IGNORE_INDEX", "NUM_CLASSES", "TRAIN_CLASS_NAMES", "TRAIN_PALETTE", "LABEL_ID_COLORS",
    "VALID_LABEL_IDS", "label_ids_to_train_ids", "train_ids_to_label_ids", "colorize_train_ids",
]

CLASSES = list(Cityscapes.classes)
"""Every Cityscapes class: ``name, id, train_id, category, category_id, has_instances, ignore_in_eval, color``."""

IGNORE_INDEX = 255
_TRAIN = sorted((c for c in CLASSES if 0 <= c.train_id < IGNORE_INDEX), key=lambda c: c.train_id)
NUM_CLASSES = len(_TRAIN)
assert [c.train_id for c in _TRAIN] == list(range(NUM_CLASSES)), "label table: train ids must be 0..18"

TRAIN_CLASS_NAMES: list[str] = [c.name for c in _TRAIN]
"""Names of train ids 0..18 (``road``, ``sidewalk``, ..., ``bicycle``)."""

TRAIN_PALETTE = np.array([c.color for c in _TRAIN], dtype=np.uint8)
"""``NUM_CLASSES x 3`` uint8 RGB colour of each train id (the official colours)."""

VALID_LABEL_IDS = np.array(sorted(c.id for c in CLASSES if c.id >= 0), dtype=np.int64)
"""Label ids that may appear in a ``*_gtFine_labelIds.png`` (0..33)."""

LABEL_ID_COLORS = np.zeros((int(VALID_LABEL_IDS.max()) + 1, 3), dtype=np.uint8)
"""``34 x 3`` uint8 RGB colour of each label id (as in ``*_gtFine_color.png``)."""
for _c in CLASSES:
    if _c.id >= 0:
        LABEL_ID_COLORS[_c.id] = _c.color

_ID_TO_TRAIN = np.full(256, IGNORE_INDEX, dtype=np.uint8)
_KNOWN_ID = np.zeros(256, dtype=bool)
for _c in CLASSES:
    if _c.id >= 0:
        _KNOWN_ID[_c.id] = True
        _ID_TO_TRAIN[_c.id] = _c.train_id if 0 <= _c.train_id < IGNORE_INDEX else IGNORE_INDEX

_TRAIN_TO_ID = np.zeros(256, dtype=np.uint8)  # ignore -> 0 ('unlabeled')
_KNOWN_TRAIN = np.zeros(256, dtype=bool)
_KNOWN_TRAIN[IGNORE_INDEX] = True
for _c in _TRAIN:
    _TRAIN_TO_ID[_c.train_id] = _c.id
    _KNOWN_TRAIN[_c.train_id] = True


def _as_uint8_index(a: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "iub":
        raise ValueError(f"{what} must be an integer array, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() > 255):
        bad = np.unique(a[(a < 0) | (a > 255)])[:10].tolist()
        raise ValueError(f"{what} holds values outside 0..255: {bad}")
    return a.astype(np.intp, copy=False)


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map Cityscapes label ids (0..33) to train ids (0..18, 255 = ignore).

    Args:
        label_ids: Integer array of label ids, any shape (e.g. a ``*_gtFine_labelIds.png``).

    Returns:
        uint8 array of the same shape.

    Raises:
        ValueError: an id that is not in the official table (e.g. 34, or a colour image).
    """
    idx = _as_uint8_index(label_ids, "label ids")
    unknown = ~_KNOWN_ID[idx]
    if unknown.any():
        bad = np.unique(np.asarray(label_ids)[unknown])[:10].tolist()
        raise ValueError(
            f"label ids {bad} are not in the Cityscapes label table (valid: 0..{int(VALID_LABEL_IDS.max())}); "
            f"is this a *_gtFine_labelIds.png (not *_color.png or *_instanceIds.png)?"
        )
    return _ID_TO_TRAIN[idx]


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
    """Map train ids (0..18, 255 = ignore) back to label ids (ignore -> 0, 'unlabeled').

    This is the form the official evaluation scripts (``cityscapesscripts``) read.

    Raises:
        ValueError: a value that is neither a train id nor 255.
    """
    idx = _as_uint8_index(train_ids, "train ids")
    unknown = ~_KNOWN_TRAIN[idx]
    if unknown.any():
        bad = np.unique(np.asarray(train_ids)[unknown])[:10].tolist()
        raise ValueError(f"train ids {bad} are outside 0..{NUM_CLASSES - 1} and are not the ignore label {IGNORE_INDEX}")
    return _TRAIN_TO_ID[idx]


def colorize_train_ids(train_ids: np.ndarray) -> np.ndarray:
    """``H x W`` train ids -> ``H x W x 3`` uint8 RGB in the official colours (ignore = black)."""
    idx = _as_uint8_index(train_ids, "train ids")
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[:NUM_CLASSES] = TRAIN_PALETTE
    return lut[idx]
