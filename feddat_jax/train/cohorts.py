"""Each round's cohorts on the host: who trains, on which data, in which slots of the mesh.

A round's cohort is a function of (seed, round) alone (``fl.sampling``, ``fl.distributed``;
with ``dp.sampling="poisson"`` a Poisson draw), and so is its data order
(``data.pipeline.cohort_batches``, read one segment of the epoch at a time): a resumed run
rebuilds exactly what the uninterrupted one saw.
Every replica (``train.sweep``; one unless a sweep asks for more) draws with its own seed; all
replicas' cohorts are padded to ONE static size, so the replica round compiles once, and their
batches are stacked ``[R, C, ...]``.

Padded slots repeat a real client's id and carry ``mask`` False: the registry gives them
``num_examples = 0`` and the batches an all-zero ``example_mask``, so they train nothing and
weigh nothing.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from feddat_jax.data.pipeline import cohort_batches
from feddat_jax.fl import distributed
from feddat_jax.fl import mesh as mesh_lib
from feddat_jax.fl.accounting import max_poisson_cohort, pad_cohort, poisson_sample
from feddat_jax.fl.registry import pad_batches
from feddat_jax.train.experiment import Experiment, poisson_sample_rate, poisson_sampling

PyTree = Any


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

    def plan(self, seed: int, r: int, clients_per_round=None) -> tuple[np.ndarray, np.ndarray]:
        """(global padded ids, mask) of one replica's round-r cohort (default: the training
        cohort; ``clients_per_round`` given: that fixed-size cohort)."""
        n = self.num_clients
        if clients_per_round is None and self.poisson_size is not None:
            return pad_cohort(poisson_sample(seed, r, n, self.poisson_q), self.poisson_size)
        cpr = self.exp.config.clients_per_round if clients_per_round is None else clients_per_round
        return distributed.plan_cohort(seed, r, n, cpr, self.mesh)

    def plans(self, r: int, clients_per_round=None):
        pairs = [self.plan(seed, r, clients_per_round) for seed in self.seeds]
        ids, masks = [p[0] for p in pairs], [p[1] for p in pairs]
        return ids, masks, distributed.local_slots(self.mesh, len(ids[0]))

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
