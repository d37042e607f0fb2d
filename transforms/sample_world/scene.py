"""Compose one sample scene: background, stuff bands, then things in depth order.

The scene keeps, for every object, the mask of the pixels it shows in the
final image (what later objects left visible), so annotations and label maps
are exact and occlusion-aware. Everything is drawn from one
``numpy.random.Generator``: the same seed gives the same pixels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from maskmine.transforms.sample_world.drawing import MAIN, ROLE_COLOURS, draw_object
from maskmine.transforms.sample_world.vocabulary import BY_NAME, COLOURS, OBJECT_COLOURS, STUFF, THINGS, category_id

SIZES = (224, 240, 256, 272, 288, 304, 320)
PLAIN, STRIPED, SPOTTED = "plain", "striped", "spotted"
# Things that fly or float: placed in the sky band when there is one.
SKY_THINGS = frozenset({"sun", "cloud", "bird", "kite", "balloon"})
GROUNDS = ("grass", "sand", "road", "snow", "water")
MIN_VISIBLE_FRACTION = 0.5  # an occluded thing keeps at least this much of itself
MIN_VISIBLE_PIXELS = 120


@dataclass
class SceneObject:
    name: str
    colour: str | None  # the named colour of its main part (None for stuff)
    pattern: str  # plain, striped or spotted
    mask: np.ndarray  # (H, W) bool: the pixels it shows in the final image
    full_area: int  # pixels it covered when drawn, before later objects

    @property
    def kind(self) -> str:
        return BY_NAME[self.name].kind

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def bbox(self) -> tuple[int, int, int, int]:
        ys, xs = np.nonzero(self.mask)
        if xs.size == 0:
            return (0, 0, 0, 0)
        return (int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1))

    def centre(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.mask)
        return float(xs.mean()), float(ys.mean())


@dataclass
class Scene:
    image: np.ndarray  # (H, W, 3) uint8
    objects: list[SceneObject] = field(default_factory=list)  # back to front

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    def label_map(self) -> np.ndarray:
        """Semantic labels (category id - 1), 255 where only background shows."""
        labels = np.full((self.height, self.width), 255, np.uint8)
        for obj in self.objects:
            labels[obj.mask] = category_id(obj.name) - 1
        return labels

    def things(self) -> list[SceneObject]:
        return [o for o in self.objects if o.kind != STUFF]

    def stuff(self) -> list[SceneObject]:
        return [o for o in self.objects if o.kind == STUFF]


# --------------------------------------------------------------------------
# colour and texture


def jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: float = 14.0) -> np.ndarray:
    return np.clip(np.asarray(rgb, np.float32) + rng.normal(0, amount, 3), 0, 255)


def _contrast(rgb: np.ndarray) -> np.ndarray:
    return np.array([250, 250, 250], np.float32) if rgb.mean() < 150 else np.array([30, 30, 30], np.float32)


def make_fill(rng: np.random.Generator, rgb: np.ndarray, pattern: str, h: int, w: int) -> np.ndarray:
    """An (h, w, 3) float texture: shaded colour, stripes or spots."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    shade = 1.0 + rng.uniform(-0.12, 0.12) * (yy / max(h - 1, 1) - 0.5)
    fill = rgb[None, None, :] * shade[..., None]
    if pattern == STRIPED:
        angle = rng.uniform(0, np.pi)
        period = max(4.0, rng.uniform(0.12, 0.22) * max(h, w))
        t = (xx * np.cos(angle) + yy * np.sin(angle)) / period
        fill[(t % 1.0) < 0.5] = _contrast(rgb)
    elif pattern == SPOTTED:
        step = max(5.0, rng.uniform(0.18, 0.28) * max(h, w))
        radius = step * rng.uniform(0.2, 0.3)
        ox, oy = rng.uniform(0, step, 2)
        dx = ((xx + ox) % step) - step / 2
        dy = ((yy + oy) % step) - step / 2
        fill[dx * dx + dy * dy < radius * radius] = _contrast(rgb)
    return np.clip(fill, 0, 255)


def _noise(rng: np.random.Generator, h: int, w: int, scale: float) -> np.ndarray:
    return rng.normal(0, scale, (h, w, 1)).astype(np.float32)


def background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Plain, gradient or noisy background (label 255: no class)."""
    kind = rng.choice(["plain", "gradient", "noise"], p=[0.4, 0.4, 0.2])
    a = rng.uniform(0, 255, 3).astype(np.float32)
    if kind == "plain":
        return np.broadcast_to(a, (h, w, 3)).copy() + _noise(rng, h, w, 3.0)
    if kind == "gradient":
        b = rng.uniform(0, 255, 3).astype(np.float32)
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
        return a * (1 - t) + b * t + np.zeros((h, w, 3), np.float32)
    return np.broadcast_to(a, (h, w, 3)).copy() + _noise(rng, h, w, 25.0)


# --------------------------------------------------------------------------
# stuff bands


def _wavy_edge(rng: np.random.Generator, w: int, y: float, amp: float) -> np.ndarray:
    x = np.arange(w, dtype=np.float32)
    waves = sum(rng.uniform(0, amp) * np.sin(x / rng.uniform(12, 60) + rng.uniform(0, 6.3)) for _ in range(2))
    return y + waves


def stuff_texture(rng: np.random.Generator, name: str, h: int, w: int) -> np.ndarray:
    """The look of a stuff class over the whole canvas (masked by the caller)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    if name == "sky":
        top, bottom = jitter(rng, (70, 130, 230), 15), jitter(rng, (170, 210, 245), 10)
        t = (yy / h)[..., None]
        return top * (1 - t) + bottom * t
    if name == "grass":
        base = jitter(rng, (60, 160, 60), 15) + _noise(rng, h, w, 14.0)
        blades = (rng.random((h, w)) < 0.08)[..., None]
        return np.where(blades, base * 0.6, base)
    if name == "sand":
        base = jitter(rng, (225, 200, 140), 10) + _noise(rng, h, w, 10.0)
        return np.where((rng.random((h, w)) < 0.05)[..., None], base * 0.8, base)
    if name == "snow":
        return jitter(rng, (240, 245, 252), 5) + _noise(rng, h, w, 4.0)
    if name == "water":
        base = jitter(rng, (40, 100, 190), 15) + _noise(rng, h, w, 5.0)
        waves = np.sin(yy / 3.0 + np.sin(xx / 9.0) * 2.0) > 0.85
        return np.where(waves[..., None], base + 60, base)
    if name == "road":
        base = jitter(rng, (70, 70, 75), 8) + _noise(rng, h, w, 6.0)
        return base
    if name == "wall":
        base = jitter(rng, (170, 70, 50), 15) + _noise(rng, h, w, 8.0)
        bh = rng.uniform(8, 14)
        bw = bh * 2.2
        row = np.floor(yy / bh)
        mortar = ((yy % bh) < 1.5) | (((xx + (row % 2) * bw / 2) % bw) < 1.5)
        return np.where(mortar[..., None], np.float32(200), base)
    raise ValueError(f"no texture for stuff {name!r}")


def stuff_masks(rng: np.random.Generator, h: int, w: int) -> list[tuple[str, np.ndarray]]:
    """Which stuff bands the scene has and where (back to front)."""
    out: list[tuple[str, np.ndarray]] = []
    if rng.random() < 0.25:
        return out
    rows = np.arange(h, dtype=np.float32)[:, None]
    ground = rng.choice(GROUNDS) if rng.random() < 0.85 else None
    horizon = rng.uniform(0.45, 0.72) * h
    if rng.random() < 0.65 or ground is None:
        sky_bottom = horizon if ground is not None else rng.uniform(0.4, 0.7) * h
        out.append(("sky", rows < _wavy_edge(rng, w, sky_bottom, 0.0)[None, :]))
    if rng.random() < 0.2:
        top = rng.uniform(0.1, 0.35) * h
        out.append(("wall", (rows >= top) & (rows < horizon + 2)))
    if ground is not None:
        edge = _wavy_edge(rng, w, horizon, 4.0 if ground in ("grass", "sand", "snow", "water") else 0.0)
        mask = rows >= edge[None, :]
        if ground == "road":  # a road is a band with a dashed centre line, both part of it
            mask &= rows < horizon + rng.uniform(0.3, 0.5) * h
        out.append((str(ground), mask))
    full = [(n, np.broadcast_to(m, (h, w)).copy()) for n, m in out]
    return [(n, m) for n, m in full if m.any()]


def _road_markings(rng: np.random.Generator, mask: np.ndarray, canvas: np.ndarray) -> None:
    ys = np.nonzero(mask.any(1))[0]
    if ys.size < 6:
        return
    y = int((ys.min() + ys.max()) / 2)
    dash = int(rng.integers(10, 20))
    xs = np.arange(canvas.shape[1])
    on = (xs // dash) % 2 == 0
    band = np.zeros_like(mask)
    band[y - 1 : y + 2, on] = True
    canvas[band & mask] = (235, 235, 235)


# --------------------------------------------------------------------------
# the scene


def _object_count(rng: np.random.Generator) -> int:
    # Many close-ups of one or two things, as in photo collections: they are
    # what lets a small CLIP tie each word to a shape from whole images alone.
    return int(rng.choice([1, 2, 3, 4, 5, 6], p=[0.25, 0.25, 0.2, 0.15, 0.1, 0.05]))


def _pick_colour(rng: np.random.Generator, name: str) -> str:
    allowed = BY_NAME[name].colours or OBJECT_COLOURS
    return str(rng.choice(allowed))


def _pick_pattern(rng: np.random.Generator, name: str) -> str:
    if not BY_NAME[name].patterned:
        return PLAIN
    return str(rng.choice([PLAIN, STRIPED, SPOTTED], p=[0.7, 0.15, 0.15]))


def generate_scene(rng: np.random.Generator) -> Scene:
    """One random scene; deterministic given the generator's state."""
    h, w = (int(v) for v in rng.choice(SIZES, 2))
    canvas = background(rng, h, w)
    objects: list[SceneObject] = []
    sky_rows = None
    for name, mask in stuff_masks(rng, h, w):
        canvas[mask] = stuff_texture(rng, name, h, w)[mask]
        if name == "road":
            _road_markings(rng, mask, canvas)
        for obj in objects:
            obj.mask &= ~mask
        objects.append(SceneObject(name, None, PLAIN, mask.copy(), int(mask.sum())))
        if name == "sky":
            sky_rows = np.nonzero(mask.any(1))[0]
    count = _object_count(rng)
    largest = {1: 0.9, 2: 0.65, 3: 0.55}.get(count, 0.45)
    placed_names: list[str] = []
    for _ in range(count):
        if placed_names and rng.random() < 0.3:
            name = str(rng.choice(placed_names))  # repeats make counts and plurals
        else:
            name = THINGS[int(rng.integers(len(THINGS)))].name
        colour, pattern = _pick_colour(rng, name), _pick_pattern(rng, name)
        rgb = jitter(rng, COLOURS[colour])
        for _attempt in range(8):
            size = int(rng.uniform(0.2, largest) * min(h, w))
            parts = draw_object(name, rng, size)
            ph, pw = parts[0].mask.shape
            if ph >= h or pw >= w:
                continue
            if name in SKY_THINGS and sky_rows is not None and sky_rows.size > ph:
                y0 = int(rng.integers(0, max(1, sky_rows.max() - ph)))
            else:
                y0 = int(rng.integers(0, h - ph))
            x0 = int(rng.integers(0, w - pw))
            full = np.zeros((h, w), bool)
            for p in parts:
                full[y0 : y0 + ph, x0 : x0 + pw] |= p.mask
            if _keeps_others_visible(objects, full):
                break
        else:
            continue  # no room for it: the scene has one object fewer
        for obj in objects:
            obj.mask &= ~full
        for p in parts:
            region = np.zeros((h, w), bool)
            region[y0 : y0 + ph, x0 : x0 + pw] = p.mask
            if p.role == MAIN:
                fill = make_fill(rng, rgb, pattern, ph, pw)
            else:
                fill = make_fill(rng, jitter(rng, ROLE_COLOURS[p.role], 8.0), PLAIN, ph, pw)
            canvas[y0 : y0 + ph, x0 : x0 + pw][p.mask] = fill[p.mask]
        objects.append(SceneObject(name, colour, pattern, full, int(full.sum())))
        placed_names.append(name)
    image = np.clip(canvas, 0, 255).astype(np.uint8)
    objects = [o for o in objects if o.area > 0]
    return Scene(image=image, objects=objects)


def _keeps_others_visible(objects: list[SceneObject], new: np.ndarray) -> bool:
    """Adding ``new`` on top leaves every earlier thing recognisable."""
    if new.sum() < MIN_VISIBLE_PIXELS:
        return False
    for obj in objects:
        if obj.kind == STUFF:
            continue
        left = int((obj.mask & ~new).sum())
        if left < MIN_VISIBLE_PIXELS or left < MIN_VISIBLE_FRACTION * obj.full_area:
            return False
    return True
