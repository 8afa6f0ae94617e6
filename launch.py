"""The one entry point: train (and compare) federated methods from a config file.

    python launch.py --config configs/demo.py --workdir runs/demo
    python launch.py --config configs/vilt.py:scene --config.method=fedavg_adapter --workdir runs/x
    python launch.py --help     # the config syntax, the methods, the configs and the docs

Every method of the run trains in ``<workdir>/<method>`` (metrics, TensorBoard, checkpoints);
rerunning the same command resumes. The comparison table, ``results.json`` and the PNG plots
land in ``<workdir>``. A bad input is reported in one line (exit status 2; ``--debug`` shows the
traceback); Ctrl-C stops after the current round (exit status 130) and the same command resumes.
"""

from __future__ import annotations

import functools

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from feddat_jax.cli import main as cli

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiment config file, FILE[:ARG]", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder (resume: the same folder)")
_DEBUG = flags.DEFINE_boolean("debug", False, "show the traceback of every error")


def _load_config() -> None:
    """Touch the config: ml_collections loads the file (and applies overrides) lazily."""
    if _CONFIG.value is not None:
        _CONFIG.value.get("kind")


def main(argv) -> None:
    del argv
    absl_logging.set_verbosity(absl_logging.WARNING)  # orbax is chatty at INFO
    with cli.error_boundary(debug=_DEBUG.value):
        cli.require(_CONFIG.value, "config")
        cli.require(_WORKDIR.value, "workdir")
        from feddat_jax.cli.invocation import launch
        from feddat_jax.train.interrupt import StopRequest  # JAX is imported from here on

        with StopRequest() as stop:
            launch(_CONFIG.value, _WORKDIR.value, stop)


if __name__ == "__main__":
    app.run(main, flags_parser=functools.partial(cli.parse_flags, load_config=_load_config))
