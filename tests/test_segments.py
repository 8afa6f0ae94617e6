"""A round in segments equals the one-call round and compiles each of its programs once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_model as toy
from one_federation import make_round_fn, with_replica_axis, without_replica_axis

from feddat_jax.fl import local_optim
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.algorithms import FedAvg, FedAvgConfig, FedDAT, FedDATConfig
from feddat_jax.fl.segments import SegmentedRound, segment_length, segment_windows
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import gather, init_server_state

SIZES = (3, 10, 17, 6, 9)  # B = 4: S = 5 steps; K = 2 cuts them into 2 + 2 + 1 (padded)
KINDS = (0, 1, 0, 1, 0)
REAL = (5, 3, 4, 5, 2)
OPTIM = local_optim.LocalOptimConfig(learning_rate=3e-2, schedule_epochs=2.0)


def split_epoch(batches_CxS, segment_steps: int) -> list:
    """A whole epoch's host batches ``[C, S, B, ...]`` cut into the round's segments
    ``[R=1, C, K, B, ...]`` (the last padded with empty steps)."""
    num_steps = int(np.shape(batches_CxS["example_mask"])[1])
    k = segment_length(num_steps, segment_steps)

    def cut(x, start, stop):
        x = np.asarray(x)
        pad = np.zeros((x.shape[0], k - (stop - start)) + x.shape[2:], x.dtype)
        return np.concatenate([x[:, start:stop], pad], axis=1)[None]

    return [
        {key: cut(v, start, stop) for key, v in batches_CxS.items()}
        for start, stop in segment_windows(num_steps, segment_steps)
    ]


def max_diff(a, b):
    return max(
        float(jnp.max(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32))))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )


def test_segment_windows():
    assert segment_windows(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert segment_windows(5, 0) == segment_windows(5, 5) == segment_windows(5, 9) == [(0, 5)]
    assert segment_length(5, 2) == 2 and segment_length(5, 0) == 5
    with pytest.raises(ValueError, match="segment_steps=-1"):
        segment_windows(5, -1)


class NoisyFedProx(FedAvg):
    """FedProx whose loss metric carries its step key: segments must number steps like one call."""

    def local_step(self, ctx, local, batch, rng):
        local, metrics = super().local_step(ctx, local, batch, rng)
        return local, {**metrics, "loss": metrics["loss"] + jax.random.uniform(rng)}


@pytest.mark.parametrize(
    "algorithm",
    [
        NoisyFedProx(toy.forward, FedAvgConfig(prox_mu=0.5, optim=OPTIM)),
        FedDAT(toy.forward, FedDATConfig(optim=OPTIM)),
    ],
    ids=["fedprox", "feddat"],
)
@pytest.mark.parametrize("segment_steps", [1, 2, 3])
def test_segmented_round_equals_one_call_round(algorithm, segment_steps):
    _, batches, frozen, shared, _, private_C, tasks = toy.cohort(algorithm, SIZES, KINDS, REAL)
    server_tx = make_server_optimizer("fedadam", learning_rate=0.1)
    server = init_server_state(shared, server_tx, jax.random.key(1))
    ids = jnp.arange(len(SIZES))
    one_call = make_round_fn(algorithm, server_tx, MeanAggregator("weighted"))
    ref_server, ref_private, ref_metrics = one_call(
        frozen, server, jax.tree.map(jnp.array, private_C), tasks, ids, batches
    )
    seg = SegmentedRound(
        algorithm, server_tx, MeanAggregator("weighted"), segment_steps=segment_steps
    )
    done = []
    new_server, new_private, metrics = without_replica_axis(
        seg(
            frozen,
            with_replica_axis(server),
            with_replica_axis(jax.tree.map(jnp.array, private_C)),
            with_replica_axis(tasks),
            with_replica_axis(ids),
            split_epoch(batches, segment_steps),
            on_segment=done.append,
        )
    )
    assert done == list(range(len(segment_windows(5, segment_steps))))
    assert int(new_server.round) == int(ref_server.round) == 1
    assert (
        max_diff(
            (new_server.shared, new_server.opt_state), (ref_server.shared, ref_server.opt_state)
        )
        <= 1e-6
    )
    assert max_diff(new_private, ref_private) <= 1e-6
    assert max_diff(metrics, ref_metrics) <= 1e-6
    np.testing.assert_array_equal(metrics["clients"]["steps"], [-(-n // 4) for n in SIZES])
    assert max_diff(new_server.shared, server.shared) > 1e-3  # the round really trained


def test_segmented_round_compiles_each_program_once():
    traces = []

    def counting_forward(params, batch, mode):
        traces.append(mode)
        return toy.forward(params, batch, mode)

    algorithm = FedAvg(counting_forward, FedAvgConfig(optim=OPTIM))
    _, batches, frozen, shared, _, private_C, tasks = toy.cohort(algorithm, SIZES, KINDS, REAL)
    server_tx = make_server_optimizer("fedavg")
    server = with_replica_axis(init_server_state(shared, server_tx, jax.random.key(1)))
    seg = SegmentedRound(algorithm, server_tx, MeanAggregator(), segment_steps=2)
    for r in range(3):
        cohort = np.sort(np.random.default_rng(r).choice(len(SIZES), 3, replace=False))
        server, _, _ = seg(
            frozen,
            server,
            with_replica_axis(gather(private_C, cohort)),
            with_replica_axis(gather(tasks, cohort)),
            jnp.asarray(cohort)[None],
            split_epoch(gather(batches, cohort), 2),
        )
    assert int(server.round[0]) == 3
    assert len(traces) == 1, f"the segment program traced {len(traces)} times over 3 rounds"
    for fn in (seg.begin_fn, seg.segment_fn, seg.add_fn, seg.end_fn):
        assert fn._cache_size() <= 1


def test_zero_segment_steps_is_the_one_call_round():
    algorithm = FedAvg(toy.forward, FedAvgConfig(optim=OPTIM))
    _, batches, frozen, shared, _, private_C, tasks = toy.cohort(algorithm, SIZES, KINDS, REAL)
    server_tx = make_server_optimizer("fedavg")
    server = init_server_state(shared, server_tx, jax.random.key(1))
    seg = SegmentedRound(algorithm, server_tx, MeanAggregator(), segment_steps=0)
    done = []
    replica = with_replica_axis((server, private_C, tasks, jnp.arange(5), batches))
    seg(frozen, *replica[:4], [replica[4]], on_segment=done.append)
    assert done == [0]
    assert seg.round_fn._cache_size() <= 1 and seg.segment_fn._cache_size() == 0
