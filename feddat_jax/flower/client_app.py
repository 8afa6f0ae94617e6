"""The ClientApp: a node that trains and evaluates its co-located clients (``node.Node``).

The run's config comes from Flower's run config (``config``: ``FILE[:ARG]``, ``overrides``:
JSON; ``runconfig``), or is bound when the app is made (the simulation: a ``ConfigDict``). The
node's own settings come from its node config, given on the SuperNode's command line
(``--node-config "partition-id=0 num-partitions=2 state-dir='/var/feddat' data-dir='/data'"``):
which block of clients it holds, where their private state persists (default
``~/.feddat_flower``), and where its data lives (``data.cache_dir`` of the embedded benchmark,
``data.tfds_dir`` of a stored one). Nodes of one process (the simulation's actors) share the
built federation and its compiled functions; each keeps its own clients' state.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from feddat_jax.flower import protocol, runconfig, wire
from feddat_jax.flower.federation import Federation, build_federation
from feddat_jax.flower.node import Node

DEFAULT_STATE_DIR = "~/.feddat_flower"
# the built federation and nodes of this process's run (one at a time)
_FEDERATIONS: dict[tuple[str, str], Federation] = {}
_NODES: dict[tuple, Node] = {}


def _federation(config: ml_collections.ConfigDict, data_dir: str) -> Federation:
    key = (config.to_json_best_effort(sort_keys=True), data_dir)
    if key not in _FEDERATIONS:
        config = config.copy_and_resolve_references()
        if data_dir:
            with config.unlocked():
                if config.data.source == "tfds":
                    config.data.tfds_dir = data_dir
                else:
                    config.data.cache_dir = data_dir
        _FEDERATIONS.clear()  # one run per process at a time: free the previous one
        _NODES.clear()
        _FEDERATIONS[key] = build_federation(config)
    return _FEDERATIONS[key]


def node_of(
    context: Context, bound: ml_collections.ConfigDict | None, state_dir: str | None
) -> Node:
    run = context.run_config
    if bound is None:
        bound = runconfig.load(
            str(run[runconfig.CONFIG_KEY]), str(run.get(runconfig.OVERRIDES_KEY, ""))
        )
    node = context.node_config
    data_dir = str(node.get("data-dir", ""))
    fed = _federation(bound, data_dir)
    key = (
        fed.exp.run_fingerprint(),
        int(node["partition-id"]),
        int(node["num-partitions"]),
        str(node.get("state-dir", state_dir or DEFAULT_STATE_DIR)),
    )
    if key not in _NODES:
        _NODES[key] = Node(fed, key[1], key[2], Path(key[3]).expanduser())
    return _NODES[key]


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
    config: ml_collections.ConfigDict | None = None, state_dir: str | None = None
) -> ClientApp:
    """The ClientApp; ``config`` given: bound to it (the simulation, whose actors receive it
    pickled), else the run config names it (``flwr run``)."""
    bound = config
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
