"""The ``centralized`` reference row: ONE adapter trained on all clients' pooled training data.

What federation costs is measured against this: the same model as FedAvg + adapter (one shared
adapter, each client's own private head, since heads are always private here), trained as if all
data sat in one place. Every epoch is one pass over the pooled training examples in a seeded
shuffle, in batches mixing clients; each example goes through its own client's head, so the
adapter's gradient is the pooled one. It trains for ``config.rounds`` epochs (the data a federated
run sees in as many rounds), with one AdamW schedule over the whole run (linear warmup for
``optim.warmup_fraction`` of it, then linear decay to 0), and is evaluated like every method.
With rounds capped at ``optim.max_local_steps`` batches a federated round sees only part of the
larger clients' data, and the reference takes the whole number of epochs nearest to the examples
a federated run of every client trains on (:func:`pooled_epochs`).

Why per-client heads rather than one head over the union of answers: the reference then differs
from FedAvg + adapter in exactly one thing, federation, and every client keeps its own answer
vocabulary. Concept shift still hurts it: one adapter cannot serve two conventions (see
docs/BENCHMARK.md).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from feddat_jax.data.pipeline import gather_rows
from feddat_jax.fl import local_optim, losses
from feddat_jax.peft.roles import merge
from feddat_jax.train.checkpoints import RoundCheckpointer
from feddat_jax.train.experiment import Experiment
from feddat_jax.train.metrics import MetricsWriter, Record

PyTree = Any
METHOD = "fedavg_adapter"  # the partition and forward mode the reference shares


def epoch_rows(num_rows: int, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """int64 [S, B]: the pooled rows of epoch ``epoch`` in a seeded shuffle (-1 pads the last
    batch); a pure function of (seed, epoch), like the federated data order."""
    order = np.random.default_rng((seed, epoch, 0xCE)).permutation(num_rows)
    steps = -(-num_rows // batch_size)
    rows = np.full(steps * batch_size, -1, np.int64)
    rows[:num_rows] = order
    return rows.reshape(steps, batch_size)


def pooled_epochs(rounds: int, num_examples_N: np.ndarray, batch_size: int, cap: int) -> int:
    """Epochs over the pooled data that hold about as many examples as ``rounds`` federated rounds
    of every client, each round at most ``cap`` batches (0: a whole epoch, so ``rounds``)."""
    if not cap:
        return rounds
    seen = np.minimum(num_examples_N, cap * batch_size).sum() * rounds
    return max(1, round(float(seen) / float(num_examples_N.sum())))


def make_epoch_fn(exp: Experiment, total_steps: int):
    """``epoch(state, batches_S, clients_SxB) -> (state, mean loss)``: one jitted pass."""
    forward, cfg = exp.algorithm.forward, exp.algorithm.config.optim
    tx = local_optim.adamw_direction(cfg)
    tasks = exp.tasks
    total = jnp.asarray(total_steps, jnp.float32)

    def example_loss(shared, head, client, example):
        one = jax.tree.map(lambda x: x[None], example)
        z = forward(merge(exp.frozen, shared, head), one, "shared")
        return losses.task_loss(
            z,
            one["targets"],
            tasks.answer_mask[client],
            tasks.task_kind[client],
            one["example_mask"],
        )

    def batch_loss(trainable, batch, clients_B):
        shared, heads_N = trainable
        heads_B = jax.tree.map(lambda h: h[clients_B], heads_N)
        loss_B = jax.vmap(example_loss, in_axes=(None, 0, 0, 0))(shared, heads_B, clients_B, batch)
        return losses.masked_mean(loss_B, batch["example_mask"])

    def step(state, xs):
        batch, clients_B = xs
        loss, grads = jax.value_and_grad(batch_loss)(state["trainable"], batch, clients_B)
        lr = local_optim.warmup_decay(
            cfg.learning_rate, state["tick"], jnp.floor(cfg.warmup_fraction * total_steps), total
        )
        trainable, opt = local_optim.apply_adamw(tx, grads, state["opt"], state["trainable"], lr)
        return {"trainable": trainable, "opt": opt, "tick": state["tick"] + 1}, loss

    def epoch(state, batches_S, clients_SxB):
        state, loss_S = jax.lax.scan(step, state, (batches_S, clients_SxB))
        return state, jnp.mean(loss_S)

    return jax.jit(epoch, donate_argnums=(0,)), tx


def initial_trainable(exp: Experiment) -> tuple[PyTree, PyTree]:
    """The one adapter and the N heads, from replica 0 of the experiment's initial state, as
    host copies (the epoch function donates its state; the experiment's arrays stay intact)."""
    shared = jax.device_get(jax.tree.map(lambda x: x[0], exp.server.shared))
    heads = jax.tree.map(
        lambda x: np.repeat(x[:1], exp.train_store.num_clients, 0), exp.private_init["params"]
    )
    return shared, heads


def train_centralized(exp: Experiment, workdir: str | Path) -> list[Record]:
    """Train (or resume) the centralized reference in ``workdir``; the history has the same
    records as a method's (``score/...``, ``group/...``), so reports and plots treat it as one."""
    from feddat_jax.train.loop import eval_record  # the loop's breakdown of per-example scores

    cfg, workdir = exp.config, Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    store = exp.train_store
    num_rows = int(store.offsets[-1])
    client_of_row = np.repeat(np.arange(store.num_clients), store.num_examples())
    steps_per_epoch = -(-num_rows // cfg.batch_size)
    epochs = pooled_epochs(
        cfg.rounds, store.num_examples(), cfg.batch_size, cfg.optim.max_local_steps
    )
    epoch_fn, tx = make_epoch_fn(exp, epochs * steps_per_epoch)
    trainable = initial_trainable(exp)
    state = {"trainable": trainable, "opt": tx.init(trainable), "tick": jnp.zeros((), jnp.int32)}
    # the schedule spans the whole run, so unlike a method's, the number of epochs changes the
    # numbers: it is part of the fingerprint
    ckpt = RoundCheckpointer(
        workdir / "checkpoints", exp.run_fingerprint(f"/centralized/epochs={epochs}")
    )
    history: list[Record] = []
    restored = ckpt.restore_latest(state)
    start = 0
    if restored is not None:
        start, state, meta = restored
        history = meta["history"]
    writer = MetricsWriter(workdir, history, tensorboard=cfg.tensorboard)
    all_ids = np.arange(len(exp.client_names))
    for e in range(start, epochs):
        t0 = time.perf_counter()
        rows_SxB = epoch_rows(num_rows, cfg.batch_size, cfg.seed, e)
        batches = jax.tree.map(lambda x: x[0], gather_rows(store, rows_SxB[None]))
        clients = client_of_row[np.maximum(rows_SxB, 0)]
        state, loss = epoch_fn(state, batches, clients)
        record: Record = {
            "round": e + 1,
            "train/loss": float(loss),
            "time/round_s": time.perf_counter() - t0,
            "comm/bytes_cumulative": 0,
        }
        if (e + 1) % cfg.eval_every == 0 or e + 1 == epochs:
            shared, heads_N = state["trainable"]
            replica = jax.tree.map(lambda x: x[None], (shared, {"params": heads_N}, exp.tasks))
            scores_R = exp.eval_fn(  # the evaluation of one replica (R = 1)
                exp.frozen, replica[0], replica[0], replica[1], replica[2], exp.eval_batches(all_ids)
            )
            scores = jax.tree.map(lambda x: x[0], scores_R)
            record.update(eval_record(exp, scores, all_ids, np.ones(len(all_ids), bool)))
        writer.write(record)
        if (e + 1) % cfg.checkpoint_every == 0 or e + 1 == epochs:
            ckpt.save(e + 1, jax.device_get(state), {"history": writer.history})
    writer.close()
    return writer.history
