"""What a run's checkpoint holds, and the layouts older checkpoints were written in.

A checkpoint keeps the server state and, per replica, only the clients that hold private state of
their own (``fl.registry.ClientRegistry.trained``): ids ``[R, T]`` (-1 pads a replica with fewer)
and their rows ``[R, T, ...]``, so its bytes follow the clients that trained. ``train.loop``
saves :func:`all_trained` and restores with :func:`checkpoint_target` as the layout and
:func:`dense_layouts` as the older ones it still reads.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from feddat_jax.fl.registry import ClientRegistry
from feddat_jax.train.experiment import Experiment

PyTree = Any


def all_trained(registry: ClientRegistry) -> tuple[np.ndarray, PyTree]:
    """Every process's trained clients (``ClientRegistry.trained``) as one ``(ids_RxT,
    private_RxT)`` on every process, in id order per replica: what a checkpoint holds."""
    ids, private = registry.trained()
    if jax.process_count() == 1:
        return ids, private
    most = int(np.max(multihost_utils.process_allgather(np.asarray(ids.shape[1]))))

    def pad(x: np.ndarray, fill) -> np.ndarray:
        extra = np.full((x.shape[0], most - x.shape[1]) + x.shape[2:], fill, x.dtype)
        return np.concatenate([x, extra], 1)

    ids_P = np.asarray(multihost_utils.process_allgather(pad(ids, -1)))  # [P, R, most]
    private_P = multihost_utils.process_allgather(jax.tree.map(lambda x: pad(x, 0), private))
    ids_all = np.concatenate(list(ids_P), 1)  # [R, P * most]
    order = np.argsort(np.where(ids_all < 0, np.iinfo(np.int64).max, ids_all), axis=1)
    order = order[:, : max(1, int((ids_all >= 0).sum(1).max()))]
    replica = np.arange(ids_all.shape[0])[:, None]
    return ids_all[replica, order], jax.tree.map(
        lambda x: np.concatenate(list(np.asarray(x)), 1)[replica, order], private_P
    )


def checkpoint_target(exp: Experiment, trained: int) -> dict:
    """The checkpointed state's layout: the server and, per replica, ``trained`` clients that
    hold private state of their own (``all_trained``; ids -1 pad replicas with fewer)."""
    replicas = exp.sweep.size
    return {
        "server": exp.server,
        "private": {
            "ids": jax.ShapeDtypeStruct((replicas, trained), np.int64),
            "state": jax.tree.map(
                lambda x: jax.ShapeDtypeStruct((replicas, trained) + x.shape[1:], x.dtype),
                exp.private_init,
            ),
        },
    }


def dense_layouts(exp: Experiment) -> list[tuple[dict, Any]]:
    """Checkpoints written before clients held state only once trained: every client's private
    state ``[R, N, ...]`` (and, from before every run had a replica axis, an unswept run's
    ``[N, ...]``), and how each becomes today's layout (every client counted as trained)."""
    n, replicas = len(exp.client_names), exp.sweep.size

    def every_client(private_RxN: PyTree) -> dict:
        ids = np.broadcast_to(np.arange(n, dtype=np.int64), (replicas, n))
        return {"ids": ids, "state": private_RxN}

    private_RxN = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct((replicas, n) + x.shape[1:], x.dtype), exp.private_init
    )
    layouts = [
        (
            {"server": exp.server, "private": private_RxN},
            lambda old: {"server": old["server"], "private": every_client(old["private"])},
        )
    ]
    if replicas == 1:
        no_axis = {
            "server": jax.tree.map(lambda x: x[0], exp.server),
            "private": jax.tree.map(
                lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype), private_RxN
            ),
        }
        add_axis = lambda tree: jax.tree.map(lambda x: x[None], tree)  # noqa: E731
        layouts.append(
            (
                no_axis,
                lambda old: {
                    "server": add_axis(old["server"]),
                    "private": every_client(add_axis(old["private"])),
                },
            )
        )
    return layouts
