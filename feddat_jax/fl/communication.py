"""Communication accounting: bytes over the shared channel, the trainable-parameter share, a budget.

Per round with C participating clients (FedDAT: the shared adapter A_s is the only thing that
travels; A_c, heads and the frozen backbone never do):

* down: the server sends the global shared params to each client, ``C · bytes(shared)``;
* up: each client sends its shared delta (same shapes and dtypes), ``C · bytes(shared)``.

Bytes are the raw tensor payload, ``Σ leaf.size · leaf.dtype.itemsize`` (no protocol framing, no
compression). All functions are pure, host-side, and work on params or on ``jax.ShapeDtypeStruct``
trees alike. With Poisson sampling, count the *real* clients of the round (not the padded size).

:class:`CommunicationBudget` lets the loop stop cleanly BEFORE a round that would exceed a total
byte budget (as FlowerTune caps communication)::

    traffic = round_traffic(server.shared, cohort_size)
    if budget.exhausted(cumulative, traffic.total_bytes):
      break                       # the next round would go over the budget
    ... run the round ...
    cumulative += traffic.total_bytes
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable

import jax
import numpy as np

PyTree = Any


def tree_num_params(tree: PyTree) -> int:
    """Number of scalars in a pytree."""
    return int(sum(int(np.prod(np.shape(x), dtype=np.int64)) for x in jax.tree.leaves(tree)))


def tree_bytes(tree: PyTree) -> int:
    """Payload bytes of a pytree: Σ size · itemsize over its leaves."""
    return int(
        sum(
            int(np.prod(np.shape(x), dtype=np.int64)) * np.dtype(x.dtype).itemsize
            for x in jax.tree.leaves(tree)
        )
    )


def _check_cohort(cohort_size) -> int:
    if (
        isinstance(cohort_size, bool)
        or not isinstance(cohort_size, (int, np.integer))
        or (cohort_size < 0)
    ):
        raise ValueError(
            f"cohort_size must be an integer >= 0 (clients in the round); got {cohort_size!r}"
        )
    return int(cohort_size)


@dataclasses.dataclass(frozen=True)
class RoundTraffic:
    """Bytes of one round over the shared channel."""

    cohort_size: int
    bytes_down: int  # server -> clients: the global shared params, once per client
    bytes_up: int  # clients -> server: each client's shared delta

    @property
    def total_bytes(self) -> int:
        return self.bytes_down + self.bytes_up

    def metrics(self, cumulative_bytes: int | None = None) -> dict[str, int]:
        """``comm/*`` metrics of the round (plus the running total if given)."""
        out = {
            "comm/bytes_down": self.bytes_down,
            "comm/bytes_up": self.bytes_up,
            "comm/bytes_round": self.total_bytes,
        }
        if cumulative_bytes is not None:
            out["comm/bytes_cumulative"] = int(cumulative_bytes)
        return out


def round_traffic(shared: PyTree, cohort_size: int, upload: PyTree | None = None) -> RoundTraffic:
    """Traffic of one round: ``shared`` down to and its delta up from each of ``cohort_size`` clients.

    ``upload`` overrides what one client sends (default: a delta shaped like ``shared``).
    """
    c = _check_cohort(cohort_size)
    down = tree_bytes(shared)
    up = down if upload is None else tree_bytes(upload)
    return RoundTraffic(cohort_size=c, bytes_down=c * down, bytes_up=c * up)


def cumulative_bytes(traffic: Iterable[RoundTraffic], start: int = 0) -> list[int]:
    """Running totals after each round (``start``: bytes already spent, e.g. on resume)."""
    out, total = [], int(start)
    for t in traffic:
        total += t.total_bytes
        out.append(total)
    return out


@dataclasses.dataclass(frozen=True)
class ParameterShare:
    """Parameter counts of ONE client's model (private state unstacked) and their shares."""

    frozen: int
    shared: int
    private: int

    @property
    def total(self) -> int:
        return self.frozen + self.shared + self.private

    @property
    def trainable(self) -> int:
        return self.shared + self.private

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    @property
    def shared_fraction(self) -> float:
        return self.shared / self.total if self.total else 0.0

    def metrics(self) -> dict[str, float]:
        return {
            "params/total": self.total,
            "params/trainable": self.trainable,
            "params/shared": self.shared,
            "params/private": self.private,
            "params/trainable_fraction": self.trainable_fraction,
            "params/shared_fraction": self.shared_fraction,
        }


def parameter_share(frozen: PyTree, shared: PyTree, private: PyTree) -> ParameterShare:
    """Counts from the ``partition.split`` parts of one client's params (no client axis).

    Pass the private *params* (A_c, head), not optimizer state.
    """
    return ParameterShare(
        frozen=tree_num_params(frozen),
        shared=tree_num_params(shared),
        private=tree_num_params(private),
    )


class CommunicationBudget:
    """A cap on total bytes over the shared channel (``None`` or ``inf``: unlimited)."""

    def __init__(self, max_bytes: float | None):
        if max_bytes is not None and (
            isinstance(max_bytes, bool)
            or not isinstance(max_bytes, (int, float, np.integer))
            or not max_bytes > 0
        ):
            raise ValueError(
                f"communication budget max_bytes must be a number > 0 (or None / inf "
                f"for no budget); got {max_bytes!r}"
            )
        self.max_bytes = math.inf if max_bytes is None else max_bytes

    @property
    def unlimited(self) -> bool:
        return math.isinf(self.max_bytes)

    def exhausted(self, cumulative_bytes: int, next_round_bytes: int = 0) -> bool:
        """True if spending ``next_round_bytes`` on top of ``cumulative_bytes`` would exceed the cap.

        Call it before each round with that round's :attr:`RoundTraffic.total_bytes`; with the
        default 0 it tells whether the cap is already exceeded.
        """
        if cumulative_bytes < 0 or next_round_bytes < 0:
            raise ValueError(
                f"byte counts must be >= 0; got cumulative_bytes={cumulative_bytes}, "
                f"next_round_bytes={next_round_bytes}"
            )
        return cumulative_bytes + next_round_bytes > self.max_bytes

    def remaining(self, cumulative_bytes: int) -> float:
        return max(self.max_bytes - cumulative_bytes, 0)

    def __repr__(self):
        return f"CommunicationBudget(max_bytes={self.max_bytes})"
