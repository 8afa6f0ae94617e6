"""The private state and task metadata of registered clients, for N up to 100,000.

A round trains only the sampled cohort, so the registry keeps the clients where memory is cheap
and moves just the cohort:

    ids_RxC = ...                                     # each replica's cohort (this process's slots)
    private_RxC, tasks_RxC = registry.gather(ids_RxC) # host rows -> device (sharded on a mesh)
    server_R, private_RxC, metrics = round_fn(frozen, server_R, private_RxC, tasks_RxC, ...)
    registry.scatter(ids_RxC, private_RxC)            # the cohort's new rows -> host

Every client starts from the same private state, so a client that never trained costs nothing:
it reads its replica's initial state, and only a client's first scatter gives it a slot of its
own. Memory and checkpoints grow with the clients that trained (a FedDAT client of ViLT-B/32 is
8.5 M floats = 34 MB: A_c, its head and their AdamW moments), not with those registered.

``storage="host"`` (default) keeps the slots in host numpy: gather is one fancy-index per leaf
and one transfer, scatter one device->host copy and one in-place assignment per leaf.
``storage="device"`` keeps them on the (single) device: gather and scatter are then two small
jitted programs (scatter donates the slots, so it updates in place; they recompile only when the
slots grow).

Every run has a replica axis R (``fl.replicas``; R = 1 unless a sweep asks for more): slots are
``[R, S, ...]``, cohorts are ``[R, C]`` ids (each replica its own) and gathered values are
``[R, C, ...]``, sharded ``P(None, "clients")``.

In a multi-process run each process builds a registry of the clients it owns
(``distributed.owned_clients``) and gathers only its own slots of the cohort; ``gather`` then
assembles the global cohort arrays with ``jax.make_array_from_process_local_data`` and
``scatter`` reads back this process's rows (``mesh.local_rows``).

Cohorts that do not divide over the mesh's ``clients`` axis are padded (:func:`pad_ids`): padded
slots carry ``num_examples = 0`` (they weigh nothing in the size-weighted mean, and the
``uniform`` mean and DP aggregation leave them out) and the loop gives them an all-zero
``example_mask``, so they train nothing; scatter drops them. When a cohort's activations do not
fit on a device at once, run the round chunked (``make_replica_round_fn(chunk_size=k)``, see
:func:`chunk_size_for`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from feddat_jax.fl import mesh as mesh_lib
from feddat_jax.fl.state import ClientTasks, ServerState, validate_tasks

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
    """Host numpy copies; PRNG keys are refused (a client's private state stores key data)."""

    def leaf(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            raise TypeError("a client's private state may not hold PRNG keys (store key data)")
        return np.array(x)

    return jax.tree.map(leaf, tree)


def _grown(x, capacity: int):
    """``x`` (slots ``[R, S, ...]``) with room for ``capacity`` slots; the new ones are zero
    (host: ``np.zeros`` pages stay unmapped until a client is written into them)."""
    shape = (x.shape[0], capacity) + x.shape[2:]
    if isinstance(x, np.ndarray):
        out = np.zeros(shape, x.dtype)
        out[:, : x.shape[1]] = x
        return out
    return jnp.zeros(shape, x.dtype).at[:, : x.shape[1]].set(x)


class ClientRegistry:
    """The private state and ``ClientTasks`` of the clients this process owns.

    Every client starts from its replica's initial private state (METHOD.md §1: all A_c start
    identical), so a client holds state of its own only once it has trained: the registry keeps
    ``slots`` (every leaf ``[R, S, ...]``; slot 0 is the initial state) and a host table
    ``slot_of[R, N]`` (0 for a client that never trained). Memory and checkpoint bytes grow with
    the clients that trained, not with the clients registered. Slots are handed out on a
    client's first scatter and grow by doubling.

    Args:
      initial: each replica's initial private state, every leaf ``[R, ...]``.
      tasks: ``ClientTasks`` stacked ``[N]``.
      client_ids: global id of each row (sorted, unique); default ``0..N-1``.
      capacity: slots to allocate up front (clients that may train before the first growth;
        device storage recompiles its gather and scatter when it grows).
      storage: ``"host"`` (numpy) or ``"device"`` (one process only).
      mesh: optional mesh: gathered cohorts are sharded ``P(None, "clients")`` over it.
    """

    def __init__(
        self,
        initial: PyTree,
        tasks: ClientTasks,
        *,
        client_ids=None,
        capacity: int = 16,
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
        initial = _host_tree(initial)
        leaves = jax.tree.leaves(initial)
        self.replicas = int(np.shape(leaves[0])[0]) if leaves else 1
        if any(np.shape(x)[:1] != (self.replicas,) for x in leaves):
            raise ValueError("every initial private leaf needs the replica axis [R, ...]")
        ids = (
            np.arange(n, dtype=np.int64) if client_ids is None else np.asarray(client_ids, np.int64)
        )
        if ids.shape != (n,) or np.any(np.diff(ids) <= 0):
            raise ValueError(f"client_ids must be {n} sorted unique ids")
        self.client_ids = ids
        self.storage = storage
        self.mesh = mesh
        self._contiguous = bool(ids[-1] - ids[0] == n - 1)
        self.slot_of = np.zeros((self.replicas, n), np.int32)
        self.used = np.zeros((self.replicas,), np.int64)  # slots handed out, per replica
        slots = jax.tree.map(lambda x: _grown(x[:, None], 1 + max(1, capacity)), initial)
        if storage == "host":
            self.slots, self.tasks = slots, tasks
            return
        place = (lambda t: mesh_lib.put_replicated(t, mesh)) if mesh is not None else jax.device_put
        self.slots = place(jax.tree.map(jnp.asarray, slots))
        self.tasks = place(jax.tree.map(jnp.asarray, tasks))
        self._gather_fn = jax.jit(
            lambda slots, tasks, index, rows: (
                jax.tree.map(lambda x: x[index], slots),
                jax.tree.map(lambda x: x[rows], tasks),
            ),
            out_shardings=self._sharding() if mesh is not None else None,
        )
        self._scatter_fn = jax.jit(
            lambda slots, index, values: jax.tree.map(
                lambda x, v: x.at[index].set(v.astype(x.dtype), mode="drop"), slots, values
            ),
            donate_argnums=(0,),
        )

    @classmethod
    def create(
        cls, algorithm, shared: PyTree, private_params: PyTree, tasks: ClientTasks, **kwargs
    ) -> ClientRegistry:
        """One federation (R = 1) whose initial private state is ``algorithm.init_private``."""
        one = algorithm.init_private(shared, private_params)
        return cls(jax.tree.map(lambda x: np.asarray(x)[None], one), tasks, **kwargs)

    # ---- bookkeeping -----------------------------------------------------------------------------
    @property
    def num_clients(self) -> int:
        return int(self.client_ids.shape[0])

    @property
    def capacity(self) -> int:
        """Slots allocated per replica (the initial state's included)."""
        return int(jax.tree.leaves(self.slots)[0].shape[1])

    @property
    def nbytes(self) -> int:
        """Bytes of the slots in use, the slot table and the task metadata: what the clients
        cost (slots allocated but unused are zero pages the host never maps)."""
        in_use = 1 + int(self.used.max())
        slots = sum(
            x.dtype.itemsize * int(np.prod(x.shape)) // x.shape[1] * in_use
            for x in jax.tree.leaves(self.slots)
        )
        rest = jax.tree.leaves((self.slot_of, self.tasks))
        return slots + sum(int(np.prod(np.shape(x))) * x.dtype.itemsize for x in rest)

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

    def holds(self, ids) -> np.ndarray:
        """bool per global id: whether this registry holds the client."""
        ids = np.asarray(ids, np.int64)
        pos = np.minimum(np.searchsorted(self.client_ids, ids), self.num_clients - 1)
        return self.client_ids[pos] == ids

    # ---- slots -----------------------------------------------------------------------------------
    def _index(self, rows_RxC: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The slots of cohort rows ``[R, C]`` (replica r's of its own; 0 = never trained)."""
        return np.arange(self.replicas)[:, None], self.slot_of[
            np.arange(self.replicas)[:, None], rows_RxC
        ]

    def _claim(self, rows_RxC: np.ndarray, keep_RxC: np.ndarray) -> None:
        """Give every kept row that holds no state of its own the next free slot."""
        for r in range(self.replicas):
            rows = np.unique(rows_RxC[r][keep_RxC[r]])
            fresh = rows[self.slot_of[r, rows] == 0]
            self.slot_of[r, fresh] = self.used[r] + 1 + np.arange(fresh.size)
            self.used[r] += fresh.size
        needed = 1 + int(self.used.max())
        if needed > self.capacity:
            size = max(needed, 2 * self.capacity)
            self.slots = jax.tree.map(lambda x: _grown(x, size), self.slots)
            if self.storage == "device" and self.mesh is not None:
                self.slots = mesh_lib.put_replicated(self.slots, self.mesh)

    def _write(self, rows_RxC: np.ndarray, keep_RxC: np.ndarray, values_RxC: PyTree) -> None:
        """Write the kept rows' new private state (padded slots are dropped)."""
        self._claim(rows_RxC, keep_RxC)
        replica, slot = self._index(rows_RxC)
        if self.storage == "host":
            index = (np.nonzero(keep_RxC)[0], slot[keep_RxC])

            def write(x, v):
                x[index] = np.asarray(v)[keep_RxC]

            jax.tree.map(write, self.slots, values_RxC)
            return
        slot = np.where(keep_RxC, slot, self.capacity)  # out of range: dropped
        index = (jnp.asarray(np.broadcast_to(replica, slot.shape)), jnp.asarray(slot))
        self.slots = self._scatter_fn(self.slots, index, values_RxC)

    # ---- the round's traffic ---------------------------------------------------------------------
    def _sharding(self):
        return mesh_lib.cohort_sharding(self.mesh)

    def _place(self, tree_RxC: PyTree) -> PyTree:
        if self.mesh is None:
            return jax.device_put(tree_RxC)
        return mesh_lib.put_cohort(tree_RxC, self.mesh)

    def gather(self, ids, mask=None) -> tuple[PyTree, ClientTasks]:
        """The cohort's ``(private_RxC, tasks_RxC)`` on device (``P(None, "clients")`` on a mesh).

        ``ids`` are this process's cohort slots of every replica (global ids ``[R, C]``); a
        client that never trained gets its replica's initial state; slots with ``mask`` False
        are padding: they get ``num_examples = 0``.
        """
        rows = self.rows(ids).reshape(np.shape(ids))
        replica, slot = self._index(rows)
        if self.storage == "host":
            private_C = jax.tree.map(lambda x: x[replica, slot], self.slots)
            tasks_C = jax.tree.map(lambda x: x[rows], self.tasks)
            if mask is not None:
                tasks_C = tasks_C.replace(
                    num_examples=np.where(mask, tasks_C.num_examples, 0).astype(
                        tasks_C.num_examples.dtype
                    )
                )
            return self._place(private_C), self._place(tasks_C)
        index = (jnp.asarray(np.broadcast_to(replica, slot.shape)), jnp.asarray(slot))
        private_C, tasks_C = self._gather_fn(self.slots, self.tasks, index, jnp.asarray(rows))
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
        if self.storage == "host" and self.mesh is not None:
            private_C = mesh_lib.local_tree(private_C, 1)
        self._write(rows, keep, private_C)

    # ---- checkpoints -----------------------------------------------------------------------------
    def trained(self) -> tuple[np.ndarray, PyTree]:
        """``(ids_RxT, private_RxT)``: every replica's clients that hold state of their own, in
        id order, as host numpy; T is the most of any replica (at least 1), the rest padded with
        id -1 and the initial state."""
        most = max(1, int(self.used.max()))
        ids = np.full((self.replicas, most), -1, np.int64)
        slots = np.zeros((self.replicas, most), np.int64)
        for r in range(self.replicas):
            rows = np.flatnonzero(self.slot_of[r])
            ids[r, : rows.size] = self.client_ids[rows]
            slots[r, : rows.size] = self.slot_of[r, rows]
        host = jax.device_get(self.slots)
        replica = np.arange(self.replicas)[:, None]
        return ids, jax.tree.map(lambda x: np.asarray(x)[replica, slots], host)

    def restore_trained(self, ids_RxT, private_RxT: PyTree) -> None:
        """Load :meth:`trained`'s output (of every process: the clients this one does not hold
        and the padding are skipped) into a fresh registry."""
        ids = np.asarray(ids_RxT, np.int64)
        keep = (ids >= 0) & self.holds(ids)
        rows = self.rows(np.where(keep, ids, self.client_ids[0])).reshape(ids.shape)
        values = private_RxT if self.storage == "host" else jax.tree.map(jnp.asarray, private_RxT)
        self._write(rows, keep, values)

    def client_ids_array(self, ids) -> jax.Array:
        """The cohort's global ids as the round's ``client_ids_C`` argument, placed like a
        cohort."""
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
