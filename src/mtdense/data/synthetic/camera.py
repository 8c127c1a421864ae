"""The stereo rig: Cityscapes calibration scaled to the image size, and the left camera's pose."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CITYSCAPES_BASELINE", "CITYSCAPES_INTRINSICS", "StereoCamera", "CameraPose"]


CITYSCAPES_BASELINE = 0.209313
"""Stereo baseline of the Cityscapes rig in metres."""
CITYSCAPES_INTRINSICS = {"fx": 2262.52, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137}
"""Intrinsics of the Cityscapes left camera at its native 2048 x 1024 pixels."""
_CITYSCAPES_SIZE = (1024, 2048)


@dataclass(frozen=True)
class StereoCamera:
    """Intrinsics and baseline of a rectified stereo rig (both cameras alike).

    Attributes:
        size: Image ``(H, W)`` in pixels.
        fx, fy: Focal lengths in pixels.
        u0, v0: Principal point in pixels (pixel centres at integer coordinates).
        baseline: Distance between the optical centres in metres (the right camera sits
            ``baseline`` to the right of the left one).
    """

    size: tuple[int, int]
    fx: float
    fy: float
    u0: float
    v0: float
    baseline: float = CITYSCAPES_BASELINE

    @classmethod
    def cityscapes(cls, size: tuple[int, int]) -> StereoCamera:
        """The Cityscapes rig with its intrinsics scaled from 2048 x 1024 to ``size = (H, W)``."""
        h, w = _check_size(size)
        sy, sx = h / _CITYSCAPES_SIZE[0], w / _CITYSCAPES_SIZE[1]
        k = CITYSCAPES_INTRINSICS
        return cls((h, w), k["fx"] * sx, k["fy"] * sy, k["u0"] * sx, k["v0"] * sy, CITYSCAPES_BASELINE)

    def resized(self, size: tuple[int, int]) -> StereoCamera:
        """The same rig seen at another image size (intrinsics scaled per axis)."""
        h, w = _check_size(size)
        sy, sx = h / self.size[0], w / self.size[1]
        return StereoCamera((h, w), self.fx * sx, self.fy * sy, self.u0 * sx, self.v0 * sy, self.baseline)

    def disparity(self, depth_m: np.ndarray) -> np.ndarray:
        """Depth along the optical axis [m] -> disparity [px] ``fx * baseline / depth`` (0 where depth is 0)."""
        d = np.zeros(depth_m.shape, np.float32)
        valid = depth_m > 0
        d[valid] = np.float32(self.fx * self.baseline) / depth_m[valid]
        return d


@dataclass(frozen=True)
class CameraPose:
    """Where the left camera is: height above the road, pitch (down positive) and yaw (left positive)."""

    height: float = 1.22
    pitch: float = 0.04
    yaw: float = 0.0

    def rotation(self) -> np.ndarray:
        """3 x 3 camera-to-world rotation; columns are the camera's right, down and forward axes.

        World axes: X right, Y up, Z forward along the street.
        """
        cp, sp, cy, sy = math.cos(self.pitch), math.sin(self.pitch), math.cos(self.yaw), math.sin(self.yaw)
        forward = np.array([-sy * cp, -sp, cy * cp])
        right = np.array([cy, 0.0, sy])
        down = np.cross(right, forward)
        return np.stack([right, down, forward], axis=1)


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or any(int(s) != s or s < 16 for s in size):
        raise ValueError(f"size must be (H, W) with integers >= 16, got {size}")
    return int(size[0]), int(size[1])
