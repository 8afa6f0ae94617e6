"""Two JAX processes on localhost (jax.distributed + gloo CPU collectives) give the same rounds as
one process.

Each worker (tests/mesh_worker.py) has 2 forced CPU devices, so the global mesh has 4 devices on
the clients axis. Each process owns a contiguous block of the 16 clients, keeps only their private
state and data (a ClientRegistry of 8 rows), fills its half of every 8-client cohort with its own
clients (distributed.sample_cohort), and contributes only those rows to the global cohort arrays
(jax.make_array_from_process_local_data). The reference is one process on one device running the
same cohorts. The coordinator and gloo listen on 127.0.0.1 only; every wait is bounded.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "mesh_worker.py")
TIMEOUT = 300
TOL = 1e-5


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }


def _run_pair(tmp_path, port):
    procs = []
    for pid in range(2):
        out = tmp_path / f"process_{pid}.npz"
        procs.append(
            (
                out,
                subprocess.Popen(
                    [
                        sys.executable,
                        WORKER,
                        "round",
                        str(out),
                        "--num-processes",
                        "2",
                        "--process-id",
                        str(pid),
                        "--port",
                        str(port),
                    ],
                    env=_env(2),
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    logs, ok = [], True
    for out, p in procs:
        try:
            _, err = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for _, q in procs:
                q.kill()
            _, err = p.communicate()
            ok = False
        logs.append(err[-3000:])
        ok = ok and p.returncode == 0
    return [out for out, _ in procs], ok, logs


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("multiprocess")
    ref_out = tmp / "reference.npz"
    ref = subprocess.Popen(
        [sys.executable, WORKER, "round", str(ref_out)],
        env=_env(1),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    for attempt in range(2):  # a second port if the first was taken in between
        outs, ok, logs = _run_pair(tmp, _free_port())
        if ok or not any("bind" in log.lower() or "in use" in log.lower() for log in logs):
            break
    _, ref_err = ref.communicate(timeout=TIMEOUT)
    assert ref.returncode == 0, ref_err[-3000:]
    assert ok, "two-process run failed:\n" + "\n----\n".join(logs)
    return np.load(ref_out), [np.load(o) for o in outs]


def test_two_processes_really_ran_distributed(results):
    _, parts = results
    infos = [json.loads(str(p["info"])) for p in parts]
    for info in infos:
        assert info["process_count"] == 2
        assert info["devices"] == 4 and info["local_devices"] == 2
        assert info["round"] == 2
    # Each process holds only its own block of clients.
    np.testing.assert_array_equal(parts[0]["ids"], np.arange(8))
    np.testing.assert_array_equal(parts[1]["ids"], np.arange(8, 16))


def test_two_processes_equal_one_process(results):
    ref, parts = results
    assert json.loads(str(ref["info"]))["process_count"] == 1
    for p in parts:
        np.testing.assert_array_equal(p["cohorts"], ref["cohorts"])
    shared = [k for k in ref.files if k.startswith("shared/")]
    private = [k for k in ref.files if k.startswith("private/")]
    assert shared and private
    for k in shared:  # the replicated server state, as each process sees it
        for p in parts:
            np.testing.assert_allclose(p[k], ref[k], rtol=0, atol=TOL)
    for k in private:  # every client's private state, from the process that owns it
        np.testing.assert_allclose(np.concatenate([p[k] for p in parts]), ref[k], rtol=0, atol=TOL)
    # The rounds trained: the server moved.
    assert (
        max(float(np.abs(ref[k] - ref[k.replace("shared/", "initial/")]).max()) for k in shared)
        > 1e-3
    )
