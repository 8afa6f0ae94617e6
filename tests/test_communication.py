"""Communication accounting over the shared channel, the parameter share, and the byte budget."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_model as toy
from feddat_jax.fl.communication import (
    CommunicationBudget,
    RoundTraffic,
    cumulative_bytes,
    parameter_share,
    round_traffic,
    tree_bytes,
    tree_num_params,
)

A = 5


def toy_parts():
    return toy.split(toy.init_params(jax.random.key(0), A))


def test_bytes_and_counts_of_pytrees():
    tree = {
        "f32": jnp.zeros((3, 4), jnp.float32),
        "bf16": jnp.zeros((10,), jnp.bfloat16),
        "nested": {"i8": np.zeros((2, 2, 2), np.int8), "scalar": jnp.zeros((), jnp.float32)},
    }
    assert tree_num_params(tree) == 12 + 10 + 8 + 1
    assert tree_bytes(tree) == 12 * 4 + 10 * 2 + 8 * 1 + 4
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)
    assert tree_bytes(shapes) == tree_bytes(tree)  # no arrays needed
    assert tree_bytes({}) == 0 and tree_num_params({}) == 0


def test_round_traffic_of_the_shared_adapter():
    frozen, shared, private = toy_parts()
    per_client = (8 * 8 + 8) * 4  # A_s kernel + bias, float32
    assert tree_bytes(shared) == per_client
    t = round_traffic(shared, 5)
    assert (t.bytes_down, t.bytes_up, t.total_bytes) == (
        5 * per_client,
        5 * per_client,
        10 * per_client,
    )
    assert t.metrics(123) == {
        "comm/bytes_down": 5 * per_client,
        "comm/bytes_up": 5 * per_client,
        "comm/bytes_round": 10 * per_client,
        "comm/bytes_cumulative": 123,
    }
    half = jax.tree.map(lambda x: x.astype(jnp.bfloat16), shared)  # e.g. a bf16 upload
    assert round_traffic(shared, 5, upload=half).bytes_up == 5 * per_client // 2
    assert round_traffic(shared, 0).total_bytes == 0  # an empty Poisson round
    # private state and the backbone never travel: only `shared` enters the count
    assert tree_bytes(private) > 0 and tree_bytes(frozen) > 0


def test_cumulative_bytes():
    rounds = [RoundTraffic(3, 30, 30), RoundTraffic(1, 10, 10), RoundTraffic(2, 20, 20)]
    assert cumulative_bytes(rounds) == [60, 80, 120]
    assert cumulative_bytes(rounds, start=1000) == [1060, 1080, 1120]
    assert cumulative_bytes([]) == []


def test_parameter_share():
    frozen, shared, private = toy_parts()
    share = parameter_share(frozen, shared, private)
    n_frozen, n_shared, n_private = 48 * 8 + 8, 8 * 8 + 8, (8 * 8 + 8) + (8 * A + A)
    assert (share.frozen, share.shared, share.private) == (n_frozen, n_shared, n_private)
    assert share.total == n_frozen + n_shared + n_private
    assert share.trainable == n_shared + n_private
    assert share.trainable_fraction == pytest.approx((n_shared + n_private) / share.total)
    assert share.shared_fraction == pytest.approx(n_shared / share.total)
    m = share.metrics()
    assert m["params/total"] == share.total and m["params/shared"] == n_shared
    assert parameter_share({}, {}, {}).trainable_fraction == 0.0


def test_budget_stops_before_the_round_that_would_exceed_it():
    frozen, shared, private = toy_parts()
    per_round = round_traffic(shared, 4).total_bytes
    budget = CommunicationBudget(2.5 * per_round)
    done, cumulative = 0, 0
    for _ in range(10):  # the loop's pattern
        if budget.exhausted(cumulative, per_round):
            break
        done, cumulative = done + 1, cumulative + per_round
    assert done == 2 and cumulative <= budget.max_bytes
    assert budget.remaining(cumulative) == pytest.approx(0.5 * per_round)
    exact = CommunicationBudget(2 * per_round)
    assert not exact.exhausted(per_round, per_round)  # reaching the cap is allowed
    assert exact.exhausted(2 * per_round, 1)
    assert not exact.exhausted(2 * per_round)  # at the cap, not over it
    assert exact.exhausted(2 * per_round + 1)
    for unlimited in (CommunicationBudget(None), CommunicationBudget(math.inf)):
        assert unlimited.unlimited and not unlimited.exhausted(10**18, 10**18)


@pytest.mark.parametrize("bad", [0, -5, float("nan"), "1GB", True])
def test_bad_budget(bad):
    with pytest.raises(ValueError, match=r"max_bytes must be a number > 0"):
        CommunicationBudget(bad)


def test_bad_counts():
    _, shared, _ = toy_parts()
    with pytest.raises(ValueError, match=r"cohort_size must be an integer >= 0.*got -1"):
        round_traffic(shared, -1)
    with pytest.raises(ValueError, match=r"cohort_size must be an integer >= 0.*got 2\.5"):
        round_traffic(shared, 2.5)
    with pytest.raises(ValueError, match="byte counts must be >= 0"):
        CommunicationBudget(100).exhausted(-1)
