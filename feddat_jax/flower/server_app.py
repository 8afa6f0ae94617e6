"""The ServerApp: builds the federation from the run's config and runs ``server.FlowerServer``.

Run config keys (``pyproject.toml``'s ``[tool.flwr.app.config]``, or ``flwr run --run-config``):
``config`` (``FILE[:ARG]``), ``overrides`` (JSON of ``--config.KEY=VALUE`` s), ``workdir`` (the
run folder: ``<workdir>/<method>`` gets metrics.jsonl, checkpoints, and ``<workdir>`` the
report), ``round-timeout``, ``node-wait`` and ``rejoin-wait`` (seconds, ``server.ServerOptions``).
The simulation binds a built federation instead (``BoundRun``): its ServerApp runs in the
launching process.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from feddat_jax.flower import runconfig
from feddat_jax.flower.federation import Federation, build_federation
from feddat_jax.flower.server import FlowerServer, ServerOptions
from feddat_jax.train.interrupt import StopRequest
from feddat_jax.train.report import write_report


@dataclasses.dataclass
class BoundRun:
    """What a ServerApp made in the launching process runs: one method into ``method_dir``."""

    fed: Federation
    method_dir: Path
    options: ServerOptions = ServerOptions()
    stop: StopRequest | None = None


def options_of(run: dict) -> ServerOptions:
    return ServerOptions(
        round_timeout=float(run.get("round-timeout", ServerOptions.round_timeout)),
        node_wait=float(run.get("node-wait", ServerOptions.node_wait)),
        rejoin_wait=float(run.get("rejoin-wait", ServerOptions.rejoin_wait)),
    )


def run_from_config(grid: Grid, run: dict) -> list:
    """A run named by Flower's run config (``flwr run``): the method, then the report."""
    config = runconfig.load(str(run[runconfig.CONFIG_KEY]), str(run.get(runconfig.OVERRIDES_KEY, "")))
    fed = build_federation(config)
    workdir = Path(str(run["workdir"])).expanduser()
    history = FlowerServer(fed, workdir / config.method, options_of(run)).run(grid)
    write_report({config.method: history}, fed.exp.client_names, workdir)
    return history


def make_server_app(bound: BoundRun | None = None, result: list | None = None) -> ServerApp:
    """The ServerApp; ``bound`` given: that run (else Flower's run config names it).
    ``result`` (a list) receives the metrics history, or the exception that ended the run."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            if bound is None:
                history = run_from_config(grid, dict(context.run_config))
            else:
                server = FlowerServer(bound.fed, bound.method_dir, bound.options)
                history = server.run(grid, bound.stop)
        except BaseException as err:
            if result is not None:
                result.append(err)
            raise
        if result is not None:
            result.append(history)

    return app


app = make_server_app()  # `flwr run`: everything comes from the run config
