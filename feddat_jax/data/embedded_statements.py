"""Statements for the embedded benchmark's classification tasks (the ``task`` family's
NLVR2-, SNLI-VE- and VCR-like clients): a fixed label set per task, balanced labels, and the same
rule as every question: the label follows from the pixels.
"""

from __future__ import annotations

import numpy as np

from feddat_jax.data.embedded_questions import (
    Generator,
    Question,
    Scene,
    article,
    colour_to_count,
    pick,
    refer,
    thing,
)
from feddat_jax.data.embedded_world import COLOURS, SHAPES

_LETTERS = ("a", "b", "c", "d")


def true_false_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    """A statement about counts, colours or existence; 'true' and 'false' equally likely."""
    truth = bool(rng.random() < 0.5)
    kind = pick(rng, ("count", "colour", "exists"))
    if kind == "count":
        colour = colour_to_count(scene, rng)
        n = sum(o.colour == colour for o in scene)
        stated = n if truth else pick(rng, [k for k in range(5) if k != n])
        text = f"there are exactly {stated} {colour} objects."
    elif kind == "colour":
        obj = pick(rng, scene)
        ref = refer(obj, scene, avoid="colour")
        if ref is None:
            return None
        stated = obj.colour if truth else pick(rng, [c for c in COLOURS if c != obj.colour])
        text = f"the {ref} is {stated}."
    else:
        colour, shape = thing(scene, rng, truth)
        text = f"there is {article(colour)} {shape}."
    return Question(text, "true" if truth else "false", ("true", "false"))


def entailment_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    """'true'/'false' about an object the image shows, 'unknown' about one it does not."""
    label = pick(rng, ("true", "false", "unknown"))
    by_colour = bool(rng.random() < 0.5)
    key, other = ("colour", "shape") if by_colour else ("shape", "colour")
    values = COLOURS if by_colour else SHAPES
    stated_values = SHAPES if by_colour else COLOURS
    if label == "unknown":
        absent = [v for v in values if all(getattr(o, key) != v for o in scene)]
        subject, stated = pick(rng, absent), pick(rng, stated_values)
    else:
        unique = [o for o in scene if sum(getattr(p, key) == getattr(o, key) for p in scene) == 1]
        if not unique:
            return None
        obj = pick(rng, unique)
        subject, actual = getattr(obj, key), getattr(obj, other)
        stated = actual if label == "true" else pick(rng, [v for v in stated_values if v != actual])
    text = (
        f"the {subject} object is {article(stated)}."
        if by_colour
        else f"the {subject} is {stated}."
    )
    return Question(text, label, ("true", "false", "unknown"))


def multiple_choice_q(scene: Scene, rng: np.random.Generator, phrasing: int) -> Question | None:
    """Four options listed in the question; the answer is the letter of the right one."""
    attr = pick(rng, ("shape", "colour"))
    obj = pick(rng, scene)
    ref = refer(obj, scene, avoid=attr)
    if ref is None:
        return None
    right = getattr(obj, attr)
    wrong = [v for v in (SHAPES if attr == "shape" else COLOURS) if v != right]
    options = [right] + [str(v) for v in rng.permutation(wrong)[:3]]
    options = [options[i] for i in rng.permutation(4)]
    listed = " ".join(f"{letter}) {o}" for letter, o in zip(_LETTERS, options))
    return Question(f"what {attr} is the {ref}? {listed}", _LETTERS[options.index(right)], _LETTERS)


STATEMENTS: dict[str, Generator] = {
    "true_false": true_false_q,
    "entailment": entailment_q,
    "multiple_choice": multiple_choice_q,
}
