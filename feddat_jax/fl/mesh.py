"""Where a round runs: the device mesh, array placement and multi-host (multi-process) runs.

The mesh has two axes, ``("clients", "model")``:

* every cohort leaf (private state, task metadata, batches, client ids), stacked ``[R, C, ...]``
  (R replicas, ``fl.replicas``), is sharded ``P(None, "clients")``, so device ``i`` holds clients
  ``i·C/n ..`` of every replica; test data that every replica shares is ``[C, ...]``,
  ``P("clients")``;
* the frozen backbone is replicated (``P()``), or with ``shard_frozen`` its big matrices are
  split over ``"model"`` (for backbones that do not fit one device; ``model`` = 1 by default);
* server values (the global shared parameters, the server optimizer state) are replicated.

``placement.map_clients`` pins the same layout inside the jitted round (``vmap`` with
``spmd_axis_name="clients"`` plus sharding constraints), so the local epochs run where their
clients live and the server's weighted sum of the deltas lowers to one all-reduce.

Multi-host: every process runs the same program (JAX's multi-controller model). Call
``fl.distributed.initialize_distributed`` first; then each process owns a contiguous block of the
registered clients (``fl.distributed.owned_clients``), keeps only their private state and data,
and contributes only its cohort rows: :func:`put_cohort` builds the global arrays with
``jax.make_array_from_process_local_data`` and :func:`local_rows` reads this process's rows of
the results back. ``fl.distributed.sample_cohort`` draws a cohort in which each process's slots are filled
with its own clients (see its docstring for how that relates to single-process sampling).

``train.loop`` uses all of this: one launch command runs on one device, a mesh of several or
several processes. Its checkpoints hold host copies of the server state and of every client's
private state (a multi-process run gathers the processes' client blocks first, so every process
saves the same numpy tree and the primary writes it): simple and mesh-independent, but the
registry of every process passes through each host's memory. For registries too big for that,
see the notes below (not implemented). Checkpoints in a multi-process run: orbax's
``CheckpointManager.save`` / ``restore`` are collective: EVERY process must call them, with the same
step, in the same order. For ``jax.Array`` leaves each process writes the shards it owns and the
primary process (0) writes the metadata and finalises the step. Host numpy leaves are treated as
identical on every process and written by the primary process only, so the per-process client
registry (host numpy, different in every process) must NOT go into the shared tree as numpy:
either save it per process (``{dir}/clients/process_{i}``, each process its own ``states()``), or
turn it into global arrays first (``jax.make_array_from_process_local_data`` over the ``[N]`` axis
with the processes' blocks, :func:`client_blocks`, equal in size). Server state is replicated: save
it through orbax once (every process calls save; orbax dedupes replicas).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from feddat_jax.errors import ConfigError
from feddat_jax.fl.placement import CLIENTS_AXIS

PyTree = Any
MODEL_AXIS = "model"
MESH_AXES = (CLIENTS_AXIS, MODEL_AXIS)

# How the cohort's local epochs run, per backend, chosen by measurement
# (benchmarks/round_speed.py; the numbers are in benchmarks/RESULTS.md):
#   "vmap": all clients at once (make_replica_round_fn(chunk_size=None));
#   "scan": one client at a time inside the same jitted round (chunk_size=1, i.e. lax.map);
#   "loop": a Python loop over clients and steps (the sequential baseline; benchmark only).
# CPU (tiny ViLT, the size CPU runs use): vmap was fastest at C = 5, 16, 64 (1.25-1.45x over
# scan; tied at C = 1) and 4-7x faster than the loop. At ViLT-B/32 size on CPU, scan was 1.2x
# faster than vmap at C = 4 (compute-bound: one client's activations stay in cache; 2 noisy
# repeats), hence the size exception. GPU/TPU: vmap (batching is what they are for), NOT yet
# measured: run benchmarks/gpu_check.sh and update the "gpu" entry if it disagrees.
DEFAULT_STRATEGY: dict[str, str] = {"cpu": "vmap", "gpu": "vmap", "tpu": "vmap"}
DEFAULT_STRATEGY_BY_SIZE: dict[tuple[str, str], str] = {("cpu", "base"): "scan"}
STRATEGIES = ("vmap", "scan", "loop")


def default_strategy(backend: str | None = None, model_size: str | None = None) -> str:
    """The measured-fastest strategy of a backend (``jax.default_backend()``) and model size
    (``config.model.size``: "tiny" | "base"; a loaded checkpoint is "base")."""
    backend = backend or jax.default_backend()
    if model_size and (backend, model_size) in DEFAULT_STRATEGY_BY_SIZE:
        return DEFAULT_STRATEGY_BY_SIZE[(backend, model_size)]
    return DEFAULT_STRATEGY.get(backend, "vmap")


def round_fn_kwargs(strategy: str, chunk_size: int | None = None) -> dict[str, Any]:
    """``make_replica_round_fn`` / ``make_replica_eval_fn`` keyword arguments of a strategy.

    ``"vmap"`` with a ``chunk_size`` is the memory fallback: ``chunk_size`` clients at a time per
    device (``lax.map(batch_size=…)``). ``"loop"`` has no jitted-round form (benchmark only).
    """
    if strategy == "vmap":
        return {"chunk_size": chunk_size or None}
    if strategy == "scan":
        return {"chunk_size": 1}
    if strategy == "loop":
        raise ConfigError(
            "the 'loop' strategy is the benchmark's sequential baseline; the training "
            "loop runs 'vmap' or 'scan' inside one jitted round"
        )
    raise ConfigError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")


# ------------------------------------------------------------------------------------- the mesh
def config_fields(cls: type, cfg: Any) -> dict[str, Any]:
    """The dataclass ``cls``'s fields read from a mapping, a ConfigDict or any object (defaults
    for the missing ones; all defaults for ``None``)."""
    if cfg is None:
        return {f.name: f.default for f in dataclasses.fields(cls)}
    if isinstance(cfg, Mapping) or hasattr(cfg, "get"):
        get = cfg.get
    else:
        get = lambda k, d: getattr(cfg, k, d)  # noqa: E731
    return {f.name: get(f.name, f.default) for f in dataclasses.fields(cls)}


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The ``config.mesh`` block.

    Attributes:
      clients: devices on the ``clients`` axis; -1 = every device not used by ``model``.
      model: devices on the ``model`` axis (1 = every device holds the whole backbone).
      shard_frozen: split the frozen backbone's big matrices over ``model`` instead of
        replicating them (only useful with ``model`` > 1).
    """

    clients: int = -1
    model: int = 1
    shard_frozen: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> MeshConfig:
        """From a mapping, an ml_collections ConfigDict or any object with these attributes."""
        if isinstance(cfg, cls):
            return cfg
        return cls(**config_fields(cls, cfg))


def make_mesh(clients: int = -1, model: int = 1, devices=None) -> Mesh:
    """A ``("clients", "model")`` mesh over ``devices`` (default: every device of every process).

    The axes are ``AxisType.Auto`` (``jax.make_mesh`` defaults to ``Explicit`` since JAX 0.7): the
    round states its layout with sharding constraints and ``vmap(spmd_axis_name=…)``, and lets the
    compiler partition everything else.
    """
    devices = list(jax.devices() if devices is None else devices)
    if model < 1:
        raise ConfigError(f"mesh model axis must be >= 1, got {model}")
    if clients == -1:
        if len(devices) % model:
            raise ConfigError(f"{len(devices)} devices do not split into a model axis of {model}")
        clients = len(devices) // model
    if clients < 1 or clients * model > len(devices):
        raise ConfigError(
            f"mesh ({clients} clients x {model} model) needs {clients * model} devices; "
            f"{len(devices)} available",
            "config.mesh",
            "set config.mesh.clients=-1 (every device) or a count the devices allow",
        )
    return jax.make_mesh(
        (clients, model),
        MESH_AXES,
        axis_types=(AxisType.Auto,) * 2,
        devices=devices[: clients * model],
    )


def mesh_from_config(cfg: Any = None, devices=None) -> Mesh:
    c = MeshConfig.from_config(cfg)
    return make_mesh(c.clients, c.model, devices)


def clients_size(mesh: Mesh | None) -> int:
    """Devices on the clients axis (1 without a mesh): cohort sizes must be a multiple of it."""
    return 1 if mesh is None else int(mesh.shape[CLIENTS_AXIS])


def clients_sharding(mesh: Mesh) -> NamedSharding:
    """The layout of client values every replica shares (``[C, ...]``, e.g. test data): the
    leading axis over ``clients``."""
    return NamedSharding(mesh, P(CLIENTS_AXIS))


def cohort_sharding(mesh: Mesh) -> NamedSharding:
    """The layout of the round's cohort values ``[R, C, ...]``: every replica's cohort axis over
    ``clients`` (each device holds its share of every replica's cohort)."""
    return NamedSharding(mesh, P(None, CLIENTS_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def frozen_shardings(
    frozen: PyTree, mesh: Mesh, shard_frozen: bool = False, min_size: int = 1 << 16
) -> PyTree:
    """Per leaf of the frozen backbone: replicated, or (``shard_frozen``) the largest axis that
    divides evenly split over ``model`` for leaves of at least ``min_size`` elements."""
    model = int(mesh.shape[MODEL_AXIS]) if MODEL_AXIS in mesh.axis_names else 1

    def leaf(x):
        shape = np.shape(x)
        if not shard_frozen or model == 1 or len(shape) < 2 or int(np.prod(shape)) < min_size:
            return replicated(mesh)
        axes = [a for a in np.argsort(shape)[::-1] if shape[a] % model == 0]
        if not axes:
            return replicated(mesh)
        spec = [None] * len(shape)
        spec[int(axes[0])] = MODEL_AXIS
        return NamedSharding(mesh, P(*spec))

    return jax.tree.map(leaf, frozen)


def _is_key(x) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _put(x, sharding: NamedSharding):
    """Place a value that every process holds in full (works across processes)."""
    if isinstance(x, jax.Array) and x.sharding == sharding:
        return x
    if _is_key(x):
        return jax.random.wrap_key_data(
            _put(jax.random.key_data(x), sharding), impl=jax.random.key_impl(x)
        )
    if isinstance(x, jax.Array) and not x.is_fully_addressable:  # global: let XLA reshard it
        return jax.jit(lambda v: v, out_shardings=sharding)(x)
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])


def put_replicated(tree: PyTree, mesh: Mesh) -> PyTree:
    """Server values (ServerState, shared params) on every device."""
    s = replicated(mesh)
    return jax.tree.map(lambda x: _put(x, s), tree)


def put_frozen(frozen: PyTree, mesh: Mesh, shard_frozen: bool = False) -> PyTree:
    """The frozen backbone: one copy per device (or split over ``model``), never per client."""
    return jax.tree.map(_put, frozen, frozen_shardings(frozen, mesh, shard_frozen))


def _put_client_axis(
    tree_local: PyTree, mesh: Mesh, sharding: NamedSharding, axis: int, cohort_size: int | None
) -> PyTree:
    """This process's slots of a stacked cohort (client axis ``axis``) -> global arrays laid out
    by ``sharding``; ``cohort_size`` is the global C (inferred when every process holds as many)."""
    n = clients_size(mesh)

    def leaf(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return _put(x, sharding)
        if _is_key(x):
            return jax.random.wrap_key_data(
                leaf(jax.random.key_data(x)), impl=jax.random.key_impl(x)
            )
        x = np.asarray(x)
        c = cohort_size or x.shape[axis] * jax.process_count()
        if c % n:
            raise ValueError(
                f"a cohort of {c} clients does not divide over the mesh's {n} "
                f"'{CLIENTS_AXIS}' devices; pad it to a multiple "
                "(feddat_jax.fl.registry.pad_ids)"
            )
        shape = x.shape[:axis] + (c,) + x.shape[axis + 1 :]
        return jax.make_array_from_process_local_data(sharding, x, shape)

    return jax.tree.map(leaf, tree_local)


def put_cohort(tree_local: PyTree, mesh: Mesh, cohort_size: int | None = None) -> PyTree:
    """The round's cohort values ``[R, C_local, ...]`` -> global arrays ``[R, C, ...]`` sharded
    ``P(None, "clients")``.

    ``tree_local`` holds THIS process's slots of every replica's cohort (``fl.distributed
    .local_slots``); in a single-process run that is the whole cohort. Uses
    ``jax.make_array_from_process_local_data`` (``cohort_size`` is the global C; inferred when
    every process holds as many slots).
    """
    return _put_client_axis(tree_local, mesh, cohort_sharding(mesh), 1, cohort_size)


def put_clients(tree_local: PyTree, mesh: Mesh, cohort_size: int | None = None) -> PyTree:
    """Client values every replica shares (``[C_local, ...]``, e.g. an evaluation chunk's test
    batches) -> global arrays ``[C, ...]`` sharded ``P("clients")``."""
    return _put_client_axis(tree_local, mesh, clients_sharding(mesh), 0, cohort_size)


def local_rows(x: jax.Array, axis: int = 0) -> np.ndarray:
    """This process's rows (along ``axis``, the clients axis: 1 for a sweep's ``[R, C, ...]``)
    of an array sharded over ``clients``, in global order, as numpy."""
    if x.is_fully_addressable:
        return np.asarray(x)
    seen, parts = set(), []
    for shard in sorted(x.addressable_shards, key=lambda s: s.index[axis].start or 0):
        start = shard.index[axis].start or 0
        if start in seen:  # a replica along the model axis
            continue
        seen.add(start)
        parts.append(np.asarray(shard.data))
    return np.concatenate(parts, axis=axis)


def local_tree(tree: PyTree, axis: int = 0) -> PyTree:
    return jax.tree.map(lambda x: local_rows(x, axis), tree)


def fetch_replicated(tree: PyTree) -> PyTree:
    """Host copies of replicated (server) arrays; works in every process of a multi-host run
    (PRNG keys come back as their key data)."""

    def leaf(x):
        if not isinstance(x, jax.Array):
            return x
        if _is_key(x):
            x = jax.random.key_data(x)
        if not x.is_fully_addressable:
            if not x.is_fully_replicated:
                raise ValueError("fetch_replicated: the array is sharded; use local_rows")
            return np.asarray(x.addressable_data(0))
        return np.asarray(x)

    return jax.tree.map(leaf, tree)
