"""Ctrl-C / SIGTERM: the run stops after a whole round, saves it, and the same command resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
from smoke_launch import smoke_command
from test_launch import ROOT, experiment, numbers, with_rounds  # noqa: F401  (a fixture)

from feddat_jax.errors import RunInterrupted
from feddat_jax.train import loop
from feddat_jax.train.interrupt import StopRequest
from feddat_jax.train.metrics import read_jsonl


class StopBeforeRound(StopRequest):
    """Asks to stop when the loop is about to run round ``k`` (numbered from 1)."""

    def __init__(self, k: int):
        super().__init__()
        self.calls_left = k - 1

    def requested(self) -> bool:
        self.calls_left -= 1
        return self.calls_left < 0


def steps(workdir) -> list[int]:
    return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def test_a_stop_saves_the_last_finished_round_and_the_rerun_resumes(experiment, tmp_path, capsys):  # noqa: F811
    exp = with_rounds(experiment, 3)
    exp.config.checkpoint_every = 2  # round 1 is not saved on schedule: the stop must save it
    full = loop.train(exp, tmp_path / "full", show_progress=False)
    part = tmp_path / "part"
    with pytest.raises(RunInterrupted) as stop:
        loop.train(exp, part, show_progress=False, stop=StopBeforeRound(2))
    assert (stop.value.method, stop.value.rounds_done) == (exp.config.method, 1)
    assert steps(part) == [1]
    assert [r["round"] for r in read_jsonl(part / "metrics.jsonl")] == [1]
    capsys.readouterr()

    resumed = loop.train(exp, part, show_progress=False)
    assert f"resumed {exp.config.method} at round 2 of 3 (checkpoint of round 1)" in (
        capsys.readouterr().out
    )
    assert numbers(resumed) == numbers(full)  # nothing lost, nothing done twice
    assert [r["round"] for r in read_jsonl(part / "metrics.jsonl")] == [1, 2, 3]

    again = loop.train(exp, part, show_progress=False)
    assert f"{exp.config.method} already complete (3 rounds)" in capsys.readouterr().out
    assert numbers(again) == numbers(full)


def test_the_first_signal_asks_the_second_aborts():
    previous = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # the handler runs between bytecodes of the main thread
        assert stop.requested()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.slow
def test_ctrl_c_in_a_launch_exits_130_and_the_same_command_resumes(tmp_path):
    workdir = tmp_path / "run"
    rounds = 40  # enough that the signal lands mid-run even when every program is compiled
    command = smoke_command(
        workdir,
        "--config.compare_methods=('fedavg_adapter',)",
        f"--config.rounds={rounds}",
        f"--config.checkpoint_every={rounds}",
        f"--config.data.cache_dir={tmp_path / 'cache'}",
    )
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    metrics = workdir / "fedavg_adapter" / "metrics.jsonl"
    deadline = time.time() + 600
    while not (metrics.exists() and metrics.read_text().strip()) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    done = int(last.split("interrupted after round ")[1].split(" ")[0])
    assert last == (
        f"interrupted after round {done} (fedavg_adapter); rerun the same command to resume"
    )
    assert 1 <= done < rounds
    assert steps(workdir / "fedavg_adapter") == [done]  # saved although checkpoint_every=rounds
    assert not (workdir / "feddat.lock").exists()

    out = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resumed fedavg_adapter at round {done + 1} of {rounds}" in out.stdout
    assert [r["round"] for r in read_jsonl(metrics)] == list(range(1, rounds + 1))
    assert json.loads((workdir / "results.json").read_text())["fedavg_adapter"]["round"] == rounds


def test_a_stop_after_the_methods_skips_the_reference_rows_and_the_rerun_adds_them(
    tmp_path, monkeypatch
):
    from test_launch import smoke_config

    from feddat_jax.cli import invocation as run_mod

    config = smoke_config(tmp_path)
    config.rounds, config.tensorboard = 1, False
    config.compare_methods, config.references = ("fedavg_adapter",), ("blind",)
    stop, run_method = StopRequest(), run_mod.run_method

    def train_then_signal(*args, **kwargs):
        method_run = run_method(*args, **kwargs)
        stop.request()  # as if Ctrl-C came during the method's last round
        return method_run

    monkeypatch.setattr(run_mod, "run_method", train_then_signal)
    workdir = tmp_path / "run"
    with pytest.raises(RunInterrupted) as stopped:
        run_mod.launch(config, workdir, stop)
    assert stopped.value.method == "blind"
    assert not (workdir / "blind").exists() and not (workdir / "results.json").exists()
    monkeypatch.undo()
    run_mod.launch(config, workdir, StopRequest())
    assert set(json.loads((workdir / "results.json").read_text())) == {"fedavg_adapter", "blind"}
