"""The messages between the ServerApp and a node, as Flower ``RecordDict`` s, built and checked.

query    server -> node: {}                        node -> server: config {partition, partitions,
                                                                    clients}
train    server -> node: config {round, clients},  node -> server: "delta.<k>" per client k
                         arrays "shared"                            (ArrayRecord), metrics
                                                                    "<k>/<name>", "<k>/num_examples"
evaluate server -> node: config {round, clients},  node -> server: arrays "scores" with
                         arrays "round_start",                      "<variant>/<k>" [S_e, B_e]
                         "shared"

Every ArrayRecord of parameters is checked against the run's shared parameters on arrival
(``wire.from_record``): neither end accepts private or wrongly shaped parameters.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from feddat_jax.errors import DataError
from feddat_jax.flower import wire

PyTree = Any
DELTA = "delta."


def train_request(round_index: int, clients, shared: PyTree) -> RecordDict:
    return RecordDict(
        {
            "config": ConfigRecord({"round": int(round_index), "clients": [int(k) for k in clients]}),
            "shared": wire.to_record(shared),
        }
    )


def train_reply(clients, deltas: list[PyTree], metrics_C: dict, num_examples) -> RecordDict:
    content: dict[str, Any] = {f"{DELTA}{int(k)}": wire.to_record(d) for k, d in zip(clients, deltas)}
    metrics: dict[str, float | int] = {}
    for i, k in enumerate(clients):
        metrics[f"{int(k)}/num_examples"] = int(num_examples[i])
        for name, values in metrics_C.items():
            metrics[f"{int(k)}/{name}"] = float(np.asarray(values)[i])
    content["metrics"] = MetricRecord(metrics)
    return RecordDict(content)


def read_train_reply(
    content: RecordDict, asked, expected: wire.Shapes, private, where: str
) -> tuple[list[PyTree], dict[str, list[float]], list[int]]:
    """(delta per asked client, metrics per name [C], num_examples [C]) of a node's reply,
    refused (DataError) unless it is exactly one delta of the shared parameters per client."""
    keys = {k for k in content.array_records}
    want = {f"{DELTA}{int(k)}" for k in asked}
    if keys != want:
        raise DataError(
            f"refused a reply with records {sorted(keys)[:4]}, expected {sorted(want)[:4]}",
            where,
            "a node returns one delta of the shared parameters per client it was asked for",
        )
    deltas = [
        wire.from_record(content.array_records[f"{DELTA}{int(k)}"], expected, where, private)
        for k in asked
    ]
    record = content.metric_records["metrics"]
    names = sorted({key.split("/", 1)[1] for key in record} - {"num_examples"})
    metrics = {n: [float(record[f"{int(k)}/{n}"]) for k in asked] for n in names}
    return deltas, metrics, [int(record[f"{int(k)}/num_examples"]) for k in asked]


def eval_request(rounds_done: int, clients, round_start: PyTree, shared: PyTree) -> RecordDict:
    return RecordDict(
        {
            "config": ConfigRecord({"round": int(rounds_done), "clients": [int(k) for k in clients]}),
            "round_start": wire.to_record(round_start),
            "shared": wire.to_record(shared),
        }
    )


def eval_reply(clients, scores: dict[str, np.ndarray]) -> RecordDict:
    arrays = {
        f"{variant}/{int(k)}": Array(np.ascontiguousarray(values[i]))
        for variant, values in scores.items()
        for i, k in enumerate(clients)
    }
    return RecordDict({"scores": ArrayRecord(arrays)})


def read_eval_reply(content: RecordDict, asked) -> dict[str, np.ndarray]:
    """``{variant: [C, S_e, B_e]}`` in the asked clients' order."""
    record = content.array_records["scores"]
    variants = sorted({key.rsplit("/", 1)[0] for key in record})
    return {
        v: np.stack([record[f"{v}/{int(k)}"].numpy() for k in asked]) for v in variants
    }
