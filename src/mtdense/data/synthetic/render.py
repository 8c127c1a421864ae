"""Render a scene from the left or the right camera of the rig, and a whole frame (both views).

Rendering is a numpy ray caster over axis-aligned rectangles with a z-buffer: for every
rectangle the rays of its image bounding box are intersected with its plane, clipped to its
extent and shape mask and depth-tested (pass 1, which fills depth, rectangle index and surface
coordinates; the index gives each pixel its surface's exact normal); then each visible pixel is shaded once from its surface coordinates (pass 2:
procedural textures band-limited by the pixel footprint, sun and sky light, ground shadows,
haze). Each camera adds its own mild sensor noise.

Both views come from the same scene and the textures are functions of the 3-D surface
coordinates, so the right view shows the left one's texture shifted by the disparity
``fx * baseline / depth``: stereo matching on the pair recovers the disparity.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mtdense.data.synthetic.camera import CameraPose, StereoCamera
from mtdense.data.synthetic.materials import _MASKS, _MATERIALS
from mtdense.data.synthetic.sampling import frame_rng, sample_scene
from mtdense.data.synthetic.scene import _U_AXIS, _V_AXIS, SKY, Quad, Scene
from mtdense.data.synthetic.textures import _mix, _noise

__all__ = ["View", "Frame", "render_view", "render_frame"]


_NEAR = 0.3  # metres: nothing nearer the camera is drawn
_MIN_DISPARITY = 1.0 / 256.0  # px: the smallest step of the Cityscapes encoding


@dataclass
class View:
    """One camera's rendering.

    Attributes:
        image: H x W x 3 uint8 RGB.
        depth: H x W float32 depth along the optical axis in metres, 0 = sky (no surface).
        label: H x W uint8 Cityscapes label ids.
        instance: H x W int32 object number (0 = none; cars and persons are numbered).
        normals: H x W x 3 float32 unit normal of the visible surface in this camera's coordinates
            (x right, y down, z forward; the side that faces the camera), all zero for the sky.
    """

    image: np.ndarray
    depth: np.ndarray
    label: np.ndarray
    instance: np.ndarray
    normals: np.ndarray | None = None


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


def _normals(quads: list[Quad], C: np.ndarray, R: np.ndarray) -> np.ndarray:
    """``(1 + len(quads)) x 3`` float32: row 0 (the sky) zero, row ``k + 1`` the unit normal of quad
    ``k`` on the side facing the camera at ``C``, in camera coordinates (``R`` is camera-to-world)."""
    lut = np.zeros((len(quads) + 1, 3), np.float32)
    for k, q in enumerate(quads):
        sign = q.facing or (1 if C[q.axis] > q.c else -1)  # a two-sided quad is seen from the camera's side
        lut[k + 1] = sign * R[q.axis]  # world normal e_axis * sign, rotated into the camera: R^T n
    return lut


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
    return View(image=image, depth=depth, label=label_lut[qid + 1], instance=obj_lut[qid + 1],
                normals=_normals(quads, C, R)[qid + 1])


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


def render_frame(seed: int, split: str, index: int, size: tuple[int, int]) -> Frame:
    """Sample frame ``index`` of ``split`` for ``seed`` and render both views at ``size = (H, W)``."""
    camera = StereoCamera.cityscapes(size)
    scene = sample_scene(frame_rng(seed, split, index, 0))
    left = render_view(scene, camera, None, "left", frame_rng(seed, split, index, 1))
    right = render_view(scene, camera, None, "right", frame_rng(seed, split, index, 2))
    return Frame(left=left, right=right, camera=camera, pose=scene.pose)
