"""Per-client evaluation of every variant an algorithm reports, for ONE federation.

For FedDAT the variants are the DAT (A_c with Â_s: the headline number), A_c alone and A_s alone;
for single-model methods one "global" variant. The function returns every test example's score
(the VQA soft score in [0, 1]; accuracy for one-hot targets; 0 for padding), so the host can break
the scores down by client, by question group and by question type (``train.scores``) without a
recompile for each breakdown. ``fl.replicas.make_replica_eval_fn`` maps it over the replica axis
and jits it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from feddat_jax.fl import losses, placement
from feddat_jax.fl.algorithms.base import LocalAlgorithm
from feddat_jax.fl.round import client_context
from feddat_jax.fl.state import ClientTasks

PyTree = Any


def make_eval_fn(
    algorithm: LocalAlgorithm,
    *,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
) -> Callable[..., dict[str, jax.Array]]:
    """``eval_fn(frozen, round_start_shared, shared, private_C, tasks_C, batches_CxS)`` →
    ``{variant: score_CxSxB}``, each example's score in [0, 1] (0 for padded examples)."""

    def client_scores(frozen, round_start_shared, shared, private, tasks: ClientTasks, batches_S):
        batch_size = batches_S["example_mask"].shape[1]
        ctx = client_context(
            frozen, round_start_shared, tasks, batch_size, jnp.zeros((), jnp.int32)
        )

        def step(carry, batch):
            logits = algorithm.eval_logits(ctx, private, shared, batch)
            scores = {
                name: losses.example_scores(
                    z, batch["targets"], ctx.answer_mask, batch["example_mask"]
                )
                for name, z in logits.items()
            }
            return carry, scores

        _, scores_S = jax.lax.scan(step, None, batches_S)
        return scores_S

    def eval_fn(frozen, round_start_shared, shared, private_C, tasks_C, batches_CxS):
        def one(private, tasks, batches_S):
            return client_scores(frozen, round_start_shared, shared, private, tasks, batches_S)

        return placement.map_clients(one, in_axes=(0, 0, 0), mesh=mesh, chunk_size=chunk_size)(
            private_C, tasks_C, batches_CxS
        )

    return eval_fn
