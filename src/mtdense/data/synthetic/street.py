"""The street itself: its layout (lanes, parking, curbs, sidewalks), the ground, the lots on each
side (buildings, walls, fences, hedges, parks), the closed far end, and the street furniture
(street lights, trees, sign posts, traffic lights)."""

from __future__ import annotations

import math

import numpy as np

from mtdense.data.synthetic.scene import (
    BUILDING,
    FENCE,
    LIGHT,
    POLE,
    ROAD,
    SIDEWALK,
    SIGN,
    TERRAIN,
    VEGETATION,
    WALL,
    _Builder,
)
from mtdense.data.synthetic.textures import _rgb
from mtdense.data.synthetic.traffic import _CLOTHES


_FACADE_COLORS = _rgb([
    (0.78, 0.72, 0.60), (0.86, 0.82, 0.72), (0.62, 0.36, 0.28), (0.55, 0.53, 0.50), (0.80, 0.78, 0.74),
    (0.74, 0.60, 0.40), (0.60, 0.66, 0.68), (0.66, 0.70, 0.58), (0.50, 0.42, 0.36), (0.84, 0.70, 0.62),
])


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
