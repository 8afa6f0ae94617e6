"""One invocation of ``launch.py``: claim the workdir, train every method, write the report.

Order matters, so that a bad input costs nothing and no run touches another's files:
validate the whole config (no device touched), join the other processes, check the workdir is
writable, lock it, check that it holds no other run's files, write ``config.json``, and only then
build and train each method in ``<workdir>/<method>``, then the reference rows in
``<workdir>/<reference>``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from feddat_jax.cli import workdir as workdir_lib
from feddat_jax.cli.validate import run_methods, run_references, validate_config, with_method
from feddat_jax.errors import ConfigError, FeddatError, RunInterrupted, WorkdirError
from feddat_jax.fl import distributed
from feddat_jax.fl import mesh as mesh_lib
from feddat_jax.train.interrupt import StopRequest
from feddat_jax.train.method_run import run_method
from feddat_jax.train.references import run_reference
from feddat_jax.train.report import plot_title, write_report


def launch(config: ml_collections.ConfigDict, workdir: str | Path, stop: StopRequest) -> None:
    """Everything ``launch.py`` does after parsing its flags."""
    validate_config(config)
    # before anything touches a JAX device: a multi-process run joins its peers here
    distributed.initialize_distributed(config.get("distributed"))
    path = workdir_lib.prepare_workdir(workdir)
    if config.get("kind") == "pretrain":
        from feddat_jax.pretrain.train import pretrain

        with workdir_lib.WorkdirLock(path):
            print(json.dumps(pretrain(config, path)["final"]))
        return
    lock = claim_workdir(path, config)
    try:
        run(config, path, stop)
    finally:
        if lock is not None:
            lock.release()


def claim_workdir(
    workdir: Path, config: ml_collections.ConfigDict
) -> workdir_lib.WorkdirLock | None:
    """Process 0 locks the workdir, checks it holds no other run, and writes ``config.json``;
    the other processes learn whether it succeeded (and stop with it if not)."""
    lock, error = None, None
    if jax.process_index() == 0:
        try:
            lock = workdir_lib.WorkdirLock(workdir)
            lock.acquire()
            workdir_lib.check_ownership(workdir, config)
            workdir_lib.write_config(workdir, config)
        except FeddatError as err:
            error = err
            if lock is not None:
                lock.release()
    if jax.process_count() > 1:
        ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not ok and error is None:
            error = WorkdirError(
                "process 0 could not claim the workdir", str(workdir), "see process 0's error"
            )
    if error is not None:
        raise error
    return lock


def method_runner(config: ml_collections.ConfigDict):
    """``train.method_run.run_method``, or its twin on Flower's simulation engine
    (``config.engine``)."""
    if config.get("engine", "simulation") == "flower":
        from feddat_jax.flower.launch import run_method as run_on_flower  # flwr is optional

        return run_on_flower
    return run_method


def run(config: ml_collections.ConfigDict, workdir: Path, stop: StopRequest | None = None) -> str:
    """Train every method of the config, then write and return the comparison table.

    The mesh is built once, over every device of every process (``config.mesh``); in a
    multi-process run every process runs this and only process 0 writes the report.
    """
    primary = jax.process_index() == 0
    try:
        mesh = mesh_lib.mesh_from_config(config.mesh)
    except ConfigError as err:
        raise ConfigError(err.what, err.where or f"config.mesh={config.mesh.to_dict()}", err.fix)
    runs, clients = {}, []
    for method in run_methods(config):
        if stop is not None and stop.requested():
            raise RunInterrupted(method, 0)
        run_ = method_runner(config)(
            with_method(config, method),
            workdir / method,
            mesh=mesh,
            show_progress=True,
            announce=functools.partial(print, flush=True) if primary else None,
            stop=stop,
        )
        runs[method], clients = run_.history, run_.client_names
    names = run_references(config)
    pending = list(names)
    if primary:  # the reference rows are single-process host work
        for name in list(pending):
            if stop is not None and stop.requested_here():
                break
            print(f"== reference {name} -> {workdir / name}", flush=True)
            runs[name] = run_reference(name, config, workdir / name)
            pending.remove(name)
    if jax.process_count() > 1:
        # peers wait for them: a process that exits early starts the distributed shutdown
        # barrier, which aborts every process once it times out
        multihost_utils.sync_global_devices("feddat_jax references")
    # every process asks (a collective, so the condition is the same everywhere); a peer's
    # ``pending`` is every reference, the primary's those it skipped
    stopped = bool(names) and stop is not None and stop.requested()
    if stopped and pending:
        raise RunInterrupted(pending[0], 0)
    if not primary:
        return ""
    table = write_report(runs, clients, workdir, plot_title(config, len(clients)))
    print(table)
    print(
        f"\nresults: {workdir / 'results.json'}; plots: {workdir / 'scores.png'}, "
        f"{workdir / 'communication.png'}"
    )
    return table
