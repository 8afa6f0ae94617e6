"""The run's config as Flower carries it: a config file spec plus overrides, both plain strings.

Flower's run config holds scalars only, so a run is named the way ``launch.py`` names it, the
config file ``FILE[:ARG]`` and its ``--config.KEY=VALUE`` overrides (JSON text ``{"KEY": VALUE}``),
and every party (the ServerApp, each ClientApp) builds the very same ``ConfigDict`` from them.
A node thus runs exactly the config the run names and needs nothing but the project's files.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Mapping

import ml_collections

from feddat_jax.errors import ConfigError
from feddat_jax.train.config_base import config_from_file

CONFIG_KEY, OVERRIDES_KEY = "config", "overrides"


def load(spec: str, overrides: Mapping[str, object] | str = "") -> ml_collections.ConfigDict:
    """``config_from_file(spec)`` with ``overrides`` (a dict or its JSON text) applied."""
    if isinstance(overrides, str):
        overrides = json.loads(overrides) if overrides.strip() else {}
    config = config_from_file(spec)
    for path, value in overrides.items():
        *parents, leaf = path.split(".")
        node = config
        try:
            for key in parents:
                node = node[key]
            old = node[leaf]
        except (KeyError, AttributeError) as err:
            raise ConfigError(
                f"unknown config key {path!r}", "config overrides", "use a key of the config file"
            ) from err
        node[leaf] = tuple(value) if isinstance(old, tuple) and isinstance(value, list) else value
    return config


def parse_override(flag: str) -> tuple[str, object]:
    """``--config.a.b=VALUE`` -> ("a.b", value); VALUE is a Python literal or else a string."""
    body = flag.removeprefix("--config.")
    if "=" not in body:
        raise ConfigError(f"bad override {flag!r}", "command line", "write --config.KEY=VALUE")
    key, text = body.split("=", 1)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = text
    return key, list(value) if isinstance(value, tuple) else value


def run_config(spec: str, overrides: Mapping[str, object]) -> dict[str, str]:
    """The two entries of Flower's run config that name the run."""
    return {CONFIG_KEY: spec, OVERRIDES_KEY: json.dumps(dict(overrides), sort_keys=True)}
