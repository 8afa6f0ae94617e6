"""``launch.py --config.engine=flower``: each method of the run on Flower's simulation engine.

The twin of ``train.method_run.run_method``: the same config, ``<workdir>/<method>`` gets the same
metrics.jsonl and checkpoints (the server's; each client's private state stays with its node,
under ``<workdir>/.nodes``), and ``cli.invocation`` writes the same report and plots. One virtual
SuperNode per client, as in a cross-silo federation where each silo is a node.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import ml_collections

from feddat_jax.flower.federation import build_federation
from feddat_jax.flower.server_app import BoundRun
from feddat_jax.flower.simulation import simulate_method
from feddat_jax.train.interrupt import StopRequest
from feddat_jax.train.method_run import MethodRun


def run_method(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    mesh=None,
    show_progress: bool = False,
    announce: Callable[[str], None] | None = None,
    stop: StopRequest | None = None,
) -> MethodRun:
    """Train ``config.method`` in ``workdir`` on Flower's simulation engine (``mesh`` and
    ``show_progress`` are the simulated run's; each Flower node runs on one CPU actor)."""
    del mesh, show_progress
    workdir = Path(workdir)
    fed = build_federation(config)
    nodes = fed.num_clients
    if announce is not None:
        announce(
            f"== {config.method}: {nodes} clients, {config.rounds} rounds on Flower's simulation "
            f"engine ({nodes} nodes) -> {workdir}"
        )
    history = simulate_method(
        config, BoundRun(fed, workdir, stop=stop), nodes=nodes, state_dir=workdir.parent / ".nodes"
    )
    return MethodRun(config.method, fed.exp.sweep, fed.exp.client_names, history)
