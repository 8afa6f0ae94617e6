"""Server optimizers on the pseudo-gradient ``g = -(weighted mean of client deltas)``.

FedAvg is SGD with learning rate 1 (``x ← x + mean delta``). FedAvgM adds server momentum.
FedAdam, FedYogi and FedAdagrad follow Reddi et al. 2021 ("Adaptive Federated Optimization",
Algorithm 2) exactly: momentum ``m ← β1 m + (1-β1) g``, second moment per variant, update
``-η m / (sqrt(v) + τ)``, no bias correction, ``v`` initialised to ``τ²``. optax's own adam/yogi
apply bias correction, so these three are written here as small optax transformations.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from feddat_jax.errors import ConfigError

SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam", "fedyogi", "fedadagrad")


class ReddiState(NamedTuple):
    m: optax.Updates
    v: optax.Updates


def scale_by_reddi(variant: str, b1: float, b2: float, tau: float) -> optax.GradientTransformation:
    """The adaptive direction ``m / (sqrt(v) + τ)`` of FedAdam / FedYogi / FedAdagrad."""

    def init_fn(params):
        return ReddiState(
            m=jax.tree.map(jnp.zeros_like, params),
            v=jax.tree.map(lambda p: jnp.full_like(p, tau * tau), params),
        )

    def second_moment(v, g):
        g2 = g * g
        if variant == "fedadagrad":
            return v + g2
        if variant == "fedadam":
            return b2 * v + (1.0 - b2) * g2
        return v - (1.0 - b2) * g2 * jnp.sign(v - g2)  # fedyogi

    def update_fn(updates, state, params=None):
        del params
        m = jax.tree.map(lambda m_, g: b1 * m_ + (1.0 - b1) * g, state.m, updates)
        v = jax.tree.map(second_moment, state.v, updates)
        direction = jax.tree.map(lambda m_, v_: m_ / (jnp.sqrt(v_) + tau), m, v)
        return direction, ReddiState(m=m, v=v)

    return optax.GradientTransformation(init_fn, update_fn)


def make_server_optimizer(
    name: str,
    learning_rate: float = 1.0,
    momentum: float = 0.9,
    b1: float = 0.9,
    b2: float = 0.99,
    tau: float = 1e-3,
) -> optax.GradientTransformation:
    """Build the server optimizer by name (see module docstring for the exact rules)."""
    if name == "fedavg":
        return optax.sgd(learning_rate)
    if name == "fedavgm":
        return optax.sgd(learning_rate, momentum=momentum)
    if name in ("fedadam", "fedyogi", "fedadagrad"):
        return optax.chain(scale_by_reddi(name, b1, b2, tau), optax.scale(-learning_rate))
    raise ConfigError(
        f"unknown server optimizer {name!r}",
        "config.server.optimizer",
        f"choose one of: {', '.join(SERVER_OPTIMIZERS)}",
    )
