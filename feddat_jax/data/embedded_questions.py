"""Templated questions about an embedded scene, each answerable from the pixels alone.

A :class:`QuestionType` pairs a generator with the convention-dependent word kinds (``axes``, see
``embedded_lexicon``) it may use. Types without axes are "shared": every client agrees on their
answers. Types with the ``hue`` axis mention or answer a colour; types with the ``side`` axis use
"left"/"right": clients of different conventions disagree on those (the "shifted" group).

Every generator takes ``(scene, rng, lexicon)`` and returns a :class:`Question` or ``None`` when the
scene cannot support it (the caller then draws another scene). A shifted type's question also
carries ``other``: the answer that a client of the opposite convention gives to the same text on the
same image. :meth:`QuestionType.ask` keeps a shifted question only where ``other`` differs from the
answer, so every "shifted" example is one on which clients of different conventions disagree (a
scene where the convention happens not to matter, e.g. "how many red objects?" with no red and no
orange object, is redrawn). Referring expressions are unique in
the scene and never contain the asked-about attribute, so a model must look at the image; they use
only the word kinds the type declares. The lexicon's ``phrasing`` picks one of several wordings
(the domain clients' phrasing shift); the meaning, and the answer, do not change with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from feddat_jax.data.embedded_lexicon import HUE, SIDE, Lexicon, other_cell, other_colour
from feddat_jax.data.embedded_world import COLOURS, SIZES, Obj

Scene = tuple[Obj, ...]


@dataclasses.dataclass(frozen=True)
class Question:
    """``alternatives`` are the plausible wrong answers (for simulated annotator noise); ``other``
    is the answer a client of the opposite convention gives to this text on this image (None for
    shared types, and where the text names nothing for that client)."""

    text: str
    answer: str
    alternatives: tuple[str, ...]
    other: str | None = None

    @property
    def conflicts(self) -> bool:
        """Whether clients of opposite conventions answer this text on this image differently."""
        return self.other is not None and self.other != self.answer


Generator = Callable[[Scene, np.random.Generator, Lexicon], "Question | None"]


@dataclasses.dataclass(frozen=True)
class QuestionType:
    """A generator and the convention-dependent word kinds it may use.

    ``shifts`` is False for a type whose convention words the rest of the question makes redundant,
    so its answers never depend on the convention (``horizontal``: in a row of two cells the
    neighbour of an object is always on the other side, whatever "left" means): it is "shared".

    ``agreeing_share`` > 0 makes a shifted type "mixed": that share of its questions is drawn where
    the two conventions give the same answer (tagged "shared"), the rest where they disagree
    (tagged "shifted"); why the task family's colour and side statements are mixed is in
    ``embedded_statements``.
    """

    generate: Generator
    axes: frozenset[str] = frozenset()
    shifts: bool = True
    agreeing_share: float = 0.0

    @property
    def group(self) -> str:
        """The type's group: "shifted" (conventions disagree on every question), "mixed" (on
        some, see ``agreeing_share``) or "shared" (on none)."""
        if not (self.axes and self.shifts):
            return "shared"
        return "mixed" if self.agreeing_share else "shifted"

    def group_of(self, question: Question) -> str:
        """An example's group: "shifted" where the conventions disagree on its answer."""
        return "shifted" if self.group != "shared" and question.conflicts else "shared"

    def ask(
        self, scene: Scene, rng: np.random.Generator, lex: Lexicon, agree: bool = False
    ) -> Question | None:
        """A question about ``scene``, or None (draw another scene). A shifted or mixed type's
        question only where the client's convention changes its answer, or, for a mixed type
        asked with ``agree``, only where the other convention reads the same answer."""
        question = self.generate(scene, rng, lex)
        if question is None or self.group == "shared":
            return question
        if agree and self.group == "mixed":
            return question if question.other == question.answer else None
        return question if question.conflicts else None


# The spark (a cross) has 12 corners, a number the backbone's vocabulary does not hold: corner
# questions skip it, as they skip digits.
_CORNERS = {
    "circle": "0",
    "square": "4",
    "triangle": "3",
    "diamond": "4",
    "star": "10",
    "delta": "4",
    "gem": "0",
}
_KIND = {
    "circle": "curve",
    "square": "polygon",
    "triangle": "polygon",
    "diamond": "polygon",
    "star": "polygon",
    "delta": "polygon",
    "gem": "curve",
    "spark": "polygon",
    "digit": "number",
}
_COUNTS = tuple(str(n) for n in range(5))
YESNO = ("yes", "no")
_ROW_WORDS = ("top", "bottom")
# Referring attributes, shortest first; "colour" needs the hue axis, "cell" the side axis.
_REFERENCES = (
    ("shape",),
    ("size", "shape"),
    ("colour", "shape"),
    ("shape", "row"),
    ("shape", "cell"),
    ("size",),
    ("colour",),
    ("size", "row"),
    ("row",),
    ("cell",),
)
_NEEDS = {"colour": HUE, "cell": SIDE}


def pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def article(word: str) -> str:
    """``word`` with its indefinite article."""
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _shapes(lex: Lexicon) -> tuple[str, ...]:
    """The client's words for every shape (the answer list of a shape question)."""
    return tuple(lex.shape(s) for s in lex.shape_set)


def _matches(o: Obj, target: Obj, use: tuple[str, ...]) -> bool:
    return all(getattr(o, a) == getattr(target, a) for a in use)


def refer(obj: Obj, scene: Scene, lex: Lexicon, avoid: tuple[str, ...] = ()) -> str | None:
    """The shortest unique description of ``obj`` that uses none of ``avoid`` and only the word
    kinds the lexicon's question type allows (colour: hue axis; cell: side axis)."""
    for use in _REFERENCES:
        if any(a in avoid or _NEEDS.get(a, "") not in lex.axes | {""} for a in use):
            continue
        if "size" in use and obj.shape == "digit":
            continue
        if sum(_matches(o, obj, use) for o in scene) != 1:
            continue
        words = [getattr(obj, "size")] if "size" in use else []
        words += [lex.colour(obj.colour)] if "colour" in use else []
        words.append(lex.shape(obj.shape) if "shape" in use else "object")
        text = " ".join(words)
        if "row" in use:
            text += f" in the {_ROW_WORDS[obj.row]} row"
        if "cell" in use:
            text += f" in the {lex.cell(obj.cell)}"
        return text
    return None


def _neighbours(scene: Scene, rng: np.random.Generator, vertical: bool) -> tuple[Obj, Obj] | None:
    """(asked, reference): two objects in one column (``vertical``) or one row, or None."""
    pairs = [
        (a, b)
        for a in scene
        for b in scene
        if a is not b and ((a.col == b.col) if vertical else (a.row == b.row))
    ]
    return pick(rng, pairs) if pairs else None


# ---- shared types: shapes, sizes, counts, rows, knowledge ----------------------------------------
def shape_q(scene, rng, lex):
    obj = pick(rng, scene)
    ref = refer(obj, scene, lex, avoid=("shape",))
    templates = (
        "what shape is the {ref}?",
        "which shape does the {ref} have?",
        "tell me the shape of the {ref}.",
        "the {ref} is drawn as which shape?",
        "shape of {ref}?",
    )
    if ref is None:
        return None
    return Question(lex.pick(templates).format(ref=ref), lex.shape(obj.shape), _shapes(lex))


def size_q(scene, rng, lex):
    obj = pick(rng, scene)
    ref = refer(obj, scene, lex, avoid=("size",)) if obj.shape != "digit" else None
    templates = (
        "what size is the {ref}?",
        "is the {ref} small or large?",
        "how big is the {ref}?",
        "the {ref} has which size?",
        "size of {ref}?",
    )
    return None if ref is None else Question(lex.pick(templates).format(ref=ref), obj.size, SIZES)


def count_shape_q(scene, rng, lex):
    shape = pick(rng, [o.shape for o in scene]) if rng.random() < 0.7 else pick(rng, lex.shape_set)
    n = sum(o.shape == shape for o in scene)
    templates = (
        "how many {s} are there?",
        "what is the number of {s}?",
        "count the {s}.",
        "how many {s} can you see?",
        "number of {s}?",
    )
    return Question(lex.pick(templates).format(s=lex.shapes(shape)), str(n), _COUNTS)


def exists_shape_q(scene, rng, lex):
    present = bool(rng.random() < 0.5)
    inside = {o.shape for o in scene}
    options = sorted(inside) if present else [s for s in lex.shape_set if s not in inside]
    if not options:
        return None
    templates = (
        "is there {a}?",
        "does the picture contain {a}?",
        "can you see {a}?",
        "is {a} shown?",
        "{s} present?",
    )
    shape = lex.shape(pick(rng, options))
    text = lex.pick(templates).format(a=article(shape), s=shape)
    return Question(text, YESNO[not present], YESNO)


def count_all_q(scene, rng, lex):
    return Question("how many objects are there?", str(len(scene)), _COUNTS)


def vertical_q(scene, rng, lex):
    found = _neighbours(scene, rng, vertical=True)
    if found is None:
        return None
    a, b = found
    ref = refer(b, scene, lex, avoid=("row",))
    word = "above" if a.row < b.row else "below"
    if ref is None:
        return None
    return Question(f"what shape is {word} the {ref}?", lex.shape(a.shape), _shapes(lex))


def corners_q(scene, rng, lex):
    obj = pick(rng, scene)
    ref = refer(obj, scene, lex, avoid=("shape",)) if obj.shape in _CORNERS else None
    answers = tuple(sorted(set(_CORNERS.values())))
    if ref is None:
        return None
    return Question(f"how many corners does the {ref} have?", _CORNERS[obj.shape], answers)


def kind_q(scene, rng, lex):
    obj = pick(rng, scene)
    ref = refer(obj, scene, lex, avoid=("shape",))
    answers = tuple(sorted(set(_KIND.values())))
    if ref is None:
        return None
    return Question(f"what kind of thing is the {ref}?", _KIND[obj.shape], answers)


def parity_q(scene, rng, lex):
    digits = [o for o in scene if o.shape == "digit"]
    if not digits:
        return None
    obj = pick(rng, digits)
    ref = refer(obj, scene, lex)
    answer = "even" if obj.digit % 2 == 0 else "odd"
    return None if ref is None else Question(f"is the {ref} even or odd?", answer, ("even", "odd"))


# ---- hue types: a colour word in the question or the answer --------------------------------------
def colour_q(scene, rng, lex):
    obj = pick(rng, scene)
    ref = refer(obj, scene, lex, avoid=("colour",))
    templates = (
        "what color is the {ref}?",
        "which colour does the {ref} have?",
        "tell me the colour of the {ref}.",
        "the {ref} is painted in which colour?",
        "colour of {ref}?",
    )
    if ref is None:
        return None
    names = tuple(lex.colour(c) for c in COLOURS)
    text = lex.pick(templates).format(ref=ref)
    return Question(text, lex.colour(obj.colour), names, lex.colour(other_colour(obj.colour)))


def count_colour_q(scene, rng, lex):
    colour = pick(rng, [o.colour for o in scene]) if rng.random() < 0.7 else pick(rng, COLOURS)
    n = sum(o.colour == colour for o in scene)
    templates = (
        "how many {c} objects are there?",
        "what is the number of {c} things?",
        "count the {c} objects.",
        "how many things are {c}?",
        "number of {c} objects?",
    )
    other = str(sum(o.colour == other_colour(colour) for o in scene))
    return Question(lex.pick(templates).format(c=lex.colour(colour)), str(n), _COUNTS, other)


def exists_colour_q(scene, rng, lex):
    present = bool(rng.random() < 0.5)
    inside = {(o.colour, o.shape) for o in scene}
    if present:
        colour, shape = pick(rng, sorted(inside))
    else:
        pairs = [(c, s) for c in COLOURS for s in lex.shape_set if (c, s) not in inside]
        colour, shape = pick(rng, pairs)
    templates = (
        "is there {ac} {s}?",
        "does the picture contain {ac} {s}?",
        "can you see {ac} {s}?",
        "is {ac} {s} shown?",
        "{c} {s} present?",
    )
    word = lex.colour(colour)
    text = lex.pick(templates).format(ac=article(word), c=word, s=lex.shape(shape))
    other = YESNO[(other_colour(colour), shape) not in inside]
    return Question(text, YESNO[not present], YESNO, other)


def colour_shape_q(scene, rng, lex):
    obj = pick(rng, scene)
    if sum(o.colour == obj.colour for o in scene) != 1:
        return None
    text = f"what shape is the {lex.colour(obj.colour)} object?"
    meant = [o for o in scene if o.colour == other_colour(obj.colour)]
    other = lex.shape(meant[0].shape) if len(meant) == 1 else None
    return Question(text, lex.shape(obj.shape), _shapes(lex), other)


def colour_pick_q(scene, rng, lex):
    """Which of two objects has a colour: the answer is the shape of one of the two, so a swapped
    colour code picks the other one, and a reading that merges the swapped hues cannot tell them
    apart."""
    if len(scene) < 2:
        return None
    i, j = (int(k) for k in rng.choice(len(scene), size=2, replace=False))
    a, b = scene[i], scene[j]
    ra, rb = refer(a, scene, lex, avoid=("colour",)), refer(b, scene, lex, avoid=("colour",))
    if ra is None or rb is None or a.colour == b.colour:
        return None
    if rng.random() < 0.5:
        ra, rb = rb, ra
    templates = (
        "which is {c}, the {ra} or the {rb}?",
        "which is painted {c}: the {ra} or the {rb}?",
        "the {ra} or the {rb}, which is {c}?",
        "tell me which is {c}: the {ra} or the {rb}.",
        "{c}: {ra} or {rb}?",
    )
    text = lex.pick(templates).format(c=lex.colour(a.colour), ra=ra, rb=rb)
    meant = {a.colour: a, b.colour: b}.get(other_colour(a.colour))
    other = None if meant is None else lex.shape(meant.shape)
    return Question(text, lex.shape(a.shape), _shapes(lex), other)


# ---- side types: "left" / "right" in the question ------------------------------------------------
def held(scene: Scene, cell: int) -> str:
    """The world shape in world cell ``cell``, or "nothing"."""
    found = [o.shape for o in scene if o.cell == cell]
    return found[0] if found else "nothing"


def _content(scene: Scene, cell: int, lex: Lexicon) -> str:
    """The client's word for the shape in world cell ``cell``, or "nothing"."""
    shape = held(scene, cell)
    return shape if shape == "nothing" else lex.shape(shape)


def cell_q(scene, rng, lex):
    cell = int(rng.integers(4))
    templates = (
        "what is in the {cell}?",
        "which shape sits in the {cell}?",
        "tell me what is in the {cell}.",
        "the {cell} holds which shape?",
        "{cell} contents?",
    )
    text = lex.pick(templates).format(cell=lex.cell(cell))
    answers = _shapes(lex) + ("nothing",)
    return Question(
        text, _content(scene, cell, lex), answers, _content(scene, other_cell(cell), lex)
    )


def horizontal_q(scene, rng, lex):
    found = _neighbours(scene, rng, vertical=False)
    if found is None:
        return None
    a, b = found
    ref = refer(b, scene, lex, avoid=("cell",))
    templates = (
        "what shape is {side} of the {ref}?",
        "which shape is on the {side} of the {ref}?",
        "name the shape {side} of the {ref}.",
        "the shape {side} of the {ref} is which?",
        "shape {side} of {ref}?",
    )
    if ref is None:
        return None
    text = lex.pick(templates).format(side=lex.side(a.col), ref=ref)
    return Question(text, lex.shape(a.shape), _shapes(lex))


def horizontal_yesno_q(scene, rng, lex):
    found = _neighbours(scene, rng, vertical=False)
    if found is None:
        return None
    a, b = found
    truth = bool(rng.random() < 0.5)
    stated = a.col if truth else 1 - a.col
    ra, rb = refer(a, scene, lex, avoid=("cell",)), refer(b, scene, lex, avoid=("cell",))
    if ra is None or rb is None:
        return None
    text = f"is the {ra} {lex.side(stated)} of the {rb}?"
    return Question(text, YESNO[not truth], YESNO, YESNO[truth])


def corners_cell_q(scene, rng, lex):
    objs = [o for o in scene if o.shape in _CORNERS]
    if not objs:
        return None
    obj = pick(rng, objs)
    answers = tuple(sorted(set(_CORNERS.values())))
    text = f"how many corners does the object in the {lex.cell(obj.cell)} have?"
    meant = [o for o in objs if o.cell == other_cell(obj.cell)]
    other = _CORNERS[meant[0].shape] if meant else None
    return Question(text, _CORNERS[obj.shape], answers, other)


_H, _S = frozenset({HUE}), frozenset({SIDE})
QUESTIONS: dict[str, QuestionType] = {
    "shape": QuestionType(shape_q),
    "size": QuestionType(size_q),
    "count_shape": QuestionType(count_shape_q),
    "exists_shape": QuestionType(exists_shape_q),
    "count_all": QuestionType(count_all_q),
    "vertical": QuestionType(vertical_q),
    "corners": QuestionType(corners_q),
    "kind": QuestionType(kind_q),
    "parity": QuestionType(parity_q),
    "colour": QuestionType(colour_q, _H),
    "count_colour": QuestionType(count_colour_q, _H),
    "exists_colour": QuestionType(exists_colour_q, _H),
    "colour_shape": QuestionType(colour_shape_q, _H),
    "colour_pick": QuestionType(colour_pick_q, _H),
    "cell": QuestionType(cell_q, _S),
    "horizontal": QuestionType(horizontal_q, _S, shifts=False),
    "horizontal_yesno": QuestionType(horizontal_yesno_q, _S),
    "corners_cell": QuestionType(corners_cell_q, _S),
}
