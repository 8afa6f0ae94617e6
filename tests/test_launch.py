"""The shell: exact resume, outputs, NaN and checkpoint handling, config errors, every config."""

import dataclasses
import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from feddat_jax.train import loop
from feddat_jax.train.checkpoints import CheckpointMismatchError
from feddat_jax.train.experiment import build_experiment
from feddat_jax.train.metrics import read_jsonl

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(p.name for p in (ROOT / "configs").glob("*.py"))


def smoke_config(tmp_path, **overrides):
    sys.path.insert(0, str(ROOT / "configs"))
    import demo  # noqa: E402  (configs/ is not a package)

    c = demo.get_config("smoke")
    c.model.checkpoint = ""  # random tiny ViLT: this file tests the shell, not the backbone
    c.model.size = "tiny"
    c.rounds, c.eval_every, c.checkpoint_every, c.tensorboard = 3, 1, 1, True
    c.data.cache_dir = str(tmp_path / "cache")
    for k, v in overrides.items():
        c[k] = v
    return c


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return build_experiment(smoke_config(tmp_path_factory.mktemp("data")))


def with_rounds(exp, rounds):
    cfg = exp.config.copy_and_resolve_references()
    cfg.rounds = rounds
    return dataclasses.replace(exp, config=cfg)


def numbers(history):
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in history]


def final_state(exp, workdir):
    from feddat_jax.train.checkpoint_layout import checkpoint_target
    from feddat_jax.train.checkpoints import RoundCheckpointer

    ckpt = RoundCheckpointer(Path(workdir) / "checkpoints", exp.run_fingerprint())
    return ckpt.restore_latest(lambda meta: checkpoint_target(exp, meta["trained_slots"]))


def trained_clients(state, replica: int = 0) -> dict[int, list[np.ndarray]]:
    """A checkpoint's private state of each client that trained: id -> its leaves (one
    replica's)."""
    ids = np.asarray(state["private"]["ids"])[replica]
    leaves = [np.asarray(x)[replica] for x in jax.tree.leaves(state["private"]["state"])]
    return {int(k): [x[t] for x in leaves] for t, k in enumerate(ids) if k >= 0}


def assert_bitwise_equal(a, b):
    la = jax.tree.leaves(jax.tree.map(np.asarray, a[1]["private"])) + jax.tree.leaves(
        jax.tree.map(np.asarray, a[1]["server"].shared)
    )
    lb = jax.tree.leaves(jax.tree.map(np.asarray, b[1]["private"])) + jax.tree.leaves(
        jax.tree.map(np.asarray, b[1]["server"].shared)
    )
    assert len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb))


def test_resume_and_corrupt_checkpoint_equal_uninterrupted_run(experiment, tmp_path, capsys):
    full = loop.train(with_rounds(experiment, 3), tmp_path / "full", show_progress=False)
    part = tmp_path / "part"
    loop.train(with_rounds(experiment, 2), part, show_progress=False)
    resumed = loop.train(with_rounds(experiment, 3), part, show_progress=False)
    assert numbers(resumed) == numbers(full)
    assert_bitwise_equal(final_state(experiment, tmp_path / "full"), final_state(experiment, part))

    # a truncated newest checkpoint is refused and the previous good one is used
    for f in glob.glob(str(part / "checkpoints" / "3" / "**"), recursive=True):
        if os.path.isfile(f):
            Path(f).write_bytes(Path(f).read_bytes()[:7])
    capsys.readouterr()
    again = loop.train(with_rounds(experiment, 3), part, show_progress=False)
    assert numbers(again) == numbers(full)
    warnings = capsys.readouterr().err.strip().splitlines()  # one line, no orbax tracebacks
    assert len(warnings) == 1 and warnings[0].startswith(
        f"warning: the checkpoint of round 3 in {part / 'checkpoints'} is unreadable"
    )
    assert (part / "checkpoints_unreadable" / "3").is_dir()  # moved aside, not deleted
    assert final_state(experiment, part)[0] == 3  # and the round saved again

    # outputs: metrics files parse, plots exist
    rows = read_jsonl(tmp_path / "full" / "metrics.jsonl")
    assert [r["round"] for r in rows] == [1, 2, 3]
    assert "score/mean/dat" in rows[-1] and "comm/bytes_cumulative" in rows[-1]
    assert (tmp_path / "full" / "metrics.csv").read_text().startswith("round,")
    assert list((tmp_path / "full" / "tensorboard").glob("events.*"))


def test_segmented_run_equals_one_call_run_and_resumes_across_segment_sizes(experiment, tmp_path):
    def segmented(exp, rounds, segment_steps):
        exp = with_rounds(exp, rounds)
        return dataclasses.replace(
            exp, segmented_round=exp.segmented_round.with_segment_steps(segment_steps)
        )

    assert experiment.train_store.max_steps(experiment.config.batch_size) == 3  # K = 2: 2 + 1
    full = loop.train(with_rounds(experiment, 2), tmp_path / "full", show_progress=False)
    part = tmp_path / "part"
    loop.train(segmented(experiment, 1, 2), part, show_progress=False)
    resumed = loop.train(segmented(experiment, 2, 1), part, show_progress=False)
    assert len(resumed) == len(full) == 2
    for got, want in zip(numbers(resumed), numbers(full)):
        assert got.keys() == want.keys()
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
            else:
                assert got[key] == value, key


def test_evaluation_in_chunks_of_clients_equals_one_call(experiment, tmp_path):
    assert len(experiment.client_names) == 4  # chunks of 3: 3 + 1 (padded)
    whole = loop.train(with_rounds(experiment, 1), tmp_path / "whole", show_progress=False)
    cfg = with_rounds(experiment, 1).config
    cfg.eval_clients_per_call = 3
    chunked = loop.train(
        dataclasses.replace(experiment, config=cfg), tmp_path / "chunked", show_progress=False
    )
    scores = {k: v for k, v in whole[-1].items() if k.startswith("score/")}
    assert len(scores) == 3 * 4 + 3 and scores.keys() <= chunked[-1].keys()  # + 3 means
    for key, value in scores.items():
        assert chunked[-1][key] == pytest.approx(value, abs=1e-4), key


def test_stored_benchmark_read_on_demand_trains_like_the_decoded_one(experiment, tmp_path):
    from feddat_jax.data import source, tfds_store

    store = tfds_store.write_benchmark(experiment.benchmark, tmp_path / "store")
    cfg = with_rounds(experiment, 1).config
    cfg.data.source, cfg.data.tfds_dir, cfg.data.decoded_cache_mb = "tfds", str(store), 1
    stored = build_experiment(cfg)
    assert isinstance(stored.train_store, source.RecordStore)
    got = loop.train(stored, tmp_path / "stored", show_progress=False)
    want = loop.train(with_rounds(experiment, 1), tmp_path / "decoded", show_progress=False)
    assert numbers(got) == numbers(want)


class BrokenFirstClient:
    """A row store whose client 0 has NaN targets (its data is broken); otherwise the store."""

    def __init__(self, store):
        self.store, self.first = store, int(store.offsets[1])

    def __getattr__(self, name):
        return getattr(self.store, name)

    def read(self, rows):
        out = dict(self.store.read(rows))
        rows = np.asarray(rows)
        broken = (rows >= 0) & (rows < self.first)
        targets = out["targets"]
        extra = (1,) * (targets.ndim - rows.ndim)
        out["targets"] = np.where(broken.reshape(broken.shape + extra), np.nan, targets)
        return out


def test_nan_loss_stops_naming_round_and_client_and_keeps_last_checkpoint(experiment, tmp_path):
    loop.train(with_rounds(experiment, 1), tmp_path, show_progress=False)
    broken = dataclasses.replace(
        with_rounds(experiment, 2), train_store=BrokenFirstClient(experiment.train_store)
    )
    # rounds are numbered from 1, as in the metrics: the broken round is the second
    with pytest.raises(loop.NonFiniteLossError, match=r"round 2: .*\['clean_00'\]"):
        loop.train(broken, tmp_path, show_progress=False)
    round_restored, _, meta = final_state(experiment, tmp_path)
    assert round_restored == 1 and len(meta["history"]) == 1


def test_checkpoint_of_another_config_or_data_is_refused(experiment, tmp_path):
    loop.train(with_rounds(experiment, 1), tmp_path, show_progress=False)
    other = with_rounds(experiment, 1)
    other.config.seed = 99
    with pytest.raises(CheckpointMismatchError, match="different config or data"):
        loop.train(other, tmp_path, show_progress=False)
    # the same config on data that another generator version built (say, after an update)
    manifest = {**experiment.benchmark.manifest, "generator_source": "edited"}
    rebuilt = dataclasses.replace(experiment.benchmark, manifest=manifest)
    with pytest.raises(CheckpointMismatchError, match="different config or data"):
        loop.train(
            dataclasses.replace(with_rounds(experiment, 1), benchmark=rebuilt),
            tmp_path,
            show_progress=False,
        )


def test_bad_config_values_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="unknown method 'fedsgd'"):
        build_experiment(smoke_config(tmp_path, method="fedsgd"))
    cfg = smoke_config(tmp_path)
    cfg.model.checkpoint = str(tmp_path / "no_such_checkpoint")
    with pytest.raises(Exception, match="no_such_checkpoint"):
        build_experiment(cfg)


def _launch(*args, timeout=120):
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "flag,match",
    [
        ("--config.no_such_key=1", "no_such_key"),
        ("--config.rounds=abc", "rounds"),
    ],
)
def test_launch_rejects_unknown_keys_and_wrong_types(flag, match, tmp_path):
    out = _launch("--config", "configs/demo.py:smoke", "--workdir", str(tmp_path), flag)
    assert out.returncode != 0 and match in out.stderr


def test_launch_rejects_unwritable_workdir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = _launch("--config", "configs/demo.py:smoke", "--workdir", str(blocker / "sub"))
    assert out.returncode != 0 and "not writable" in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_loads_and_its_smoke_variant_runs_one_round(name, tmp_path):
    out = _launch(
        "--config",
        f"configs/{name}:smoke",
        "--workdir",
        str(tmp_path / "run"),
        f"--config.data.cache_dir={tmp_path / 'cache'}"
        if name != "pretrain_tiny_vilt.py"
        else "--config.log_every=2",
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    if name != "pretrain_tiny_vilt.py":
        results = json.loads((tmp_path / "run" / "results.json").read_text())
        assert all(r["round"] == 1 for r in results.values())


def test_resume_keeps_a_stateful_server_optimizer(tmp_path):
    """FedAdam's server moments are part of the resumed state (FedAvg's server has none)."""
    exp = build_experiment(smoke_config(tmp_path, method="fedadam_adapter", tensorboard=False))
    full = loop.train(with_rounds(exp, 2), tmp_path / "full", show_progress=False)
    loop.train(with_rounds(exp, 1), tmp_path / "part", show_progress=False)
    resumed = loop.train(with_rounds(exp, 2), tmp_path / "part", show_progress=False)
    assert numbers(resumed) == numbers(full)
    a, b = final_state(exp, tmp_path / "full"), final_state(exp, tmp_path / "part")
    moments_a = jax.tree.leaves(a[1]["server"].opt_state)
    assert moments_a and any(np.any(np.asarray(m) != 0) for m in moments_a)
    assert all(
        np.array_equal(x, y) for x, y in zip(moments_a, jax.tree.leaves(b[1]["server"].opt_state))
    )
    assert_bitwise_equal(a, b)


def record_round_batches(monkeypatch) -> dict[int, np.ndarray]:
    """The input ids of every round's batches as the loop reads them, by round index."""
    from feddat_jax.data.pipeline import cohort_batches
    from feddat_jax.train import cohorts  # the loop's cohort planner reads the batches

    built = {}

    def spy(*args, **kwargs):
        batch = cohort_batches(*args, **kwargs)
        built[kwargs["round_index"]] = np.asarray(batch["input_ids"])
        return batch

    monkeypatch.setattr(cohorts, "cohort_batches", spy)
    return built


def test_the_loop_builds_each_round_with_its_round_index_and_reshuffles(
    experiment, tmp_path, monkeypatch
):
    """Data order is a function of (seed, round): the loop must pass the real round, and by
    default every round sees a new order (faithful.same_order_each_round reproduces the
    official code's fixed order)."""
    from feddat_jax.data.pipeline import cohort_batches

    built = record_round_batches(monkeypatch)
    loop.train(with_rounds(experiment, 3), tmp_path, show_progress=False)
    assert sorted(built) == [0, 1, 2]
    assert not np.array_equal(built[0], built[1]) and not np.array_equal(built[1], built[2])
    store, ids = experiment.train_store, np.arange(len(experiment.client_names))
    default = [cohort_batches(store, ids, 4, seed=0, round_index=r)["input_ids"] for r in (0, 1)]
    assert not np.array_equal(*default)
    fixed = [
        cohort_batches(store, ids, 4, seed=0, round_index=r, same_order_each_round=True)
        for r in (0, 1)
    ]
    assert np.array_equal(fixed[0]["input_ids"], fixed[1]["input_ids"])


def test_capped_rounds_train_the_first_steps_of_each_rounds_shuffle(
    experiment, tmp_path, monkeypatch
):
    """optim.max_local_steps=K: every round is K steps on the first K batches of that round's
    epoch order (a client with fewer batches runs its whole epoch)."""
    from feddat_jax.data.pipeline import cohort_batches

    built = record_round_batches(monkeypatch)
    cfg = experiment.config.copy_and_resolve_references()
    cfg.rounds, cfg.optim.max_local_steps, cfg.tensorboard = 2, 1, False
    exp = dataclasses.replace(experiment, config=cfg)
    history = loop.train(exp, tmp_path, show_progress=False)
    store, ids = exp.train_store, np.arange(len(exp.client_names))
    for r in (0, 1):
        epoch = cohort_batches(store, ids, cfg.batch_size, seed=cfg.seed, round_index=r)
        assert np.asarray(epoch["input_ids"]).shape[1] > 1  # the cap binds
        np.testing.assert_array_equal(built[r], np.asarray(epoch["input_ids"])[:, :1])
    steps = [v for k, v in history[-1].items() if k.startswith("train/") and k.endswith("/steps")]
    assert steps and all(s == 1 for s in steps)
