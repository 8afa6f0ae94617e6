"""The ``blind`` reference row: answer without looking at the image.

For each client and each question type, always give the answer that scored most in that client's
training data for that type (soft scores summed). Whatever a method scores above this, it owes to
the image. The question type is the example's own tag where the source has one (the embedded
benchmark does), else the question's first three words, the usual proxy on VQA-style data.
"""

from __future__ import annotations

import collections

import numpy as np

from feddat_jax.data.records import ClientSplit, Example, FederatedBenchmark
from feddat_jax.data.tokenize import words
from feddat_jax.train import scores as scores_lib
from feddat_jax.train.metrics import Record


def question_key(example: Example) -> str:
    return example.question_type or " ".join(words(example.question)[:3])


def blind_answers(client: ClientSplit) -> tuple[dict[str, str], str]:
    """(the best training answer per question type, the best answer overall)."""
    by_type: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    overall: collections.Counter = collections.Counter()
    for ex in client.train:
        for answer, score in ex.answers.items():
            by_type[question_key(ex)][answer] += score
            overall[answer] += score

    def best(counter: collections.Counter) -> str:
        return min(counter.items(), key=lambda kv: (-kv[1], kv[0]))[0] if counter else ""

    return {t: best(c) for t, c in by_type.items()}, best(overall)


def blind_scores(client: ClientSplit) -> np.ndarray:
    """Each test example's soft score of the blind answer."""
    per_type, fallback = blind_answers(client)
    return np.array(
        [ex.answers.get(per_type.get(question_key(ex), fallback), 0.0) for ex in client.test],
        np.float64,
    )


def blind_history(benchmark: FederatedBenchmark, rounds: int) -> list[Record]:
    """A one-record history in the format of a method's last evaluation (variant ``global``)."""
    clients = benchmark.clients
    tags = [
        {
            "question_type": np.array([ex.question_type for ex in c.test], dtype=object),
            "group": np.array([ex.group for ex in c.test], dtype=object),
        }
        for c in clients
    ]
    record: Record = {"round": rounds, "comm/bytes_cumulative": 0}
    record.update(
        scores_lib.summarize(
            "global", [blind_scores(c) for c in clients], [c.name for c in clients], tags
        )
    )
    return [record]
