"""Statements for the embedded benchmark's classification tasks (the ``task`` family's NLVR2-,
SNLI-VE- and VCR-like clients): a fixed label set per task, balanced labels, and the same rule as
every question: the label follows from the pixels. Like the questions, each statement type is
"shared" (shapes, sizes, counts) or names a colour or a side (see ``embedded_lexicon``), and
then carries the label a client of the opposite convention gives it (``Question.other``).

The colour and side types are "mixed" (``QuestionType.agreeing_share``): half their statements
are drawn where the two conventions disagree on the label (tagged "shifted"), half where they
agree ("shared"). Drawn only where they disagree, a true/false statement would always carry the
opposite label under the other code, and a private answer head absorbs that by flipping its
answer on the type, without the representation learning the code. The label is drawn first,
uniformly, and so is the half (``embedded._example``), so each group's labels are balanced too.
"""

from __future__ import annotations

import numpy as np

from feddat_jax.data.embedded_lexicon import HUE, SIDE, Lexicon, other_cell, other_colour
from feddat_jax.data.embedded_questions import (
    Question,
    QuestionType,
    Scene,
    article,
    held,
    pick,
    refer,
)
from feddat_jax.data.embedded_world import COLOURS, SIZES

_LETTERS = ("a", "b", "c", "d")
TRUE_FALSE = ("true", "false")
ENTAILMENT = ("true", "false", "unknown")


def _true_false(text: str | None, truth: bool, other: bool | None = None) -> Question | None:
    """A true/false statement; ``other``: its truth for a client of the opposite convention."""
    if text is None:
        return None
    other_label = None if other is None else TRUE_FALSE[not other]
    return Question(text, TRUE_FALSE[not truth], TRUE_FALSE, other_label)


def tf_shape_q(scene: Scene, rng: np.random.Generator, lex: Lexicon) -> Question | None:
    """A count or a size of shapes, true or false with equal odds."""
    truth = bool(rng.random() < 0.5)
    if rng.random() < 0.5:
        shape = (
            pick(rng, [o.shape for o in scene]) if rng.random() < 0.7 else pick(rng, lex.shape_set)
        )
        n = sum(o.shape == shape for o in scene)
        stated = n if truth else pick(rng, [k for k in range(5) if k != n])
        return _true_false(f"there are exactly {stated} {lex.shapes(shape)}.", truth)
    obj = pick(rng, [o for o in scene if o.shape != "digit"] or [None])
    if obj is None:
        return None
    ref = refer(obj, scene, lex, avoid=("size",))
    stated = obj.size if truth else SIZES[1 - SIZES.index(obj.size)]
    return _true_false(None if ref is None else f"the {ref} is {stated}.", truth)


def tf_colour_q(scene: Scene, rng: np.random.Generator, lex: Lexicon) -> Question | None:
    """A colour count or an object's colour, true or false with equal odds."""
    truth = bool(rng.random() < 0.5)
    if rng.random() < 0.5:
        colour = pick(rng, [o.colour for o in scene]) if rng.random() < 0.7 else pick(rng, COLOURS)
        n = sum(o.colour == colour for o in scene)
        stated = n if truth else pick(rng, [k for k in range(5) if k != n])
        other = stated == sum(o.colour == other_colour(colour) for o in scene)
        return _true_false(
            f"there are exactly {stated} {lex.colour(colour)} objects.", truth, other
        )
    obj = pick(rng, scene)
    ref = refer(obj, scene, lex, avoid=("colour",))
    stated = obj.colour if truth else pick(rng, [c for c in COLOURS if c != obj.colour])
    text = None if ref is None else f"the {ref} is {lex.colour(stated)}."
    return _true_false(text, truth, other_colour(stated) == obj.colour)


def tf_side_q(scene: Scene, rng: np.random.Generator, lex: Lexicon) -> Question | None:
    """What a cell holds, true or false with equal odds."""
    truth = bool(rng.random() < 0.5)
    cell = int(rng.integers(4))
    actual, mirrored = (held(scene, c) for c in (cell, other_cell(cell)))
    stated = (
        actual if truth else pick(rng, [s for s in lex.shape_set + ("nothing",) if s != actual])
    )
    thing = "nothing" if stated == "nothing" else article(lex.shape(stated))
    return _true_false(f"there is {thing} in the {lex.cell(cell)}.", truth, stated == mirrored)


def entail_shape_q(scene: Scene, rng: np.random.Generator, lex: Lexicon) -> Question | None:
    """'true'/'false' about the size of a shape shown once, 'unknown' about an absent one."""
    label = pick(rng, ENTAILMENT)
    if label == "unknown":
        absent = [s for s in lex.shape_set if s != "digit" and all(o.shape != s for o in scene)]
        text = f"the {lex.shape(pick(rng, absent))} is {pick(rng, SIZES)}."
        return Question(text, label, ENTAILMENT)
    unique = [
        o for o in scene if o.shape != "digit" and sum(p.shape == o.shape for p in scene) == 1
    ]
    if not unique:
        return None
    obj = pick(rng, unique)
    stated = obj.size if label == "true" else SIZES[1 - SIZES.index(obj.size)]
    return Question(f"the {lex.shape(obj.shape)} is {stated}.", label, ENTAILMENT)


def entail_colour_q(scene: Scene, rng: np.random.Generator, lex: Lexicon) -> Question | None:
    """'true'/'false' about the object of a colour the image shows once, 'unknown' otherwise."""
    label = pick(rng, ENTAILMENT)
    if label == "unknown":
        absent = [c for c in COLOURS if all(o.colour != c for o in scene)]
        subject, stated = pick(rng, absent), pick(rng, lex.shape_set)
    else:
        unique = [o for o in scene if sum(p.colour == o.colour for p in scene) == 1]
        if not unique:
            return None
        obj = pick(rng, unique)
        subject = obj.colour
        stated = (
            obj.shape
            if label == "true"
            else pick(rng, [s for s in lex.shape_set if s != obj.shape])
        )
    text = f"the {lex.colour(subject)} object is {article(lex.shape(stated))}."
    return Question(text, label, ENTAILMENT, _entailment(scene, other_colour(subject), stated))


def _entailment(scene: Scene, colour: str, shape: str) -> str | None:
    """The label of "the <colour> object is a <shape>" (None where several objects have it)."""
    meant = [o for o in scene if o.colour == colour]
    if len(meant) > 1:
        return None
    return "unknown" if not meant else ENTAILMENT[meant[0].shape != shape]


def _multiple_choice(
    ref: str | None, attr: str, right: str, wrong: list[str], rng, other_right: str | None = None
) -> Question:
    """Four options in random order; ``other_right``: the option a client of the opposite
    convention would call right (its letter is ``Question.other`` where it is listed)."""
    options = [right] + [str(v) for v in rng.permutation(wrong)[:3]]
    options = [options[i] for i in rng.permutation(4)]
    listed = " ".join(f"{letter}) {o}" for letter, o in zip(_LETTERS, options))
    other = _LETTERS[options.index(other_right)] if other_right in options else None
    text = f"what {attr} is the {ref}? {listed}"
    return Question(text, _LETTERS[options.index(right)], _LETTERS, other)


def mc_shape_q(scene: Scene, rng: np.random.Generator, lex: Lexicon) -> Question | None:
    """Four shapes listed in the question; the answer is the letter of the right one."""
    obj = pick(rng, scene)
    ref = refer(obj, scene, lex, avoid=("shape",))
    if ref is None:
        return None
    wrong = [lex.shape(s) for s in lex.shape_set if s != obj.shape]
    return _multiple_choice(ref, "shape", lex.shape(obj.shape), wrong, rng)


def mc_colour_q(scene: Scene, rng: np.random.Generator, lex: Lexicon) -> Question | None:
    """Four colours (in the client's words) listed; the answer is the letter of the right one."""
    obj = pick(rng, scene)
    ref = refer(obj, scene, lex, avoid=("colour",))
    if ref is None:
        return None
    wrong = [lex.colour(c) for c in COLOURS if c != obj.colour]
    other_right = lex.colour(other_colour(obj.colour))
    return _multiple_choice(ref, "colour", lex.colour(obj.colour), wrong, rng, other_right)


_H, _S = frozenset({HUE}), frozenset({SIDE})
_AGREEING = 0.5  # half of a colour or side statement type's questions agree across conventions
STATEMENTS: dict[str, QuestionType] = {
    "tf_shape": QuestionType(tf_shape_q),
    "tf_colour": QuestionType(tf_colour_q, _H, agreeing_share=_AGREEING),
    "tf_side": QuestionType(tf_side_q, _S, agreeing_share=_AGREEING),
    "entail_shape": QuestionType(entail_shape_q),
    "entail_colour": QuestionType(entail_colour_q, _H, agreeing_share=_AGREEING),
    "mc_shape": QuestionType(mc_shape_q),
    "mc_colour": QuestionType(mc_colour_q, _H, agreeing_share=_AGREEING),
}
