"""Sweeps: R replicas in one program equal R separate runs; resume after a kill; bad sweeps refused.

The runs use the demo's smoke config with a random tiny ViLT. A random backbone depends on the
seed, while a sweep shares ONE frozen backbone (the first replica's), so each separate reference
run gets that backbone; everything else it builds from its own config.
"""

import dataclasses
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from smoke_launch import smoke_command
from test_launch import ROOT, final_state, numbers, smoke_config, trained_clients

from feddat_jax.methods import get_method
from feddat_jax.train import loop, report, stats
from feddat_jax.train.config_base import TINY_VILT, base_config, fingerprint_json
from feddat_jax.train.experiment import build_experiment
from feddat_jax.train.sweep import SweepConfigError, sweep_from_config

TOL = 5e-5  # float reduction order; Adam amplifies it on near-zero gradients (3.7e-5 seen once)


def dp_sweep_config(tmp_path):
    """FedProx + DP-FedAvg with Poisson sampling: every swept field reaches a different part
    (local loss, local schedule, aggregator, server step, sampling and data order, accountant)."""
    c = smoke_config(tmp_path, method="fedprox_adapter")
    c.rounds, c.eval_every, c.checkpoint_every, c.tensorboard = 2, 1, 2, True
    c.clients_per_round = 2
    c.aggregation = "uniform"
    c.dp.enabled, c.dp.sampling = True, "poisson"
    c.sweep.mode = "zip"
    c.sweep.seed = (4, 1)
    c.sweep.optim.learning_rate = (1e-3, 4e-3)
    c.sweep.fedprox_mu = (0.01, 0.3)
    c.sweep.server.hyper.learning_rate = (1.0, 0.5)
    c.sweep.dp.noise_multiplier = (0.3, 1.2)
    c.sweep.dp.clip_norm = (0.05, 2.0)
    return c


def assert_same_state(swept, r: int, single) -> None:
    """Replica r of a sweep's checkpointed state equals the single run's (R = 1) within TOL:
    the same clients hold private state, with the same values, and the same shared params."""
    mine, theirs = trained_clients(swept, r), trained_clients(single)
    assert mine.keys() == theirs.keys()
    for k in mine:
        for a, b in zip(mine[k], theirs[k]):
            np.testing.assert_allclose(a, b, atol=TOL)
    for a, b in zip(leaves(swept["server"].shared), leaves(single["server"].shared)):
        np.testing.assert_allclose(np.asarray(a)[r], b[0], atol=TOL)


def leaves(tree):
    return jax.tree.leaves(jax.tree.map(np.asarray, tree))


def test_sweep_equals_separate_runs(tmp_path):
    config = dp_sweep_config(tmp_path)
    exp = build_experiment(config)
    assert exp.sweep.size == 2 and exp.round_fn._cache_size() == 0
    rows = stats.split_replicas(loop.train(exp, tmp_path / "sweep", show_progress=False))
    assert exp.round_fn._cache_size() <= 1  # one program for both replicas, both rounds
    swept = final_state(exp, tmp_path / "sweep")[1]
    for r in range(exp.sweep.size):
        single = build_experiment(exp.sweep.replica_config(config, r))
        assert not single.sweep.swept and single.sweep.size == 1
        single = dataclasses.replace(single, frozen=exp.frozen)  # the sweep's one backbone
        ref = loop.train(single, tmp_path / f"single{r}", show_progress=False)
        assert len(rows[r]) == len(ref) == 2
        for got, want in zip(numbers(rows[r]), numbers(ref)):
            assert got["replica"] == r and got["seed"] == exp.sweep.seed(config, r)
            assert got["optim.learning_rate"] == exp.sweep.setting(r)["optim.learning_rate"]
            for key, value in want.items():
                if isinstance(value, float):
                    assert got[key] == pytest.approx(value, abs=TOL), (r, key)
                else:
                    assert got[key] == value, (r, key)
        state = final_state(single, tmp_path / f"single{r}")[1]
        assert_same_state(swept, r, state)
    # one TensorBoard run per replica, named by its values
    runs = sorted(p.name for p in (tmp_path / "sweep" / "tensorboard").iterdir())
    assert len(runs) == 2 and runs[1].startswith("1_optim.learning_rate=0.004,fedprox_mu=0.3,")
    assert all(list((tmp_path / "sweep" / "tensorboard" / r).glob("events.*")) for r in runs)
    # the replicas differ: other cohorts (seeds), other privacy budgets (noise multipliers)
    assert [x["cohort"] for x in rows[0]] != [x["cohort"] for x in rows[1]]
    assert rows[0][-1]["dp/epsilon"] > rows[1][-1]["dp/epsilon"]


def assert_replicas_equal_their_runs(config, tmp_path, check_row) -> None:
    """Train ``config``'s sweep once and each replica's config as a run of its own: every
    replica's rows (``check_row(r, row)`` first) and state equal its run's within TOL."""
    exp = build_experiment(config)
    rows = stats.split_replicas(loop.train(exp, tmp_path / "sweep", show_progress=False))
    swept = final_state(exp, tmp_path / "sweep")[1]
    for r in range(exp.sweep.size):
        single = build_experiment(exp.sweep.replica_config(config, r))
        assert not single.sweep.swept
        ref = loop.train(single, tmp_path / f"single{r}", show_progress=False)
        for got, want in zip(numbers(rows[r]), numbers(ref), strict=True):
            check_row(r, got)
            assert {k for k in got if k.startswith("score/")} == {
                k for k in want if k.startswith("score/")
            }
            for key, value in want.items():
                if isinstance(value, float):
                    assert got[key] == pytest.approx(value, abs=TOL), (r, key)
                else:
                    assert got[key] == value, (r, key)
        assert_same_state(swept, r, final_state(single, tmp_path / f"single{r}")[1])


def test_cohort_size_and_client_count_sweep_equals_separate_runs(tmp_path):
    """``sweep.clients_per_round`` zipped with ``sweep.data.num_clients``: the run registers
    the largest count; replica r draws cohorts of its own size from its first N_r clients only,
    padded to the largest cohort with slots that weigh nothing, and evaluates its own sample;
    every replica equals its own run (its cohorts, its evaluation, its clients' private state)."""
    config = smoke_config(tmp_path, method="feddat", references=())
    config.model.checkpoint = TINY_VILT  # a fixed tokenizer: a random model's grows with N
    config.rounds, config.eval_every, config.tensorboard = 2, 2, False
    config.eval_clients = 5  # more than the smaller N: that replica scores all 4 of its own
    config.sweep.mode = "zip"
    config.sweep.clients_per_round = (2, 3)
    config.sweep.data.num_clients = (4, 7)

    def check_row(r: int, row: dict) -> None:
        size, n = (2, 3)[r], (4, 7)[r]
        assert row["clients_per_round"] == size and row["data.num_clients"] == n
        cohort = row["cohort"].split(",")
        assert len(cohort) == size and all(int(name.rsplit("_", 1)[1]) < n for name in cohort)
        if "eval/clients" in row:
            assert row["eval/clients"] == min(5, n)

    assert_replicas_equal_their_runs(config, tmp_path, check_row)


def test_a_client_count_sweep_needs_clients_that_stay_the_same(tmp_path):
    c = smoke_config(tmp_path, references=())
    c.sweep.data.num_clients = (4, 8)
    with pytest.raises(SweepConfigError, match="random-init model's word vocabulary"):
        sweep_from_config(c, get_method(c.method))
    c.model.checkpoint, c.data.partition = TINY_VILT, "iid"
    with pytest.raises(SweepConfigError, match="only the embedded benchmark's own clients"):
        sweep_from_config(c, get_method(c.method))
    c.data.partition, c.references = "natural", ("blind",)
    with pytest.raises(SweepConfigError, match="add --config.references='\\(\\)'"):
        sweep_from_config(c, get_method(c.method))


def test_segmented_sweep_with_chunked_evaluation_equals_the_one_call_sweep(tmp_path):
    """A sweep's epoch in segments of one step and its evaluation one client per call (with the
    per-group and per-question-type breakdowns of every replica) give the one-call sweep's
    numbers; with ``test_sweep_equals_separate_runs``, those of separate runs."""
    config = smoke_config(tmp_path)
    config.rounds, config.eval_every, config.tensorboard = 2, 2, False
    config.sweep.seed = (0, 1)
    config.sweep.optim.learning_rate = (1e-3, 3e-3)
    config.sweep.mode = "zip"
    exp = build_experiment(config)
    assert exp.train_store.max_steps(config.batch_size) >= 2  # several segments
    whole = loop.train(exp, tmp_path / "whole", show_progress=False)
    cfg = config.copy_and_resolve_references()
    cfg.segment_steps, cfg.eval_clients_per_call = 1, 1
    cut = dataclasses.replace(
        exp, config=cfg, segmented_round=exp.segmented_round.with_segment_steps(1)
    )
    parts = loop.train(cut, tmp_path / "parts", show_progress=False)
    assert [(r["round"], r["replica"]) for r in parts] == [(1, 0), (1, 1), (2, 0), (2, 1)]
    last = [r for r in whole if r["round"] == 2]
    assert all("group/shared/dat" in r and any(k.startswith("qtype/") for k in r) for r in last)
    assert last[0]["score/mean/dat"] != last[1]["score/mean/dat"]  # the replicas differ
    for got, want in zip(numbers(parts), numbers(whole)):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-4), key
            else:
                assert got[key] == value, key


def _launch(workdir: Path, cache: Path, *extra: str) -> list[str]:
    return smoke_command(workdir, *extra, cache=cache)


SWEEP_FLAGS = (
    "--config.compare_methods=('feddat',)",
    "--config.rounds=8",
    "--config.eval_every=3",
    "--config.clients_per_round=3",
    "--config.sweep.seed=(0,1)",
    "--config.sweep.feddat.kd_weight=(0.5,0.2)",
    "--config.references=('blind',)",  # computed once: it depends on the data alone
)


def test_sweep_killed_mid_run_resumes_exactly(tmp_path):
    workdir, cache = tmp_path / "killed", tmp_path / "cache"
    proc = subprocess.Popen(
        _launch(workdir, cache, *SWEEP_FLAGS), cwd=ROOT, stderr=subprocess.DEVNULL
    )
    second = workdir / "feddat" / "checkpoints" / "2"
    deadline = time.monotonic() + 600
    while not second.is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rows = [json.loads(x) for x in (workdir / "feddat" / "metrics.jsonl").read_text().splitlines()]
    assert 8 <= len(rows) < 32, "the kill did not land in the middle of the sweep"

    out = subprocess.run(
        _launch(workdir, cache, *SWEEP_FLAGS),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    resumed = [
        json.loads(x) for x in (workdir / "feddat" / "metrics.jsonl").read_text().splitlines()
    ]
    assert [(r["round"], r["replica"]) for r in resumed] == [
        (k, i) for k in range(1, 9) for i in range(4)
    ]

    # the uninterrupted sweep, in this process
    config = smoke_config(tmp_path)
    config.compare_methods, config.method = ("feddat",), "feddat"
    config.rounds, config.eval_every, config.clients_per_round, config.tensorboard = 8, 3, 3, False
    config.sweep.seed, config.sweep.feddat.kd_weight = (0, 1), (0.5, 0.2)
    exp = build_experiment(config)
    full = loop.train(exp, tmp_path / "full", show_progress=False)
    assert numbers(resumed) == numbers(full)
    a = final_state(exp, workdir / "feddat")[1]
    b = final_state(exp, tmp_path / "full")[1]
    for x, y in zip(
        leaves((a["private"], a["server"].shared)), leaves((b["private"], b["server"].shared))
    ):
        np.testing.assert_array_equal(x, y)
    results = json.loads((workdir / "results.json").read_text())
    assert set(results) == {
        "feddat [feddat.kd_weight=0.5]",
        "feddat [feddat.kd_weight=0.2]",
        "blind",
    }
    assert results["blind"]["n"] == 1 and results["blind"]["std"] == 0.0
    setting = results["feddat [feddat.kd_weight=0.2]"]
    assert (setting["seeds"], setting["n"], setting["values"]) == (
        [0, 1],
        2,
        {"feddat.kd_weight": 0.2},
    )
    assert setting["mean"] == pytest.approx(np.mean(setting["scores"]))


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("batch_size", (2, 4), r"config.sweep.batch_size: batch_size cannot be swept"),
        ("rounds", (2, 3), r"config.sweep.rounds: rounds cannot be swept"),
        ("data.num_clients", (10, 100), r"config.sweep.data.num_clients: only the embedded"),
        ("model.image_hw", ((32, 32), (64, 64)), r"config.sweep.model.image_hw: model.image_hw"),
        ("peft.adapter_reduction", (8, 16), r"config.sweep.peft.adapter_reduction: "),
        ("data.family", ("domain", "task"), r"config.sweep.data.family: data.family"),
        ("method", ("feddat", "fedavg_adapter"), r"config.sweep.method: .*compare_methods"),
        ("feddat.temperature", (1.0, 3.0), r"not FedDAT, feddat.temperature has no effect"),
        ("fedprox_mu", (0.1, 0.2), r"no proximal term, fedprox_mu has no effect"),
        ("dp.noise_multiplier", (0.5, 1.0), r"DP is off, dp.noise_multiplier has no effect"),
        ("seed", (0.5, 1), r"config.sweep.seed must hold integer seeds; got 0.5"),
    ],
)
def test_unsweepable_fields_are_refused_naming_them(field, value, match):
    c = base_config()
    c.method = "fedavg_adapter"
    node = c.sweep
    *parents, leaf = field.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(SweepConfigError, match=match) as err:
        sweep_from_config(c, get_method(c.method))
    assert "\n" not in str(err.value)


def test_a_cohort_size_sweep_with_poisson_cohorts_is_refused():
    c = base_config()
    c.dp.enabled, c.dp.sampling = True, "poisson"
    c.sweep.clients_per_round = (5, 10)
    with pytest.raises(SweepConfigError, match="Poisson cohorts have one static size"):
        sweep_from_config(c, get_method(c.method))


def test_a_bad_value_of_one_replica_is_named(tmp_path):
    c = smoke_config(tmp_path)
    c.sweep.optim.learning_rate = (1e-3, -1.0)
    with pytest.raises(SweepConfigError, match=r"'optim.learning_rate': -1.0.*learning_rate must"):
        build_experiment(c)


def test_launch_refuses_a_structural_sweep_in_one_line(tmp_path):
    out = subprocess.run(
        _launch(
            tmp_path / "run", tmp_path / "cache", "--config.sweep.peft.adapter_reduction=(8,16)"
        ),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 2  # a ConfigError at launch.py's error boundary
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert lines[-1].startswith("error: config.sweep.peft.adapter_reduction: ")
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "feddat").exists()  # refused before anything trained


def test_grid_zip_order_and_fingerprint():
    c = base_config()
    assert "sweep" not in json.loads(
        fingerprint_json(c)
    )  # an unswept run's fingerprint is unchanged
    c.sweep.seed, c.sweep.optim.learning_rate = (0, 1, 2), (1e-3, 1e-4)
    grid = sweep_from_config(c)
    assert grid.fields == ("optim.learning_rate", "seed") and grid.size == 6
    assert [grid.seed(c, r) for r in range(6)] == [0, 1, 2, 0, 1, 2]  # seeds vary fastest
    assert grid.group(0) == grid.group(2) != grid.group(3)
    assert json.loads(fingerprint_json(c))["sweep"] == {
        "mode": "grid",
        "seed": [0, 1, 2],
        "optim": {"learning_rate": [1e-3, 1e-4]},
    }
    rc = grid.replica_config(c, 4)
    assert (rc.seed, rc.optim.learning_rate, "sweep" in rc) == (1, 1e-4, False)
    c.sweep.mode = "zip"
    with pytest.raises(SweepConfigError, match="same number of values"):
        sweep_from_config(c)
    c.sweep.optim.learning_rate = (1e-3, 1e-4, 1e-5)
    assert sweep_from_config(c).values == ((1e-3, 0), (1e-4, 1), (1e-5, 2))


BLOCKED = ("ml_collections", "tensorflow_datasets", "tensorflow", "array_record", "dp_accounting")
NO_CLI_STACK = f"""
import runpy, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED + ("tensorboardX",)!r}:
            raise ImportError("the GPU image has no " + name)
sys.meta_path.insert(0, Block())
sys.argv = ["sweep_speed", *sys.argv[1:]]
runpy.run_module("benchmarks.sweep_speed", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_sweep_benchmark_round_part_runs_without_the_cli_stack(tmp_path):
    """The base-size benchmark must run on an image without ml_collections, TFDS, array_record,
    dp_accounting and tensorboardX: its round part, shrunk, runs with those imports blocked."""
    out = tmp_path / "bench.json"
    args = "--parts round --replicas 2 --cohort 2 --steps 1 --rounds 1 --repeats 1 --image 32x32"
    args += " --text-len 8 --answers 4"
    proc = subprocess.run(
        [sys.executable, "-c", NO_CLI_STACK, *args.split(), "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["round"]["rows"]
    assert [r["R"] for r in rows] == [2]


def test_mean_std_and_interval_over_seeds_in_the_report(tmp_path):
    """Two settings x three seeds of metrics rows -> the table, results.json and plots report
    each setting's mean, sample std and 95% t interval (hand-computed)."""
    s = stats.summarize([40.0, 42.0, 47.0])
    assert (s["mean"], s["n"]) == (43.0, 3)
    assert s["std"] == pytest.approx(np.sqrt(13.0))  # ((-3)² + (-1)² + 4²) / (3 - 1)
    assert s["ci95"] == pytest.approx(4.303 * np.sqrt(13.0) / np.sqrt(3.0))
    assert stats.summarize([5.0])["std"] == 0.0 and stats.summarize([5.0])["ci95"] is None
    assert stats.t975(60) == pytest.approx(2.000, abs=2e-3)

    def row(replica, lr, seed, rnd, score):
        return {
            "round": rnd,
            "replica": replica,
            "seed": seed,
            "optim.learning_rate": lr,
            "comm/bytes_cumulative": 1e6 * rnd,
            "score/mean/global": score,
            "score/a/global": score - 1,
            "score/b/global": score + 1,
        }

    scores = {(1e-3, 0): 40.0, (1e-3, 1): 42.0, (1e-3, 2): 47.0, (1e-4, 0): 30, (1e-4, 1): 30}
    scores[(1e-4, 2)] = 33.0
    history = [
        row(i, lr, seed, rnd, v - (2 - rnd))
        for rnd in (1, 2)
        for i, ((lr, seed), v) in enumerate(scores.items())
    ]
    runs = {"fedavg_adapter": history}
    table = report.write_report(runs, ["a", "b"], tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    high = results["fedavg_adapter [optim.learning_rate=0.001]"]
    assert (high["mean"], high["n"], high["seeds"]) == (43.0, 3, [0, 1, 2])
    assert high["std"] == pytest.approx(np.sqrt(13.0)) and high["scores"] == [40.0, 42.0, 47.0]
    assert high["clients"] == {"a": 42.0, "b": 44.0} and high["values"] == {
        "optim.learning_rate": 1e-3
    }
    low = results["fedavg_adapter [optim.learning_rate=0.0001]"]
    assert low["mean"] == pytest.approx(31.0) and low["std"] == pytest.approx(np.sqrt(3.0))
    assert "43.0±3.6" in table and "±9.0" in table and "31.0±1.7" in table
    assert (tmp_path / "scores.png").stat().st_size > 0
