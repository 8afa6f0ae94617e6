"""The client-count benchmark's numbers: from metrics rows to its JSON, and from the JSON to its
Markdown and its figure (``benchmarks/client_count.py`` runs the launches).

Kept apart from the launches so that CLIENT_COUNT.md and client_count.png can be re-rendered from
the JSON alone (``python -m benchmarks.client_count --report-only``), and tested without training.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from feddat_jax.train import stats
from feddat_jax.train.report import headline_variant

# the columns of the scaling rows this benchmark copies from results_scaling.json
SCALING_KEYS = (
    "num_clients",
    "clients_per_round",
    "train_per_client",
    "round_s",
    "startup_s",
    "peak_rss_mb",
)
TITLE = "# Client count: does a method's advantage survive as clients multiply?"


# ------------------------------------------------------------------------- metrics -> numbers
def final_row(history: list[dict]) -> dict:
    """A replica's last evaluation row (the benchmark evaluates once, after the last round)."""
    return [r for r in history if any(k.startswith("score/mean/") for k in r)][-1]


def evaluated_clients(row: dict, variant: str) -> list[str]:
    """The names of the clients an evaluation row scored (its ``score/<client>/<variant>``)."""
    return [
        k.split("/")[1]
        for k in row
        if k.startswith("score/") and k.endswith(f"/{variant}") and k.split("/")[1] != "mean"
    ]


def replica_scores(history: list[dict], swept: str) -> list[dict]:
    """One dict per replica of a launch: the swept value (``swept``: ``data.num_clients`` or
    ``clients_per_round``), seed, headline score, took-part / never means, the sample's 95%
    interval and the evaluated clients' names."""
    out = []
    for rows in stats.split_replicas(history):
        variant = headline_variant(rows)
        last = final_row(rows)
        out.append(
            {
                "value": last.get(swept),
                "seed": last.get("seed"),
                "variant": variant,
                "score": last[f"score/mean/{variant}"],
                "took_part": last.get(f"score_took_part/{variant}"),
                "never": last.get(f"score_never/{variant}"),
                "ci95": last.get(f"score_ci95/{variant}"),
                "took_part_clients": last.get("eval/took_part"),
                "clients": evaluated_clients(last, variant),
            }
        )
    return out


def mean_of(values: Iterable[float | None]) -> float | None:
    """The mean of the values that exist (a side of the took-part split can be empty)."""
    got = [v for v in values if v is not None and not math.isnan(v)]
    return round(float(np.mean(got)), 2) if got else None


def cell(replicas: list[dict]) -> dict:
    """One method at one setting over its seeds: ``mean``, ``std`` (sample std), ``seeds`` (each
    seed's score), ``took_part_mean`` / ``never_mean`` (means over the seeds that have that side),
    ``ci95_mean`` (the evaluation sample's interval) and ``took_part_clients`` (per seed)."""
    s = stats.summarize([r["score"] for r in replicas])
    return {
        "mean": round(s["mean"], 2),
        "std": round(s["std"], 2),
        "seeds": [r["seed"] for r in replicas],
        "scores": [round(v, 2) for v in s["values"]],
        "took_part_mean": mean_of(r["took_part"] for r in replicas),
        "never_mean": mean_of(r["never"] for r in replicas),
        "ci95_mean": mean_of(r["ci95"] for r in replicas),
        "took_part_clients": [r["took_part_clients"] for r in replicas],
    }


def by_value(replicas: list[dict]) -> dict[int, list[dict]]:
    """A launch's replicas grouped by their swept value, in sweep order."""
    out: dict[int, list[dict]] = {}
    for r in replicas:
        out.setdefault(int(r["value"]), []).append(r)
    return out


def fixed_cell(score: float, seeds: list[int]) -> dict:
    """A row that no seed changes (``blind``: the data alone): std 0, the same score per seed."""
    return {
        "mean": round(score, 2),
        "std": 0.0,
        "seeds": list(seeds),
        "scores": [round(score, 2)] * len(seeds),
        "took_part_mean": None,
        "never_mean": None,
        "ci95_mean": None,
        "took_part_clients": [],
        "fixed": True,
    }


def copy_scaling(path: Path) -> list[dict]:
    """The rows of ``results_scaling.json`` this benchmark plots (none if it does not exist)."""
    import json

    if not path.exists():
        return []
    rows = json.loads(path.read_text()).get("rows", [])
    return [{k: r.get(k) for k in SCALING_KEYS} for r in rows if "error" not in r]


# ------------------------------------------------------------------------------ JSON -> text
def fmt(c: dict | None) -> str:
    """``mean ± std``; a row no seed changes (``fixed``: blind) shows its one value."""
    if c is None:
        return "–"
    return f"{c['mean']:.1f}" if c.get("fixed") else f"{c['mean']:.1f} ± {c['std']:.1f}"


def side(c: dict | None, key: str) -> str:
    return "–" if c is None or c.get(key) is None else f"{c[key]:.1f}"


def settings_of(result: dict, sweep: str) -> list[dict]:
    return [s for s in result["settings"] if s["sweep"] == sweep]


def section(result: dict, title: str, sweep: str, column: str) -> list[str]:
    """A sweep's heading and tables; nothing when the run did not launch that sweep."""
    if not settings_of(result, sweep):
        return []
    return [f"## {title}", "", *score_table(result, sweep, column), ""]


def score_table(result: dict, sweep: str, column: str) -> list[str]:
    """``mean ± std`` per method (columns) and setting (rows), then took part / never."""
    rows = settings_of(result, sweep)
    methods = result["methods"]
    lines = [
        f"| {column} | " + " | ".join(methods) + " |",
        "|---:|" + "---:|" * len(methods),
    ]
    for s in rows:
        key = s["num_clients"] if column == "N" else s["clients_per_round"]
        cells = [fmt(s["methods"].get(m)) for m in methods]
        lines.append(f"| {key:,} | " + " | ".join(cells) + " |")
    lines += [
        "",
        (
            "Clients that took part / never did (means over seeds; – : no such client in the "
            "evaluation sample):"
        ),
        "",
        f"| {column} | " + " | ".join(methods) + " |",
        "|---:|" + "---:|" * len(methods),
    ]
    for s in rows:
        key = s["num_clients"] if column == "N" else s["clients_per_round"]
        cells = [
            f"{side(s['methods'].get(m), 'took_part_mean')} / "
            f"{side(s['methods'].get(m), 'never_mean')}"
            for m in methods
        ]
        lines.append(f"| {key:,} | " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    """CLIENT_COUNT.md: generated from the JSON, never typed."""
    st = result["fixed"]
    quick = (
        " (**--quick**: a smoke-sized run, not the benchmark's numbers)" if result["quick"] else ""
    )
    lines = [
        TITLE,
        "",
        (
            f"Generated by `{result['command']}`{quick} from `results_client_count.json`; do not "
            "edit by hand. Settings (fixed in benchmarks/client_count.py before any FedDAT number "
            f"was seen): family `{st['family']}`, {st['train_per_client']} training and "
            f"{st['test_per_client']} test questions per client (sizes spread ±60%), data seed "
            f"{result['data_seed']}, {st['rounds']} rounds of K = {st['local_steps']} local steps of "
            f"B = {st['batch_size']}, learning rate {st['learning_rate']:g}, seeds {st['seeds']}; "
            f"each evaluation scores the same seeded sample of {st['eval_clients']} clients (every "
            "client where N is smaller) for every method and seed. Scores: VQA soft score in %, "
            "mean ± sample std over seeds."
        ),
        "",
        "Answer head per method: "
        + ", ".join(f"`{m}` {h}" for m, h in result["heads"].items())
        + ". The library refuses a shared head to `feddat` and `local_adapter`; their clients "
        "that never took part are scored with the untrained initial head, so compare them on "
        "the clients that took part.",
        "",
        *section(
            result, f"Against the number of clients (cohort of {st['cohort']})", "client_count", "N"
        ),
        *section(
            result, f"Against the cohort size (N = {st['cohort_sweep_clients']:,})", "cohort", "C"
        ),
        "## Launches",
        "",
        "| method | sweep | replicas | wall s | CPU s | resumed |",
        "|---|---|---:|---:|---:|---|",
        *[
            f"| {x['method']} | {x['sweep']} | {x['replicas']} | {x['wall_s']:.0f} | "
            f"{x.get('cpu_s', float('nan')):.0f} | "
            f"{'yes' if x.get('resumed') else 'no'} |"
            for x in result["launches"]
        ],
        "",
    ]
    sp = result.get("sweep_speedup_detail")
    if sp:
        lines += [
            (
                f"Sweep speedup: **{result['sweep_speedup']:.2f}×** — {sp['separate_launches']} "
                f"separate launches took {sp['separate_s']:.0f} s, one launch of the same "
                f"{sp['separate_launches']} replicas {sp['one_launch_s']:.0f} s "
                f"({sp['method']}, N {sp['num_clients']}, seeds {sp['seeds']}, {sp['rounds']} "
                f"rounds; {sp['where']})."
            ),
            "",
        ]
    if result.get("missing"):
        lines += ["Not run:", ""] + [f"- `{k}`: {v}" for k, v in result["missing"].items()] + [""]
    if result.get("scaling"):
        lines += [
            "Round time and memory against N (copied from `results_scaling.json`):",
            "",
            "| N | cohort | round s | start-up s | peak RSS MB |",
            "|---:|---:|---:|---:|---:|",
            *[
                f"| {r['num_clients']:,} | {r['clients_per_round']} | {r['round_s']:.2f} | "
                f"{r['startup_s']:.1f} | {r['peak_rss_mb']:,} |"
                for r in result["scaling"]
            ],
            "",
        ]
    load = result.get("load_average", {})
    lines.append(
        f"Whole run: {result['minutes']:.1f} min of wall time, "
        f"{result.get('cpu_minutes', float('nan')):.1f} min of process CPU time (all threads); "
        f"host load average {load.get('start', '?')} at the start, {load.get('end', '?')} at the "
        "end (other processes share the cores)."
    )
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------ JSON -> figure
def plot(result: dict, out_png: Path) -> None:
    """Score against N (log axis, ± std bands), took part (solid) / never (dashed) against N,
    score against the cohort size, and round time and memory against N (scaling rows)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    colours = {m: f"C{i}" for i, m in enumerate(result["methods"])}

    def curve(ax, sweep: str, key: str, field: str = "mean", band: bool = True, **kw):
        for m in result["methods"]:
            pts = [
                (s[key], s["methods"][m]) for s in settings_of(result, sweep) if m in s["methods"]
            ]
            pts = [(x, c) for x, c in pts if c.get(field) is not None]
            if not pts:
                continue
            x = np.array([p[0] for p in pts], float)
            y = np.array([p[1][field] for p in pts], float)
            ax.plot(
                x,
                y,
                marker="o",
                color=colours[m],
                label=m if kw.get("label", True) else None,
                linestyle=kw.get("linestyle", "-"),
            )
            if band:
                sd = np.array([p[1]["std"] for p in pts], float)
                ax.fill_between(x, y - sd, y + sd, color=colours[m], alpha=0.15)

    def ticks(ax, sweep: str, key: str) -> None:  # the swept values themselves, not 6x10^0
        values = sorted({s[key] for s in settings_of(result, sweep)})
        ax.set_xticks(values, [f"{v:,}" for v in values])
        ax.minorticks_off()

    ax = axes[0, 0]
    curve(ax, "client_count", "num_clients")
    ax.set(
        xscale="log",
        xlabel="clients N",
        ylabel="score (%)",
        title=f"score ± std over seeds (cohort {result['fixed']['cohort']})",
    )
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    curve(ax, "client_count", "num_clients", "took_part_mean", band=False)
    curve(ax, "client_count", "num_clients", "never_mean", band=False, label=False, linestyle="--")
    ax.set(
        xscale="log",
        xlabel="clients N",
        ylabel="score (%)",
        title="took part (solid) / never took part (dashed)",
    )
    ax = axes[1, 0]
    curve(ax, "cohort", "clients_per_round")
    if not settings_of(result, "cohort"):
        ax.text(0.5, 0.5, "not launched (--sweeps)", ha="center", transform=ax.transAxes)
    ax.set(
        xscale="log",
        xlabel="cohort size C",
        ylabel="score (%)",
        title=f"score ± std against the cohort (N = {result['fixed']['cohort_sweep_clients']:,})",
    )
    ax = axes[1, 1]
    rows = result.get("scaling") or []
    if rows:
        x = [r["num_clients"] for r in rows]
        ax.plot(x, [r["round_s"] for r in rows], "o-", color="k")
        ax.set(xscale="log", xlabel="clients N", ylabel="round s (solid; FedDAT, tiny ViLT)")
        twin = ax.twinx()
        twin.plot(x, [r["peak_rss_mb"] for r in rows], "s--", color="grey")
        twin.set_ylabel("peak RSS MB (dashed)", color="grey")
        ax.set_ylim(bottom=0)
        twin.set_ylim(bottom=0)
        ax.set_title("round time and memory (results_scaling.json)")
    else:
        ax.text(0.5, 0.5, "no results_scaling.json yet", ha="center", transform=ax.transAxes)
        ax.set_axis_off()
    for a, sweep, key in (
        (axes[0, 0], "client_count", "num_clients"),
        (axes[0, 1], "client_count", "num_clients"),
        (axes[1, 0], "cohort", "clients_per_round"),
    ):
        ticks(a, sweep, key)
        a.grid(alpha=0.3)
    tag = " (--quick)" if result["quick"] else ""
    fig.suptitle(f"Client count, embedded {result['fixed']['family']}{tag}")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def summary(result: dict) -> list[str]:
    """RESULTS.md's section (``benchmarks.results_md``): the two score tables and the speedup;
    the took-part split and the launches stay in CLIENT_COUNT.md."""
    st = result["fixed"]
    out = [
        ("**--quick** (a smoke-sized run). " if result["quick"] else "")
        + f"Embedded `{st['family']}`, {st['train_per_client']} training questions per client, "
        f"{st['rounds']} rounds, seeds {st['seeds']}; mean ± std over seeds of the evaluation "
        f"sample's score (%). Cohort of {st['cohort']}:",
        "\n".join(
            score_table(result, "client_count", "N")[: 2 + len(settings_of(result, "client_count"))]
        ),
        f"N = {st['cohort_sweep_clients']:,}, against the cohort size:",
        "\n".join(score_table(result, "cohort", "C")[: 2 + len(settings_of(result, "cohort"))]),
    ]
    if "sweep_speedup" in result:
        out.append(
            f"Sweep speedup (one launch vs one per seed and N): {result['sweep_speedup']:.2f}×."
        )
    out.append("Took part / never took part, launches and times: `benchmarks/CLIENT_COUNT.md`.")
    return out
