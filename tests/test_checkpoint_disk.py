"""A checkpoint the disk refuses (full, read-only) is ONE error line naming the folder and the last
good checkpoint; the earlier checkpoints stay, the partial write goes, and nothing is printed."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from smoke_launch import ROOT, smoke_command

from feddat_jax.errors import CheckpointError
from feddat_jax.train.checkpoints import RoundCheckpointer

ENOSPC = os.strerror(errno.ENOSPC)


def state(r: int) -> dict:
    return {"a": jnp.full((64,), float(r)), "b": jnp.arange(8) * r}


def three_rounds(folder) -> RoundCheckpointer:
    ckpt = RoundCheckpointer(folder, "fp", max_to_keep=3)
    for r in (1, 2, 3):
        ckpt.save(r, state(r), {"history": [r]})
    return ckpt


def expected_line(folder, r: int, problem: str) -> str:
    return (
        f"cannot write the checkpoint of round {r} ({problem}) ({folder}); free space there or "
        f"make it writable, then rerun the same command: it resumes from round {r - 1} "
        f"({folder / str(r - 1)}), the last good one"
    )


def assert_rounds_1_to_3_intact(folder) -> None:
    assert sorted(os.listdir(folder)) == ["1", "2", "3"]  # no partial folder left behind
    step, restored, meta = RoundCheckpointer(folder, "fp").restore_latest(state(0))
    assert step == 3 and meta["history"] == [3]
    np.testing.assert_array_equal(restored["a"], np.full((64,), 3.0))


def test_a_full_disk_is_one_error_and_loses_nothing(tmp_path, monkeypatch, capfd):
    folder = tmp_path / "checkpoints"
    ckpt = three_rounds(folder)

    def full_disk(self, item, directory):
        raise OSError(errno.ENOSPC, ENOSPC, str(directory / "meta"))

    monkeypatch.setattr(ocp.JsonCheckpointHandler, "_save_fn", full_disk)
    capfd.readouterr()
    with pytest.raises(CheckpointError) as err:
        ckpt.save(4, state(4), {"history": [4]})
    assert str(err.value) == expected_line(folder, 4, ENOSPC)
    assert capfd.readouterr().err == ""  # no orbax traceback on stderr
    monkeypatch.undo()
    assert_rounds_1_to_3_intact(folder)  # max_to_keep deleted nothing for the failed round


@contextlib.contextmanager
def small_filesystem(folder, size: str = "1m"):
    """A tmpfs of ``size`` at ``folder`` (root only: a real full or read-only disk)."""
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)]
    if subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def test_a_read_only_folder_is_one_error_and_loses_nothing(tmp_path, capfd):
    root = os.geteuid() == 0  # root ignores permissions: a tmpfs remounted read-only instead
    if not root:
        (tmp_path / "disk").mkdir()
    with small_filesystem(tmp_path / "disk") if root else contextlib.nullcontext(tmp_path / "disk") as disk:
        folder = disk / "checkpoints"
        ckpt = three_rounds(folder)
        if root:
            subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        else:
            folder.chmod(0o555)
        capfd.readouterr()
        with pytest.raises(CheckpointError) as err:
            ckpt.save(4, state(4), {})
        problem = os.strerror(errno.EROFS if root else errno.EACCES)
        assert str(err.value) == expected_line(folder, 4, problem)
        assert capfd.readouterr().err == ""
        assert_rounds_1_to_3_intact(folder)
        if not root:
            folder.chmod(0o755)  # so that pytest can remove it


def test_a_really_full_disk_through_orbax_threads(tmp_path, capfd):
    """The arrays are written by tensorstore on orbax's threads, which log a traceback each."""
    with small_filesystem(tmp_path / "disk", "300k") as mount:
        folder = mount / "checkpoints"
        ckpt = three_rounds(folder)
        capfd.readouterr()
        with pytest.raises(CheckpointError) as err:
            ckpt.save(4, {"a": jnp.ones(64), "b": jnp.asarray(np.random.rand(100_000))}, {})
        assert str(err.value) == expected_line(folder, 4, ENOSPC)
        assert capfd.readouterr().err == ""
        assert_rounds_1_to_3_intact(folder)


# launch.py with the meta writer failing from round 2 on: the user's view, then the resume
FULL_FROM_ROUND_2 = """
import errno, os, runpy, sys
import orbax.checkpoint as ocp
save = ocp.JsonCheckpointHandler._save_fn
def full_disk(self, item, directory):
    if item.get("round", 0) >= 2:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return save(self, item, directory)
ocp.JsonCheckpointHandler._save_fn = full_disk
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.slow  # two launches of the smoke config (about a minute on 2 CPU cores)
def test_launch_on_a_full_disk_prints_one_line_exits_2_and_resumes(tmp_path):
    command = smoke_command(tmp_path / "run", "--config.rounds=2", cache=tmp_path / "cache")
    full = subprocess.run(
        [sys.executable, "-c", FULL_FROM_ROUND_2, *command[1:]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    folder = tmp_path / "run" / "feddat" / "checkpoints"
    assert full.returncode == 2, full.stderr[-3000:]
    # the progress bar of round 1, then ONE line: no traceback, no orbax log
    lines = full.stderr.strip().splitlines()
    assert lines[-1] == "error: " + expected_line(folder, 2, ENOSPC), full.stderr[-3000:]
    assert all(line.startswith("feddat: ") for line in lines[:-1]), full.stderr[-3000:]
    assert sorted(os.listdir(folder)) == ["1"]
    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(os.listdir(folder)) == ["1", "2"]
