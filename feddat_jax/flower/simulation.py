"""A config on Flower's simulation engine (Ray): one call, the same outputs as a simulated run.

    history = simulate("configs/demo.py:smoke", {"rounds": 3}, "runs/flower", nodes=4)

``nodes`` virtual SuperNodes hold the clients in contiguous blocks (``federation.node_clients``);
the ServerApp runs in this process, the ClientApps in Ray actors (``actors`` of them, each
using ``cpus_per_actor`` cores; one actor serves every node in turn and builds the federation
once). Each node's private state persists under ``<state_dir>`` (default
``<workdir>/.nodes``). ``launch.py --config.engine=flower`` runs each method through
``simulate_method`` (``flower.launch``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import ml_collections
from flwr.simulation import run_simulation

from feddat_jax.errors import DistributedError
from feddat_jax.flower import runconfig
from feddat_jax.flower.client_app import make_client_app
from feddat_jax.flower.federation import build_federation
from feddat_jax.flower.server_app import BoundRun, make_server_app
from feddat_jax.train.metrics import Record
from feddat_jax.train.report import write_report


def simulate_method(
    config: ml_collections.ConfigDict,
    run: BoundRun,
    *,
    nodes: int,
    state_dir: str | Path,
    actors: int = 1,
    cpus_per_actor: int = 1,
    verbose: bool = False,
) -> list[Record]:
    """Train ``config.method`` (``run.fed`` built from ``config``) into ``run.method_dir`` on
    ``nodes`` virtual SuperNodes; the metrics history."""
    result: list = []
    server_app = make_server_app(run, result)
    client_app = make_client_app(config, str(state_dir))
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.ERROR)  # not its deprecation notes
    run_simulation(
        server_app=server_app,
        client_app=client_app,
        num_supernodes=nodes,
        backend_config={
            "client_resources": {"num_cpus": cpus_per_actor, "num_gpus": 0.0},
            "init_args": {
                "num_cpus": actors * cpus_per_actor,
                "num_gpus": 0,
                "include_dashboard": False,
                "logging_level": "error",
            },
        },
        verbose_logging=verbose,
    )
    if not result:
        raise DistributedError(
            "the flower simulation ended without a result", "run_simulation", "rerun with verbose=True"
        )
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def simulate(
    spec: str,
    overrides: dict,
    workdir: str | Path,
    *,
    nodes: int,
    state_dir: str | Path | None = None,
    actors: int = 1,
    cpus_per_actor: int = 1,
    verbose: bool = False,
) -> list[Record]:
    """``config.method`` of ``spec`` + ``overrides`` in ``<workdir>/<method>``, the report in
    ``workdir``; the metrics history."""
    workdir = Path(workdir)
    config = runconfig.load(spec, overrides)
    fed = build_federation(config)
    history = simulate_method(
        config,
        BoundRun(fed, workdir / config.method),
        nodes=nodes,
        state_dir=state_dir or workdir / ".nodes",
        actors=actors,
        cpus_per_actor=cpus_per_actor,
        verbose=verbose,
    )
    write_report({config.method: history}, fed.exp.client_names, workdir)
    return history
