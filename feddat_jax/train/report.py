"""The end-of-run comparison: a table on the terminal, the same as JSON, and the PNG plots.

Every row of the table is a *setting*: a method, or in a sweep a method with one value of each
swept hyperparameter. A setting trained with several seeds reports the mean over its seeds, the
sample std (``42.0±0.6``) and the half-width of the 95% t interval; ``results.json`` also holds
every seed's score. A run without a sweep reports its scores as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from feddat_jax.fl.evaluation import FINETUNED
from feddat_jax.train import plots, stats
from feddat_jax.train.metrics import Record
from feddat_jax.train.scores import GROUPS
from feddat_jax.train.sweep import sweep_from_config

# Up to this many clients the table shows a column per client; beyond, results.txt does.
MAX_CLIENT_COLUMNS = 6


def headline_variant(history: list[Record]) -> str:
    """The variant a method is judged by: the DAT for FedDAT, each client's finetuned model for
    a method that finetunes before it scores (``fedavg_ft``), the global model otherwise."""
    last = _last_eval(history)
    return next((v for v in ("dat", FINETUNED) if f"score/mean/{v}" in last), "global")


def _last_eval(history: list[Record]) -> Record:
    evals = [r for r in history if any(k.startswith("score/mean/") for k in r)]
    return evals[-1] if evals else {}


def names_with_prefix(record: Record, prefix: str, variant: str) -> list[str]:
    """The names ``x`` of the record's ``<prefix>x/<variant>`` keys (groups, question types)."""
    return [
        k[len(prefix) : -len(variant) - 1]
        for k in record
        if k.startswith(prefix) and k.endswith(f"/{variant}")
    ]


def setting_groups(runs: dict[str, list[Record]]) -> dict[str, list[list[Record]]]:
    """``{row name: [history of each seed]}``: a method, or ``method [lr=0.001]`` per swept
    setting of a sweep."""
    out = {}
    for method, history in runs.items():
        groups = stats.settings(history)
        for values, _, histories in groups:
            name = method if len(groups) == 1 else f"{method} [{stats.setting_label(values)}]"
            out[name] = histories
    return out


def _scores(histories: list[list[Record]], key: str) -> dict:
    return stats.summarize([_last_eval(h).get(key) for h in histories])


def setting_scores(histories: list[list[Record]], clients: list[str]) -> dict:
    """One setting's final scores: the mean over its seeds of every number (per client, per
    question group, per question type, per variant), plus std, the 95% interval and each seed's
    value of the headline mean."""
    variant = headline_variant(histories[0])
    last = _last_eval(histories[0])
    mean = _scores(histories, f"score/mean/{variant}")
    per_client = {c: _scores(histories, f"score/{c}/{variant}") for c in clients}
    groups = {
        g: _scores(histories, f"group/{g}/{variant}")
        for g in names_with_prefix(last, "group/", variant)
    }
    qtypes = {
        q: _scores(histories, f"qtype/{q}/{variant}")
        for q in names_with_prefix(last, "qtype/", variant)
    }
    variants = sorted(k.split("/")[-1] for k in last if k.startswith("score/mean/"))
    all_variants = {v: _scores(histories, f"score/mean/{v}") for v in variants}
    comm = [h[-1].get("comm/bytes_cumulative", 0) / 1e6 if h else 0.0 for h in histories]
    return {
        "round": last.get("round"),
        "variant": variant,
        "clients": {c: s["mean"] for c, s in per_client.items()},
        "mean": mean["mean"],
        "groups": {g: s["mean"] for g, s in groups.items()},
        "question_types": {q: s["mean"] for q, s in qtypes.items()},
        "comm_mb": float(np.mean(comm)),
        "all_variants": {v: s["mean"] for v, s in all_variants.items()},
        "std": mean["std"],
        "ci95": mean["ci95"],
        "n": mean["n"],
        "seeds": [h[0].get("seed") for h in histories] if "seed" in histories[0][0] else [],
        "scores": mean["values"],
        "values": stats.swept_values(histories[0]),
        "clients_std": {c: s["std"] for c, s in per_client.items()},
        "groups_std": {g: s["std"] for g, s in groups.items()},
        "question_types_std": {q: s["std"] for q, s in qtypes.items()},
        "all_variants_std": {v: s["std"] for v, s in all_variants.items()},
        # an evaluation of a client sample (config.eval_clients): its interval and the clients
        # that took part in training against those that never did (means over seeds)
        "sample": {
            key: _scores(histories, f"score_{key}/{variant}")["mean"]
            for key in ("ci95", "took_part", "never")
        },
    }


def final_scores(runs: dict[str, list[Record]], clients: list[str]) -> dict[str, dict]:
    """Per setting (a method, or a method's swept setting): round, the headline variant,
    per-client, per-group, per-question-type and mean scores of the last evaluation, averaged
    over seeds (with std and CI), and every variant's mean."""
    return {
        name: setting_scores(histories, clients) for name, histories in setting_groups(runs).items()
    }


def _cell(value, std, several: bool) -> str:
    """``42.0±0.6`` for a mean over several seeds, ``42.0`` for one value, ``-`` for none."""
    if value is None:
        return "-"
    return f"{value:.1f}±{std:.1f}" if several and std is not None else f"{value:.1f}"


def format_table(
    scores: dict[str, dict], clients: list[str], max_client_columns: int = MAX_CLIENT_COLUMNS
) -> str:
    """One row per setting: the headline variant's per-client scores (when few clients), mean,
    per-group means (when the data are tagged) and megabytes communicated; mean ± std over seeds,
    the 95% interval and the number of seeds when a setting has several."""
    several = any(s.get("n", 1) > 1 for s in scores.values())
    shown = clients if len(clients) <= max_client_columns else []
    groups = [g for g in GROUPS if any(g in s.get("groups", {}) for s in scores.values())]
    name_w = max(22, *(len(n) + 2 for n in scores))
    width = max(11 if several else 10, *(len(c) for c in shown)) if shown else 10
    cell_w = 12 if several else 9
    variant_w = max(8, *(len(s["variant"]) + 1 for s in scores.values()))
    head = f"{'method':<{name_w}}{'variant':<{variant_w}}" + "".join(
        f"{c[:width]:>{width + 1}}" for c in shown
    )
    head += f"{'mean':>12}" if several else f"{'mean':>8}"
    head += f"{'95% CI':>8}{'seeds':>6}" if several else ""
    head += "".join(f"{g:>{cell_w}}" for g in groups)
    sampled = any((s.get("sample") or {}).get("ci95") for s in scores.values())
    head += f"{'±sample':>9}{'took part':>10}{'never':>8}" if sampled else ""
    head += f"{'comm MB':>9}"
    lines = [head, "-" * len(head)]
    for name, s in scores.items():
        many = s.get("n", 1) > 1
        std_c, std_g = s.get("clients_std", {}), s.get("groups_std", {})
        cells = "".join(f"{_cell(s['clients'][c], std_c.get(c), many):>{width + 1}}" for c in shown)
        mean = _cell(s["mean"], s.get("std"), many)
        line = f"{name:<{name_w}}{s['variant']:<{variant_w}}{cells}{mean:>{12 if several else 8}}"
        if several:
            ci = "-" if s.get("ci95") is None else f"±{s['ci95']:.1f}"
            line += f"{ci:>8}{s.get('n', 1):>6}"
        line += "".join(
            f"{_cell(s.get('groups', {}).get(g), std_g.get(g), many):>{cell_w}}" for g in groups
        )
        if sampled:
            sample = s.get("sample") or {}
            line += "".join(
                f"{_cell(sample.get(k), None, False):>{w}}"
                for k, w in (("ci95", 9), ("took_part", 10), ("never", 8))
            )
        lines.append(line + f"{s['comm_mb']:>9.2f}")
    if several:
        lines.append("mean±std over seeds; 95% CI: half-width of the t interval of the mean")
    if sampled:
        lines.append(
            "±sample: 95% interval of the mean over all clients that the evaluated sample buys; "
            "took part / never: the sampled clients that trained in some round / never did"
        )
    return "\n".join(lines)


def plot_title(config, num_clients: int) -> str:
    """The plots' title: the benchmark, the backbone and what every row shares, e.g.
    ``domain benchmark (embedded), 12 clients, tiny_vilt: 20 rounds, batch 8, lr 0.001, 3 seeds``
    (a swept field is left out: the legend names it)."""
    data, model, sweep = config.data, config.model, sweep_from_config(config)
    backbone = Path(model.checkpoint).name if model.checkpoint else f"{model.size} {model.name}"
    shared = [f"{config.rounds} round{'s' if config.rounds > 1 else ''}"]
    shared += [f"batch {config.batch_size}"]
    if "optim.learning_rate" not in sweep.fields:
        shared += [f"lr {config.optim.learning_rate:g}"]
    seeds = len(set(sweep.seeds(config)))
    shared += [f"{seeds} seeds"] if seeds > 1 else []
    return (
        f"{data.family} benchmark ({data.source}), {num_clients} clients, {backbone}: "
        + ", ".join(shared)
    )


def write_report(
    runs: dict[str, list[Record]], clients: list[str], workdir: str | Path, title: str = ""
) -> str:
    """Write ``results.json``, ``results.txt``, ``scores.png`` and ``communication.png`` (titled
    ``title``, e.g. :func:`plot_title`); return the table text."""
    workdir = Path(workdir)
    scores = final_scores(runs, clients)
    (workdir / "results.json").write_text(json.dumps(scores, indent=2))
    groups = setting_groups(runs)
    variants = {name: s["variant"] for name, s in scores.items()}
    plots.plot_scores(groups, clients, workdir / "scores.png", variants, title)
    plots.plot_communication(groups, workdir / "communication.png", variants, title)
    table = format_table(scores, clients)
    per_client = format_table(scores, clients, max_client_columns=len(clients))
    (workdir / "results.txt").write_text(table + "\n\nper client:\n" + per_client + "\n")
    return table
