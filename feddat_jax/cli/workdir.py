"""The workdir: writable, locked by one live run, and never another run's files.

A run owns its workdir through ``config.json``, the first file it writes: a later run may resume
in it only if its config has the same numbers (the fields of
:data:`~feddat_jax.train.config_base.NON_NUMERIC_FIELDS` such as ``rounds`` may change). A workdir that holds another run's files is refused before
anything is written, naming the first differing keys.

The lock (``feddat.lock``) records the holder's process id, host and start time and is held with
``flock`` for the run's lifetime. A lock left by a killed run is stale and taken over:

* on this host, when its process is gone (or its pid now belongs to a younger process);
* from another host (a shared filesystem), when its heartbeat is older than
  :data:`STALE_AFTER_S`: the holder touches the file every :data:`HEARTBEAT_S` seconds, and the
  age is measured against a file written now, so both times come from the file server's clock.

In a multi-process run only process 0 takes the lock: the processes of ONE run share the workdir
by design (process 0 writes the files, all of them write the collective checkpoints), and a
second run's process 0 finds the lock taken. Process 0 tells the others whether it got the lock,
so a refused run stops everywhere instead of hanging in its first collective.
"""

from __future__ import annotations

import dataclasses
import datetime
import fcntl
import json
import os
import socket
import threading
from pathlib import Path

import ml_collections

from feddat_jax.errors import WorkdirError
from feddat_jax.train.config_base import without_non_numeric

LOCK_NAME = "feddat.lock"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0
CONFIG_NAME = "config.json"
# What a training run writes in the workdir root besides config.json (method folders aside).
REPORT_FILES = ("results.json", "results.txt", "scores.png", "communication.png")
METHOD_FILES = ("metrics.jsonl", "metrics.csv", "checkpoints", "tensorboard")


def prepare_workdir(path: str | Path) -> Path:
    """Create ``path`` (and parents) and check that this process can write in it."""
    workdir = Path(path).expanduser()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        probe = workdir / f".write_test.{os.getpid()}"  # one per process of a multi-host run
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise WorkdirError(
            f"--workdir {workdir} is not writable: {reason}",
            err.filename or str(workdir),
            "pass a folder you can create and write",
        ) from err
    return workdir


# ------------------------------------------------------------------------------ the lock
@dataclasses.dataclass(frozen=True)
class LockOwner:
    pid: int
    host: str
    process_start: str  # /proc/<pid>/stat start time ("" where unknown): detects a reused pid
    since: str  # ISO time the lock was taken

    @classmethod
    def me(cls) -> LockOwner:
        pid = os.getpid()
        now = datetime.datetime.now().isoformat(timespec="seconds")
        return cls(pid, socket.gethostname(), _process_start(pid), now)

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, since {self.since}"


def _process_start(pid: int) -> str:
    """The process's start time in clock ticks after boot, or "" where /proc is not there."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the name before ")" may hold spaces


def _alive(owner: LockOwner) -> bool:
    """Whether ``owner`` (a process on THIS host) still runs."""
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    start = _process_start(owner.pid)
    return not (owner.process_start and start and start != owner.process_start)


def _read_owner(path: Path) -> LockOwner | None:
    try:
        return LockOwner(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None  # empty (a run killed while writing it) or unreadable: not a live holder


def _filesystem_now(folder: Path) -> float:
    """The file server's current time: the mtime of a file written now."""
    probe = folder / f".{LOCK_NAME}.clock.{os.getpid()}"
    probe.write_text("")
    try:
        return probe.stat().st_mtime
    finally:
        probe.unlink()


class WorkdirLock:
    """Holds ``<workdir>/feddat.lock`` for one run (a context manager; see the module doc)."""

    def __init__(self, workdir: str | Path):
        self.path = Path(workdir) / LOCK_NAME
        self._fd: int | None = None
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def __enter__(self) -> WorkdirLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise self._busy(_read_owner(self.path)) from None
            try:  # a run that released the lock meanwhile unlinked the file we opened: retry
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        owner = _read_owner(self.path)
        if owner is not None and not self._stale(owner):
            os.close(fd)
            raise self._busy(owner)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(dataclasses.asdict(LockOwner.me())).encode())
        os.fsync(fd)
        self._fd = fd
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name="workdir-lock", daemon=True)
        self._beat.start()

    def _stale(self, owner: LockOwner) -> bool:
        if owner.host == socket.gethostname():
            return not _alive(owner)
        age = _filesystem_now(self.path.parent) - self.path.stat().st_mtime
        return age > STALE_AFTER_S

    def _busy(self, owner: LockOwner | None) -> WorkdirError:
        who = owner.describe() if owner else "a run that is starting"
        fix = "wait for it to finish, or use another --workdir"
        if owner is not None and owner.host != socket.gethostname():
            fix += (
                f"; if no run is alive on {owner.host}, the lock is taken over "
                f"{STALE_AFTER_S:.0f} s after its last heartbeat"
            )
        return WorkdirError(
            f"{self.path.parent} is in use by another run ({who})", str(self.path), fix
        )

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                os.utime(self.path)
            except OSError:
                pass  # the workdir went away; the run itself will report it

    def release(self) -> None:
        if self._fd is None:
            return
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        try:
            self.path.unlink()  # while still holding the flock: see the inode check above
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None


# ------------------------------------------------------------------------------ ownership
def numeric_config(config_dict: dict) -> dict:
    """The config as a flat ``{"a.b": value}`` without the fields that do not change numbers."""
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}{key}.", sub)
        else:
            flat[prefix[:-1]] = value

    walk("", without_non_numeric(config_dict))
    return flat


def config_dict(config: ml_collections.ConfigDict) -> dict:
    """The config as JSON data, exactly as ``config.json`` stores it."""
    return json.loads(config.to_json_best_effort())


def run_outputs(workdir: Path) -> list[str]:
    """The training outputs in ``workdir``: report files and method folders with results."""
    found = [name for name in REPORT_FILES if (workdir / name).exists()]
    if workdir.is_dir():
        found += sorted(
            f"{d.name}/"
            for d in workdir.iterdir()
            if d.is_dir() and any((d / f).exists() for f in METHOD_FILES)
        )
    return found


def check_ownership(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Refuse (:class:`WorkdirError`) a workdir holding outputs of a run with other numbers.

    Reads only. A ``config.json`` without any output (a run that failed before its first round)
    claims nothing worth keeping, so another config may take the workdir over.
    """
    saved, outputs = workdir / CONFIG_NAME, run_outputs(workdir)
    if not outputs:
        return
    if not saved.exists():
        raise WorkdirError(
            f"{workdir} holds run files ({', '.join(outputs[:4])}) but no {CONFIG_NAME}, so they "
            "cannot be told apart from another run's",
            str(workdir),
            "use another --workdir, or move those files away",
        )
    try:
        previous = json.loads(saved.read_text())
    except (OSError, ValueError) as err:
        raise WorkdirError(
            f"{saved} is not a run config ({type(err).__name__})",
            str(workdir),
            "use another --workdir",
        ) from err
    before = numeric_config(previous) if isinstance(previous, dict) else {}
    now = numeric_config(config_dict(config))
    changed = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if changed:
        shown = ", ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise WorkdirError(
            f"{workdir} holds a run with another config ({shown}{more})",
            str(saved),
            "use another --workdir, or rerun with the config that wrote it",
        )


def write_config(workdir: Path, config: ml_collections.ConfigDict) -> None:
    """Write ``config.json`` (the run's claim on the workdir) atomically."""
    tmp = workdir / f".{CONFIG_NAME}.{os.getpid()}"
    tmp.write_text(config.to_json_best_effort(indent=2))
    tmp.replace(workdir / CONFIG_NAME)
