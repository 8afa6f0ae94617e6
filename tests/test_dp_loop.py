"""Poisson client sampling for DP runs, through the training loop."""

import sys
from pathlib import Path

import pytest

from feddat_jax.fl.accounting import PrivacyAccountant, poisson_sample
from feddat_jax.train import loop
from feddat_jax.train.experiment import build_aggregation, build_experiment

ROOT = Path(__file__).resolve().parent.parent
SEED = 190  # the smoke config's 4 clients, q = 0.5: cohorts [], [1, 2], [0, 1, 3] in rounds 0, 1, 2


def poisson_config(tmp_path):
    sys.path.insert(0, str(ROOT / "configs"))
    import demo  # configs/ is not a package

    c = demo.get_config("smoke")
    c.model.checkpoint = ""
    c.model.size = "tiny"
    c.seed, c.rounds, c.eval_every, c.checkpoint_every = SEED, 3, 3, 3
    c.clients_per_round = 2  # an int count: q = 2 / N
    c.aggregation = "uniform"
    c.dp.enabled, c.dp.sampling = True, "poisson"
    c.dp.noise_multiplier, c.dp.clip_norm = 1.0, 1.0
    c.data.cache_dir = str(tmp_path / "cache")
    return c


def test_poisson_dp_run_compiles_once_and_accounts(tmp_path):
    cfg = poisson_config(tmp_path)
    exp = build_experiment(cfg)
    n = len(exp.client_names)
    q = 2 / n
    history = loop.train(exp, tmp_path / "run", show_progress=False)

    assert len(history) == 3
    assert exp.round_fn._cache_size() <= 1  # one static padded cohort size for the whole run
    cohorts = [poisson_sample(SEED, r, n, q) for r in range(3)]
    assert len({c.size for c in cohorts}) > 1 and min(c.size for c in cohorts) == 0
    for record, ids in zip(history, cohorts):
        names = record["cohort"].split(",") if record["cohort"] else []
        assert names == [exp.client_names[k] for k in ids]
    reference = PrivacyAccountant(1.0, "poisson", q, cfg.dp.delta, "rdp", n)
    for r, record in enumerate(history):
        assert record["dp/epsilon"] == pytest.approx(reference.epsilon_after(r + 1))
    assert exp.accountants[0].sampling == "poisson" and exp.accountants[0].sample_rate == q


def test_poisson_aggregator_and_sampling_validation(tmp_path):
    cfg = poisson_config(tmp_path)
    cfg.clients_per_round = 0.5
    aggregator, accountant = build_aggregation(cfg, 10)
    assert aggregator.expected_cohort_size == pytest.approx(5.0)
    assert (accountant.sampling, accountant.sample_rate, accountant.num_clients) == (
        "poisson",
        0.5,
        10,
    )
    cfg.dp.sampling = "bernoulli"
    with pytest.raises(ValueError, match="dp.sampling"):
        build_aggregation(cfg, 10)
