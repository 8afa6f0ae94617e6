"""How a client words the embedded world: its naming convention and its phrasing.

The concept shift of the embedded benchmark lives here. Every client sees the same world, but a
client may use a different *convention* for two kinds of words:

* ``hue``: the client's colour code pairs the opposite hues the other way round: what the world
  (and the pretrained backbone) calls red it calls "green" and vice versa, and likewise blue and
  yellow. Real counterpart: colour codes that differ by region or by labelling guide (stock
  tickers show a rising price in green in the US and in red in China; two sites' legends colour
  the same categories differently). The swapped hues are the ones the backbone tells apart most
  easily: with neighbouring hues (red/orange, blue/purple, generator version 3's first draft) no
  method, pooled training included, learned a colour count beyond the answer prior, so the shift
  could not show.
* ``mirror``: the client's "left" is the world's right (and "right" its left). Real counterpart:
  radiology, where "left" can mean the patient's left (the image's right) or the viewer's left,
  depending on the site's convention.

A question whose words (or answer) involve such a word has, for the same image and the same
question text, a different right answer at clients of different conventions. A private answer
head cannot absorb this when the convention-dependent word is in the QUESTION ("which is red, the
circle or the square?" asks about the other object; "what is in the top left?" about another
cell): the pooled representation has to change. (Measured: a linear head on the frozen pooled
token, fitted on 2,000 questions, reads "what shape is the red object?" at 95% in the standard
colour code and at 41% in the swapped one; benchmarks/probe_backbone.py.) A client-specific
adapter can make that change; FedAvg's one adapter, averaged over clients that each moved it
towards their own code, does it worse (docs/BENCHMARK.md).

Shared knowledge is not a wording but part of the world: the benchmark's scenes also hold three
shapes the pretraining corpus never draws (``embedded_world.FIELD_SHAPES``, a chevron, a ring and
a cross), which every client calls by the field's terms "delta", "gem" and "spark". The terms are
in the backbone's vocabulary, as a real tokenizer holds many words its corpus barely uses, but
their embeddings were never trained, and its image features never had to tell these shapes apart.
Real counterpart: the findings of a specialty (lesion types, defect classes) that a public
foundation model has neither seen nor named, common to every site. One client sees each in a few
questions; the federation sees it in many. (Until generator version 6 the field terms renamed
three shapes the backbone already reads, and a client learned the three words alone.)

A question type declares the word kinds (``axes``) it may use; a :class:`Lexicon` is the only way
a generator produces those words, and it checks the declaration, so no type uses a convention word
it did not declare. A declaring type is "shifted" (``QuestionType.group``), and each of its examples
is drawn where the two conventions give different answers (``QuestionType.ask``).
"""

from __future__ import annotations

import dataclasses

from feddat_jax.data.embedded_world import COLOURS, FIELD_SHAPES, SHAPES

HUE, SIDE = "hue", "side"
_HUE_SWAP = {"red": "green", "green": "red", "blue": "yellow", "yellow": "blue"}
_SIDES = ("left", "right")
_ROWS = ("top", "bottom")


def other_colour(colour: str) -> str:
    """The world colour that a client of the opposite hue convention means by the word this client
    uses for world colour ``colour`` (the swap is its own inverse, so it does not matter which of
    the two conventions this client has)."""
    return _HUE_SWAP.get(colour, colour)


def other_cell(cell: int) -> int:
    """The world cell that a client of the opposite side convention means by this client's name of
    world cell ``cell``: the same row, the other column."""
    return cell ^ 1


def field_vocabulary() -> tuple[str, ...]:
    """Every word form of the field shapes' terms (singular and plural), for the backbone's
    vocabulary."""
    return tuple(sorted(w for term in FIELD_SHAPES for w in (term, term + "s")))


@dataclasses.dataclass(frozen=True)
class Convention:
    """A client's naming convention (see the module docstring)."""

    name: str
    hue_swap: bool = False
    mirror: bool = False


CONVENTIONS = (
    Convention("standard"),
    Convention("hue", hue_swap=True),
    Convention("mirror", mirror=True),
    Convention("hue_mirror", hue_swap=True, mirror=True),
)
STANDARD = CONVENTIONS[0]


def convention_for(kind_index: int, index_in_kind: int) -> Convention:
    """The convention of the ``index_in_kind``-th client of client kind ``kind_index``: a kind's
    clients take the conventions in turn, starting at the kind's index. So every kind with two
    or more clients holds both colour codes (consecutive conventions differ in ``hue_swap``) and a
    convention never follows a kind. (Until generator version 5 client k took convention
    (k + k // 4) mod 4, which with five kinds gave two kinds only the standard colour code and two
    only the swapped one; four kinds, the task family, get the same conventions either way.)"""
    return CONVENTIONS[(kind_index + index_in_kind) % len(CONVENTIONS)]


class WordUseError(AssertionError):
    """A generator used a convention-dependent word its question type did not declare."""


@dataclasses.dataclass(frozen=True)
class Lexicon:
    """The words of one client: its convention, its phrasing index, and the axes the current
    question type is allowed to touch."""

    convention: Convention = STANDARD
    phrasing: int = 0
    axes: frozenset[str] = frozenset()
    # The shapes the client's world holds: the answers of a shape question and the shapes a
    # question may ask about (the benchmark's clients: BENCHMARK_SHAPES; pretraining: SHAPES).
    shape_set: tuple[str, ...] = SHAPES

    def for_type(self, axes: frozenset[str]) -> Lexicon:
        return dataclasses.replace(self, axes=frozenset(axes))

    def _need(self, axis: str) -> None:
        if axis not in self.axes:
            raise WordUseError(f"a question type without the {axis!r} axis used a {axis} word")

    def colour(self, colour: str) -> str:
        """The client's word for the world colour ``colour``."""
        self._need(HUE)
        if colour not in COLOURS:
            raise ValueError(f"unknown colour {colour!r}")
        return _HUE_SWAP.get(colour, colour) if self.convention.hue_swap else colour

    def side(self, column: int) -> str:
        """The client's word for the world column ``column`` (0 = the image's left)."""
        self._need(SIDE)
        return _SIDES[1 - column] if self.convention.mirror else _SIDES[column]

    def shape(self, shape: str) -> str:
        """The client's word for the world shape ``shape`` (its own name, a field term included)."""
        if shape not in self.shape_set:
            raise ValueError(f"shape {shape!r} is not in this world's shapes {self.shape_set}")
        return shape

    def shapes(self, shape: str) -> str:
        """The plural of :meth:`shape`."""
        return self.shape(shape) + "s"

    def cell(self, cell: int) -> str:
        """The client's name of a 2x2 grid cell (cell = 2 * row + column), e.g. "top left"."""
        return f"{_ROWS[cell // 2]} {self.side(cell % 2)}"

    def pick(self, templates: tuple[str, ...]) -> str:
        """The client's phrasing among a question type's templates."""
        return templates[self.phrasing % len(templates)]
