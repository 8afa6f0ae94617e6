"""The clients' local optimizer: AdamW with the official warmup + linear-decay schedule.

The learning rate is applied outside the optax chain because its horizon differs per client:
``S = schedule_epochs × batches per epoch`` of *that* client (SPEC §2), a traced value under vmap.
The schedule restarts every round. Parameters named ``bias`` or ``scale`` (biases and LayerNorm
scales) get no weight decay, as in the official code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any
_NO_DECAY_LEAVES = ("bias", "scale")


@dataclasses.dataclass(frozen=True)
class LocalOptimConfig:
    learning_rate: float = 1e-4
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    schedule_epochs: float = 15.0  # S = schedule_epochs × batches per epoch

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.schedule_epochs <= 0:
            raise ValueError(f"schedule_epochs must be > 0, got {self.schedule_epochs}")


def decay_mask(params: PyTree) -> PyTree:
    """True for leaves that get weight decay (not biases, not LayerNorm scales)."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: getattr(path[-1], "key", None) not in _NO_DECAY_LEAVES, params
    )


def adamw_direction(cfg: LocalOptimConfig) -> optax.GradientTransformation:
    """AdamW's update before the learning rate: ``m̂/(sqrt(v̂)+eps) + wd·p`` (PyTorch AdamW)."""
    return optax.chain(
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
    )


def total_schedule_steps(cfg: LocalOptimConfig, num_batches: jax.Array) -> jax.Array:
    """The schedule horizon S in ticks: ``schedule_epochs × batches per epoch``.

    As in the official code the horizon counts batches, while FedDAT's counter ticks twice per
    batch (once per sub-step), so FedDAT walks its schedule twice as fast as a one-step method.
    """
    return jnp.maximum(1.0, jnp.floor(cfg.schedule_epochs * num_batches))


def learning_rate(cfg: LocalOptimConfig, tick: jax.Array, total: jax.Array) -> jax.Array:
    """transformers' ``get_linear_schedule_with_warmup`` at ``tick`` of ``total``."""
    warmup = jnp.floor(cfg.warmup_fraction * total)
    tick = tick.astype(jnp.float32)
    up = tick / jnp.maximum(1.0, warmup)
    down = jnp.maximum(0.0, (total - tick) / jnp.maximum(1.0, total - warmup))
    return cfg.learning_rate * jnp.where(tick < warmup, up, down)


def apply_adamw(
    tx: optax.GradientTransformation,
    grads: PyTree,
    opt_state: PyTree,
    params: PyTree,
    lr: jax.Array,
) -> tuple[PyTree, PyTree]:
    """One AdamW step on exactly the parameters given: nothing else is touched."""
    direction, opt_state = tx.update(grads, opt_state, params)
    params = jax.tree.map(lambda p, d: p - lr * d, params, direction)
    return params, opt_state
