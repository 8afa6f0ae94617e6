"""Train a config from Python: what ``launch.py`` does for one method, for scripts and notebooks.

    from feddat_jax.train.method_run import run_method

    config = demo.get_config()                 # any config of configs/
    config.sweep.seed = (0, 1, 2)              # three seeds as ONE program (train.sweep)
    run = run_method(config, "runs/feddat")    # trains config.method, or resumes it
    run.histories                              # the metrics rows of each replica (seed)
    run.summary()                              # per setting: mean, std, ci95, scores, seeds, ...

``summary()`` is exactly what ``results.json`` holds for the method (``train.report``): one
entry per swept setting (just the method when only seeds are swept), with the mean over seeds
of the headline score (``mean``), ``std``, ``ci95``, every seed's score (``scores``) and seed
(``seeds``), the per-client means and the other evaluation variants.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import jax
import ml_collections
from jax.sharding import Mesh

from feddat_jax.data.partitioned import split_summary
from feddat_jax.train import stats
from feddat_jax.train.experiment import build_experiment
from feddat_jax.train.interrupt import StopRequest
from feddat_jax.train.loop import train
from feddat_jax.train.metrics import Record
from feddat_jax.train.report import final_scores
from feddat_jax.train.sweep import Sweep


@dataclasses.dataclass
class MethodRun:
    """One method's finished (or resumed-to-the-end) run: R replicas, R = 1 without a sweep."""

    method: str
    sweep: Sweep
    client_names: list[str]
    history: list[Record]  # every row of every replica, as in metrics.jsonl

    @property
    def histories(self) -> list[list[Record]]:
        """The rows of each replica (index r = replica r, ``sweep.setting(r)`` its values)."""
        return stats.split_replicas(self.history)

    def summary(self) -> dict[str, dict]:
        """Final scores per setting, averaged over seeds (``train.report.final_scores``)."""
        return final_scores({self.method: self.history}, self.client_names)


def run_method(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    mesh: Mesh | None = None,
    show_progress: bool = False,
    announce: Callable[[str], None] | None = None,
    stop: StopRequest | None = None,
) -> MethodRun:
    """Build and train ``config.method`` (every replica of its sweep) in ``workdir``.

    ``announce`` gets the lines describing the run before it starts, the data split's summary
    included (``launch.py`` prints them);
    ``stop`` ends it cleanly between rounds (``train.loop.train``).
    """
    experiment = build_experiment(config, mesh)
    if announce is not None:
        mesh = experiment.mesh
        sweep = experiment.sweep
        announce(
            f"== {config.method}: {len(experiment.client_names)} clients, {config.rounds} rounds"
            + (f", {sweep.size} replicas in one program" if sweep.swept else "")
            + f" -> {workdir} (mesh {dict(mesh.shape)} over {jax.process_count()} "
            f"process(es), strategy {experiment.strategy})"
        )
        for line in split_summary(experiment.benchmark):
            announce(line)
    history = train(experiment, workdir, show_progress=show_progress, stop=stop)
    return MethodRun(config.method, experiment.sweep, experiment.client_names, history)
