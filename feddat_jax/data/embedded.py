"""The embedded federated benchmark: four families of clients, generated offline from a seed.

Which clients a family has, and what each kind of client asks and sees, is in
``embedded_families``; how a client words things (its naming convention, the concept shift) in
``embedded_lexicon``; the questions in ``embedded_questions`` / ``embedded_statements``. This module
draws the examples and builds the clients' splits. docs/BENCHMARK.md says what each property stands
for and how it is measured.

Every example is a pure function of (seed, family, client, split, index): its own
``np.random.default_rng`` draws the question type, the scene, the wording, the rendering noise and
the simulated annotators, so the same seed gives byte-identical benchmarks, and a client's data do
not depend on how many clients were asked for. Each example records its question type and its
group ("shared" or "shifted").
"""

from __future__ import annotations

import collections
import functools
import hashlib
import inspect
import sys
from collections.abc import Sequence

import numpy as np

from feddat_jax.data import (
    embedded_families,
    embedded_lexicon,
    embedded_questions,
    embedded_statements,
)
from feddat_jax.data import embedded_world as world
from feddat_jax.data.embedded_families import DEFAULT_CLIENTS, FAMILIES, ClientDef, family_clients
from feddat_jax.data.embedded_lexicon import Lexicon
from feddat_jax.data.embedded_questions import QUESTIONS, Question
from feddat_jax.data.embedded_statements import STATEMENTS
from feddat_jax.data.records import ClientSplit, Example, FederatedBenchmark, answer_vocabulary
from feddat_jax.errors import ConfigError

GENERATOR_VERSION = 7


@functools.lru_cache(maxsize=1)
def generator_digest() -> str:
    """A hash of the source of every module that decides the generated data: the manifest records
    it, so that a workdir trained on data of an earlier generator is refused (a version number
    alone is easy to forget to bump)."""
    modules = (world, embedded_families, embedded_lexicon, embedded_questions, embedded_statements)
    sources = [inspect.getsource(m) for m in modules] + [inspect.getsource(sys.modules[__name__])]
    return hashlib.sha256("".join(sources).encode()).hexdigest()[:16]


_SCORE = {1: 0.3, 2: 0.6, 3: 0.9}  # METHOD.md §5: 1/2/3/>=4 annotators -> 0.3/0.6/0.9/1.0
_ANNOTATORS = 10
_PARTS = ("train", "test")
GENERATORS = {**QUESTIONS, **STATEMENTS}


def _annotate(q: Question, rng: np.random.Generator, noise: float) -> dict[str, float]:
    """Ten simulated annotators, each wrong with probability ``noise``; the soft scores of
    METHOD.md §5."""
    wrong = [a for a in q.alternatives if a != q.answer]
    votes = [
        q.answer if rng.random() >= noise else wrong[int(rng.integers(len(wrong)))]
        for _ in range(_ANNOTATORS)
    ]
    counts = collections.Counter(votes)
    return {a: _SCORE.get(n, 1.0) for a, n in sorted(counts.items())}


def _example_rng(family: str, client_index: int, part: str, i: int, seed: int):
    """The generator that draws everything about one example (the docstring's pure function)."""
    return np.random.default_rng([seed, FAMILIES.index(family), client_index, _PARTS.index(part), i])


def _draw_type(kind: embedded_families.ClientKind, rng: np.random.Generator) -> str:
    """An example's question type: the first draw of its generator."""
    return kind.question_types[int(rng.integers(len(kind.question_types)))]


def _lexicon(cd: ClientDef, generator) -> Lexicon:
    return Lexicon(cd.convention, cd.kind.phrasing, shape_set=world.BENCHMARK_SHAPES).for_type(
        generator.axes
    )


def question_type(cd: ClientDef, family: str, client_index: int, part: str, i: int, seed: int):
    """Example i's question type without drawing the example (a partition's cheap label)."""
    return _draw_type(cd.kind, _example_rng(family, client_index, part, i, seed))


@functools.lru_cache(maxsize=None)
def label_space(kind: embedded_families.ClientKind, convention) -> tuple[str, ...]:
    """Every answer a client of this kind and convention can be asked for, sorted.

    A question type's answer list (``Question.alternatives``) depends only on the type and the
    client's wording, not on the scene, so one question of each type gives it: the label space
    is known without drawing a client's examples. A client whose examples cover every type of
    its kind (today's clients, with 1000 test questions) has exactly this label space.
    """
    cd = ClientDef("probe", kind, convention)
    answers: set[str] = set()
    for t, qtype in enumerate(kind.question_types):
        generator = GENERATORS[qtype]
        rng = np.random.default_rng([7717, t])
        for _ in range(1000):
            scene = world.sample_scene(rng, kind.shapes, kind.colours, "train")
            question = generator.ask(scene, rng, _lexicon(cd, generator))
            if question is not None:
                answers.update(question.alternatives)
                break
        else:
            raise RuntimeError(f"{kind.name}: no scene supports question type {qtype!r}")
    return tuple(sorted(answers))


def _example(
    cd: ClientDef,
    family: str,
    client_index: int,
    part: str,
    i: int,
    seed: int,
    image_size: int,
    noise: float,
) -> tuple[Example, tuple[str, ...]]:
    """One example and the answer set of its question type."""
    rng = _example_rng(family, client_index, part, i, seed)
    kind = cd.kind
    qtype = _draw_type(kind, rng)
    generator = GENERATORS[qtype]
    lexicon = _lexicon(cd, generator)
    label = None  # a statement's label, drawn uniformly from its label set (see below)
    # a mixed type's question: drawn where the conventions agree, or where they disagree
    agree = generator.group == "mixed" and bool(rng.random() < generator.agreeing_share)
    for _ in range(1000):
        scene = world.sample_scene(rng, kind.shapes, kind.colours, part)
        question = generator.ask(scene, rng, lexicon, agree)
        if question is None:
            continue
        if kind.task_kind == "vqa":
            break
        # A statement's generator tosses a fair coin for its label, but which draws survive is
        # not fair: a shifted statement is kept only where the conventions disagree on it, and
        # a false "there is a gem in the top left" does so only where the gem is top right.
        # Version 6 let that skew tf_side to 90% "true", which the label prior alone answered
        # whatever the convention. So the label comes first (uniform over the statement's
        # labels), and draws go on until a statement with that label is kept.
        if label is None:
            label = question.alternatives[int(rng.integers(len(question.alternatives)))]
        if question.answer == label:
            break
    else:
        raise RuntimeError(f"{family}/{cd.name}: no scene supports question type {qtype!r}")
    image = world.encode_png(world.render(scene, kind.style, image_size, rng))
    answers = _annotate(question, rng, noise) if kind.task_kind == "vqa" else {question.answer: 1.0}
    example = Example(
        question.text,
        image,
        answers,
        example_id=f"{family}/{cd.name}/{part}/{i:05d}",
        question_type=qtype,
        group=generator.group_of(question),
    )
    return example, question.alternatives


def vocabulary(train: Sequence[Example], label_space: set[str], top_k: int) -> list[str]:
    """Train answers by frequency, then the rest of the client's label space alphabetically
    (so a small sample still covers every answer its questions can have), cut to ``top_k``."""
    seen = answer_vocabulary(train, top_k)
    return (seen + sorted(label_space - set(seen)))[:top_k]


def train_size(train_per_client: int, spread: float, seed: int, client_index: int) -> int:
    """Client k's number of training examples: ``train_per_client * (1 + spread * u_k)`` with
    u_k uniform in [-1, 1], drawn per client (so it does not depend on the number of clients)."""
    u = np.random.default_rng([seed, 7919, client_index]).uniform(-1.0, 1.0)
    return max(1, round(train_per_client * (1.0 + spread * u)))


def _check(
    image_size: int,
    patch_size: int,
    train_per_client: int,
    test_per_client: int,
    size_spread: float,
    top_k: int,
) -> None:
    if patch_size < 1 or image_size < 16 or image_size % patch_size:
        raise ConfigError(
            f"image_size={image_size} must be >= 16 and a multiple of "
            f"patch_size={patch_size} (e.g. {max(16, patch_size) * 2})"
        )
    if train_per_client < 1 or test_per_client < 1:
        raise ConfigError(
            f"train_per_client={train_per_client} and test_per_client="
            f"{test_per_client} must both be >= 1"
        )
    if not 0.0 <= size_spread < 1.0:
        raise ConfigError(f"size_spread={size_spread} is not in [0, 1)")
    if not 1 <= top_k <= 100:
        raise ConfigError(f"top_k={top_k} is not in 1..100")


def make_benchmark(
    family: str,
    num_clients: int | None = None,
    image_size: int = 48,
    train_per_client: int = 200,
    test_per_client: int = 1000,
    seed: int = 0,
    *,
    patch_size: int = 8,
    size_spread: float = 0.6,
    top_k: int = 100,
    annotator_noise: float = 0.05,
    conventions: str = "mixed",
) -> FederatedBenchmark:
    """Generate the first ``num_clients`` (default 12) clients of ``family``.

    Client k gets :func:`train_size` training examples (80 to 320 with the defaults; with 16 to
    64 no method learned enough in 20 rounds for any two to differ) and ``test_per_client`` test
    examples. Its answer vocabulary is its top-``top_k`` train answers followed by the unseen rest
    of its label space; examples with an answer outside the vocabulary are dropped (the recipe of
    METHOD.md §5; only for small ``top_k``).

    ``conventions="standard"`` gives every client the standard naming convention: the same
    images, scenes and shared questions, and the same "shifted" questions worded in the standard
    colour code, so that no two clients disagree (the control for the concept shift; the
    "shifted" tag still marks the questions on which conventions would disagree).
    """
    _check(image_size, patch_size, train_per_client, test_per_client, size_spread, top_k)
    defs = family_clients(family, num_clients or DEFAULT_CLIENTS, conventions)
    clients, info = [], {}
    for k, cd in enumerate(defs):
        sizes = {
            "train": train_size(train_per_client, size_spread, seed, k),
            "test": test_per_client,
        }
        made = {
            p: [
                _example(cd, family, k, p, i, seed, image_size, annotator_noise)
                for i in range(sizes[p])
            ]
            for p in _PARTS
        }
        parts = {p: [ex for ex, _ in made[p]] for p in _PARTS}
        label_space = {a for p in _PARTS for _, answers in made[p] for a in answers}
        vocab = vocabulary(parts["train"], label_space, top_k)
        kept = {p: [ex for ex in parts[p] if set(ex.answers) <= set(vocab)] for p in _PARTS}
        clients.append(ClientSplit(cd.name, cd.kind.task_kind, vocab, kept["train"], kept["test"]))
        info[cd.name] = {
            "kind": cd.kind.name,
            "convention": cd.convention.name,
            "question_types": list(cd.kind.question_types),
            "style": cd.kind.style.name,
            "background": cd.kind.style.background,
            "phrasing": cd.kind.phrasing,
            "shapes": list(cd.kind.shapes),
            "colours": list(cd.kind.colours),
            "shifted_share": {
                p: round(float(np.mean([ex.group == "shifted" for ex in kept[p]] or [0])), 3)
                for p in _PARTS
            },
            "dropped_outside_vocabulary": {p: sizes[p] - len(kept[p]) for p in _PARTS},
        }
    params = {
        "num_clients": len(defs),
        "image_size": image_size,
        "patch_size": patch_size,
        "train_per_client": train_per_client,
        "test_per_client": test_per_client,
        "size_spread": size_spread,
        "top_k": top_k,
        "annotator_noise": annotator_noise,
        "conventions": conventions,
    }
    manifest = {
        "generator": __name__,
        "generator_version": GENERATOR_VERSION,
        "generator_source": generator_digest(),
        "family": family,
        "params": params,
        "clients": info,
        "sources": {c.name: f"embedded:{family}/{c.name}" for c in clients},
    }
    return FederatedBenchmark(f"embedded_{family}", clients, seed, manifest)

