"""Surface normals: the 8-bit PNG encoding every format and the synthetic city share.

A normal is a unit vector in camera coordinates (x right, y down, z forward along the optical
axis; a surface facing the camera has z < 0). On disk it is an 8-bit RGB PNG::

    rgb = round((n + 1) * 127.5)        n = rgb / 127.5 - 1        (0, 0, 0) = no normal

No unit vector encodes to ``(0, 0, 0)`` (that would need every component near -1), so black is
free to mean "no label". The quantisation moves a direction by at most about 0.4 degrees.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mtdense.data.image import read_image

__all__ = ["NORMAL_LENGTH_RANGE", "encode_normals", "decode_normals", "read_normals_png"]

NORMAL_LENGTH_RANGE = (0.5, 1.5)
"""Decoded lengths a PNG pixel may have: an encoded unit vector has length 1 +- 0.01; a resize may shorten it."""


def encode_normals(normals: np.ndarray) -> np.ndarray:
    """``H x W x 3`` unit normals (all zero or non-finite = none) -> ``H x W x 3`` uint8 RGB.

    Raises:
        ValueError: Not ``H x W x 3``.
    """
    n = np.asarray(normals, dtype=np.float64)
    if n.ndim != 3 or n.shape[2] != 3:
        raise ValueError(f"normals must be H x W x 3, got shape {n.shape}")
    finite = np.isfinite(n).all(axis=2)
    valid = finite & (np.abs(np.where(finite[..., None], n, 0)).sum(axis=2) > 0)
    rgb = np.rint((np.clip(np.where(valid[..., None], n, 0), -1, 1) + 1) * 127.5).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def decode_normals(rgb: np.ndarray, source: str | Path = "normals") -> np.ndarray:
    """``H x W x 3`` uint8 RGB -> ``H x W x 3`` float32 unit vectors (renormalised); ``(0, 0, 0)``
    becomes all zero (no normal).

    Raises:
        ValueError: Pixels that encode no unit vector (length outside 0.5..1.5, e.g. a grey
            ``(128, 128, 128)`` meant as "no normal"); the message names ``source``.
    """
    rgb = np.asarray(rgb)
    n = rgb.astype(np.float64) / 127.5 - 1.0
    valid = rgb.any(axis=2)
    length = np.linalg.norm(n, axis=2)
    bad = valid & ((length < NORMAL_LENGTH_RANGE[0]) | (length > NORMAL_LENGTH_RANGE[1]))
    if bad.any():
        r, c = (int(v[0]) for v in np.nonzero(bad))
        raise ValueError(f"{source}: {int(bad.sum())} pixels encode no unit vector (e.g. rgb {tuple(rgb[r, c].tolist())} "
                         f"at row {r}, column {c}); encode n as round((n + 1) * 127.5) and invalid pixels as (0, 0, 0)")
    out = np.zeros(n.shape, dtype=np.float32)
    out[valid] = (n[valid] / length[valid, None]).astype(np.float32)
    return out


def read_normals_png(path: str | Path) -> np.ndarray:
    """Read a normals PNG as ``H x W x 3`` float32 unit vectors (``rgb / 127.5 - 1``, renormalised;
    ``(0, 0, 0)`` -> all-zero = invalid).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not a decodable 8-bit RGB image, or pixels that encode no unit vector (length
            outside 0.5..1.5, e.g. a grey ``(128, 128, 128)`` meant as invalid); the message
            names the file.
    """
    return decode_normals(read_image(path, colour_only=True), path)
