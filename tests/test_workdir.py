"""The workdir: one live run at a time, never another run's files, and a checkpoint fingerprint
that covers the state's shapes. (The runs are the 1-round smoke config on a random tiny ViLT.)"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from test_launch import ROOT, smoke_config

from feddat_jax.cli import workdir as workdir_lib
from feddat_jax.cli.invocation import launch
from feddat_jax.cli.workdir import WorkdirLock
from feddat_jax.errors import CheckpointMismatchError, WorkdirError
from feddat_jax.train import loop
from feddat_jax.train.checkpoints import RoundCheckpointer, tree_fingerprint
from feddat_jax.train.experiment import build_experiment
from feddat_jax.train.interrupt import StopRequest


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder``: its bytes and mtime (ns)."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def one_round_config(tmp_path, **overrides):
    c = smoke_config(tmp_path, **overrides)
    c.rounds, c.tensorboard, c.compare_methods = 1, False, ("fedavg_adapter",)
    return c


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 1-round run (adapter reduction 8) and its files."""
    root = tmp_path_factory.mktemp("finished")
    config = one_round_config(root)
    config.peft.adapter_reduction = 8
    launch(config, root / "run", StopRequest())
    return root, config


# ------------------------------------------------------------------------------ item 3
def test_a_workdir_of_another_config_is_refused_before_anything_is_written(finished_run):
    root, config = finished_run
    workdir = root / "run"
    before = snapshot(workdir)
    assert {"config.json", "results.json", "fedavg_adapter/metrics.jsonl"} <= set(before)
    other = config.copy_and_resolve_references()
    other.peft.adapter_reduction = 4  # another adapter size: other shapes
    with pytest.raises(WorkdirError, match=r"peft\.adapter_reduction: 8 -> 4"):
        launch(other, workdir, StopRequest())
    assert snapshot(workdir) == before  # nothing overwritten, deleted or added
    assert not (workdir / workdir_lib.LOCK_NAME).exists()


def test_a_checkpoint_of_another_state_layout_is_refused_without_touching_it(finished_run):
    """Below the config check: the checkpoint itself names its state's shapes."""
    root, config = finished_run
    method_dir = root / "run" / "fedavg_adapter"
    before = snapshot(method_dir)
    other = config.copy_and_resolve_references()
    other.method, other.peft.adapter_reduction = "fedavg_adapter", 4
    with pytest.raises(CheckpointMismatchError, match="different config"):
        loop.train(build_experiment(other), method_dir, show_progress=False)
    assert snapshot(method_dir) == before


def test_a_checkpoint_of_another_state_layout_is_refused_by_the_checkpointer(tmp_path):
    """The same config, other shapes (e.g. a benchmark rebuilt with more answers): refused, not
    mistaken for a damaged checkpoint and silently replaced."""
    ckpt = RoundCheckpointer(tmp_path / "checkpoints", "same-config")
    ckpt.save(1, {"head": np.zeros((4, 16), np.float32)}, {"history": []})
    before = snapshot(tmp_path)
    target = {"head": np.zeros((4, 8), np.float32)}
    with pytest.raises(CheckpointMismatchError, match="another state layout"):
        RoundCheckpointer(tmp_path / "checkpoints", "same-config").restore_latest(target)
    assert snapshot(tmp_path) == before
    step, state, _ = RoundCheckpointer(tmp_path / "checkpoints", "same-config").restore_latest(
        {"head": np.ones((4, 16), np.float32)}
    )
    assert step == 1 and not np.any(state["head"])


def test_tree_fingerprint_covers_structure_shapes_and_dtypes_not_values():
    tree = {"a": np.zeros((2, 3), np.float32), "b": [np.ones(4, np.int32)]}
    same_layout = {"a": np.ones((2, 3), np.float32), "b": [np.zeros(4, np.int32)]}
    assert tree_fingerprint(tree) == tree_fingerprint(same_layout)
    for changed in (
        {"a": np.zeros((3, 2), np.float32), "b": [np.ones(4, np.int32)]},
        {"a": np.zeros((2, 3), np.float64), "b": [np.ones(4, np.int32)]},
        {"a": np.zeros((2, 3), np.float32), "c": [np.ones(4, np.int32)]},
        {"a": np.zeros((2, 3), np.float32), "b": [np.ones(4, np.int32), np.ones(1)]},
    ):
        assert tree_fingerprint(changed) != tree_fingerprint(tree)
    key = {"rng": jax.random.key(0)}  # a typed key and its raw data are stored alike
    assert tree_fingerprint(key) == tree_fingerprint({"rng": jax.random.key_data(key["rng"])})


def test_foreign_files_without_a_config_are_refused(tmp_path):
    (tmp_path / "results.json").write_text("{}")
    config = one_round_config(tmp_path)
    with pytest.raises(WorkdirError, match=r"holds run files \(results\.json\) but no config"):
        workdir_lib.check_ownership(tmp_path, config)
    assert (tmp_path / "results.json").read_text() == "{}"


def test_the_same_config_with_more_rounds_may_resume(finished_run):
    root, config = finished_run
    more = config.copy_and_resolve_references()
    more.rounds = 5  # a field that does not change the numbers
    workdir_lib.check_ownership(root / "run", more)


def test_how_the_data_is_read_is_not_part_of_the_numbers(finished_run):
    """Fields of a block (``data.read_threads`` …) leave the claim and the fingerprint alone;
    the block's other fields still count."""
    from feddat_jax.train.config_base import fingerprint_json

    root, config = finished_run
    other = config.copy_and_resolve_references()
    other.data.read_threads, other.data.decoded_cache_mb = 2, 64
    other.data.cache_dir = str(root / "elsewhere")
    workdir_lib.check_ownership(root / "run", other)
    assert fingerprint_json(other) == fingerprint_json(config)
    other.data.seed = 1
    with pytest.raises(WorkdirError, match=r"data\.seed: 0 -> 1"):
        workdir_lib.check_ownership(root / "run", other)
    assert fingerprint_json(other) != fingerprint_json(config)


def test_a_sweep_claims_the_workdir_and_fingerprints_with_its_values(finished_run):
    """An unset sweep leaves the claim alone (the finished run is unswept); swept values, and
    so the replica count R, are part of the workdir's claim and of the checkpoint fingerprint."""
    from feddat_jax.train.checkpoints import config_fingerprint
    from feddat_jax.train.config_base import fingerprint_json

    root, config = finished_run
    assert "sweep" not in workdir_lib.numeric_config(workdir_lib.config_dict(config))
    swept = config.copy_and_resolve_references()
    swept.sweep.seed = (0, 1)
    with pytest.raises(WorkdirError, match=r"sweep\.seed: None -> \[0, 1\]"):
        workdir_lib.check_ownership(root / "run", swept)
    more = swept.copy_and_resolve_references()
    more.sweep.seed = (0, 1, 2)
    prints = {config_fingerprint(fingerprint_json(c)) for c in (config, swept, more)}
    assert len(prints) == 3


def test_a_config_without_outputs_claims_nothing(tmp_path):
    """A run that failed before its first round (say, a bad adapter size found while building)
    leaves only config.json: the corrected command may take the workdir."""
    config = one_round_config(tmp_path)
    workdir_lib.write_config(tmp_path, config)
    other = config.copy_and_resolve_references()
    other.peft.adapter_reduction = 4
    workdir_lib.check_ownership(tmp_path, other)
    (tmp_path / "fedavg_adapter").mkdir()
    (tmp_path / "fedavg_adapter" / "metrics.jsonl").write_text("")
    with pytest.raises(WorkdirError, match="another config"):
        workdir_lib.check_ownership(tmp_path, other)


# ------------------------------------------------------------------------------ item 4
_HOLDER = """
import sys, time
from feddat_jax.cli.workdir import WorkdirLock
lock = WorkdirLock(sys.argv[1]); lock.acquire(); print("locked", flush=True); time.sleep(600)
"""


def test_a_live_run_holds_the_lock_and_a_killed_one_leaves_a_stale_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirError, match=rf"in use by another run \(pid {holder.pid} on"):
            WorkdirLock(tmp_path).acquire()
    finally:
        holder.kill()  # like kill -9: the lock file stays behind
        holder.wait()
    owner = json.loads((tmp_path / workdir_lib.LOCK_NAME).read_text())
    assert owner["pid"] == holder.pid and owner["host"] == socket.gethostname()
    with WorkdirLock(tmp_path) as lock:  # stale: its process is gone, so it is taken over
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not (tmp_path / workdir_lib.LOCK_NAME).exists()


def test_a_second_launch_on_a_locked_workdir_exits_with_one_line(tmp_path):
    with WorkdirLock(tmp_path):
        out = subprocess.run(
            [
                sys.executable,
                str(ROOT / "launch.py"),
                "--config",
                "configs/demo.py:smoke",
                "--workdir",
                str(tmp_path),
                f"--config.data.cache_dir={tmp_path / 'cache'}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith(
        f"error: {tmp_path} is in use by another run (pid {os.getpid()} on host "
        f"{socket.gethostname()}, since "
    )
    assert lines[0].endswith("; wait for it to finish, or use another --workdir")
    assert not (tmp_path / "config.json").exists()


def test_a_run_that_is_still_writing_its_lock_holds_it(tmp_path):
    """Between creating the lock file and writing its owner a run holds only the flock: an empty
    lock file is not a stale one then."""
    fd = os.open(tmp_path / workdir_lib.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(WorkdirError, match="in use by another run .a run that is starting."):
            WorkdirLock(tmp_path).acquire()
    finally:
        os.close(fd)
    with WorkdirLock(tmp_path):  # once that flock is gone, the empty file is stale
        pass


def _foreign_lock(folder: Path, age_s: float) -> Path:
    path = folder / workdir_lib.LOCK_NAME
    owner = {"pid": 1, "host": "another-host", "process_start": "", "since": "2025-01-01T00:00:00"}
    path.write_text(json.dumps(owner))
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def test_a_lock_of_another_host_is_stale_only_without_a_recent_heartbeat(tmp_path):
    _foreign_lock(tmp_path, age_s=10)
    with pytest.raises(WorkdirError, match="pid 1 on host another-host.*heartbeat"):
        WorkdirLock(tmp_path).acquire()
    _foreign_lock(tmp_path, age_s=workdir_lib.STALE_AFTER_S + 60)
    with WorkdirLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["host"] == socket.gethostname()


def test_the_heartbeat_keeps_a_lock_fresh(tmp_path, monkeypatch):
    monkeypatch.setattr(workdir_lib, "HEARTBEAT_S", 0.05)
    with WorkdirLock(tmp_path) as lock:
        then = time.time() - 1000
        os.utime(lock.path, (then, then))
        time.sleep(0.5)
        assert time.time() - lock.path.stat().st_mtime < 100


def test_a_process_start_time_that_differs_means_a_reused_pid(tmp_path):
    path = tmp_path / workdir_lib.LOCK_NAME
    me = dataclasses.asdict(workdir_lib.LockOwner.me())
    path.write_text(json.dumps({**me, "pid": os.getppid(), "process_start": "1"}))
    with WorkdirLock(tmp_path):  # the parent lives, but started at another time: not the holder
        pass
    path.write_text(json.dumps({**me, "pid": os.getppid(), "process_start": ""}))
    with pytest.raises(WorkdirError, match=f"pid {os.getppid()}"):
        WorkdirLock(tmp_path).acquire()


def test_lock_and_prepare_errors_are_workdir_errors(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(WorkdirError, match="not writable"):
        workdir_lib.prepare_workdir(blocker / "sub")
    assert isinstance(WorkdirError("x"), OSError)  # callers that catch OSError still do
