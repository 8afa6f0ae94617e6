"""Server aggregation: a pure tree reduction of the cohort's shared-parameter deltas.

The round hands the aggregator the clients value ``delta_C = shared_k - shared_global`` and the
clients' example counts; it returns one server value, the mean delta. A plain weighted mean is the
default; other aggregators (e.g. differentially private ones) implement the same ``Aggregator``
protocol and plug into the round unchanged.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import jax.numpy as jnp

from feddat_jax.errors import ConfigError
from feddat_jax.fl import placement

PyTree = Any
AGGREGATION_WEIGHTS = ("weighted", "uniform")


def client_weights(num_examples_C: jax.Array, kind: str) -> jax.Array:
    """``n_k / Σ n`` (FedAvg, our default) or ``1 / C`` (the official FedDAT code).

    Padded cohort slots (``num_examples == 0``, e.g. a cohort padded to a multiple of the mesh's
    ``clients`` devices) weigh 0 in both: ``uniform`` is ``1 / C_real`` over the real clients.
    """
    if kind == "weighted":
        n = num_examples_C.astype(jnp.float32)
        return n / jnp.sum(n)
    if kind == "uniform":
        real = (num_examples_C > 0).astype(jnp.float32)
        return real / jnp.maximum(jnp.sum(real), 1.0)
    raise ConfigError(
        f"unknown aggregation {kind!r}",
        "config.aggregation",
        f"choose one of: {', '.join(AGGREGATION_WEIGHTS)}",
    )


class Aggregator(Protocol):
    """Turns the cohort's deltas into the server's mean delta."""

    def __call__(
        self, delta_C: PyTree, num_examples_C: jax.Array, rng: jax.Array
    ) -> tuple[PyTree, dict[str, jax.Array]]: ...


class MeanAggregator:
    """The weighted (or uniform) mean of the client deltas; ``rng`` is unused."""

    def __init__(self, weights: str = "weighted"):
        if weights not in AGGREGATION_WEIGHTS:
            raise ConfigError(
                f"unknown aggregation {weights!r}; allowed: {', '.join(AGGREGATION_WEIGHTS)}"
            )
        self.weights = weights

    def __call__(self, delta_C, num_examples_C, rng):
        del rng
        w_C = client_weights(num_examples_C, self.weights)
        return placement.reduce_weighted_mean(delta_C, w_C), {}


def tree_delta(new: PyTree, old: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: a - b, new, old)
