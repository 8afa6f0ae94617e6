"""benchmarks/client_count: metrics rows -> the JSON's cells, and the JSON -> its MD and PNG
(no training: the launches are the script's, run by hand)."""

from benchmarks import client_count
from benchmarks import client_count_report as report


def rows(replica: int, seed: int, n: int, score: float, took: float | None, never: float) -> list:
    last = {
        "round": 2,
        "replica": replica,
        "seed": seed,
        "data.num_clients": n,
        "score/mean/global": score,
        "score/a_01/global": score,
        "score/b_02/global": score,
        "score_never/global": never,
        "score_ci95/global": 3.0,
        "eval/took_part": 1.0,
    }
    if took is not None:
        last["score_took_part/global"] = took
    return [{"round": 1, "replica": replica, "seed": seed, "data.num_clients": n}, last]


def test_replicas_are_grouped_by_their_swept_value_with_mean_std_and_sides():
    history = rows(0, 0, 10, 40.0, 50.0, 30.0) + rows(1, 1, 10, 44.0, None, 34.0)
    history += rows(2, 0, 100, 30.0, 35.0, 29.0) + rows(3, 1, 100, 30.0, 45.0, 31.0)
    groups = report.by_value(report.replica_scores(history, "data.num_clients"))
    assert list(groups) == [10, 100]
    ten = report.cell(groups[10])
    assert ten["mean"] == 42.0 and ten["std"] == 2.83 and ten["seeds"] == [0, 1]
    assert ten["took_part_mean"] == 50.0  # the seed without a participant is left out
    assert ten["never_mean"] == 32.0 and ten["ci95_mean"] == 3.0
    assert groups[10][0]["clients"] == ["a_01", "b_02"]
    assert report.cell(groups[100])["std"] == 0.0


def result(quick: bool = True) -> dict:
    cell = report.cell(
        report.replica_scores(
            rows(0, 0, 10, 40.0, 50.0, 30.0) + rows(1, 1, 10, 44.0, 50.0, 34.0), "seed"
        )
    )
    blind = report.fixed_cell(35.0, [0, 1])
    setting = lambda sweep, n, c: {
        "sweep": sweep,
        "num_clients": n,
        "clients_per_round": c,
        "train_per_client": 16,
        "methods": {"blind": blind, "fedavg_adapter": cell},
    }
    return {
        "quick": quick,
        "command": "python -m benchmarks.client_count --quick",
        "data_seed": 0,
        "fixed": {
            "family": "domain",
            "train_per_client": 16,
            "test_per_client": 16,
            "cohort": 10,
            "cohort_sweep_clients": 1000,
            "rounds": 4,
            "local_steps": 2,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "eval_clients": 10,
            "seeds": [0, 1],
        },
        "heads": {"fedavg_adapter": "shared"},
        "methods": ["blind", "fedavg_adapter"],
        "settings": [
            setting("client_count", 10, 10),
            setting("client_count", 100, 10),
            setting("cohort", 1000, 5),
        ],
        "scaling": [
            {
                "num_clients": 100,
                "clients_per_round": 10,
                "train_per_client": 16,
                "round_s": 1.5,
                "startup_s": 9.0,
                "peak_rss_mb": 900,
            }
        ],
        "launches": [
            {
                "method": "fedavg_adapter",
                "sweep": "client_count",
                "replicas": 4,
                "wall_s": 30.0,
                "resumed": False,
            }
        ],
        "missing": {"feddat": "not asked for"},
        "sweep_speedup": 2.5,
        "sweep_speedup_detail": {
            "method": "fedavg_adapter",
            "num_clients": [10, 100],
            "seeds": [0, 1],
            "rounds": 4,
            "one_launch_s": 30.0,
            "separate_s": 75.0,
            "separate_launches": 4,
            "where": "here",
        },
        "minutes": 3.0,
    }


def test_the_markdown_is_rendered_from_the_json(tmp_path):
    text = report.markdown(result())
    assert text.startswith(report.TITLE) and "--quick" in text
    assert "| N | blind | fedavg_adapter |" in text
    assert "| 10 | 35.0 | 42.0 ± 2.8 |" in text and "| 100 | 35.0 | 42.0 ± 2.8 |" in text
    assert "| 10 | – / – | 50.0 / 32.0 |" in text
    assert "| 5 | 35.0 | 42.0 ± 2.8 |" in text
    assert "Sweep speedup: **2.50×**" in text and "`feddat`: not asked for" in text
    assert "| 100 | 10 | 1.50 | 9.0 | 900 |" in text
    assert "**--quick**" in text and "**--quick**" not in report.markdown(result(quick=False))


def test_the_outputs_are_written_and_the_question_leads_the_docstring(tmp_path):
    client_count.write_outputs(result(), tmp_path)
    assert (tmp_path / "client_count.png").stat().st_size > 10_000
    assert (tmp_path / "CLIENT_COUNT.md").read_text() == report.markdown(result())
    assert client_count.__doc__.splitlines()[0] == (
        "Does a method's advantage survive as clients multiply and each holds little data?"
    )
