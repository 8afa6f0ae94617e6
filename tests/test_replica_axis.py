"""Every run has the replica axis (an unswept run is R = 1): the same numbers as before it did,
and the checkpoints written before it (or before clients held state only once trained) still
resume."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from feddat_jax.train.checkpoint_layout import checkpoint_target
from feddat_jax.train.checkpoints import RoundCheckpointer
from feddat_jax.train.config_base import config_from_file
from feddat_jax.train.experiment import build_experiment
from feddat_jax.train.loop import train
from feddat_jax.train.method_run import run_method

GOLDEN = Path(__file__).parent / "data" / "unswept_golden.json"


def smoke(method: str, rounds: int):
    """The settings tests/data/unswept_golden.json was recorded with (commit 3303db9, the last
    one whose unswept runs had no replica axis)."""
    c = config_from_file("configs/demo.py:smoke")
    c.method, c.rounds, c.clients_per_round, c.segment_steps = method, rounds, 2, 2
    c.model.checkpoint, c.model.size = "", "tiny"
    c.sweep.seed = ()
    return c


def numbers(history) -> list[dict]:
    return [
        {k: v for k, v in row.items() if isinstance(v, float) and not k.startswith("time/")}
        for row in history
    ]


@pytest.mark.slow
def test_unswept_run_is_bit_identical_to_the_run_without_replica_axis(tmp_path):
    golden = json.loads(GOLDEN.read_text())
    for method, want in golden.items():
        got = numbers(run_method(smoke(method, 2), tmp_path / method).history)
        # exact: R = 1 runs the one-federation program itself (later additions to the rows,
        # e.g. the evaluation sample's summary, are not in the recording)
        assert [{k: row[k] for k in old} for row, old in zip(got, want)] == want, method
        assert len(got) == len(want)


def every_client(exp, state) -> dict:
    """The dense private state ``[R, N, ...]`` of a checkpoint's trained clients (the rest at the
    initial state): what checkpoints held before clients held state only once trained."""
    n = len(exp.client_names)
    ids = np.asarray(state["private"]["ids"])

    def dense(initial, trained):
        out = np.repeat(np.asarray(initial)[:, None], n, 1)
        for r in range(ids.shape[0]):
            real = ids[r] >= 0
            out[r, ids[r][real]] = np.asarray(trained)[r][real]
        return out

    return jax.tree.map(dense, exp.private_init, state["private"]["state"])


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["no replica axis", "every client"])
def test_checkpoint_of_an_older_layout_resumes(tmp_path, layout):
    """Checkpoints of the two earlier layouts (server unstacked and private ``[N, ...]``; private
    ``[R, N, ...]`` for every client) resume and continue exactly like the run that wrote
    today's (the private state of the clients that trained)."""
    exp = build_experiment(smoke("fedavg_adapter", 1))
    new, old = tmp_path / "new", tmp_path / "old"
    train(exp, new, show_progress=False)
    fingerprint = exp.run_fingerprint()
    target = lambda meta: checkpoint_target(exp, meta["trained_slots"])  # noqa: E731
    step, state, meta = RoundCheckpointer(new / "checkpoints", fingerprint).restore_latest(target)
    written = {"server": state["server"], "private": every_client(exp, state)}
    if layout == "no replica axis":
        written = jax.tree.map(lambda x: x[0], written)
    RoundCheckpointer(old / "checkpoints", fingerprint).save(step, written, meta)

    more = build_experiment(smoke("fedavg_adapter", 2))
    a = numbers(train(more, new, show_progress=False))
    b = numbers(train(more, old, show_progress=False))
    assert len(a) == len(b) == 2 and a == b
    with pytest.raises(Exception):  # the older layout really differs from today's
        RoundCheckpointer(old / "checkpoints", fingerprint).restore_latest(target)
