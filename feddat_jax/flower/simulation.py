"""A config on Flower's simulation engine (Ray): one call, the same outputs as a simulated run.

    history = simulate("configs/demo.py:smoke", {"rounds": 3}, "runs/flower", nodes=4)

``nodes`` virtual SuperNodes hold the clients in contiguous blocks (``federation.node_clients``);
the ServerApp runs in this process, the ClientApps in Ray actors (``actors`` of them, each
using ``cpus_per_actor`` cores; one actor serves every node in turn and builds the federation
once). Each node's private state persists under ``<state_dir>`` (default
``<workdir>/.nodes``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from flwr.simulation import run_simulation

from feddat_jax.errors import DistributedError
from feddat_jax.flower.client_app import make_client_app
from feddat_jax.flower.server_app import bound_run_config, make_server_app
from feddat_jax.train.metrics import Record

import json


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
    workdir = Path(workdir)
    state_dir = Path(state_dir) if state_dir else workdir / ".nodes"
    result: list = []
    server_app = make_server_app(bound_run_config(spec, overrides, workdir), result)
    client_app = make_client_app(spec, json.dumps(overrides, sort_keys=True), str(state_dir))
    if not verbose:
        logging.getLogger("flwr").setLevel(logging.WARNING)
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
