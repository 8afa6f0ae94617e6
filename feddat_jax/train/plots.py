"""PNG plots a person would rather look at than read: score per round, and score vs bytes.

Each line is a setting (a method, or a method's swept setting). A setting trained with several
seeds is drawn as the mean over its seeds with a shaded band of ± one std.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from feddat_jax.train.metrics import Record  # noqa: E402

Groups = dict[str, list[list[Record]]]  # setting name -> each seed's history


def _mean_band(histories: list[list[Record]], key: str, x_key: str = "round"):
    """(x, mean, std) over the seeds at the rounds every seed evaluated (x: its mean)."""
    series = [{r["round"]: (r[x_key], r[key]) for r in h if key in r} for h in histories]
    rounds = sorted(set.intersection(*(set(s) for s in series))) if series else []
    if not rounds:
        return [], [], []
    x = np.asarray([[s[r][0] for r in rounds] for s in series], np.float64)
    y = np.asarray([[s[r][1] for r in rounds] for s in series], np.float64)
    return x.mean(0), y.mean(0), y.std(0, ddof=1) if len(series) > 1 else np.zeros(len(rounds))


def _draw(ax, x, mean, std, label: str, marker: str = "o") -> None:
    (line,) = ax.plot(x, mean, marker=marker, ms=3, label=label)
    if np.any(std > 0):
        ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2, lw=0)


def plot_scores(
    groups: Groups, clients: list[str], out_png: str | Path, variant_of: dict[str, str]
) -> Path:
    """A panel for the mean, one per question group the data tag ("shared", "shifted") and one
    per client: headline score per evaluated round, a line per setting (mean ± std band over its
    seeds; a dashed level, with its band, for a reference evaluated once, such as ``blind``).

    ``variant_of[name]`` names the setting's headline variant ("dat" for FedDAT, "global" else).
    """
    question_groups = sorted(
        {
            k.split("/")[1]
            for histories in groups.values()
            for h in histories
            for r in h
            for k in r
            if k.startswith("group/")
        }
    )
    panels = ["mean"] + [f"group/{g}" for g in question_groups] + list(clients)
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for name, histories in groups.items():
            variant = variant_of[name]
            if panel.startswith("group/"):
                key = f"{panel}/{variant}"
            else:
                key = f"score/{panel}/{variant}"
            x, mean, std = _mean_band(histories, key)
            if len(x) == 1:
                line = ax.axhline(
                    mean[0], ls="--", lw=1, color="gray" if name == "blind" else None, label=name
                )
                if std[0] > 0:
                    ax.axhspan(
                        mean[0] - std[0], mean[0] + std[0], color=line.get_color(), alpha=0.15
                    )
            elif len(x):
                _draw(ax, x, mean, std, name)
        ax.set_title(panel)
        ax.set_xlabel("round")
        ax.set_ylabel("score (%)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)


def plot_communication(groups: Groups, out_png: str | Path, variant_of: dict[str, str]) -> Path:
    """Mean headline score against cumulative bytes communicated (up + down)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, histories in groups.items():
        key = f"score/mean/{variant_of[name]}"
        x, mean, std = _mean_band(histories, key, x_key="comm/bytes_cumulative")
        if len(x):
            _draw(ax, np.asarray(x) / 1e6, mean, std, name)
    ax.set_xlabel("cumulative communication (MB)")
    ax.set_ylabel("mean score (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)
