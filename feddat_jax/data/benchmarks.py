"""The paper's four real benchmarks (METHOD.md §5): which sources make which clients.

One client per source. Each client names the reader (``feddat_jax.data.readers`` registry) and its
options, the folder under ``--raw_dir`` holding that source's released files, and the source
splits the federated train and test examples are drawn from (test comes from a held-out source
split, so a client's train and test never share a record).

=========  ==========================================================================
Domain     aqua (AQUA, art), vqa_abstract (VQA Abstract Scenes), vizwiz (VizWiz),
           cocoqa (COCO-QA), gqa (GQA balanced)
Function   CLOVE function stages: attribute, knowledge, logical, object, relation
Scene      CLOVE scenes: ShopAndDining, Workplace, HomeOrHotel, Transportation,
           SportAndLeisure, Outdoors
Task       vqav2 (VQA, soft scores), nlvr2 (true/false), snli_ve (entailment/neutral/
           contradiction), vcr (multiple choice A-D)
=========  ==========================================================================

Folders under ``--raw_dir``: ``aqua/ vqa_abstract/ vizwiz/ cocoqa/ gqa/ clove/ vqav2/ nlvr2/
snli_ve/ vcr/`` (Function and Scene share ``clove/``); each reader's docstring gives the layout.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from feddat_jax.data.readers import Reader, get_reader


@dataclasses.dataclass(frozen=True)
class ClientSource:
    client: str  # client name (letters, digits, '_': it names TFDS splits)
    reader: str  # registry name in feddat_jax.data.readers
    folder: str  # folder under --raw_dir
    train_split: str  # source split the federated train examples come from
    test_split: str  # source split the federated test examples come from
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def make_reader(self) -> Reader:
        return get_reader(self.reader, **dict(self.options))

    def describe(self) -> dict:
        return {
            "reader": self.reader,
            "options": dict(self.options),
            "folder": self.folder,
            "train_split": self.train_split,
            "test_split": self.test_split,
        }


@dataclasses.dataclass(frozen=True)
class BenchmarkDef:
    name: str
    description: str
    clients: tuple

    @property
    def client_names(self) -> list[str]:
        return [c.client for c in self.clients]


DOMAIN = BenchmarkDef(
    "domain",
    "Domain: one VQA source per client, each its own image domain",
    (
        ClientSource("aqua", "aqua", "aqua", "train", "test"),
        ClientSource("vqa_abstract", "vqa_abstract", "vqa_abstract", "train", "val"),
        ClientSource("vizwiz", "vizwiz", "vizwiz", "train", "val"),
        ClientSource("cocoqa", "cocoqa", "cocoqa", "train", "test"),
        ClientSource("gqa", "gqa", "gqa", "train", "val"),
    ),
)

CLOVE_FUNCTIONS = ("attribute", "knowledge", "logical", "object", "relation")
FUNCTION = BenchmarkDef(
    "function",
    "Function: CLOVE function stages, one per client",
    tuple(
        ClientSource(f, "clove", "clove", "train", "val", {"setting": "function", "subset": f})
        for f in CLOVE_FUNCTIONS
    ),
)

CLOVE_SCENES = (
    "ShopAndDining",
    "Workplace",
    "HomeOrHotel",
    "Transportation",
    "SportAndLeisure",
    "Outdoors",
)
SCENE = BenchmarkDef(
    "scene",
    "Scene: CLOVE scene stages, one per client",
    tuple(
        ClientSource(s, "clove", "clove", "train", "val", {"setting": "scene", "subset": s})
        for s in CLOVE_SCENES
    ),
)

TASK = BenchmarkDef(
    "task",
    "Task: one vision-language task per client",
    (
        ClientSource("vqav2", "vqav2", "vqav2", "train", "val"),
        ClientSource("nlvr2", "nlvr2", "nlvr2", "train", "test1"),
        ClientSource("snli_ve", "snli_ve", "snli_ve", "train", "test"),
        ClientSource("vcr", "vcr", "vcr", "train", "val"),
    ),
)

BENCHMARKS = {b.name: b for b in (DOMAIN, FUNCTION, SCENE, TASK)}


def get_benchmark(name: str) -> BenchmarkDef:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}") from None
