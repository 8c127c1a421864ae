"""Materials and shape masks of the rectangles, looked up by name in :data:`_MATERIALS` and
:data:`_MASKS`.

A material is ``(quad, s, r, u, v, fp) -> n x 3`` colour in [0, 1] before lighting, with
``s, r`` metres from the rectangle's corner ``(u0, v0)``, ``u, v`` world in-plane coordinates
and ``fp`` the pixel footprint on the surface in metres. A shape mask is
``(quad, s, r) -> n`` bool: which points of the rectangle belong to the shape.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mtdense.data.synthetic.scene import Quad
from mtdense.data.synthetic.textures import _box, _cell, _fade, _fbm, _grid, _mix, _noise, _rgb


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
