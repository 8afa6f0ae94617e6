"""A Flower deployment on loopback: a SuperLink and 2 SuperNodes as subprocesses, TLS and node
authentication on, the run started with ``flwr run deploy/flower`` (issue 34).

Credentials come from ``deploy/flower/make_credentials.py`` (a CA, the SuperLink's certificate,
three node keys of which two are registered). The deployment's 3 rounds of the demo's smoke
config equal the project's simulated run (metrics and params within 1e-5; the simulation computes
the cohort in chunks of a node's clients, ``NODE_SIZED_CHUNKS``), and a
node whose key the SuperLink does not know is refused. Each ClientApp message runs in a fresh
process (Flower's isolation), so the nodes share a persistent JAX compilation cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

pytest.importorskip("flwr")

from test_flower import TOL, _numbers, _state  # noqa: E402

from feddat_jax.flower import runconfig  # noqa: E402
from feddat_jax.train.method_run import run_method  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPEC, ROUNDS = "configs/demo.py:smoke", 3
OVERRIDES = {"rounds": ROUNDS, "eval_every": 2}  # evaluations after rounds 2 and 3
# each node vmaps over its 2 clients (0-1, 2-3); the reference simulation computes the cohort in
# the same chunks of 2, so both reduce floats in one order (all 4 in one vmap: one shared weight
# in 2,048 was 1.2e-5 off)
NODE_SIZED_CHUNKS = {"chunk_size": 2}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    """The processes of one loopback federation, each with its own FLWR_HOME and log."""

    def __init__(self, root: Path):
        self.root, self.creds = root, root / "creds"
        self.link_port = _port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),  # the apps import feddat_jax from this checkout
            "JAX_COMPILATION_CACHE_DIR": str(root / "jax_cache"),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        }
        cli_home = root / "cli_home"
        cli_home.mkdir()
        (cli_home / "config.toml").write_text(
            '[superlink]\ndefault = "loop"\n\n[superlink.loop]\n'
            f'address = "127.0.0.1:{self.link_port}"\n'
            f'root-certificates = "{self.creds / "ca.crt"}"\n'
        )
        self.cli_env = {**self.env, "FLWR_HOME": str(cli_home)}

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        home = self.root / f"home_{name}"
        home.mkdir(exist_ok=True)
        log = open(self.root / f"{name}.log", "wb")
        # a session of its own: killing it kills the process and its app processes, as when
        # the machine dies
        proc = subprocess.Popen(
            args, env={**self.env, "FLWR_HOME": str(home)}, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def superlink(self) -> None:
        c = self.creds
        self.start(
            "superlink",
            [
                "flower-superlink",
                "--port", str(self.link_port),
                "--ssl-ca-certfile", str(c / "ca.crt"),
                "--ssl-certfile", str(c / "server.pem"),
                "--ssl-keyfile", str(c / "server.key"),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
            ],
        )  # fmt: skip

    def flwr(self, *args: str, timeout: float) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["flwr", *args], env=self.cli_env, cwd=ROOT, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def supernode(self, i: int, partition: int, *extra: str) -> subprocess.Popen:
        config = f"partition-id={partition} num-partitions=2 state-dir='{self.root / f'state_{i}'}'"
        return self.start(
            f"node_{i}",
            [
                "flower-supernode",
                "--superlink", f"127.0.0.1:{self.link_port}",
                "--root-certificates", str(self.creds / "ca.crt"),
                "--auth-supernode-private-key", str(self.creds / f"node_{i}"),
                "--port", str(_port()),
                "--node-config", config,
                *extra,
            ],
        )  # fmt: skip

    def kill(self, name: str) -> None:
        """kill -9 of the process and the app processes it started."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def stop(self) -> None:
        for name in self.procs:
            self.kill(name)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    subprocess.run(
        [sys.executable, str(ROOT / "deploy/flower/make_credentials.py"), str(root / "creds"),
         "--nodes", "3"],
        check=True,
    )  # fmt: skip
    dep = Deployment(root)
    try:
        dep.superlink()
        for i in range(2):  # node_2's key stays unknown
            for _ in range(30):  # the SuperLink may still be starting
                out = dep.flwr("supernode", "register", str(dep.creds / f"node_{i}.pub"), "loop",
                               timeout=60)  # fmt: skip
                if out.returncode == 0:
                    break
                time.sleep(1)
            assert out.returncode == 0, out.stdout + out.stderr + dep.log("superlink")
            dep.supernode(i, partition=i)
        yield dep
    finally:
        dep.stop()


@pytest.mark.slow
def test_a_node_without_a_known_key_is_refused(deployment):
    node = deployment.supernode(2, 0, "--max-retries", "1", "--max-wait-time", "20")
    assert node.wait(timeout=120) != 0
    # Flower's exit code for a node the SuperLink refused to activate (its key is unknown)
    assert "Exit Code: 305" in deployment.log("node_2")
    assert "Attempted to register SuperNode with public key" in deployment.log("superlink")


def _flwr_run(deployment: Deployment, workdir: Path, rounds: int) -> None:
    overrides = json.dumps({**OVERRIDES, "rounds": rounds})
    run_config = f"overrides='{overrides}' workdir='{workdir}' node-wait=120.0 round-timeout=300.0"
    out = deployment.flwr("run", "deploy/flower", "loop", "--run-config", run_config, "--stream",
                          timeout=600)  # fmt: skip
    logs = "\n".join(deployment.log(n)[-2000:] for n in deployment.procs)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:] + logs


@pytest.mark.slow
def test_deployment_reproduces_the_simulated_run(deployment, tmp_path):
    """Two runs of the same workdir: the second one's ServerApp (a new process) resumes the
    first one's checkpoint after round 2, the nodes their clients' state from their disks."""
    workdir = tmp_path / "deployed"
    _flwr_run(deployment, workdir, ROUNDS - 1)
    _flwr_run(deployment, workdir, ROUNDS)
    rows = [json.loads(line) for line in (workdir / "feddat" / "metrics.jsonl").open()]
    assert len(rows) == ROUNDS

    config = runconfig.load(SPEC, OVERRIDES)
    simulated = run_method(
        runconfig.load(SPEC, {**OVERRIDES, **NODE_SIZED_CHUNKS}),
        tmp_path / "sim" / config.method,
    ).history
    for a, b in zip(simulated, rows, strict=True):
        a, b = _numbers(a), _numbers(b)
        assert a.keys() == b.keys()
        for key in a:
            if isinstance(a[key], str):
                assert a[key] == b[key], key
            else:
                np.testing.assert_allclose(b[key], a[key], atol=TOL, rtol=0, err_msg=key)
    sim = _state(tmp_path / "sim" / config.method / "checkpoints")
    deployed = _state(workdir / config.method / "checkpoints")
    sim_shared = jax.tree.map(lambda x: np.asarray(x)[0], sim["server"]["shared"])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(b, a, atol=TOL), sim_shared, deployed["shared"]
    )
    assert (workdir / "results.json").is_file() and (workdir / "scores.png").is_file()


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def _restart(deployment: Deployment, i: int, timeout: float) -> None:
    """Start node ``i`` again; the SuperLink refuses its key (exit 305) until it has marked
    the killed session offline (two missed 30 s heartbeats), so retry until it stays up."""
    deadline = time.monotonic() + timeout
    while True:
        node = deployment.supernode(i, partition=i)
        try:
            node.wait(timeout=15)
        except subprocess.TimeoutExpired:
            return
        deployment.kill(f"node_{i}")  # its SuperExec child
        assert time.monotonic() < deadline, deployment.log(f"node_{i}")[-2000:]
        time.sleep(3)


@pytest.mark.slow
def test_a_node_killed_mid_round_is_dropped_then_resumes_from_its_disk(deployment, tmp_path):
    """kill -9 of SuperNode 1 in round 2: round 2 finishes with node 0's clients (no hang);
    node 1 restarts (same key, so the same node id), round 3 waits for it (``rejoin-wait``),
    and it trains its clients from their state after round 1, read from its disk."""
    workdir = tmp_path / "faults"
    overrides = json.dumps({"rounds": 3, "eval_every": 3, "seed": 1})  # a run of its own
    run_config = (
        f"overrides='{overrides}' workdir='{workdir}' node-wait=120.0 round-timeout=60.0 "
        "rejoin-wait=150.0"
    )
    trains = lambda: deployment.log("node_1").count("Receiving: train message")  # noqa: E731
    before = trains()
    state = deployment.root / "state_1"  # node 1's disk; this run gets a folder of its own
    earlier_runs = set(state.iterdir()) if state.is_dir() else set()
    run = subprocess.Popen(
        ["flwr", "run", "deploy/flower", "loop", "--run-config", run_config, "--stream"],
        env=deployment.cli_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        _wait_for(lambda: trains() >= before + 2, 300, "node 1 to receive round 2")
        deployment.kill("node_1")  # SIGKILL, mid-round
        _restart(deployment, 1, timeout=150)
        output, _ = run.communicate(timeout=480)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output.decode(errors="replace")[-3000:]
    rows = [json.loads(line) for line in (workdir / "feddat" / "metrics.jsonl").open()]
    assert [row["flower/dropped"] for row in rows] == ["", "night_02,noisy_03", ""]
    assert rows[2]["cohort"] == "clean_00,sketch_01,night_02,noisy_03"
    assert any(k.startswith("score/") for k in rows[2])
    (run_dir,) = set(state.iterdir()) - earlier_runs
    for client in (2, 3):  # node 1's clients: rounds 1 and 3 on its disk, never round 2
        saved = sorted(p.name for p in (run_dir / "node_1" / f"client_{client}").iterdir())
        assert saved == ["round_1.npz", "round_3.npz"], saved
