"""``launch.py --config.engine=flower``: a config on Flower's simulation engine, through the CLI.

The same command as a simulated run with one more flag gives the same workdir (metrics.jsonl,
checkpoints, results.json, plots) and the same numbers as ``train.method_run.run_method``
(issue 34).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_cli import SMOKE, launch, one_error_line

from feddat_jax.flower import runconfig
from feddat_jax.train.method_run import run_method

ROUNDS = 2


def test_a_bad_engine_is_one_line():
    out = launch(*SMOKE, "--config.engine=ray", "--workdir", "/tmp/never_written")
    assert one_error_line(out).startswith(
        "error: 'ray' is not a valid engine (config.engine); choose one of ('simulation', 'flower')"
    )


@pytest.mark.slow
def test_engine_flower_writes_the_simulated_runs_outputs_and_numbers(tmp_path):
    pytest.importorskip("flwr")
    workdir = tmp_path / "flower"
    out = launch(
        *SMOKE,
        "--config.engine=flower",
        f"--config.rounds={ROUNDS}",
        "--config.compare_methods=('feddat',)",
        "--config.references=()",
        "--workdir",
        str(workdir),
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Flower's simulation engine (4 nodes)" in out.stdout
    for name in ("results.json", "results.txt", "scores.png", "communication.png", "config.json"):
        assert (workdir / name).is_file(), name
    assert json.loads((workdir / "config.json").read_text())["engine"] == "flower"
    assert (workdir / "feddat" / "checkpoints").is_dir()
    assert any((workdir / ".nodes").rglob("round_2.npz"))  # private state stayed with the nodes
    rows = [json.loads(line) for line in (workdir / "feddat" / "metrics.jsonl").open()]
    assert len(rows) == ROUNDS and all("flower/bytes_up" in row for row in rows)

    config = runconfig.load(SMOKE[1], {"rounds": ROUNDS})
    simulated = run_method(config, tmp_path / "sim").history
    for a, b in zip(simulated, rows, strict=True):
        a = {k: v for k, v in a.items() if not k.startswith("time/")}
        for key, value in a.items():
            if isinstance(value, str):
                assert b[key] == value, key
            else:
                np.testing.assert_allclose(b[key], value, atol=1e-5, rtol=0, err_msg=key)
