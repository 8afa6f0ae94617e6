"""The plots read at a glance: one colour per method in every figure, bars (± std over seeds) for a
run that evaluates once, lines on integer round ticks otherwise, and a title naming the run."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.container import BarContainer

from configs import demo
from feddat_jax.methods import METHODS
from feddat_jax.train import plots
from feddat_jax.train.references import REFERENCES
from feddat_jax.train.report import plot_title

CLIENTS = ["clean_00", "sketch_01", "night_02"]
VARIANTS = {"feddat": "dat", "fedavg_adapter": "global", "blind": "global"}


def history(variant: str, rounds: list[int], score: float) -> list[dict]:
    """One seed's metrics rows: at round r every score is ``score + r`` (client k: ``+ k``)."""
    rows = []
    for r in rounds:
        row = {"round": r, "comm/bytes_cumulative": 1e6 * r if variant == "dat" else 0.0}
        row[f"score/mean/{variant}"] = score + r
        row.update({f"group/{g}/{variant}": score + r for g in ("shared", "shifted")})
        row.update({f"score/{c}/{variant}": score + r + k for k, c in enumerate(CLIENTS)})
        rows.append(row)
    return rows


def groups(rounds: list[int]) -> dict:
    """FedDAT over three seeds (scores 50, 54, 58: mean 54, std 4), FedAvg over one, and the
    blind reference evaluated once, at the last round."""
    return {
        "feddat": [history("dat", rounds, s) for s in (50.0, 54.0, 58.0)],
        "fedavg_adapter": [history("global", rounds, 40.0)],
        "blind": [history("global", rounds[-1:], 30.0)],
    }


def test_every_method_and_reference_has_a_colour_of_its_own():
    assert set(plots.COLOURS) == set(METHODS) | set(REFERENCES)
    assert len(set(plots.COLOURS.values())) == len(plots.COLOURS)


def test_one_evaluation_draws_bars_per_method_and_question_group():
    fig = plots.scores_figure(groups([20]), CLIENTS, VARIANTS, "the title")
    summary, per_client = fig.axes[:2]
    assert [t.get_text() for t in summary.get_xticklabels()] == ["mean", "shared", "shifted"]
    assert [t.get_text() for t in per_client.get_xticklabels()] == CLIENTS
    for ax in (summary, per_client):
        # no line or level of a setting (the error bars' caps are its only lines)
        assert not [line for line in ax.lines if not line.get_label().startswith("_")]
        bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
        assert list(bars) == ["feddat", "fedavg_adapter", "blind"]
        colours = {name: {p.get_facecolor() for p in c.patches} for name, c in bars.items()}
        assert all(len(c) == 1 for c in colours.values())  # one colour per method...
        assert len({c.pop() for c in colours.values()}) == 3  # ...and no two methods share one
    heights = [p.get_height() for p in bars["feddat"].patches]
    np.testing.assert_allclose(heights, [74.0, 75.0, 76.0])  # 54 + 20 + client k
    # ± one std over FedDAT's seeds: error bars from mean - 4 to mean + 4
    segments = bars["feddat"].errorbar.lines[2][0].get_segments()
    np.testing.assert_allclose([s[:, 1] for s in segments], [[70.0, 78.0], [71, 79], [72, 80]])
    assert bars["fedavg_adapter"].errorbar is None  # one seed: no std to draw
    assert fig.get_suptitle() == "the title"
    plt.close(fig)


def test_rounds_draw_lines_on_integer_ticks_in_the_same_colours():
    scores = plots.scores_figure(groups([1, 2, 3, 4, 5]), CLIENTS, VARIANTS)
    communication = plots.communication_figure(groups([1, 2, 3, 4, 5]), VARIANTS)
    assert len(scores.axes) == 1 + 2 + len(CLIENTS)  # mean, two groups, a panel per client
    mean = scores.axes[0]
    lines = {line.get_label(): line for line in mean.lines}
    np.testing.assert_allclose(lines["feddat"].get_ydata(), [55, 56, 57, 58, 59])
    assert list(lines["blind"].get_ydata()) == [35.0, 35.0]  # evaluated once: a dashed level
    assert lines["blind"].get_linestyle() == "--"
    scores.canvas.draw()
    ticks = [t for t in mean.get_xticks() if 1 <= t <= 5]
    assert ticks and all(float(t).is_integer() for t in ticks)
    for fig in (scores, communication):
        for ax in fig.axes:
            for line in ax.lines:
                method = line.get_label().removesuffix(" (no comm.)")
                assert line.get_color() == plots.COLOURS[method], (method, line.get_color())
    plt.close(scores)
    plt.close(communication)


def test_many_clients_leave_the_per_client_panels_to_results_txt():
    many = [f"c{k}" for k in range(plots.MAX_CLIENT_PANELS + 1)]
    fig = plots.scores_figure(groups([20]), many, VARIANTS)
    assert len(fig.axes) == 1  # the summary row only
    plt.close(fig)


def test_the_title_names_the_benchmark_and_what_every_row_shares():
    config = demo.get_config()
    assert plot_title(config, 12) == (
        "domain benchmark (embedded), 12 clients, tiny_vilt: 20 rounds, batch 8, lr 0.001"
    )
    config.sweep.seed = (0, 1, 2)
    config.sweep.optim.learning_rate = (1e-3, 3e-4)
    # a swept learning rate differs between rows: the legend names it, the title does not
    assert plot_title(config, 12).endswith("20 rounds, batch 8, 3 seeds")


@pytest.mark.parametrize("name", ["feddat [optim.learning_rate=0.001]", "feddat"])
def test_a_swept_setting_has_its_methods_colour(name):
    assert plots.colour(name) == plots.COLOURS["feddat"]
