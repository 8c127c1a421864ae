"""Cars parked along the curbs and driving in the lanes, and pedestrians (alone or in groups,
on the sidewalks or crossing); each is one numbered instance."""

from __future__ import annotations

import numpy as np

from mtdense.data.synthetic.scene import CAR, PERSON, _Builder
from mtdense.data.synthetic.textures import _rgb


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
