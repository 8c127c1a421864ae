"""What a scene is: axis-aligned rectangles (:class:`Quad`) with a label and a material, the
light and the camera pose (:class:`Scene`), and the builder that collects them while sampling.

World axes: X right, Y up, Z forward along the street, in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtdense.data.labels import CLASSES
from mtdense.data.synthetic.camera import CameraPose
from mtdense.data.synthetic.textures import _rgb

__all__ = [
    "Quad", "Scene", "ROAD", "SIDEWALK", "BUILDING", "WALL", "FENCE", "POLE", "LIGHT", "SIGN", "VEGETATION",
    "TERRAIN", "SKY", "PERSON", "CAR",
]


_ID = {c.name: c.id for c in CLASSES if c.id >= 0}
_NAME = {c.id: c.name for c in CLASSES if c.id >= 0}
_HAS_INSTANCES = {c.id for c in CLASSES if c.id >= 0 and c.has_instances}
ROAD, SIDEWALK, BUILDING, WALL, FENCE = _ID["road"], _ID["sidewalk"], _ID["building"], _ID["wall"], _ID["fence"]
POLE, LIGHT, SIGN, VEGETATION, TERRAIN = _ID["pole"], _ID["traffic light"], _ID["traffic sign"], _ID["vegetation"], _ID["terrain"]
SKY, PERSON, CAR = _ID["sky"], _ID["person"], _ID["car"]


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
