"""What crosses the wire: the shared parameters as a Flower ``ArrayRecord``, checked on arrival.

A tree travels as ``{"a/b/c": Array}`` (its flattened paths). A receiver knows the shapes it
expects (the shared parameters of the run) and refuses anything else in ONE line: a record that
carries private parameters (A_c, the head, ...) or unknown paths, lacks a shared one, or has a
shape or dtype that differs. So a node can never be made to ship its private state by a
malformed request, nor a server to fold a wrong-shaped update into the global model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util
from flwr.app import Array, ArrayRecord

from feddat_jax.errors import DataError

PyTree = Any
SEP = "/"
Shapes = dict[str, tuple[tuple[int, ...], np.dtype]]


def flat(tree: PyTree) -> dict[str, np.ndarray]:
    """The tree's leaves as host numpy by path ("a/b/c")."""
    return {
        k: np.asarray(v) for k, v in traverse_util.flatten_dict(jax.device_get(tree), sep=SEP).items()
    }


def shapes_of(tree: PyTree) -> Shapes:
    """Path -> (shape, dtype) of a tree (what a receiver expects)."""
    return {k: (tuple(v.shape), np.dtype(v.dtype)) for k, v in flat(tree).items()}


def to_record(tree: PyTree) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in flat(tree).items()})


def from_record(
    record: ArrayRecord, expected: Shapes, where: str, private: set[str] | frozenset = frozenset()
) -> PyTree:
    """The tree a record carries, if it is exactly the expected shared parameters.

    ``private``: paths the receiver knows to be private, named as such in the refusal.
    """
    arrays = {k: record[k].numpy() for k in record}
    return unflat(arrays, expected, where, private)


def unflat(
    arrays: Mapping[str, np.ndarray],
    expected: Shapes,
    where: str,
    private: set[str] | frozenset = frozenset(),
) -> PyTree:
    extra = sorted(set(arrays) - set(expected))
    leaked = [k for k in extra if k in private]
    if leaked:
        raise DataError(
            f"refused a message that carries private parameters {leaked[:3]}",
            where,
            "only the shared parameters may cross the wire; the private ones stay on the node",
        )
    if extra:
        raise DataError(
            f"refused a message with parameters that are not shared: {extra[:3]}",
            where,
            "send exactly the run's shared parameters (same method and model on both ends)",
        )
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise DataError(
            f"refused a message that lacks shared parameters {missing[:3]}",
            where,
            "send exactly the run's shared parameters (same method and model on both ends)",
        )
    for key, (shape, dtype) in expected.items():
        got = arrays[key]
        if tuple(got.shape) != shape or np.dtype(got.dtype) != dtype:
            raise DataError(
                f"refused {key}: shape {tuple(got.shape)} {got.dtype}, expected {shape} {dtype}",
                where,
                "both ends must run the same config (method, model, peft)",
            )
    return traverse_util.unflatten_dict(dict(arrays), sep=SEP)


def record_bytes(record: ArrayRecord) -> int:
    """Payload bytes of a record's arrays (what the shared parameters weigh on the wire)."""
    return int(sum(len(record[k].data) for k in record))
