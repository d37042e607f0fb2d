"""Drawers for the sample world's things: a class name in, coloured parts out.

A drawer paints one object in its own ``w x h`` box as a list of
:class:`Part` (a boolean mask and a role). The role ``main`` takes the colour
and pattern the scene chose (and the caption names); other roles are fixed
colours (a tree's trunk is brown whatever the crown). Masks are drawn without
anti-aliasing, so the instance mask (the union of the parts) is exactly the set
of pixels the object painted.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw

MAIN = "main"
# The fixed colour (RGB) of each part role but MAIN (the object's own colour, from
# vocabulary.COLOURS), and the parts of draw_object's shapes that take it:
ROLE_COLOURS: dict[str, tuple[int, int, int]] = {
    "dark": (30, 30, 30),  # wheels, eyes, handles, wicks, bottle caps, kite tails, balloon strings, leaf veins
    "white": (245, 245, 245),  # sails, bottle labels, mushroom spots, light checkerboard squares
    "brown": (120, 72, 36),  # doors, tree trunks, masts, apple stems
    "green": (40, 150, 50),  # apple leaves, flower stems
    "yellow": (245, 215, 50),  # flower centres
    "orange": (250, 150, 30),  # beaks, flames, sun rays, kite bows
    "glass": (170, 210, 240),  # house and car windows
    "beige": (225, 205, 165),  # mushroom stems
    "gray": (120, 120, 125),  # flag poles
    "roof": (150, 40, 30),  # house roofs
}

Points = Sequence[tuple[float, float]]


@dataclass
class Part:
    mask: np.ndarray  # (h, w) bool in the object's box
    role: str = MAIN


class Canvas:
    """Draw normalised ([0, 1] box coordinates) primitives into a bool mask."""

    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.img = Image.new("L", (w, h), 0)
        self.draw = ImageDraw.Draw(self.img)

    def _xy(self, pts: Points) -> list[tuple[float, float]]:
        return [(x * (self.w - 1), y * (self.h - 1)) for x, y in pts]

    def polygon(self, pts: Points, fill: int = 255) -> "Canvas":
        self.draw.polygon(self._xy(pts), fill=fill)
        return self

    def ellipse(self, x0: float, y0: float, x1: float, y1: float, fill: int = 255) -> "Canvas":
        (a, b), (c, d) = self._xy([(x0, y0), (x1, y1)])
        self.draw.ellipse((min(a, c), min(b, d), max(a, c), max(b, d)), fill=fill)
        return self

    def rect(self, x0: float, y0: float, x1: float, y1: float, fill: int = 255) -> "Canvas":
        (a, b), (c, d) = self._xy([(x0, y0), (x1, y1)])
        self.draw.rectangle((min(a, c), min(b, d), max(a, c), max(b, d)), fill=fill)
        return self

    def line(self, pts: Points, width: float, fill: int = 255) -> "Canvas":
        px = max(2, int(round(width * min(self.w, self.h))))
        self.draw.line(self._xy(pts), fill=fill, width=px)
        return self

    def mask(self) -> np.ndarray:
        return np.asarray(self.img) > 0


def rotate(pts: Points, angle: float, cx: float = 0.5, cy: float = 0.5) -> list[tuple[float, float]]:
    """Rotate normalised points about (cx, cy) by ``angle`` radians."""
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in pts]


def regular_polygon(n: int, radius: float = 0.5, phase: float = 0.0) -> list[tuple[float, float]]:
    return [
        (0.5 + radius * math.cos(phase + 2 * math.pi * k / n), 0.5 + radius * math.sin(phase + 2 * math.pi * k / n))
        for k in range(n)
    ]


def star_points(n: int = 5, outer: float = 0.5, inner: float = 0.2, phase: float = -math.pi / 2) -> list[tuple[float, float]]:
    pts = []
    for k in range(2 * n):
        r = outer if k % 2 == 0 else inner
        a = phase + math.pi * k / n
        pts.append((0.5 + r * math.cos(a), 0.5 + r * math.sin(a)))
    return pts


def _one(w: int, h: int) -> Canvas:
    return Canvas(w, h)


# --------------------------------------------------------------------------
# shapes


def draw_circle(rng, w, h):
    return [Part(_one(w, h).ellipse(0, 0, 1, 1).mask())]


def draw_square(rng, w, h):
    a = rng.uniform(-0.35, 0.35)
    r = 0.5 / (abs(math.cos(a)) + abs(math.sin(a)))  # keep the corners inside the box
    pts = rotate([(0.5 - r, 0.5 - r), (0.5 + r, 0.5 - r), (0.5 + r, 0.5 + r), (0.5 - r, 0.5 + r)], a)
    return [Part(_one(w, h).polygon(pts).mask())]


def draw_triangle(rng, w, h):
    apex = rng.uniform(0.3, 0.7)
    pts = [(apex, 0.0), (1.0, 1.0), (0.0, 1.0)]
    if rng.random() < 0.25:
        pts = [(x, 1 - y) for x, y in pts]
    return [Part(_one(w, h).polygon(pts).mask())]


def draw_star(rng, w, h):
    n = int(rng.choice([5, 5, 5, 6]))
    return [Part(_one(w, h).polygon(star_points(n, 0.5, rng.uniform(0.18, 0.26), -math.pi / 2 + rng.uniform(-0.3, 0.3))).mask())]


def draw_heart(rng, w, h):
    c = _one(w, h).ellipse(0.0, 0.0, 0.54, 0.5).ellipse(0.46, 0.0, 1.0, 0.5)
    c.polygon([(0.02, 0.33), (0.98, 0.33), (0.5, 1.0)])
    return [Part(c.mask())]


def draw_diamond(rng, w, h):
    return [Part(_one(w, h).polygon([(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]).mask())]


def draw_ring(rng, w, h):
    t = rng.uniform(0.2, 0.3)
    outer = _one(w, h).ellipse(0, 0, 1, 1).mask()
    inner = _one(w, h).ellipse(t, t, 1 - t, 1 - t).mask()
    return [Part(outer & ~inner)]


def draw_crescent(rng, w, h):
    shift = rng.uniform(0.25, 0.4)
    outer = _one(w, h).ellipse(0, 0, 1, 1).mask()
    cut = _one(w, h).ellipse(shift, -0.05, 1 + shift, 0.95).mask()
    mask = outer & ~cut
    if rng.random() < 0.5:
        mask = mask[:, ::-1].copy()
    return [Part(mask)]


def draw_hexagon(rng, w, h):
    return [Part(_one(w, h).polygon(regular_polygon(6, 0.5, rng.uniform(0, math.pi / 3))).mask())]


# --------------------------------------------------------------------------
# objects


def draw_house(rng, w, h):
    roof_h = rng.uniform(0.3, 0.42)
    body = _one(w, h).rect(0.1, roof_h, 0.9, 1.0).mask()
    roof = _one(w, h).polygon([(0.0, roof_h + 0.02), (0.5, 0.0), (1.0, roof_h + 0.02)]).mask()
    door = _one(w, h).rect(0.42, 0.7, 0.58, 1.0).mask()
    window = _one(w, h).rect(0.2, roof_h + 0.12, 0.34, roof_h + 0.27).rect(0.66, roof_h + 0.12, 0.8, roof_h + 0.27).mask()
    return [Part(body), Part(roof, "roof"), Part(door, "brown"), Part(window, "glass")]


def draw_tree(rng, w, h):
    crown_bottom = rng.uniform(0.6, 0.72)
    trunk = _one(w, h).rect(0.42, crown_bottom - 0.1, 0.58, 1.0).mask()
    if rng.random() < 0.5:
        crown = _one(w, h).ellipse(0.0, 0.0, 1.0, crown_bottom).mask()
    else:  # a fir
        crown = _one(w, h).polygon([(0.5, 0.0), (1.0, crown_bottom), (0.0, crown_bottom)]).mask()
    return [Part(crown), Part(trunk & ~crown, "brown")]


def draw_flower(rng, w, h):
    head = 0.62
    n = int(rng.integers(5, 8))
    c = _one(w, h)
    for k in range(n):
        a = 2 * math.pi * k / n
        cx, cy = 0.5 + 0.25 * math.cos(a), head / 2 + 0.2 * math.sin(a)
        c.ellipse(cx - 0.17, cy - 0.14, cx + 0.17, cy + 0.14)
    centre = _one(w, h).ellipse(0.38, head / 2 - 0.1, 0.62, head / 2 + 0.1).mask()
    stem = _one(w, h).line([(0.5, head / 2), (0.5, 1.0)], 0.06).polygon([(0.5, 0.8), (0.75, 0.7), (0.5, 0.9)]).mask()
    petals = c.mask() & ~centre
    return [Part(petals), Part(centre, "yellow"), Part(stem & ~petals & ~centre, "green")]


def draw_sun(rng, w, h):
    disc = _one(w, h).ellipse(0.22, 0.22, 0.78, 0.78).mask()
    rays = _one(w, h).polygon(star_points(int(rng.integers(8, 13)), 0.5, 0.3, rng.uniform(0, 1))).mask()
    return [Part(disc), Part(rays & ~disc, "orange")]


def draw_cloud(rng, w, h):
    c = _one(w, h).ellipse(0.0, 0.35, 0.45, 1.0).ellipse(0.55, 0.35, 1.0, 1.0)
    c.ellipse(0.2, 0.05, 0.65, 0.75).ellipse(0.45, 0.2, 0.85, 0.8).rect(0.2, 0.6, 0.8, 1.0)
    return [Part(c.mask())]


def draw_car(rng, w, h):
    body = _one(w, h).rect(0.0, 0.4, 1.0, 0.8).polygon([(0.2, 0.42), (0.32, 0.1), (0.72, 0.1), (0.85, 0.42)]).mask()
    glass = _one(w, h).polygon([(0.3, 0.4), (0.37, 0.18), (0.5, 0.18), (0.5, 0.4)]).polygon([(0.55, 0.4), (0.55, 0.18), (0.68, 0.18), (0.76, 0.4)]).mask()
    wheels = _one(w, h).ellipse(0.1, 0.62, 0.32, 1.0).ellipse(0.68, 0.62, 0.9, 1.0).mask()
    parts = [Part(body & ~glass & ~wheels), Part(glass, "glass"), Part(wheels, "dark")]
    return _maybe_mirror(rng, parts)


def draw_boat(rng, w, h):
    hull = _one(w, h).polygon([(0.0, 0.68), (1.0, 0.68), (0.82, 1.0), (0.18, 1.0)]).mask()
    mast = _one(w, h).rect(0.47, 0.0, 0.52, 0.7).mask()
    sail = _one(w, h).polygon([(0.55, 0.02), (0.55, 0.62), (0.95, 0.62)]).polygon([(0.45, 0.12), (0.45, 0.62), (0.12, 0.62)]).mask()
    return _maybe_mirror(rng, [Part(hull), Part(mast & ~hull, "brown"), Part(sail, "white")])


def draw_fish(rng, w, h):
    body = _one(w, h).ellipse(0.0, 0.15, 0.75, 0.85).mask()
    tail = _one(w, h).polygon([(0.65, 0.5), (1.0, 0.1), (1.0, 0.9)]).mask()
    eye = _one(w, h).ellipse(0.12, 0.36, 0.22, 0.5).mask()
    return _maybe_mirror(rng, [Part((body | tail) & ~eye), Part(eye, "dark")])


def draw_bird(rng, w, h):
    body = _one(w, h).ellipse(0.1, 0.35, 0.8, 0.85).ellipse(0.55, 0.15, 0.9, 0.5).polygon([(0.15, 0.55), (0.0, 0.35), (0.0, 0.7)]).mask()
    wing = _one(w, h).polygon([(0.25, 0.55), (0.6, 0.55), (0.35, 0.1)]).mask()
    beak = _one(w, h).polygon([(0.88, 0.28), (1.0, 0.34), (0.88, 0.4)]).mask()
    eye = _one(w, h).ellipse(0.72, 0.26, 0.79, 0.33).mask()
    return _maybe_mirror(rng, [Part(body & ~eye & ~beak), Part(wing & ~body, "main"), Part(beak & ~body, "orange"), Part(eye, "dark")])


def draw_umbrella(rng, w, h):
    canopy = _one(w, h).ellipse(0.0, 0.0, 1.0, 0.9).mask()
    canopy[int(h * 0.45):, :] = False
    handle = _one(w, h).line([(0.5, 0.4), (0.5, 0.9), (0.42, 0.98), (0.33, 0.9)], 0.06).mask()
    return [Part(canopy), Part(handle & ~canopy, "dark")]


def draw_cup(rng, w, h):
    body = _one(w, h).polygon([(0.05, 0.1), (0.75, 0.1), (0.68, 1.0), (0.12, 1.0)]).mask()
    handle = _one(w, h).ellipse(0.55, 0.25, 1.0, 0.75).mask() & ~_one(w, h).ellipse(0.66, 0.36, 0.9, 0.64).mask()
    return _maybe_mirror(rng, [Part(body), Part(handle & ~body, "main")])


def draw_kite(rng, w, h):
    kite = _one(w, h).polygon([(0.55, 0.0), (0.95, 0.3), (0.55, 0.7), (0.15, 0.3)]).mask()
    tail = _one(w, h).line([(0.55, 0.7), (0.45, 0.8), (0.6, 0.9), (0.5, 1.0)], 0.03).mask()
    bows = _one(w, h).polygon([(0.4, 0.78), (0.5, 0.8), (0.4, 0.84)]).polygon([(0.55, 0.88), (0.65, 0.9), (0.55, 0.94)]).mask()
    return [Part(kite), Part(tail & ~kite & ~bows, "dark"), Part(bows & ~kite, "orange")]


def draw_mushroom(rng, w, h):
    cap = _one(w, h).ellipse(0.0, 0.0, 1.0, 1.0).mask()
    cap[int(h * 0.55):, :] = False
    stem = _one(w, h).rect(0.35, 0.5, 0.65, 1.0).mask() & ~cap
    dots = _one(w, h).ellipse(0.2, 0.2, 0.32, 0.32).ellipse(0.5, 0.1, 0.62, 0.22).ellipse(0.7, 0.3, 0.82, 0.42).mask() & cap
    return [Part(cap & ~dots), Part(dots, "white"), Part(stem, "beige")]


def draw_ladder(rng, w, h):
    c = _one(w, h).rect(0.1, 0.0, 0.22, 1.0).rect(0.78, 0.0, 0.9, 1.0)
    n = int(rng.integers(4, 7))
    for k in range(n):
        y = (k + 0.5) / n
        c.rect(0.1, y - 0.03, 0.9, y + 0.03)
    return [Part(c.mask())]


def draw_apple(rng, w, h):
    body = _one(w, h).ellipse(0.0, 0.2, 0.55, 1.0).ellipse(0.45, 0.2, 1.0, 1.0).mask()
    stem = _one(w, h).rect(0.47, 0.02, 0.53, 0.3).mask() & ~body
    leaf = _one(w, h).polygon([(0.53, 0.15), (0.75, 0.0), (0.85, 0.1), (0.6, 0.2)]).mask() & ~body & ~stem
    return [Part(body), Part(stem, "brown"), Part(leaf, "green")]


def draw_balloon(rng, w, h):
    body = _one(w, h).ellipse(0.1, 0.0, 0.9, 0.68).polygon([(0.45, 0.65), (0.55, 0.65), (0.5, 0.72)]).mask()
    string = _one(w, h).line([(0.5, 0.7), (0.42, 0.85), (0.52, 1.0)], 0.025).mask() & ~body
    return [Part(body), Part(string, "dark")]


def draw_bottle(rng, w, h):
    c = _one(w, h).rect(0.2, 0.4, 0.8, 1.0).polygon([(0.2, 0.42), (0.38, 0.25), (0.62, 0.25), (0.8, 0.42)]).rect(0.38, 0.05, 0.62, 0.3)
    cap = _one(w, h).rect(0.36, 0.0, 0.64, 0.08).mask()
    label = _one(w, h).rect(0.2, 0.55, 0.8, 0.78).mask()
    return [Part(c.mask() & ~cap & ~label), Part(cap, "dark"), Part(label, "white")]


def draw_candle(rng, w, h):
    body = _one(w, h).rect(0.25, 0.35, 0.75, 1.0).mask()
    wick = _one(w, h).rect(0.47, 0.27, 0.53, 0.36).mask() & ~body
    flame = _one(w, h).ellipse(0.36, 0.05, 0.64, 0.3).polygon([(0.38, 0.14), (0.5, 0.0), (0.62, 0.14)]).mask() & ~wick & ~body
    return [Part(body), Part(wick, "dark"), Part(flame, "orange")]


def draw_leaf(rng, w, h):
    pts = [(0.5, 0.0)] + [(0.5 + 0.48 * math.sin(math.pi * t), t) for t in np.linspace(0.1, 0.9, 7)] + [(0.5, 1.0)]
    pts += [(0.5 - 0.48 * math.sin(math.pi * t), t) for t in np.linspace(0.9, 0.1, 7)]
    a = rng.uniform(-0.5, 0.5)
    leaf = _one(w, h).polygon(rotate(pts, a)).mask()
    vein = _one(w, h).line(rotate([(0.5, 0.1), (0.5, 0.95)], a), 0.03).mask() & leaf
    return [Part(leaf & ~vein), Part(vein, "dark")]


def draw_arrow(rng, w, h):
    pts = [(0.0, 0.4), (0.6, 0.4), (0.6, 0.15), (1.0, 0.5), (0.6, 0.85), (0.6, 0.6), (0.0, 0.6)]
    k = int(rng.integers(0, 4))
    pts = rotate(pts, k * math.pi / 2 + rng.uniform(-0.3, 0.3))
    return [Part(_one(w, h).polygon(pts).mask())]


def draw_fence(rng, w, h):
    c = _one(w, h)
    n = int(rng.integers(4, 7))
    step = 1.0 / n
    for k in range(n):
        x0, x1 = k * step + 0.15 * step, (k + 1) * step - 0.15 * step
        c.polygon([(x0, 0.15), ((x0 + x1) / 2, 0.0), (x1, 0.15), (x1, 1.0), (x0, 1.0)])
    c.rect(0.0, 0.3, 1.0, 0.4).rect(0.0, 0.7, 1.0, 0.8)
    return [Part(c.mask())]


def draw_flag(rng, w, h):
    pole = _one(w, h).rect(0.0, 0.0, 0.07, 1.0).mask()
    cloth = _one(w, h).polygon([(0.07, 0.03), (1.0, 0.08), (0.95, 0.5), (0.07, 0.55)]).mask()
    return _maybe_mirror(rng, [Part(cloth), Part(pole, "gray")])


def draw_checkerboard(rng, w, h):
    board = np.ones((h, w), bool)
    n = int(rng.choice([4, 6, 8]))
    yy, xx = np.mgrid[0:h, 0:w]
    light = ((yy * n // h) + (xx * n // w)) % 2 == 1
    return [Part(board & ~light), Part(board & light, "white")]


def draw_mountain(rng, w, h):
    peak = rng.uniform(0.35, 0.65)
    body = _one(w, h).polygon([(0.0, 1.0), (peak, 0.0), (1.0, 1.0)]).mask()
    cap = _one(w, h).polygon([(peak - 0.15, 0.3), (peak, 0.0), (peak + 0.15, 0.3), (peak + 0.05, 0.24), (peak - 0.04, 0.3)]).mask() & body
    return [Part(body & ~cap), Part(cap, "white")]


def draw_envelope(rng, w, h):
    body = _one(w, h).rect(0.0, 0.15, 1.0, 0.85).mask()
    lines = _one(w, h).line([(0.0, 0.15), (0.5, 0.55), (1.0, 0.15)], 0.04).mask() & body
    return [Part(body & ~lines), Part(lines, "dark")]


def draw_clock(rng, w, h):
    rim = _one(w, h).ellipse(0, 0, 1, 1).mask()
    face = _one(w, h).ellipse(0.12, 0.12, 0.88, 0.88).mask()
    a, b = rng.uniform(0, 2 * math.pi, size=2)
    hands = _one(w, h).line([(0.5 + 0.3 * math.cos(a), 0.5 + 0.3 * math.sin(a)), (0.5, 0.5), (0.5 + 0.2 * math.cos(b), 0.5 + 0.2 * math.sin(b))], 0.05).mask() & face
    return [Part(rim & ~face), Part(face & ~hands, "white"), Part(hands, "dark")]


def _maybe_mirror(rng, parts: list[Part]) -> list[Part]:
    if rng.random() < 0.5:
        return [Part(p.mask[:, ::-1].copy(), p.role) for p in parts]
    return parts


# (drawer, aspect range w/h): the box is sized from one side and this ratio.
DRAWERS: dict[str, tuple[Callable, tuple[float, float]]] = {
    "circle": (draw_circle, (1.0, 1.0)),
    "square": (draw_square, (1.0, 1.0)),
    "triangle": (draw_triangle, (0.8, 1.25)),
    "star": (draw_star, (1.0, 1.0)),
    "heart": (draw_heart, (1.0, 1.1)),
    "diamond": (draw_diamond, (0.6, 0.8)),
    "ring": (draw_ring, (1.0, 1.0)),
    "crescent": (draw_crescent, (1.0, 1.0)),
    "hexagon": (draw_hexagon, (1.0, 1.0)),
    "house": (draw_house, (0.9, 1.2)),
    "tree": (draw_tree, (0.6, 0.8)),
    "flower": (draw_flower, (0.6, 0.75)),
    "sun": (draw_sun, (1.0, 1.0)),
    "cloud": (draw_cloud, (1.5, 2.0)),
    "car": (draw_car, (1.7, 2.1)),
    "boat": (draw_boat, (1.0, 1.3)),
    "fish": (draw_fish, (1.5, 1.9)),
    "bird": (draw_bird, (1.2, 1.5)),
    "umbrella": (draw_umbrella, (1.0, 1.2)),
    "cup": (draw_cup, (1.0, 1.2)),
    "kite": (draw_kite, (0.7, 0.85)),
    "mushroom": (draw_mushroom, (0.9, 1.1)),
    "ladder": (draw_ladder, (0.4, 0.55)),
    "apple": (draw_apple, (0.9, 1.0)),
    "balloon": (draw_balloon, (0.55, 0.7)),
    "bottle": (draw_bottle, (0.35, 0.45)),
    "candle": (draw_candle, (0.35, 0.45)),
    "leaf": (draw_leaf, (0.6, 0.8)),
    "arrow": (draw_arrow, (1.0, 1.0)),
    "fence": (draw_fence, (1.4, 2.0)),
    "flag": (draw_flag, (1.0, 1.3)),
    "checkerboard": (draw_checkerboard, (1.0, 1.0)),
    "mountain": (draw_mountain, (1.3, 1.8)),
    "envelope": (draw_envelope, (1.4, 1.7)),
    "clock": (draw_clock, (1.0, 1.0)),
}


def draw_object(name: str, rng: np.random.Generator, size: int) -> list[Part]:
    """Parts of one ``name`` whose larger side is ``size`` pixels."""
    drawer, (lo, hi) = DRAWERS[name]
    aspect = rng.uniform(lo, hi)
    if aspect >= 1:
        w, h = size, max(8, int(round(size / aspect)))
    else:
        w, h = max(8, int(round(size * aspect))), size
    parts = [p for p in drawer(rng, w, h) if p.mask.any()]
    return parts
