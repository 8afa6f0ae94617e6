"""Templated questions about an embedded scene, each answerable from the pixels alone.

Every generator takes ``(scene, rng, phrasing)`` and returns a :class:`Question` or ``None`` when
the scene cannot support it (the caller then draws another scene). Referring expressions are
built to be unique in the scene and never to contain the attribute being asked about, so a model
must look at the image. ``phrasing`` picks one of several wordings (the domain clients' phrasing
shift); the meaning, and the answer, do not change with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from feddat_jax.data.embedded_world import CELLS, COLOURS, SHAPES, SIZES, Obj

Scene = tuple[Obj, ...]


@dataclasses.dataclass(frozen=True)
class Question:
    """``alternatives`` are the plausible wrong answers (for simulated annotator noise)."""

    text: str
    answer: str
    alternatives: tuple[str, ...]


Generator = Callable[[Scene, np.random.Generator, int], "Question | None"]

_CORNERS = {"circle": "0", "square": "4", "triangle": "3", "diamond": "4", "star": "10"}
_KIND = {
    "circle": "curve",
    "square": "polygon",
    "triangle": "polygon",
    "diamond": "polygon",
    "star": "polygon",
    "digit": "number",
}
_COUNTS = tuple(str(n) for n in range(5))
_YESNO = ("yes", "no")
# (row offset, column offset) of the asked-about object relative to the reference one.
_RELATIONS = {"left of": (0, -1), "right of": (0, 1), "above": (-1, 0), "below": (1, 0)}


def pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def article(word: str) -> str:
    """``word`` with its indefinite article."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _matches(o: Obj, target: Obj, use: tuple[str, ...]) -> bool:
    return all(getattr(o, a) == getattr(target, a) for a in use)


def refer(obj: Obj, scene: Scene, avoid: str) -> str | None:
    """The shortest unique description of ``obj`` that does not mention attribute ``avoid``."""
    options = [
        ("shape",),
        ("colour", "shape"),
        ("size", "shape"),
        ("shape", "cell"),
        ("colour",),
        ("size", "colour"),
        ("cell",),
    ]
    for use in options:
        if avoid in use or ("size" in use and obj.shape == "digit"):
            continue
        if sum(_matches(o, obj, use) for o in scene) == 1:
            words = [getattr(obj, a) for a in ("size", "colour") if a in use]
            words.append(obj.shape if "shape" in use else "object")
            text = " ".join(words)
            return f"{text} in the {CELLS[obj.cell]}" if "cell" in use else text
    return None


def _ask(templates: tuple[str, ...], phrasing: int, **kw) -> str:
    return templates[phrasing % len(templates)].format(**kw)


def colour_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    obj = pick(rng, scene)
    ref = refer(obj, scene, avoid="colour")
    templates = (
        "what color is the {ref}?",
        "which colour does the {ref} have?",
        "tell me the colour of the {ref}.",
        "the {ref} is painted in which colour?",
        "colour of {ref}?",
    )
    if ref is None:
        return None
    return Question(_ask(templates, phrasing, ref=ref), obj.colour, COLOURS)


def size_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    obj = pick(rng, scene)
    ref = refer(obj, scene, avoid="size") if obj.shape != "digit" else None
    if ref is None:
        return None
    return Question(f"what size is the {ref}?", obj.size, SIZES)


def shape_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    obj = pick(rng, scene)
    ref = refer(obj, scene, avoid="shape")
    templates = (
        "what shape is the {ref}?",
        "which shape does the {ref} have?",
        "tell me the shape of the {ref}.",
        "the {ref} is drawn as which shape?",
        "shape of {ref}?",
    )
    if ref is None:
        return None
    return Question(_ask(templates, phrasing, ref=ref), obj.shape, SHAPES)


def cell_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question:
    cell = int(rng.integers(4))
    found = [o.shape for o in scene if o.cell == cell]
    answer = found[0] if found else "nothing"
    return Question(f"what is in the {CELLS[cell]}?", answer, SHAPES + ("nothing",))


def colour_to_count(scene: Scene, rng: np.random.Generator) -> str:
    return pick(rng, [o.colour for o in scene]) if rng.random() < 0.7 else pick(rng, COLOURS)


def count_colour_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question:
    colour = colour_to_count(scene, rng)
    n = sum(o.colour == colour for o in scene)
    templates = (
        "how many {c} objects are there?",
        "what is the number of {c} things?",
        "count the {c} objects.",
        "how many things are {c}?",
        "number of {c} objects?",
    )
    return Question(_ask(templates, phrasing, c=colour), str(n), _COUNTS)


def count_shape_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question:
    shape = pick(rng, [o.shape for o in scene]) if rng.random() < 0.7 else pick(rng, SHAPES)
    n = sum(o.shape == shape for o in scene)
    return Question(f"how many {shape}s are there?", str(n), _COUNTS)


def thing(scene: Scene, rng: np.random.Generator, present: bool) -> tuple[str, str]:
    """A (colour, shape) pair that is (or is not) in the scene."""
    if present:
        o = pick(rng, scene)
        return o.colour, o.shape
    inside = {(o.colour, o.shape) for o in scene}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in inside]
    return pick(rng, absent)


def exists_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question:
    present = bool(rng.random() < 0.5)
    colour, shape = thing(scene, rng, present)
    templates = (
        "is there {ac} {s}?",
        "does the picture contain {ac} {s}?",
        "can you see {ac} {s}?",
        "is {ac} {s} shown?",
        "{c} {s} present?",
    )
    text = _ask(templates, phrasing, ac=article(colour), c=colour, s=shape)
    return Question(text, _YESNO[not present], _YESNO)


def logic_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    op = "and" if rng.random() < 0.5 else "or"
    p1, p2 = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
    (c1, s1), (c2, s2) = thing(scene, rng, p1), thing(scene, rng, p2)
    if (c1, s1) == (c2, s2):
        return None
    truth = (p1 and p2) if op == "and" else (p1 or p2)
    text = f"is there {article(c1)} {s1} {op} {article(c2)} {s2}?"
    return Question(text, _YESNO[not truth], _YESNO)


def _neighbours(scene: Scene, rng: np.random.Generator) -> tuple[Obj, Obj, str] | None:
    """(asked, reference, relation) for two objects sharing a row or column, or None."""
    pairs = [
        (a, b, rel)
        for a in scene
        for b in scene
        for rel, (dr, dc) in _RELATIONS.items()
        if a.row == b.row + dr and a.col == b.col + dc
    ]
    return pick(rng, pairs) if pairs else None


def relation_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    found = _neighbours(scene, rng)
    if found is None:
        return None
    a, b, rel = found
    ref = refer(b, scene, avoid="cell")
    if ref is None:
        return None
    return Question(f"what shape is {rel} the {ref}?", a.shape, SHAPES)


def relation_yesno_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    found = _neighbours(scene, rng)
    if found is None:
        return None
    a, b, rel = found
    truth = bool(rng.random() < 0.5)
    if not truth:
        rel = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}[
            rel
        ]
    ra, rb = refer(a, scene, avoid="cell"), refer(b, scene, avoid="cell")
    if ra is None or rb is None:
        return None
    return Question(f"is the {ra} {rel} the {rb}?", _YESNO[not truth], _YESNO)


def corners_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    obj = pick(rng, scene)
    ref = refer(obj, scene, avoid="shape") if obj.shape != "digit" else None
    if ref is None:
        return None
    return Question(
        f"how many corners does the {ref} have?",
        _CORNERS[obj.shape],
        tuple(sorted(set(_CORNERS.values()))),
    )


def parity_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    digits = [o for o in scene if o.shape == "digit"]
    if not digits:
        return None
    obj = pick(rng, digits)
    ref = refer(obj, scene, avoid="digit")
    answer = "even" if obj.digit % 2 == 0 else "odd"
    if ref is None:
        return None
    return Question(f"is the {ref} even or odd?", answer, ("even", "odd"))


def kind_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    obj = pick(rng, scene)
    ref = refer(obj, scene, avoid="shape")
    if ref is None:
        return None
    return Question(
        f"what kind of thing is the {ref}?", _KIND[obj.shape], tuple(sorted(set(_KIND.values())))
    )


QUESTIONS: dict[str, Generator] = {
    "colour": colour_q,
    "size": size_q,
    "shape": shape_q,
    "cell": cell_q,
    "count_colour": count_colour_q,
    "count_shape": count_shape_q,
    "exists": exists_q,
    "logic": logic_q,
    "relation": relation_q,
    "relation_yesno": relation_yesno_q,
    "corners": corners_q,
    "parity": parity_q,
    "kind": kind_q,
}
