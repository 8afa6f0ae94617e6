"""The local learning-rate schedules: the official one and the fair one for comparisons."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_model as toy
from feddat_jax.fl import local_optim
from feddat_jax.fl.algorithms import FedAvg, FedAvgConfig, FedDAT, FedDATConfig
from feddat_jax.fl.round import client_context

NUM_BATCHES = 20


def lrs(schedule: str, ticks, ticks_per_batch: int, num_batches=NUM_BATCHES, cap=0):
    cfg = local_optim.LocalOptimConfig(learning_rate=1.0, schedule=schedule, max_local_steps=cap)
    nb = jnp.asarray(num_batches, jnp.float32)
    return np.array(
        [float(local_optim.learning_rate(cfg, jnp.asarray(t), nb, ticks_per_batch)) for t in ticks]
    )


def test_fair_schedule_gives_every_method_the_same_rate_at_the_same_batch():
    batches = np.arange(NUM_BATCHES)
    one_step = lrs("fair", batches, 1)
    np.testing.assert_array_equal(lrs("fair", 2 * batches, 2), one_step)  # FedDAT step 1
    np.testing.assert_array_equal(lrs("fair", 2 * batches + 1, 2), one_step)  # FedDAT step 2
    # warmup is 10% of ONE epoch: the peak comes at batch 2 of 20, then a slow linear decay
    assert one_step[2] == one_step.max() == 1.0 and np.all(np.diff(one_step[2:]) < 0)


def test_official_schedule_favours_two_steps_per_batch():
    """Warmup lasts 1.5 epochs of ticks: a one-step method stays in warmup all round, FedDAT
    (two ticks per batch) passes the peak three quarters into it."""
    one_step = lrs("official", np.arange(NUM_BATCHES), 1)
    two_steps = lrs("official", np.arange(2 * NUM_BATCHES), 2)
    assert one_step.max() < 0.7 and np.all(np.diff(one_step) > 0)
    assert two_steps.max() == 1.0 and int(np.argmax(two_steps)) == 30


@pytest.mark.parametrize("schedule", ["fair", "official"])
def test_feddat_and_fedavg_local_steps_use_the_schedule(schedule):
    optim = local_optim.LocalOptimConfig(learning_rate=1e-2, schedule=schedule)
    _, batches, frozen, shared, private, _, tasks = toy.cohort(
        FedDAT(toy.forward), [12], [0], [3], batch_size=2
    )
    one = jax.tree.map(lambda x: x[0], (batches, tasks))
    ctx = client_context(frozen, shared, one[1], 2, jnp.zeros((), jnp.int32))
    feddat = FedDAT(toy.forward, FedDATConfig(optim=optim))
    fedavg = FedAvg(toy.forward, FedAvgConfig(optim=optim))
    local_d = feddat.begin_round(ctx, feddat.init_private(shared, private))
    local_a = fedavg.begin_round(ctx, fedavg.init_private(shared, {"head": private["head"]}))
    for step in range(6):
        batch = jax.tree.map(lambda x: x[step], one[0])
        local_d, m_d = feddat.local_step(ctx, local_d, batch, None)
        local_a, m_a = fedavg.local_step(ctx, local_a, batch, None)
        if schedule == "fair":
            assert float(m_d["lr"]) == float(m_d["lr_dat"]) == float(m_a["lr"])
        elif 0 < step < 4:  # 6 batches: S = 90 ticks, warmup 9; FedDAT's ticks 2b, 2b+1 < 9
            assert float(m_d["lr_dat"]) > float(m_d["lr"]) > float(m_a["lr"])


@pytest.mark.parametrize("schedule", ["fair", "official"])
def test_a_capped_round_is_scheduled_like_a_short_epoch(schedule):
    """With max_local_steps=K a client of 20 batches warms up and decays like a client of K
    batches; a client with fewer than K batches keeps its own schedule."""
    ticks = np.arange(2 * NUM_BATCHES)
    capped = lrs(schedule, ticks, 2, cap=5)
    np.testing.assert_array_equal(capped, lrs(schedule, ticks, 2, num_batches=5))
    assert not np.array_equal(capped, lrs(schedule, ticks, 2))
    np.testing.assert_array_equal(
        lrs(schedule, ticks, 2, num_batches=3, cap=5), lrs(schedule, ticks, 2, num_batches=3)
    )


def test_negative_local_step_cap_is_refused():
    with pytest.raises(ValueError, match="max_local_steps must be >= 0"):
        local_optim.LocalOptimConfig(max_local_steps=-1)


def test_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="'linear'.*official.*fair"):
        local_optim.LocalOptimConfig(schedule="linear")
