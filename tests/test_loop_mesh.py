"""The training loop on a mesh: the same launch command on 1 device, 8 devices or 2 processes gives
the same numbers, and padded cohort slots change nothing.

The launch runs are subprocesses (``--xla_force_host_platform_device_count`` is read once, when JAX
initialises; the processes of a multi-process run must each start fresh). They run the demo's smoke
config (5 clients, 1 round of FedDAT and of FedAvg + adapter) with a random tiny ViLT, so 8 devices
pad every cohort (and the evaluation over all 5 clients) to 8 slots. Everything else is in-process.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import toy_model as toy
from one_federation import make_round_fn
from smoke_launch import smoke_command

from feddat_jax.fl import distributed, local_optim, sampling
from feddat_jax.fl import mesh as mesh_lib
from feddat_jax.fl.aggregation import MeanAggregator, client_weights
from feddat_jax.fl.algorithms import FedDAT, FedDATConfig
from feddat_jax.fl.privacy import DPGaussianAggregator
from feddat_jax.fl.registry import pad_batches
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import init_server_state
from feddat_jax.train import loop

ROOT = Path(__file__).resolve().parent.parent
METHODS = ("feddat", "fedavg_adapter")
SCORE_TOL, PARAM_TOL = 1e-4, 1e-5


def _env(devices: int) -> dict:
    return {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
        "JAX_PLATFORMS": "cpu",
    }


def _launch_args(workdir: Path, cache: Path, *extra: str) -> list[str]:
    return smoke_command(workdir, *extra, cache=cache)


def _run(workdir: Path, cache: Path, devices: int, *extra: str) -> str:
    out = subprocess.run(
        _launch_args(workdir, cache, *extra),
        cwd=ROOT,
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    return out.stdout


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("loop_mesh")
    cache = root / "cache"
    one = _run(root / "one", cache, 1)
    eight = _run(root / "eight", cache, 8)
    return {"root": root, "cache": cache, "one": one, "eight": eight}


def final_state(workdir: Path, method: str) -> dict:
    """The last checkpoint's state (host numpy: checkpoints do not depend on the mesh)."""
    ckpt = workdir / method / "checkpoints"
    step = max(int(p.name) for p in ckpt.iterdir() if p.name.isdigit())
    return ocp.StandardCheckpointer().restore(ckpt / str(step) / "state")


def metric_rows(workdir: Path, method: str) -> list[dict]:
    rows = [json.loads(x) for x in (workdir / method / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def assert_same_run(a: Path, b: Path, rounds: int = 1) -> None:
    ra = json.loads((a / "results.json").read_text())
    rb = json.loads((b / "results.json").read_text())
    assert set(ra) == set(rb) == {*METHODS, "blind"}  # the smoke config's reference row
    assert ra["blind"]["mean"] == rb["blind"]["mean"]  # host work, the same on every mesh
    for method in METHODS:
        assert ra[method]["clients"].keys() == rb[method]["clients"].keys()
        for client, score in ra[method]["clients"].items():
            assert rb[method]["clients"][client] == pytest.approx(score, abs=SCORE_TOL)
        assert rb[method]["mean"] == pytest.approx(ra[method]["mean"], abs=SCORE_TOL)
        rows_a, rows_b = metric_rows(a, method), metric_rows(b, method)
        assert len(rows_a) == len(rows_b) >= 1
        for x, y in zip(rows_a, rows_b):
            assert x.keys() == y.keys()  # the same real clients: no padded slot leaks in
            for key, value in x.items():
                if isinstance(value, float):
                    assert y[key] == pytest.approx(value, abs=SCORE_TOL), key
                else:
                    assert y[key] == value, key
        sa, sb = final_state(a, method), final_state(b, method)
        assert int(sa["server"]["round"][0]) == int(sb["server"]["round"][0]) == rounds
        for part in (sa["server"]["shared"], sa["private"]):
            assert jax.tree.leaves(part)
        pairs = [(sa["server"]["shared"], sb["server"]["shared"]), (sa["private"], sb["private"])]
        for ta, tb in pairs:
            assert jax.tree.structure(ta) == jax.tree.structure(tb)
            for x, y in zip(jax.tree.leaves(ta), jax.tree.leaves(tb)):
                np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=PARAM_TOL)


# --------------------------------------------------------------------------- launch on a mesh
def test_eight_device_run_shards_the_cohort_over_eight_devices(runs):
    assert "mesh {'clients': 1, 'model': 1} over 1 process(es)" in runs["one"]
    assert "mesh {'clients': 8, 'model': 1} over 1 process(es)" in runs["eight"]


def test_eight_devices_equal_one_device(runs):
    """Scores and metrics to 1e-4, the final shared params and every client's state to 1e-5."""
    assert_same_run(runs["root"] / "one", runs["root"] / "eight")


@pytest.mark.slow
def test_resume_on_another_mesh(runs):
    """A 1-device checkpoint resumes on 8 devices (checkpoints are host copies): round 2 there
    equals round 2 on 1 device."""
    root = runs["root"]
    for name, devices in (("resumed_on_one", 1), ("resumed_on_eight", 8)):
        shutil.copytree(root / "one", root / name)
        out = _run(root / name, runs["cache"], devices, "--config.rounds=2")
        assert f"mesh {{'clients': {devices}, 'model': 1}}" in out
    assert_same_run(root / "resumed_on_one", root / "resumed_on_eight", rounds=2)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_device(runs):
    """2 processes x 2 devices (clients axis 4): each process keeps its own block of the clients
    (3 and 2) in its registry and fills its half of the 8 cohort slots with them, then padding."""
    workdir = runs["root"] / "two_processes"
    outs = _two_processes(workdir, runs["cache"])
    assert "mesh {'clients': 4, 'model': 1} over 2 process(es)" in outs[0]
    assert_same_run(runs["root"] / "one", workdir)


# ------------------------------------------------------------------------ a sweep on the mesh
SWEEP = (
    "--config.compare_methods=('feddat',)",
    "--config.sweep.seed=(0,1)",
    "--config.sweep.optim.learning_rate=(1e-3,2e-3)",
    "--config.references=()",  # the replica axis on meshes; references have their own tests
)


def _two_processes(workdir: Path, cache: Path, *extra: str) -> list[str]:
    port = _free_port()
    procs = [
        subprocess.Popen(
            _launch_args(
                workdir,
                cache,
                f"--config.distributed.coordinator_address=127.0.0.1:{port}",
                "--config.distributed.num_processes=2",
                f"--config.distributed.process_id={pid}",
                *extra,
            ),
            cwd=ROOT,
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pid in range(2)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=600))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-4000:]
    return [out for out, _ in outs]


def assert_same_sweep(a: Path, b: Path) -> None:
    rows_a, rows_b = metric_rows(a, "feddat"), metric_rows(b, "feddat")
    assert [(r["round"], r["replica"]) for r in rows_a] == [(1, i) for i in range(4)]
    assert len(rows_a) == len(rows_b)
    for x, y in zip(rows_a, rows_b):
        assert x.keys() == y.keys()
        for key, value in x.items():
            if isinstance(value, float):
                assert y[key] == pytest.approx(value, abs=SCORE_TOL), key
            else:
                assert y[key] == value, key
    sa, sb = final_state(a, "feddat"), final_state(b, "feddat")
    assert np.shape(sa["server"]["round"]) == (4,)  # the replica axis
    for x, y in zip(jax.tree.leaves(sa), jax.tree.leaves(sb)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=PARAM_TOL)


@pytest.mark.slow
def test_sweep_on_eight_devices_and_two_processes_equals_one_device(runs):
    """4 replicas (2 seeds x 2 learning rates) of the 5-client cohort: on 8 devices every
    replica's cohort is padded to 8 slots and sharded over them; in 2 processes each keeps its
    block of every replica's clients."""
    root, cache = runs["root"], runs["cache"]
    _run(root / "sweep_one", cache, 1, *SWEEP)
    assert "4 replicas in one program" in _run(root / "sweep_eight", cache, 8, *SWEEP)
    assert_same_sweep(root / "sweep_one", root / "sweep_eight")
    out = _two_processes(root / "sweep_two_processes", cache, *SWEEP)
    assert "over 2 process(es)" in out[0]
    assert_same_sweep(root / "sweep_one", root / "sweep_two_processes")


# ------------------------------------------------------------------------------ padded cohorts
A, B = 5, 4
SIZES, KINDS, REAL = (3, 10, 17, 6, 9), (0, 1, 0, 1, 0), (5, 3, 4, 5, 2)


def _toy_round_inputs():
    algorithm = FedDAT(
        toy.forward,
        FedDATConfig(optim=local_optim.LocalOptimConfig(learning_rate=3e-2, schedule_epochs=2.0)),
    )
    _, batches, frozen, shared, _, private_C, tasks = toy.cohort(
        algorithm, SIZES, KINDS, REAL, A, B
    )
    return algorithm, frozen, shared, private_C, tasks, batches


def _padded(ids, mask, private_C, tasks, batches):
    """The loop's padding: slots repeat a real client's state, num_examples 0, no examples."""
    take = lambda t: jax.tree.map(lambda x: jnp.asarray(x)[ids], t)  # noqa: E731
    tasks_p = take(tasks)
    tasks_p = tasks_p.replace(num_examples=jnp.where(mask, tasks_p.num_examples, 0))
    real = {k: np.asarray(v) for k, v in batches.items()}
    return take(private_C), tasks_p, pad_batches(real, len(ids))


@pytest.mark.parametrize("weights", ["uniform", "weighted"])
def test_padded_cohort_round_equals_unpadded_round(weights):
    """5 clients padded to 8 slots (as on an 8-device mesh): the same server update and private
    states, for the uniform mean (padded slots excluded from 1/C) and the size-weighted one."""
    algorithm, frozen, shared, private_C, tasks, batches = _toy_round_inputs()
    server_tx = make_server_optimizer("fedavg")
    server = init_server_state(shared, server_tx, jax.random.key(1))
    run = make_round_fn(algorithm, server_tx, MeanAggregator(weights))
    ids, mask = distributed.plan_cohort(0, 0, len(SIZES), 1.0, devices_per_process=[8])
    assert ids.tolist() == [0, 1, 2, 3, 4, 0, 0, 0] and mask.sum() == len(SIZES)
    private_p, tasks_p, batches_p = _padded(ids, mask, private_C, tasks, batches)
    ref_server, ref_private, _ = run(  # donates private_C
        frozen, server, private_C, tasks, jnp.arange(len(SIZES)), batches
    )
    new_server, new_private, metrics = run(
        frozen, server, private_p, tasks_p, jnp.asarray(ids), batches_p
    )
    for x, y in zip(jax.tree.leaves(new_server.shared), jax.tree.leaves(ref_server.shared)):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)
    real = jax.tree.map(lambda x: x[: len(SIZES)], new_private)
    for x, y in zip(jax.tree.leaves(real), jax.tree.leaves(ref_private)):
        np.testing.assert_array_equal(x, y)  # each client's own epoch: untouched by padding
    assert np.all(np.asarray(metrics["clients"]["steps"])[~mask] == 0)  # padded slots: no step
    moved = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(new_server.shared), jax.tree.leaves(server.shared))
    )
    assert moved > 1e-3  # the round really trained


def test_uniform_weights_leave_out_padded_slots():
    n = jnp.asarray([3, 10, 17, 0, 0])
    np.testing.assert_allclose(client_weights(n, "uniform"), [1 / 3] * 3 + [0, 0], rtol=1e-6)
    np.testing.assert_allclose(client_weights(n[:3], "uniform"), [1 / 3] * 3, rtol=1e-6)
    np.testing.assert_allclose(client_weights(n, "weighted"), [0.1, 1 / 3, 17 / 30, 0, 0])
    mean, _ = MeanAggregator("uniform")({"w": jnp.asarray([1.0, 2.0, 6.0, 0.0, 0.0])}, n, None)
    assert float(mean["w"]) == pytest.approx(3.0)


def test_dp_fixed_cohort_divides_by_the_real_clients():
    """A fixed-size DP cohort padded for the mesh: the mean and the noise use the real C."""
    c, s, sigma = 5, 0.5, 1.2
    deltas = {"w": jax.random.normal(jax.random.key(0), (c, 40)) * 0.01}
    padded = {"w": jnp.concatenate([deltas["w"], jnp.full((3, 40), jnp.nan)])}  # garbage rows
    n = jnp.asarray([3, 1, 4, 1, 5])
    n_p = jnp.concatenate([n, jnp.zeros((3,), n.dtype)])
    exact = DPGaussianAggregator(math.inf, 0.0)
    np.testing.assert_allclose(
        exact(padded, n_p, None)[0]["w"], exact(deltas, n, None)[0]["w"], rtol=0, atol=1e-7
    )
    noisy = DPGaussianAggregator(s, sigma)
    mean, metrics = noisy(padded, n_p, jax.random.key(3))
    assert float(metrics["dp/noise_std"]) == pytest.approx(sigma * s / c, rel=1e-6)
    assert np.all(np.isfinite(np.asarray(mean["w"])))


# -------------------------------------------------------------------------------- cohort plans
def test_plan_cohort_one_process_is_the_sampler_padded():
    for r in range(3):
        ids, mask = distributed.plan_cohort(4, r, 10, 3, devices_per_process=[4])
        real = sampling.sample_clients(4, r, 10, 3)
        assert ids.shape == (4,) and mask.tolist() == [True] * 3 + [False]
        np.testing.assert_array_equal(ids[mask], real)
        assert ids[3] == real[0]
    ids, mask = distributed.plan_cohort(0, 0, 5, 1.0)  # no mesh: one slot per client
    assert ids.tolist() == list(range(5)) and mask.all()


def test_plan_cohort_processes_fill_their_own_slots():
    blocks = distributed.client_blocks(5, 2)  # process 0 owns 0..2, process 1 owns 3..4
    ids, mask = distributed.plan_cohort(0, 0, 5, 1.0, devices_per_process=[2, 2])
    assert ids.tolist() == [0, 1, 2, 0, 3, 4, 3, 3]  # 2 slots per device, 4 per process
    assert mask.tolist() == [True] * 3 + [False] + [True] * 2 + [False] * 2
    for p in range(2):
        part = ids[4 * p : 4 * (p + 1)]
        assert np.all((part >= blocks[p]) & (part < blocks[p + 1]))
    # a sampled cohort: a balanced share per process, seeded by (seed, round, process)
    ids, mask = distributed.plan_cohort(7, 1, 100, 10, devices_per_process=[4, 4])
    assert mask.sum() == 10 and ids.shape == (16,)
    assert ids[:8][mask[:8]].max() < 50 <= ids[8:][mask[8:]].min()
    np.testing.assert_array_equal(
        ids[mask], distributed.sample_cohort(7, 1, 100, 10, num_processes=2)
    )
    with pytest.raises(ValueError, match="does not split"):
        distributed.plan_cohort(0, 0, 5, 1, devices_per_process=[1, 1])


def test_chunk_cohort_cuts_every_process_alike_with_one_shape():
    ids, mask = distributed.plan_cohort(0, 0, 7, 1.0)  # one process, no mesh: 7 slots
    chunks = distributed.chunk_cohort(ids, mask, None, 3)
    assert [c.tolist() for c, _ in chunks] == [[0, 1, 2], [3, 4, 5], [6, 0, 0]]
    assert [m.tolist() for _, m in chunks][-1] == [True, False, False]
    ids, mask = distributed.plan_cohort(0, 0, 5, 1.0, devices_per_process=[2, 2])
    chunks = distributed.chunk_cohort(ids, mask, None, 4, devices_per_process=[2, 2])
    assert [c.tolist() for c, _ in chunks] == [[0, 1, 3, 4], [2, 0, 3, 3]]  # 2 slots / process
    assert [m.tolist() for _, m in chunks] == [[True] * 4, [True, False, False, False]]
    every = np.concatenate([c[m] for c, m in chunks])
    assert sorted(every.tolist()) == list(range(5))  # each real client exactly once


# ---------------------------------------------------------------------- client storage choice
def test_client_storage_choice():
    mesh = mesh_lib.make_mesh()
    assert loop.client_storage("auto", 1 << 20, mesh) == "device"
    assert loop.client_storage("auto", 1 << 40, mesh) == "host"
    assert loop.client_storage("host", 1, mesh) == "host"


def test_host_storage_equals_device_storage(tmp_path):
    """The registry's host (numpy) and device storage give bit-identical runs."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_launch import numbers, smoke_config

    from feddat_jax.train.experiment import build_experiment

    cfg = smoke_config(tmp_path / "data")
    cfg.rounds, cfg.tensorboard, cfg.compare_methods = 1, False, ()
    exp = build_experiment(cfg)
    exp.config.client_storage = "device"
    device = loop.train(exp, tmp_path / "device", show_progress=False)
    exp.config.client_storage = "host"
    host = loop.train(exp, tmp_path / "host", show_progress=False)
    assert numbers(host) == numbers(device)
    a, b = final_state(tmp_path, "device"), final_state(tmp_path, "host")
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)
