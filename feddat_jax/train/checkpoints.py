"""Round checkpoints with orbax: everything needed to resume a run exactly.

A checkpoint holds the server state (round, global shared params, server optimizer state, rng),
the private state (A_c, heads, local optimizer states) of every client that has trained (the
others still hold the initial state, which the config rebuilds), and a JSON ``meta``
record: the fingerprints and the metrics so far. Data order and client sampling are functions of
(seed, round), so nothing else is needed for a bit-exact resume.

The fingerprint has two halves: the config's (every field that changes the numbers) and the
state tree's (structure, shape and dtype of every saved leaf). A checkpoint whose fingerprint
differs belongs to another experiment and is refused before anything is written, even when the
difference is only a shape (another adapter size, another answer count).

Saves are synchronous and atomic (orbax writes to a temporary folder and renames it), so a run
killed at any point, even with ``kill -9``, leaves only whole checkpoints. A checkpoint that fails
to restore (corrupt or truncated) gets one warning line and is moved aside to
``<checkpoints>_unreadable/`` (nothing is deleted); the previous good one is used. A checkpoint
the disk refuses (full, read-only, no permission) is a :class:`CheckpointError` in one line that
names the folder and the last good checkpoint; its partial write is removed and the earlier
checkpoints stay, so the same command resumes once there is room.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from feddat_jax.errors import CheckpointError, CheckpointMismatchError

PyTree = Any
log = logging.getLogger(__name__)
__all__ = ["CheckpointMismatchError", "RoundCheckpointer", "config_fingerprint", "tree_fingerprint"]


def config_fingerprint(config_json: str) -> str:
    """A short hash of the parts of the config that change the numbers (not the workdir, logging)."""
    return hashlib.sha256(config_json.encode()).hexdigest()[:16]


def tree_fingerprint(tree: PyTree) -> str:
    """A short hash of the tree's structure and every leaf's shape and dtype (not its values)."""
    leaves = jax.tree_util.tree_flatten_with_path(_to_savable(tree))[0]
    spec = [
        (jax.tree_util.keystr(path), tuple(np.shape(x)), str(np.dtype(x.dtype)))
        for path, x in leaves
    ]
    return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def _to_savable(tree: PyTree) -> PyTree:
    """Typed PRNG keys are stored as their raw key data."""

    def leaf(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(leaf, tree)


@contextlib.contextmanager
def quiet_logging():
    """Silence every logger (orbax and absl log whole tracebacks for a damaged folder)."""
    previous = logging.root.manager.disable
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(previous)


def _first_line(err: BaseException, limit: int = 160) -> str:
    text = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def os_problem(err: BaseException) -> str | None:
    """The operating system's reason in a failed write ("No space left on device", "Read-only
    file system", "Permission denied"), or None for any other error. Python's writes raise
    OSError; tensorstore's (the arrays) raise ValueError with ``os_error_code='28'`` in the
    text."""
    if isinstance(err, OSError) and err.errno:
        return os.strerror(err.errno)
    code = re.search(r"os_error_code='(\d+)'", str(err))
    return os.strerror(int(code.group(1))) if code else None


def _all_agree(ok: bool) -> bool:
    """True when ``ok`` holds on every process (a collective in a multi-process run)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


class RoundCheckpointer:
    """Saves every ``every`` rounds (and the last); restores the newest checkpoint that is whole.

    ``config_fp`` identifies the run's numbers: :func:`config_fingerprint` of its config and data
    (``Experiment.run_fingerprint``; the name and the stored ``config_fingerprint`` key predate the
    data half). The state tree's half of the fingerprint comes from the state given to
    :meth:`save` / :meth:`restore_latest`.
    """

    def __init__(
        self,
        directory: str | Path,
        config_fp: str,
        max_to_keep: int = 3,
        *,
        read_only: bool = False,
    ):
        self.directory = Path(directory).absolute()
        self.config_fp = config_fp
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            create=not read_only,
            read_only=read_only,
            enable_async_checkpointing=False,
        )
        with quiet_logging():  # orbax logs an error per damaged folder it lists
            self.manager = ocp.CheckpointManager(
                self.directory, options=options, item_names=("state", "meta")
            )

    def fingerprint(self, state: PyTree) -> str:
        return f"{self.config_fp}-{tree_fingerprint(state)}"

    def save(self, round_index: int, state: PyTree, meta: dict) -> None:
        meta = {
            **meta,
            "fingerprint": self.fingerprint(state),
            "config_fingerprint": self.config_fp,
            "round": round_index,
        }
        try:
            with quiet_logging():  # orbax's writer threads log a traceback per failed write
                self.manager.save(
                    round_index,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardSave(_to_savable(state)),
                        meta=ocp.args.JsonSave(meta),
                    ),
                )
                self.manager.wait_until_finished()
        except Exception as err:  # orbax and tensorstore raise OSError or ValueError
            problem = os_problem(err)
            if problem is None:  # not the disk: a bug, which keeps its traceback
                raise
            raise self._unwritable(round_index, problem) from err

    def _unwritable(self, round_index: int, problem: str) -> CheckpointError:
        """The error for a checkpoint the disk refused (full, read-only, no permission): the
        partial write is removed, the earlier checkpoints stay, and the message names the last
        one, from which rerunning the same command resumes."""
        with quiet_logging():  # the writer threads still running fail and log as well
            for thread in threading.enumerate():
                if type(thread).__module__.startswith("orbax."):
                    thread.join(timeout=60)
        if jax.process_index() == 0:
            for partial in self.directory.glob(f"{round_index}.orbax-checkpoint-tmp*"):
                shutil.rmtree(partial, ignore_errors=True)
        with quiet_logging():
            self.manager.reload()
            last = self.manager.latest_step()
        resume = (
            f"it resumes from round {last} ({self.directory / str(last)}), the last good one"
            if last is not None
            else "no round was saved yet, so it starts again"
        )
        return CheckpointError(
            f"cannot write the checkpoint of round {round_index} ({problem})",
            str(self.directory),
            f"free space there or make it writable, then rerun the same command: {resume}",
        )

    def read_metas(self) -> dict[int, dict | None]:
        """Every step's meta record, newest first (None where it cannot be read)."""
        metas = {}
        with quiet_logging():
            steps = sorted(self.manager.all_steps(), reverse=True)
        for step in steps:
            try:
                with quiet_logging():
                    restored = self.manager.restore(
                        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())
                    )
                metas[step] = dict(restored["meta"])
            except Exception:  # orbax raises many types for a damaged folder
                metas[step] = None
        return metas

    def check_config(self, metas: dict[int, dict | None] | None = None) -> None:
        """Raise :class:`CheckpointMismatchError` if a readable checkpoint has another config or
        data."""
        for step, meta in (self.read_metas() if metas is None else metas).items():
            if meta is not None:
                got = meta.get("config_fingerprint") or meta.get("fingerprint", "").split("-")[0]
                if got != self.config_fp:
                    raise self._mismatch(step, "a different config or data")

    def restore_latest(
        self,
        target: PyTree | Callable[[dict], PyTree],
        older: Sequence[tuple[PyTree, Callable[[PyTree], PyTree]]] = (),
    ) -> tuple[int, PyTree, dict] | None:
        """``(round, state, meta)`` of the newest whole checkpoint, or None for a fresh workdir.

        ``target`` is a state of the right structure (typed keys are converted back; leaves may
        be ``jax.ShapeDtypeStruct``), or a function of a checkpoint's meta record that gives it
        (for shapes the checkpoint records, such as how many clients hold state of their own).
        ``older`` are earlier layouts of the same state that still load: ``(their target, a
        function turning it into target's layout)``. If any checkpoint belongs to another
        experiment, :class:`CheckpointMismatchError` is raised before anything is touched; a
        damaged one is moved aside with one warning line.
        """

        def layouts(meta: dict) -> dict[str, tuple[PyTree, Callable[[PyTree], PyTree]]]:
            current = target(meta) if callable(target) else target
            found = {self.fingerprint(layout): (layout, upgrade) for layout, upgrade in older}
            found[self.fingerprint(current)] = (current, lambda state: state)
            return found

        metas = self.read_metas()
        self.check_config(metas)
        for step, meta in metas.items():
            if meta is not None and meta.get("fingerprint") not in layouts(meta):
                raise self._mismatch(step, "another state layout (parameter shapes or dtypes)")
        for step, meta in metas.items():
            restored, problem = None, "its meta record is unreadable"
            if meta is not None:
                layout, upgrade = layouts(meta)[meta["fingerprint"]]
                abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_savable(layout))
                try:
                    with quiet_logging():
                        restored = self.manager.restore(
                            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract))
                        )
                except Exception as err:  # orbax raises many types for a damaged folder
                    problem = _first_line(err)
            if _all_agree(restored is not None):
                state = upgrade(jax.tree.map(_restore_leaf, layout, restored["state"]))
                return step, state, meta
            self._set_aside(step, problem)
        return None

    def _mismatch(self, step: int, what: str) -> CheckpointMismatchError:
        return CheckpointMismatchError(
            f"the checkpoint of round {step} was written by a run with {what}",
            str(self.directory),
            "use another --workdir, or rerun with the config and data that wrote it",
        )

    def _set_aside(self, step: int, problem: str) -> None:
        """Move a damaged checkpoint out of orbax's folder (so the round can be saved again)."""
        aside = self.directory.parent / f"{self.directory.name}_unreadable"
        target = aside / str(step)
        if jax.process_index() == 0:
            aside.mkdir(exist_ok=True)
            suffix = 0
            while target.exists():
                suffix += 1
                target = aside / f"{step}.{suffix}"
            (self.directory / str(step)).rename(target)
            print(
                f"warning: the checkpoint of round {step} in {self.directory} is unreadable "
                f"({problem}); moved it to {target} and trying an older one",
                file=sys.stderr,
                flush=True,
            )
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices(f"feddat_set_aside_{step}")
        with quiet_logging():
            self.manager.reload()


def _restore_leaf(target_leaf, restored_leaf):
    if isinstance(target_leaf, jax.Array) and jax.dtypes.issubdtype(
        target_leaf.dtype, jax.dtypes.prng_key
    ):
        return jax.random.wrap_key_data(np.asarray(restored_leaf))
    return restored_leaf
