"""The embedded benchmark's visual world: scenes of shapes and real handwritten digits, and how
they are drawn.

A scene is at most four objects on a 2x2 grid (one per cell), so that every question about
colour, shape, count, position or relation has one unambiguous answer in the pixels. Digits are
scikit-learn's 8x8 handwritten digits (real scans), pasted in as objects tinted with the object's
colour; train and test scenes draw from disjoint halves of them so test digits are unseen hands.
A :class:`Style` (palette, background texture, outline vs filled, pixel noise) is what makes the
domain clients look different while asking the same questions. Everything is a pure function of
its arguments and a seeded ``np.random.Generator``, so the same seed gives the same bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import io

import numpy as np
from PIL import Image, ImageDraw

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "diamond", "star", "digit")  # what pretraining draws
# Shapes of the benchmark's field that the pretraining corpus never draws or names (a chevron, a
# ring and a plus-shaped cross, called by the field's terms): the shared knowledge the clients'
# adapters have to learn from each other (docs/BENCHMARK.md). Their words are in the backbone's
# vocabulary with untrained embeddings.
FIELD_SHAPES = ("delta", "gem", "spark")
BENCHMARK_SHAPES = SHAPES[:-1] + FIELD_SHAPES + ("digit",)
SIZES = ("small", "large")
CELLS = ("top left", "top right", "bottom left", "bottom right")  # cell = 2 * row + column
BACKGROUNDS = ("plain", "gradient", "stripes", "checker", "speckle")

_VIVID = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
_SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class Obj:
    """One object: ``digit``/``digit_index`` are set only for shape 'digit'."""

    shape: str
    colour: str
    size: str
    cell: int
    digit: int = -1
    digit_index: int = -1

    @property
    def row(self) -> int:
        return self.cell // 2

    @property
    def col(self) -> int:
        return self.cell % 2


@dataclasses.dataclass(frozen=True)
class Style:
    """How a scene is drawn. ``tint`` mixes the vivid palette towards white (>0) or black (<0)."""

    name: str
    tint: float = 0.0
    background: str = "plain"
    bg_colours: tuple[tuple[int, int, int], tuple[int, int, int]] = (
        (245, 245, 245),
        (225, 225, 225),
    )
    outline: bool = False
    noise: float = 0.0

    def rgb(self, colour: str) -> tuple[int, int, int]:
        base = np.array(_VIVID[colour], np.float64)
        target = 255.0 if self.tint > 0 else 0.0
        mixed = base + abs(self.tint) * (target - base)
        return tuple(int(round(v)) for v in mixed)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


def digit_pool(part: str) -> np.ndarray:
    """Indices of the digit images a split may use: train and test use disjoint halves."""
    n = len(_digits()[1])
    idx = np.arange(n)
    return idx[idx % 2 == 0] if part == "train" else idx[idx % 2 == 1]


def digit_value(index: int) -> int:
    return int(_digits()[1][index])


def sample_scene(
    rng: np.random.Generator,
    shapes: tuple[str, ...],
    colours: tuple[str, ...],
    part: str,
    min_objects: int = 1,
    max_objects: int = 4,
) -> tuple[Obj, ...]:
    """A random scene of ``min..max`` objects in distinct cells, drawn from the allowed sets."""
    count = int(rng.integers(min_objects, max_objects + 1))
    cells = rng.permutation(4)[:count]
    pool = digit_pool(part)
    objs = []
    for cell in sorted(int(c) for c in cells):
        shape = str(rng.choice(shapes))
        colour = str(rng.choice(colours))
        size = str(rng.choice(SIZES))
        if shape == "digit":
            index = int(rng.choice(pool))
            objs.append(Obj(shape, colour, "large", cell, digit_value(index), index))
        else:
            objs.append(Obj(shape, colour, size, cell))
    return tuple(objs)


def _background(style: Style, size: int, rng: np.random.Generator) -> np.ndarray:
    c1, c2 = (np.array(c, np.float64) for c in style.bg_colours)
    yy, xx = np.mgrid[0:size, 0:size]
    if style.background == "plain":
        t = np.zeros((size, size))
    elif style.background == "gradient":
        t = yy / max(size - 1, 1)
    elif style.background == "stripes":
        t = (((xx + yy) // max(size // 8, 1)) % 2).astype(np.float64)
    elif style.background == "checker":
        t = (((xx // max(size // 8, 1)) + (yy // max(size // 8, 1))) % 2).astype(np.float64)
    elif style.background == "speckle":
        t = (rng.random((size, size)) < 0.25).astype(np.float64)
    else:
        raise ValueError(f"background {style.background!r} is not one of {BACKGROUNDS}")
    return c1 + t[..., None] * (c2 - c1)


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        s = r * 0.85
        return [(cx - s, cy - s), (cx + s, cy - s), (cx + s, cy + s), (cx - s, cy + s)]
    if shape == "triangle":
        return [(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "delta":  # a chevron: a triangle with a notch cut from its base
        return [(cx, cy - r), (cx + r, cy + r), (cx, cy + r * 0.25), (cx - r, cy + r)]
    if shape == "spark":  # a plus-shaped cross
        a = r * 0.36
        return [
            (cx - a, cy - r), (cx + a, cy - r), (cx + a, cy - a), (cx + r, cy - a),
            (cx + r, cy + a), (cx + a, cy + a), (cx + a, cy + r), (cx - a, cy + r),
            (cx - a, cy + a), (cx - r, cy + a), (cx - r, cy - a), (cx - a, cy - a),
        ]  # fmt: skip
    if shape == "star":
        angles = -np.pi / 2 + np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        return [(cx + q * np.cos(a), cy + q * np.sin(a)) for a, q in zip(angles, radii)]
    raise ValueError(f"no polygon for shape {shape!r}")


def _object_box(obj: Obj, size: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """Centre and radius, in supersampled pixels, of an object jittered inside its cell."""
    cell = size * _SUPERSAMPLE / 2
    r = cell * (0.42 if obj.size == "large" else 0.26)
    slack = cell / 2 - r
    cx = (obj.col + 0.5) * cell + rng.uniform(-0.6, 0.6) * slack
    cy = (obj.row + 0.5) * cell + rng.uniform(-0.6, 0.6) * slack
    return cx, cy, r


def render(scene: tuple[Obj, ...], style: Style, size: int, rng: np.random.Generator) -> np.ndarray:
    """Draw ``scene`` as a uint8 [size, size, 3] image (supersampled, then box-downsampled)."""
    big = size * _SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), (0, 0, 0))
    alpha = Image.new("L", (big, big), 0)
    colour_layer = ImageDraw.Draw(canvas)
    alpha_layer = ImageDraw.Draw(alpha)
    width = max(_SUPERSAMPLE, big // 20)
    for obj in scene:
        cx, cy, r = _object_box(obj, size, rng)
        rgb = style.rgb(obj.colour)
        if obj.shape == "digit":
            side = int(round(2 * r))
            glyph = Image.fromarray((_digits()[0][obj.digit_index] * 255).astype(np.uint8))
            glyph = glyph.resize((side, side), Image.BILINEAR)
            box = (int(round(cx - r)), int(round(cy - r)))
            canvas.paste(Image.new("RGB", (side, side), rgb), box, glyph)
            alpha.paste(glyph, box)
            continue
        for draw, fill in ((colour_layer, rgb), (alpha_layer, 255)):
            kw = {"outline": fill, "width": width} if style.outline else {"fill": fill}
            if obj.shape in ("circle", "gem"):
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), **kw)
                if obj.shape == "gem":  # a ring: the disc with its middle cut out
                    hole = r * 0.5
                    kw = {"outline": fill, "width": width} if style.outline else {"fill": 0}
                    draw.ellipse((cx - hole, cy - hole, cx + hole, cy + hole), **kw)
            else:
                draw.polygon(_polygon(obj.shape, cx, cy, r), **kw)
    # Objects are drawn on black, so the downsampled layer is already alpha-premultiplied.
    fg = np.asarray(canvas.reduce(_SUPERSAMPLE), np.float64)
    a = np.asarray(alpha.reduce(_SUPERSAMPLE), np.float64)[..., None] / 255.0
    image = _background(style, size, rng) * (1 - a) + fg
    if style.noise > 0:
        image = image + rng.normal(0.0, style.noise, image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()
