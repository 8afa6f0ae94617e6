"""PNG plots a person would rather look at than read: score per round, and score vs bytes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from feddat_jax.train.metrics import Record  # noqa: E402


def _series(history: list[Record], key: str) -> tuple[list[int], list[float]]:
    points = [(r["round"], r[key]) for r in history if key in r]
    return [p[0] for p in points], [p[1] for p in points]


def plot_scores(
    runs: dict[str, list[Record]],
    clients: list[str],
    out_png: str | Path,
    variant_of: dict[str, str],
) -> Path:
    """A panel for the mean, one per question group the data tag ("shared", "shifted") and one
    per client: headline score per evaluated round, a line per method (a dashed level for a
    reference evaluated once, such as ``blind``).

    ``variant_of[method]`` names the method's headline variant ("dat" for FedDAT, "global" else).
    """
    groups = sorted(
        {k.split("/")[1] for h in runs.values() for r in h for k in r if k.startswith("group/")}
    )
    panels = ["mean"] + [f"group/{g}" for g in groups] + list(clients)
    cols = min(3, len(panels))
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        for method, history in runs.items():
            variant = variant_of[method]
            if panel == "mean":
                key = f"score/mean/{variant}"
            elif panel.startswith("group/"):
                key = f"{panel}/{variant}"
            else:
                key = f"score/{panel}/{variant}"
            x, y = _series(history, key)
            if len(x) == 1:
                ax.axhline(
                    y[0], ls="--", lw=1, color="gray" if method == "blind" else None, label=method
                )
            elif x:
                ax.plot(x, y, marker="o", ms=3, label=method)
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


def plot_communication(
    runs: dict[str, list[Record]], out_png: str | Path, variant_of: dict[str, str]
) -> Path:
    """Mean headline score against cumulative bytes communicated (up + down)."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, history in runs.items():
        points = [
            (r["comm/bytes_cumulative"], r[f"score/mean/{variant_of[method]}"])
            for r in history
            if f"score/mean/{variant_of[method]}" in r
        ]
        if points:
            ax.plot([p[0] / 1e6 for p in points], [p[1] for p in points], marker="o", label=method)
    ax.set_xlabel("cumulative communication (MB)")
    ax.set_ylabel("mean score (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return Path(out_png)
