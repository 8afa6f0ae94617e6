"""Every registered client's private state and task metadata, stacked ``[R, N]``, for N up to 10,000.

A round trains only the sampled cohort, so the registry keeps all N clients where memory is
cheap and moves just the cohort:

    ids_RxC = ...                                     # each replica's cohort (this process's slots)
    private_RxC, tasks_RxC = registry.gather(ids_RxC) # host rows -> device (sharded on a mesh)
    server_R, private_RxC, metrics = round_fn(frozen, server_R, private_RxC, tasks_RxC, ...)
    registry.scatter(ids_RxC, private_RxC)            # the cohort's new rows -> host

``storage="host"`` (default) keeps the rows in host numpy (a FedDAT client of ViLT-B/32 is 8.5 M
floats = 34 MB of private state: A_c, its head and their AdamW moments, so 10,000 clients are
~340 GB: split them over processes, ``distributed.owned_clients``, or pass np.memmap arrays); gather
is one fancy-index per leaf and one transfer, scatter one device->host copy and one in-place
assignment per leaf. ``storage="device"`` keeps them on the
(single) device when they fit: gather and scatter are then two small jitted programs (compiled
once; scatter donates the stacked buffers, so it updates in place).

Every run has a replica axis R (``fl.replicas``; R = 1 unless a sweep asks for more), so the
registry keeps R federations' clients: every private leaf is ``[R, N, ...]`` (task metadata stays
``[N]``), cohorts are ``[R, C]`` ids (each replica its own) and gathered values are
``[R, C, ...]``, sharded ``P(None, "clients")``.

In a multi-process run each process builds a registry of the clients it owns
(``distributed.owned_clients``) and gathers only its own slots of the cohort; ``gather`` then assembles
the global cohort arrays with ``jax.make_array_from_process_local_data`` and ``scatter`` reads back
this process's rows (``mesh.local_rows``).

Cohorts that do not divide over the mesh's ``clients`` axis are padded (:func:`pad_ids`): padded
slots carry ``num_examples = 0`` (they weigh nothing in the size-weighted mean, and the
``uniform`` mean and DP aggregation leave them out) and the loop gives them an all-zero
``example_mask``, so they train nothing; scatter drops them. ``train.loop`` runs every round
this way (``fl.distributed.plan_cohort`` pads the cohort). When a cohort's activations do not fit on a device at
once, run the round chunked (``make_replica_round_fn(chunk_size=k)``, see :func:`chunk_size_for`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from feddat_jax.fl import mesh as mesh_lib
from feddat_jax.fl.state import ClientStates, ClientTasks, ServerState, validate_tasks

PyTree = Any
STORAGES = ("host", "device")


def pad_ids(ids: np.ndarray, multiple: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids_C, mask_C)`` with C rounded up to ``multiple``; padded slots repeat ``ids[0]``.

    The same convention as ``fl.accounting.pad_cohort``: ``mask_C`` is True for real clients.
    """
    ids = np.asarray(ids, np.int64).reshape(-1)
    if ids.size == 0:
        raise ValueError("pad_ids: empty cohort")
    size = -(-ids.size // multiple) * multiple
    out = np.full((size,), ids[0], np.int64)
    out[: ids.size] = ids
    mask = np.zeros((size,), bool)
    mask[: ids.size] = True
    return out, mask


def pad_batches(batches: dict, size: int) -> dict:
    """Zero rows (``example_mask`` 0: no-op steps) appended to a ``[C,S,B,...]`` cohort batch."""

    def leaf(x):
        x = np.asarray(x)
        if x.shape[0] > size:
            raise ValueError(f"pad_batches: {x.shape[0]} clients > size {size}")
        return np.concatenate([x, np.zeros((size - x.shape[0],) + x.shape[1:], x.dtype)])

    return {k: leaf(v) for k, v in batches.items()}


def chunk_size_for(
    cohort_size: int, mesh: Mesh | None, max_clients_per_device: int | None
) -> int | None:
    """``make_replica_round_fn``'s ``chunk_size``: None (plain vmap) when each device's share of the
    cohort fits, else the most clients a device can train at once."""
    per_device = -(-cohort_size // mesh_lib.clients_size(mesh))
    if not max_clients_per_device or per_device <= max_clients_per_device:
        return None
    return int(max_clients_per_device)


def _host_tree(tree: PyTree) -> PyTree:
    """Writable host arrays; numpy arrays (np.memmap included) are taken over, not copied."""

    def leaf(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            raise TypeError("a client's private state may not hold PRNG keys (store key data)")
        if isinstance(x, np.ndarray) and x.flags.writeable:
            return x
        return np.array(x)

    return jax.tree.map(leaf, tree)


class ClientRegistry:
    """The private state and ``ClientTasks`` of the clients this process owns, stacked ``[R, N]``.

    Args:
      private: the stacked private state (every leaf ``[R, N, ...]``); with host storage, writable
        numpy leaves are used in place (the registry writes the cohort's rows into them).
      tasks: ``ClientTasks`` stacked ``[N]``.
      client_ids: global id of each row (sorted, unique); default ``0..N-1``.
      storage: ``"host"`` (numpy) or ``"device"`` (one process only).
      mesh: optional mesh: gathered cohorts are sharded ``P(None, "clients")`` over it.
    """

    def __init__(
        self,
        private: PyTree,
        tasks: ClientTasks,
        *,
        client_ids=None,
        storage: str = "host",
        mesh: Mesh | None = None,
    ):
        if storage not in STORAGES:
            raise ValueError(f"unknown storage {storage!r}; allowed: {', '.join(STORAGES)}")
        if storage == "device" and jax.process_count() > 1:
            raise ValueError(
                "storage='device' is for one process; multi-process runs keep each "
                "process's clients on its host (storage='host')"
            )
        tasks = jax.tree.map(np.array, tasks)
        validate_tasks(tasks)
        n = int(tasks.num_examples.shape[0])
        leaves = jax.tree.leaves(private)
        replicas = int(np.shape(leaves[0])[0]) if leaves else 1
        for leaf in leaves:
            if np.shape(leaf)[:2] != (replicas, n):
                raise ValueError(
                    f"private leaf of shape {np.shape(leaf)} is not stacked [R, N] over the "
                    f"{replicas} replicas and the {n} clients of the task metadata"
                )
        self.replicas = replicas
        ids = (
            np.arange(n, dtype=np.int64) if client_ids is None else np.asarray(client_ids, np.int64)
        )
        if ids.shape != (n,) or np.any(np.diff(ids) <= 0):
            raise ValueError(f"client_ids must be {n} sorted unique ids")
        self.client_ids = ids
        self.storage = storage
        self.mesh = mesh
        self._contiguous = bool(ids[-1] - ids[0] == n - 1)
        if storage == "host":
            self.private = _host_tree(private)
            self.tasks = tasks
        else:
            place = (
                (lambda t: mesh_lib.put_replicated(t, mesh)) if mesh is not None else jax.device_put
            )
            self.private = place(jax.tree.map(jnp.asarray, private))
            self.tasks = place(jax.tree.map(jnp.asarray, tasks))
            self._gather_fn = jax.jit(
                lambda tree, rows: (
                    jax.tree.map(lambda x: x[self._index(rows)], tree[0]),
                    jax.tree.map(lambda x: x[rows], tree[1]),
                ),
                out_shardings=self._sharding() if mesh is not None else None,
            )
            self._scatter_fn = jax.jit(
                lambda tree, rows, values: jax.tree.map(
                    lambda x, v: x.at[self._index(rows)].set(v.astype(x.dtype), mode="drop"),
                    tree,
                    values,
                ),
                donate_argnums=(0,),
            )

    # ---- construction ----------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        algorithm,
        shared: PyTree,
        private_params: PyTree,
        tasks: ClientTasks,
        *,
        client_ids=None,
        storage: str = "host",
        mesh: Mesh | None = None,
    ) -> ClientRegistry:
        """One federation (R = 1) whose clients all start from the same private state (METHOD.md
        §1: all A_c start identical), built once with ``algorithm.init_private`` and repeated over
        the N rows of ``tasks``."""
        n = int(np.shape(tasks.num_examples)[0])
        one = algorithm.init_private(shared, private_params)
        private = jax.tree.map(lambda x: np.repeat(np.asarray(x)[None, None], n, axis=1), one)
        return cls(private, tasks, client_ids=client_ids, storage=storage, mesh=mesh)

    @classmethod
    def from_states(cls, states: ClientStates, **kwargs) -> ClientRegistry:
        return cls(states.private, states.tasks, **kwargs)

    def states(self) -> ClientStates:
        """A host copy of every row (for checkpoints)."""
        return ClientStates(
            private=jax.tree.map(np.array, self.private), tasks=jax.tree.map(np.array, self.tasks)
        )

    # ---- bookkeeping -----------------------------------------------------------------------------
    @property
    def num_clients(self) -> int:
        return int(self.client_ids.shape[0])

    @property
    def nbytes(self) -> int:
        return sum(
            int(np.prod(np.shape(x))) * np.dtype(x.dtype).itemsize
            for x in jax.tree.leaves((self.private, self.tasks))
        )

    def rows(self, ids) -> np.ndarray:
        """Row of each global client id; raises for clients this registry does not hold."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        if self._contiguous:
            rows = ids - self.client_ids[0]
            ok = (rows >= 0) & (rows < self.num_clients)
        else:
            rows = np.searchsorted(self.client_ids, ids)
            ok = (rows < self.num_clients) & (
                self.client_ids[np.minimum(rows, self.num_clients - 1)] == ids
            )
        if not np.all(ok):
            raise KeyError(
                f"clients {ids[~ok][:10].tolist()} are not held by this registry "
                f"(ids {self.client_ids[0]}..{self.client_ids[-1]})"
            )
        return rows

    # ---- the round's traffic ---------------------------------------------------------------------
    def _index(self, rows):
        """The private rows of cohort rows ``[R, C]`` (replica r's rows of its own)."""
        return (np.arange(self.replicas)[:, None], rows)

    def _sharding(self):
        return mesh_lib.cohort_sharding(self.mesh)

    def _place(self, tree_RxC: PyTree) -> PyTree:
        if self.mesh is None:
            return jax.device_put(tree_RxC)
        return mesh_lib.put_cohort(tree_RxC, self.mesh)

    def gather(self, ids, mask=None) -> tuple[PyTree, ClientTasks]:
        """The cohort's ``(private_RxC, tasks_RxC)`` on device (``P(None, "clients")`` on a mesh).

        ``ids`` are this process's cohort slots of every replica (global ids ``[R, C]``); slots
        with ``mask`` False are padding: they get ``num_examples = 0``.
        """
        rows = self.rows(ids).reshape(np.shape(ids))
        if self.storage == "host":
            private_C = jax.tree.map(lambda x: x[self._index(rows)], self.private)
            tasks_C = jax.tree.map(lambda x: x[rows], self.tasks)
            if mask is not None:
                tasks_C = tasks_C.replace(
                    num_examples=np.where(mask, tasks_C.num_examples, 0).astype(
                        tasks_C.num_examples.dtype
                    )
                )
            return self._place(private_C), self._place(tasks_C)
        private_C, tasks_C = self._gather_fn((self.private, self.tasks), jnp.asarray(rows))
        if mask is not None:
            tasks_C = tasks_C.replace(
                num_examples=jnp.where(jnp.asarray(mask), tasks_C.num_examples, 0).astype(
                    tasks_C.num_examples.dtype
                )
            )
        return private_C, tasks_C

    def scatter(self, ids, private_C: PyTree, mask=None) -> None:
        """Write the cohort's new private rows back (padded slots are dropped)."""
        rows = self.rows(ids).reshape(np.shape(ids))
        keep = np.ones(rows.shape, bool) if mask is None else np.asarray(mask, bool)
        if self.storage == "host":
            values = mesh_lib.local_tree(private_C, 1) if self.mesh is not None else private_C
            index = (np.nonzero(keep)[0], rows[keep])

            def write(x, v):
                x[index] = np.asarray(v)[keep]

            jax.tree.map(write, self.private, values)
            return
        rows = np.where(keep, rows, self.num_clients)  # out of range: dropped
        self.private = self._scatter_fn(self.private, jnp.asarray(rows), private_C)

    def client_ids_array(self, ids) -> jax.Array:
        """The cohort's global ids as the round's ``client_ids_C`` argument (placed like a cohort)."""
        return self._place(np.asarray(ids, np.int32))

    def run_round(
        self,
        round_fn: Callable,
        frozen: PyTree,
        server: ServerState,
        ids,
        batches,
        mask=None,
        hparams=None,
    ) -> tuple[ServerState, dict]:
        """gather -> ``round_fn`` (``make_replica_round_fn``'s) -> scatter; returns (server,
        metrics).

        ``ids`` are ``[R, C_local]``; ``batches`` this process's slots' host arrays
        ``[R, C_local, S, B, ...]`` (placed here) or already-placed device arrays; ``hparams`` the
        swept hyperparameters (``fl.hparams``).
        """
        private_C, tasks_C = self.gather(ids, mask)
        if any(not isinstance(x, jax.Array) for x in jax.tree.leaves(batches)):
            batches = self._place(batches)
        extra = () if hparams is None else (hparams,)
        server, private_C, metrics = round_fn(
            frozen, server, private_C, tasks_C, self.client_ids_array(ids), batches, *extra
        )
        self.scatter(ids, private_C, mask)
        return server, metrics
