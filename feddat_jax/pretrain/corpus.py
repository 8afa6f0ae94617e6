"""The pretraining corpus of the tiny ViLT: rendered scenes of the embedded world with their
captions and question-answer texts, disjoint from every benchmark.

A foundation model is pretrained on pooled public data, not on the federated clients' data. So the
corpus draws its own scenes (its own seeds, the ``train`` half of the handwritten digits, every
image style of the benchmark families) and words them in the world's standard convention, the one
a public model would know; the clients' own conventions (``embedded_lexicon``) never appear in it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from feddat_jax.data import embedded_world as world
from feddat_jax.data.embedded import GENERATORS
from feddat_jax.data.embedded_captions import caption
from feddat_jax.data.embedded_families import ALL_STYLES
from feddat_jax.data.embedded_lexicon import Lexicon

# The question types the committed backbone was pretrained on, named so that a type the benchmark
# adds later (``colour_pick``) does not change the corpus and the backbone stays reproducible.
CORPUS_TYPES = (
    "cell",
    "colour",
    "colour_shape",
    "corners",
    "corners_cell",
    "count_all",
    "count_colour",
    "count_shape",
    "entail_colour",
    "entail_shape",
    "exists_colour",
    "exists_shape",
    "horizontal",
    "horizontal_yesno",
    "kind",
    "mc_colour",
    "mc_shape",
    "parity",
    "shape",
    "size",
    "tf_colour",
    "tf_shape",
    "tf_side",
    "vertical",
)
ALL_TYPES = {name: GENERATORS[name] for name in CORPUS_TYPES}
_PHRASINGS = 5


@dataclasses.dataclass(frozen=True)
class Corpus:
    """``images`` uint8 [N,H,W,3]; ``qa[i]`` the question-answer texts of scene i; ``cells`` the
    per-cell labels of every scene (:func:`cell_labels`)."""

    scenes: list[tuple[world.Obj, ...]]
    images: np.ndarray
    qa: list[list[tuple[str, str]]]
    cells: dict[str, np.ndarray]


def cell_labels(scenes) -> dict[str, np.ndarray]:
    """int32 [N, 4] per grid cell: ``shape`` (index in SHAPES, len(SHAPES) for an empty cell),
    ``colour`` (index in COLOURS), ``size`` (index in SIZES) and ``digit`` (its value); -1 where
    the label does not apply (a colour of an empty cell, a size of a digit, a digit of a shape)."""
    out = {k: np.full((len(scenes), 4), -1, np.int32) for k in ("shape", "colour", "size", "digit")}
    out["shape"][:] = len(world.SHAPES)
    for i, scene in enumerate(scenes):
        for o in scene:
            out["shape"][i, o.cell] = world.SHAPES.index(o.shape)
            out["colour"][i, o.cell] = world.COLOURS.index(o.colour)
            if o.shape == "digit":
                out["digit"][i, o.cell] = o.digit
            else:
                out["size"][i, o.cell] = world.SIZES.index(o.size)
    return out


def _question(scene, rng: np.random.Generator) -> tuple[str, str]:
    for _ in range(100):
        qtype = ALL_TYPES[CORPUS_TYPES[int(rng.integers(len(CORPUS_TYPES)))]]
        lex = Lexicon(phrasing=int(rng.integers(_PHRASINGS))).for_type(qtype.axes)
        q = qtype.generate(scene, rng, lex)
        if q is not None:
            return q.text, q.answer
    raise RuntimeError("no question type supports this scene")  # every scene supports count_all


def build_corpus(num_scenes: int, image_size: int, seed: int, qa_per_scene: int = 3) -> Corpus:
    """``num_scenes`` scenes of 1-4 objects, each drawn in a random style of any family."""
    rng = np.random.default_rng([seed, 0x5EED])
    scenes, images, qa = [], np.zeros((num_scenes, image_size, image_size, 3), np.uint8), []
    for i in range(num_scenes):
        scene = world.sample_scene(rng, world.SHAPES, world.COLOURS, "train")
        style = ALL_STYLES[int(rng.integers(len(ALL_STYLES)))]
        images[i] = world.render(scene, style, image_size, rng)
        scenes.append(scene)
        qa.append([_question(scene, rng) for _ in range(qa_per_scene)])
    return Corpus(scenes, images, qa, cell_labels(scenes))


def corpus_texts(corpus: Corpus, rng: np.random.Generator) -> list[str]:
    """Every text form the corpus can produce (for the tokenizer's vocabulary)."""
    texts = [f"{q} {a}" for pairs in corpus.qa for q, a in pairs]
    for scene in corpus.scenes:
        texts += [caption(scene, rng, t).text for t in (True, False) for _ in range(3)]
    return texts
