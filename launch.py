"""The one entry point: train (and compare) federated methods from a config file.

    python launch.py --config configs/demo.py --workdir runs/demo
    python launch.py --config configs/vilt_domain.py --config.method=fedavg_adapter --workdir runs/x

Every method of the run trains in ``<workdir>/<method>`` (metrics, TensorBoard, checkpoints);
rerunning the same command resumes. The comparison table, ``results.json`` and the PNG plots
land in ``<workdir>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
from jax.experimental import multihost_utils
from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from feddat_jax.fl import mesh as mesh_lib

from feddat_jax.fl import distributed
from feddat_jax.train.experiment import build_experiment
from feddat_jax.train.loop import train
from feddat_jax.train.pretrain import pretrain
from feddat_jax.train.references import check_references, run_reference
from feddat_jax.train.report import write_report

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiment config file", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (resume: the same folder)")
flags.mark_flags_as_required(["config", "workdir"])


def prepare_workdir(path: str) -> Path:
    workdir = Path(path).expanduser()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{os.getpid()}"  # one per process of a multi-host run
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise SystemExit(f"--workdir {workdir} is not writable: {err}") from err
    return workdir


def run(config, workdir: Path) -> str:
    """Train every method of the config, then write and return the comparison table.

    The mesh is built once, over every device of every process (``config.mesh``); in a
    multi-process run every process runs this and only process 0 writes the config and report.
    """
    primary = jax.process_index() == 0
    if primary:
        (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
    mesh = mesh_lib.mesh_from_config(config.mesh)
    methods = list(config.compare_methods) or [config.method]
    runs, clients = {}, []
    for method in methods:
        method_config = config.copy_and_resolve_references()
        method_config.method = method
        experiment = build_experiment(method_config, mesh)
        clients = experiment.client_names
        if primary:
            print(
                f"== {method}: {len(clients)} clients, {config.rounds} rounds -> "
                f"{workdir / method} (mesh {dict(mesh.shape)} over {jax.process_count()} "
                f"process(es), strategy {experiment.strategy})"
            )
        runs[method] = train(experiment, workdir / method)
    if primary:  # the reference rows are single-process host work
        for name in check_references(config.get("references", ())):
            print(f"== reference {name} -> {workdir / name}")
            runs[name] = run_reference(name, config, workdir / name)
    if jax.process_count() > 1:
        # peers wait for them: a process that exits early starts the distributed shutdown
        # barrier, which aborts every process once it times out
        multihost_utils.sync_global_devices("feddat_jax references")
    if not primary:
        return ""
    table = write_report(runs, clients, workdir)
    print(table)
    print(
        f"\nresults: {workdir / 'results.json'}; plots: {workdir / 'scores.png'}, "
        f"{workdir / 'communication.png'}"
    )
    return table


def main(argv) -> None:
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax is chatty at INFO
    config = _CONFIG.value
    # before anything touches a JAX device: a multi-process run joins its peers here
    distributed.initialize_distributed(config.get("distributed"))
    workdir = prepare_workdir(_WORKDIR.value)
    if config.get("kind") == "pretrain":
        print(json.dumps(pretrain(config, workdir)["final"]))
    else:
        run(config, workdir)


if __name__ == "__main__":
    app.run(main)
