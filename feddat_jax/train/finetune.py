"""What an evaluation that finetunes first reads: each evaluated client's own train batches.

A method whose recipe finetunes (``methods.Method.finetune``: ``fedavg_ft``) scores every
evaluated client after a short local update of the current global model on the client's own
training data (``fl.evaluation.finetune_client``). This module builds those batches on the host,
with the training's own pipeline (``data.pipeline.cohort_batches``), only for such methods.

* **How many steps.** ``config.finetune_steps`` (0: as many as a training round,
  ``Experiment.round_steps``: one local epoch, at most ``optim.max_local_steps``), at most the
  largest client's epoch. Like a capped round, a client runs the first K batches of its shuffled
  epoch, or the whole epoch where it is shorter (the later steps are empty: no-ops).
* **Which order.** Client k's finetune order after ``rounds_done`` rounds is the permutation of
  ``(seed, EVAL_SAMPLE_DRAW + rounds_done, k)``: a stream no training round draws from (rounds
  draw with their index, below ``EVAL_SAMPLE_DRAW``), a new one at each evaluation, and a pure
  function of (seed, round), so a resumed run finetunes on exactly what the uninterrupted one did.
* **Replicas.** Each replica finetunes in its own seed's order, as it trains; replicas that share a
  seed (a hyperparameter sweep) share the batches.
"""

from __future__ import annotations

import numpy as np

from feddat_jax.data.pipeline import Batch, cohort_batches
from feddat_jax.fl.registry import pad_batches
from feddat_jax.train.cohorts import EVAL_SAMPLE_DRAW
from feddat_jax.train.experiment import Experiment


def finetune_steps(exp: Experiment) -> int:
    """K, the local steps of every client's finetune (see the module docstring)."""
    cfg = exp.config
    epoch = exp.train_store.max_steps(cfg.batch_size)
    return min(cfg.finetune_steps or exp.round_steps(), epoch)


def client_batches(exp: Experiment, client_ids, seed: int, rounds_done: int) -> Batch:
    """These clients' finetune batches ``[C, K, B, ...]`` of the evaluation after ``rounds_done``
    rounds, in seed ``seed``'s order (with their answer lists: ALBEF)."""
    cfg, store = exp.config, exp.train_store
    ids = np.asarray(client_ids, np.int64)
    batch = cohort_batches(
        store,
        ids,
        cfg.batch_size,
        seed=seed,
        round_index=EVAL_SAMPLE_DRAW + rounds_done,
        num_steps=store.max_steps(cfg.batch_size),
        window=(0, finetune_steps(exp)),
    )
    return exp.with_answer_lists(batch, ids)


def replica_batches(exp: Experiment, client_ids, slots: int, rounds_done: int) -> Batch:
    """Every replica's finetune batches of these clients, padded with empty clients to ``slots``:
    host ``[R, slots, K, B, ...]``, the layout ``fl.replicas.make_replica_eval_fn`` reads."""
    seeds = exp.sweep.seeds(exp.config)
    built = {
        seed: pad_batches(client_batches(exp, client_ids, seed, rounds_done), slots)
        for seed in dict.fromkeys(seeds)
    }
    return exp.sweep.stack([built[seed] for seed in seeds])
