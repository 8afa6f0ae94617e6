"""Each round's cohorts on the host: who trains, on which data, in which slots of the mesh.

A round's cohort is a function of (seed, round) alone (``fl.sampling``, ``fl.distributed``;
with ``dp.sampling="poisson"`` a Poisson draw), and so is its data order
(``data.pipeline.cohort_batches``, read one segment of the epoch at a time): a resumed run
rebuilds exactly what the uninterrupted one saw.
Every replica (``train.sweep``; one unless a sweep asks for more) draws with its own seed, its
own cohort size and from its own clients (a client-count sweep: replica r's are ids
``0..N_r-1`` of the registered ones); all replicas' cohorts are padded to ONE static size, so the
replica round compiles once, and their batches are stacked ``[R, C, ...]``.

Padded slots repeat a real client's id and carry ``mask`` False: the registry gives them
``num_examples = 0`` and the batches an all-zero ``example_mask``, so they train nothing and
weigh nothing.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from feddat_jax.data.pipeline import cohort_batches
from feddat_jax.errors import ConfigError
from feddat_jax.fl import distributed
from feddat_jax.fl import mesh as mesh_lib
from feddat_jax.fl.accounting import max_poisson_cohort, pad_cohort, poisson_sample
from feddat_jax.fl.registry import pad_batches, pad_ids
from feddat_jax.train.experiment import Experiment, poisson_sample_rate, poisson_sampling

PyTree = Any
# the draw index of the evaluation sample (training rounds draw with their round index)
EVAL_SAMPLE_DRAW = 2**31 - 1


class CohortPlanner:
    """Round r's cohort of every replica, padded to the mesh's ``clients`` axis.

    ``plans(r)`` returns ``(ids, masks, mine)``: per replica the global padded ids and the real
    mask (lists of R arrays of one length), and this process's slots.
    """

    def __init__(self, exp: Experiment):
        cfg, mesh = exp.config, exp.mesh
        self.exp, self.mesh = exp, mesh
        self.seeds = exp.sweep.seeds(cfg)
        self.num_clients = n = len(exp.client_names)
        # each replica's cohort size and clients (a sweep may vary them; all cohorts are padded
        # to the largest)
        self.cohort_sizes = [
            exp.sweep.replica_config(cfg, r).clients_per_round for r in range(exp.sweep.size)
        ]
        self.populations = [exp.sweep.population(r, n) for r in range(exp.sweep.size)]
        # took_part's running record: clients drawn in the first _rounds_counted rounds
        self._took_part = np.zeros((exp.sweep.size, n), bool)
        self._rounds_counted = 0
        varied = [
            field
            for field, values in (
                ("clients_per_round", self.cohort_sizes),
                ("data.num_clients", self.populations),
            )
            if len(set(values)) > 1
        ]
        if varied and jax.process_count() > 1:
            raise ConfigError(
                f"config.sweep.{varied[0]} runs in one process only",
                f"config.sweep.{varied[0]}",
                "run each value separately on several hosts",
            )
        # DP with Poisson sampling: each round's cohort is poisson_sample(seed, r, N, q), padded
        # to ONE static size for the whole run (the largest cohort of every round and replica,
        # rounded up to the mesh's clients axis) so the round compiles once. An empty cohort
        # runs with every slot padded: the server update is then the noise alone (DP-FedAvg
        # releases it, and it is accounted like every other round).
        self.poisson_q = self.poisson_size = None
        if poisson_sampling(cfg):
            if jax.process_count() > 1:
                raise ValueError("config.dp.sampling='poisson' supports one process only")
            self.poisson_q = poisson_sample_rate(cfg, n)
            devices = mesh_lib.clients_size(mesh)
            largest = max(max_poisson_cohort(s, cfg.rounds, n, self.poisson_q) for s in self.seeds)
            self.poisson_size = -(-largest // devices) * devices

    def plan(self, replica: int, r: int) -> tuple[np.ndarray, np.ndarray]:
        """(global padded ids, mask) of one replica's round-r cohort."""
        n, seed = self.populations[replica], self.seeds[replica]
        if self.poisson_size is not None:
            return pad_cohort(poisson_sample(seed, r, n, self.poisson_q), self.poisson_size)
        return distributed.plan_cohort(seed, r, n, self.cohort_sizes[replica], self.mesh)

    def evaluation_clients(self) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """``(ids, mask, per_replica)``: the padded clients every evaluation scores, and each
        replica's own (sorted ids). A replica scores ``config.eval_clients`` of its clients drawn
        once, seeded by the run's seed (the same at every evaluation and, where replicas have the
        same clients, in every replica: scores over rounds and settings compare), or every one
        of them (0); a client-count sweep's replica with fewer clients scores all of its own. A
        client-count sweep (one process) evaluates the union of the replicas'."""
        sample = int(self.exp.config.eval_clients)
        if sample > max(self.populations):
            n = max(self.populations)
            raise ConfigError(
                f"config.eval_clients={sample} but the benchmark has {n} clients",
                "config.eval_clients",
                f"use 0 (every client) or at most {n}",
            )
        draw = lambda n, mesh: distributed.plan_cohort(  # noqa: E731
            self.seeds[0], EVAL_SAMPLE_DRAW, n, min(sample or n, n), mesh
        )
        if len(set(self.populations)) == 1:
            ids, mask = draw(self.num_clients, self.mesh)
            return ids, mask, [np.sort(ids[mask])] * len(self.populations)
        drawn = {n: draw(n, None) for n in set(self.populations)}
        per_replica = [np.sort(ids[mask]) for ids, mask in (drawn[n] for n in self.populations)]
        ids, mask = pad_ids(
            np.unique(np.concatenate(per_replica)), mesh_lib.clients_size(self.mesh)
        )
        return ids, mask, per_replica

    def took_part(self, rounds_done: int) -> np.ndarray:
        """bool ``[R, N]``: which clients each replica's cohorts of the first ``rounds_done``
        rounds held (a function of the seeds, so a resumed run knows it without a record).
        Each call draws only the rounds since the previous call's, not every round again."""
        if rounds_done < self._rounds_counted:  # asked about an earlier point: count afresh
            self._took_part[:], self._rounds_counted = False, 0
        for r in range(self._rounds_counted, rounds_done):
            ids, masks, _ = self.plans(r)
            for i, (ids_i, mask_i) in enumerate(zip(ids, masks)):
                self._took_part[i, ids_i[mask_i]] = True
        self._rounds_counted = rounds_done
        return self._took_part.copy()

    @property
    def cohort_slots(self) -> int:
        """Slots of every round's cohort (padding included): the most clients a round trains."""
        return len(self.plans(0)[0][0])

    def plans(self, r: int) -> tuple[list[np.ndarray], list[np.ndarray], slice]:
        """Every replica's round-r ``(ids, masks)``, padded to one length (a padded slot repeats
        the replica's first client, mask False), and this process's slots."""
        pairs = [self.plan(i, r) for i in range(len(self.seeds))]
        size = max(len(ids) for ids, _ in pairs)
        ids = [np.concatenate([i, np.full(size - len(i), i[0])]) for i, _ in pairs]
        masks = [np.concatenate([m, np.zeros(size - len(m), bool)]) for _, m in pairs]
        return ids, masks, distributed.local_slots(self.mesh, size)

    def place(self, tree_local: PyTree, cohort_size: int) -> PyTree:
        """This process's cohort values ``[R, C_local, ...]`` on the mesh."""
        return mesh_lib.put_cohort(tree_local, self.mesh, cohort_size)

    def segment_batches(self, key: tuple[int, int], windows: list[tuple[int, int]]) -> PyTree:
        """Round r's segment k (``key = (r, k)``; ``windows``: the epoch's ``(start, stop)``
        steps, ``fl.segments``) of this process's slots, every replica's stacked, placed (runs on
        the prefetch thread; answer lists of ALBEF included)."""
        exp, cfg = self.exp, self.exp.config
        r, k = key
        ids, masks, mine = self.plans(r)
        built: dict[tuple, dict] = {}  # replicas that differ only in hyperparameters share data
        per_replica = []
        for seed, ids_i, mask_i in zip(self.seeds, ids, masks):
            real = ids_i[mine][mask_i[mine]]  # this process's real clients come first
            data_key = (seed, tuple(real.tolist()))
            if data_key not in built:
                batch = cohort_batches(
                    exp.train_store,
                    real,
                    cfg.batch_size,
                    seed=seed,
                    round_index=r,
                    num_steps=exp.train_store.max_steps(cfg.batch_size),
                    same_order_each_round=cfg.faithful.same_order_each_round,
                    window=windows[k],
                    window_steps=windows[0][1],
                )
                built[data_key] = pad_batches(exp.with_answer_lists(batch, real), len(ids_i[mine]))
            per_replica.append(built[data_key])
        return self.place(exp.sweep.stack(per_replica), len(ids[0]))

    def local(self, values: list[np.ndarray], mine: slice) -> np.ndarray:
        """This process's slots of every replica's per-slot values, stacked like the round's."""
        return self.exp.sweep.stack([v[mine] for v in values])
