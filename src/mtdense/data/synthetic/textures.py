"""Procedural textures: value noise and box-filtered patterns, band-limited by the footprint.

Every pattern is a function of surface coordinates in metres and of ``fp``, the footprint of a
pixel on the surface in metres: a detail smaller than about two pixels fades to its mean, so
the renderer needs no supersampling and both cameras see the same texture.
"""

from __future__ import annotations

import numpy as np


_LATTICE = np.random.default_rng(20240611).random((16, 64, 64), dtype=np.float32) - np.float32(0.5)


def _noise(u: np.ndarray, v: np.ndarray, wavelength: float, k: int) -> np.ndarray:
    """Smooth value noise in [-0.5, 0.5] with cells of ``wavelength`` metres (lattice ``k``)."""
    x = u * np.float32(1.0 / wavelength)
    y = v * np.float32(1.0 / wavelength)
    xf, yf = np.floor(x), np.floor(y)
    fx, fy = x - xf, y - yf
    xi, yi = xf.astype(np.int64) & 63, yf.astype(np.int64) & 63
    x1, y1 = (xi + 1) & 63, (yi + 1) & 63
    lat = _LATTICE[k & 15]
    sx = fx * fx * (3 - 2 * fx)
    sy = fy * fy * (3 - 2 * fy)
    a, b, c, d = lat[yi, xi], lat[yi, x1], lat[y1, xi], lat[y1, x1]
    top = a + (b - a) * sx
    return top + (c + (d - c) * sx - top) * sy


def _cell(u: np.ndarray, v: np.ndarray, su: float, sv: float, k: int) -> np.ndarray:
    """One random value in [-0.5, 0.5] per ``su x sv`` cell (tiles, windows)."""
    return _LATTICE[k & 15][np.floor(v / sv).astype(np.int64) & 63, np.floor(u / su).astype(np.int64) & 63]


def _fade(wavelength: float, fp: np.ndarray) -> np.ndarray:
    """Weight of a detail of ``wavelength`` metres: 1 above 3 pixels, 0 under 1.5 (no aliasing)."""
    return np.clip(wavelength / fp * np.float32(1 / 1.5) - 1, 0, 1)


def _fbm(u: np.ndarray, v: np.ndarray, fp: np.ndarray, octaves: tuple[tuple[float, float], ...], k: int) -> np.ndarray:
    """Sum of noise octaves ``(wavelength, amplitude)``, each faded out where it would alias."""
    out = np.zeros(u.shape, np.float32)
    fp_min = float(fp.min()) if fp.size else 1.0
    for i, (wl, amp) in enumerate(octaves):
        if wl < 1.5 * fp_min:
            continue
        out += np.float32(amp) * _fade(wl, fp) * _noise(u, v, wl, k + 3 * i)
    return out


def _box(x: np.ndarray, a: float, b: float, fp: np.ndarray) -> np.ndarray:
    """Share of a pixel of footprint ``fp`` (centred at ``x``) that lies in ``[a, b]``."""
    half = fp * np.float32(0.5)
    return np.clip((np.minimum(x + half, b) - np.maximum(x - half, a)) / fp, 0, 1)


def _grid(x: np.ndarray, period: float, a: float, b: float, fp: np.ndarray) -> np.ndarray:
    """``_box`` repeated every ``period``; tends to the mean coverage where the period is under 4 px."""
    cov = _box(np.mod(x, period), a, b, fp)
    mean = np.float32((b - a) / period)
    w = np.clip(period / fp * np.float32(0.5) - 1, 0, 1)
    return mean + (cov - mean) * w


def _mix(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-pixel blend of colours (``a``, ``b``: 3-vectors or n x 3; ``t``: n weights)."""
    return a + (b - a) * t[:, None]


def _rgb(x) -> np.ndarray:
    return np.asarray(x, np.float32)
