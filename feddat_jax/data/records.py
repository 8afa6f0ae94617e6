"""The records every data source produces and every consumer reads.

One vocabulary for the whole data layer: a reader or generator yields :class:`Example` s, groups
them per client into :class:`ClientSplit` s, and a :class:`FederatedBenchmark` is what
``tfds_store`` writes and reads and what the pipeline encodes. Kept deliberately small and plain
(no behaviour beyond validation) because several modules, written in parallel, depend on it.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Any
from collections.abc import Iterable

TASK_KINDS = ("vqa", "classification")
"""'vqa': soft scores, trained with BCE; 'classification': one-hot, trained with cross-entropy."""


@dataclasses.dataclass(frozen=True)
class Example:
    """One question about one image.

    ``image`` holds the encoded file bytes (PNG or JPEG), never pixels, so that a record is cheap
    to keep and to store; the pipeline decodes it once. ``answers`` maps each answer to its soft
    score in [0, 1] (a single answer with 1.0 for classification). Scores are stored as float32,
    the precision the training targets have anyway. ``question_type`` names the question's
    template or type where the source says it (the blind baseline answers per type) and
    ``group`` tags it "shared" or "shifted" where the source knows whether clients agree on its
    answer (the embedded benchmark does; real sources leave both empty).
    """

    question: str
    image: bytes
    answers: dict[str, float]
    example_id: str
    question_type: str = ""
    group: str = ""


@dataclasses.dataclass(frozen=True)
class ClientSplit:
    """One client's data: its task, its private answer vocabulary, and its train/test examples.

    ``answers`` is the client's head vocabulary (top-K answers, most frequent first); the index of
    an answer in this list is the index of its logit in the client's head.
    """

    name: str
    task_kind: str
    answers: list[str]
    train: list[Example]
    test: list[Example]

    def __post_init__(self) -> None:
        if self.task_kind not in TASK_KINDS:
            raise ValueError(
                f"client {self.name!r}: task_kind {self.task_kind!r} is not one of {TASK_KINDS}"
            )
        # a lazily computed vocabulary (not a list) is built without duplicates
        if isinstance(self.answers, list) and len(set(self.answers)) != len(self.answers):
            raise ValueError(f"client {self.name!r}: duplicate entries in its answer vocabulary")


@dataclasses.dataclass(frozen=True)
class FederatedBenchmark:
    """A named set of clients built with one seed; ``manifest`` records how (JSON-serialisable)."""

    name: str
    clients: list[ClientSplit]
    seed: int
    manifest: dict[str, Any] = dataclasses.field(default_factory=dict)

    def client(self, name: str) -> ClientSplit:
        for c in self.clients:
            if c.name == name:
                return c
        raise KeyError(f"no client {name!r}; clients: {[c.name for c in self.clients]}")


def answer_vocabulary(examples: Iterable[Example], top_k: int) -> list[str]:
    """The ``top_k`` answers by summed soft score, most frequent first, ties broken by the string
    (so the order, and with it every head index, is reproducible)."""
    weight: collections.Counter[str] = collections.Counter()
    for ex in examples:
        for answer, score in ex.answers.items():
            weight[answer] += score
    ranked = sorted(weight.items(), key=lambda kv: (-kv[1], kv[0]))
    return [a for a, _ in ranked[:top_k]]
