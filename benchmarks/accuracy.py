r"""Accuracy of FedDAT, its baselines and the reference rows on every family of the embedded
benchmark, over several seeds: can methods differ here, and where does FedDAT stand?

  python -m benchmarks.accuracy --out benchmarks            # 4 families x 3 seeds (hours on 2 cores)
  python -m benchmarks.accuracy --families domain --seeds 0,1 --rounds 5 --workdir /tmp/acc
  python -m benchmarks.accuracy --report-only --workdir /tmp/acc  # the report of finished runs
  python -m benchmarks.accuracy --methods local_adapter,fedavg_adapter  # the checks, without FedDAT
  bash benchmarks/gpu_accuracy.sh                            # one GPU: the families in parallel

Each family runs configs/embedded.py:<family> (12 clients, 80-320 training questions each, 1,000
test questions each, fair schedule, the pretrained tiny ViLT; the demo runs these with seed 0
alone; about 26 min per family on 2 cores) in ONE launch whose seeds are the replica axis
(``sweep.seed``: every method trains all its seeds as one program); the seed changes the training
randomness (initialisation, client sampling, data order), the benchmark's data stay fixed.
``centralized`` trains once per seed; ``blind`` depends on the data alone and is computed once
(its std over seeds is 0). Rows: blind, local_adapter, fedavg_adapter, feddat (its DAT, the
headline; feddat_ac = A_c alone, feddat_as = A_s alone) and centralized; mean ± std (sample std
over seeds) overall and per question group (shared / shifted), and each row's mean per question
type. A rerun resumes every finished run.

Writes results_accuracy.json, accuracy.png and ACCURACY.md (the printed output) under --out: by
default <workdir>/report, so a trial run never overwrites the committed report; ``--out benchmarks``
replaces the committed one. ACCURACY.md keeps whatever stands above the report's title (a status
summary written after reading the tables); only the report below it is replaced.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from feddat_jax.train import report as report_lib
from feddat_jax.train import stats as stats_lib
from feddat_jax.train.config_base import config_from_file
from feddat_jax.train.metrics import read_jsonl

FAMILIES = ("domain", "function", "scene", "task")
METHODS = ("local_adapter", "fedavg_adapter", "feddat")
REFERENCES = ("blind", "centralized")  # run folders of the reference rows
# result row -> (run folder, evaluation variant)
ROWS = {
    "blind": ("blind", "global"),
    "local_adapter": ("local_adapter", "global"),
    "fedavg_adapter": ("fedavg_adapter", "global"),
    "feddat": ("feddat", "dat"),
    "feddat_ac": ("feddat", "client"),
    "feddat_as": ("feddat", "shared"),
    "centralized": ("centralized", "global"),
}
GROUPS = ("shared", "shifted")
REPORT_TITLE = "# Accuracy on the embedded benchmark"


def rows_of(methods: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """The result rows of a run of ``methods``: theirs and the two reference rows."""
    return {row: spec for row, spec in ROWS.items() if spec[0] in methods + REFERENCES}


def run_family(
    family: str, seeds: list[int], rounds: int, workdir: Path, methods: tuple[str, ...]
) -> None:
    """``methods`` and the reference rows of one family, all seeds in one launch on the replica
    axis (resumes what is finished)."""
    from feddat_jax.cli.invocation import launch  # what launch.py runs: methods, references, report
    from feddat_jax.train.interrupt import StopRequest

    config = config_from_file(f"configs/embedded.py:{family}")
    config.sweep.seed = tuple(seeds)
    config.rounds = rounds
    config.eval_every = rounds  # only the final evaluation is reported here
    config.compare_methods = methods
    config.tensorboard = False
    with StopRequest() as stop:  # Ctrl-C: stop after the current round; a rerun resumes
        launch(config, workdir, stop)


def final_scores(run_dir: Path, variant: str, num_seeds: int) -> list[dict[str, float]]:
    """Each seed's (replica's) last evaluation: overall, per question group and per question type
    (keys ``type/<name>``). A run without replicas (``blind``: the same for every seed) stands for
    every seed."""
    out = []
    for history in stats_lib.split_replicas(read_jsonl(run_dir / "metrics.jsonl")):
        last = [r for r in history if f"score/mean/{variant}" in r][-1]
        scores = {"overall": last[f"score/mean/{variant}"]}
        scores.update({g: last[f"group/{g}/{variant}"] for g in GROUPS})
        for name in report_lib.names_with_prefix(last, "qtype/", variant):
            scores[f"type/{name}"] = last[f"qtype/{name}/{variant}"]
        out.append(scores)
    if len(out) == 1:
        out *= num_seeds
    if len(out) != num_seeds:
        raise ValueError(f"{run_dir}: {len(out)} replicas for {num_seeds} seeds")
    return out


def stats(values: list[float]) -> dict:
    v = np.asarray(values, np.float64)
    std = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {
        "mean": round(float(v.mean()), 2),
        "std": round(std, 2),
        "seeds": [round(x, 2) for x in v],
    }


def collect(family: str, seeds: list[int], root: Path, rows: dict[str, tuple[str, str]]) -> dict:
    """One family's rows: overall, per group and per question type (with the type's group)."""
    from feddat_jax.data.embedded import GENERATORS

    per_row = {row: {} for row in rows}
    for row, (folder, variant) in rows.items():
        for scores in final_scores(root / family / folder, variant, len(seeds)):
            for key, value in scores.items():
                per_row[row].setdefault(key, []).append(value)
    names = [k.removeprefix("type/") for k in per_row["blind"] if k.startswith("type/")]

    def group_of(name: str) -> str:  # "tf_colour@shifted": the shifted half of a mixed type
        qtype, _, half = name.partition("@")
        return half or GENERATORS[qtype].group

    return {
        "methods": {row: stats(v["overall"]) for row, v in per_row.items()},
        "groups": {g: {row: stats(v[g]) for row, v in per_row.items()} for g in GROUPS},
        "types": {
            name: {
                "group": group_of(name),
                **{row: stats(v[f"type/{name}"]) for row, v in per_row.items()},
            }
            for name in sorted(names, key=lambda n: (GENERATORS[n.partition("@")[0]].group, n))
        },
    }


def gap(result: dict, a: str, b: str, group: str | None = None) -> tuple[float, float]:
    """(mean of a - mean of b, the std of that difference: sqrt(std_a² + std_b²))."""
    table = result["methods"] if group is None else result["groups"][group]
    d = table[a]["mean"] - table[b]["mean"]
    return d, float(np.hypot(table[a]["std"], table[b]["std"]))


def beats_by_3_std(result: dict, a: str, b: str, group: str) -> dict:
    """Whether row ``a`` beats row ``b`` on ``group`` by more than 3 std of the gap."""
    d, s = gap(result, a, b, group)
    return {"gap": round(d, 2), "std": round(s, 2), "ok": d > 3 * s}


def checks(result: dict) -> dict[str, dict]:
    """The properties the benchmark is built to have (docs/BENCHMARK.md), each with its margin
    (none without both baselines)."""
    out = {}
    if not {"local_adapter", "fedavg_adapter"} <= set(result["methods"]):
        return out
    d = result["methods"]["local_adapter"]["mean"] - result["methods"]["blind"]["mean"]
    out["local beats blind by > 15 points"] = {"gap": round(d, 2), "ok": d > 15}
    out["shared: fedavg beats local by > 3 std"] = beats_by_3_std(
        result, "fedavg_adapter", "local_adapter", "shared"
    )
    if "centralized" in result["methods"]:
        # the shared-knowledge property itself (pooled data beat a client's own); the check above
        # asks how much of it federated averaging recovers
        out["shared: centralized beats local by > 3 std"] = beats_by_3_std(
            result, "centralized", "local_adapter", "shared"
        )
    out["shifted: local beats fedavg by > 3 std"] = beats_by_3_std(
        result, "local_adapter", "fedavg_adapter", "shifted"
    )
    return out


def fmt(s: dict) -> str:
    return f"{s['mean']:5.1f} ± {s['std']:3.1f}"


def table(family: str, result: dict) -> str:
    lines = [f"### {family}", "", "| row | overall | shared | shifted |", "|---|---:|---:|---:|"]
    for row in result["methods"]:
        cells = [fmt(result["methods"][row])] + [fmt(result["groups"][g][row]) for g in GROUPS]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if result["checks"]:
        lines += ["", "| check | gap | std of gap | holds |", "|---|---:|---:|---|"]
    for name, c in result["checks"].items():
        lines.append(
            f"| {name} | {c['gap']:+.1f} | {c.get('std', 0):.1f} | {'yes' if c['ok'] else 'NO'} |"
        )
    per_type = [
        row
        for row in ("blind", "local_adapter", "fedavg_adapter", "feddat", "centralized")
        if row in result["methods"]
    ]
    lines += [
        "",
        "Per question type (mean over seeds):",
        "",
        "| type | group | " + " | ".join(per_type) + " |",
        "|---|---|" + "---:|" * len(per_type),
    ]
    for name, cells in result["types"].items():
        means = " | ".join(f"{cells[row]['mean']:.1f}" for row in per_type)
        lines.append(f"| {name} | {cells['group']} | {means} |")
    if "feddat" not in result["methods"]:
        return "\n".join(lines) + "\n"
    lines += ["", "FedDAT (DAT) against the baselines, mean difference ± its std:", ""]
    for other in ("fedavg_adapter", "local_adapter", "centralized"):
        parts = []
        for group in (None,) + GROUPS:
            d, s = gap(result, "feddat", other, group)
            parts.append(f"{group or 'overall'} {d:+.1f} ± {s:.1f}")
        lines.append(f"- vs {other}: " + ", ".join(parts))
    return "\n".join(lines) + "\n"


def plot(results: dict, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(next(iter(results.values()))["methods"])  # the same rows in every family
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, (family, result) in zip(axes.flat, results.items()):
        width = 0.8 / len(rows)
        for i, row in enumerate(rows):
            cells = [result["methods"][row]] + [result["groups"][g][row] for g in GROUPS]
            x = np.arange(3) + (i - len(rows) / 2 + 0.5) * width
            ax.bar(
                x,
                [c["mean"] for c in cells],
                width,
                yerr=[c["std"] for c in cells],
                capsize=2,
                label=row,
            )
        ax.set_xticks(np.arange(3), ["overall", "shared", "shifted"])
        ax.set_title(family)
        ax.set_ylabel("score (%)")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def preamble(path: Path) -> str:
    """The text above the report's title in the ``ACCURACY.md`` at ``path``, if any: the
    maintainers' reading of the tables, which a rerun must not erase."""
    if not path.exists():
        return ""
    head, title, _ = path.read_text().partition(REPORT_TITLE)
    return head if title else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--workdir", default="runs/accuracy")
    parser.add_argument(
        "--out",
        help="where the report goes (default: <workdir>/report; 'benchmarks' replaces the "
        "committed report)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help="the methods besides the reference rows (blind, centralized), e.g. "
        "local_adapter,fedavg_adapter to check the benchmark's properties before FedDAT runs",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: report the runs already finished in --workdir (e.g. families run "
        "in separate processes, as benchmarks/gpu_accuracy.sh does)",
    )
    args = parser.parse_args()
    families = args.families.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    methods = tuple(args.methods.split(","))
    if unknown := sorted(set(methods) - set(METHODS)):
        sys.exit(f"error: unknown --methods {unknown}; choose from {','.join(METHODS)}")
    rows = rows_of(methods)
    root = Path(args.workdir)
    out = Path(args.out) if args.out else root / "report"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    results = {}
    for family in families:
        if not args.report_only:
            run_family(family, seeds, args.rounds, root / family, methods)
        missing = [
            f for f, _ in rows.values() if not (root / family / f / "metrics.jsonl").exists()
        ]
        if missing:  # --report-only on a workdir (or family) that has not been run
            sys.exit(
                f"error: {root / family / missing[0]} holds no finished run; run accuracy.py "
                f"with the same --workdir and without --report-only first"
            )
        results[family] = collect(family, seeds, root, rows)
        results[family]["checks"] = checks(results[family])
    minutes = (time.time() - t0) / 60
    command = "python -m benchmarks.accuracy " + " ".join(sys.argv[1:])
    report = [
        REPORT_TITLE,
        "",
        (
            f"`{command.strip()}`: families {families}, seeds {seeds}, {args.rounds} rounds"
            + ("" if args.report_only else f", {minutes:.0f} min of wall time")
            + ". Scores: VQA soft score / accuracy in %, mean ± "
            "sample std over seeds, each the mean over the 12 clients (a group's mean over the "
            "clients that have it). Rows and checks: benchmarks/accuracy.py; what they mean: "
            "docs/BENCHMARK.md."
        ),
        "",
    ] + [table(f, r) for f, r in results.items()]
    text = "\n".join(report)
    print(text)
    payload = {
        "families": results,
        "seeds": seeds,
        "rounds": args.rounds,
    }
    if not args.report_only:
        payload["minutes"] = round(minutes, 1)
    (out / "results_accuracy.json").write_text(json.dumps(payload, indent=2))
    (out / "ACCURACY.md").write_text(preamble(out / "ACCURACY.md") + text)
    plot(results, out / "accuracy.png")


if __name__ == "__main__":
    main()
