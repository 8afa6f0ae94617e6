"""A node's side of the federation: the project's jitted local update for its co-located clients.

``Node.train`` runs round r for the node's clients of the cohort with the SAME pieces the
simulation runs (``fl.round.make_round_parts``' begin and segment, then ``fl.round.end_client``
per client, all in ONE jitted call over the node's C clients), reading their data exactly as
``train.cohorts`` does (``data.pipeline.cohort_batches`` with the run's seed and round). It
returns each client's delta of the shared parameters, and keeps the new private state (A_c, the
head, the optimizer state) on its own disk (``node_state.NodeStore``). The server's step (the
aggregation and the server optimizer) is not run here: it runs once, on the server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from feddat_jax.data.pipeline import cohort_batches
from feddat_jax.errors import DataError
from feddat_jax.fl import hparams as hparams_lib
from feddat_jax.fl import placement
from feddat_jax.fl.evaluation import make_eval_fn
from feddat_jax.fl.round import end_client, make_round_parts
from feddat_jax.fl.state import ServerState
from feddat_jax.flower.federation import Federation, node_clients
from feddat_jax.flower.node_state import NodeStore
from feddat_jax.train import finetune

PyTree = Any


def make_node_round(fed: Federation):
    """``node_round(frozen, server, private_C, tasks_C, ids_C, batches_CxS)`` ->
    ``(delta_C, private_C, metrics_C)``: the simulated round up to (not including) the server
    step, for the node's C clients, jitted."""
    algorithm = hparams_lib.bind_algorithm(fed.exp.algorithm, {})
    parts = make_round_parts(algorithm, fed.server_tx, fed.aggregator)

    def node_round(frozen, server, private_C, tasks_C, ids_C, batches_CxS):
        batch_size = batches_CxS["example_mask"].shape[2]
        local_C = parts.begin(frozen, server, private_C, tasks_C, batch_size)
        local_C, sums_C = parts.segment(
            frozen, server, local_C, tasks_C, ids_C, batches_CxS, jnp.zeros((), jnp.int32)
        )
        return placement.map_clients(
            lambda local, sums, tasks: end_client(
                algorithm, frozen, server, local, sums, tasks, batch_size
            ),
            (0, 0, 0),
        )(local_C, sums_C, tasks_C)

    return jax.jit(node_round)


class Node:
    """Node ``partition`` of ``num_partitions``: its clients, their private state, its data."""

    def __init__(self, fed: Federation, partition: int, num_partitions: int, state_dir: Path):
        self.fed = fed
        self.partition, self.num_partitions = partition, num_partitions
        self.clients = node_clients(fed.num_clients, num_partitions, partition)
        # one folder per run (config + data), so another run never reads this one's state
        run = fed.exp.run_fingerprint("/flower")[:16]
        template = fed.private_init
        self.store = NodeStore(Path(state_dir) / run / f"node_{partition}", template)
        self._round = make_node_round(fed)
        self._eval = jax.jit(make_eval_fn(fed.exp.algorithm))

    def check_clients(self, client_ids, where: str) -> np.ndarray:
        ids = np.asarray(client_ids, np.int64)
        foreign = sorted(set(ids.tolist()) - set(self.clients.tolist()))
        if foreign or len(ids) == 0:
            raise DataError(
                f"refused a request for clients {foreign or '[]'}; node {self.partition} holds "
                f"{self.clients.tolist()}",
                where,
                "the server must send a node only its own clients",
            )
        return ids

    def _private(self, ids: np.ndarray, at_most: int) -> PyTree:
        states = [self.store.load(k, at_most)[1] for k in ids]
        return jax.tree.map(lambda *xs: np.stack(xs), *states)

    def _tasks(self, ids: np.ndarray):
        return jax.tree.map(lambda x: jnp.asarray(np.asarray(x)[ids]), self.fed.exp.tasks)

    def train(self, round_index: int, shared: PyTree, client_ids) -> tuple[list, dict, np.ndarray]:
        """Round ``round_index`` (from 0) of these clients from the global ``shared``:
        ``(delta per client, metrics [C] per key, num_examples [C])``; their new private state
        is saved as that of round ``round_index + 1``."""
        fed, cfg = self.fed, self.fed.config
        ids = self.check_clients(client_ids, "train request")
        steps = fed.round_steps()
        batches = cohort_batches(
            fed.exp.train_store,
            ids,
            cfg.batch_size,
            seed=cfg.seed,
            round_index=round_index,
            num_steps=fed.exp.train_store.max_steps(cfg.batch_size),
            same_order_each_round=cfg.faithful.same_order_each_round,
            window=(0, steps),
            window_steps=steps,
        )
        batches = fed.exp.with_answer_lists(batches, ids)
        server = ServerState(
            round=jnp.asarray(round_index, jnp.int32),
            shared=shared,
            opt_state=None,
            rng=fed.server0.rng,
        )
        tasks_C = self._tasks(ids)
        delta_C, private_C, metrics_C = self._round(
            fed.exp.frozen,
            server,
            self._private(ids, round_index),
            tasks_C,
            jnp.asarray(ids, jnp.int32),
            batches,
        )
        private_C, delta_C, metrics_C = jax.device_get((private_C, delta_C, metrics_C))
        for i, k in enumerate(ids):
            self.store.save(k, round_index + 1, jax.tree.map(lambda x: x[i], private_C))
        deltas = [jax.tree.map(lambda x: np.asarray(x[i]), delta_C) for i in range(len(ids))]
        return deltas, metrics_C, np.asarray(tasks_C.num_examples)

    def evaluate(self, rounds_done: int, round_start_shared: PyTree, shared: PyTree, client_ids):
        """Every test example's score per variant, ``{variant: [C, S_e, B_e]}``, of these
        clients with their private state after round ``rounds_done``; a method that finetunes
        before it scores (``fedavg_ft``) finetunes each on the node's own copy of its train data
        (``train.finetune``: the simulation's batches), and keeps nothing of it."""
        exp = self.fed.exp
        ids = self.check_clients(client_ids, "evaluate request")
        train = None
        if exp.method.finetune:
            train = finetune.client_batches(exp, ids, self.fed.config.seed, rounds_done)
        scores = self._eval(
            exp.frozen,
            round_start_shared,
            shared,
            self._private(ids, rounds_done),
            self._tasks(ids),
            exp.eval_batches(ids),
            train,
        )
        return {k: np.asarray(v) for k, v in jax.device_get(scores).items()}
