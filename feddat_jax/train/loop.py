"""The training loop: the thin shell around the pure round.

Per round: sample the cohort (seeded by round; with ``dp.sampling="poisson"`` a Poisson cohort,
padded to one static size for the whole run) and pad it to a multiple of the mesh's ``clients``
axis, gather the cohort's private state from the :class:`~feddat_jax.fl.registry.ClientRegistry`,
run the round (``fl.segments.SegmentedRound``: one jitted call, or ``segment_steps``-step segments
whose batches are read, placed on the mesh and prefetched on a host thread one segment ahead; the
progress bar moves per segment), scatter the private state back, check for NaN, log, evaluate
``eval_clients`` sampled clients (0: every client) every ``eval_every`` rounds and after the
last (``eval_clients_per_call`` at a time), checkpoint every ``checkpoint_every`` rounds and after the last.
Restarting with the same workdir resumes from the newest whole checkpoint and reproduces the
uninterrupted run exactly.

The same code runs on one device, on a mesh of several, and in several processes (hosts): each
process keeps the private state of the clients it owns (``fl.distributed.owned_clients``; all of them in
one process), builds only its cohort slots' batches, and the results are gathered on every
process. Padded slots have ``num_examples = 0`` and an all-zero ``example_mask``: they train
nothing, weigh nothing in the aggregation, and are dropped from the metrics and the scatter.
Only process 0 writes metrics files; every process takes part in the (collective) checkpoints.

A sweep (``train.sweep``) runs its R replicas through the same loop: each round every replica
draws its own cohort (``train.cohorts``), the same calls train them all (one per round, or one per
segment), each evaluation chunk is evaluated for every replica at once, and each replica writes
its own metrics row (``replica``, its seed and swept values included). A checkpoint holds every
replica, so a sweep resumes exactly like a single run.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from feddat_jax.data.pipeline import Prefetcher
from feddat_jax.errors import NonFiniteLossError, RunInterrupted
from feddat_jax.fl import distributed, sampling
from feddat_jax.fl import mesh as mesh_lib
from feddat_jax.fl.communication import CommunicationBudget, round_traffic
from feddat_jax.fl.registry import ClientRegistry, pad_batches
from feddat_jax.train import finetune
from feddat_jax.train import scores as scores_lib
from feddat_jax.train.checkpoint_layout import all_trained, checkpoint_target, dense_layouts
from feddat_jax.train.checkpoints import RoundCheckpointer
from feddat_jax.train.cohorts import CohortPlanner
from feddat_jax.train.experiment import Experiment
from feddat_jax.train.interrupt import StopRequest
from feddat_jax.train.metrics import MetricsWriter, Record

log = logging.getLogger(__name__)
PyTree = Any
# client_storage="auto" keeps the clients on the device when they take at most this share of its
# memory (or DEVICE_STORAGE_FALLBACK_BYTES where the backend does not report it, e.g. CPU)
DEVICE_STORAGE_SHARE = 0.25
DEVICE_STORAGE_FALLBACK_BYTES = 2 << 30


def check_finite(
    metrics_C: dict, cohort: np.ndarray, names: list[str], round_number: int, where: str = ""
) -> None:
    """Raise :class:`NonFiniteLossError` naming the round (numbered from 1), the clients and
    (in a sweep) the replica."""
    for key, values in metrics_C.items():
        bad = ~np.isfinite(np.asarray(values, np.float64))
        if bad.any():
            who = [names[cohort[i]] for i in np.flatnonzero(bad)]
            raise NonFiniteLossError(
                f"round {round_number}: {key} is not finite for client(s) {who}{where}",
                "the run stopped; the last good checkpoint is kept",
                "lower config.optim.learning_rate or check the data, then rerun",
            )


def round_record(
    exp: Experiment,
    round_index: int,
    cohort: np.ndarray,
    metrics: dict,
    seconds: float,
    replica: int = 0,
) -> Record:
    names = exp.client_names
    metrics_C = jax.device_get(metrics["clients"])
    record: Record = {
        "round": round_index + 1,
        **exp.sweep.row_fields(exp.config, replica),
        "time/round_s": seconds,
        "cohort": ",".join(names[k] for k in cohort),
    }
    if len(cohort) == 0:  # an empty Poisson cohort: the round released noise only
        log.info(
            "round %d: empty Poisson cohort (the server update is DP noise only)", round_index + 1
        )
    for key, values in metrics_C.items():
        if len(values):
            record[f"train/{key}"] = float(np.mean(values))
        for k, v in zip(cohort, values):
            record[f"train/{names[k]}/{key}"] = float(v)
    for key, value in jax.device_get(metrics["server"]).items():
        record[f"server/{key}"] = float(value)
    record.update(exp.param_share.metrics())
    accountant = exp.accountant_of(replica)
    if accountant is not None:
        record.update(accountant.metrics(round_index + 1))
    return record


def client_scores(exp: Experiment, scores_CxSxB: dict, client_ids) -> dict[str, list[np.ndarray]]:
    """Per variant, each listed client's per-example test scores in stored order (the rows of
    ``scores_CxSxB`` are these clients' evaluation slots, padding dropped)."""
    rows = exp.eval_rows(client_ids)
    return {
        variant: scores_lib.per_client(values, rows)
        for variant, values in jax.device_get(scores_CxSxB).items()
    }


def summary_record(
    exp: Experiment,
    per_client: dict[str, list[np.ndarray]],
    client_ids,
    tags,
    took_part,
    population: int | None = None,
) -> Record:
    """Per-client, per-group and per-question-type means (``train.scores``) of these clients'
    per-example scores, and what they say of the federation's ``population`` clients (default:
    every registered one) as a sample (``scores.sample_summary``); ``tags``: each client's
    test-row tags (``exp.eval_tags``); ``took_part``: whether each has trained so far."""
    names = [exp.client_names[k] for k in client_ids]
    population = population or len(exp.client_names)
    record: Record = {}
    for variant, scores in per_client.items():
        record.update(scores_lib.summarize(variant, scores, names, tags))
        means = [100.0 * np.mean(s) if len(s) else np.nan for s in scores]
        record.update(scores_lib.sample_summary(variant, means, took_part, population))
    return record


def eval_record(exp: Experiment, scores_NxSxB: dict, client_ids, took_part) -> Record:
    """:func:`summary_record` of one evaluation call over clients ``client_ids`` (rows of
    ``scores_NxSxB``, in that order)."""
    per_client = client_scores(exp, scores_NxSxB, client_ids)
    return summary_record(exp, per_client, client_ids, exp.eval_tags(client_ids), took_part)


def client_storage(setting: str, nbytes: int, mesh) -> str:
    """``config.client_storage`` resolved: "auto" is "device" when one process holds the clients
    and they fit (:data:`DEVICE_STORAGE_SHARE` of a device's memory), else "host"."""
    if setting != "auto":
        return setting
    if jax.process_count() > 1:
        return "host"
    device = mesh.devices.flat[0] if mesh is not None else jax.devices()[0]
    try:
        limit = (device.memory_stats() or {}).get("bytes_limit")
    except Exception:  # backends without memory stats
        limit = None
    budget = DEVICE_STORAGE_SHARE * limit if limit else DEVICE_STORAGE_FALLBACK_BYTES
    return "device" if nbytes <= budget else "host"


def host_rows(tree: PyTree) -> PyTree:
    """Host numpy of (possibly sharded, possibly multi-process) arrays, every row on every process
    (typed PRNG keys come back as their key data)."""

    def leaf(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(leaf, tree)


class _HistoryOnly:
    """The metrics history without files: the writer of every process but the first."""

    def __init__(self, history):
        self.history = list(history)

    def write(self, record: Record) -> None:
        self.history.append(record)

    def close(self) -> None:
        pass


def train(
    exp: Experiment,
    workdir: str | Path,
    *,
    show_progress: bool = True,
    stop: StopRequest | None = None,
) -> list[Record]:
    """Run (or resume) ``exp`` in ``workdir``; returns the per-round metrics history (a sweep:
    one row per replica and round, ``train.stats.split_replicas`` splits it).

    ``stop`` (see :mod:`feddat_jax.train.interrupt`) is asked between rounds; when it says so,
    the last finished round is checkpointed and :class:`RunInterrupted` is raised.
    """
    cfg, mesh, sweep = exp.config, exp.mesh, exp.sweep
    if mesh is None:
        mesh = mesh_lib.make_mesh(1, 1, jax.devices()[:1])
        exp = dataclasses.replace(exp, mesh=mesh)
    primary = jax.process_index() == 0
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = RoundCheckpointer(workdir / "checkpoints", exp.run_fingerprint())
    server, history, trained = exp.server, [], None
    restored = ckpt.restore_latest(
        lambda meta: checkpoint_target(exp, meta.get("trained_slots", 1)), dense_layouts(exp)
    )
    if restored is not None:
        start, state, meta = restored
        server = mesh_lib.put_replicated(state["server"], mesh)
        trained, history = state["private"], meta["history"]
    writer = (
        MetricsWriter(workdir, history, tensorboard=cfg.tensorboard, runs=sweep.run_names())
        if primary
        else _HistoryOnly(history)
    )
    start = int(np.max(mesh_lib.fetch_replicated(server.round)))  # every replica is at one round
    if primary and restored is not None:
        print(
            f"{cfg.method} already complete ({start} rounds)"
            if start >= cfg.rounds
            else f"resumed {cfg.method} at round {start + 1} of {cfg.rounds} "
            f"(checkpoint of round {start})",
            flush=True,
        )
    n = len(exp.client_names)
    static_steps = exp.round_steps()  # capped rounds take the first steps of the epoch

    # This process's clients (all of them in one process). A client holds private state of its
    # own only once it has trained, so the most that ever will (every round's cohort new) bounds
    # the registry; on a device that is allocated up front (no regrowth, no recompilation).
    planner = CohortPlanner(exp)
    owned = distributed.owned_clients(n)
    capacity = min(len(owned), cfg.rounds * planner.cohort_slots)
    per_client = sum(x.nbytes // x.shape[0] for x in jax.tree.leaves(exp.private_init))
    storage = client_storage(cfg.client_storage, per_client * exp.sweep.size * capacity, mesh)
    registry = ClientRegistry(
        exp.private_init,
        jax.tree.map(lambda x: np.asarray(x)[owned], exp.tasks),
        client_ids=owned,
        capacity=capacity if storage == "device" else min(capacity, planner.cohort_slots),
        storage=storage,
        mesh=mesh,
    )
    if trained is not None:
        registry.restore_trained(trained["ids"], trained["state"])

    # The local epoch runs in segments of at most config.segment_steps steps (one window = one
    # call per round); each segment's rows (every replica's) are read, placed and prefetched on
    # their own.
    segmented = exp.segmented_round
    windows = segmented.windows(static_steps)

    def next_segment(key: tuple[int, int]) -> tuple[int, int] | None:
        r, k = key
        if k + 1 < len(windows):
            return r, k + 1
        return (r + 1, 0) if r + 1 < cfg.rounds else None

    # Evaluation covers config.eval_clients sampled clients (0: every client), the same ones
    # every time, config.eval_clients_per_call at a time (0: a training cohort's size), each
    # chunk padded like a cohort to one static shape (one compilation); a chunk's test data is
    # read when it is evaluated (once for every replica of a sweep), the next one prefetched
    # meanwhile. A client that never trained is scored with the initial private state.
    eval_ids, eval_mask, evaluated = planner.evaluation_clients()
    chunk = cfg.eval_clients_per_call or sampling.cohort_size(n, cfg.clients_per_round)
    eval_chunks = [
        (ids, mask, distributed.local_slots(mesh, len(ids)))
        for ids, mask in distributed.chunk_cohort(eval_ids, eval_mask, mesh, chunk)
    ]

    def build_eval(i: int, rounds_done: int) -> tuple[dict, dict | None]:
        """Chunk i's test batches, and for a method that finetunes before it scores, every
        replica's finetune batches of the evaluation after ``rounds_done`` rounds (else None)."""
        ids, mask, mine = eval_chunks[i]
        real = ids[mine][mask[mine]]
        batch = pad_batches(exp.eval_batches(real), len(ids[mine]))
        test = mesh_lib.put_clients(batch, mesh, len(ids))
        if not exp.method.finetune:
            return test, None
        train = finetune.replica_batches(exp, real, len(ids[mine]), rounds_done)
        return test, mesh_lib.put_cohort(train, mesh, len(ids))

    def evaluate(round_start_shared, rounds_done: int) -> list[Record]:
        """One record per replica: its per-client, per-group and per-question-type scores."""
        took_part = planner.took_part(rounds_done)
        # replica -> variant -> client -> scores
        per_client: list[dict[str, dict[int, np.ndarray]]] = [{} for _ in range(sweep.size)]
        tags: dict[int, dict[str, np.ndarray]] = {}
        build = functools.partial(build_eval, rounds_done=rounds_done)
        with Prefetcher(build, last_round=len(eval_chunks) - 1) as prefetch:
            for i, (ids, mask, mine) in enumerate(eval_chunks):
                private_E, tasks_E = registry.gather(
                    sweep.stack([ids[mine]] * sweep.size), sweep.stack([mask[mine]] * sweep.size)
                )
                test, train = prefetch.get(i)
                out = exp.eval_fn(
                    exp.frozen,
                    round_start_shared,
                    server.shared,
                    private_E,
                    tasks_E,
                    test,
                    train,
                    exp.hparams,
                )
                real = ids[mask].tolist()
                for replica, scores in zip(per_client, sweep.unstack(host_rows(out))):
                    chunk = client_scores(exp, {k: v[mask] for k, v in scores.items()}, real)
                    for variant, values in chunk.items():
                        replica.setdefault(variant, {}).update(zip(real, values))
                tags.update(zip(real, exp.eval_tags(real)))
        return [
            summary_record(
                exp,
                {v: [by_client[k] for k in mine] for v, by_client in replica.items()},
                mine.tolist(),
                [tags[k] for k in mine],
                took_part[i, mine],
                planner.populations[i],
            )
            for i, (replica, mine) in enumerate(zip(per_client, evaluated))
        ]

    comm_totals = [0] * sweep.size
    for record in history:
        comm_totals[int(record.get("replica", 0))] = record["comm/bytes_cumulative"]
    budget = CommunicationBudget(cfg.comm_max_bytes or None)
    shared_shapes = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), server.shared
    )
    bar = tqdm(
        total=cfg.rounds * static_steps,
        initial=start * static_steps,
        unit="step",
        desc=cfg.method + (f" x{sweep.size}" if sweep.swept else ""),
        disable=not (show_progress and primary),
        dynamic_ncols=True,
    )

    saved = done = start

    def segment_done(k: int) -> None:
        bar.update(windows[k][1] - windows[k][0])

    def save(rounds_done: int) -> None:
        nonlocal saved
        ids, private = all_trained(registry)
        ckpt.save(
            rounds_done,
            # host copies: the checkpoint does not depend on the mesh or process count
            {"server": host_rows(server), "private": {"ids": ids, "state": private}},
            {"history": writer.history, "trained_slots": int(ids.shape[1])},
        )
        saved = rounds_done

    build = functools.partial(planner.segment_batches, windows=windows)
    with Prefetcher(build, successor=next_segment) as prefetch:
        for r in range(start, cfg.rounds):
            if stop is not None and stop.requested():
                if saved < r:
                    save(r)
                bar.close()
                writer.close()
                raise RunInterrupted(cfg.method, r)
            ids, masks, mine = planner.plans(r)
            cohorts = [i[m] for i, m in zip(ids, masks)]
            traffic = [round_traffic(shared_shapes, len(c)) for c in cohorts]
            if any(budget.exhausted(c, t.total_bytes) for c, t in zip(comm_totals, traffic)):
                log.warning(
                    "communication budget of %d bytes reached after %d rounds (%d bytes used); "
                    "stopping",
                    cfg.comm_max_bytes,
                    r,
                    max(comm_totals),
                )
                break
            built, waited = prefetch.build_seconds, prefetch.wait_seconds
            t0 = time.perf_counter()
            round_start_shared = server.shared
            ids_local, masks_local = planner.local(ids, mine), planner.local(masks, mine)
            private_C, tasks_C = registry.gather(ids_local, masks_local)
            server, private_C, metrics = segmented(
                exp.frozen,
                server,
                private_C,
                tasks_C,
                registry.client_ids_array(ids_local),
                (prefetch.get((r, k)) for k in range(len(windows))),
                on_segment=segment_done,
                hparams=exp.hparams,
            )
            registry.scatter(ids_local, private_C, masks_local)
            jax.block_until_ready(server.shared)
            seconds = time.perf_counter() - t0
            clients_R = sweep.unstack(host_rows(metrics["clients"]))
            server_R = sweep.unstack(host_rows(metrics["server"]))
            records = []
            for i in range(sweep.size):
                m = {
                    "clients": {k: v[masks[i]] for k, v in clients_R[i].items()},
                    "server": server_R[i],
                }
                where = f" (replica {i}: {sweep.label(i)})" if sweep.swept else ""
                check_finite(m["clients"], cohorts[i], exp.client_names, r + 1, where)
                comm_totals[i] += traffic[i].total_bytes
                record = round_record(exp, r, cohorts[i], m, seconds, i)
                record.update(traffic[i].metrics(comm_totals[i]))
                # host input time (built on the prefetch thread) vs what the round waited for it
                record["time/input_build_s"] = prefetch.build_seconds - built
                record["time/input_wait_s"] = prefetch.wait_seconds - waited
                records.append(record)
            if (r + 1) % cfg.eval_every == 0 or r + 1 == cfg.rounds:
                t_eval = time.perf_counter()
                for record, scores in zip(records, evaluate(round_start_shared, r + 1)):
                    record.update(scores)
                    record["time/eval_s"] = time.perf_counter() - t_eval
            for record in records:
                writer.write(record)
            if (r + 1) % cfg.checkpoint_every == 0 or r + 1 == cfg.rounds:
                save(r + 1)
            done = r + 1
            bar.set_postfix(round=r + 1, **_headline(records))
    if saved < done:  # stopped early by the communication budget between checkpoints
        save(done)
    bar.close()
    writer.close()
    return writer.history


def _headline(records: list[Record]) -> dict[str, Any]:
    """The progress bar's numbers: the loss and mean scores (averaged over a sweep's replicas)."""
    keys = [
        k
        for k in records[0]
        if k.startswith("score/mean/") or k in ("train/loss", "train/loss_dat")
    ]
    digits = {k: 1 if k.startswith("score/") else 3 for k in keys}
    return {
        k.split("/")[-1] if k.startswith("score/") else k: round(
            float(np.mean([r[k] for r in records])), digits[k]
        )
        for k in keys
    }
