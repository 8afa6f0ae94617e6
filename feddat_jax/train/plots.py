"""PNG plots a person reads at a glance: the scores, and the score against bytes communicated.

Every method has ONE colour, the same in every figure and every run (:data:`COLOURS`); a method's
swept settings share it and differ in line style or hatching. A run that evaluates once gets
bars: a group per score (the mean, each question group, each client), a bar per setting with
± one std over its seeds. A run that evaluates over rounds gets a panel of lines per score, rounds
on integer ticks, with a ± std band. The title names the benchmark and the setting; the legend
sits below the panels, so it covers no data.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from feddat_jax.train.metrics import Record  # noqa: E402

Groups = dict[str, list[list[Record]]]  # setting name -> each seed's history

# Every method of feddat_jax.methods and every reference row, each its own colour (a test checks
# both): FedDAT and its ablations in reds and orange, FedAvg's family in blues, purples and
# browns, local-only green, the references black (pooled data) and grey (no image).
COLOURS = {
    "feddat": "#d62728",
    "feddat_no_mkd": "#ff9896",
    "feddat_kd_to_shared_only": "#e7969c",
    "feddat_kd_to_dat_only": "#ad494a",
    "feddat_no_global_teacher": "#843c39",
    "feddat_gate": "#ff7f0e",
    "fedavg_adapter": "#1f77b4",
    "fedavg_ft": "#aec7e8",
    "fedprox_adapter": "#9467bd",
    "fedavgm_adapter": "#17becf",
    "fedadam_adapter": "#393b79",
    "fedyogi_adapter": "#6b6ecf",
    "fedavg_lora": "#8c564b",
    "fedavg_prompt": "#e377c2",
    "fedavg_bitfit": "#bcbd22",
    "fedavg_layernorm": "#8c6d31",
    "fedavg_full": "#7b4173",
    "local_adapter": "#2ca02c",
    "centralized": "#000000",
    "blind": "#999999",
}
STYLES = ("-", "--", ":", "-.")
HATCHES = ("", "//", "..", "xx")
MARKERS = ("o", "s", "D", "^", "v")  # hollow, so that points on one spot can be told apart
_LABEL = dict(ha="center", va="bottom", fontsize=6.5)  # a bar's score
# A panel (or bar group) per client up to this many clients; beyond, results.txt has them.
MAX_CLIENT_PANELS = 12


def method_of(setting: str) -> str:
    """``"feddat [optim.learning_rate=0.001]"`` -> ``"feddat"``: a swept setting's method."""
    return setting.split(" [", 1)[0]


def colour(setting: str) -> str:
    """The colour of the setting's method."""
    return COLOURS[method_of(setting)]


def _variant_index(groups: Groups) -> dict[str, int]:
    """Each setting's position among its method's settings (its line style / hatching)."""
    seen: dict[str, int] = {}
    out = {}
    for name in groups:
        out[name] = seen.get(method_of(name), 0)
        seen[method_of(name)] = out[name] + 1
    return out


def _mean_band(histories: list[list[Record]], key: str, x_key: str = "round"):
    """(x, mean, std) over the seeds at the rounds every seed evaluated (x: its mean)."""
    series = [{r["round"]: (r[x_key], r[key]) for r in h if key in r} for h in histories]
    rounds = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not rounds:
        return [], [], []
    x = np.asarray([[s[r][0] for r in rounds] for s in series], np.float64)
    y = np.asarray([[s[r][1] for r in rounds] for s in series], np.float64)
    return x.mean(0), y.mean(0), y.std(0, ddof=1) if len(series) > 1 else np.zeros(len(rounds))


def _key(panel: str, variant: str) -> str:
    return f"{panel}/{variant}" if panel.startswith("group/") else f"score/{panel}/{variant}"


def _question_groups(groups: Groups) -> list[str]:
    return sorted(
        {
            k.split("/")[1]
            for histories in groups.values()
            for h in histories
            for r in h
            for k in r
            if k.startswith("group/")
        }
    )


def _legend(fig: Figure, ax) -> None:
    """One legend for the whole figure, below the panels (it never hides a bar or a line), in as
    many columns as fit the figure's width."""
    handles, labels = ax.get_legend_handles_labels()
    inches = 0.6 + 0.075 * max(map(len, labels))  # the handle, then 9-point text
    ncols = max(1, min(len(labels), int(fig.get_figwidth() / inches)))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, fontsize=9)


def _save(fig: Figure, out_png: str | Path) -> Path:
    fig.savefig(out_png, dpi=110, bbox_inches="tight")  # "tight": a long label is never cut
    plt.close(fig)
    return Path(out_png)


def scores_figure(
    groups: Groups, clients: list[str], variant_of: dict[str, str], title: str = ""
) -> Figure:
    """The headline score of every setting (``variant_of[name]``: "dat" for FedDAT, "finetuned"
    for fedavg_ft, "global" else) on the mean, each question group the data tag ("shared", "shifted") and each client
    (up to :data:`MAX_CLIENT_PANELS`): bars when every setting was evaluated once, else a panel
    of lines per score."""
    shown = list(clients) if len(clients) <= MAX_CLIENT_PANELS else []
    summary = ["mean"] + [f"group/{g}" for g in _question_groups(groups)]
    evaluations = {
        len(_mean_band(h, _key("mean", variant_of[name]))[0]) for name, h in groups.items()
    }
    if evaluations <= {0, 1}:
        fig = _bars(groups, [summary, shown], variant_of)
    else:
        fig = _lines(groups, summary + shown, variant_of)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_scores(
    groups: Groups,
    clients: list[str],
    out_png: str | Path,
    variant_of: dict[str, str],
    title: str = "",
) -> Path:
    """:func:`scores_figure` as a PNG."""
    return _save(scores_figure(groups, clients, variant_of, title), out_png)


def _bars(groups: Groups, rows: list[list[str]], variant_of: dict[str, str]) -> Figure:
    """A row of bar groups per list of panels (the summary, then the clients); in each group a
    bar per setting, labelled with its score, ± one std over its seeds."""
    rows = [r for r in rows if r]
    width = 0.8 / max(1, len(groups))
    index = _variant_index(groups)
    fig, axes = plt.subplots(
        len(rows),
        1,
        figsize=(max(7.0, 0.3 * len(groups) * max(map(len, rows)) + 2), 1.2 + 3.2 * len(rows)),
        squeeze=False,
        layout="constrained",
    )
    for ax, row in zip(axes[:, 0], rows):
        for i, (name, histories) in enumerate(groups.items()):
            means, stds = [], []
            for panel in row:
                _, mean, std = _mean_band(histories, _key(panel, variant_of[name]))
                means.append(mean[0] if len(mean) else np.nan)
                stds.append(std[0] if len(std) else 0.0)
            bars = ax.bar(
                np.arange(len(row)) + (i - (len(groups) - 1) / 2) * width,
                means,
                width,
                yerr=stds if any(s > 0 for s in stds) else None,
                capsize=2,
                color=colour(name),
                hatch=HATCHES[index[name] % len(HATCHES)],
                edgecolor="white",
                label=name,
            )
            for bar, m, s in zip(bars, means, stds):  # above its error bar; a 0 is a bar too
                if not np.isnan(m):
                    at = (bar.get_x() + bar.get_width() / 2, m + s)
                    ax.annotate(f"{m:.1f}", at, (0, 1), textcoords="offset points", **_LABEL)
        ax.set_ylim(0, max(5.0, ax.get_ylim()[1]) * 1.08)
        ax.set_xticks(np.arange(len(row)), [p.removeprefix("group/") for p in row], fontsize=9)
        ax.set_ylabel("score (%)")
        ax.grid(axis="y", alpha=0.3)
        ax.set_axisbelow(True)
    _legend(fig, axes[0, 0])
    return fig


def _lines(groups: Groups, panels: list[str], variant_of: dict[str, str]) -> Figure:
    """A panel per score: a line per setting over the evaluated rounds (mean ± std band); a
    setting evaluated once (a reference row) is a dashed level in its colour."""
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    index = _variant_index(groups)
    fig, axes = plt.subplots(
        rows, cols, figsize=(4.2 * cols, 0.8 + 3.0 * rows), squeeze=False, layout="constrained"
    )
    for ax, panel in zip(axes.flat, panels):
        for name, histories in groups.items():
            x, mean, std = _mean_band(histories, _key(panel, variant_of[name]))
            if len(x) == 1:
                ax.axhline(mean[0], ls="--", lw=1.2, color=colour(name), label=name)
                if std[0] > 0:
                    ax.axhspan(mean[0] - std[0], mean[0] + std[0], color=colour(name), alpha=0.1)
            elif len(x):
                _draw(ax, x, mean, std, name, STYLES[index[name] % len(STYLES)])
        ax.set_title(panel.removeprefix("group/"), fontsize=10)
        ax.set_xlabel("round")
        ax.set_ylabel("score (%)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, max(5.0, ax.get_ylim()[1]))  # scores are percentages: never below 0
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    _legend(fig, axes.flat[0])
    return fig


def _draw(ax, x, mean, std, label: str, style: str = "-") -> None:
    ax.plot(x, mean, style, marker="o", ms=3, color=colour(label), label=label)
    if np.any(std > 0):
        ax.fill_between(x, mean - std, mean + std, color=colour(label), alpha=0.12, lw=0)


def communication_figure(groups: Groups, variant_of: dict[str, str], title: str = "") -> Figure:
    """Mean headline score against cumulative bytes communicated (up + down): a line per setting
    over its evaluations, a hollow point (± std) where it evaluated once, and a dashed level at the
    final score of a setting that communicates nothing (local training, the references)."""
    fig, ax = plt.subplots(figsize=(7, 5), layout="constrained")
    index = _variant_index(groups)
    for name, histories in groups.items():
        key = f"score/mean/{variant_of[name]}"
        x, mean, std = _mean_band(histories, key, "comm/bytes_cumulative")
        if not len(x):
            continue
        if not np.any(np.asarray(x) > 0):
            ax.axhline(mean[-1], ls="--", lw=1.2, color=colour(name), label=f"{name} (no comm.)")
        elif len(x) == 1:
            ax.errorbar(
                x[0] / 1e6,
                mean[0],
                yerr=std[0] or None,
                fmt=MARKERS[len(ax.containers) % len(MARKERS)],
                ms=max(5, 12 - 3 * len(ax.containers)),  # two on one spot: a ring in a ring
                mfc="none",
                mew=2,
                capsize=3,
                color=colour(name),
                label=name,
            )
        else:
            _draw(ax, np.asarray(x) / 1e6, mean, std, name, STYLES[index[name] % len(STYLES)])
    ax.set_xlabel("cumulative communication (MB)")
    ax.set_ylabel("mean score (%)")
    ax.set_xlim(left=0)
    ax.set_ylim(0, max(5.0, ax.get_ylim()[1]))
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def plot_communication(
    groups: Groups, out_png: str | Path, variant_of: dict[str, str], title: str = ""
) -> Path:
    """:func:`communication_figure` as a PNG."""
    return _save(communication_figure(groups, variant_of, title), out_png)
