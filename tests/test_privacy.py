"""Central DP of the shared channel: the DP-FedAvg Gaussian aggregator and its accountant."""

import math

import dp_accounting
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import toy_model as toy
from one_federation import make_round_fn
from feddat_jax.fl import local_optim
from feddat_jax.fl.accounting import (
    PrivacyAccountant,
    max_poisson_cohort,
    pad_cohort,
    poisson_sample,
)
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.algorithms import FedDAT, FedDATConfig
from feddat_jax.fl.privacy import DPGaussianAggregator, make_dp_aggregator
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import init_server_state

SIZES = (3, 7, 5)
KINDS = (0, 1, 0)
REAL = (4, 3, 5)
A, B = 5, 4
OPTIM = local_optim.LocalOptimConfig(learning_rate=3e-2, schedule_epochs=2.0)


def tree_norm(tree):
    return float(jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(tree))))


def assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_trees_close(a, b, atol=1e-6):
    """For runs whose vmapped shapes differ: XLA may fuse and round a padded batch differently."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)


def random_deltas(key, num_clients, scale=1.0):
    k1, k2 = jax.random.split(key)
    return {
        "adapter_shared": {
            "kernel": scale * jax.random.normal(k1, (num_clients, 8, 8)),
            "bias": scale * jax.random.normal(k2, (num_clients, 8)),
        }
    }


# ----------------------------------------------------------------------------- the round
@pytest.fixture(scope="module")
def feddat_setup():
    algorithm = FedDAT(toy.forward, FedDATConfig(optim=OPTIM))
    _, batches, frozen, shared, _, private_C, tasks = toy.cohort(
        algorithm, SIZES, KINDS, REAL, A, B
    )
    return algorithm, frozen, shared, private_C, tasks, batches


def run_one_round(setup, aggregator, server_opt="fedavg"):
    algorithm, frozen, shared, private_C, tasks, batches = setup
    server_tx = make_server_optimizer(
        server_opt, learning_rate=1.0 if server_opt == "fedavg" else 0.1
    )
    server = init_server_state(shared, server_tx, jax.random.key(1))
    run = make_round_fn(algorithm, server_tx, aggregator)
    private_copy = jax.tree.map(jnp.array, private_C)  # the round donates the cohort's private
    return server, run(frozen, server, private_copy, tasks, jnp.arange(len(SIZES)), batches)


class RecordingAggregator:
    """Wraps an aggregator and records the tree it is handed (at trace time)."""

    def __init__(self, inner):
        self.inner, self.seen = inner, []

    def __call__(self, delta_C, num_examples_C, rng):
        self.seen.append(delta_C)
        return self.inner(delta_C, num_examples_C, rng)


@pytest.fixture(scope="module")
def plain_round(feddat_setup):
    return run_one_round(feddat_setup, MeanAggregator("uniform"))


def test_no_clip_no_noise_is_exactly_uniform_fedavg_through_the_round(feddat_setup, plain_round):
    server, (ref_server, ref_private, _) = plain_round
    _, (dp_server, dp_private, metrics) = run_one_round(
        feddat_setup, DPGaussianAggregator(math.inf, 0.0)
    )
    assert_trees_equal(dp_server.shared, ref_server.shared)  # bit-exact
    assert_trees_equal(dp_private, ref_private)
    assert tree_norm(jax.tree.map(jnp.subtract, ref_server.shared, server.shared)) > 1e-3
    assert float(metrics["server"]["dp/fraction_clipped"]) == 0.0
    assert float(metrics["server"]["dp/noise_std"]) == 0.0
    assert float(metrics["server"]["dp/mean_preclip_norm"]) > 0.0


def test_dp_never_sees_nor_changes_private_state(feddat_setup, plain_round):
    """The aggregator gets the shared delta only; A_c and heads come out exactly as without DP.

    Also shows DP composing with an adaptive server optimizer (FedAdam).
    """
    _, (_, ref_private, _) = plain_round
    recorder = RecordingAggregator(DPGaussianAggregator(clip_norm=1e-3, noise_multiplier=5.0))
    server, (dp_server, dp_private, metrics) = run_one_round(feddat_setup, recorder, "fedadam")
    assert len(recorder.seen) == 1
    (delta_C,) = recorder.seen
    assert set(delta_C) == {"adapter_shared"}  # A_c / head never reach it
    assert jax.tree.structure(delta_C) == jax.tree.structure(
        jax.tree.map(lambda x: x[None], server.shared)
    )
    assert_trees_equal(dp_private, ref_private)  # private state untouched
    assert float(metrics["server"]["dp/fraction_clipped"]) == 1.0  # S tiny: everyone clipped
    for x in jax.tree.leaves(dp_server.shared):
        assert np.all(np.isfinite(np.asarray(x)))
    assert tree_norm(jax.tree.map(jnp.subtract, dp_server.shared, server.shared)) > 0


def test_poisson_padded_cohort_equals_the_unpadded_round(feddat_setup, plain_round):
    """A padded slot (num_examples 0, all-zero example_mask) contributes nothing; the mean is
    divided by the fixed expected cohort size (here the real C, so it equals plain FedAvg)."""
    _, (ref_server, ref_private, _) = plain_round
    algorithm, frozen, shared, private_C, tasks, batches = feddat_setup
    ids, mask = pad_cohort(np.arange(len(SIZES)), len(SIZES) + 1)
    pad = lambda t: jax.tree.map(lambda x: jnp.asarray(x)[ids], t)
    tasks_p = pad(tasks).replace(num_examples=jnp.where(mask, pad(tasks).num_examples, 0))
    batches_p = pad(batches)
    batches_p["example_mask"] = batches_p["example_mask"] * mask[:, None, None]
    server_tx = make_server_optimizer("fedavg")
    server = init_server_state(shared, server_tx, jax.random.key(1))
    aggregator = DPGaussianAggregator(math.inf, 0.0, expected_cohort_size=float(len(SIZES)))
    run = make_round_fn(algorithm, server_tx, aggregator)
    new_server, new_private, _ = run(
        frozen, server, pad(private_C), tasks_p, jnp.asarray(ids), batches_p
    )
    np.testing.assert_allclose(
        new_server.shared["adapter_shared"]["kernel"],
        ref_server.shared["adapter_shared"]["kernel"],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        new_server.shared["adapter_shared"]["bias"],
        ref_server.shared["adapter_shared"]["bias"],
        atol=1e-6,
    )
    assert_trees_close(jax.tree.map(lambda x: x[mask], new_private), ref_private)


# ----------------------------------------------------------------------------- the aggregator
def test_clipping_bounds_one_clients_contribution():
    c, s = 4, 0.5
    deltas = random_deltas(jax.random.key(3), c, scale=0.01)  # honest clients, norm << S
    huge = jax.tree.map(lambda x: x.at[2].set(1e6), deltas)  # client 2 goes wild
    without = jax.tree.map(lambda x: x.at[2].set(0.0), deltas)
    n = jnp.asarray([10, 20, 30, 40])
    agg = DPGaussianAggregator(clip_norm=s, noise_multiplier=0.0)
    mean_huge, metrics = agg(huge, n, jax.random.key(0))
    mean_without, _ = agg(without, n, jax.random.key(0))
    moved = tree_norm(jax.tree.map(jnp.subtract, mean_huge, mean_without))
    assert moved <= s / c * (1 + 1e-5)
    assert moved == pytest.approx(s / c, rel=1e-4)  # the bound is attained
    assert float(metrics["dp/fraction_clipped"]) == 0.25
    norms = [tree_norm(jax.tree.map(lambda x: x[k], huge)) for k in range(c)]
    assert float(metrics["dp/mean_preclip_norm"]) == pytest.approx(np.mean(norms), rel=1e-5)
    # the clipped client's direction is kept, its norm is exactly S
    manual = jax.tree.map(lambda x: x[2] * (s / norms[2]), huge)
    honest = jax.tree.map(lambda x: jnp.sum(x, 0), without)
    expected = jax.tree.map(lambda h, m: (h + m) / c, honest, manual)
    for x, y in zip(jax.tree.leaves(mean_huge), jax.tree.leaves(expected)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-7)


def test_noise_has_the_configured_scale():
    c, s, sigma = 8, 0.7, 1.3
    zeros = {"a": jnp.zeros((c, 300, 200)), "b": {"c": jnp.zeros((c, 1000))}}
    agg = DPGaussianAggregator(clip_norm=s, noise_multiplier=sigma)
    noisy, metrics = agg(zeros, jnp.ones((c,), jnp.int32), jax.random.key(42))
    z = np.concatenate([np.ravel(x) for x in jax.tree.leaves(noisy)])
    target = sigma * s / c
    assert float(metrics["dp/noise_std"]) == pytest.approx(target)
    assert np.std(z) == pytest.approx(target, rel=0.02)
    assert abs(np.mean(z)) < 5 * target / np.sqrt(z.size)
    a, b = np.ravel(noisy["a"])[:1000], np.ravel(noisy["b"]["c"])
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.15  # leaves get independent keys
    again, _ = agg(zeros, jnp.ones((c,), jnp.int32), jax.random.key(42))
    assert_trees_equal(noisy, again)  # keyed: reproducible
    other, _ = agg(zeros, jnp.ones((c,), jnp.int32), jax.random.key(43))
    assert not np.allclose(other["a"], noisy["a"])


def test_pure_jit_and_vmap_compatible():
    agg = DPGaussianAggregator(clip_norm=0.3, noise_multiplier=0.8)
    deltas = random_deltas(jax.random.key(5), 3)
    n = jnp.asarray([1, 2, 3])
    eager, eager_m = agg(deltas, n, jax.random.key(9))
    jitted, jitted_m = jax.jit(agg)(deltas, n, jax.random.key(9))
    for x, y in zip(jax.tree.leaves((eager, eager_m)), jax.tree.leaves((jitted, jitted_m))):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    keys = jax.random.split(jax.random.key(0), 2)
    batched, _ = jax.vmap(agg, in_axes=(None, None, 0))(deltas, n, keys)
    for i in range(2):
        single, _ = agg(deltas, n, keys[i])
        for x, y in zip(jax.tree.leaves(batched), jax.tree.leaves(single)):
            np.testing.assert_allclose(x[i], y, rtol=1e-5, atol=1e-6)


def test_poisson_aggregator_uses_the_fixed_denominator_and_masks_padding():
    deltas = random_deltas(jax.random.key(1), 4, scale=0.01)
    deltas = jax.tree.map(lambda x: x.at[3].set(1e3), deltas)  # a padded slot with garbage
    n = jnp.asarray([5, 6, 7, 0])
    agg = make_dp_aggregator(math.inf, 0.0, sampling="poisson", num_clients=25, sample_rate=0.2)
    assert agg.expected_cohort_size == pytest.approx(5.0)
    mean, metrics = agg(deltas, n, jax.random.key(0))
    expected = jax.tree.map(lambda x: jnp.sum(x[:3], 0) / 5.0, deltas)
    for x, y in zip(jax.tree.leaves(mean), jax.tree.leaves(expected)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-8)
    norms = [tree_norm(jax.tree.map(lambda x: x[k], deltas)) for k in range(3)]
    assert float(metrics["dp/mean_preclip_norm"]) == pytest.approx(np.mean(norms), rel=1e-5)
    empty, _ = DPGaussianAggregator(1.0, 1.0, expected_cohort_size=5.0)(
        deltas, jnp.zeros((4,), jnp.int32), jax.random.key(0)
    )
    assert tree_norm(empty) > 0  # an empty round is pure noise


# ----------------------------------------------------------------------------- the accountant
def direct_rdp(event, relation, rounds, delta):
    acc = dp_accounting.rdp.RdpAccountant(neighboring_relation=relation)
    acc.compose(event, rounds)
    return acc.get_epsilon(delta)


def test_fixed_size_epsilon_matches_dp_accounting():
    n, c, sigma, delta, rounds = 100, 10, 1.5, 1e-5, 20
    ours = PrivacyAccountant(sigma, "fixed", c / n, delta, "rdp", num_clients=n)
    # replace-one relation, sensitivity 2S: dp_accounting's multiplier (std / sensitivity) is σ/2
    ref = direct_rdp(
        dp_accounting.SampledWithoutReplacementDpEvent(
            n, c, dp_accounting.GaussianDpEvent(sigma / 2)
        ),
        dp_accounting.NeighboringRelation.REPLACE_ONE,
        rounds,
        delta,
    )
    assert ours.epsilon_after(rounds) == pytest.approx(ref, rel=1e-9)
    assert PrivacyAccountant.for_cohort(sigma, n, c, delta).epsilon_after(rounds) == pytest.approx(
        ref, rel=1e-9
    )
    assert PrivacyAccountant.for_cohort(sigma, n, 0.1, delta).epsilon_after(
        rounds
    ) == pytest.approx(ref, rel=1e-9)
    eps = [ours.epsilon_after(t) for t in (0, 1, 5, 20)]
    assert eps[0] == 0.0 and all(a < b for a, b in zip(eps, eps[1:]))


def test_poisson_epsilon_matches_dp_accounting_rdp_and_pld():
    q, sigma, delta, rounds = 0.05, 1.2, 1e-6, 10
    event = dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma))
    rel = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    ours_rdp = PrivacyAccountant(sigma, "poisson", q, delta, "rdp")
    assert ours_rdp.epsilon_after(rounds) == pytest.approx(
        direct_rdp(event, rel, rounds, delta), rel=1e-9
    )
    pld = dp_accounting.pld.PLDAccountant()
    pld.compose(event, rounds)
    ours_pld = PrivacyAccountant(sigma, "poisson", q, delta, "pld").epsilon_after(rounds)
    assert ours_pld == pytest.approx(pld.get_epsilon(delta), rel=1e-6)
    assert ours_pld <= ours_rdp.epsilon_after(rounds) * 1.01  # PLD is the tighter one


def test_full_participation_is_a_gaussian_with_sensitivity_two_s():
    """C = N (the paper's setting): check against the exact Gaussian-mechanism curve
    (Balle & Wang 2018) with μ = 2S·√T / (σS), independently of dp_accounting's conventions."""
    sigma, delta, rounds = 4.0, 1e-5, 3
    mu = 2.0 * math.sqrt(rounds) / sigma
    exact_delta = lambda e: (
        stats.norm.cdf(-e / mu + mu / 2) - math.exp(e) * stats.norm.cdf(-e / mu - mu / 2)
    )
    eps_pld = PrivacyAccountant(sigma, "fixed", 1.0, delta, "pld").epsilon_after(rounds)
    eps_rdp = PrivacyAccountant(sigma, "fixed", 1.0, delta, "rdp").epsilon_after(rounds)
    assert exact_delta(eps_pld) == pytest.approx(delta, rel=0.05)
    assert eps_pld <= eps_rdp  # RDP is an upper bound
    assert exact_delta(eps_rdp) <= delta


def test_accountant_edges():
    assert PrivacyAccountant(0.0, "poisson", 0.1, 1e-5).epsilon_after(3) == math.inf
    acc = PrivacyAccountant(1.0, "poisson", 0.1, 1e-5)
    assert acc.metrics(2) == {"dp/epsilon": acc.epsilon_after(2), "dp/delta": 1e-5}
    with pytest.raises(ValueError, match="rounds must be an integer >= 0"):
        acc.epsilon_after(-1)
    with pytest.raises(ValueError, match="pld.*fixed-size"):
        PrivacyAccountant(1.0, "fixed", 0.1, 1e-5, "pld", num_clients=100)
    with pytest.raises(ValueError, match="needs num_clients"):
        PrivacyAccountant(1.0, "fixed", 0.1, 1e-5)
    with pytest.raises(ValueError, match="not a whole cohort size"):
        PrivacyAccountant(1.0, "fixed", 0.123, 1e-5, num_clients=10)


def test_poisson_sampling_helpers():
    a = poisson_sample(7, 3, 1000, 0.1)
    np.testing.assert_array_equal(a, poisson_sample(7, 3, 1000, 0.1))  # keyed by (seed, round)
    assert not np.array_equal(a, poisson_sample(7, 4, 1000, 0.1))
    assert np.all(np.diff(a) > 0) and 60 < a.size < 140
    np.testing.assert_array_equal(poisson_sample(0, 0, 5, 1.0), np.arange(5))
    top = max_poisson_cohort(7, 20, 1000, 0.1)
    assert top == max(poisson_sample(7, r, 1000, 0.1).size for r in range(20))
    ids, mask = pad_cohort(np.asarray([4, 9]), 4)
    np.testing.assert_array_equal(ids, [4, 9, 0, 0])
    np.testing.assert_array_equal(mask, [True, True, False, False])
    with pytest.raises(ValueError, match="exceeds the padded size"):
        pad_cohort(np.arange(5), 4)


# ----------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(clip_norm=0.0, noise_multiplier=1.0), r"clip_norm.*\(0, inf\].*got 0\.0"),
        (dict(clip_norm=-1.0, noise_multiplier=1.0), r"clip_norm.*\(0, inf\].*got -1\.0"),
        (dict(clip_norm=float("nan"), noise_multiplier=1.0), r"clip_norm.*got nan"),
        (dict(clip_norm=1.0, noise_multiplier=-0.5), r"noise_multiplier.*\[0, inf\).*got -0\.5"),
        (dict(clip_norm=1.0, noise_multiplier=float("inf")), r"noise_multiplier.*got inf"),
        (dict(clip_norm=math.inf, noise_multiplier=1.0), r"needs a finite dp\.clip_norm"),
        (dict(clip_norm=1.0, noise_multiplier=1.0, weights="weighted"), r"weights='uniform'"),
        (dict(clip_norm=1.0, noise_multiplier=1.0, weights="median"), r"'median'.*'uniform'"),
        (
            dict(clip_norm=1.0, noise_multiplier=1.0, expected_cohort_size=0.0),
            r"expected_cohort_size.*> 0.*got 0\.0",
        ),
    ],
)
def test_bad_aggregator_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DPGaussianAggregator(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(noise_multiplier=-1.0), r"noise_multiplier.*\[0, inf\).*got -1\.0"),
        (dict(delta=0.0), r"delta.*\(0, 1\).*got 0\.0"),
        (dict(delta=1.0), r"delta.*\(0, 1\).*got 1\.0"),
        (dict(delta=-1e-5), r"delta.*\(0, 1\).*got -1e-05"),
        (dict(sample_rate=0.0), r"sample_rate.*\(0, 1\].*got 0\.0"),
        (dict(sample_rate=1.5), r"sample_rate.*\(0, 1\].*got 1\.5"),
        (dict(method="moments"), r"dp\.accountant.*rdp, pld.*'moments'"),
        (dict(sampling="stratified"), r"fixed, poisson.*'stratified'"),
    ],
)
def test_bad_accountant_config(kwargs, match):
    args = dict(noise_multiplier=1.0, sampling="poisson", sample_rate=0.1, delta=1e-5, method="rdp")
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PrivacyAccountant(**args)


def test_bad_poisson_aggregator_config():
    with pytest.raises(ValueError, match=r"sample_rate.*\(0, 1\].*got 2\.0"):
        make_dp_aggregator(1.0, 1.0, sampling="poisson", num_clients=10, sample_rate=2.0)
    with pytest.raises(ValueError, match="needs num_clients and sample_rate"):
        make_dp_aggregator(1.0, 1.0, sampling="poisson")
    with pytest.raises(ValueError, match=r"sample_rate.*\(0, 1\].*got 0\.0"):
        poisson_sample(0, 0, 10, 0.0)
