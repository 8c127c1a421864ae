"""A synthetic stereo street city written in the Cityscapes layout, with exact ground truth.

Each frame is one random 3-D street (road with lane markings, raised sidewalks, terrain,
building rows with windows, walls, fences, hedges and trees, street lights, signs, traffic
lights, parked and moving cars, pedestrians, a closed far end at 60-200 m) rendered in
perspective by a left and a right camera of a rectified rig with the Cityscapes calibration
scaled to the image size. Both views come from the same scene and the textures are functions
of the 3-D surface coordinates, so the right view shows the left one's texture shifted by the
disparity ``fx * baseline / depth``: stereo matching on the pair recovers the disparity.

Rendering is a numpy ray caster over axis-aligned rectangles with a z-buffer: for every
rectangle the rays of its image bounding box are intersected with its plane, clipped to its
extent and shape mask and depth-tested (pass 1, which fills depth, rectangle index and surface
coordinates); then each visible pixel is shaded once from its surface coordinates (pass 2:
procedural textures band-limited by the pixel footprint, sun and sky light, ground shadows,
haze). Each camera adds its own mild sensor noise.

Written per frame (``{city}_{index:06d}_000019``), exactly as in the Cityscapes download:

- ``leftImg8bit/``, ``rightImg8bit/``: 8-bit RGB PNGs;
- ``gtFine/``: ``*_labelIds.png`` (label ids), ``*_color.png`` (RGBA, official colours),
  ``*_instanceIds.png`` (uint16, ``id * 1000 + k`` for cars and persons) and
  ``*_polygons.json`` (outer contours, drawn in order they rebuild the label map);
- ``disparity/``: uint16, ``p = round(256 d + 1)``, 0 where there is no disparity (sky);
- ``camera/``: ``extrinsic.baseline`` (0.209313 m) and ``intrinsic.fx, fy, u0, v0`` scaled
  from the Cityscapes values to the image size.

``mtdense_synthetic.json`` at the root records the settings and is written last, so its
presence means the city is complete. The same seed gives the same bytes.

Example::

    from mtdense.data.synthetic import generate_city, save_preview
    city = generate_city("data/synth", n_train=500, n_val=100, size=(256, 512), seed=0)
    print(city.frames, city.class_frequencies())
    save_preview(city.root, "data/synth/preview.png", n=4)
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from mtdense.data.depth import encode_cityscapes_disparity
from mtdense.data.labels import CLASSES, LABEL_ID_COLORS, TRAIN_CLASS_NAMES

__all__ = [
    "CITYSCAPES_BASELINE", "CITYSCAPES_INTRINSICS", "CITIES", "StereoCamera", "CameraPose", "Quad", "Scene",
    "View", "Frame", "SyntheticCity", "frame_rng", "frame_name", "sample_scene", "render_view", "render_frame",
    "write_frame", "generate_city", "save_preview", "city_settings", "is_generated_city",
]

CITYSCAPES_BASELINE = 0.209313
"""Stereo baseline of the Cityscapes rig in metres."""
CITYSCAPES_INTRINSICS = {"fx": 2262.52, "fy": 2265.3017905988554, "u0": 1096.98, "v0": 513.137}
"""Intrinsics of the Cityscapes left camera at its native 2048 x 1024 pixels."""
_CITYSCAPES_SIZE = (1024, 2048)

CITIES = {
    "train": ("ashford", "brookvale", "carrick", "dunmore"),
    "val": ("westfield",),
    "test": ("kingsbury",),
}
"""Made-up city names per split (frame ``i`` of a split lives in ``cities[i % len(cities)]``)."""

_META_FILE = "mtdense_synthetic.json"
_PARTIAL_FILE = ".mtdense_synthetic_partial"
_GENERATED = ("leftImg8bit", "rightImg8bit", "gtFine", "disparity", "camera")
_FORMAT_VERSION = 1
_NEAR = 0.3  # metres: nothing nearer the camera is drawn
_MIN_DISPARITY = 1.0 / 256.0  # px: the smallest step of the Cityscapes encoding

_ID = {c.name: c.id for c in CLASSES if c.id >= 0}
_NAME = {c.id: c.name for c in CLASSES if c.id >= 0}
_HAS_INSTANCES = {c.id for c in CLASSES if c.id >= 0 and c.has_instances}
ROAD, SIDEWALK, BUILDING, WALL, FENCE = _ID["road"], _ID["sidewalk"], _ID["building"], _ID["wall"], _ID["fence"]
POLE, LIGHT, SIGN, VEGETATION, TERRAIN = _ID["pole"], _ID["traffic light"], _ID["traffic sign"], _ID["vegetation"], _ID["terrain"]
SKY, PERSON, CAR = _ID["sky"], _ID["person"], _ID["car"]


# --------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Procedural textures: value noise and box-filtered patterns, band-limited by the footprint
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------------

_U_AXIS = (2, 0, 0)  # in-plane axes of an X-, Y- and Z-plane
_V_AXIS = (1, 2, 1)


class Quad:
    """An axis-aligned rectangle of the scene, with its label, material and an optional shape.

    The plane is ``world[axis] == c``; the rectangle spans ``u0..u1`` along the world axis
    ``_U_AXIS[axis]`` and ``v0..v1`` along ``_V_AXIS[axis]`` (X-plane: u = Z, v = Y; Y-plane:
    u = X, v = Z; Z-plane: u = X, v = Y). ``facing`` is the sign of the outward normal along
    ``axis`` (0: seen from both sides). ``mask`` names a shape cut out of the rectangle
    (person silhouette, sign outline, tree crown...).
    """

    __slots__ = ("axis", "c", "u0", "u1", "v0", "v1", "facing", "label", "obj", "mat", "p", "mask", "ground")

    def __init__(self, axis: int, c: float, u0: float, u1: float, v0: float, v1: float, facing: int, label: int,
                 mat: str, p: dict | None = None, obj: int = 0, mask: str | None = None, ground: bool = False):
        self.axis, self.c = axis, float(c)
        self.u0, self.u1 = float(min(u0, u1)), float(max(u0, u1))
        self.v0, self.v1 = float(min(v0, v1)), float(max(v0, v1))
        self.facing, self.label, self.obj = facing, label, obj
        self.mat, self.p, self.mask, self.ground = mat, p or {}, mask, ground

    def corners(self) -> np.ndarray:
        """4 x 3 world corners."""
        out = np.zeros((4, 3))
        out[:, self.axis] = self.c
        out[:, _U_AXIS[self.axis]] = [self.u0, self.u1, self.u1, self.u0]
        out[:, _V_AXIS[self.axis]] = [self.v0, self.v0, self.v1, self.v1]
        return out


@dataclass
class Scene:
    """One random street: geometry, materials, lighting and camera pose (size-independent).

    Attributes:
        pose: The left camera's pose.
        quads: Every rectangle of the scene.
        sun: Unit vector towards the sun (world, Y up).
        sun_strength, ambient: Direct and ambient light.
        sky: Sky parameters (``zenith``, ``horizon`` colours, ``clouds`` amount, ``cloud_color``).
        haze_m: Distance in metres over which the air veils a surface by 1/e.
        exposure: Per-channel gain (white balance and exposure), shared by both cameras.
        noise: Sensor noise standard deviation in 8-bit levels.
        shadow: Ground shadow map (``map``, ``x0``, ``z0``, ``res``) or None (overcast).
    """

    pose: CameraPose
    quads: list[Quad]
    sun: np.ndarray
    sun_strength: float
    ambient: float
    sky: dict
    haze_m: float
    exposure: np.ndarray
    noise: float
    shadow: dict | None = None
    num_objects: int = 0


# --------------------------------------------------------------------------------------------
# Materials: (quad, s, r, u, v, fp) -> n x 3 colour in [0, 1] before lighting
#   s, r: metres from the rectangle's corner (u0, v0); u, v: world in-plane coordinates;
#   fp: pixel footprint on the surface in metres.
# --------------------------------------------------------------------------------------------


def _m_asphalt(q: Quad, s, r, u, v, fp):
    p = q.p
    k = p["k"]
    g = 1 + _fbm(u, v, fp, ((0.05, 0.30), (0.3, 0.12), (4.0, 0.22)), k)
    col = p["base"] * g[:, None]
    paint = np.zeros(u.shape, np.float32)
    for xc, w, period, on in p["lines"]:
        cov = _box(u, xc - w / 2, xc + w / 2, fp)
        if period:
            cov = cov * _grid(v, period, 0.0, on, fp)
        paint = np.maximum(paint, cov)
    if p["zebra"] is not None:
        z0, z1 = p["zebra"]
        paint = np.maximum(paint, _box(v, z0, z1, fp) * _grid(u, 1.0, 0.0, 0.5, fp))
    if p["paint_wear"] < 1:  # worn paint
        paint = paint * np.clip(p["paint_wear"] + _noise(u, v, 0.4, k + 1), 0, 1)
    return _mix(col, p["paint"] * (1 + 0.1 * _noise(u, v, 0.1, k + 2))[:, None], np.clip(paint, 0, 1))


def _m_paving(q: Quad, s, r, u, v, fp):
    p = q.p
    k, ts = p["k"], p["tile"]
    joint = np.maximum(_grid(u, ts, 0.0, 0.015, fp), _grid(v, ts * p["aspect"], 0.0, 0.015, fp))
    tile = _cell(u, v, ts, ts * p["aspect"], k) * np.float32(p["tile_var"]) * _fade(ts, fp)
    g = (1 + tile + _fbm(u, v, fp, ((0.04, 0.18), (0.5, 0.08), (3.0, 0.12)), k + 5)) * (1 - 0.45 * joint)
    return p["base"] * g[:, None]


def _m_concrete(q: Quad, s, r, u, v, fp):
    p = q.p
    k = p["k"]
    g = 1 + _fbm(u, v, fp, ((0.04, 0.2), (0.3, 0.1), (1.5, 0.12)), k)
    if p.get("blocks"):
        bw, bh = p["blocks"]
        offset = np.where(np.floor(v / bh) % 2 == 0, 0, bw / 2).astype(np.float32)
        joint = np.maximum(_grid(v, bh, 0.0, 0.02, fp), _grid(u + offset, bw, 0.0, 0.02, fp))
        g = g * (1 - 0.45 * joint) * (1 + 0.5 * _cell(u + offset, v, bw, bh, k + 1) * _fade(bw, fp))
    # rain streaks below the top edge
    g = g * (1 - 0.12 * np.clip(_noise(u * 4, v * 0.3, 1.0, k + 2) + 0.2, 0, 1) * _fade(0.25, fp))
    col = p["base"] * g[:, None]
    if p.get("coping") is not None:  # the cap stone along the top of a wall
        col = _mix(col, p["coping"], _box(r, q.v1 - q.v0 - 0.12, q.v1 - q.v0, fp))
    return col


def _m_grass(q: Quad, s, r, u, v, fp):
    p = q.p
    k = p["k"]
    dry = np.clip(0.5 + 1.8 * _noise(u, v, 2.5, k), 0, 1)
    col = _mix(p["green"], p["dry"], dry)
    g = 1 + _fbm(u, v, fp, ((0.03, 0.5), (0.12, 0.35), (0.6, 0.2)), k + 1)
    return col * g[:, None]


def _m_facade(q: Quad, s, r, u, v, fp):
    p = q.p
    k = p["k"]
    top = q.v1
    g = 1 + _fbm(s, r, fp, ((0.05, 0.12), (0.5, 0.07), (3.0, 0.10)), k)
    if p["brick"]:
        row = np.floor(r / 0.075)
        offset = np.where(row % 2 == 0, 0.0, 0.11).astype(np.float32)
        mortar = np.maximum(_grid(r, 0.075, 0.0, 0.012, fp), _grid(s + offset, 0.22, 0.0, 0.012, fp))
        g = g * (1 - 0.25 * mortar) * (1 + 0.25 * _cell(s + offset, r, 0.22, 0.075, k + 1) * _fade(0.075, fp))
    else:
        g = g * (1 - 0.3 * _grid(r, p["floor"], 0.0, 0.08, fp) * p["bands"])
    g = g * (1 - 0.18 * np.clip(1 - r / 1.2, 0, 1))  # dirt near the ground
    col = p["base"] * g[:, None]
    # windows on the upper floors
    ws, fh, gf = p["spacing"], p["floor"], p["ground_floor"]
    mx, ww, my, wh = p["win_x"], p["win_w"], p["win_y"], p["win_h"]
    ss = s + p["offset"]
    rr = r - gf
    floors = _box(r, gf, top - p["roof"], fp)
    fw = 0.07
    outer = _grid(ss, ws, mx - fw, mx + ww + fw, fp) * _grid(rr, fh, my - fw, my + wh + fw, fp) * floors
    glass = _grid(ss, ws, mx, mx + ww, fp) * _grid(rr, fh, my, my + wh, fp) * floors
    lum = 1 + 1.4 * _cell(ss, rr, ws, fh, k + 2) + 0.35 * np.clip((rr % fh - my) / wh, 0, 1)
    glass_col = p["glass"] * lum[:, None]
    col = _mix(col, p["frame"], outer - glass)
    col = _mix(col, glass_col, glass)
    # the ground floor: shop windows and doors, or plain wall
    if p["shops"]:
        shop = _grid(ss, p["shop_w"], 0.5, p["shop_w"] - 0.5, fp) * _box(r, 0.45, gf - 0.55, fp)
        col = _mix(col, p["glass"] * (0.8 + 0.8 * _cell(ss, r, p["shop_w"], 10.0, k + 3))[:, None], shop)
        col = _mix(col, p["awning"], _box(r, gf - 0.5, gf - 0.1, fp) * p["has_awning"])
    else:
        door = _grid(ss, p["door_every"], 1.0, 2.1, fp) * _box(r, 0.0, 2.2, fp)
        col = _mix(col, p["door"], door)
    cornice = _box(r, top - 0.5, top, fp)
    return _mix(col, p["base"] * 0.6, cornice * p["cornice"])


def _m_fence(q: Quad, s, r, u, v, fp):
    p = q.p
    k = p["k"]
    h = q.v1 - q.v0
    if p["style"] == "bars":
        bars = _grid(s, p["period"], 0.0, p["bar"], fp)
        rails = np.maximum(_box(r, h - 0.07, h, fp), _box(r, 0.12, 0.18, fp))
        m = np.maximum(bars, rails)
        behind = p["behind"] * (1 + _fbm(u, v, fp, ((0.3, 0.4), (1.2, 0.3)), k))[:, None]
        return _mix(behind, p["base"], m)
    if p["style"] == "planks":
        gaps = _grid(s, 0.14, 0.0, 0.02, fp)
        grain = 1 + 0.3 * _noise(s * 6, r * 0.4, 1.0, k) * _fade(0.05, fp) + _fbm(s, r, fp, ((0.5, 0.12),), k + 1)
        return p["base"] * (grain * (1 - 0.6 * gaps))[:, None]
    # chain link: a fine diamond mesh on posts
    mesh = np.maximum(_grid(s + r, 0.07, 0.0, 0.012, fp), _grid(s - r, 0.07, 0.0, 0.012, fp))
    posts = _grid(s, 2.5, 0.0, 0.06, fp)
    behind = p["behind"] * (1 + _fbm(u, v, fp, ((0.3, 0.4), (1.2, 0.3)), k))[:, None]
    return _mix(_mix(behind, p["base"], mesh), p["base"] * 0.8, posts)


def _m_metal(q: Quad, s, r, u, v, fp):
    p = q.p
    x = s / max(q.u1 - q.u0, 1e-3)
    shade = 0.55 + 0.6 * np.sqrt(np.clip(np.sin(np.pi * np.clip(x, 0, 1)), 0, 1)) - 0.15 * x
    g = shade * (1 + _fbm(s, r, fp, ((0.2, 0.08), (1.0, 0.08)), p["k"]))
    return p["base"] * g[:, None]


def _m_sign(q: Quad, s, r, u, v, fp):
    p = q.p
    w, h = q.u1 - q.u0, q.v1 - q.v0
    x, y = (s - w / 2) / (w / 2), (r - h / 2) / (h / 2)
    fpn = fp / (w / 2)
    shape, scheme = q.mask, p["scheme"]
    rim, face, ink = p["rim"], p["face"], p["ink"]
    if shape == "circle":
        rr = np.sqrt(x * x + y * y)
        rim_m = np.clip((rr - 0.78) / fpn + 0.5, 0, 1)
        if scheme == "arrow":
            head = (y > 0.15) & (np.abs(x) < (0.65 - y) * 1.1)
            sym = np.maximum(_box(x, -0.13, 0.13, fpn) * _box(y, -0.6, 0.2, fpn), head.astype(np.float32))
        else:
            sym = _box(x, -0.45, 0.45, fpn) * _box(y, -0.14, 0.14, fpn) * (scheme == "bar")
            sym = np.maximum(sym, _box(x, -0.35, -0.05, fpn) * _box(y, -0.4, 0.4, fpn) * (scheme == "number"))
            sym = np.maximum(sym, _box(x, 0.08, 0.38, fpn) * _box(y, -0.4, 0.4, fpn) * (scheme == "number"))
        col = _mix(_mix(face, ink, sym), rim, rim_m)
    elif shape == "triangle":
        edge = np.minimum((1 - y) / 2 - np.abs(x) * 0.95, y + 1)
        rim_m = np.clip((0.22 - edge) / fpn + 0.5, 0, 1)
        sym = _box(x, -0.08, 0.08, fpn) * _box(y, -0.45, 0.3, fpn)
        col = _mix(_mix(face, ink, sym), rim, rim_m)
    elif shape == "diamond":
        edge = 1 - (np.abs(x) + np.abs(y))
        col = _mix(face, rim, np.clip((0.3 - edge) / fpn + 0.5, 0, 1))
    else:  # rectangle with text lines
        border = np.minimum(1 - np.abs(x), (1 - np.abs(y)) * h / w)
        text = _grid(y * h / 2, 0.16, 0.0, 0.08, fp) * _box(x, -0.75, 0.75, fpn) * _box(y, -0.7, 0.7, fpn)
        col = _mix(_mix(face, ink, text * 0.85), rim, np.clip((0.08 - border) / fpn + 0.5, 0, 1))
    return col * (1 + 0.05 * _noise(u, v, 0.1, p["k"]))[:, None]


def _m_light(q: Quad, s, r, u, v, fp):
    p = q.p
    w, h = q.u1 - q.u0, q.v1 - q.v0
    col = np.broadcast_to(p["base"], (s.size, 3)).copy()
    rad = 0.32 * w
    lamps = (h * 0.8, h * 0.5, h * 0.2)
    for i, cy in enumerate(lamps):
        d = np.sqrt((s - w / 2) ** 2 + (r - cy) ** 2)
        m = np.clip((rad - d) / fp + 0.5, 0, 1)
        lamp = p["lamp_colors"][i] if i == p["lit"] else _rgb((0.12, 0.12, 0.11))
        col = _mix(col, lamp, m)
    return col


def _m_foliage(q: Quad, s, r, u, v, fp):
    p = q.p
    k = p["k"]
    t = np.clip(0.5 + 1.7 * _fbm(u, v, fp, ((0.06, 0.55), (0.22, 0.35), (0.8, 0.25)), k), 0, 1)
    col = _mix(p["dark"], p["light"], t)
    h = max(q.v1 - q.v0, 1e-3)
    return col * (0.75 + 0.35 * np.clip(r / h, 0, 1))[:, None]


def _m_bark(q: Quad, s, r, u, v, fp):
    p = q.p
    x = s / max(q.u1 - q.u0, 1e-3)
    streaks = _noise(s * 10, r * 0.6, 1.0, p["k"]) * _fade(0.04, fp)
    g = (0.65 + 0.45 * np.sin(np.pi * np.clip(x, 0, 1))) * (1 + 0.5 * streaks)
    return p["base"] * g[:, None]


def _person_parts(q: Quad, s, r):
    h = q.p["h"]
    x, y = (s - (q.u1 - q.u0) / 2) / h, r / h
    return x, y


def _m_person(q: Quad, s, r, u, v, fp):
    p = q.p
    x, y = _person_parts(q, s, r)
    col = np.empty((s.size, 3), np.float32)
    legs, torso = y < 0.48, (y >= 0.48) & (y < 0.855)
    col[legs] = p["bottom"]
    col[torso] = p["top"]
    head = y >= 0.855
    col[head] = p["skin"]
    hair = head & ((y > 0.955) | ((y > 0.91) & (np.abs(x) > 0.04)) | p["back"])
    col[hair] = p["hair"]
    col[head & (y < 0.87)] = p["skin"] * 0.8
    hands = torso & (np.abs(x) > 0.105) & (y < 0.53)
    col[hands] = p["skin"]
    col[y < 0.035] = p["shoes"]
    if p["bag"] is not None:
        bag = (x > 0.1) & (x < 0.19) & (y > 0.42) & (y < 0.6)
        col[bag] = p["bag"]
    folds = 1 + 0.18 * _noise(s, r, 0.08, p["k"]) * _fade(0.08, fp) + 0.1 * _noise(s, r, 0.3, p["k"] + 1)
    side = 1 - 0.6 * np.clip(np.abs(x) - 0.05, 0, 0.2)
    return col * (folds * side)[:, None]


def _m_paint(q: Quad, s, r, u, v, fp):
    p = q.p
    k = p["k"]
    face = p["face"]
    w, h = q.u1 - q.u0, q.v1 - q.v0
    g = 1 + _fbm(u, v, fp, ((0.5, 0.04),), k) + 0.25 * np.clip(r / max(h, 1e-3), 0, 1)
    col = p["paint"] * g[:, None]
    dark = _rgb((0.06, 0.06, 0.07))
    if face in ("rear", "front"):
        col = _mix(col, dark * 1.5, _box(r, 0.0, 0.14, fp))  # bumper
        plate = _box(s, w / 2 - 0.26, w / 2 + 0.26, fp) * _box(r, 0.16, 0.28, fp)
        col = _mix(col, _rgb((0.85, 0.85, 0.82)), plate)
        lamp = (_box(s, 0.06, 0.34, fp) + _box(s, w - 0.34, w - 0.06, fp)) * _box(r, h - 0.32, h - 0.12, fp)
        lamp_col = _rgb((0.75, 0.05, 0.05)) if face == "rear" else _rgb((0.95, 0.95, 0.85))
        col = _mix(col, lamp_col, np.clip(lamp, 0, 1))
        if face == "front":
            col = _mix(col, dark, _box(s, 0.45, w - 0.45, fp) * _box(r, h - 0.32, h - 0.14, fp))
    elif face == "side":
        gaps = np.maximum(_box(s, p["door1"], p["door1"] + 0.025, fp), _box(s, p["door2"], p["door2"] + 0.025, fp))
        col = col * (1 - 0.6 * gaps)[:, None]
        for ax in p["axles"]:
            arch = np.clip((0.42 - np.sqrt((s - ax) ** 2 + (r + 0.25 - 0.33) ** 2)) / fp + 0.5, 0, 1)
            col = _mix(col, dark, arch)
        col = _mix(col, dark * 1.5, _box(r, 0.0, 0.1, fp))  # sill
    else:  # bonnet, boot and roof reflect the sky
        col = col * 0.75 + p["sky"] * 0.3
    return col


def _m_glass(q: Quad, s, r, u, v, fp):
    p = q.p
    w, h = q.u1 - q.u0, q.v1 - q.v0
    refl = 0.7 + 0.6 * np.clip(r / max(h, 1e-3), 0, 1) + 0.3 * _noise(u + s, r, 0.8, p["k"])
    col = p["glass"] * refl[:, None]
    pillar = np.maximum(_box(s, 0.0, 0.09, fp), _box(s, w - 0.09, w, fp))
    pillar = np.maximum(pillar, _box(r, h - 0.06, h, fp))
    if p["face"] == "side":
        pillar = np.maximum(pillar, _box(s, w * 0.5 - 0.06, w * 0.5 + 0.06, fp))
    return _mix(col, p["paint"], pillar)


def _m_tyre(q: Quad, s, r, u, v, fp):
    w, h = q.u1 - q.u0, q.v1 - q.v0
    d = np.sqrt((s - w / 2) ** 2 + (r - h / 2) ** 2) / (w / 2)
    rim = np.clip((0.6 - d) / (fp / (w / 2)) + 0.5, 0, 1) * (q.mask == "circle")
    return _mix(np.broadcast_to(_rgb((0.05, 0.05, 0.055)), (s.size, 3)), q.p["rim"], rim)


_MATERIALS: dict[str, Callable] = {
    "asphalt": _m_asphalt, "paving": _m_paving, "concrete": _m_concrete, "grass": _m_grass, "facade": _m_facade,
    "fence": _m_fence, "metal": _m_metal, "sign": _m_sign, "light": _m_light, "foliage": _m_foliage,
    "bark": _m_bark, "person": _m_person, "paint": _m_paint, "glass": _m_glass, "tyre": _m_tyre,
}


# --------------------------------------------------------------------------------------------
# Shape masks: (quad, s, r) -> bool, in metres from the rectangle's corner
# --------------------------------------------------------------------------------------------


def _k_person(q: Quad, s, r):
    x, y = _person_parts(q, s, r)
    p = q.p
    head = (x / 0.062) ** 2 + ((y - 0.925) / 0.072) ** 2 < 1
    neck = (np.abs(x) < 0.035) & (y > 0.82) & (y < 0.88)
    tw = p["torso_w"]
    torso = (y >= 0.47) & (y < 0.84) & (np.abs(x) < tw - np.maximum(0, y - 0.8) * 1.5)
    arms = np.zeros_like(torso)
    if p["arms"]:
        ax = np.abs(x - p["swing"] * (0.82 - y))
        arms = (ax > tw - 0.01) & (ax < tw + 0.045) & (y > 0.45) & (y < 0.83)
    legs = np.zeros_like(torso)
    for foot, hip in p["legs"]:
        cx = foot + (hip - foot) * np.clip(y / 0.49, 0, 1)
        legs |= (np.abs(x - cx) < 0.047) & (y < 0.5)
    bag = (x > 0.1) & (x < 0.19) & (y > 0.42) & (y < 0.6) & (p["bag"] is not None)
    return head | neck | torso | arms | legs | bag


def _k_circle(q: Quad, s, r):
    w, h = q.u1 - q.u0, q.v1 - q.v0
    return ((s - w / 2) / (w / 2)) ** 2 + ((r - h / 2) / (h / 2)) ** 2 < 1


def _k_triangle(q: Quad, s, r):
    w, h = q.u1 - q.u0, q.v1 - q.v0
    x, y = (s - w / 2) / (w / 2), (r - h / 2) / (h / 2)
    return np.abs(x) * 0.95 <= (1 - y) / 2


def _k_diamond(q: Quad, s, r):
    w, h = q.u1 - q.u0, q.v1 - q.v0
    return np.abs((s - w / 2) / (w / 2)) + np.abs((r - h / 2) / (h / 2)) <= 1


def _k_crown(q: Quad, s, r):
    w, h = q.u1 - q.u0, q.v1 - q.v0
    x, y = (s - w / 2) / (w / 2), (r - h / 2) / (h / 2)
    u = s + q.u0
    wobble = 0.45 * _noise(u, r, 0.9, q.p["k"] + 7) + 0.25 * _noise(u, r, 0.35, q.p["k"] + 8)
    return x * x + y * y < 0.8 + wobble


def _k_treeline(q: Quad, s, r):
    h = q.v1 - q.v0
    u = s + q.u0
    top = h * (0.7 + 0.6 * _noise(u, 0.0 * u, 4.0, q.p["k"] + 9) + 0.25 * _noise(u, 0.0 * u, 1.2, q.p["k"] + 10))
    return r < top


_MASKS: dict[str, Callable] = {
    "person": _k_person, "circle": _k_circle, "triangle": _k_triangle, "diamond": _k_diamond,
    "crown": _k_crown, "treeline": _k_treeline,
}


# --------------------------------------------------------------------------------------------
# Scene sampling
# --------------------------------------------------------------------------------------------

_FACADE_COLORS = _rgb([
    (0.78, 0.72, 0.60), (0.86, 0.82, 0.72), (0.62, 0.36, 0.28), (0.55, 0.53, 0.50), (0.80, 0.78, 0.74),
    (0.74, 0.60, 0.40), (0.60, 0.66, 0.68), (0.66, 0.70, 0.58), (0.50, 0.42, 0.36), (0.84, 0.70, 0.62),
])
_CAR_COLORS = _rgb([
    (0.85, 0.85, 0.84), (0.06, 0.06, 0.07), (0.55, 0.56, 0.58), (0.33, 0.34, 0.36), (0.10, 0.16, 0.36),
    (0.55, 0.08, 0.07), (0.20, 0.30, 0.20), (0.70, 0.66, 0.55), (0.75, 0.45, 0.10), (0.25, 0.40, 0.62),
])
_CAR_COLOR_P = np.array([0.2, 0.18, 0.18, 0.1, 0.07, 0.07, 0.04, 0.05, 0.04, 0.07])
_CLOTHES = _rgb([
    (0.08, 0.08, 0.09), (0.15, 0.18, 0.30), (0.45, 0.45, 0.47), (0.75, 0.74, 0.72), (0.55, 0.12, 0.10),
    (0.20, 0.35, 0.55), (0.50, 0.40, 0.28), (0.25, 0.32, 0.20), (0.80, 0.65, 0.20), (0.60, 0.30, 0.45),
])
_SKIN = _rgb([(0.92, 0.74, 0.62), (0.80, 0.60, 0.46), (0.62, 0.44, 0.32), (0.40, 0.27, 0.19)])
_HAIR = _rgb([(0.06, 0.05, 0.04), (0.25, 0.16, 0.09), (0.55, 0.42, 0.25), (0.6, 0.6, 0.6)])


class _Builder:
    """Collects the rectangles of one scene while it is sampled."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.quads: list[Quad] = []
        self.objects = 0
        self.casters: list[tuple[np.ndarray, float]] = []  # shadow casters: box corners, darkness
        self.contact: list[np.ndarray] = []  # footprints with contact shadow (x0, x1, z0, z1)

    def k(self) -> int:
        return int(self.rng.integers(0, 1 << 16))

    def new_object(self) -> int:
        self.objects += 1
        return self.objects

    def jitter(self, color, amount: float = 0.08) -> np.ndarray:
        c = _rgb(color) * np.float32(self.rng.uniform(1 - amount, 1 + amount))
        return np.clip(c * _rgb(self.rng.uniform(1 - amount / 2, 1 + amount / 2, 3)), 0, 1)

    def add(self, *args, **kwargs) -> Quad:
        q = Quad(*args, **kwargs)
        self.quads.append(q)
        return q

    def box(self, x0, x1, y0, y1, z0, z1, label, mats: dict, obj=0, faces="xyz") -> None:
        """A closed box: sides (X-planes), top (Y-plane), front and back (Z-planes).

        ``mats`` maps ``side``, ``top``, ``front``, ``back`` to ``(material, params)``.
        """
        if "x" in faces:
            m, p = mats["side"]
            self.add(0, x0, z0, z1, y0, y1, -1, label, m, p, obj)
            self.add(0, x1, z0, z1, y0, y1, +1, label, m, p, obj)
        if "y" in faces and "top" in mats:
            m, p = mats["top"]
            self.add(1, y1, x0, x1, z0, z1, +1, label, m, p, obj)
        if "z" in faces:
            m, p = mats["front"]
            self.add(2, z0, x0, x1, y0, y1, -1, label, m, p, obj)
            m, p = mats.get("back", mats["front"])
            self.add(2, z1, x0, x1, y0, y1, +1, label, m, p, obj)


def frame_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The random generator of one frame's ``stream`` (0: scene, 1: left camera, 2: right camera).

    Independent of the number of frames, workers and order of generation.
    """
    if int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(split.encode()), int(index), int(stream)]))


def _facade_params(b: _Builder) -> dict:
    rng = b.rng
    base = b.jitter(_FACADE_COLORS[rng.integers(len(_FACADE_COLORS))], 0.12)
    floor = rng.uniform(2.9, 3.6)
    spacing = rng.uniform(2.2, 4.0)
    win_w = spacing * rng.uniform(0.35, 0.6)
    win_h = floor * rng.uniform(0.4, 0.6)
    return {
        "k": b.k(), "base": base, "brick": bool(rng.random() < 0.25), "bands": float(rng.random() < 0.4),
        "floor": floor, "spacing": spacing, "win_w": win_w, "win_x": (spacing - win_w) / 2,
        "win_h": win_h, "win_y": floor * rng.uniform(0.2, 0.35), "offset": rng.uniform(0, spacing),
        "ground_floor": rng.uniform(3.2, 4.5), "roof": rng.uniform(0.6, 1.5),
        "glass": b.jitter((0.10, 0.13, 0.17), 0.3), "frame": b.jitter(rng.choice([0.85, 0.35, 0.6]) * np.ones(3), 0.1),
        "shops": bool(rng.random() < 0.5), "shop_w": rng.uniform(3.0, 6.0), "has_awning": float(rng.random() < 0.4),
        "awning": b.jitter(_CLOTHES[rng.integers(len(_CLOTHES))], 0.1), "door_every": rng.uniform(6.0, 14.0),
        "door": b.jitter((0.25, 0.18, 0.12), 0.3), "cornice": float(rng.random() < 0.6),
    }


def _street_layout(b: _Builder) -> dict:
    rng = b.rng
    lane = rng.uniform(2.9, 3.5)
    lanes = int(rng.choice([2, 2, 3, 4]))
    cam_lane = int(rng.integers(0, max(1, lanes // 2)))  # counted from the right: drive on the right
    park_r = rng.uniform(2.0, 2.4) if rng.random() < 0.6 else 0.0
    park_l = rng.uniform(2.0, 2.4) if rng.random() < 0.5 else 0.0
    xr = lane * (cam_lane + 0.5) + park_r
    xl = xr - park_r - lanes * lane - park_l
    return {
        "lane": lane, "lanes": lanes, "xl": xl, "xr": xr, "park": {-1: park_l, 1: park_r},
        "curb": rng.uniform(0.10, 0.16), "z_end": float(np.exp(rng.uniform(math.log(45), math.log(190)))),
        "walk": {-1: rng.uniform(1.8, 4.5), 1: rng.uniform(1.8, 4.5)},
        "verge": {s: (rng.uniform(1.0, 2.5) if rng.random() < 0.25 else 0.0) for s in (-1, 1)},
    }


def _add_ground(b: _Builder, L: dict) -> None:
    rng = b.rng
    z_end, curb = L["z_end"], L["curb"]
    xl, xr, lane = L["xl"], L["xr"], L["lane"]
    # road markings: dashed lane lines, solid edge lines next to parking lanes
    lines = []
    x_lanes0 = xl + L["park"][-1]
    for i in range(1, L["lanes"]):
        xc = x_lanes0 + i * lane
        centre = i == L["lanes"] // 2 and L["lanes"] % 2 == 0
        lines.append((xc, 0.12 if not centre else 0.15, 0.0 if centre and rng.random() < 0.5 else 9.0, 3.0))
    for side, x in ((-1, x_lanes0), (1, xr - L["park"][1])):
        if L["park"][side] > 0 or rng.random() < 0.5:
            lines.append((x, 0.12, 0.0, 0.0))
    asphalt = b.jitter(rng.uniform(0.26, 0.4) * np.ones(3), 0.06)
    road_p = {
        "k": b.k(), "base": asphalt, "lines": lines, "paint": b.jitter((0.85, 0.85, 0.82), 0.05),
        "paint_wear": float(rng.uniform(0.6, 1.0)),
        "zebra": (lambda z: (z, z + rng.uniform(3, 4.5)))(rng.uniform(10, 40)) if rng.random() < 0.25 else None,
    }
    b.add(1, 0.0, xl, xr, 0.0, z_end, +1, ROAD, "asphalt", road_p, ground=True)
    walk_color = b.jitter(_rgb([(0.62, 0.61, 0.58), (0.66, 0.55, 0.45), (0.55, 0.50, 0.48), (0.70, 0.68, 0.62)])[rng.integers(4)], 0.1)
    walk_p = {"k": b.k(), "base": walk_color, "tile": rng.uniform(0.25, 0.6), "aspect": float(rng.choice([1.0, 2.0])),
              "tile_var": rng.uniform(0.05, 0.2)}
    curb_p = {"k": b.k(), "base": b.jitter((0.68, 0.67, 0.64), 0.08)}
    grass_p = {"k": b.k(), "green": b.jitter((0.22, 0.34, 0.12), 0.2), "dry": b.jitter((0.42, 0.40, 0.24), 0.2)}
    L["grass"], L["walk_p"] = grass_p, walk_p
    for side in (-1, 1):
        xc = xl if side < 0 else xr
        verge, walk = L["verge"][side], L["walk"][side]
        b.add(0, xc, 0.0, z_end, 0.0, curb, -side, SIDEWALK, "concrete", curb_p)
        x = xc
        if verge > 0:
            b.add(1, curb, x, x + side * verge, 0.0, z_end, +1, TERRAIN, "grass", grass_p, ground=True)
            x += side * verge
        b.add(1, curb, x, x + side * walk, 0.0, z_end, +1, SIDEWALK, "paving", walk_p, ground=True)
        L["back"] = L.get("back", {})
        L["back"][side] = x + side * walk  # where the lots begin


def _add_tree(b: _Builder, x: float, z: float, y0: float, scale: float, p_leaf: dict) -> None:
    rng = b.rng
    trunk_h = rng.uniform(1.6, 3.0) * scale
    trunk_w = rng.uniform(0.22, 0.4) * scale
    rx, ry = rng.uniform(1.4, 3.0) * scale, rng.uniform(1.6, 3.4) * scale
    cy = y0 + trunk_h + ry * 0.75
    bark = {"k": b.k(), "base": b.jitter((0.32, 0.27, 0.22), 0.2)}
    b.add(2, z, x - trunk_w / 2, x + trunk_w / 2, y0, y0 + trunk_h + ry * 0.3, 0, VEGETATION, "bark", bark)
    leaf = dict(p_leaf, k=b.k())
    b.add(2, z - 0.05, x - rx * 1.25, x + rx * 1.25, cy - ry * 1.2, cy + ry * 1.2, 0, VEGETATION, "foliage", leaf, mask="crown")
    b.casters.append((np.array([[x - rx, cy - ry * 0.6, z - rx * 0.6], [x + rx, cy + ry * 0.8, z + rx * 0.6]]), 0.75))


def _leaf_params(b: _Builder) -> dict:
    rng = b.rng
    autumn = rng.random() < 0.1
    dark = (0.10, 0.16, 0.06) if not autumn else (0.25, 0.18, 0.05)
    light = (0.30, 0.45, 0.16) if not autumn else (0.60, 0.48, 0.15)
    return {"dark": b.jitter(dark, 0.25), "light": b.jitter(light, 0.2)}


def _add_side(b: _Builder, L: dict, side: int) -> None:
    """Buildings, gaps with walls, fences, hedges or parks, and a background row, on one side."""
    rng = b.rng
    z_end = L["z_end"]
    back = L["back"][side]
    leaf = _leaf_params(b)
    z = -rng.uniform(5, 20)
    while z < z_end:
        kind = rng.choice(["building", "wall", "fence", "hedge", "park", "open"], p=[0.48, 0.14, 0.14, 0.07, 0.13, 0.04])
        length = rng.uniform(8, 35) if kind in ("building", "wall", "fence") else rng.uniform(5, 20)
        z1 = min(z + length, z_end)
        if kind == "building":
            setback = 0.0 if rng.random() < 0.6 else rng.uniform(0.5, 4.0)
            xf = back + side * setback
            height = rng.uniform(7, 26)
            depth = rng.uniform(10, 18)
            p = _facade_params(b)
            b.add(0, xf, z, z1, 0.0, height, -side, BUILDING, "facade", p)
            b.add(2, z, xf, xf + side * depth, 0.0, height, -1, BUILDING, "facade", dict(p, offset=rng.uniform(0, 3)))
            if setback > 0:
                b.add(1, L["curb"], back, xf, z, z1, +1, SIDEWALK, "paving", L["walk_p"], ground=True)
                if setback > 1.2 and rng.random() < 0.6:  # a front-garden wall or fence
                    kind = "wall" if rng.random() < 0.5 else "fence"
                    _add_barrier(b, kind, _barrier_params(b, kind), 0, back + side * 0.2, z, z1, rng.uniform(0.7, 1.5), -side)
            b.casters.append((np.array([[min(xf, xf + side * depth), 0, z], [max(xf, xf + side * depth), height, z1]]), 1.0))
        else:
            lot_grass = kind in ("park", "hedge") or rng.random() < 0.5
            b.add(1, L["curb"], back, back + side * 60, z, z1, +1, TERRAIN if lot_grass else SIDEWALK,
                  "grass" if lot_grass else "paving", L["grass"] if lot_grass else L["walk_p"], ground=True)
            x = back + side * rng.uniform(0.0, 0.6)
            if kind in ("wall", "fence"):
                # along the sidewalk, and across the lot where the gap ends (seen face on)
                h = rng.uniform(1.0, 3.0) if kind == "wall" else rng.uniform(1.0, 2.2)
                p = _barrier_params(b, kind)
                _add_barrier(b, kind, p, 0, x, z, z1, h, -side)
                if z1 < z_end:
                    # just in front of the next segment, which may start with a building front
                    _add_barrier(b, kind, p, 2, z1 - 0.6, x, x + side * rng.uniform(6, 25), h, -1)
            elif kind == "hedge":
                h = rng.uniform(0.8, 1.8)
                wdt = rng.uniform(0.7, 1.4)
                p = dict(_leaf_params(b), k=b.k())
                b.box(min(x, x + side * wdt), max(x, x + side * wdt), 0.0, h, z, z1, VEGETATION,
                      {"side": ("foliage", p), "top": ("foliage", p), "front": ("foliage", p)})
            elif kind == "park":
                for _ in range(int(rng.integers(2, 6))):
                    _add_tree(b, back + side * rng.uniform(2, 18), rng.uniform(z, z1), L["curb"], rng.uniform(1.0, 1.6), leaf)
        z = z1
    # a background row of buildings seen through the gaps
    xb = back + side * rng.uniform(18, 35)
    z = -rng.uniform(0, 10)
    while z < z_end:
        z1 = min(z + rng.uniform(10, 40), z_end)
        if rng.random() < 0.8:
            h = rng.uniform(8, 25)
            b.add(0, xb + side * rng.uniform(0, 6), z, z1, 0.0, h, -side, BUILDING, "facade", _facade_params(b))
        else:
            b.add(0, xb, z, z1, 0.0, rng.uniform(8, 16), -side, VEGETATION, "foliage", dict(leaf, k=b.k()), mask="treeline")
        z = z1


def _barrier_params(b: _Builder, kind: str) -> dict:
    rng = b.rng
    if kind == "wall":
        tones = _rgb([(0.62, 0.61, 0.58), (0.50, 0.49, 0.47), (0.72, 0.68, 0.60), (0.55, 0.45, 0.38)])
        return {"k": b.k(), "base": b.jitter(tones[rng.integers(len(tones))], 0.1),
                "blocks": (rng.uniform(0.4, 0.8), rng.uniform(0.2, 0.4)) if rng.random() < 0.8 else None,
                "coping": b.jitter(rng.choice([0.35, 0.75]) * np.ones(3), 0.1) if rng.random() < 0.7 else None}
    style = str(rng.choice(["bars", "planks", "chain"]))
    base = {"bars": (0.10, 0.14, 0.12), "planks": (0.45, 0.32, 0.20), "chain": (0.55, 0.56, 0.55)}[style]
    return {"k": b.k(), "style": style, "base": b.jitter(base, 0.2), "period": rng.uniform(0.1, 0.2),
            "bar": rng.uniform(0.025, 0.04), "behind": b.jitter(rng.choice([0.35, 0.45]) * _rgb((0.8, 0.95, 0.7)), 0.2)}


def _add_barrier(b: _Builder, kind: str, p: dict, axis: int, c: float, a0: float, a1: float, h: float, facing: int) -> None:
    """A wall (0.3 m thick, with end and top faces) or a fence (one two-sided sheet) on an X- or Z-plane."""
    if kind == "fence":
        b.add(axis, c, a0, a1, 0.0, h, 0, FENCE, "fence", p)
        return
    thick = 0.3 * (-facing)  # the wall extends away from the viewer's side
    b.add(axis, c, a0, a1, 0.0, h, facing, WALL, "concrete", p)
    if axis == 0:
        b.add(2, min(a0, a1), c, c + thick, 0.0, h, -1, WALL, "concrete", p)
        top = (c, c + thick, a0, a1)
        b.casters.append((np.array([[min(c, c + thick), 0, min(a0, a1)], [max(c, c + thick), h, max(a0, a1)]]), 1.0))
    else:
        top = (a0, a1, c, c + thick)
        b.casters.append((np.array([[min(a0, a1), 0, min(c, c + thick)], [max(a0, a1), h, max(c, c + thick)]]), 1.0))
    if h < 1.3:  # low enough to see its top
        b.add(1, h, top[0], top[1], top[2], top[3], +1, WALL, "concrete", p)


def _add_far_end(b: _Builder, L: dict) -> None:
    """Close the street at ``z_end``: a row of buildings or a tree line across it."""
    rng = b.rng
    z = L["z_end"]
    x = -150.0
    while x < 150:
        x1 = min(x + rng.uniform(10, 40), 150)
        if rng.random() < 0.8:
            h = rng.uniform(5, 20)
            b.add(2, z + rng.uniform(0, 8), x, x1, 0.0, h, -1, BUILDING, "facade", _facade_params(b))
        else:
            b.add(2, z, x, x1, 0.0, rng.uniform(8, 18), -1, VEGETATION, "foliage", dict(_leaf_params(b), k=b.k()), mask="treeline")
        x = x1
    b.add(1, 0.0, -150, 150, L["z_end"] - 0.5, L["z_end"] + 8.5, +1, TERRAIN, "grass", L["grass"], ground=True)
    for side in (-1, 1):
        back = L["back"][side]
        xs = sorted((back, side * 150.0))
        b.add(1, L["curb"], xs[0], xs[1], -5.0, L["z_end"], +1, TERRAIN, "grass", L["grass"], ground=True)


def _add_street_furniture(b: _Builder, L: dict) -> None:
    """Street lights and trees along the curbs, sign posts, traffic lights."""
    rng = b.rng
    z_end, curb = L["z_end"], L["curb"]
    poles = _rgb([(0.20, 0.26, 0.22), (0.64, 0.65, 0.66), (0.17, 0.17, 0.18), (0.45, 0.46, 0.48)])
    metal = {"k": b.k(), "base": b.jitter(poles[rng.integers(len(poles))], 0.1)}
    for side in (-1, 1):
        xc = L["xl"] if side < 0 else L["xr"]
        if rng.random() < 0.9:  # street lights
            spacing = rng.uniform(10, 22)
            z = rng.uniform(2, spacing)
            h, w = rng.uniform(5.5, 9), rng.uniform(0.25, 0.4)
            x = xc + side * rng.uniform(0.35, 0.7)
            while z < min(z_end, 110):
                b.add(2, z, x - w / 2, x + w / 2, curb, h, 0, POLE, "metal", metal)
                if rng.random() < 0.7:  # arm over the road with a lamp head
                    arm = rng.uniform(1.2, 2.5)
                    b.add(2, z, min(x, x - side * arm), max(x, x - side * arm), h - 0.12, h, 0, POLE, "metal", metal)
                    xh = x - side * arm
                    b.add(2, z - 0.02, xh - 0.3, xh + 0.3, h - 0.3, h, 0, POLE, "metal", metal)
                z += spacing
        if rng.random() < 0.5:  # trees along the curb
            spacing = rng.uniform(7, 14)
            z = rng.uniform(1, spacing)
            x = xc + side * (L["verge"][side] / 2 if L["verge"][side] else rng.uniform(0.8, 1.2))
            leaf = _leaf_params(b)
            while z < min(z_end, 90):
                _add_tree(b, x + rng.uniform(-0.2, 0.2), z, curb, rng.uniform(0.8, 1.2), leaf)
                z += spacing * rng.uniform(0.8, 1.2)
    for _ in range(int(rng.integers(3, 8))):  # sign posts
        side = int(rng.choice([-1, 1]))
        xc = L["xl"] if side < 0 else L["xr"]
        x, z = xc + side * rng.uniform(0.3, 0.8), rng.uniform(5, min(60, z_end - 5))
        n_signs = 1 if rng.random() < 0.7 else 2
        top = rng.uniform(2.2, 3.0) + 0.7 * n_signs
        w = rng.uniform(0.14, 0.2)
        b.add(2, z, x - w / 2, x + w / 2, curb, top, 0, POLE, "metal", metal)
        y = top
        for _ in range(n_signs):
            _add_sign(b, x, z - 0.05, y, rng.uniform(0.7, 1.1))
            y -= 1.15
    for _ in range(int(rng.choice([0, 1, 2, 2, 3]))):  # traffic lights
        side = int(rng.choice([-1, 1]))
        xc = L["xl"] if side < 0 else L["xr"]
        x, z = xc + side * rng.uniform(0.3, 0.8), rng.uniform(10, min(50, z_end - 5))
        h = rng.uniform(2.6, 3.6)
        w = rng.uniform(0.18, 0.25)
        b.add(2, z, x - w / 2, x + w / 2, curb, h + 1.2, 0, POLE, "metal", metal)
        _add_traffic_light(b, x, z - 0.1, h + 0.1)
        if rng.random() < 0.5:  # a mast arm over the road with a second head
            arm = rng.uniform(3, 6)
            ya = h + rng.uniform(1.8, 2.6)
            b.add(2, z, x - w / 2, x + w / 2, curb, ya + 0.15, 0, POLE, "metal", metal)
            xa = x - side * arm
            b.add(2, z, min(x, xa), max(x, xa), ya, ya + 0.15, 0, POLE, "metal", metal)
            _add_traffic_light(b, xa, z - 0.1, ya - 1.05)


def _add_sign(b: _Builder, x: float, z: float, top: float, size: float) -> None:
    rng = b.rng
    kind = rng.choice(["prohibit", "mandatory", "warning", "info", "priority"], p=[0.3, 0.2, 0.2, 0.2, 0.1])
    white, red, blue = _rgb((0.92, 0.92, 0.9)), _rgb((0.78, 0.08, 0.08)), _rgb((0.08, 0.25, 0.65))
    ink = _rgb((0.08, 0.08, 0.08))
    p = {"k": b.k(), "rim": red, "face": white, "ink": ink, "scheme": "plain"}
    w = h = size
    if kind == "prohibit":
        mask, p["scheme"] = "circle", str(rng.choice(["plain", "bar", "number"]))
        if p["scheme"] == "bar":
            p["face"], p["ink"] = red, white
    elif kind == "mandatory":
        mask, p["scheme"], p["rim"], p["face"], p["ink"] = "circle", "arrow", blue * 0.9, blue, white
    elif kind == "warning":
        mask = "triangle"
    elif kind == "priority":
        mask, p["rim"], p["face"] = "diamond", white, _rgb((0.95, 0.75, 0.1))
    else:
        mask = None
        w = size * rng.uniform(1.0, 1.6)
        h = size * rng.uniform(0.6, 1.0)
        face = _rgb([(0.08, 0.25, 0.65), (0.1, 0.45, 0.2), (0.92, 0.92, 0.9), (0.95, 0.75, 0.1)])[rng.integers(4)]
        p["face"], p["rim"], p["ink"] = face, white if face.mean() < 0.6 else ink, white if face.mean() < 0.6 else ink
    for key in ("rim", "face", "ink"):
        p[key] = b.jitter(p[key], 0.06)
    b.add(2, z, x - w / 2, x + w / 2, top - h, top, 0, SIGN, "sign", p, mask=mask)


def _add_traffic_light(b: _Builder, x: float, z: float, y0: float) -> None:
    rng = b.rng
    w, h = rng.uniform(0.4, 0.5), rng.uniform(1.0, 1.25)
    base = b.jitter((0.08, 0.08, 0.08) if rng.random() < 0.7 else (0.7, 0.58, 0.1), 0.15)
    lamps = [_rgb((1.0, 0.15, 0.08)), _rgb((1.0, 0.65, 0.05)), _rgb((0.2, 1.0, 0.5))]
    p = {"k": b.k(), "base": base, "lamp_colors": lamps, "lit": int(rng.integers(0, 3))}
    b.add(2, z, x - w / 2, x + w / 2, y0, y0 + h, 0, LIGHT, "light", p)


def _add_car(b: _Builder, xc: float, z0: float, facing_camera: bool, sky: np.ndarray) -> None:
    rng = b.rng
    obj = b.new_object()
    length, width = rng.uniform(3.8, 4.9), rng.uniform(1.7, 1.95)
    body_top, roof = rng.uniform(0.85, 1.0), rng.uniform(1.38, 1.6)
    if rng.random() < 0.2:  # vans and SUVs
        body_top, roof, length = rng.uniform(1.0, 1.15), rng.uniform(1.7, 2.0), rng.uniform(4.4, 5.2)
    x0, x1, z1 = xc - width / 2, xc + width / 2, z0 + length
    paint = b.jitter(_CAR_COLORS[rng.choice(len(_CAR_COLORS), p=_CAR_COLOR_P)], 0.08)
    k = b.k()
    axles = (0.85, length - 0.95)
    common = {"k": k, "paint": paint, "sky": sky, "axles": axles, "door1": length * 0.33, "door2": length * 0.6}
    near_face, far_face = ("front", "rear") if facing_camera else ("rear", "front")
    body = {
        "side": ("paint", dict(common, face="side")), "top": ("paint", dict(common, face="top")),
        "front": ("paint", dict(common, face=near_face)), "back": ("paint", dict(common, face=far_face)),
    }
    b.box(x0, x1, 0.25, body_top, z0, z1, CAR, body, obj)
    glass = {"k": k, "paint": paint, "glass": b.jitter((0.07, 0.09, 0.11), 0.3)}
    inset = rng.uniform(0.08, 0.16)
    cz0, cz1 = (z0 + length * 0.28, z1 - length * 0.22) if not facing_camera else (z0 + length * 0.22, z1 - length * 0.28)
    cabin = {
        "side": ("glass", dict(glass, face="side")), "top": ("paint", dict(common, face="top")),
        "front": ("glass", dict(glass, face="rear")),
    }
    b.box(x0 + inset, x1 - inset, body_top, roof, cz0, cz1, CAR, cabin, obj)
    tyre = {"rim": b.jitter((0.55, 0.55, 0.56), 0.2)}
    for az in axles:  # wheels: discs on the sides, tyre blocks under the bumpers
        for x, f in ((x0 - 0.01, -1), (x1 + 0.01, +1)):
            b.add(0, x, z0 + az - 0.33, z0 + az + 0.33, 0.0, 0.66, f, CAR, "tyre", tyre, obj, mask="circle")
    for x in (x0 + 0.05, x1 - 0.27):
        b.add(2, z0 + 0.6, x, x + 0.22, 0.0, 0.3, -1, CAR, "tyre", tyre, obj)
        b.add(2, z1 - 0.6, x, x + 0.22, 0.0, 0.3, +1, CAR, "tyre", tyre, obj)
    b.casters.append((np.array([[x0, 0.0, z0], [x1, roof, z1]]), 1.0))
    b.contact.append(np.array([x0 + 0.1, x1 - 0.1, z0 + 0.2, z1 - 0.2]))


def _add_cars(b: _Builder, L: dict, sky: np.ndarray) -> None:
    rng = b.rng
    z_end = L["z_end"]
    for side in (-1, 1):  # parked along the curbs
        pw = L["park"][side]
        if pw <= 0:
            continue
        xc = (L["xl"] + pw / 2) if side < 0 else (L["xr"] - pw / 2)
        z = rng.uniform(-2, 6)
        occupancy = rng.uniform(0.3, 0.75)
        while z < min(z_end - 6, 100):
            if rng.random() < occupancy:
                _add_car(b, xc + rng.uniform(-0.15, 0.15), z, False, sky)
            z += rng.uniform(5.2, 7.5)
    x_lanes0 = L["xl"] + L["park"][-1]
    for i in range(L["lanes"]):  # traffic in the lanes
        xc = x_lanes0 + (i + 0.5) * L["lane"]
        oncoming = i < L["lanes"] // 2
        own = abs(xc) < L["lane"] / 2
        z = rng.uniform(7 if own else 3, 25)
        while z < min(z_end - 8, 90):
            if rng.random() < 0.4:
                _add_car(b, xc + rng.uniform(-0.3, 0.3), z, oncoming, sky)
            z += rng.uniform(8, 25)


def _add_people(b: _Builder, L: dict) -> None:
    rng = b.rng
    n = int(rng.poisson(7.0))
    for _ in range(n):
        group = 1 if rng.random() < 0.7 else int(rng.integers(2, 4))
        crossing = rng.random() < 0.15
        if crossing:
            x, y, z = rng.uniform(L["xl"] + 1, L["xr"] - 1), 0.0, rng.uniform(6, 35)
        else:
            side = int(rng.choice([-1, 1]))
            xc = L["xl"] if side < 0 else L["xr"]
            d = L["verge"][side] + rng.uniform(0.4, max(0.5, L["walk"][side] - 0.4))
            x, y, z = xc + side * d, L["curb"], rng.uniform(3, min(35, L["z_end"] - 5))
        for _ in range(group):
            _add_person(b, x + rng.uniform(-0.6, 0.6), y, z + rng.uniform(-0.8, 0.8), crossing)
            x += rng.uniform(0.5, 0.8) * rng.choice([-1, 1])


def _add_person(b: _Builder, x: float, y: float, z: float, side_view: bool) -> None:
    rng = b.rng
    h = rng.uniform(1.5, 1.95)
    side_view = side_view or rng.random() < 0.35
    stride = rng.uniform(0.04, 0.14) if side_view else rng.uniform(0.0, 0.03)
    legs = [(-0.055 - stride / 2, -0.04), (0.055 + stride / 2, 0.04)] if not side_view else [(-stride, -0.01), (stride, 0.01)]
    top = _CLOTHES[rng.integers(len(_CLOTHES))]
    p = {
        "k": b.k(), "h": h, "skin": b.jitter(_SKIN[rng.integers(len(_SKIN))], 0.06),
        "hair": b.jitter(_HAIR[rng.integers(len(_HAIR))], 0.1), "top": b.jitter(top, 0.12),
        "bottom": b.jitter(_CLOTHES[rng.choice([0, 1, 2, 6])], 0.12), "shoes": b.jitter((0.08, 0.07, 0.07), 0.2),
        "back": bool(rng.random() < 0.5), "torso_w": 0.075 if side_view else rng.uniform(0.105, 0.125),
        "arms": not side_view or rng.random() < 0.5, "swing": rng.uniform(-0.15, 0.15) if side_view else 0.0,
        "legs": legs, "bag": b.jitter(_CLOTHES[rng.integers(len(_CLOTHES))], 0.1) if rng.random() < 0.25 else None,
    }
    w = 0.5 * h
    b.add(2, z, x - w / 2, x + w / 2, y, y + h, 0, PERSON, "person", p, b.new_object(), mask="person")
    b.contact.append(np.array([x - 0.2, x + 0.2, z - 0.2, z + 0.2]))


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


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


@dataclass
class View:
    """One camera's rendering.

    Attributes:
        image: H x W x 3 uint8 RGB.
        depth: H x W float32 depth along the optical axis in metres, 0 = sky (no surface).
        label: H x W uint8 Cityscapes label ids.
        instance: H x W int32 object number (0 = none; cars and persons are numbered).
    """

    image: np.ndarray
    depth: np.ndarray
    label: np.ndarray
    instance: np.ndarray


def _rays(camera: StereoCamera, pose: CameraPose) -> tuple[np.ndarray, np.ndarray]:
    """World ray directions (3 x H x W, camera-frame z component 1) and the rotation."""
    h, w = camera.size
    R = pose.rotation()
    a = (np.arange(w, dtype=np.float32) - np.float32(camera.u0)) / np.float32(camera.fx)
    b = (np.arange(h, dtype=np.float32) - np.float32(camera.v0)) / np.float32(camera.fy)
    D = np.empty((3, h, w), np.float32)
    for i in range(3):
        D[i] = np.float32(R[i, 0]) * a[None, :] + np.float32(R[i, 1]) * b[:, None] + np.float32(R[i, 2])
    return D, R


def _bbox(q: Quad, C: np.ndarray, R: np.ndarray, camera: StereoCamera) -> tuple[int, int, int, int] | None:
    """Image bounding box ``(x0, x1, y0, y1)`` of a rectangle, clipped to the near plane and image."""
    pc = (q.corners() - C) @ R  # camera coordinates: right, down, forward
    z = pc[:, 2]
    if (z < _NEAR).all():
        return None
    if (z < _NEAR).any():  # clip the polygon against the near plane
        pts = []
        for i in range(4):
            a, b = pc[i], pc[(i + 1) % 4]
            if a[2] >= _NEAR:
                pts.append(a)
            if (a[2] >= _NEAR) != (b[2] >= _NEAR):
                t = (_NEAR - a[2]) / (b[2] - a[2])
                pts.append(a + t * (b - a))
        pc = np.array(pts)
    x = camera.u0 + camera.fx * pc[:, 0] / pc[:, 2]
    y = camera.v0 + camera.fy * pc[:, 1] / pc[:, 2]
    h, w = camera.size
    x0, x1 = max(0, int(math.floor(x.min()))), min(w, int(math.ceil(x.max())) + 1)
    y0, y1 = max(0, int(math.floor(y.min()))), min(h, int(math.ceil(y.max())) + 1)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, x1, y0, y1


def _sky(scene: Scene, D: np.ndarray) -> np.ndarray:
    """n x 3 sky colours for ray directions ``D`` (3 x n)."""
    s = scene.sky
    norm = np.sqrt((D * D).sum(0))
    elev = np.clip(D[1] / norm, 0, 1)
    t = np.clip(elev * 2.2, 0, 1) ** 0.7
    col = _mix(s["horizon"], s["zenith"], t)
    if s["clouds"] > 0:
        cu, cv = D[0] / (D[1] + 0.25) * 3, D[2] / (D[1] + 0.25) * 3
        cl = _noise(cu, cv, 1.5, s["k"]) + 0.5 * _noise(cu, cv, 0.5, s["k"] + 1) + 0.25 * _noise(cu, cv, 0.2, s["k"] + 2)
        cov = np.clip((cl + 0.5 * s["clouds"] - 0.25) * 3, 0, 1) * s["clouds"]
        col = _mix(col, s["cloud_color"] * (0.85 + 0.3 * np.clip(cl + 0.5, 0, 1))[:, None], cov)
    return col


def _shadow(scene: Scene, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Bilinear look-up of the ground shadow map at world ``(x, z)``."""
    sm = scene.shadow
    m = sm["map"]
    gx = (x - sm["x0"]) / sm["res"] - 0.5
    gz = (z - sm["z0"]) / sm["res"] - 0.5
    inside = (gx >= 0) & (gx < m.shape[1] - 1) & (gz >= 0) & (gz < m.shape[0] - 1)
    out = np.zeros(x.shape, np.float32)
    if inside.any():
        gx, gz = gx[inside], gz[inside]
        ix, iz = gx.astype(np.int64), gz.astype(np.int64)
        fx, fz = gx - ix, gz - iz
        top = m[iz, ix] + (m[iz, ix + 1] - m[iz, ix]) * fx
        bot = m[iz + 1, ix] + (m[iz + 1, ix + 1] - m[iz + 1, ix]) * fx
        out[inside] = top + (bot - top) * fz
    return out


def render_view(
    scene: Scene, camera: StereoCamera, size: tuple[int, int] | None = None, side: str = "left",
    rng: np.random.Generator | None = None,
) -> View:
    """Render one camera of the rig.

    Args:
        scene: From :func:`sample_scene`.
        camera: The rig (``StereoCamera.cityscapes(size)``).
        size: ``(H, W)``; another size than the camera's rescales its intrinsics.
        side: ``"left"`` (at the pose) or ``"right"`` (``baseline`` to its right).
        rng: Sensor noise; ``None``: no noise.

    Returns:
        A :class:`View`.
    """
    if size is not None and tuple(size) != tuple(camera.size):
        camera = camera.resized(size)
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    h, w = camera.size
    D, R = _rays(camera, scene.pose)
    C = np.array([0.0, scene.pose.height, 0.0])
    if side == "right":
        C = C + camera.baseline * R[:, 0]
    # pass 1: depth test of every rectangle; keep depth, rectangle index and surface coordinates
    zbuf = np.full((h, w), np.inf, np.float32)
    qid = np.full((h, w), -1, np.int32)
    ubuf = np.zeros((h, w), np.float32)
    vbuf = np.zeros((h, w), np.float32)
    quads = scene.quads
    for k, q in enumerate(quads):
        if q.facing and (C[q.axis] - q.c) * q.facing <= 0:
            continue  # back face
        box = _bbox(q, C, R, camera)
        if box is None:
            continue
        x0, x1, y0, y1 = box
        a, ua, va = q.axis, _U_AXIS[q.axis], _V_AXIS[q.axis]
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (np.float32(q.c - C[a])) / D[a, y0:y1, x0:x1]
        pu = np.float32(C[ua]) + t * D[ua, y0:y1, x0:x1]
        pv = np.float32(C[va]) + t * D[va, y0:y1, x0:x1]
        zb = zbuf[y0:y1, x0:x1]
        ok = (t > _NEAR) & (t < zb) & (pu >= q.u0) & (pu <= q.u1) & (pv >= q.v0) & (pv <= q.v1)
        if q.mask is not None:
            iy, ix = np.nonzero(ok)
            if iy.size:
                keep = _MASKS[q.mask](q, pu[iy, ix] - np.float32(q.u0), pv[iy, ix] - np.float32(q.v0))
                ok[iy[~keep], ix[~keep]] = False
        if not ok.any():
            continue
        zb[ok] = t[ok]
        qid[y0:y1, x0:x1][ok] = k
        ubuf[y0:y1, x0:x1][ok] = pu[ok]
        vbuf[y0:y1, x0:x1][ok] = pv[ok]
    # pass 2: shade each visible pixel once
    flat_q = qid.ravel()
    order = np.argsort(flat_q, kind="stable")
    counts = np.bincount(flat_q + 1, minlength=len(quads) + 1)
    ends = np.cumsum(counts)
    color = np.empty((h * w, 3), np.float32)
    Df = D.reshape(3, -1)
    sky_idx = order[: counts[0]]
    if sky_idx.size:
        color[sky_idx] = _sky(scene, Df[:, sky_idx])
    t_all, u_all, v_all = zbuf.ravel(), ubuf.ravel(), vbuf.ravel()
    norm2 = (Df * Df).sum(0)
    sun, amb, direct = scene.sun, np.float32(scene.ambient), np.float32(scene.sun_strength)
    haze = scene.sky["horizon"]
    for k in np.nonzero(counts[1:])[0]:
        q = quads[k]
        idx = order[ends[k] : ends[k + 1]]
        t, u, v = t_all[idx], u_all[idx], v_all[idx]
        dist = t * np.sqrt(norm2[idx])
        cos = np.maximum(np.abs(Df[q.axis, idx]) / np.sqrt(norm2[idx]), 0.08)
        fp = dist / np.float32(camera.fx) / cos
        col = _MATERIALS[q.mat](q, u - np.float32(q.u0), v - np.float32(q.v0), u, v, fp)
        normal_sign = q.facing or (1 if C[q.axis] > q.c else -1)
        ndl = max(0.0, normal_sign * sun[q.axis])
        if q.ground:  # a Y-plane: (u, v) = world (X, Z)
            sh = _shadow(scene, u, v)
            light = amb * (1 - 0.55 * np.clip(sh - 1, 0, 1)) + direct * np.float32(ndl) * (1 - np.clip(sh, 0, 1))
        else:
            light = np.full(t.shape, amb + direct * np.float32(ndl), np.float32)
        col = col * light[:, None]
        veil = np.exp(-dist / np.float32(scene.haze_m))
        color[idx] = haze + (col - haze) * veil[:, None]
    color *= scene.exposure
    if rng is not None:
        color += rng.normal(0.0, scene.noise / 255.0, color.shape).astype(np.float32)
    image = np.clip(color * 255 + 0.5, 0, 255).astype(np.uint8).reshape(h, w, 3)
    label_lut = np.array([SKY] + [q.label for q in quads], np.uint8)
    obj_lut = np.array([0] + [q.obj for q in quads], np.int32)
    depth = np.where(qid >= 0, zbuf, 0).astype(np.float32)
    return View(image=image, depth=depth, label=label_lut[qid + 1], instance=obj_lut[qid + 1])


# --------------------------------------------------------------------------------------------
# Frames and files
# --------------------------------------------------------------------------------------------


@dataclass
class Frame:
    """Both views of one scene and the rig that saw them.

    Attributes:
        left, right: The two :class:`View` s.
        camera: Intrinsics and baseline at the frame's size.
        pose: The left camera's pose (height, pitch, yaw).
    """

    left: View
    right: View
    camera: StereoCamera
    pose: CameraPose

    def disparity(self) -> np.ndarray:
        """Left-view disparity in pixels, ``fx * baseline / depth``; 0 for the sky and under 1/256 px."""
        d = self.camera.disparity(self.left.depth)
        d[d < _MIN_DISPARITY] = 0
        return d

    def camera_json(self) -> dict:
        """The ``camera/*_camera.json`` content (Cityscapes fields)."""
        c, p = self.camera, self.pose
        return {
            "extrinsic": {"baseline": c.baseline, "pitch": round(p.pitch, 6), "roll": 0.0, "x": 1.7, "y": 0.0,
                          "yaw": round(p.yaw, 6), "z": round(p.height, 6)},
            "intrinsic": {"fx": c.fx, "fy": c.fy, "u0": c.u0, "v0": c.v0},
        }


def frame_name(split: str, index: int) -> tuple[str, str]:
    """``(city, stem)`` of frame ``index`` of ``split``, e.g. ``("westfield", "westfield_000003_000019")``."""
    cities = CITIES.get(split, (split.replace("_", ""),))
    city = cities[index % len(cities)]
    return city, f"{city}_{index:06d}_000019"


def render_frame(seed: int, split: str, index: int, size: tuple[int, int]) -> Frame:
    """Sample frame ``index`` of ``split`` for ``seed`` and render both views at ``size = (H, W)``."""
    camera = StereoCamera.cityscapes(size)
    scene = sample_scene(frame_rng(seed, split, index, 0))
    left = render_view(scene, camera, None, "left", frame_rng(seed, split, index, 1))
    right = render_view(scene, camera, None, "right", frame_rng(seed, split, index, 2))
    return Frame(left=left, right=right, camera=camera, pose=scene.pose)


def _polygons(label: np.ndarray, instance: np.ndarray) -> tuple[list[dict], np.ndarray]:
    """Cityscapes polygon objects and the matching instance-id image.

    One polygon per connected region (its outer contour), ordered by enclosed area, largest
    first: a region that lies in a hole of another encloses less, so drawing the polygons in
    this order (as ``cityscapesscripts`` does) rebuilds the label map. Instances of a class are
    numbered in that order too (``id * 1000 + k``).
    """
    regions = []
    for lid in np.unique(label).tolist():
        in_label = label == lid
        objs = np.unique(instance[in_label]).tolist() if lid in _HAS_INSTANCES else [0]
        for obj in objs:
            mask = (in_label & (instance == obj)) if lid in _HAS_INSTANCES else in_label
            contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for c in contours:
                pts = c.reshape(-1, 2)
                if len(pts) < 3:  # a single pixel or a line: a polygon needs three points
                    pts = np.concatenate([pts, pts[::-1], pts])[:3]
                regions.append((cv2.contourArea(c), len(pts), lid, obj, pts[0].tolist(), pts.tolist()))
    regions.sort(key=lambda r: (-r[0], -r[1], r[2], r[3], r[4]))
    objects, number, seen = [], {}, {}
    for i, (_, _, lid, obj, _, pts) in enumerate(regions):
        objects.append({"label": _NAME[lid], "polygon": pts, "deleted": 0, "verified": 0, "id": i, "user": "mtdense"})
        if obj and (lid, obj) not in number:
            seen[lid] = seen.get(lid, -1) + 1
            number[(lid, obj)] = lid * 1000 + seen[lid]
    ids = label.astype(np.uint16)
    for (lid, obj), value in number.items():
        ids[(instance == obj) & (label == lid)] = value
    return objects, ids


def _write_png(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path} (disk full or no permission?)")


def write_frame(root: str | Path, split: str, index: int, frame: Frame) -> np.ndarray:
    """Write one frame in the Cityscapes layout under ``root``.

    Returns:
        Pixel count of each label id in the left label map (length 256).
    """
    root = Path(root)
    city, stem = frame_name(split, index)
    dirs = {name: root / name / split / city for name in _GENERATED}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    h, w = frame.camera.size
    left, right = frame.left, frame.right
    _write_png(dirs["leftImg8bit"] / f"{stem}_leftImg8bit.png", cv2.cvtColor(left.image, cv2.COLOR_RGB2BGR))
    _write_png(dirs["rightImg8bit"] / f"{stem}_rightImg8bit.png", cv2.cvtColor(right.image, cv2.COLOR_RGB2BGR))
    gt = dirs["gtFine"]
    _write_png(gt / f"{stem}_gtFine_labelIds.png", left.label)
    rgba = np.concatenate([LABEL_ID_COLORS[left.label], np.full((h, w, 1), 255, np.uint8)], axis=2)
    _write_png(gt / f"{stem}_gtFine_color.png", cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    objects, instance_ids = _polygons(left.label, left.instance)
    _write_png(gt / f"{stem}_gtFine_instanceIds.png", instance_ids)
    (gt / f"{stem}_gtFine_polygons.json").write_text(
        json.dumps({"imgHeight": h, "imgWidth": w, "objects": objects}, separators=(",", ":"))
    )
    _write_png(dirs["disparity"] / f"{stem}_disparity.png", encode_cityscapes_disparity(frame.disparity()))
    (dirs["camera"] / f"{stem}_camera.json").write_text(json.dumps(frame.camera_json(), indent=2) + "\n")
    return np.bincount(left.label.ravel(), minlength=256).astype(np.int64)


# --------------------------------------------------------------------------------------------
# The whole city
# --------------------------------------------------------------------------------------------


@dataclass
class SyntheticCity:
    """What :func:`generate_city` wrote.

    Attributes:
        root: The dataset root.
        frames: Frames per split (``{"train": n, "val": n, "test": n}``).
        size: ``(H, W)``.
        seed: The seed.
        seconds: Wall time of the generation.
        label_pixels: Left-view pixel count per label id (length 256).
    """

    root: Path
    frames: dict[str, int]
    size: tuple[int, int]
    seed: int
    seconds: float
    label_pixels: np.ndarray = field(repr=False)

    def class_frequencies(self) -> dict[str, float]:
        """Share of all left-view pixels per train class present, in train-id order."""
        total = max(int(self.label_pixels.sum()), 1)
        out = {}
        for c in sorted((c for c in CLASSES if 0 <= c.train_id < len(TRAIN_CLASS_NAMES)), key=lambda c: c.train_id):
            n = int(self.label_pixels[c.id])
            if n:
                out[c.name] = n / total
        return out


def _generate_chunk(root: Path, seed: int, size: tuple[int, int], tasks: list[tuple[str, int]]) -> np.ndarray:
    cv2.setNumThreads(1)  # parallel over frames, not inside them
    counts = np.zeros(256, np.int64)
    for split, index in tasks:
        counts += write_frame(root, split, index, render_frame(seed, split, index, size))
    return counts


def _prepare_root(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise FileExistsError(f"{root} is a file; give a folder for the generated city")
    ours = (root / _META_FILE).is_file() or (root / _PARTIAL_FILE).is_file()
    present = [name for name in _GENERATED if (root / name).exists()]
    if present and not ours:
        raise FileExistsError(
            f"{root} already holds {', '.join(present)} that the generator did not write (no {_META_FILE}); "
            f"it is left alone: choose an empty folder, or delete those folders first"
        )
    if ours:
        if not overwrite:
            raise FileExistsError(
                f"{root} already holds a generated city ({_META_FILE}); pass overwrite=True "
                f"('mtdense data synth --overwrite') to replace it, or choose another folder"
            )
        for name in present:
            shutil.rmtree(root / name)
        for name in (_META_FILE, _PARTIAL_FILE, "preview.png"):
            (root / name).unlink(missing_ok=True)
    root.mkdir(parents=True, exist_ok=True)


def generate_city(
    out: str | Path,
    n_train: int,
    n_val: int,
    n_test: int = 0,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
    overwrite: bool = False,
) -> SyntheticCity:
    """Generate a synthetic stereo city in the Cityscapes layout under ``out``.

    Args:
        out: Dataset root to create.
        n_train, n_val, n_test: Frames per split (all labelled).
        size: ``(H, W)`` in pixels; the Cityscapes intrinsics are scaled to it.
        seed: The same seed gives the same files, whatever the number of workers.
        progress: Show a tqdm progress bar.
        workers: Processes; ``None``: ``min(2, CPU count)``; 0 or 1: this process.
        overwrite: Replace a city generated earlier in ``out``.

    Returns:
        A :class:`SyntheticCity` summary.

    Raises:
        FileExistsError: ``out`` already holds a generated city and ``overwrite`` is False, or
            holds Cityscapes folders the generator did not write (never replaced).
        ValueError: a negative frame count, a bad size or seed.
    """
    start = time.perf_counter()
    root = Path(out)
    size = _check_size(tuple(size))
    frames = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    if any(n < 0 for n in frames.values()):
        raise ValueError(f"frame counts must be >= 0, got {frames}")
    frame_rng(seed, "train", 0)  # validates the seed
    _prepare_root(root, overwrite)
    (root / _PARTIAL_FILE).write_text("generation in progress or interrupted; delete this folder or pass --overwrite\n")
    tasks = [(split, i) for split, n in frames.items() for i in range(n)]
    workers = min(2, os.cpu_count() or 1) if workers is None else max(0, int(workers))
    counts = np.zeros(256, np.int64)
    with tqdm(total=len(tasks), desc="synth", unit="frame", disable=not progress) as bar:
        if workers <= 1 or len(tasks) < 2 * workers:
            for task in tasks:
                counts += _generate_chunk(root, seed, size, [task])
                bar.update(1)
        else:
            chunk = max(1, min(8, len(tasks) // (4 * workers)))
            chunks = [tasks[i : i + chunk] for i in range(0, len(tasks), chunk)]
            with ProcessPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(_generate_chunk, root, seed, size, c): len(c) for c in chunks}
                for fut in as_completed(futures):
                    counts += fut.result()
                    bar.update(futures[fut])
    camera = StereoCamera.cityscapes(size)
    meta = {
        "generator": "mtdense.data.synthetic", "format_version": _FORMAT_VERSION, "seed": int(seed),
        "size": list(size), "frames": frames,
        "cities": {s: sorted({frame_name(s, i)[0] for i in range(n)}) for s, n in frames.items()},
        "camera": {"baseline": camera.baseline, "fx": camera.fx, "fy": camera.fy, "u0": camera.u0, "v0": camera.v0},
        "label_pixels": {_NAME[i]: int(n) for i, n in enumerate(counts) if n},
    }
    tmp = root / (_META_FILE + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    tmp.replace(root / _META_FILE)  # written last: its presence means the city is complete
    (root / _PARTIAL_FILE).unlink(missing_ok=True)
    return SyntheticCity(root=root, frames=frames, size=size, seed=int(seed), seconds=time.perf_counter() - start,
                         label_pixels=counts)


def city_settings(root: str | Path) -> dict | None:
    """The settings a generated city was made with, read from its meta file.

    Args:
        root: A folder that may hold a city written by :func:`generate_city`.

    Returns:
        The contents of ``root/mtdense_synthetic.json`` (``generator``, ``format_version``,
        ``seed``, ``size`` as ``[H, W]``, ``frames`` per split, ``cities``, ``camera``,
        ``label_pixels``), or ``None`` when there is no such file: ``root`` is missing, is not
        a generated city, or its generation never finished (the file is written last).

    Raises:
        ValueError: the meta file is unreadable, not JSON or not a JSON object.
    """
    path = Path(root) / _META_FILE
    if not path.is_file():
        return None
    fix = f"generate the city again ('mtdense data synth {Path(root)} --overwrite')"
    try:
        settings = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: unreadable or corrupt meta file of a generated city ({exc}); {fix}") from exc
    if not isinstance(settings, dict):
        raise ValueError(f"{path}: the meta file of a generated city holds {type(settings).__name__}, "
                         f"not a JSON object; {fix}")
    return settings


def is_generated_city(root: str | Path) -> bool:
    """Whether ``root`` holds a complete city written by :func:`generate_city`.

    Raises:
        ValueError: the meta file is there but unreadable or corrupt (see :func:`city_settings`).
    """
    return city_settings(root) is not None


def _read(path: Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    image = cv2.imread(str(path), flags)
    if image is None:
        raise ValueError(f"cannot read {path}: missing or corrupt; generate the city again ('mtdense data synth')")
    return image


def save_preview(root: str | Path, path: str | Path, n: int = 4, split: str = "train") -> Path:
    """Save a picture of the first ``n`` frames of ``split``: left | right | labels | disparity per row.

    Args:
        root: A generated city (or any Cityscapes tree with right views and disparity).
        path: Output PNG.
        n: Frames (rows).
        split: Which split.

    Returns:
        ``path``.
    """
    root, path = Path(root), Path(path)
    lefts = sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png"))[: max(0, int(n))]
    if not lefts:
        raise FileNotFoundError(
            f"{root / 'leftImg8bit' / split}: no frames to preview; generate them first "
            f"('mtdense data synth {root} --n-train N')"
        )
    rows = []
    for left_path in lefts:
        city, stem = left_path.parent.name, left_path.name[: -len("_leftImg8bit.png")]
        left = _read(left_path, cv2.IMREAD_COLOR)
        h, w = left.shape[:2]
        right_path = root / "rightImg8bit" / split / city / f"{stem}_rightImg8bit.png"
        right = _read(right_path, cv2.IMREAD_COLOR) if right_path.is_file() else np.zeros_like(left)
        ids = _read(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", cv2.IMREAD_GRAYSCALE)
        labels = cv2.cvtColor(LABEL_ID_COLORS[np.minimum(ids, len(LABEL_ID_COLORS) - 1)], cv2.COLOR_RGB2BGR)
        disp_path = root / "disparity" / split / city / f"{stem}_disparity.png"
        disp = _read(disp_path).astype(np.float32) if disp_path.is_file() else np.zeros((h, w), np.float32)
        valid = disp > 0
        scale = np.percentile(disp[valid], 99) if valid.any() else 1.0
        disp_col = cv2.applyColorMap(np.clip(disp / scale * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_MAGMA)
        disp_col[~valid] = 0
        row = np.concatenate([left, right, labels, disp_col], axis=1)
        if w > 512:
            row = cv2.resize(row, (4 * 512, round(h * 512 / w)), interpolation=cv2.INTER_AREA)
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_png(path, np.concatenate(rows, axis=0))
    return path
