"""Draw one random street scene: the per-frame random streams, then the layout, ground, both
sides, far end, furniture, cars and people, the sky, the sun and its ground shadows."""

from __future__ import annotations

import math
import zlib

import cv2
import numpy as np

from mtdense.data.synthetic.camera import CameraPose
from mtdense.data.synthetic.scene import Scene, _Builder
from mtdense.data.synthetic.street import _add_far_end, _add_ground, _add_side, _add_street_furniture, _street_layout
from mtdense.data.synthetic.textures import _rgb
from mtdense.data.synthetic.traffic import _add_cars, _add_people

__all__ = ["frame_rng", "sample_scene"]


def frame_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The random generator of one frame's ``stream`` (0: scene, 1: left camera, 2: right camera).

    Independent of the number of frames, workers and order of generation.
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(split.encode()), int(index), int(stream)]))


def _sky_params(rng: np.random.Generator, overcast: bool) -> dict:
    if overcast:
        g = rng.uniform(0.62, 0.85)
        zenith = _rgb((g * 0.9, g * 0.93, g)) * np.float32(rng.uniform(0.85, 1.0))
        horizon = _rgb((g, g, g * 1.02))
    else:
        zenith = _rgb((rng.uniform(0.15, 0.35), rng.uniform(0.35, 0.55), rng.uniform(0.7, 0.9)))
        horizon = _rgb((rng.uniform(0.65, 0.8), rng.uniform(0.75, 0.85), rng.uniform(0.85, 0.95)))
    return {"zenith": zenith, "horizon": np.clip(horizon, 0, 1), "clouds": float(rng.uniform(0.0, 0.8)),
            "cloud_color": _rgb((0.93, 0.93, 0.95)) * np.float32(rng.uniform(0.8, 1.0)), "k": int(rng.integers(1 << 16))}


def _shadow_map(b: _Builder, sun: np.ndarray, res: float = 0.1) -> dict:
    """Ground shadows as a raster over the street: 1 = sun blocked, 2 = also no sky (contact)."""
    x0, x1, z0, z1 = -40.0, 40.0, -10.0, 210.0
    shape = (int((z1 - z0) / res), int((x1 - x0) / res))
    smap = np.zeros(shape, np.float32)
    offset = -sun[[0, 2]] / max(sun[1], 0.15)  # ground shift per metre of height, away from the sun

    def to_px(pts: np.ndarray) -> np.ndarray:
        return np.round(np.stack([(pts[:, 0] - x0) / res, (pts[:, 1] - z0) / res], axis=1) * 16).astype(np.int32)

    for (lo, hi), dark in sorted(b.casters, key=lambda c: c[1]):  # darker shadows drawn last win
        foot = np.array([[lo[0], lo[2]], [hi[0], lo[2]], [hi[0], hi[2]], [lo[0], hi[2]]])
        pts = np.concatenate([foot + offset * lo[1], foot + offset * hi[1]])
        hull = cv2.convexHull(to_px(pts).reshape(-1, 1, 2))
        cv2.fillConvexPoly(smap, hull, float(dark), lineType=cv2.LINE_AA, shift=4)
    for x_lo, x_hi, z_lo, z_hi in b.contact:
        pts = np.array([[x_lo, z_lo], [x_hi, z_lo], [x_hi, z_hi], [x_lo, z_hi]])
        cv2.fillConvexPoly(smap, to_px(pts).reshape(-1, 1, 2), 2.0, lineType=cv2.LINE_AA, shift=4)
    return {"map": smap, "x0": x0, "z0": z0, "res": res}


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw one random street scene (geometry, materials, light) from ``rng``.

    The scene is in metres and does not depend on the image size.
    """
    b = _Builder(rng)
    # one car, one camera mount: height and pitch vary little (as in Cityscapes), so the road
    # plane fixes the depth of everything that stands on it
    pose = CameraPose(height=rng.uniform(1.18, 1.26), pitch=rng.uniform(0.035, 0.045), yaw=float(np.clip(rng.normal(0, 0.02), -0.04, 0.04)))
    overcast = rng.random() < 0.35
    elev, azim = rng.uniform(0.3, 1.1), rng.uniform(0, 2 * math.pi)
    sun = np.array([math.cos(elev) * math.sin(azim), math.sin(elev), math.cos(elev) * math.cos(azim)])
    sky = _sky_params(rng, overcast)
    L = _street_layout(b)
    _add_ground(b, L)
    for side in (-1, 1):
        _add_side(b, L, side)
    _add_far_end(b, L)
    _add_street_furniture(b, L)
    _add_cars(b, L, sky["horizon"])
    _add_people(b, L)
    sun_strength = rng.uniform(0.1, 0.2) if overcast else rng.uniform(0.55, 0.85)
    ambient = rng.uniform(0.75, 0.95) if overcast else rng.uniform(0.4, 0.55)
    exposure = _rgb(rng.uniform(0.9, 1.1) * rng.uniform(0.95, 1.05, 3))
    if overcast:  # no cast shadows under a cloudy sky, only the dark contact under cars and people
        b.casters = []
    return Scene(
        pose=pose, quads=b.quads, sun=sun, sun_strength=float(sun_strength), ambient=float(ambient), sky=sky,
        haze_m=float(rng.uniform(250, 900)), exposure=exposure, noise=float(rng.uniform(0.8, 2.2)),
        shadow=_shadow_map(b, sun), num_objects=b.objects,
    )
