"""Round checkpoints with orbax: everything needed to resume a run exactly.

A checkpoint holds the server state (round, global shared params, server optimizer state, rng),
EVERY registered client's private state (A_c, heads, local optimizer states), and a JSON ``meta``
record: the config fingerprint and the metrics so far. Data order and client sampling are
functions of (seed, round), so nothing else is needed for a bit-exact resume.

Saves are synchronous and atomic (orbax writes to a temporary folder and renames it), so a run
killed at any point, even with ``kill -9``, leaves only whole checkpoints. A checkpoint that fails
to restore (corrupt or truncated) is reported and the previous good one is used.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any
log = logging.getLogger(__name__)


class CheckpointMismatchError(ValueError):
    """The workdir holds checkpoints of a different experiment."""


def config_fingerprint(config_json: str) -> str:
    """A short hash of the parts of the config that change the numbers (not the workdir, logging)."""
    return hashlib.sha256(config_json.encode()).hexdigest()[:16]


def _to_savable(tree: PyTree) -> PyTree:
    """Typed PRNG keys are stored as their raw key data."""

    def leaf(x):
        if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key_data(x)
        return x

    return jax.tree.map(leaf, tree)


class RoundCheckpointer:
    """Saves every ``every`` rounds (and the last); restores the newest checkpoint that is whole."""

    def __init__(self, directory: str | Path, fingerprint: str, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        self.fingerprint = fingerprint
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
        )
        self.manager = ocp.CheckpointManager(
            self.directory, options=options, item_names=("state", "meta")
        )

    def save(self, round_index: int, state: PyTree, meta: dict) -> None:
        meta = {**meta, "fingerprint": self.fingerprint, "round": round_index}
        self.manager.save(
            round_index,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(_to_savable(state)), meta=ocp.args.JsonSave(meta)
            ),
        )
        self.manager.wait_until_finished()

    def restore_latest(self, target: PyTree) -> tuple[int, PyTree, dict] | None:
        """``(round, state, meta)`` of the newest whole checkpoint, or None for a fresh workdir.

        ``target`` is a state of the right structure (typed keys are converted back). A checkpoint of
        another experiment raises :class:`CheckpointMismatchError`; a broken one is skipped.
        """
        savable_target = _to_savable(target)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, savable_target)
        for step in sorted(self.manager.all_steps(), reverse=True):
            try:
                restored = self.manager.restore(
                    step,
                    args=ocp.args.Composite(
                        state=ocp.args.StandardRestore(abstract), meta=ocp.args.JsonRestore()
                    ),
                )
            except Exception as err:  # orbax raises many types for a damaged folder
                log.warning(
                    "checkpoint of round %d in %s is unreadable (%s: %s); trying an older one",
                    step,
                    self.directory,
                    type(err).__name__,
                    err,
                )
                continue
            meta = dict(restored["meta"])
            if meta.get("fingerprint") != self.fingerprint:
                raise CheckpointMismatchError(
                    f"{self.directory} holds checkpoints of a different config (fingerprint "
                    f"{meta.get('fingerprint')} != {self.fingerprint}); use another --workdir or the "
                    "same config"
                )
            state = jax.tree.map(_restore_leaf, target, restored["state"])
            return step, state, meta
        return None


def _restore_leaf(target_leaf, restored_leaf):
    if isinstance(target_leaf, jax.Array) and jax.dtypes.issubdtype(
        target_leaf.dtype, jax.dtypes.prng_key
    ):
        return jax.random.wrap_key_data(np.asarray(restored_leaf))
    return restored_leaf


def describe(meta: dict) -> str:
    return json.dumps({k: meta[k] for k in ("round", "fingerprint") if k in meta})
