"""How ``bench_round.py`` times a round: the device's matmul peak, fresh device buffers for the
donated private state, the median-ready timing loop, XLA's FLOP count, and ``LoopRound``, the
sequential baseline strategy (one jitted call per client step)."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from round_cohort import Setup

from feddat_jax.fl.aggregation import MeanAggregator, tree_delta
from feddat_jax.fl.replicas import make_replica_round_fn
from feddat_jax.fl.round import client_context, round_keys


def one_federation_round(algorithm, server_tx, aggregator, *, chunk_size=None, jit=True):
    """The library's round at R = 1 (what a run that sweeps nothing compiles), called with one
    federation's values: the replica axis is added and dropped inside the program."""
    run_R = make_replica_round_fn(algorithm, server_tx, aggregator, chunk_size=chunk_size, jit=False)

    def run(frozen, server, *cohort):
        lift = jax.tree.map(lambda x: x[None], (server, *cohort))
        return jax.tree.map(lambda x: x[0], run_R(frozen, *lift))

    return jax.jit(run, donate_argnums=(2,)) if jit else run


# ---------------------------------------------------------------------------------- timings
def matmul_peak(dtype, n: int) -> dict:
    """FLOP/s of one large jnp.dot on the default device (the best of 5)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    f = jax.jit(jnp.dot)
    f(a, b).block_until_ready()
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        f(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return {"n": n, "dtype": jnp.dtype(dtype).name, "seconds": best, "flops_per_s": 2 * n**3 / best}


def fresh(tree):
    """New device buffers (the round donates the cohort's private state)."""
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x)), tree)


def time_compiled(compiled, make_args, repeats: int) -> list[float]:
    times = []
    for i in range(repeats + 1):
        args = make_args()
        jax.block_until_ready(args)
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        if i:  # the first run warms caches and allocators
            times.append(time.perf_counter() - t0)
    return times


def flops_of(compiled) -> float:
    ca = compiled.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    return float(ca.get("flops", 0.0)) if ca else 0.0


class LoopRound:
    """The sequential baseline: per client, begin_round, one jitted call per local step,
    end_round; then one jitted server update. Same numbers as the jitted round."""

    def __init__(self, st: Setup):
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
