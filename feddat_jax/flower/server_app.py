"""The ServerApp: builds the federation from the run's config and runs ``server.FlowerServer``.

Run config keys (``pyproject.toml``'s ``[tool.flwr.app.config]``, or bound when the app is made):
``config`` (``FILE[:ARG]``), ``overrides`` (JSON of ``--config.KEY=VALUE`` s), ``workdir`` (the
run folder: ``<workdir>/<method>`` gets metrics.jsonl, checkpoints, and ``<workdir>`` the
report), ``round-timeout`` and ``node-wait`` (seconds).
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from feddat_jax.flower import runconfig
from feddat_jax.flower.federation import build_federation
from feddat_jax.flower.server import FlowerServer, ServerOptions
from feddat_jax.train.report import write_report


def run_server(grid: Grid, run: dict) -> list:
    config = runconfig.load(str(run[runconfig.CONFIG_KEY]), str(run.get(runconfig.OVERRIDES_KEY, "")))
    fed = build_federation(config)
    workdir = Path(str(run["workdir"])).expanduser()
    options = ServerOptions(
        round_timeout=float(run.get("round-timeout", ServerOptions.round_timeout)),
        node_wait=float(run.get("node-wait", ServerOptions.node_wait)),
    )
    history = FlowerServer(fed, workdir / config.method, options).run(grid)
    write_report({config.method: history}, fed.exp.client_names, workdir)
    return history


def make_server_app(run: dict | None = None, result: list | None = None) -> ServerApp:
    """The ServerApp; ``run`` given: these run-config values (else Flower's run config).
    ``result`` (a list) receives the metrics history, or the exception that ended the run."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        values = dict(context.run_config)
        values.update(run or {})
        try:
            history = run_server(grid, values)
        except BaseException as err:
            if result is not None:
                result.append(err)
            raise
        if result is not None:
            result.append(history)

    return app


def bound_run_config(spec: str, overrides: dict, workdir: str | Path, **extra) -> dict:
    return {**runconfig.run_config(spec, overrides), "workdir": str(workdir), **extra}


app = make_server_app()  # `flwr run`: everything comes from the run config
