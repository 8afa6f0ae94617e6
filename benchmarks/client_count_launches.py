"""The client-count benchmark's launches (``benchmarks/client_count.py`` holds its settings):
one launch in-process through ``train.method_run.run_method``, the reference rows, and the separate
launches that ``sweep_speedup`` is timed against."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks import client_count_report as report


def head_for(config, method: str) -> str:
    """``shared`` where the library accepts a shared head for ``method``, else ``private``."""
    from feddat_jax.cli.validate import validate_config, with_method
    from feddat_jax.errors import ConfigError

    trial = with_method(config, method)
    trial.peft.head = "shared"
    try:
        validate_config(trial)
    except ConfigError:
        return "private"
    return "shared"


def launch(config, workdir: Path) -> tuple[list[dict], float, float, bool]:
    """Train (or resume) one launch in ``workdir``: (its metrics rows, wall s, process CPU s,
    resumed?). CPU seconds (all threads) say what a launch costs on a host shared with others."""
    from feddat_jax.cli.validate import validate_config
    from feddat_jax.train.method_run import run_method

    validate_config(config)
    resumed = (workdir / "metrics.jsonl").exists()
    t0, c0 = time.perf_counter(), time.process_time()
    run = run_method(config, workdir)
    return run.history, time.perf_counter() - t0, time.process_time() - c0, resumed


def blind_scorer(config, largest: int):
    """``score(client names) -> %``: the blind row on those clients (the benchmark is lazy: only
    the named clients' questions are drawn)."""
    from feddat_jax.models import backbones
    from feddat_jax.train.blind import blind_scores
    from feddat_jax.train.experiment import load_benchmark

    data = config.data.copy_and_resolve_references()
    data.num_clients = largest
    bench = load_benchmark(data, backbones.patch_size(config), config.peft.head)
    clients, cache = {c.name: c for c in bench.clients}, {}

    def score(names: list[str]) -> float:
        for n in names:
            if n not in cache:
                cache[n] = 100.0 * float(blind_scores(clients[n]).mean())
        return sum(cache[n] for n in names) / len(names)

    return score


def centralized(
    config, n: int, seeds, names: list[str], workdir: Path
) -> tuple[dict, float, float]:
    """The pooled reference at N = n (one head, shared), every seed, scored on ``names``."""
    from feddat_jax.train import stats
    from feddat_jax.train.references import run_reference

    c = config.copy_and_resolve_references()
    c.data.num_clients, c.peft.head, c.sweep.seed = n, "shared", tuple(seeds)
    t0, c0 = time.perf_counter(), time.process_time()
    history = run_reference("centralized", c, workdir)
    per_seed = []
    for rows in stats.split_replicas(history):
        last = report.final_row(rows)
        score = sum(last[f"score/{k}/global"] for k in names) / len(names)
        per_seed.append(
            {
                "seed": rows[0].get("seed", seeds[0]),
                "score": score,
                "took_part": score,
                "never": None,
                "ci95": None,
                "took_part_clients": len(names),
            }
        )
    return report.cell(per_seed), time.perf_counter() - t0, time.process_time() - c0


def speedup(swept, plan, one_launch_s: float | None) -> dict:
    """``swept`` (one launch of R = seeds x counts replicas) against each replica's own run
    (``Sweep.replica_config``: the run a replica equals), fresh workdirs, this process; the one
    launch is re-timed when ``one_launch_s`` is None (the benchmark's own launch was resumed, so
    its time says nothing)."""
    from feddat_jax.train.sweep import sweep_from_config

    sweep = sweep_from_config(swept)
    with tempfile.TemporaryDirectory() as tmp:
        if one_launch_s is None:
            one_launch_s = launch(swept, Path(tmp) / "one")[1]  # wall s
        separate = 0.0
        for r in range(sweep.size):
            setting = sweep.setting(r)
            seed, n = setting["seed"], setting["data.num_clients"]
            wall = launch(sweep.replica_config(swept, r), Path(tmp) / f"s{seed}_n{n}")[1]
            separate += wall
            print(f"  separate launch seed {seed}, N {n}: {wall:.0f} s", flush=True)
    return {
        "method": swept.method,
        "num_clients": list(plan.counts),
        "seeds": list(plan.seeds),
        "rounds": plan.rounds,
        "one_launch_s": round(one_launch_s, 1),
        "separate_s": round(separate, 1),
        "separate_launches": sweep.size,
        "where": "in one Python process, each launch in a fresh workdir (Python and JAX start-up "
        "not included; XLA compiles each launch anew)",
        "quick_settings": plan.quick,
        "load_average": os.getloadavg()[0],
    }
