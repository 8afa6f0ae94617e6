"""The clients' local optimizer: AdamW with a warmup + linear-decay schedule.

The learning rate is applied outside the optax chain because its horizon differs per client:
``S = schedule_epochs × batches per epoch`` of *that* client (METHOD.md §2), a traced value under
vmap. The schedule restarts every round. Two schedules (``LocalOptimConfig.schedule``):

* ``"official"`` (the paper configs): the official code's. Warmup lasts ``warmup_fraction × S``
  ticks, 1.5 epochs with the defaults, and a method's counter ticks once per optimizer step. A
  one-step method therefore never leaves warmup within a round, while FedDAT, two steps per batch,
  passes the peak three quarters into it: a difference between methods that is the schedule's.
* ``"fair"`` (for comparisons): the counter counts batches, so every parameter group of every
  method gets the same learning rate at the same batch (FedDAT's two sub-steps share it), and the
  warmup lasts ``warmup_fraction`` of ONE epoch, so it completes inside every round.

``max_local_steps`` caps a round at that many batches (FedAvg's K local steps; 0: the whole local
epoch, the paper's setting). A capped round takes the first K batches of the round's shuffle, and
both schedules then treat the round as the epoch: warmup and horizon count ``min(K, batches per
epoch)``, so a short round warms up and decays like a short epoch instead of spending itself in
the warmup of an epoch it never finishes.

Weight decay follows the official code's mask, which is a rule on PyTorch parameter names: no
decay where the name contains ``bias`` or ``LayerNorm.weight``, decay for everything else. So
BERT-style ``…embeddings.LayerNorm`` scales are exempt, while the head's LayerNorm scale and ViLT's
lower-case ``layernorm_before`` / ``layernorm_after`` / final ``layernorm`` scales (and ALBEF's
ViT ``norm1`` / ``norm2`` / ``norm``) ARE decayed. The rule reads our Flax paths with Flax's leaf
names turned into PyTorch's (``kernel``, ``scale``, ``embedding`` -> ``weight``): our module names
are the official ones, so that is the tensor's PyTorch name as far as the rule can tell, for every
backbone and none (tests/test_decay_mask.py checks it against every tensor of ViLT and ALBEF), and
the federated core needs no model's naming.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import optax

PyTree = Any
NO_DECAY_NAME_PARTS = ("bias", "LayerNorm.weight")  # the official rule, on PyTorch names
FLAX_TO_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight"}
SCHEDULES = ("official", "fair")


@dataclasses.dataclass(frozen=True)
class LocalOptimConfig:
    learning_rate: float = 1e-4
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-8
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    schedule_epochs: float = 15.0  # S = schedule_epochs × batches per epoch
    schedule: str = "official"  # "official" | "fair" (module docstring)
    max_local_steps: int = 0  # batches per round at most (0 = the whole local epoch)

    def __post_init__(self):
        if self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; allowed: {SCHEDULES}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if self.schedule_epochs <= 0:
            raise ValueError(f"schedule_epochs must be > 0, got {self.schedule_epochs}")
        if self.max_local_steps < 0:
            raise ValueError(
                f"max_local_steps must be >= 0 (0 = the whole local epoch), "
                f"got {self.max_local_steps}"
            )


def param_path(key_path) -> str:
    """A leaf's path ("vilt/encoder/…") from its dict keys; tuple positions such as FedAvg's
    (shared, private) are not part of it. A subtree (FedDAT's head group) gets its path inside
    the subtree: the rule reads module and leaf names only, so the group's root does not matter."""
    return "/".join(str(k.key) for k in key_path if isinstance(k, jax.tree_util.DictKey))


def decays(path: str) -> bool:
    """Whether the parameter at ``path`` gets weight decay (the official name rule)."""
    return not any(part in torch_style_name(path) for part in NO_DECAY_NAME_PARTS)


def torch_style_name(path: str) -> str:
    """``"vilt/encoder/layer_0/output/LayerNorm/scale"`` -> ``"….output.LayerNorm.weight"``."""
    *modules, leaf = path.split("/")
    return ".".join([*modules, FLAX_TO_TORCH_LEAF.get(leaf, leaf)])


def decay_mask(params: PyTree) -> PyTree:
    """True for the leaves that get weight decay."""
    return jax.tree_util.tree_map_with_path(lambda kp, _: decays(param_path(kp)), params)


def adamw_direction(cfg: LocalOptimConfig) -> optax.GradientTransformation:
    """AdamW's update before the learning rate: ``m̂/(sqrt(v̂)+eps) + wd·p`` (PyTorch AdamW)."""
    return optax.chain(
        optax.scale_by_adam(b1=cfg.b1, b2=cfg.b2, eps=cfg.eps),
        optax.add_decayed_weights(cfg.weight_decay, mask=decay_mask),
    )


def round_batches(cfg: LocalOptimConfig, num_batches: jax.Array) -> jax.Array:
    """The batches a client trains on in a round: its epoch's, at most ``max_local_steps``."""
    if cfg.max_local_steps:
        return jnp.minimum(num_batches, float(cfg.max_local_steps))
    return num_batches


def total_schedule_steps(cfg: LocalOptimConfig, num_batches: jax.Array) -> jax.Array:
    """The schedule horizon S: ``schedule_epochs × batches per round`` (per epoch unless capped).

    As in the official code the horizon counts batches, while under the official schedule
    FedDAT's counter ticks twice per batch (once per sub-step), so FedDAT walks its schedule
    twice as fast as a one-step method.
    """
    return jnp.maximum(1.0, jnp.floor(cfg.schedule_epochs * num_batches))


def warmup_decay(peak: float, tick: jax.Array, warmup: jax.Array, total: jax.Array) -> jax.Array:
    """transformers' ``get_linear_schedule_with_warmup``: 0 → ``peak`` over ``warmup`` ticks,
    then linearly to 0 at ``total``."""
    tick = tick.astype(jnp.float32)
    up = tick / jnp.maximum(1.0, warmup)
    down = jnp.maximum(0.0, (total - tick) / jnp.maximum(1.0, total - warmup))
    return peak * jnp.where(tick < warmup, up, down)


def learning_rate(
    cfg: LocalOptimConfig, tick: jax.Array, num_batches: jax.Array, ticks_per_batch: int = 1
) -> jax.Array:
    """The learning rate of local optimizer step ``tick`` of a round (``ticks_per_batch`` steps
    per batch: 2 for FedDAT), for a client with ``num_batches`` batches per epoch."""
    num_batches = round_batches(cfg, num_batches)
    total = total_schedule_steps(cfg, num_batches)
    if cfg.schedule == "fair":
        return warmup_decay(
            cfg.learning_rate,
            tick // ticks_per_batch,
            jnp.floor(cfg.warmup_fraction * num_batches),
            total,
        )
    return warmup_decay(cfg.learning_rate, tick, jnp.floor(cfg.warmup_fraction * total), total)


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
