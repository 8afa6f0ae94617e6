"""Where a round runs: the device mesh, array placement and multi-host (multi-process) runs.

The mesh has two axes, ``("clients", "model")``:

* every stacked client leaf (private state, task metadata, cohort batches, client ids) is
  sharded ``P("clients")`` on its leading axis, so device ``i`` holds clients ``i·C/n ..``;
* the frozen backbone is replicated (``P()``), or with ``shard_frozen`` its big matrices are
  split over ``"model"`` (for backbones that do not fit one device; ``model`` = 1 by default);
* server values (the global shared parameters, the server optimizer state) are replicated.

``placement.map_clients`` pins the same layout inside the jitted round (``vmap`` with
``spmd_axis_name="clients"`` plus sharding constraints), so the local epochs run where their
clients live and the server's weighted sum of the deltas lowers to one all-reduce.

Multi-host: every process runs the same program (JAX's multi-controller model). Call
:func:`initialize_distributed` first; then each process owns a contiguous block of the registered
clients (:func:`owned_clients`), keeps only their private state and data, and contributes only its
cohort rows: :func:`put_cohort` builds the global arrays with
``jax.make_array_from_process_local_data`` and :func:`local_rows` reads this process's rows of
the results back. :func:`sample_cohort` draws a cohort in which each process's slots are filled
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
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from feddat_jax.fl import sampling
from feddat_jax.fl.placement import CLIENTS_AXIS

PyTree = Any
MODEL_AXIS = "model"
MESH_AXES = (CLIENTS_AXIS, MODEL_AXIS)

# How the cohort's local epochs run, per backend, chosen by measurement
# (benchmarks/bench_round.py; the numbers are in benchmarks/RESULTS.md):
#   "vmap": all clients at once (make_round_fn(chunk_size=None));
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
    """``make_round_fn`` / ``make_eval_fn`` keyword arguments of a strategy.

    ``"vmap"`` with a ``chunk_size`` is the memory fallback: ``chunk_size`` clients at a time per
    device (``lax.map(batch_size=…)``). ``"loop"`` has no jitted-round form (benchmark only).
    """
    if strategy == "vmap":
        return {"chunk_size": chunk_size or None}
    if strategy == "scan":
        return {"chunk_size": 1}
    if strategy == "loop":
        raise ValueError(
            "the 'loop' strategy is the benchmark's sequential baseline; the training "
            "loop runs 'vmap' or 'scan' inside one jitted round"
        )
    raise ValueError(f"unknown strategy {strategy!r}; allowed: {', '.join(STRATEGIES)}")


# ------------------------------------------------------------------------------------- the mesh
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
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        get = (
            cfg.get
            if isinstance(cfg, Mapping) or hasattr(cfg, "get")
            else (lambda k, d: getattr(cfg, k, d))
        )
        return cls(**{f.name: get(f.name, f.default) for f in dataclasses.fields(cls)})


def make_mesh(clients: int = -1, model: int = 1, devices=None) -> Mesh:
    """A ``("clients", "model")`` mesh over ``devices`` (default: every device of every process).

    The axes are ``AxisType.Auto`` (``jax.make_mesh`` defaults to ``Explicit`` since JAX 0.7): the
    round states its layout with sharding constraints and ``vmap(spmd_axis_name=…)``, and lets the
    compiler partition everything else.
    """
    devices = list(jax.devices() if devices is None else devices)
    if model < 1:
        raise ValueError(f"mesh model axis must be >= 1, got {model}")
    if clients == -1:
        if len(devices) % model:
            raise ValueError(f"{len(devices)} devices do not split into a model axis of {model}")
        clients = len(devices) // model
    if clients < 1 or clients * model > len(devices):
        raise ValueError(
            f"mesh ({clients} clients x {model} model) needs {clients * model} devices; "
            f"{len(devices)} available"
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
    """The layout of every stacked client leaf: leading axis over ``clients``."""
    return NamedSharding(mesh, P(CLIENTS_AXIS))


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


def put_cohort(tree_local: PyTree, mesh: Mesh, cohort_size: int | None = None) -> PyTree:
    """Stacked client values -> global arrays sharded ``P("clients")``.

    ``tree_local`` holds THIS process's rows of the cohort (its slots, :func:`local_slots`); in a
    single-process run that is the whole cohort. Uses ``jax.make_array_from_process_local_data``
    (``cohort_size`` is the global C; inferred when every process holds as many rows).
    """
    s = clients_sharding(mesh)
    n = clients_size(mesh)

    def leaf(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return _put(x, s)
        if _is_key(x):
            return jax.random.wrap_key_data(
                leaf(jax.random.key_data(x)), impl=jax.random.key_impl(x)
            )
        x = np.asarray(x)
        c = cohort_size or x.shape[0] * jax.process_count()
        if c % n:
            raise ValueError(
                f"a cohort of {c} clients does not divide over the mesh's {n} "
                f"'{CLIENTS_AXIS}' devices; pad it to a multiple "
                "(feddat_jax.fl.registry.pad_ids)"
            )
        return jax.make_array_from_process_local_data(s, x, (c,) + x.shape[1:])

    return jax.tree.map(leaf, tree_local)


def local_rows(x: jax.Array) -> np.ndarray:
    """This process's rows of a ``P("clients")``-sharded array, in global order, as numpy."""
    if x.is_fully_addressable:
        return np.asarray(x)
    seen, parts = set(), []
    for shard in sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0):
        start = shard.index[0].start or 0
        if start in seen:  # a replica along the model axis
            continue
        seen.add(start)
        parts.append(np.asarray(shard.data))
    return np.concatenate(parts)


def local_tree(tree: PyTree) -> PyTree:
    return jax.tree.map(local_rows, tree)


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


# -------------------------------------------------------------------- processes and ownership
def process_slots(mesh: Mesh, cohort_size: int) -> np.ndarray:
    """``[P + 1]`` offsets: process p holds cohort slots ``[off[p], off[p+1])``.

    Requires each process's devices to hold one contiguous run of the clients axis (true for
    ``make_mesh`` on CPU and GPU hosts, where devices are ordered by process).
    """
    n = clients_size(mesh)
    if cohort_size % n:
        raise ValueError(
            f"cohort of {cohort_size} does not divide over {n} '{CLIENTS_AXIS}' devices"
        )
    per_device = cohort_size // n
    axis = mesh.axis_names.index(CLIENTS_AXIS)
    rows = np.moveaxis(np.asarray(mesh.devices), axis, 0).reshape(n, -1)
    if any(len({d.process_index for d in row}) != 1 for row in rows):
        raise ValueError("a model-axis row of the mesh spans processes; keep 'model' within a host")
    owner = [int(row[0].process_index) for row in rows]
    counts = np.bincount(np.asarray(owner), minlength=jax.process_count())
    order = [p for i, p in enumerate(owner) if i == 0 or owner[i - 1] != p]
    if order != sorted(set(owner)) or len(order) != len(set(owner)):
        raise ValueError(f"the mesh's clients axis is not ordered by process: {owner}")
    return np.concatenate([[0], np.cumsum(counts * per_device)]).astype(np.int64)


def local_slots(mesh: Mesh, cohort_size: int) -> slice:
    """This process's slots of the cohort."""
    off = process_slots(mesh, cohort_size)
    p = jax.process_index()
    return slice(int(off[p]), int(off[p + 1]))


def client_blocks(num_clients: int, num_processes: int | None = None) -> np.ndarray:
    """``[P + 1]`` offsets of the balanced contiguous client blocks each process owns."""
    num_processes = num_processes or jax.process_count()
    if num_clients < num_processes:
        raise ValueError(f"{num_clients} clients cannot be owned by {num_processes} processes")
    base, extra = divmod(num_clients, num_processes)
    sizes = [base + (p < extra) for p in range(num_processes)]
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def owned_clients(
    num_clients: int, process_index: int | None = None, num_processes: int | None = None
) -> np.ndarray:
    """Global ids of the clients whose private state and data live in this process."""
    p = jax.process_index() if process_index is None else process_index
    off = client_blocks(num_clients, num_processes)
    return np.arange(off[p], off[p + 1])


def sample_cohort(
    seed: int,
    round_index: int,
    num_clients: int,
    clients_per_round: float,
    mesh: Mesh | None = None,
    num_processes: int | None = None,
) -> np.ndarray:
    """The round's sorted global cohort, identical in every process.

    One process: exactly ``sampling.sample_clients``. P processes: stratified by owner: process p
    fills its ``C/P`` slots (:func:`process_slots`) with a uniform draw from its own client block
    (:func:`client_blocks`), keyed by (seed, round, p), so no process trains a client it does not
    hold. Every client is still sampled with probability ≈ C/N, but the cohort differs from the
    single-process draw; with all clients every round (the paper's setting) they coincide. A
    single-process run reproduces a P-process run with ``num_processes=P`` (no mesh needed).
    """
    num_processes = num_processes or jax.process_count()
    c = sampling.cohort_size(num_clients, clients_per_round)
    if num_processes == 1:
        return sampling.sample_clients(seed, round_index, num_clients, clients_per_round)
    if mesh is not None and jax.process_count() == num_processes:
        slots = np.diff(process_slots(mesh, c))
    else:
        if c % num_processes:
            raise ValueError(
                f"a cohort of {c} does not split evenly over {num_processes} processes"
            )
        slots = np.full(num_processes, c // num_processes)
    blocks = client_blocks(num_clients, num_processes)
    parts = []
    for p in range(num_processes):
        lo, hi = int(blocks[p]), int(blocks[p + 1])
        if slots[p] > hi - lo:
            raise ValueError(f"process {p} owns {hi - lo} clients but has {slots[p]} cohort slots")
        if slots[p] == hi - lo:
            parts.append(np.arange(lo, hi))
            continue
        rng = np.random.default_rng([seed, round_index, 0x5A3, p])
        parts.append(lo + np.sort(rng.choice(hi - lo, size=int(slots[p]), replace=False)))
    return np.concatenate(parts).astype(np.int64)


def _balanced(total: int, parts: int) -> np.ndarray:
    base, extra = divmod(total, parts)
    return np.asarray([base + (p < extra) for p in range(parts)], np.int64)


def plan_cohort(
    seed: int,
    round_index: int,
    num_clients: int,
    clients_per_round: float,
    mesh: Mesh | None = None,
    devices_per_process=None,
) -> tuple[np.ndarray, np.ndarray]:
    """The round's cohort padded for the mesh: ``(ids_C, mask_C)``, identical in every process.

    ``mask_C`` is True for real clients; the loop gives the padded slots ``num_examples = 0`` and an
    all-zero ``example_mask``, so they change no number. ``devices_per_process``: the ``clients``
    axis devices of each process (default: from ``mesh`` and the running processes).

    One process: exactly ``sampling.sample_clients``, padded at the end (repeating its first id) to
    the smallest multiple of the ``clients`` axis. P processes: process p's slots
    (:func:`local_slots`) hold first its own clients, a balanced share of the cohort drawn like
    :func:`sample_cohort` from its block (:func:`client_blocks`), then padding that repeats one of
    its own clients; every process gets the same number of slots per device. With every client in
    every round (the paper's setting) the real clients are the same as in one process.
    """
    if devices_per_process is None:
        if jax.process_count() == 1:
            devices_per_process = [clients_size(mesh)]
        elif mesh is None:
            raise ValueError("plan_cohort: a multi-process run needs its mesh")
        else:
            devices_per_process = np.diff(process_slots(mesh, clients_size(mesh)))
    devices = np.asarray(devices_per_process, np.int64)
    procs = len(devices)
    c = sampling.cohort_size(num_clients, clients_per_round)
    if procs == 1:
        ids = sampling.sample_clients(seed, round_index, num_clients, clients_per_round)
        size = -(-c // int(devices[0])) * int(devices[0])
        out = np.full((size,), ids[0], np.int64)
        out[:c] = ids
        return out, np.arange(size) < c
    blocks = client_blocks(num_clients, procs)
    sizes = np.diff(blocks)
    want = sizes if c == num_clients else _balanced(c, procs)
    if np.any(want == 0) or np.any(want > sizes):
        raise ValueError(
            f"a cohort of {c} clients does not split over {procs} processes owning "
            f"{sizes.tolist()} clients (each process needs at least one cohort client)"
        )
    per_device = int(max(-(-int(w) // int(d)) for w, d in zip(want, devices)))
    ids, mask = [], []
    for p in range(procs):
        lo, hi = int(blocks[p]), int(blocks[p + 1])
        if want[p] == hi - lo:
            real = np.arange(lo, hi)
        else:
            rng = np.random.default_rng([seed, round_index, 0x5A3, p])
            real = lo + np.sort(rng.choice(hi - lo, size=int(want[p]), replace=False))
        slots = int(devices[p]) * per_device
        ids.append(np.concatenate([real, np.full((slots - real.size,), real[0])]))
        mask.append(np.arange(slots) < real.size)
    return np.concatenate(ids).astype(np.int64), np.concatenate(mask)


# ------------------------------------------------------------------------------ multi-process
@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """The ``config.distributed`` block; empty fields fall back to the environment.

    Environment: ``JAX_COORDINATOR_ADDRESS`` (read by JAX itself), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` (read here). With none of them set, a run is single-process unless
    ``auto_detect`` asks JAX to detect a cluster (SLURM, Open MPI, TPU pods, ...).
    """

    coordinator_address: str = ""  # "host:port" of process 0's coordinator service
    num_processes: int = 0
    process_id: int = -1
    coordinator_bind_address: str = ""  # default [::]:port; "127.0.0.1:port" keeps it local
    local_device_ids: tuple[int, ...] = ()
    initialization_timeout: int = 300  # seconds to wait for every process to connect
    heartbeat_timeout_seconds: int = 100
    shutdown_timeout_seconds: int = 300
    cpu_collectives: str = "gloo"  # cross-process collectives on CPU ("gloo" | "mpi")
    auto_detect: bool = False

    @classmethod
    def from_config(cls, cfg: Any) -> DistributedConfig:
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        get = (
            cfg.get
            if isinstance(cfg, Mapping) or hasattr(cfg, "get")
            else (lambda k, d: getattr(cfg, k, d))
        )
        values = {f.name: get(f.name, f.default) for f in dataclasses.fields(cls)}
        values["local_device_ids"] = tuple(values["local_device_ids"] or ())
        return cls(**values)


def initialize_distributed(cfg: Any = None, env: Mapping[str, str] | None = None) -> bool:
    """``jax.distributed.initialize`` from ``config.distributed`` and the environment.

    Call it before anything touches a JAX device. Returns True for a multi-process run, False
    when the run is single-process (nothing configured): then it does nothing.
    """
    c = DistributedConfig.from_config(cfg)
    env = os.environ if env is None else env
    address = c.coordinator_address or env.get("JAX_COORDINATOR_ADDRESS", "")
    num = c.num_processes or int(env.get("JAX_NUM_PROCESSES", "0") or 0)
    pid = c.process_id if c.process_id >= 0 else int(env.get("JAX_PROCESS_ID", "-1") or -1)
    if not (address or num or c.auto_detect):
        return False
    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    if c.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", c.cpu_collectives)
    kwargs = {
        "initialization_timeout": c.initialization_timeout,
        "heartbeat_timeout_seconds": c.heartbeat_timeout_seconds,
        "shutdown_timeout_seconds": c.shutdown_timeout_seconds,
    }
    if c.coordinator_bind_address:
        kwargs["coordinator_bind_address"] = c.coordinator_bind_address
    if c.local_device_ids:
        kwargs["local_device_ids"] = list(c.local_device_ids)
    if not c.auto_detect and not (address and num and pid >= 0):
        raise ValueError(
            "a multi-process run needs coordinator_address, num_processes and "
            f"process_id (got {address!r}, {num}, {pid}); set them in "
            "config.distributed or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / "
            "JAX_PROCESS_ID, or set auto_detect for SLURM / MPI / TPU pods"
        )
    jax.distributed.initialize(
        coordinator_address=address or None,
        num_processes=num or None,
        process_id=pid if pid >= 0 else None,
        **kwargs,
    )
    return jax.process_count() > 1
