"""The sequential baseline of ``round_speed``'s ``loop`` strategy: per client, ``begin_round``,
one jitted call per local step (host slices of the batches), ``end_round``; then one jitted
server update. The same numbers as the library's jitted round, one dispatch per step: what the
vmapped and scanned rounds are measured against."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from benchmarks.harness import Cohort
from feddat_jax.fl.aggregation import MeanAggregator, tree_delta
from feddat_jax.fl.round import client_context, round_keys


class LoopRound:
    """The sequential baseline of a cohort (the module docstring says what runs)."""

    def __init__(self, st: Cohort):
        alg, b = st.algorithm, st.batch
        self.st = st

        def begin(frozen, gshared, tasks_k, private, rnd):
            return alg.begin_round(client_context(frozen, gshared, tasks_k, b, rnd), private)

        def step(frozen, gshared, tasks_k, local, batch, key, rnd):
            return alg.local_step(
                client_context(frozen, gshared, tasks_k, b, rnd), local, batch, key
            )

        def end(frozen, gshared, tasks_k, local, rnd):
            shared, private = alg.end_round(client_context(frozen, gshared, tasks_k, b, rnd), local)
            return tree_delta(shared, gshared), private

        def server_update(server, delta_C, num_examples_C):
            mean, _ = MeanAggregator()(delta_C, num_examples_C, None)
            updates, opt = st.server_tx.update(
                jax.tree.map(jnp.negative, mean), server.opt_state, server.shared
            )
            return server.replace(
                round=server.round + 1,
                opt_state=opt,
                shared=jax.tree.map(jnp.add, server.shared, updates),
            )

        self.fns = {
            "begin": jax.jit(begin),
            "step": jax.jit(step),
            "end": jax.jit(end),
            "server": jax.jit(server_update),
        }
        self.compiled = {}

    def compile(self, frozen, server, private_C, tasks_C, batches) -> float:
        one = lambda t: jax.tree.map(lambda x: x[0], t)
        t0 = time.perf_counter()
        key = jax.random.key(0)
        tasks0, private0 = one(tasks_C), one(private_C)
        begin = self.fns["begin"].lower(frozen, server.shared, tasks0, private0, server.round)
        self.compiled["begin"] = begin.compile()
        local = jax.eval_shape(
            self.fns["begin"], frozen, server.shared, tasks0, private0, server.round
        )
        batch0 = jax.tree.map(lambda x: x[0, 0], batches)
        self.compiled["step"] = (
            self.fns["step"]
            .lower(frozen, server.shared, tasks0, local, batch0, key, server.round)
            .compile()
        )
        self.compiled["end"] = (
            self.fns["end"].lower(frozen, server.shared, tasks0, local, server.round).compile()
        )
        delta = jax.eval_shape(
            lambda: jax.tree.map(
                lambda x: jnp.zeros((len(tasks_C.num_examples),) + x.shape, x.dtype), server.shared
            )
        )
        self.compiled["server"] = (
            self.fns["server"].lower(server, delta, tasks_C.num_examples).compile()
        )
        return time.perf_counter() - t0

    def __call__(self, frozen, server, private_C, tasks_C, ids_C, batches):
        f = self.compiled
        train_key, _ = round_keys(server)
        deltas, privates = [], []
        for k in range(len(ids_C)):
            tasks_k = jax.tree.map(lambda x: x[k], tasks_C)
            local = f["begin"](
                frozen,
                server.shared,
                tasks_k,
                jax.tree.map(lambda x: x[k], private_C),
                server.round,
            )
            client_key = jax.random.fold_in(train_key, ids_C[k])
            for s in range(self.st.steps):
                batch = {
                    key: v[k, s] for key, v in batches.items()
                }  # host slices: one copy per step
                local, _ = f["step"](
                    frozen,
                    server.shared,
                    tasks_k,
                    local,
                    batch,
                    jax.random.fold_in(client_key, s),
                    server.round,
                )
            delta, private = f["end"](frozen, server.shared, tasks_k, local, server.round)
            deltas.append(delta)
            privates.append(private)
        stack = lambda ts: jax.tree.map(lambda *xs: jnp.stack(xs), *ts)
        server = f["server"](server, stack(deltas), jnp.asarray(tasks_C.num_examples))
        return server, stack(privates)
