"""The embedded federated benchmark: four families of clients mirroring the paper's four kinds of
heterogeneity, generated offline from a seed.

* ``domain``   -- same question types, different image style (palette, texture, noise, outline)
                  and question phrasing per client; client sizes differ (+-40% by default);
* ``function`` -- one question family per client (CLOVE-function names), disjoint across clients;
* ``scene``    -- one object/background world per client (CLOVE-scene names), same questions;
* ``task``     -- one task per client: VQA (soft scores), true/false, 3-way entailment, multiple
                  choice (the last three single-label classification).

Every example is a pure function of (seed, family, client, split, index): its own
``np.random.default_rng`` draws the question type, the scene, the wording, the rendering noise and
the simulated annotators, so the same seed gives byte-identical benchmarks, and a client's data do
not depend on how many clients were asked for.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import inspect
import json
import os
import shutil
from pathlib import Path

import numpy as np

from feddat_jax.data import embedded_world as world
from feddat_jax.data.embedded_questions import QUESTIONS, Question
from feddat_jax.data.embedded_statements import STATEMENTS
from feddat_jax.data.records import ClientSplit, Example, FederatedBenchmark, answer_vocabulary
from feddat_jax.data.tfds_store import MANIFEST, read_benchmark, write_benchmark

GENERATOR_VERSION = 1
_SCORE = {1: 0.3, 2: 0.6, 3: 0.9}  # SPEC section 5: 1/2/3/>=4 annotators -> 0.3/0.6/0.9/1.0
_ANNOTATORS = 10
_PARTS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class ClientDef:
    name: str
    question_types: tuple[str, ...]
    task_kind: str = "vqa"
    style: world.Style = world.Style("clean")
    phrasing: int = 0
    shapes: tuple[str, ...] = world.SHAPES
    colours: tuple[str, ...] = world.COLOURS


def _style(name: str, background: str, bg: tuple, tint: float = 0.0, **kw) -> world.Style:
    return world.Style(name, tint=tint, background=background, bg_colours=bg, **kw)


_VQA_MIX = ("colour", "shape", "count_colour", "exists")
_DOMAIN_STYLES = (
    _style("clean", "plain", ((245, 245, 245), (245, 245, 245))),
    _style("sketch", "plain", ((250, 245, 230), (250, 245, 230)), -0.3, outline=True, noise=4.0),
    _style("night", "gradient", ((15, 15, 40), (45, 45, 80)), 0.15, noise=3.0),
    _style("noisy", "speckle", ((128, 128, 128), (90, 90, 90)), noise=25.0),
    _style("art", "stripes", ((200, 180, 150), (230, 215, 190)), 0.45, noise=6.0),
)
_SCENE_QUESTIONS = ("colour", "shape", "count_shape", "exists", "cell")
_SCENES = (  # name, shapes, colours, background style
    (
        "shop",
        ("square", "circle", "digit"),
        ("red", "yellow", "orange"),
        _style("shop", "gradient", ((250, 235, 210), (235, 205, 170))),
    ),
    (
        "workplace",
        ("square", "digit", "triangle"),
        ("blue", "purple", "green"),
        _style("workplace", "plain", ((200, 200, 205), (200, 200, 205))),
    ),
    (
        "home",
        ("circle", "diamond", "square"),
        ("orange", "purple", "red"),
        _style("home", "checker", ((235, 225, 200), (215, 200, 170))),
    ),
    (
        "transport",
        ("triangle", "diamond", "circle"),
        ("blue", "yellow", "red"),
        _style("transport", "stripes", ((150, 150, 150), (120, 120, 120))),
    ),
    (
        "sport",
        ("circle", "star", "triangle"),
        ("green", "orange", "blue"),
        _style("sport", "plain", ((190, 225, 190), (190, 225, 190))),
    ),
    (
        "outdoors",
        ("star", "triangle", "digit"),
        ("green", "blue", "yellow"),
        _style("outdoors", "gradient", ((170, 205, 245), (235, 245, 255))),
    ),
)

FAMILIES: dict[str, tuple[ClientDef, ...]] = {
    "domain": tuple(
        ClientDef(s.name, _VQA_MIX, style=s, phrasing=i) for i, s in enumerate(_DOMAIN_STYLES)
    ),
    "function": (
        ClientDef("attribute", ("colour", "size")),
        ClientDef("knowledge", ("corners", "parity", "kind")),
        ClientDef("logical", ("count_colour", "count_shape", "logic")),
        ClientDef("object", ("shape", "cell")),
        ClientDef("relation", ("relation", "relation_yesno")),
    ),
    "scene": tuple(
        ClientDef(name, _SCENE_QUESTIONS, style=style, shapes=shapes, colours=colours)
        for name, shapes, colours, style in _SCENES
    ),
    "task": (
        ClientDef("vqa", _VQA_MIX + ("cell",)),
        ClientDef("true_false", ("true_false",), task_kind="classification"),
        ClientDef("entailment", ("entailment",), task_kind="classification"),
        ClientDef("multiple_choice", ("multiple_choice",), task_kind="classification"),
    ),
}
_DEFAULT_SIZE_SPREAD = {"domain": 0.4}
GENERATORS = {**QUESTIONS, **STATEMENTS}


def family_clients(family: str) -> tuple[ClientDef, ...]:
    if family not in FAMILIES:
        raise ValueError(f"unknown benchmark family {family!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[family]


def _annotate(q: Question, rng: np.random.Generator, noise: float) -> dict[str, float]:
    """Ten simulated annotators, each wrong with probability ``noise``; SPEC soft scores."""
    wrong = [a for a in q.alternatives if a != q.answer]
    votes = [
        q.answer if rng.random() >= noise else wrong[int(rng.integers(len(wrong)))]
        for _ in range(_ANNOTATORS)
    ]
    counts = collections.Counter(votes)
    return {a: _SCORE.get(n, 1.0) for a, n in sorted(counts.items())}


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
    key = [seed, list(FAMILIES).index(family), client_index, _PARTS.index(part), i]
    rng = np.random.default_rng(key)
    qtype = cd.question_types[int(rng.integers(len(cd.question_types)))]
    for _ in range(1000):
        scene = world.sample_scene(rng, cd.shapes, cd.colours, part)
        question = GENERATORS[qtype](scene, rng, cd.phrasing)
        if question is not None:
            break
    else:
        raise RuntimeError(f"{family}/{cd.name}: no scene supports question type {qtype!r}")
    image = world.encode_png(world.render(scene, cd.style, image_size, rng))
    answers = _annotate(question, rng, noise) if cd.task_kind == "vqa" else {question.answer: 1.0}
    example_id = f"{family}/{cd.name}/{part}/{i:05d}/{qtype}"
    return Example(question.text, image, answers, example_id), question.alternatives


def _vocabulary(train: list[Example], label_space: set[str], top_k: int) -> list[str]:
    """Train answers by frequency, then the rest of the client's label space alphabetically
    (so a small sample still covers every answer its questions can have), cut to ``top_k``."""
    seen = answer_vocabulary(train, top_k)
    return (seen + sorted(label_space - set(seen)))[:top_k]


def _size_factors(num_clients: int, spread: float, seed: int) -> np.ndarray:
    factors = 1.0 + spread * np.linspace(-1.0, 1.0, num_clients) if num_clients > 1 else np.ones(1)
    return np.random.default_rng([seed, 7919]).permutation(factors)


def _check(
    family: str,
    num_clients: int | None,
    image_size: int,
    patch_size: int,
    train_per_client: int,
    test_per_client: int,
    top_k: int,
) -> int:
    defs = family_clients(family)
    n = len(defs) if num_clients is None else num_clients
    if not 1 <= n <= len(defs):
        raise ValueError(
            f"family {family!r} has {len(defs)} clients "
            f"{[d.name for d in defs]}; num_clients={num_clients} is not in "
            f"1..{len(defs)}"
        )
    if patch_size < 1 or image_size < 16 or image_size % patch_size:
        raise ValueError(
            f"image_size={image_size} must be >= 16 and a multiple of "
            f"patch_size={patch_size} (e.g. {max(16, patch_size) * 2})"
        )
    if train_per_client < 1 or test_per_client < 1:
        raise ValueError(
            f"train_per_client={train_per_client} and test_per_client="
            f"{test_per_client} must both be >= 1"
        )
    if not 1 <= top_k <= 100:
        raise ValueError(f"top_k={top_k} is not in 1..100")
    return n


def make_benchmark(
    family: str,
    num_clients: int | None = None,
    image_size: int = 32,
    train_per_client: int = 300,
    test_per_client: int = 100,
    seed: int = 0,
    *,
    patch_size: int = 16,
    size_spread: float | None = None,
    top_k: int = 100,
    annotator_noise: float = 0.05,
) -> FederatedBenchmark:
    """Generate the first ``num_clients`` (default: all) clients of ``family``.

    Client k gets ``round(train_per_client * f_k)`` train and ``round(test_per_client * f_k)``
    test examples, f_k spread evenly over ``1 +- size_spread`` in a seeded order (default spread:
    0.4 for ``domain``, 0 otherwise). Its answer vocabulary is its top-``top_k`` train answers
    followed by the unseen rest of its label space; examples with an answer outside the
    vocabulary are dropped (the SPEC recipe; only happens for small ``top_k``).
    """
    n = _check(
        family, num_clients, image_size, patch_size, train_per_client, test_per_client, top_k
    )
    defs = family_clients(family)[:n]
    spread = _DEFAULT_SIZE_SPREAD.get(family, 0.0) if size_spread is None else size_spread
    factors = _size_factors(n, spread, seed)
    clients, info = [], {}
    for k, cd in enumerate(defs):
        sizes = {
            "train": max(1, round(train_per_client * factors[k])),
            "test": max(1, round(test_per_client * factors[k])),
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
        vocab = _vocabulary(parts["train"], label_space, top_k)
        kept = {p: [ex for ex in parts[p] if set(ex.answers) <= set(vocab)] for p in _PARTS}
        clients.append(ClientSplit(cd.name, cd.task_kind, vocab, kept["train"], kept["test"]))
        info[cd.name] = {
            "question_types": list(cd.question_types),
            "style": cd.style.name,
            "background": cd.style.background,
            "phrasing": cd.phrasing,
            "shapes": list(cd.shapes),
            "colours": list(cd.colours),
            "dropped_outside_vocabulary": {p: sizes[p] - len(kept[p]) for p in _PARTS},
        }
    params = {
        "num_clients": n,
        "image_size": image_size,
        "patch_size": patch_size,
        "train_per_client": train_per_client,
        "test_per_client": test_per_client,
        "size_spread": spread,
        "top_k": top_k,
        "annotator_noise": annotator_noise,
    }
    manifest = {
        "generator": __name__,
        "generator_version": GENERATOR_VERSION,
        "family": family,
        "params": params,
        "clients": info,
        "sources": {c.name: f"embedded:{family}/{c.name}" for c in clients},
    }
    return FederatedBenchmark(f"embedded_{family}", clients, seed, manifest)


_BUILD_SIGNATURE = inspect.signature(make_benchmark)


def cache_path(family: str, cache_dir: str | os.PathLike, **kw) -> Path:
    """Where :func:`load_or_build` keeps this benchmark: keyed by every parameter of
    :func:`make_benchmark` (defaults included) and the generator version."""
    bound = _BUILD_SIGNATURE.bind(family, **kw)
    bound.apply_defaults()
    key = json.dumps({"version": GENERATOR_VERSION, **bound.arguments}, sort_keys=True)
    return Path(cache_dir) / f"embedded_{family}_{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def load_or_build(family: str, cache_dir: str | os.PathLike, **kw) -> FederatedBenchmark:
    """Read the cached benchmark for these parameters, or build, store and return it.

    The build is written to a private temporary folder and renamed into place, so concurrent
    callers never read a half-written benchmark.
    """
    path = cache_path(family, cache_dir, **kw)
    if not (path / MANIFEST).is_file():
        benchmark = make_benchmark(family, **kw)
        tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
        write_benchmark(benchmark, tmp, overwrite=True)
        try:
            tmp.rename(path)
        except OSError:  # another process finished first; its copy is identical
            shutil.rmtree(tmp)
    return read_benchmark(path)
