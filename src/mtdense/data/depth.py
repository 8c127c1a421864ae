"""Depth from stereo: the Cityscapes disparity encoding, disparity <-> depth, the network's
depth target encoding, and the cleaning of the shipped SGBM disparity.

- Cityscapes disparity PNG (uint16): ``p > 0 -> d = (p - 1) / 256`` px, ``p = 0`` invalid.
- Depth [m] = ``baseline * fx / d`` with the calibration of *this* image (``camera/*.json``).
- Network target: ``y = log(clip(depth_m, ., 250)) / 5``; predictions map back with ``exp(5 y)``.

Functions that take depth work on torch tensors and numpy arrays alike.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch

__all__ = [
    "MAX_DEPTH_M", "MIN_DEPTH_M", "DEPTH_SCALE",
    "encode_depth", "decode_depth", "valid_depth_mask", "depth_to_png16",
    "encode_cityscapes_disparity", "decode_cityscapes_disparity",
    "disparity_to_depth", "depth_to_disparity", "clean_disparity",
]

MAX_DEPTH_M = 250.0
"""Far stereo depth is unreliable: targets are clipped here."""
MIN_DEPTH_M = 1e-3
"""Lower clip before the logarithm (valid Cityscapes depths are metres, far above this)."""
DEPTH_SCALE = 5.0
"""``y = log(depth_m) / DEPTH_SCALE``."""


def _lib(x):
    return torch if isinstance(x, torch.Tensor) else np


def valid_depth_mask(depth_m):
    """Pixels with a usable depth: finite and > 0 (0 marks 'no disparity')."""
    lib = _lib(depth_m)
    return lib.isfinite(depth_m) & (depth_m > 0)


def encode_depth(depth_m):
    """Metres -> the depth head's target ``log(clip(depth_m, MIN, 250)) / 5``.

    Encode valid depths only (see :func:`valid_depth_mask`); 0 has no logarithm.
    """
    if isinstance(depth_m, torch.Tensor):
        return torch.log(depth_m.clamp(MIN_DEPTH_M, MAX_DEPTH_M)) / DEPTH_SCALE
    return (np.log(np.clip(np.asarray(depth_m, dtype=np.float64), MIN_DEPTH_M, MAX_DEPTH_M)) / DEPTH_SCALE).astype(np.float32)


def decode_depth(y):
    """The depth head's output -> metres: ``exp(5 y)`` (float32, or float64 for a float64 array)."""
    if isinstance(y, torch.Tensor):
        return torch.exp(DEPTH_SCALE * y)
    y = np.asarray(y)
    return np.exp(DEPTH_SCALE * y.astype(np.float64 if y.dtype == np.float64 else np.float32, copy=False))


def depth_to_png16(depth_m: np.ndarray) -> np.ndarray:
    """Encode depth in metres as mtdense's 16-bit depth PNG: ``round(depth_m * 256)``, 0 = invalid.

    Args:
        depth_m: H x W depth in metres (0 or non-finite = invalid).

    Returns:
        H x W uint16; depths beyond 255.99 m saturate at 65535.
    """
    d = np.nan_to_num(np.asarray(depth_m, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(np.rint(d * 256.0), 0, 65535).astype(np.uint16)


def encode_cityscapes_disparity(disparity_px: np.ndarray) -> np.ndarray:
    """Disparity in pixels -> the Cityscapes uint16 PNG encoding ``p = round(256 d + 1)``.

    Non-finite or non-positive disparities become 0 (invalid); values beyond the range of the
    encoding (d > 255.99 px) saturate at 65535.
    """
    d = np.asarray(disparity_px, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    p = np.zeros(d.shape, dtype=np.uint16)
    p[valid] = np.clip(np.rint(d[valid] * 256.0 + 1.0), 1, 65535).astype(np.uint16)
    return p


def decode_cityscapes_disparity(png: np.ndarray) -> np.ndarray:
    """The Cityscapes uint16 disparity PNG -> float32 disparity in pixels (0 = invalid)."""
    p = np.asarray(png)
    if p.dtype != np.uint16:
        raise ValueError(f"Cityscapes disparity must be a uint16 image, got dtype {p.dtype} (was it saved as 8 bit?)")
    return np.where(p > 0, (p.astype(np.float32) - 1.0) / 256.0, np.float32(0.0)).astype(np.float32)


def _check_calibration(baseline: float, fx: float) -> None:
    if not (math.isfinite(baseline) and baseline > 0 and math.isfinite(fx) and fx > 0):
        raise ValueError(f"calibration must have a baseline > 0 m and fx > 0 px, got baseline={baseline}, fx={fx}")


def disparity_to_depth(disparity_px: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Disparity [px] -> depth [m] ``= baseline * fx / d``; 0 where the disparity is invalid."""
    _check_calibration(baseline, fx)
    d = np.asarray(disparity_px, dtype=np.float32)
    valid = np.isfinite(d) & (d > 0)
    out = np.zeros(d.shape, dtype=np.float32)
    out[valid] = np.float32(baseline * fx) / d[valid]
    return out


def depth_to_disparity(depth_m: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Depth [m] -> disparity [px] ``= baseline * fx / depth``; 0 where the depth is invalid."""
    _check_calibration(baseline, fx)
    z = np.asarray(depth_m, dtype=np.float32)
    valid = np.isfinite(z) & (z > 0)
    out = np.zeros(z.shape, dtype=np.float32)
    out[valid] = np.float32(baseline * fx) / z[valid]
    return out


def clean_disparity(
    disparity_px: np.ndarray,
    bottom: float = 0.2,
    left: float = 0.05,
    top: float = 0.05,
    median: int = 5,
    inpaint_radius: int = 5,
) -> np.ndarray:
    """Clean a shipped (SGBM) disparity map the way the recipe describes.

    Steps: crop the noisy borders (``bottom`` of the height where the ego vehicle is, strips of
    ``left`` of the width and ``top`` of the height), resize back to the original size
    (nearest), median-filter, then fill the holes with OpenCV's Telea inpainting.

    The crop + resize shifts the map against the image; prefer a stereo teacher
    (:mod:`mtdense.data.teachers`) or ``crop_bottom`` in the dataset where alignment matters.

    Args:
        disparity_px: H x W float disparity in pixels, 0 = invalid.
        bottom, left, top: Fractions of the size to crop away (each in ``[0, 0.5)``).
        median: Median filter aperture (odd, 3 or 5 for float maps; 0 or 1 = none).
        inpaint_radius: Telea radius in pixels.

    Returns:
        H x W float32 disparity in pixels, dense (0 only where nothing valid was near).
    """
    d = np.asarray(disparity_px, dtype=np.float32)
    if d.ndim != 2:
        raise ValueError(f"clean_disparity expects an H x W map, got shape {d.shape}")
    for name, v in (("bottom", bottom), ("left", left), ("top", top)):
        if not 0 <= v < 0.5:
            raise ValueError(f"clean_disparity: {name} must be in [0, 0.5), got {v}")
    if median not in (0, 1, 3, 5):
        raise ValueError(f"clean_disparity: median must be 0, 1, 3 or 5 for float maps, got {median}")
    h, w = d.shape
    d = np.where(np.isfinite(d) & (d > 0), d, 0).astype(np.float32)
    y0, y1, x0 = int(round(top * h)), h - int(round(bottom * h)), int(round(left * w))
    crop = d[y0:y1, x0:]
    if crop.size == 0:
        raise ValueError(f"clean_disparity: nothing left of a {h} x {w} map after the crop")
    out = cv2.resize(crop, (w, h), interpolation=cv2.INTER_NEAREST)
    if median > 1:
        out = cv2.medianBlur(out, median)
    holes = (out <= 0).astype(np.uint8)
    if holes.any() and not holes.all():
        scale = float(out.max())
        # Telea works on 8-bit or 32-bit float single-channel images; keep the float precision.
        out = cv2.inpaint(out, holes, inpaint_radius, cv2.INPAINT_TELEA)
        out = np.clip(out, 0, scale)
    return out.astype(np.float32)
