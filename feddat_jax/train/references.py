"""The reference rows of every comparison: ``blind`` and ``centralized``.

A method's score means little alone: ``blind`` (no image) says how much of it the question text
gives away, ``centralized`` (one adapter on the pooled data) what the same model reaches without
federation. Both are computed on the run's own benchmark and written like a method's results
(``<workdir>/<name>/metrics.jsonl``), so the report treats them as rows of the same table.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections

from feddat_jax.errors import ConfigError
from feddat_jax.fl import mesh as mesh_lib
from feddat_jax.models import registry
from feddat_jax.train.blind import blind_history
from feddat_jax.train.experiment import build_experiment, load_benchmark
from feddat_jax.train.metrics import MetricsWriter, Record

REFERENCES = ("blind", "centralized")


def check_references(names) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [n for n in names if n not in REFERENCES]
    if unknown:
        raise ConfigError(
            f"unknown reference(s) {unknown}", "config.references", f"choose from {REFERENCES}"
        )
    return names


def run_reference(name: str, config: ml_collections.ConfigDict, workdir: Path) -> list[Record]:
    """Compute (or resume) reference ``name`` in ``workdir``; returns its metrics history."""
    if name == "blind":
        benchmark = load_benchmark(config.data, registry.patch_size(config))
        history = blind_history(benchmark, config.rounds)
        workdir.mkdir(parents=True, exist_ok=True)
        writer = MetricsWriter(workdir, history, tensorboard=False)
        writer.close()
        return history
    if name == "centralized":
        from feddat_jax.train.centralized import METHOD, train_centralized

        ref_config = config.copy_and_resolve_references()
        ref_config.method = METHOD
        # one device of this process: the pooled batch is not a cohort to shard
        exp = build_experiment(ref_config, mesh_lib.make_mesh(1, 1, jax.local_devices()[:1]))
        return train_centralized(exp, workdir)
    raise ValueError(f"unknown reference {name!r}; allowed: {REFERENCES}")
