"""The reference rows of every comparison: ``blind`` and ``centralized``.

A method's score means little alone: ``blind`` (no image) says how much of it the question text
gives away, ``centralized`` (one adapter on the pooled data) what the same model reaches without
federation. Both are computed on the run's own benchmark and written like a method's results
(``<workdir>/<name>/metrics.jsonl``), so the report treats them as rows of the same table.

In a sweep (``config.sweep``), ``blind`` is computed once: it depends on the data alone, which no
seed changes. ``centralized`` depends on the seed (initialisation, data order), so it trains once
per distinct seed of the sweep, each in ``<workdir>/centralized/seed_<s>``, with the config's own
hyperparameters (swept hyperparameters are the methods'); its rows carry ``replica`` and
``seed`` like a sweep's, so the report gives it mean ± std over the seeds too.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections

from feddat_jax.errors import ConfigError
from feddat_jax.fl import mesh as mesh_lib
from feddat_jax.models import backbones
from feddat_jax.train.blind import blind_history
from feddat_jax.train.experiment import build_experiment, load_benchmark
from feddat_jax.train.metrics import MetricsWriter, Record
from feddat_jax.train.sweep import sweep_from_config

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
        benchmark = load_benchmark(config.data, backbones.patch_size(config))
        history = blind_history(benchmark, config.rounds)
        workdir.mkdir(parents=True, exist_ok=True)
        writer = MetricsWriter(workdir, history, tensorboard=False)
        writer.close()
        return history
    if name == "centralized":
        seeds = reference_seeds(config)
        if len(seeds) == 1:
            return _centralized(config, seeds[0], workdir)
        history = []
        for replica, seed in enumerate(seeds):
            rows = _centralized(config, seed, workdir / f"seed_{seed}")
            history += [{"replica": replica, "seed": seed, **row} for row in rows]
        MetricsWriter(workdir, history, tensorboard=False).close()  # every seed's rows
        return history
    raise ValueError(f"unknown reference {name!r}; allowed: {REFERENCES}")


def reference_seeds(config: ml_collections.ConfigDict) -> list[int]:
    """The seeds a seed-dependent reference runs with: the sweep's distinct seeds in order
    (``config.seed`` when no seed is swept)."""
    return list(dict.fromkeys(sweep_from_config(config).seeds(config)))


def _centralized(config: ml_collections.ConfigDict, seed: int, workdir: Path) -> list[Record]:
    from feddat_jax.train.centralized import METHOD, train_centralized

    ref_config = config.copy_and_resolve_references()
    with ref_config.unlocked():
        ref_config.method, ref_config.seed = METHOD, seed
        if "sweep" in ref_config:
            del ref_config["sweep"]  # one run: the fingerprint of an unswept config
    # one device of this process: the pooled batch is not a cohort to shard
    exp = build_experiment(ref_config, mesh_lib.make_mesh(1, 1, jax.local_devices()[:1]))
    return train_centralized(exp, workdir)
