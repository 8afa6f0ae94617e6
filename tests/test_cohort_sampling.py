"""A round's cohort never holds a client twice: every way the loop draws one samples WITHOUT
replacement (a draw with replacement would train a client twice in one round and weigh it
double in the aggregate; a single draw of 10 of 100 clients repeats none two times in three,
so many draws at a high sampling fraction are checked)."""

import numpy as np
import pytest

from feddat_jax.fl import distributed, sampling

DRAWS = [(seed, r) for seed in range(10) for r in range(10)]
SIZES = [(10, 5), (10, 9), (7, 3), (12, 0.5)]  # (registered clients, clients_per_round)


def assert_a_cohort(ids: np.ndarray, n: int, c: int) -> None:
    assert len(ids) == c and len(np.unique(ids)) == c, ids  # no client twice
    assert np.all((0 <= ids) & (ids < n)) and np.all(np.diff(ids) > 0)


@pytest.mark.parametrize("n,cpr", SIZES)
def test_sample_clients_draws_without_replacement(n, cpr):
    c = sampling.cohort_size(n, cpr)
    for seed, r in DRAWS:
        assert_a_cohort(sampling.sample_clients(seed, r, n, cpr), n, c)


@pytest.mark.parametrize("processes", [2, 3])
def test_the_per_process_draw_is_without_replacement_too(processes):
    n, c = 12, 6
    for seed, r in DRAWS:
        ids = distributed.sample_cohort(seed, r, n, c, num_processes=processes)
        assert_a_cohort(np.sort(ids), n, c)


@pytest.mark.parametrize("devices_per_process", [[1], [4], [2, 2], [1, 1, 1]])
def test_the_planned_cohort_holds_each_real_client_once(devices_per_process):
    """The loop's plan (``train.cohorts`` -> ``distributed.plan_cohort``): padded slots repeat an
    id but are masked out; the real slots are a cohort."""
    n, c = 12, 6
    for seed, r in DRAWS:
        ids, mask = distributed.plan_cohort(
            seed, r, n, c, devices_per_process=devices_per_process
        )
        assert mask.sum() == c
        assert_a_cohort(np.sort(ids[mask]), n, c)
