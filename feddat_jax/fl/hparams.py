"""Scalar hyperparameters as traced values, so ONE compiled round serves every value of a sweep.

An algorithm, an aggregator and a server optimizer read their scalars (learning rate,
temperature, noise multiplier, ...) from frozen config dataclasses: Python floats baked into the
compiled program. A sweep (``train.sweep``) stacks R federations on a replica axis and runs them
as one program, so the scalars it varies must be *data*: the round takes ``hparams``, a flat dict
``{config path: float32 scalar}`` (stacked ``[R]`` and vmapped with the server state in a sweep),
and binds it while it is traced into copies of the algorithm and the aggregator
(:func:`bind_algorithm`, :func:`bind_aggregator`) and into the server step
(:func:`scale_server_updates`).

An unswept run passes ``hparams = {}``: nothing is bound and the program is exactly the one it
always was. A swept field that is not in :data:`SWEEPABLE` cannot be traced; ``train.sweep``
refuses it before anything runs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import jax

PyTree = Any
HParams = Mapping[str, jax.Array]

# config path -> (the component that reads it, the attribute path inside that component's config)
SWEEPABLE: dict[str, tuple[str, str]] = {
    "optim.learning_rate": ("algorithm", "optim.learning_rate"),
    "optim.warmup_fraction": ("algorithm", "optim.warmup_fraction"),
    "feddat.temperature": ("algorithm", "temperature"),
    "feddat.task_weight": ("algorithm", "task_weight"),
    "feddat.kd_weight": ("algorithm", "kd_weight"),
    "fedprox_mu": ("algorithm", "prox_mu"),
    "server.hyper.learning_rate": ("server", "learning_rate"),
    "dp.noise_multiplier": ("aggregator", "noise_multiplier"),
    "dp.clip_norm": ("aggregator", "clip_norm"),
}
SERVER_LEARNING_RATE = "server.hyper.learning_rate"


def with_value(obj: Any, path: str, value: Any) -> Any:
    """A shallow copy of a (frozen) dataclass with the attribute at dotted ``path`` set to
    ``value``; the dataclass's own checks are skipped, since a traced value cannot be compared
    (each replica's concrete value was checked when the sweep was built)."""
    head, _, rest = path.partition(".")
    if not hasattr(obj, head):
        raise AttributeError(f"{type(obj).__name__} has no field {head!r} to sweep")
    new = copy.copy(obj)
    object.__setattr__(new, head, with_value(getattr(obj, head), rest, value) if rest else value)
    return new


def _targets(hparams: HParams, component: str) -> dict[str, jax.Array]:
    unknown = sorted(set(hparams) - set(SWEEPABLE))
    if unknown:
        raise KeyError(f"hparams {unknown} are not sweepable; allowed: {sorted(SWEEPABLE)}")
    return {SWEEPABLE[k][1]: v for k, v in hparams.items() if SWEEPABLE[k][0] == component}


def bind_algorithm(algorithm, hparams: HParams):
    """The algorithm with its config's swept fields set to the (traced) values; itself if none."""
    values = _targets(hparams, "algorithm")
    if not values:
        return algorithm
    config = algorithm.config
    for path, value in values.items():
        config = with_value(config, path, value)
    bound = copy.copy(algorithm)
    bound.config = config
    return bound


def bind_aggregator(aggregator, hparams: HParams):
    """The aggregator with its swept attributes (DP clip norm, noise multiplier) set."""
    values = _targets(hparams, "aggregator")
    for path, value in values.items():
        aggregator = with_value(aggregator, path, value)
    return aggregator


def scale_server_updates(updates: PyTree, hparams: HParams) -> PyTree:
    """The server step times the swept server learning rate.

    A run that sweeps ``server.hyper.learning_rate`` builds its server optimizer with learning
    rate 1 (``make_server_optimizer``: every optimizer ends in ``-lr · direction``), and the
    round multiplies its updates by each replica's value here: ``(-d)·lr == d·(-lr)`` bit for
    bit, so a replica computes what a run built with its learning rate computes.
    """
    lr = hparams.get(SERVER_LEARNING_RATE)
    if lr is None:
        return updates
    return jax.tree.map(lambda u: u * lr.astype(u.dtype), updates)
