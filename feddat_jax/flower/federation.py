"""One federation's pieces, built from the config the same way on the server and on every node.

Both ends call ``train.experiment.build_experiment`` on the same config, so they agree on the
data, the frozen backbone, the algorithm, the initial server state and every client's initial
private state, exactly as the simulated run builds them. The Flower engine runs ONE federation
(no sweep): the replica axis, if the experiment has one, is R = 1 and is dropped here.

Clients are spread over the nodes in contiguous blocks (``node_clients``): node ``i`` of ``M``
holds clients ``np.array_split(range(N), M)[i]``, co-located, trained in one jitted call.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections
import numpy as np
import optax

from feddat_jax.errors import ConfigError
from feddat_jax.fl.aggregation import Aggregator
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import ServerState
from feddat_jax.flower import wire
from feddat_jax.train.experiment import Experiment, build_aggregation, build_experiment

PyTree = Any


@dataclasses.dataclass
class Federation:
    exp: Experiment
    server_tx: optax.GradientTransformation
    aggregator: Aggregator
    server0: ServerState  # the initial server state (host)
    private_init: PyTree  # the private state every client starts from, host numpy
    shared_shapes: wire.Shapes  # what a message of shared parameters must hold
    private_paths: frozenset[str]  # the private parameters' paths (named when refused)

    @property
    def config(self) -> ml_collections.ConfigDict:
        return self.exp.config

    @property
    def num_clients(self) -> int:
        return len(self.exp.client_names)

    def round_steps(self) -> int:
        return self.exp.round_steps()


def _one_replica(server: ServerState, private_init: PyTree) -> tuple[ServerState, PyTree]:
    """The one replica's server state and initial private state (the replica axis dropped)."""
    take = lambda x: x[0]  # noqa: E731
    return jax.tree.map(take, server), jax.tree.map(take, private_init)


def build_federation(config: ml_collections.ConfigDict) -> Federation:
    """The federation of ``config``, refusing what the Flower engine does not run (sweeps)."""
    exp = build_experiment(config)
    if exp.sweep.size != 1:
        raise ConfigError(
            f"the flower engine runs one federation; the config sweeps {exp.sweep.size} replicas",
            "config.sweep",
            "run each setting as its own run (unset config.sweep)",
        )
    server, private_init = _one_replica(jax.device_get(exp.server), exp.private_init)
    server_tx = make_server_optimizer(
        config.server.optimizer or exp.method.server_optimizer, **dict(config.server.hyper)
    )
    aggregator, _ = build_aggregation(config, len(exp.client_names))
    # the algorithms keep a client's private parameters under "params" (the rest: optimizer)
    private_params = private_init["params"]
    return Federation(
        exp=exp,
        server_tx=server_tx,
        aggregator=aggregator,
        server0=server,
        private_init=private_init,
        shared_shapes=wire.shapes_of(server.shared),
        private_paths=frozenset(wire.flat(private_params)),
    )


def node_clients(num_clients: int, num_nodes: int, node: int) -> np.ndarray:
    """The global ids of the clients node ``node`` of ``num_nodes`` holds (a contiguous block)."""
    if not 0 <= node < num_nodes or num_nodes > num_clients:
        raise ConfigError(
            f"node {node} of {num_nodes} for {num_clients} clients",
            "node config partition-id / num-partitions",
            "give each node a partition-id in 0..num-partitions-1, at most one node per client",
        )
    return np.array_split(np.arange(num_clients), num_nodes)[node]
