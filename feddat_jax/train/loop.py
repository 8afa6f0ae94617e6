"""The training loop: the thin shell around the pure round.

Per round: sample the cohort (seeded by round), assemble its batches (prefetched on a host
thread), run the ONE jitted round, check for NaN, scatter the cohort's private state back, log,
evaluate every ``eval_every`` rounds and after the last, checkpoint every ``checkpoint_every``
rounds and after the last. Restarting with the same workdir resumes from the newest whole
checkpoint and reproduces the uninterrupted run exactly.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm import tqdm

from feddat_jax.data.pipeline import Prefetcher, cohort_batches
from feddat_jax.fl.communication import CommunicationBudget, round_traffic
from feddat_jax.fl.sampling import sample_clients
from feddat_jax.fl.state import gather, scatter
from feddat_jax.train.checkpoints import RoundCheckpointer, config_fingerprint
from feddat_jax.train.config_base import fingerprint_json
from feddat_jax.train.experiment import Experiment
from feddat_jax.train.metrics import MetricsWriter, Record

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A client's loss became NaN or infinite; the last good checkpoint is kept."""


def check_finite(metrics_C: dict, cohort: np.ndarray, names: list[str], round_index: int) -> None:
    for key, values in metrics_C.items():
        bad = ~np.isfinite(np.asarray(values, np.float64))
        if bad.any():
            who = [names[cohort[i]] for i in np.flatnonzero(bad)]
            raise NonFiniteLossError(
                f"round {round_index}: {key} is not finite for client(s) {who}; the run stopped and "
                "the last good checkpoint is kept (lower the learning rate or check the data)"
            )


def round_record(
    exp: Experiment, round_index: int, cohort: np.ndarray, metrics: dict, seconds: float
) -> Record:
    names = exp.client_names
    metrics_C = jax.device_get(metrics["clients"])
    record: Record = {
        "round": round_index + 1,
        "time/round_s": seconds,
        "cohort": ",".join(names[k] for k in cohort),
    }
    for key, values in metrics_C.items():
        record[f"train/{key}"] = float(np.mean(values))
        for k, v in zip(cohort, values):
            record[f"train/{names[k]}/{key}"] = float(v)
    for key, value in jax.device_get(metrics["server"]).items():
        record[f"server/{key}"] = float(value)
    record.update(exp.param_share.metrics())
    if exp.accountant is not None:
        record.update(exp.accountant.metrics(round_index + 1))
    return record


def eval_record(exp: Experiment, scores: dict) -> Record:
    scores = jax.device_get(scores)
    record: Record = {}
    for variant, per_client in scores.items():
        for name, value in zip(exp.client_names, per_client):
            record[f"score/{name}/{variant}"] = float(value)
        record[f"score/mean/{variant}"] = float(np.mean(per_client))
    return record


def train(exp: Experiment, workdir: str | Path, *, show_progress: bool = True) -> list[Record]:
    """Run (or resume) ``exp`` in ``workdir``; returns the per-round metrics history."""
    cfg = exp.config
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = RoundCheckpointer(workdir / "checkpoints", config_fingerprint(fingerprint_json(cfg)))
    server, private_N, history = exp.server, exp.private_N, []
    restored = ckpt.restore_latest({"server": server, "private": private_N})
    if restored is not None:
        start, state, meta = restored
        server, private_N, history = state["server"], state["private"], meta["history"]
        log.info("resumed %s from round %d", workdir, start)
    writer = MetricsWriter(workdir, history, tensorboard=cfg.tensorboard)
    start = int(server.round)
    n = len(exp.client_names)
    static_steps = exp.train_store.max_steps(cfg.batch_size)

    def cohort_of(r: int) -> np.ndarray:
        return sample_clients(cfg.seed, r, n, cfg.clients_per_round)

    def build(r: int) -> dict:  # on the prefetch thread: answer lists (ALBEF) included
        cohort = cohort_of(r)
        return exp.with_answer_lists(
            cohort_batches(
                exp.train_store,
                cohort,
                cfg.batch_size,
                seed=cfg.seed,
                round_index=r,
                num_steps=static_steps,
                same_order_each_round=cfg.faithful.same_order_each_round,
            ),
            cohort,
        )

    comm_total = history[-1]["comm/bytes_cumulative"] if history else 0
    budget = CommunicationBudget(cfg.comm_max_bytes or None)
    steps_per_round = static_steps
    bar = tqdm(
        total=cfg.rounds * steps_per_round,
        initial=start * steps_per_round,
        unit="step",
        desc=cfg.method,
        disable=not show_progress,
        dynamic_ncols=True,
    )
    with Prefetcher(build, last_round=cfg.rounds - 1) as prefetch:
        for r in range(start, cfg.rounds):
            cohort = cohort_of(r)
            traffic = round_traffic(server.shared, len(cohort))
            if budget.exhausted(comm_total, traffic.total_bytes):
                log.warning(
                    "communication budget of %d bytes reached after %d rounds (%d bytes used); "
                    "stopping",
                    cfg.comm_max_bytes,
                    r,
                    comm_total,
                )
                break
            batches = prefetch.get(r)
            t0 = time.perf_counter()
            round_start_shared = server.shared
            server, private_C, metrics = exp.round_fn(
                exp.frozen,
                server,
                gather(private_N, cohort),
                gather(exp.tasks, cohort),
                jax.numpy.asarray(cohort),
                batches,
            )
            jax.block_until_ready(server.shared)
            check_finite(jax.device_get(metrics["clients"]), cohort, exp.client_names, r)
            private_N = scatter(private_N, cohort, private_C)
            comm_total += traffic.total_bytes
            record = round_record(exp, r, cohort, metrics, time.perf_counter() - t0)
            record.update(traffic.metrics(comm_total))
            if (r + 1) % cfg.eval_every == 0 or r + 1 == cfg.rounds:
                record.update(
                    eval_record(
                        exp,
                        exp.eval_fn(
                            exp.frozen,
                            round_start_shared,
                            server.shared,
                            private_N,
                            exp.tasks,
                            exp.eval_data,
                        ),
                    )
                )
            writer.write(record)
            if (r + 1) % cfg.checkpoint_every == 0 or r + 1 == cfg.rounds:
                ckpt.save(
                    r + 1, {"server": server, "private": private_N}, {"history": writer.history}
                )
            bar.update(steps_per_round)
            bar.set_postfix(round=r + 1, **_headline(record))
    bar.close()
    writer.close()
    return writer.history


def _headline(record: Record) -> dict[str, Any]:
    scores = {
        k.split("/")[-1]: round(v, 1) for k, v in record.items() if k.startswith("score/mean/")
    }
    loss = {k: round(v, 3) for k, v in record.items() if k in ("train/loss", "train/loss_dat")}
    return {**loss, **scores}
