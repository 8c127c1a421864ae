"""Relative depth to metres: a robust fit of scale and shift in inverse depth.

A relative (affine-invariant) depth network, such as Depth Anything V2 or MiDaS, predicts inverse
depth up to an unknown scale ``s`` and shift ``t`` per image: ``1 / depth_m = s * x + t``. Where
the frame has some metric points (LiDAR or depth-camera depth, or a stereo teacher's output),
``s`` and ``t`` are fitted against them (:func:`fit_inverse_depth`) and the whole map follows.

The fit minimises the residual in inverse depth, ``r = s x + t - y`` (``y = 1 / depth_m`` of an
anchor), as MiDaS and Depth Anything align their maps, robustly, since anchors have outliers
(LiDAR points seen through glass, on edges the camera sees differently, stereo mismatches):

1. a least-absolute-deviation start (iteratively reweighted least squares, weights ``1 / |r|``),
   which tolerates a large share of gross outliers whatever the start;
2. trimmed least squares: the points within ``3 sigma`` (``sigma = 1.4826 * median |r|``, the
   MAD) are refitted by least squares until the set no longer changes.

(A residual relative to ``y`` is no better: it is bounded by -1 below but not above, so with
many far-off anchors the fit collapses towards ``s = 0``.)

:func:`residual` is the figure the teachers report: the median relative depth error of the
aligned map at the anchors, ``median |d - d_anchor| / d_anchor``, outliers included.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AffineFit", "fit_inverse_depth", "residual", "to_inverse", "inverse_to_depth", "MAX_POINTS"]

MAX_POINTS = 50_000
"""Anchor points one fit uses at most (an evenly spread random subset beyond; seeded, so repeatable)."""

_EPS = 1e-6


@dataclass(frozen=True)
class AffineFit:
    """``1 / depth_m = scale * x + shift``.

    Attributes:
        scale, shift: The fit.
        points: Anchor points it used.
        inliers: Of those, the ones the trimmed fit kept.
    """

    scale: float
    shift: float
    points: int
    inliers: int

    def inverse(self, x: np.ndarray) -> np.ndarray:
        """Aligned inverse depth, 1/m."""
        return (self.scale * np.asarray(x, np.float64) + self.shift).astype(np.float32)

    def depth(self, x: np.ndarray) -> np.ndarray:
        """Aligned depth in metres; 0 where the aligned inverse depth is not positive (beyond any distance)."""
        return inverse_to_depth(self.inverse(x))

    def as_dict(self) -> dict[str, float | int]:
        return {"scale": self.scale, "shift": self.shift, "points": self.points, "inliers": self.inliers}


def to_inverse(x: np.ndarray, output: str) -> np.ndarray:
    """A network's map as inverse-depth-like values: ``depth`` -> ``1 / x`` (0 where ``x <= 0``);
    ``inverse-depth`` and ``disparity`` as they are."""
    x = np.asarray(x, np.float32)
    if output == "depth":
        out = np.zeros_like(x)
        np.divide(1.0, x, out=out, where=x > 0)
        return out
    if output in ("inverse-depth", "disparity"):
        return x
    raise ValueError(f"output must be depth, inverse-depth or disparity, got {output!r}")


def inverse_to_depth(inv: np.ndarray) -> np.ndarray:
    """Inverse depth (1/m) -> metres; 0 where it is not positive or not finite."""
    inv = np.asarray(inv, np.float32)
    out = np.zeros_like(inv)
    np.divide(1.0, inv, out=out, where=np.isfinite(inv) & (inv > 0))
    return out


def _weighted_lsq(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Minimise ``sum w (s x + t - y)^2`` over ``s``, ``t``."""
    sw = np.sqrt(w)
    a = np.stack([x, np.ones_like(x)], axis=1) * sw[:, None]
    b = y * sw
    (s, t), *_ = np.linalg.lstsq(a, b, rcond=None)
    return float(s), float(t)


def fit_inverse_depth(x: np.ndarray, depth_m: np.ndarray, lad_iterations: int = 30, trim_iterations: int = 10,
                      seed: int = 0) -> AffineFit:
    """Fit ``1 / depth_m = s * x + t`` robustly (see the module docstring).

    Args:
        x: The network's inverse-depth-like values at the anchors (any shape; flattened).
        depth_m: The anchors' depth in metres, same shape (> 0 and finite).
        lad_iterations: Reweighting steps of the least-absolute-deviation start.
        trim_iterations: Most refits of the trimmed stage.
        seed: Seed of the subset drawn beyond :data:`MAX_POINTS`.

    Returns:
        The :class:`AffineFit`.

    Raises:
        ValueError: Fewer than 2 usable points, or values that do not vary (no scale to fit).
    """
    x = np.asarray(x, np.float64).ravel()
    d = np.asarray(depth_m, np.float64).ravel()
    if x.shape != d.shape:
        raise ValueError(f"fit_inverse_depth: {x.size} values against {d.size} anchors")
    ok = np.isfinite(x) & np.isfinite(d) & (d > 0)
    x, y = x[ok], 1.0 / d[ok]
    if x.size > MAX_POINTS:
        pick = np.sort(np.random.default_rng(seed).choice(x.size, MAX_POINTS, replace=False))
        x, y = x[pick], y[pick]
    if x.size < 2:
        raise ValueError(f"{x.size} anchor point{'s' * (x.size != 1)} with a depth; a scale and a shift need at least 2")
    spread = float(np.std(x))
    if not spread > _EPS * max(1.0, float(np.abs(x).max())):
        raise ValueError("the network's map is flat at the anchors (no variation to fit a scale to)")
    w = np.ones_like(x)
    s, t = _weighted_lsq(x, y, w)
    floor = 1e-6 * float(np.median(y))
    for _ in range(lad_iterations):
        r = np.abs(s * x + t - y)
        s_new, t_new = _weighted_lsq(x, y, 1.0 / np.maximum(r, floor))
        done = abs(s_new - s) <= 1e-9 * max(abs(s), _EPS) and abs(t_new - t) <= 1e-9 * max(abs(t), abs(s) * spread, _EPS)
        s, t = s_new, t_new
        if done:
            break
    inliers = np.ones(x.size, bool)
    for _ in range(trim_iterations):
        r = s * x + t - y
        sigma = 1.4826 * float(np.median(np.abs(r)))
        keep = np.abs(r) <= max(3.0 * sigma, floor)
        if keep.sum() < 2:
            break
        s, t = _weighted_lsq(x[keep], y[keep], np.ones(int(keep.sum())))
        if np.array_equal(keep, inliers):
            break
        inliers = keep
    return AffineFit(scale=s, shift=t, points=int(x.size), inliers=int(inliers.sum()))


def residual(depth_m: np.ndarray, anchors_m: np.ndarray) -> float:
    """Median relative depth error at the anchors, ``median |d - a| / a`` over the anchors ``a > 0``
    (a pixel without a depth, ``d <= 0``, counts as error 1). NaN where there are no anchors."""
    d = np.asarray(depth_m, np.float64).ravel()
    a = np.asarray(anchors_m, np.float64).ravel()
    ok = np.isfinite(a) & (a > 0)
    if not ok.any():
        return float("nan")
    d, a = d[ok], a[ok]
    err = np.where(d > 0, np.abs(d - a) / a, 1.0)
    return float(np.median(err))
