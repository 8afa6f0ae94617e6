"""The server's side: the simulated loop's round, with the local updates done by the nodes.

Per round: the cohort of the simulated run (``train.cohorts.CohortPlanner``: a function of the
seed and the round), a train message to each node that holds cohort clients (the shared
parameters and its clients' ids), their deltas checked on arrival (``protocol``), stacked in the
cohort's order and folded in by the project's server step (``fl.round.server_step``: the
config's aggregation, DP-FedAvg included, and server optimizer: FedAvg, FedAvgM, FedAdam,
FedYogi). The metrics rows, evaluation, report and checkpoints are the simulated run's
(``train.loop``'s row builders, ``train.metrics.MetricsWriter``, ``train.checkpoints``).

Faults: a node that does not answer within ``round_timeout`` seconds (killed, partitioned) or
answers with an error is left out of the round, which finishes with the others (the row names
the dropped clients in ``flower/dropped``); a round nobody answers is retried up to ``retries``
times, then the run stops with a one-line error. A node keeps its clients' state on disk, so
when it comes back it trains them from where they were. The server checkpoints its state after
every ``checkpoint_every`` rounds and resumes from it when restarted with the same workdir.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from feddat_jax.errors import DataError, DistributedError, RunInterrupted
from feddat_jax.fl.communication import round_traffic
from feddat_jax.fl.round import round_keys, server_step
from feddat_jax.fl.state import ServerState
from feddat_jax.flower import protocol, wire
from feddat_jax.flower.federation import Federation
from feddat_jax.train.checkpoints import RoundCheckpointer
from feddat_jax.train.cohorts import CohortPlanner
from feddat_jax.train.interrupt import StopRequest
from feddat_jax.train.loop import eval_record, round_record
from feddat_jax.train.metrics import MetricsWriter, Record

log = logging.getLogger(__name__)
PyTree = Any


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    round_timeout: float = 600.0  # seconds a round waits for the nodes' replies
    node_wait: float = 120.0  # seconds to wait for every node to connect at the start
    retries: int = 2  # re-sends of a round that no node answered
    rejoin_wait: float = 0.0  # seconds a round waits for its nodes to be online (a restart)


@dataclasses.dataclass
class NodeInfo:
    node_id: int  # Flower's id of the node
    partition: int
    clients: list[int]


class FlowerServer:
    def __init__(self, fed: Federation, workdir: str | Path, options: ServerOptions = ServerOptions()):
        self.fed, self.options = fed, options
        self.workdir = Path(workdir)
        self.planner = CohortPlanner(fed.exp)
        self._step = jax.jit(functools.partial(server_step, fed.server_tx, fed.aggregator))
        self.nodes: list[NodeInfo] = []

    # ------------------------------------------------------------------ messaging
    def _send(self, grid: Grid, kind: str, contents: dict[int, RecordDict], group: str):
        """``{node_id: reply content}`` of the nodes that answered in time without an error."""
        messages = [
            Message(content, dst_node_id=node_id, message_type=kind, group_id=group)
            for node_id, content in contents.items()
        ]
        replies = grid.send_and_receive(messages, timeout=self.options.round_timeout)
        out = {}
        for reply in replies:
            source = reply.metadata.src_node_id
            if reply.has_error():
                log.warning("node %s answered %s with an error: %s", source, kind, reply.error.reason)
                continue
            out[source] = reply.content
        return out

    def connect(self, grid: Grid) -> list[NodeInfo]:
        """Wait for every node of the federation and learn which clients each one holds."""
        deadline = time.monotonic() + self.options.node_wait
        found: dict[int, NodeInfo] = {}
        expected = None
        while True:
            ids = [i for i in grid.get_node_ids() if i not in found]
            if ids:
                replies = self._send(grid, "query", {i: RecordDict() for i in ids}, "connect")
                for node_id, content in replies.items():
                    info = content.config_records["node"]
                    found[node_id] = NodeInfo(
                        node_id, int(info["partition"]), [int(k) for k in info["clients"]]
                    )
                    expected = int(info["partitions"])
            partitions = {n.partition for n in found.values()}
            if expected is not None and partitions == set(range(expected)):
                break
            if time.monotonic() > deadline:
                raise DistributedError(
                    f"only partitions {sorted(partitions)} of {expected} connected in "
                    f"{self.options.node_wait:.0f} s",
                    "the SuperNodes",
                    "start one SuperNode per partition-id (their node config)",
                )
            time.sleep(1.0)
        nodes = sorted(found.values(), key=lambda n: n.partition)
        held = sorted(k for n in nodes for k in n.clients)
        if held != list(range(self.fed.num_clients)):
            raise DistributedError(
                f"the nodes hold clients {held}, the run has {self.fed.num_clients}",
                "the SuperNodes' num-partitions",
                "start every node with the same num-partitions",
            )
        self.nodes = nodes
        return nodes

    # ------------------------------------------------------------------ one round
    def _await_nodes(self, grid: Grid, node_ids: list[int]) -> None:
        """Wait up to ``rejoin_wait`` seconds for these nodes to be online: a node restarting
        after a crash keeps its id (its key) and rejoins the next round instead of missing it."""
        deadline = time.monotonic() + self.options.rejoin_wait
        while not set(node_ids) <= set(grid.get_node_ids()) and time.monotonic() < deadline:
            time.sleep(1.0)

    def train_round(self, grid: Grid, server: ServerState, r: int, cohort: np.ndarray):
        """Send round ``r`` to the cohort's nodes; ``(clients that answered (cohort order),
        deltas, metrics, num_examples, upload bytes)``."""
        owner = {k: n for n in self.nodes for k in n.clients}
        asked: dict[int, list[int]] = {}
        for k in cohort.tolist():
            asked.setdefault(owner[k].node_id, []).append(k)
        self._await_nodes(grid, list(asked))
        shared = jax.device_get(server.shared)
        contents = {i: protocol.train_request(r, ks, shared) for i, ks in asked.items()}
        for attempt in range(self.options.retries + 1):
            replies = self._send(grid, "train", contents, f"round-{r}-{attempt}")
            got: dict[int, tuple] = {}
            upload = 0
            for node_id, content in replies.items():
                where = f"round {r + 1}, reply of node {node_id}"
                try:
                    deltas, metrics, num = protocol.read_train_reply(
                        content, asked[node_id], self.fed.shared_shapes, self.fed.private_paths, where
                    )
                except (DataError, KeyError) as err:
                    log.warning("%s", err)
                    continue
                upload += sum(wire.record_bytes(content.array_records[k]) for k in content.array_records)
                for i, k in enumerate(asked[node_id]):
                    got[k] = (deltas[i], {n: v[i] for n, v in metrics.items()}, num[i])
            if got:
                break
            log.warning("round %d: no node answered (attempt %d)", r + 1, attempt + 1)
        else:
            raise DistributedError(
                f"round {r + 1}: no node answered in {self.options.retries + 1} attempts",
                "the SuperNodes",
                "restart the nodes; the same command resumes from the last checkpoint",
            )
        done = np.asarray([k for k in cohort.tolist() if k in got], np.int64)
        delta_C = jax.tree.map(lambda *xs: np.stack(xs), *[got[k][0] for k in done])
        names = got[int(done[0])][1].keys()
        metrics_C = {n: np.asarray([got[k][1][n] for k in done]) for n in names}
        num_C = np.asarray([got[k][2] for k in done], np.int32)
        return done, delta_C, metrics_C, num_C, upload

    def evaluate(self, grid: Grid, rounds_done: int, round_start: PyTree, shared: PyTree) -> Record:
        contents = {
            n.node_id: protocol.eval_request(rounds_done, n.clients, round_start, shared)
            for n in self.nodes
        }
        replies = self._send(grid, "evaluate", contents, f"eval-{rounds_done}")
        missing = [n.partition for n in self.nodes if n.node_id not in replies]
        if missing:
            raise DistributedError(
                f"evaluation after round {rounds_done}: nodes {missing} did not answer",
                "the SuperNodes",
                "restart them; the same command resumes from the last checkpoint",
            )
        ids = [k for n in self.nodes for k in n.clients]
        parts = [protocol.read_eval_reply(replies[n.node_id], n.clients) for n in self.nodes]
        scores = {v: np.concatenate([p[v] for p in parts]) for v in parts[0]}
        took_part = self.planner.took_part(rounds_done)[0, ids]  # the simulation's cohorts
        return eval_record(self.fed.exp, scores, ids, took_part)

    # ------------------------------------------------------------------ the run
    def run(self, grid: Grid, stop: StopRequest | None = None) -> list[Record]:
        """Every round not yet checkpointed; ``stop`` (Ctrl-C) ends it between rounds."""
        fed, cfg = self.fed, self.fed.config
        exp = fed.exp
        self.workdir.mkdir(parents=True, exist_ok=True)
        ckpt = RoundCheckpointer(self.workdir / "checkpoints", exp.run_fingerprint("/flower"))
        server = fed.server0
        target = {"round": server.round, "shared": server.shared, "opt_state": server.opt_state}
        restored = ckpt.restore_latest(jax.device_get(target))
        history: list[Record] = []
        if restored is not None:
            _, state, meta = restored
            server = server.replace(**state)
            history = meta["history"]
        start = int(server.round)
        writer = MetricsWriter(self.workdir, history, tensorboard=cfg.tensorboard)
        self.connect(grid)
        shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), server.shared)
        total = history[-1]["comm/bytes_cumulative"] if history else 0
        try:
            for r in range(start, cfg.rounds):
                if stop is not None and stop.requested_here():
                    raise RunInterrupted(cfg.method, r)
                t0 = time.perf_counter()
                ids, mask = self.planner.plan(0, r)
                cohort = np.asarray(ids)[np.asarray(mask)]
                round_start = server.shared
                done, delta_C, metrics_C, num_C, upload = self.train_round(grid, server, r, cohort)
                _, agg_key = round_keys(server)
                server, agg_metrics = self._step(server, delta_C, jnp.asarray(num_C), agg_key, {})
                server = jax.device_get(server)
                seconds = time.perf_counter() - t0
                metrics = {"clients": metrics_C, "server": agg_metrics}
                record = round_record(exp, r, done, metrics, seconds)
                traffic = round_traffic(shapes, len(done))
                total += traffic.total_bytes
                record.update(traffic.metrics(total))
                record["flower/bytes_up"] = upload
                record["flower/dropped"] = ",".join(
                    exp.client_names[k] for k in cohort.tolist() if k not in set(done.tolist())
                )
                if (r + 1) % cfg.eval_every == 0 or r + 1 == cfg.rounds:
                    record.update(self.evaluate(grid, r + 1, round_start, server.shared))
                writer.write(record)
                if (r + 1) % cfg.checkpoint_every == 0 or r + 1 == cfg.rounds:
                    state = {"round": server.round, "shared": server.shared, "opt_state": server.opt_state}
                    ckpt.save(r + 1, state, {"history": writer.history})
        finally:
            writer.close()
        return writer.history

