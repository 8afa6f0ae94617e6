"""Aggregation weights and every server optimizer against hand computations."""

import jax.numpy as jnp
import numpy as np
import pytest

from feddat_jax.fl import placement
from feddat_jax.fl.aggregation import MeanAggregator, client_weights
from feddat_jax.fl.sampling import cohort_size, sample_clients
from feddat_jax.fl.server_optimizers import make_server_optimizer

DELTA_C = {"w": jnp.array([[1.0, -2.0], [3.0, 0.0], [-1.0, 4.0]])}
N_C = jnp.array([1, 2, 5])


def test_uniform_and_weighted_means():
    uniform, _ = MeanAggregator("uniform")(DELTA_C, N_C, None)
    weighted, _ = MeanAggregator("weighted")(DELTA_C, N_C, None)
    np.testing.assert_allclose(uniform["w"], [1.0, 2.0 / 3.0], rtol=1e-6)
    np.testing.assert_allclose(weighted["w"], [(1 + 6 - 5) / 8, (-2 + 0 + 20) / 8], rtol=1e-6)
    np.testing.assert_allclose(client_weights(N_C, "weighted"), [1 / 8, 2 / 8, 5 / 8])


def test_reductions():
    np.testing.assert_allclose(placement.reduce_sum(DELTA_C)["w"], [3.0, 2.0])
    np.testing.assert_allclose(placement.reduce_mean(DELTA_C)["w"], [1.0, 2.0 / 3.0], rtol=1e-6)
    b = placement.broadcast({"x": jnp.ones(2)}, 3)
    assert b["x"].shape == (3, 2)


def _two_server_steps(name, deltas, **kw):
    tx = make_server_optimizer(name, **kw)
    x = jnp.array([0.5, -1.0])
    state = tx.init(x)
    for d in deltas:
        updates, state = tx.update(-d, state, x)
        x = x + updates
    return np.asarray(x)


DELTAS = [jnp.array([0.2, -0.4]), jnp.array([0.1, 0.3])]


def test_fedavg_is_sgd_lr_one():
    np.testing.assert_allclose(_two_server_steps("fedavg", DELTAS), [0.8, -1.1], rtol=1e-6)


def test_fedavgm_by_hand():
    lr, mom = 0.5, 0.9
    x, buf = np.array([0.5, -1.0]), np.zeros(2)
    for d in DELTAS:
        buf = mom * buf + (-np.asarray(d))
        x = x - lr * buf
    np.testing.assert_allclose(
        _two_server_steps("fedavgm", DELTAS, learning_rate=lr, momentum=mom), x, rtol=1e-6
    )


@pytest.mark.parametrize("name", ["fedadam", "fedyogi", "fedadagrad"])
def test_reddi_adaptive_optimizers_by_hand(name):
    lr, b1, b2, tau = 0.1, 0.9, 0.99, 1e-2
    x, m, v = np.array([0.5, -1.0]), np.zeros(2), np.full(2, tau**2)
    for d in DELTAS:
        d = np.asarray(d, np.float64)  # Reddi et al. Alg. 2 works on the mean delta Δ
        m = b1 * m + (1 - b1) * d
        if name == "fedadam":
            v = b2 * v + (1 - b2) * d * d
        elif name == "fedyogi":
            v = v - (1 - b2) * d * d * np.sign(v - d * d)
        else:
            v = v + d * d
        x = x + lr * m / (np.sqrt(v) + tau)
    got = _two_server_steps(name, DELTAS, learning_rate=lr, b1=b1, b2=b2, tau=tau)
    np.testing.assert_allclose(got, x, rtol=1e-5)


def test_bad_names_are_refused_with_choices():
    with pytest.raises(ValueError, match="fedavg, fedavgm"):
        make_server_optimizer("sgd")
    with pytest.raises(ValueError, match="weighted, uniform"):
        MeanAggregator("median")


def test_sampling_is_seeded_and_validated():
    a = sample_clients(7, 3, 100, 10)
    np.testing.assert_array_equal(a, sample_clients(7, 3, 100, 10))
    assert len(set(a.tolist())) == 10 and not np.array_equal(a, sample_clients(7, 4, 100, 10))
    assert cohort_size(100, 0.25) == 25
    np.testing.assert_array_equal(sample_clients(0, 0, 5, 5), np.arange(5))
    with pytest.raises(ValueError, match="only 5 clients"):
        sample_clients(0, 0, 5, 6)
    with pytest.raises(ValueError, match="neither a fraction"):
        cohort_size(5, 1.5)
    assert cohort_size(5, 3.0) == 3  # a config's float field given a count
    with pytest.raises(ValueError, match="outside"):
        cohort_size(5, 0.0)
