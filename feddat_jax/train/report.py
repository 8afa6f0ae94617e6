"""The end-of-run comparison: a table on the terminal, the same as JSON, and the PNG plots."""

from __future__ import annotations

import json
from pathlib import Path

from feddat_jax.train import plots
from feddat_jax.train.metrics import Record
from feddat_jax.train.scores import GROUPS

# Up to this many clients the table shows a column per client; beyond, results.txt does.
MAX_CLIENT_COLUMNS = 6


def headline_variant(history: list[Record]) -> str:
    """The variant a method is judged by: the DAT for FedDAT, the global model otherwise."""
    last = _last_eval(history)
    return "dat" if "score/mean/dat" in last else "global"


def _last_eval(history: list[Record]) -> Record:
    evals = [r for r in history if any(k.startswith("score/mean/") for k in r)]
    return evals[-1] if evals else {}


def _with_prefix(record: Record, prefix: str, variant: str) -> dict[str, float]:
    return {
        k[len(prefix) : -len(variant) - 1]: v
        for k, v in record.items()
        if k.startswith(prefix) and k.endswith(f"/{variant}")
    }


def final_scores(runs: dict[str, list[Record]], clients: list[str]) -> dict[str, dict]:
    """Per method: round, the headline variant, per-client, per-group, per-question-type and mean
    scores of the last evaluation, and every variant's mean."""
    out = {}
    for method, history in runs.items():
        last, variant = _last_eval(history), headline_variant(history)
        out[method] = {
            "round": last.get("round"),
            "variant": variant,
            "clients": {c: last.get(f"score/{c}/{variant}") for c in clients},
            "mean": last.get(f"score/mean/{variant}"),
            "groups": _with_prefix(last, "group/", variant),
            "question_types": _with_prefix(last, "qtype/", variant),
            "comm_mb": history[-1].get("comm/bytes_cumulative", 0) / 1e6 if history else 0,
            "all_variants": {
                k.split("/")[-1]: v for k, v in last.items() if k.startswith("score/mean/")
            },
        }
    return out


def format_table(
    scores: dict[str, dict], clients: list[str], max_client_columns: int = MAX_CLIENT_COLUMNS
) -> str:
    """One row per method: the headline variant's per-client scores (when few clients), mean,
    per-group means (when the data are tagged) and megabytes communicated."""
    shown = clients if len(clients) <= max_client_columns else []
    groups = [g for g in GROUPS if any(g in s["groups"] for s in scores.values())]
    width = max(10, *(len(c) for c in shown)) if shown else 10
    head = f"{'method':<22}{'variant':<8}" + "".join(f"{c[:width]:>{width + 1}}" for c in shown)
    head += f"{'mean':>8}" + "".join(f"{g:>9}" for g in groups) + f"{'comm MB':>9}"
    lines = [head, "-" * len(head)]
    for method, s in scores.items():
        cells = "".join(f"{_fmt(s['clients'][c]):>{width + 1}}" for c in shown)
        group_cells = "".join(f"{_fmt(s['groups'].get(g)):>9}" for g in groups)
        lines.append(
            f"{method:<22}{s['variant']:<8}{cells}{_fmt(s['mean']):>8}{group_cells}"
            f"{s['comm_mb']:>9.2f}"
        )
    return "\n".join(lines)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_report(runs: dict[str, list[Record]], clients: list[str], workdir: str | Path) -> str:
    """Write ``results.json``, ``results.txt``, ``scores.png`` and ``communication.png``; return
    the table text."""
    workdir = Path(workdir)
    scores = final_scores(runs, clients)
    (workdir / "results.json").write_text(json.dumps(scores, indent=2))
    variants = {m: headline_variant(h) for m, h in runs.items()}
    plots.plot_scores(runs, clients, workdir / "scores.png", variants)
    plots.plot_communication(runs, workdir / "communication.png", variants)
    table = format_table(scores, clients)
    per_client = format_table(scores, clients, max_client_columns=len(clients))
    (workdir / "results.txt").write_text(table + "\n\nper client:\n" + per_client + "\n")
    return table
