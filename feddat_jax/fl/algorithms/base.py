"""The interface every local-training algorithm implements (FedAvg, FedProx, FedDAT, ...).

An algorithm is written for ONE client and is pure; the round vmaps it over the cohort and scans
it over local steps. It never sees other clients and never aggregates: the core does both.
Parameters arrive split in three by the PEFT partition: ``frozen`` (the shared backbone, one copy
for all clients), ``shared`` (what the server averages) and ``private`` (what never leaves the
client, e.g. heads and FedDAT's A_c).
"""

from __future__ import annotations

import abc
from typing import Any, Callable

import jax
from flax import struct

PyTree = Any
Batch = dict[str, jax.Array]
# forward(params, batch, adapter_mode) -> logits [B, A]; params is the merged tree.
Forward = Callable[[PyTree, Batch, str], jax.Array]


@struct.dataclass
class ClientContext:
    """What one client sees during a round: server values plus its own task metadata."""

    frozen: PyTree  # frozen backbone (server value, never stacked)
    global_shared: PyTree  # shared params received at round start (FedDAT's Â_s; FedProx anchor)
    answer_mask: jax.Array  # float32 [A]
    task_kind: jax.Array  # int32 []
    num_batches: jax.Array  # float32 []: batches in this client's epoch (LR schedule horizon)
    round: jax.Array  # int32 []: index of the round being trained


class LocalAlgorithm(abc.ABC):
    """One client's local training, split into pure pieces the core can vmap and scan."""

    #: names of the evaluation variants, in report order (the first is the headline number).
    eval_variants: tuple[str, ...] = ("global",)

    @abc.abstractmethod
    def init_private(self, shared: PyTree, private_params: PyTree) -> PyTree:
        """A client's persistent private state, built from its private parameters."""

    @abc.abstractmethod
    def begin_round(self, ctx: ClientContext, private: PyTree) -> PyTree:
        """The client's local state at the start of a round (copies the received shared params)."""

    @abc.abstractmethod
    def local_step(
        self, ctx: ClientContext, local: PyTree, batch: Batch, rng: jax.Array
    ) -> tuple[PyTree, dict[str, jax.Array]]:
        """One batch of local training; returns the new local state and scalar metrics."""

    @abc.abstractmethod
    def end_round(self, ctx: ClientContext, local: PyTree) -> tuple[PyTree, PyTree]:
        """``(shared params to send, new private state)`` at the end of the local epoch."""

    @abc.abstractmethod
    def eval_logits(
        self, ctx: ClientContext, private: PyTree, shared: PyTree, batch: Batch
    ) -> dict[str, jax.Array]:
        """Logits of every evaluation variant; ``shared`` is the new global, ``ctx.global_shared``
        the one the round started from."""

    def private_params(self, private: PyTree) -> PyTree:
        """The private parameters inside a private state (for checkpoints and inspection)."""
        return private["params"]
