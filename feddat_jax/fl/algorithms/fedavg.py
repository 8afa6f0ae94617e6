"""FedAvg-style local training: one AdamW step per batch on (shared, private) together.

This one class is every single-model baseline of the paper; the PEFT partition decides what is
trained and what is shared: FedAvg + adapter / LoRA / BitFit / LayerNorm / prompts / full
finetuning (the trained params are shared), local-only (everything trained is private), and
FedProx (``prox_mu > 0`` adds ``μ/2 ‖w − w_global‖²`` on the shared params to the loss).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from feddat_jax.fl import local_optim, losses
from feddat_jax.fl.algorithms.base import Batch, ClientContext, Forward, LocalAlgorithm, PyTree
from feddat_jax.peft.roles import merge

ADAPTER_MODES = ("none", "shared", "client", "dat")


@dataclasses.dataclass(frozen=True)
class FedAvgConfig:
    adapter_mode: str = "shared"  # which adapter the model runs ("none" for LoRA/BitFit/...)
    prox_mu: float = 0.0  # FedProx coefficient; 0 is plain FedAvg
    reset_optimizer_each_round: bool = True
    optim: local_optim.LocalOptimConfig = local_optim.LocalOptimConfig()

    def __post_init__(self):
        if self.adapter_mode not in ADAPTER_MODES:
            raise ValueError(
                f"unknown adapter_mode {self.adapter_mode!r}; allowed: {ADAPTER_MODES}"
            )
        if self.prox_mu < 0:
            raise ValueError(f"prox_mu must be >= 0, got {self.prox_mu}")


def squared_distance(a: PyTree, b: PyTree) -> jax.Array:
    return sum(
        (jnp.sum((x - y) ** 2) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))),
        jnp.zeros((), jnp.float32),
    )


class FedAvg(LocalAlgorithm):
    """Local AdamW on the task loss (+ FedProx term); shared params go to the server."""

    eval_variants = ("global",)

    def __init__(self, forward: Forward, config: FedAvgConfig = FedAvgConfig()):
        self.forward = forward
        self.config = config
        self.tx = local_optim.adamw_direction(config.optim)

    def init_private(self, shared: PyTree, private_params: PyTree) -> PyTree:
        return {"params": private_params, "opt": self.tx.init((shared, private_params))}

    def begin_round(self, ctx: ClientContext, private: PyTree) -> PyTree:
        trainable = (ctx.global_shared, private["params"])
        opt = self.tx.init(trainable) if self.config.reset_optimizer_each_round else private["opt"]
        return {"trainable": trainable, "opt": opt, "tick": jnp.zeros((), jnp.int32)}

    def loss(self, ctx: ClientContext, trainable: PyTree, batch: Batch):
        shared, private_params = trainable
        z_BxA = self.forward(
            merge(ctx.frozen, shared, private_params), batch, self.config.adapter_mode
        )
        task = losses.task_loss(
            z_BxA, batch["targets"], ctx.answer_mask, ctx.task_kind, batch["example_mask"]
        )
        prox = 0.5 * self.config.prox_mu * squared_distance(shared, ctx.global_shared)
        return task + prox, {"task": task, "prox": prox}

    def local_step(self, ctx, local, batch, rng):
        del rng  # the frozen backbone runs without dropout
        (loss, metrics), grads = jax.value_and_grad(self.loss, argnums=1, has_aux=True)(
            ctx, local["trainable"], batch
        )
        lr = local_optim.learning_rate(self.config.optim, local["tick"], ctx.num_batches)
        trainable, opt = local_optim.apply_adamw(
            self.tx, grads, local["opt"], local["trainable"], lr
        )
        local = {"trainable": trainable, "opt": opt, "tick": local["tick"] + 1}
        return local, {"loss": loss, "lr": lr, **metrics}

    def end_round(self, ctx, local):
        shared, private_params = local["trainable"]
        return shared, {"params": private_params, "opt": local["opt"]}

    def eval_logits(self, ctx, private, shared, batch):
        params = merge(ctx.frozen, shared, private["params"])
        return {"global": self.forward(params, batch, self.config.adapter_mode)}
