"""Per-client evaluation of every variant an algorithm reports, for ONE federation.

For FedDAT the variants are the DAT (A_c with Â_s: the headline number), A_c alone and A_s alone;
for single-model methods one "global" variant. The function returns every test example's score
(the VQA soft score in [0, 1]; accuracy for one-hot targets; 0 for padding), so the host can break
the scores down by client, by question group and by question type (``train.scores``) without a
recompile for each breakdown. ``fl.replicas.make_replica_eval_fn`` maps it over the replica axis
and jits it.

Given each client's own train batches, evaluation first finetunes (``fedavg_ft``: pFL-Bench's
FedAvg-FT): :func:`finetune_client` runs the client's local update from the current global
shared params and its own private state, exactly as a training round's would
(``fl.round.scan_steps``), and the finetuned model is scored as the variant :data:`FINETUNED`
beside the untouched model's. Finetuned parameters live inside this function only: nothing is
aggregated, stored or checkpointed, so training, and a resumed run, are unchanged by it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from feddat_jax.fl import hparams as hparams_lib
from feddat_jax.fl import losses, placement
from feddat_jax.fl.algorithms.base import LocalAlgorithm
from feddat_jax.fl.round import client_context, scan_steps
from feddat_jax.fl.state import ClientTasks

PyTree = Any
FINETUNED = "finetuned"  # the variant of the model each client finetuned before it was scored
# Finetune steps draw fold_in(key, step): evaluation takes no key, and FedAvg's step (the one
# algorithm that finetunes today) draws nothing, as the frozen backbone runs without dropout.
FINETUNE_KEY_SEED = 0


def finetune_client(
    algorithm: LocalAlgorithm, frozen, shared, private, tasks: ClientTasks, train_K
) -> tuple[PyTree, PyTree]:
    """ONE client's ``(shared, private)`` after its local update on ``train_K`` (``[K, B, ...]``,
    empty steps are no-ops) from the global ``shared`` and its own ``private`` state: a round's
    begin, K local steps and end, with the round's optimizer, loss and schedule."""
    batch_size = train_K["example_mask"].shape[1]
    ctx = client_context(frozen, shared, tasks, batch_size, jnp.zeros((), jnp.int32))
    local = algorithm.begin_round(ctx, private)
    key = jax.random.key(FINETUNE_KEY_SEED)
    local, _ = scan_steps(algorithm, ctx, local, train_K, key, jnp.zeros((), jnp.int32))
    return algorithm.end_round(ctx, local)


def make_eval_fn(
    algorithm: LocalAlgorithm,
    *,
    mesh: Mesh | None = None,
    chunk_size: int | None = None,
) -> Callable[..., dict[str, jax.Array]]:
    """``eval_fn(frozen, round_start_shared, shared, private_C, tasks_C, batches_CxS,
    train_CxK=None, hparams=None)`` → ``{variant: score_CxSxB}``, each example's score in [0, 1]
    (0 for padded examples). With ``train_CxK`` (each client's finetune batches) every client is
    also finetuned and scored as :data:`FINETUNED`; ``hparams`` (``fl.hparams``) are the swept
    scalars its local update binds, as a round's does."""

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

    def eval_fn(
        frozen,
        round_start_shared,
        shared,
        private_C,
        tasks_C,
        batches_CxS,
        train_CxK=None,
        hparams=None,
    ):
        def one(private, tasks, batches_S, train_K):
            scores = client_scores(frozen, round_start_shared, shared, private, tasks, batches_S)
            if train_K is None:
                return scores
            bound = hparams_lib.bind_algorithm(algorithm, hparams or {})
            tuned_shared, tuned_private = finetune_client(
                bound, frozen, shared, private, tasks, train_K
            )
            tuned = client_scores(
                frozen, round_start_shared, tuned_shared, tuned_private, tasks, batches_S
            )
            return {**scores, FINETUNED: tuned[algorithm.eval_variants[0]]}

        return placement.map_clients(one, in_axes=(0, 0, 0, 0), mesh=mesh, chunk_size=chunk_size)(
            private_C, tasks_C, batches_CxS, train_CxK
        )

    return eval_fn
