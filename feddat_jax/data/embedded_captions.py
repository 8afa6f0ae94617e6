"""Captions of embedded scenes, true and false, for pretraining the backbone (MLM + ITM).

A foundation model learns to see from image-text pairs that DESCRIBE images, not from the
questions it is later finetuned to answer. Three views of a scene, in the world's standard words:

* ``list``: every object with its cell, size, colour and shape ("top left : small red circle .
  bottom right : green 7 ."), so each word is grounded in one region of the image;
* ``count``: how many objects of each shape or colour ("2 circles , 1 star .");
* ``relation``: where one object is relative to a neighbour ("the red circle is left of the star .").

Each word carries a masking role for masked-language modelling, chosen so that a masked word is
always determined by the image and the rest of the caption: the attributes of one object of a list
(never the cell words that locate it), the numbers of a count, the relation word of a relation.

A false caption changes exactly one fact (one attribute, one count, one relation word), so an
image-text-matching head can only reject it by looking at the right part of the image: these are
the hard negatives that make ITM accuracy a measure of seeing, not of guessing.
"""

from __future__ import annotations

import collections
import dataclasses

import numpy as np

from feddat_jax.data.embedded_lexicon import HUE, SIDE, Lexicon
from feddat_jax.data.embedded_questions import pick, refer
from feddat_jax.data.embedded_world import COLOURS, SHAPES, SIZES, Obj

Scene = tuple[Obj, ...]
VIEWS = ("list", "count", "relation")
KEEP, MAYBE, TARGET = 0, 1, 2  # masking roles: never, sometimes, always (one fact per caption)
_WORLD = Lexicon(axes=frozenset({HUE, SIDE}))  # the standard convention, every word kind
_RELATION_FLIP = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


@dataclasses.dataclass(frozen=True)
class Caption:
    """Words and their masking roles (``KEEP``, ``MAYBE``, ``TARGET``)."""

    words: tuple[str, ...]
    roles: tuple[int, ...]

    @property
    def text(self) -> str:
        return " ".join(self.words)


class _Builder:
    def __init__(self):
        self.words: list[str] = []
        self.roles: list[int] = []

    def add(self, text: str, role: int = KEEP) -> None:
        for word in text.split():
            self.words.append(word)
            self.roles.append(role)

    def build(self) -> Caption:
        return Caption(tuple(self.words), tuple(self.roles))


def _attributes(o: Obj) -> list[str]:
    return [o.colour, str(o.digit)] if o.shape == "digit" else [o.size, o.colour, o.shape]


def _list(scene: Scene, rng: np.random.Generator) -> Caption:
    target = int(rng.integers(len(scene)))
    b = _Builder()
    for i, o in enumerate(scene):
        b.add(f"{_WORLD.cell(o.cell)} :")
        for word in _attributes(o):
            b.add(word, TARGET if i == target else MAYBE)
        b.add(".")
    return b.build()


def _count(counts: dict[str, int], by_colour: bool) -> Caption:
    b = _Builder()
    for i, (key, n) in enumerate(sorted(counts.items())):
        if i:
            b.add(",")
        b.add(str(n), TARGET)
        noun = f"{key} object" if by_colour else key
        b.add(noun if n == 1 else f"{noun}s", MAYBE)
    b.add(".")
    return b.build()


def _relation(scene: Scene, rng: np.random.Generator, truthful: bool) -> Caption | None:
    pairs = [
        (a, o) for a in scene for o in scene if a is not o and (a.row == o.row or a.col == o.col)
    ]
    if not pairs:
        return None
    a, o = pick(rng, pairs)
    if a.row == o.row:
        rel = "left of" if a.col < o.col else "right of"
    else:
        rel = "above" if a.row < o.row else "below"
    ra = refer(a, scene, _WORLD, avoid=("cell", "row"))
    ro = refer(o, scene, _WORLD, avoid=("cell", "row"))
    if ra is None or ro is None:
        return None
    b = _Builder()
    b.add("the")
    b.add(ra, MAYBE)
    b.add("is")
    words = (rel if truthful else _RELATION_FLIP[rel]).split()
    b.add(words[0], TARGET)
    b.add(" ".join(words[1:]) + " the")
    b.add(ro, MAYBE)
    b.add(".")
    return b.build()


def caption(scene: Scene, rng: np.random.Generator, truthful: bool = True) -> Caption:
    """A caption of ``scene`` in a random view; ``truthful=False`` changes exactly one fact."""
    view = pick(rng, VIEWS)
    if view == "relation":
        found = _relation(scene, rng, truthful)
        if found is not None:
            return found
        view = "list"
    if view == "count":
        by_colour = bool(rng.random() < 0.5)
        counts = collections.Counter(o.colour if by_colour else o.shape for o in scene)
        if not truthful:
            key = pick(rng, sorted(counts))
            counts[key] = pick(rng, [k for k in range(1, 5) if k != counts[key]])
        return _count(counts, by_colour)
    return _list(scene if truthful else _change_one(scene, rng), rng)


def _change_one(scene: Scene, rng: np.random.Generator) -> Scene:
    """``scene`` with one attribute of one object changed (colour, shape, size or cell)."""
    index = int(rng.integers(len(scene)))
    o = scene[index]
    free = [c for c in range(4) if all(p.cell != c for p in scene)]
    options = ["colour", "cell"] if o.shape == "digit" else ["colour", "shape", "size", "cell"]
    if not free:
        options.remove("cell")
    what = pick(rng, options)
    if what == "colour":
        colour = pick(rng, [c for c in COLOURS if c != o.colour])
        new = dataclasses.replace(o, colour=colour)
    elif what == "shape":
        new = dataclasses.replace(o, shape=pick(rng, [s for s in SHAPES[:-1] if s != o.shape]))
    elif what == "size":
        new = dataclasses.replace(o, size=SIZES[1 - SIZES.index(o.size)])
    else:
        new = dataclasses.replace(o, cell=pick(rng, free))
    changed = scene[:index] + (new,) + scene[index + 1 :]
    return tuple(sorted(changed, key=lambda p: p.cell))
