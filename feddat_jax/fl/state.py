"""The federated state as pytrees: what the server holds and what each client keeps.

``ServerState`` is small and replicated. Client values are *stacked* on a leading client axis:
``ClientTasks`` over the N registered clients ``[N]`` or a cohort ``[C]``; the private state of
the clients that trained lives in ``fl.registry.ClientRegistry``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

PyTree = Any

TASK_VQA = 0  # soft-score VQA: num_answers · BCE
TASK_CLASSIFICATION = 1  # single label: cross-entropy


@struct.dataclass
class ServerState:
    """Everything the server owns between rounds."""

    round: jax.Array  # int32 scalar: rounds completed
    shared: PyTree  # the global shared parameters (e.g. A_s)
    opt_state: optax.OptState  # the server optimizer's state
    rng: jax.Array  # the run's key; per-round keys are folded from it


@struct.dataclass
class ClientTasks:
    """Per-client task metadata, stacked on the client axis ([N] or [C])."""

    answer_mask: jax.Array  # float32 [.., A]: 1 for the client's real answers, 0 for head padding
    task_kind: jax.Array  # int32 [..]: TASK_VQA or TASK_CLASSIFICATION
    num_examples: jax.Array  # int32 [..]: training examples the client holds


def init_server_state(
    shared: PyTree, server_tx: optax.GradientTransformation, rng: jax.Array
) -> ServerState:
    return ServerState(
        round=jnp.zeros((), jnp.int32), shared=shared, opt_state=server_tx.init(shared), rng=rng
    )


def stack_clients(per_client: list[PyTree]) -> PyTree:
    """Stack a list of per-client pytrees into one clients value."""
    return jax.tree.map(lambda *xs: jnp.stack(xs), *per_client)


def gather(tree_N: PyTree, idx_C: np.ndarray) -> PyTree:
    """The cohort's slice of a stacked value (works on host numpy and device arrays)."""
    return jax.tree.map(lambda x: x[idx_C], tree_N)


def validate_tasks(tasks: ClientTasks) -> None:
    """Refuse task metadata that would silently train nothing (e.g. a client with no data)."""
    n = np.asarray(tasks.num_examples)
    empty = np.flatnonzero(n <= 0)
    if empty.size:
        raise ValueError(
            f"clients {empty.tolist()[:10]} have zero training examples; every "
            "registered client needs at least one (drop it or repartition)"
        )
    kinds = np.asarray(tasks.task_kind)
    bad = sorted(set(kinds.tolist()) - {TASK_VQA, TASK_CLASSIFICATION})
    if bad:
        raise ValueError(
            f"unknown task_kind values {bad}; allowed: {TASK_VQA} (vqa), "
            f"{TASK_CLASSIFICATION} (classification)"
        )
    if not np.all(np.asarray(tasks.answer_mask).sum(-1) > 0):
        raise ValueError("every client needs at least one answer in its answer_mask")
