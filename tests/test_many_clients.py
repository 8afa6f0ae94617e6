"""Many clients, few of them trained: private state, checkpoints and evaluation grow with the
clients that took part, and a run with partial participation resumes bit for bit."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from test_launch import final_state, numbers

from feddat_jax.errors import ConfigError
from feddat_jax.train import loop
from feddat_jax.train.cohorts import CohortPlanner
from feddat_jax.train.config_base import config_from_file
from feddat_jax.train.experiment import build_experiment


def config(num_clients: int, rounds: int = 3, eval_clients: int = 10, eval_every: int = 0):
    c = config_from_file("configs/demo.py:smoke")
    c.method, c.model.checkpoint, c.model.size = "feddat", "", "tiny"
    c.data.num_clients, c.data.train_per_client, c.data.test_per_client = num_clients, 8, 4
    c.clients_per_round, c.rounds, c.eval_clients = 3, rounds, eval_clients
    c.eval_every = eval_every or rounds
    return c


def host(x) -> np.ndarray:
    """A checkpoint leaf as numpy (the server's PRNG key as its key data)."""
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    return np.asarray(x)


def folder_bytes(path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


@pytest.mark.slow
def test_partial_participation_resumes_bit_for_bit_and_saves_only_trained_clients(tmp_path):
    # every round evaluates: a run always evaluates after its last round, the 2-round one too
    exp = build_experiment(config(60, eval_every=1))
    full = loop.train(exp, tmp_path / "full", show_progress=False)
    part = tmp_path / "part"
    loop.train(build_experiment(config(60, rounds=2, eval_every=1)), part, show_progress=False)
    resumed = loop.train(exp, part, show_progress=False)
    assert numbers(resumed) == numbers(full)

    (step, a, meta), (_, b, _) = final_state(exp, tmp_path / "full"), final_state(exp, part)
    assert step == 3
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(host(x), host(y))
    # the checkpoint holds exactly the clients the cohorts drew, no one else
    took_part = np.flatnonzero(CohortPlanner(exp).took_part(3)[0])
    assert 3 < took_part.size <= 9 and meta["trained_slots"] == took_part.size
    np.testing.assert_array_equal(a["private"]["ids"][0], took_part)

    # evaluation: a seeded sample of 10 of the 60, split by participation, with its interval
    last = full[-1]
    assert last["eval/clients"] == 10 and 0 <= last["eval/took_part"] <= 9
    assert last["score_ci95/dat"] > 0
    sides = [k for k in ("score_took_part/dat", "score_never/dat") if k in last]
    assert sides


@pytest.mark.slow
def test_checkpoint_bytes_follow_the_clients_that_trained_not_those_registered(tmp_path):
    sizes, per_client = {}, 0
    for n in (30, 600):
        exp = build_experiment(config(n, rounds=2, eval_clients=3))
        loop.train(exp, tmp_path / str(n), show_progress=False)
        sizes[n] = folder_bytes(tmp_path / str(n) / "checkpoints" / "2")
        _, state, _ = final_state(exp, tmp_path / str(n))
        trained = np.asarray(state["private"]["ids"]).size
        per_client = sum(x.nbytes for x in jax.tree.leaves(state["private"]["state"])) // trained
    # 570 more registered clients, the same cohorts' size: a dense layout would add 570 private
    # states; the lazy one adds the tasks' few bytes per client (~100 bytes; a state is ~50 KB)
    growth = sizes[600] - sizes[30]
    assert growth < 0.05 * 570 * per_client, (sizes, per_client)


def test_every_client_evaluated_has_no_sampling_interval_and_too_many_is_one_line(tmp_path):
    exp = build_experiment(config(6, rounds=1, eval_clients=0))
    rows = loop.train(exp, tmp_path / "all", show_progress=False)
    assert rows[-1]["eval/clients"] == 6 and rows[-1]["score_ci95/dat"] == 0.0
    with pytest.raises(ConfigError, match="eval_clients=7 but the benchmark has 6 clients"):
        loop.train(build_experiment(config(6, rounds=1, eval_clients=7)), tmp_path / "too_many")
