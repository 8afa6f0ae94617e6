"""Every run has the replica axis (an unswept run is R = 1): the same numbers as before it did,
and the checkpoints written before it still resume."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from feddat_jax.train.checkpoints import RoundCheckpointer
from feddat_jax.train.config_base import config_from_file
from feddat_jax.train.experiment import build_experiment
from feddat_jax.train.loop import train
from feddat_jax.train.runs import run_method

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
        assert got == want, method  # exact: R = 1 runs the one-federation program itself


@pytest.mark.slow
def test_checkpoint_without_replica_axis_resumes(tmp_path):
    """A checkpoint in the old layout (server leaves unstacked, private [N, ...]) resumes and
    continues exactly like the run that wrote the new layout."""
    exp = build_experiment(smoke("fedavg_adapter", 1))
    new, old = tmp_path / "new", tmp_path / "old"
    train(exp, new, show_progress=False)
    fingerprint = exp.run_fingerprint()
    target = {"server": exp.server, "private": exp.private_N}
    step, state, meta = RoundCheckpointer(new / "checkpoints", fingerprint).restore_latest(target)
    unstacked = {
        "server": jax.tree.map(lambda x: x[0], state["server"]),
        "private": jax.tree.map(lambda x: np.asarray(x)[0], state["private"]),
    }
    RoundCheckpointer(old / "checkpoints", fingerprint).save(step, unstacked, meta)

    more = build_experiment(smoke("fedavg_adapter", 2))
    a = numbers(train(more, new, show_progress=False))
    b = numbers(train(more, old, show_progress=False))
    assert len(a) == len(b) == 2 and a == b
    with pytest.raises(Exception):  # the new layout really differs from the old one
        RoundCheckpointer(old / "checkpoints", fingerprint).restore_latest(target)
