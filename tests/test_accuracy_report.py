"""benchmarks.accuracy --report-only: the rows, the spread over seeds and the benchmark's checks
computed from finished runs' metrics.jsonl, against a hand computation (no training)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# per run folder: per seed (overall, shared, shifted); `shape` is a shared type, `colour_pick` a
# shifted one, so their scores reuse the groups'
SEED_SCORES = {
    "local_adapter": [(60, 70, 40), (61, 71, 41), (62, 72, 42)],
    "fedavg_adapter": [(59, 76, 37), (60, 77, 38), (61, 78, 39)],
    "centralized": [(65, 80, 45), (65, 80, 45), (65, 80, 45)],
}
BLIND = (40, 50, 10)  # one run, the same for every seed


def record(scores: tuple[float, float, float], replica: int | None) -> dict:
    overall, shared, shifted = scores
    r = {
        "round": 20,
        "score/mean/global": overall,
        "group/shared/global": shared,
        "group/shifted/global": shifted,
        "qtype/shape/global": shared,
        "qtype/colour_pick/global": shifted,
        "qtype/tf_colour@shifted/global": shifted,  # the shifted half of a mixed type
    }
    return r if replica is None else {**r, "replica": replica}


def write_run(folder: Path, records: list[dict]) -> None:
    folder.mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def report(workdir: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.accuracy", "--report-only", "--workdir", str(workdir)]
        + ["--families", "domain", "--methods", "local_adapter,fedavg_adapter", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )


def test_report_only_computes_rows_and_checks_by_hand(tmp_path):
    family = tmp_path / "runs" / "domain"
    write_run(family / "blind", [record(BLIND, None)])
    for folder, seeds in SEED_SCORES.items():
        # an earlier evaluation first: only each replica's last one is reported
        early = [record((0, 0, 0), i) for i in range(3)]
        write_run(family / folder, early + [record(s, i) for i, s in enumerate(seeds)])
    done = report(tmp_path / "runs", tmp_path / "report")
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "report" / "results_accuracy.json").read_text())
    domain = result["families"]["domain"]

    assert domain["methods"]["local_adapter"] == {"mean": 61.0, "std": 1.0, "seeds": [60, 61, 62]}
    assert domain["methods"]["blind"] == {"mean": 40.0, "std": 0.0, "seeds": [40, 40, 40]}
    assert domain["groups"]["shared"]["fedavg_adapter"]["mean"] == 77.0
    assert domain["types"]["colour_pick"]["group"] == "shifted"
    assert domain["types"]["tf_colour@shifted"]["group"] == "shifted"
    assert domain["types"]["shape"]["centralized"]["mean"] == 80.0
    assert "feddat" not in domain["methods"]
    checks = domain["checks"]
    # local - blind = 61 - 40
    assert checks["local beats blind by > 15 points"] == {"gap": 21.0, "ok": True}
    # shared: 77 - 71 = 6 against 3 * sqrt(1 + 1) = 4.24
    assert checks["shared: fedavg beats local by > 3 std"] == {"gap": 6.0, "std": 1.41, "ok": True}
    # pooled: 80 - 71 = 9 against 3 * sqrt(0 + 1) = 3
    assert checks["shared: centralized beats local by > 3 std"] == {
        "gap": 9.0,
        "std": 1.0,
        "ok": True,
    }
    # shifted: 41 - 38 = 3, not above 4.24
    assert checks["shifted: local beats fedavg by > 3 std"] == {
        "gap": 3.0,
        "std": 1.41,
        "ok": False,
    }
    assert "| shifted: local beats fedavg by > 3 std | +3.0 | 1.4 | NO |" in done.stdout


def test_report_only_without_runs_is_one_line(tmp_path):
    done = report(tmp_path / "empty", tmp_path / "report")
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0
    assert "holds no finished run" in done.stderr
