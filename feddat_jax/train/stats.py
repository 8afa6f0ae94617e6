"""Mean ± std and the 95% confidence interval of a score over a sweep's seeds, and the grouping
of a run's metrics rows into settings (replicas that differ only by seed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from feddat_jax.train.metrics import Record

# two-sided 95% quantiles of Student's t with df = 1..30 degrees of freedom
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
# keys of a metrics row that say which replica it is, not what it measured
_ROW_IDENTITY = ("round", "replica", "seed", "cohort")


def t975(df: int) -> float:
    """The 97.5% quantile of Student's t (beyond the table: the Cornish-Fisher first term)."""
    if df < 1:
        raise ValueError(f"a confidence interval needs at least 2 values (df >= 1), got df={df}")
    return _T975[df - 1] if df <= len(_T975) else 1.95996 + 2.3722 / df


def summarize(values: Sequence[float]) -> dict:
    """``{"mean", "std", "ci95", "n", "values"}``: the sample std (ddof 1) and the half-width of
    the t interval ``t(n-1)·std/√n``; one value has std 0 and no interval (None)."""
    x = np.asarray([v for v in values if v is not None], np.float64)
    if x.size == 0:
        return {"mean": None, "std": None, "ci95": None, "n": 0, "values": []}
    std = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    ci = t975(x.size - 1) * std / math.sqrt(x.size) if x.size > 1 else None
    return {
        "mean": float(np.mean(x)),
        "std": std,
        "ci95": ci,
        "n": int(x.size),
        "values": x.tolist(),
    }


def split_replicas(history: list[Record]) -> list[list[Record]]:
    """A run's rows per replica (an unswept run is one replica)."""
    count = 1 + max((int(r.get("replica", 0)) for r in history), default=0)
    out: list[list[Record]] = [[] for _ in range(count)]
    for record in history:
        out[int(record.get("replica", 0))].append(record)
    return out


def swept_values(history: list[Record]) -> dict:
    """The swept hyperparameters of a replica's rows (everything but its seed), e.g.
    ``{"optim.learning_rate": 0.001}``; ``{}`` for a run that sweeps only seeds or nothing."""
    first = history[0] if history else {}
    return {k: v for k, v in first.items() if "/" not in k and k not in _ROW_IDENTITY}


def settings(history: list[Record]) -> list[tuple[dict, list[int], list[list[Record]]]]:
    """``(swept values, replica indices, their histories)`` per setting, in replica order."""
    groups: dict[tuple, tuple[dict, list[int], list[list[Record]]]] = {}
    for index, rows in enumerate(split_replicas(history)):
        values = swept_values(rows)
        key = tuple(sorted(values.items()))
        groups.setdefault(key, (values, [], []))
        groups[key][1].append(index)
        groups[key][2].append(rows)
    return list(groups.values())


def setting_label(values: dict) -> str:
    return ",".join(f"{k}={v:g}" for k, v in values.items())
