"""FedDAT: Dual-Adapter Teacher + Mutual Knowledge Distillation (Chen et al., AAAI 2024).

Per batch (METHOD.md §1), with Â_s the frozen copy of the global shared adapter received this round:

    z_T = sg f(x; DAT(A_c, Â_s), h)                                      teacher for step 1
    step 1 on {A_s, h}:  L_s   = ½ [task(f(x; A_s, h), y) + KD(f(x; A_s, h), z_T)]
    z_s = sg (step 1's A_s logits, taken before its update)
    step 2 on {A_c, h}:  L_DAT = ½ [task(f(x; DAT(A_c, Â_s), h), y) + KD(f(x; DAT(...), h), z_s)]

Each sub-step has its own AdamW state per parameter group (A_s, A_c, head), so a step updates
ONLY the parameters it names: the others, and their moments, stay bit-identical (PyTorch's
per-parameter AdamW state gives the same; the official code's single optimizer could let frozen
halves drift, which we do not reproduce). One LR-schedule counter ticks twice per batch.

Only A_s is sent to the server; A_c (and the optional DAT gate) and the head are private.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from feddat_jax.fl import local_optim, losses
from feddat_jax.fl.algorithms.base import Forward, LocalAlgorithm, PyTree
from feddat_jax.peft.roles import merge

TEACHER_MODES = ("dat", "client")
EVAL_TEACHERS = ("round_start", "latest_global")


@dataclasses.dataclass(frozen=True)
class FedDATConfig:
    temperature: float = 3.0
    task_weight: float = 0.5
    kd_weight: float = 0.5
    kd_to_shared: bool = True  # step 1 distils the DAT into A_s
    kd_to_dat: bool = True  # step 2 distils A_s into the DAT
    teacher_mode: str = "dat"  # "client": ablation "teacher without Â_s" (A_c alone)
    reset_optimizer_each_round: bool = True
    freeze_client_adapter_after_round0: bool = False  # faithful: the official requires_grad bug
    eval_teacher: str = "round_start"  # Â_s used by the DAT eval variant
    optim: local_optim.LocalOptimConfig = local_optim.LocalOptimConfig()

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.teacher_mode not in TEACHER_MODES:
            raise ValueError(
                f"unknown teacher_mode {self.teacher_mode!r}; allowed: {TEACHER_MODES}"
            )
        if self.eval_teacher not in EVAL_TEACHERS:
            raise ValueError(
                f"unknown eval_teacher {self.eval_teacher!r}; allowed: {EVAL_TEACHERS}"
            )
        for name in ("task_weight", "kd_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def split_head(private_params: PyTree) -> tuple[PyTree, PyTree]:
    """``(head, client part)``: the head is the top-level ``head`` entry of the private params."""
    rest = {k: v for k, v in private_params.items() if k != "head"}
    return private_params["head"], rest


def _select(pred: jax.Array, if_true: PyTree, if_false: PyTree) -> PyTree:
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), if_true, if_false)


class FedDAT(LocalAlgorithm):
    """FedDAT's local update; evaluation reports the DAT, A_c alone and A_s alone."""

    eval_variants = ("dat", "client", "shared")

    def __init__(self, forward: Forward, config: FedDATConfig = FedDATConfig()):
        self.forward = forward
        self.config = config
        self.tx = local_optim.adamw_direction(config.optim)

    # ---- state ---------------------------------------------------------------------------------
    def _fresh_opt(self, shared: PyTree, private_params: PyTree) -> PyTree:
        head, client = split_head(private_params)
        return {
            "shared": self.tx.init(shared),
            "client": self.tx.init(client),
            "head": self.tx.init(head),
        }

    def init_private(self, shared, private_params):
        return {"params": private_params, "opt": self._fresh_opt(shared, private_params)}

    def begin_round(self, ctx, private):
        head, client = split_head(private["params"])
        opt = (
            self._fresh_opt(ctx.global_shared, private["params"])
            if self.config.reset_optimizer_each_round
            else private["opt"]
        )
        return {
            "shared": ctx.global_shared,
            "client": client,
            "head": head,
            "opt": opt,
            "tick": jnp.zeros((), jnp.int32),
        }

    def end_round(self, ctx, local):
        return local["shared"], {
            "params": {**local["client"], "head": local["head"]},
            "opt": local["opt"],
        }

    # ---- losses --------------------------------------------------------------------------------
    def _logits(self, ctx, shared, client, head, batch, mode):
        return self.forward(merge(ctx.frozen, shared, client, {"head": head}), batch, mode)

    def _objective(self, ctx, z_BxA, batch, z_other_BxA, use_kd: bool):
        """``task_weight·task + kd_weight·KD``; a step without its KD term uses the plain task loss."""
        task = losses.task_loss(
            z_BxA, batch["targets"], ctx.answer_mask, ctx.task_kind, batch["example_mask"]
        )
        kd = losses.kd_loss(
            z_BxA, z_other_BxA, ctx.answer_mask, batch["example_mask"], self.config.temperature
        )
        if not use_kd:
            return task, (task, kd)
        return self.config.task_weight * task + self.config.kd_weight * kd, (task, kd)

    def shared_step_loss(self, trainable, ctx, local, batch, z_teacher_BxA):
        """Step 1: A_s (and the head) learn the task and the DAT teacher's knowledge."""
        shared, head = trainable
        z_BxA = self._logits(ctx, shared, local["client"], head, batch, "shared")
        loss, (task, kd) = self._objective(
            ctx, z_BxA, batch, z_teacher_BxA, self.config.kd_to_shared
        )
        return loss, (z_BxA, task, kd)

    def dat_step_loss(self, trainable, ctx, batch, z_shared_BxA):
        """Step 2: A_c (and the head) inside the DAT learn the task and A_s's knowledge."""
        client, head = trainable
        z_BxA = self._logits(ctx, ctx.global_shared, client, head, batch, self.config.teacher_mode)
        loss, (task, kd) = self._objective(ctx, z_BxA, batch, z_shared_BxA, self.config.kd_to_dat)
        return loss, (task, kd)

    # ---- one batch -----------------------------------------------------------------------------
    def teacher_logits(self, ctx, local, batch):
        """``z_T = sg f(x; DAT(A_c, Â_s), h)``: the DAT's logits before either sub-step."""
        return jax.lax.stop_gradient(
            self._logits(
                ctx,
                ctx.global_shared,
                local["client"],
                local["head"],
                batch,
                self.config.teacher_mode,
            )
        )

    def shared_step(self, ctx, local, batch, z_teacher_BxA):
        """Step 1: AdamW on {A_s, head} only. Returns (local, sg A_s logits before the update, metrics)."""
        cfg, opt = self.config, local["opt"]
        (loss, (z_shared, task, kd)), (g_shared, g_head) = jax.value_and_grad(
            self.shared_step_loss, has_aux=True
        )((local["shared"], local["head"]), ctx, local, batch, z_teacher_BxA)
        lr = local_optim.learning_rate(cfg.optim, local["tick"], ctx.num_batches, ticks_per_batch=2)
        shared, opt_shared = local_optim.apply_adamw(
            self.tx, g_shared, opt["shared"], local["shared"], lr
        )
        head, opt_head = local_optim.apply_adamw(self.tx, g_head, opt["head"], local["head"], lr)
        local = {
            **local,
            "shared": shared,
            "head": head,
            "tick": local["tick"] + 1,
            "opt": {**opt, "shared": opt_shared, "head": opt_head},
        }
        metrics = {"loss_shared": loss, "task_shared": task, "kd_shared": kd, "lr": lr}
        return local, jax.lax.stop_gradient(z_shared), metrics

    def dat_step(self, ctx, local, batch, z_shared_BxA):
        """Step 2: AdamW on {A_c, head} only, inside the DAT; A_s and Â_s are untouched."""
        cfg, opt = self.config, local["opt"]
        (loss, (task, kd)), (g_client, g_head) = jax.value_and_grad(
            self.dat_step_loss, has_aux=True
        )((local["client"], local["head"]), ctx, batch, z_shared_BxA)
        lr = local_optim.learning_rate(cfg.optim, local["tick"], ctx.num_batches, ticks_per_batch=2)
        client, opt_client = local_optim.apply_adamw(
            self.tx, g_client, opt["client"], local["client"], lr
        )
        if cfg.freeze_client_adapter_after_round0:
            frozen_now = ctx.round > 0
            client = _select(frozen_now, local["client"], client)
            opt_client = _select(frozen_now, opt["client"], opt_client)
        head, opt_head = local_optim.apply_adamw(self.tx, g_head, opt["head"], local["head"], lr)
        local = {
            **local,
            "client": client,
            "head": head,
            "tick": local["tick"] + 1,
            "opt": {**opt, "client": opt_client, "head": opt_head},
        }
        return local, {"loss_dat": loss, "task_dat": task, "kd_dat": kd, "lr_dat": lr}

    def local_step(self, ctx, local, batch, rng):
        del rng  # the frozen backbone runs without dropout
        z_teacher = self.teacher_logits(ctx, local, batch)
        local, z_shared, metrics_shared = self.shared_step(ctx, local, batch, z_teacher)
        local, metrics_dat = self.dat_step(ctx, local, batch, z_shared)
        return local, {**metrics_shared, **metrics_dat}

    # ---- evaluation ----------------------------------------------------------------------------
    def eval_logits(self, ctx, private, shared, batch):
        head, client = split_head(private["params"])
        teacher_shared = (
            shared if self.config.eval_teacher == "latest_global" else ctx.global_shared
        )
        return {
            "dat": self._logits(ctx, teacher_shared, client, head, batch, self.config.teacher_mode),
            "client": self._logits(ctx, shared, client, head, batch, "client"),
            "shared": self._logits(ctx, shared, client, head, batch, "shared"),
        }
