"""A node's private state on its own disk: each client's A_c, head and optimizer state by round.

Flower's in-memory ``Context.state`` dies with the node process; this store does not. Client
``k``'s state after round ``r`` (rounds numbered from 1; 0 = the initial state) is
``<root>/client_<k>/round_<r>.npz``, written to a temporary file and renamed, so a node killed
mid-write keeps the previous round whole. ``load(k, r)`` returns the newest state of a round
<= r: a round the server retries (or resumes after its own restart) starts again from the state
that round started from, never from a half-applied one. The newest ``KEEP`` rounds are kept.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jax
import numpy as np

from feddat_jax.errors import CheckpointError

PyTree = Any
KEEP = 3
_NAME = re.compile(r"round_(\d+)\.npz$")


class NodeStore:
    def __init__(self, root: str | Path, template: PyTree):
        """``template``: one client's initial private state (its tree and shapes)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.template = jax.tree.map(np.asarray, template)
        self.leaves, self.treedef = jax.tree.flatten(self.template)

    def _dir(self, client: int) -> Path:
        return self.root / f"client_{int(client)}"

    def rounds(self, client: int) -> list[int]:
        """The rounds of client ``client``'s saved states, oldest first."""
        folder = self._dir(client)
        if not folder.is_dir():
            return []
        found = (_NAME.fullmatch(p.name) for p in folder.iterdir())
        return sorted(int(m.group(1)) for m in found if m)

    def load(self, client: int, at_most: int) -> tuple[int, PyTree]:
        """``(round, state)``: the newest saved state of a round <= ``at_most`` (the initial
        state, round 0, when there is none)."""
        saved = [r for r in self.rounds(client) if r <= at_most]
        if not saved:
            return 0, self.template
        r = saved[-1]
        path = self._dir(client) / f"round_{r}.npz"
        with np.load(path) as data:
            leaves = [data[f"a{i}"] for i in range(len(self.leaves))]
        for got, want in zip(leaves, self.leaves):
            if got.shape != want.shape or got.dtype != want.dtype:
                raise CheckpointError(
                    f"{path} holds {got.shape} {got.dtype}, the run needs {want.shape} {want.dtype}",
                    "the node's state folder",
                    "give this run its own state folder (or delete the stale one)",
                )
        return r, jax.tree.unflatten(self.treedef, leaves)

    def save(self, client: int, round_number: int, state: PyTree) -> None:
        """Persist client ``client``'s state after round ``round_number`` (atomic), keep KEEP."""
        folder = self._dir(client)
        folder.mkdir(parents=True, exist_ok=True)
        leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
        tmp = folder / f".round_{round_number}.{os.getpid()}.tmp.npz"
        np.savez(tmp, **{f"a{i}": x for i, x in enumerate(leaves)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, folder / f"round_{round_number}.npz")
        for old in self.rounds(client)[:-KEEP]:
            (folder / f"round_{old}.npz").unlink(missing_ok=True)
