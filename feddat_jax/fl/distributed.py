"""Multi-process runs: which process owns which clients, cohort plans, and ``jax.distributed``.

Every process runs the same program (JAX's multi-controller model). Call
:func:`initialize_distributed` before anything touches a device; then each process owns a
contiguous block of the registered clients (:func:`owned_clients`), keeps only their private state
and data, and fills its own slots of each round's cohort (:func:`plan_cohort`,
:func:`sample_cohort`). The arrays themselves are placed by :mod:`feddat_jax.fl.mesh`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from feddat_jax.errors import ConfigError, DistributedError
from feddat_jax.fl import sampling
from feddat_jax.fl.mesh import clients_size, config_fields
from feddat_jax.fl.placement import CLIENTS_AXIS


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
        raise ConfigError(
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


def chunk_cohort(
    ids: np.ndarray, mask: np.ndarray, mesh: Mesh | None, size: int, devices_per_process=None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A padded cohort (e.g. every client, for evaluation) as chunks of at most ~``size`` slots.

    Each process's slots are cut alike and each piece is padded (repeating the process's first
    client, mask False) to one static number of slots per device, so every chunk has the same
    shape (one compilation) and each process fills its own slots of it, as in :func:`plan_cohort`
    (``devices_per_process``: as there; default from ``mesh``).
    """
    ids, mask = np.asarray(ids, np.int64), np.asarray(mask, bool)
    if devices_per_process is not None:
        devices = np.asarray(devices_per_process, np.int64)
        off = np.concatenate([[0], np.cumsum(devices * (ids.size // devices.sum()))])
    elif mesh is None:
        off, devices = np.array([0, ids.size]), np.array([1])
    else:
        off = process_slots(mesh, ids.size)
        devices = np.diff(process_slots(mesh, clients_size(mesh)))
    procs = len(devices)
    per_device = max(1, -(-max(1, size // procs) // int(devices.max())))
    widths = devices * per_device  # slots per process in every chunk
    count = max(-(-int(hi - lo) // int(w)) for lo, hi, w in zip(off[:-1], off[1:], widths))
    chunks = []
    for i in range(count):
        c_ids, c_mask = [], []
        for p in range(procs):
            lo, hi, w = int(off[p]), int(off[p + 1]), int(widths[p])
            part = slice(min(lo + i * w, hi), min(lo + (i + 1) * w, hi))
            real_ids, real_mask = ids[part], mask[part]
            pad = w - real_ids.size
            c_ids.append(np.concatenate([real_ids, np.full((pad,), ids[lo])]))
            c_mask.append(np.concatenate([real_mask, np.zeros((pad,), bool)]))
        chunks.append((np.concatenate(c_ids), np.concatenate(c_mask)))
    return chunks


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
        if isinstance(cfg, cls):
            return cfg
        values = config_fields(cls, cfg)
        values["local_device_ids"] = tuple(values["local_device_ids"] or ())
        return cls(**values)


def initialize_distributed(cfg: Any = None, env: Mapping[str, str] | None = None) -> bool:
    """``jax.distributed.initialize`` from ``config.distributed`` and the environment.

    Call it before anything touches a JAX device. Returns True for a multi-process run, False
    when the run is single-process (nothing configured): then it does nothing. Missing settings
    raise :class:`DistributedError`; a process that cannot join within
    ``initialization_timeout`` seconds prints one line naming the coordinator address and its
    process id and exits with status 2 (see :func:`_join_watchdog`).
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
    if c.initialization_timeout <= 0:
        raise DistributedError(
            f"initialization_timeout={c.initialization_timeout} must be > 0 seconds",
            "config.distributed.initialization_timeout",
            "set it to the seconds every process may take to start (default 300)",
        )
    kwargs = {
        # JAX aborts the whole process (a C++ check failure) at its own deadline: give it a
        # margin so that the watchdog below reports the failure first, in one line
        "initialization_timeout": c.initialization_timeout + JOIN_MARGIN_S,
        "heartbeat_timeout_seconds": c.heartbeat_timeout_seconds,
        "shutdown_timeout_seconds": c.shutdown_timeout_seconds,
    }
    if c.coordinator_bind_address:
        kwargs["coordinator_bind_address"] = c.coordinator_bind_address
    if c.local_device_ids:
        kwargs["local_device_ids"] = list(c.local_device_ids)
    if not c.auto_detect and not (address and num and pid >= 0):
        raise DistributedError(
            "a multi-process run needs coordinator_address, num_processes and process_id "
            f"(got {address!r}, {num}, {pid})",
            "config.distributed",
            "set all three there or in JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / "
            "JAX_PROCESS_ID, or set config.distributed.auto_detect=True on SLURM / MPI / TPU pods",
        )
    where = f"process {pid if pid >= 0 else '?'} of {num or '?'}, coordinator {address or '(auto)'}"
    if address and not _is_host_port(address):
        raise DistributedError(
            f"coordinator address {address!r} is not host:port",
            "config.distributed.coordinator_address",
            "give process 0's host and a free port, e.g. 10.0.0.1:1234",
        )
    fix = (
        "start every other process with the same coordinator_address and num_processes"
        if pid == 0
        else "check that process 0 runs and that its address is reachable from this host"
    )
    with _join_watchdog(c.initialization_timeout, where, fix):
        try:
            jax.distributed.initialize(
                coordinator_address=address or None,
                num_processes=num or None,
                process_id=pid if pid >= 0 else None,
                **kwargs,
            )
        except Exception as err:  # a malformed address, a port in use, an undetected cluster
            raise DistributedError(
                f"could not join the multi-process run: {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}",
                where,
                "check config.distributed.coordinator_address (host:port of process 0)",
            ) from err
    return jax.process_count() > 1


JOIN_MARGIN_S = 30


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit()


@contextlib.contextmanager
def _join_watchdog(timeout_s: float, where: str, fix: str):
    """Report a join that takes longer than ``timeout_s`` in one line and exit with status 2.

    ``jax.distributed.initialize`` cannot be interrupted, and at its own deadline it aborts the
    process with a C++ stack trace that never names the address; this thread speaks first.
    """
    done = threading.Event()

    def watch() -> None:
        if not done.wait(timeout_s):
            print(
                f"error: this process did not join the multi-process run within {timeout_s:g} s "
                f"({where}); {fix}, or raise config.distributed.initialization_timeout",
                file=sys.stderr,
                flush=True,
            )
            os._exit(2)

    thread = threading.Thread(target=watch, name="join-watchdog", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
