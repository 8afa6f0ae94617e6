"""The ClientApp: a node that trains and evaluates its co-located clients (``node.Node``).

The run's config comes from Flower's run config (``config``: ``FILE[:ARG]``, ``overrides``:
JSON; ``runconfig``), or is bound when the app is made (the simulation). The node's own settings
come from its node config, given on the SuperNode's command line
(``--node-config "partition-id=0 num-partitions=2 state-dir='/var/feddat' data-dir='/data'"``):
which block of clients it holds, where their private state persists (default
``~/.feddat_flower``), and where its data lives (``data.cache_dir`` of the embedded benchmark,
``data.tfds_dir`` of a stored one). Nodes of one process (the simulation's actors) share the
built federation and its compiled functions; each keeps its own clients' state.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from feddat_jax.flower import protocol, runconfig, wire
from feddat_jax.flower.federation import Federation, build_federation
from feddat_jax.flower.node import Node

DEFAULT_STATE_DIR = "~/.feddat_flower"


@functools.lru_cache(maxsize=2)
def _federation(spec: str, overrides: str, data_dir: str) -> Federation:
    config = runconfig.load(spec, overrides)
    if data_dir:
        with config.unlocked():
            if config.data.source == "tfds":
                config.data.tfds_dir = data_dir
            else:
                config.data.cache_dir = data_dir
    return build_federation(config)


@functools.lru_cache(maxsize=16)
def _node(spec: str, overrides: str, data_dir: str, partition: int, partitions: int, state: str):
    fed = _federation(spec, overrides, data_dir)
    return Node(fed, partition, partitions, Path(state).expanduser())


def node_of(context: Context, bound: dict[str, str] | None, state_dir: str | None) -> Node:
    run = bound or context.run_config
    node = context.node_config
    return _node(
        str(run[runconfig.CONFIG_KEY]),
        str(run.get(runconfig.OVERRIDES_KEY, "")),
        str(node.get("data-dir", "")),
        int(node["partition-id"]),
        int(node["num-partitions"]),
        str(node.get("state-dir", state_dir or DEFAULT_STATE_DIR)),
    )


def handle_query(node: Node) -> RecordDict:
    return RecordDict(
        {
            "node": ConfigRecord(
                {
                    "partition": node.partition,
                    "partitions": node.num_partitions,
                    "clients": [int(k) for k in node.clients],
                }
            )
        }
    )


def handle_train(node: Node, content: RecordDict) -> RecordDict:
    where = f"train request to node {node.partition}"
    config = content.config_records["config"]
    clients = node.check_clients(list(config["clients"]), where)
    shared = wire.from_record(
        content.array_records["shared"], node.fed.shared_shapes, where, node.fed.private_paths
    )
    deltas, metrics, num_examples = node.train(int(config["round"]), shared, clients)
    return protocol.train_reply(clients, deltas, metrics, num_examples)


def handle_evaluate(node: Node, content: RecordDict) -> RecordDict:
    where = f"evaluate request to node {node.partition}"
    config = content.config_records["config"]
    clients = node.check_clients(list(config["clients"]), where)
    fed = node.fed
    round_start, shared = (
        wire.from_record(content.array_records[k], fed.shared_shapes, where, fed.private_paths)
        for k in ("round_start", "shared")
    )
    scores = node.evaluate(int(config["round"]), round_start, shared, clients)
    return protocol.eval_reply(clients, scores)


def make_client_app(
    spec: str | None = None, overrides: str = "", state_dir: str | None = None
) -> ClientApp:
    """The ClientApp; ``spec`` given: bound to that config (else the run config names it)."""
    bound = runconfig.run_config(spec, json.loads(overrides or "{}")) if spec else None
    app = ClientApp()

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return Message(handle_query(node_of(context, bound, state_dir)), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return Message(handle_train(node_of(context, bound, state_dir), msg.content), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        node = node_of(context, bound, state_dir)
        return Message(handle_evaluate(node, msg.content), reply_to=msg)

    return app


app = make_client_app()  # `flwr run`: the config comes from the run config
