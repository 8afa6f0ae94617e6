"""Per-example test scores -> the numbers a person compares: per client, per question group, per
question type, each the mean over clients.

Evaluation returns every test example's score (``fl.evaluation``); the breakdowns happen here, on
the host, from the tags the data carry (``RowStore.row_tags``). A group or type mean is the mean
over the clients that have test examples of it, so every client weighs the same, as in the
per-client mean of the headline number.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence

import numpy as np

from feddat_jax.data.client_store import RowStore

Record = dict[str, float]
GROUPS = ("shared", "shifted")


def per_client(scores_NxSxB: np.ndarray, rows_NxSxB: np.ndarray) -> list[np.ndarray]:
    """Each client's example scores in its stored order (padding, row -1, dropped): [n_k] each."""
    out = []
    for k in range(len(rows_NxSxB)):
        rows, scores = rows_NxSxB[k].reshape(-1), np.asarray(scores_NxSxB[k]).reshape(-1)
        real = rows >= 0
        order = np.argsort(rows[real], kind="stable")
        out.append(scores[real][order].astype(np.float64))
    return out


def client_tags(store: RowStore, client_ids=None) -> list[dict[str, np.ndarray]]:
    """Each client's row tags (question type, group), from the store (default: every client)."""
    ids = range(store.num_clients) if client_ids is None else client_ids
    return [store.row_tags(np.arange(store.offsets[k], store.offsets[k + 1])) for k in ids]


def summarize(
    variant: str,
    scores: Sequence[np.ndarray],
    names: Sequence[str],
    tags: Sequence[Mapping[str, np.ndarray]],
) -> Record:
    """``score/<client>/<variant>`` and ``score/mean/<variant>`` (in %), plus
    ``group/<group>/<variant>`` and ``qtype/<type>/<variant>`` where the data carry those tags,
    and ``qtype/<type>@<group>/<variant>`` for a type whose questions fall in several groups (the
    embedded task family's mixed statements: where a shift shows is the difference between the
    halves, which the type's mean hides)."""
    record: Record = {}
    for name, s in zip(names, scores):
        record[f"score/{name}/{variant}"] = 100.0 * float(np.mean(s)) if len(s) else float("nan")
    record[f"score/mean/{variant}"] = float(
        np.nanmean([record[f"score/{n}/{variant}"] for n in names])
    )
    for tag, prefix in (("group", "group"), ("question_type", "qtype")):
        for value, mean in _means_per_value(scores, [t.get(tag) for t in tags]).items():
            record[f"{prefix}/{value}/{variant}"] = mean
    halves = _means_per_value(scores, [_type_at_group(t) for t in tags])
    groups_per_type = collections.Counter(half.partition("@")[0] for half in halves)
    for half, mean in halves.items():
        if groups_per_type[half.partition("@")[0]] > 1:
            record[f"qtype/{half}/{variant}"] = mean
    return record


def sample_summary(
    variant: str, client_scores: np.ndarray, took_part: np.ndarray, population: int
) -> Record:
    """The evaluated clients as a sample of the ``population`` registered ones (in %).

    ``score_ci95/<variant>``: the half-width of the 95% interval of the mean over clients that
    the sample buys (normal approximation with the finite-population correction, so 0 when every
    client is evaluated); ``score_took_part/<variant>`` and ``score_never/<variant>``: the mean
    over the sampled clients that trained in some round so far and over those that never did
    (pFL-Bench's participating / non-participating split; left out when a side is empty).
    ``client_scores``: each evaluated client's mean score (NaN without test examples).
    """
    scores = np.asarray(client_scores, np.float64)
    took_part = np.asarray(took_part, bool)
    real = np.isfinite(scores)
    n = int(real.sum())
    record: Record = {"eval/clients": float(n), "eval/took_part": float((real & took_part).sum())}
    spread = float(np.std(scores[real], ddof=1)) if n > 1 else 0.0
    finite = np.sqrt(max(population - n, 0) / max(population - 1, 1))
    record[f"score_ci95/{variant}"] = 1.96 * spread / np.sqrt(max(n, 1)) * finite
    for name, side in (("took_part", took_part), ("never", ~took_part)):
        if np.any(real & side):
            record[f"score_{name}/{variant}"] = float(np.mean(scores[real & side]))
    return record


def _means_per_value(
    scores: Sequence[np.ndarray], values_per_client: Sequence[np.ndarray | None]
) -> dict[str, float]:
    """Each tag value's mean score (in %) over the clients that have examples with it."""
    means: dict[str, list[float]] = {}
    for s, values in zip(scores, values_per_client):
        if values is None:
            continue
        for value in sorted(set(values) - {""}):
            means.setdefault(value, []).append(100.0 * float(np.mean(s[values == value])))
    return {value: float(np.mean(m)) for value, m in sorted(means.items())}


def _type_at_group(tags: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """``"<type>@<group>"`` per example ("" where either tag is empty), None without both tags."""
    qtypes, groups = tags.get("question_type"), tags.get("group")
    if qtypes is None or groups is None:
        return None
    return np.array([f"{q}@{g}" if q and g else "" for q, g in zip(qtypes, groups)], object)
