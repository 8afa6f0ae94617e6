"""Does a method's advantage survive as clients multiply and each holds little data?

    python -m benchmarks.client_count                  # the full run (35-50 min, 2 quiet cores)
    python -m benchmarks.client_count --quick          # a smoke-sized run (7 min, 2 quiet cores)
    python -m benchmarks.client_count --data-seed 1 --out benchmarks/client_count_data1 \
        --methods local_adapter,fedavg_adapter --sweeps client_count --no-speedup  # other data
    python -m benchmarks.client_count --report-only    # re-render the MD and PNG from the JSON

The cross-device regime on the embedded ``domain`` family: N = 10 to 10,000 clients of 16
training and 16 test questions each (total data grows with N), a cohort of 10 per round, and at
N = 1,000 cohorts of 5 to 50. Every method trains its seeds x client counts as ONE launch and
its seeds x cohort sizes as another (the replica axis, ``train.sweep``: replica r samples and
evaluates its first N_r clients). Each evaluation scores the same seeded sample of clients for
every method and seed (paired comparisons), split into clients that took part and clients that
never did. The reference rows ride no sweep: ``blind`` (the data alone) is scored on the same
sampled clients; ``centralized`` (one adapter and one head on the pooled data) trains per N and
seed where it fits the budget (see ``CENTRALIZED_MAX_N``). ``sweep_speedup`` times FedAvg's
client-count launch against the same replicas as separate launches, in this process.

Answer heads: with 16 questions per client and most clients never sampled, a private head is
noise, so every method that the library lets federate its head does (``peft.head="shared"``);
``feddat`` and ``local_adapter`` are refused a shared head and keep their private ones, so a
client that never took part is scored with a never-trained head. Compare them on ``took part``.

Cost. A launch of this tiny ViLT keeps 1.1 to 1.6 of 2 cores busy. ``--quick`` took 7.2 min of
wall time and 11 min of process CPU time on a quiet host (20 min at load 5). Per round at the
full settings (measured with 3 rounds at load 4-6, in CPU seconds): FedAvg's client-count launch
(R = 12 replicas x 10 clients) ~6, FedDAT's ~14; a cohort-size launch pads all R = 12 replicas
to the largest cohort (50): 600 client slots for 255 real ones, ~38 (FedAvg) and ~68 (FedDAT):
the cohort sweep is most of the bill. Four methods cost ~230 CPU s a round plus ~800 CPU s of
compilation and evaluation, ~400 for the 12 separate launches of ``sweep_speedup`` and ~250 for
``centralized``: ROUNDS = 10 makes ~3,100 CPU s, 35 to 50 min of wall time on 2 otherwise idle
cores (CLIENT_COUNT.md records wall and CPU time per launch; a shared host takes longer).

Writes results_client_count.json, client_count.png and CLIENT_COUNT.md (generated from the JSON)
under ``--out``; trains into ``--workdir`` (a rerun resumes finished launches).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from benchmarks import client_count_report as report
from benchmarks.client_count_launches import blind_scorer, centralized, head_for, launch, speedup
from benchmarks.harness import ROOT, command, write_json

# ---- the benchmark's settings, fixed before any FedDAT number was seen; never tuned to a method
FAMILY = "domain"
TRAIN_PER_CLIENT = TEST_PER_CLIENT = 16  # few questions per client: the cross-device regime
CLIENT_COUNTS = (10, 100, 1000, 10000)
COHORT = 10  # clients per round in the client-count sweep
COHORT_SIZES = (5, 10, 20, 50)
COHORT_SWEEP_CLIENTS = 1000
SEEDS = (0, 1, 2)
ROUNDS = 10  # sized so that the full run fits 60 min on 2 CPU cores (ESTIMATE)
LOCAL_STEPS = 2  # K local steps of B = 8: the median client's 16 questions once per round
LEARNING_RATE = 1e-3  # configs/embedded.py's (fair schedule), as every embedded benchmark
EVAL_CLIENTS = 20  # the same seeded sample for every method and seed (all N where N < 20)
SWEEP_NAMES = ("client_count", "cohort")  # a method's launches: seeds x N, seeds x cohort size
CENTRALIZED_MAX_N = 100  # pooled epochs over N x 16 questions: cost grows with N
# answer head: "shared" (one federated head: the cross-device setting) wherever the library allows
# it, else the method's own private head (feddat, local_adapter: refused with a shared head)
METHODS = ("local_adapter", "fedavg_adapter", "fedavg_ft", "feddat")
REFERENCES = ("blind", "centralized")
# --quick: cohorts up to 20 (a cohort-size sweep pads every replica to the largest cohort, so 50
# alone would cost more than the rest of the quick run), centralized at N = 10 only
QUICK = {
    "rounds": 3,
    "counts": (10, 100, 1000),
    "seeds": (0, 1),
    "cohort_sizes": (5, 10, 20),
    "centralized_max_n": 10,
}


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one invocation trains (the full settings, or --quick's)."""

    rounds: int = ROUNDS
    counts: tuple[int, ...] = CLIENT_COUNTS
    seeds: tuple[int, ...] = SEEDS
    cohort_sizes: tuple[int, ...] = COHORT_SIZES
    centralized_max_n: int = CENTRALIZED_MAX_N
    quick: bool = False


def base_config(plan: Plan, data_seed: int):
    """configs/embedded.py's family with the benchmark's settings; nothing swept yet."""
    from feddat_jax.train.config_base import config_from_file

    c = config_from_file(f"configs/embedded.py:{FAMILY}")
    c.compare_methods, c.references, c.sweep.seed = (), (), ()
    c.rounds = c.eval_every = c.checkpoint_every = plan.rounds  # one evaluation, at the end
    c.tensorboard = False
    c.data.train_per_client, c.data.test_per_client = TRAIN_PER_CLIENT, TEST_PER_CLIENT
    c.data.seed = data_seed
    c.clients_per_round, c.eval_clients = COHORT, EVAL_CLIENTS
    c.optim.learning_rate, c.optim.max_local_steps = LEARNING_RATE, LOCAL_STEPS
    return c


def sweeps(config, plan: Plan) -> dict[str, tuple[object, str]]:
    """The two launches of a method: ``{sweep name: (config, the swept field)}``."""
    counts = config.copy_and_resolve_references()
    counts.sweep.seed, counts.sweep.data.num_clients = plan.seeds, plan.counts
    cohort = config.copy_and_resolve_references()
    cohort.data.num_clients = COHORT_SWEEP_CLIENTS
    cohort.sweep.seed, cohort.sweep.clients_per_round = plan.seeds, plan.cohort_sizes
    return {"client_count": (counts, "data.num_clients"), "cohort": (cohort, "clients_per_round")}


def run(
    plan: Plan,
    data_seed: int,
    workdir: Path,
    methods: tuple[str, ...],
    time_speedup: bool,
    sweep_names: tuple[str, ...] = SWEEP_NAMES,
) -> dict:
    """Every launch, the references and the speedup; returns the JSON's content."""
    from feddat_jax.methods import METHODS as LIBRARY_METHODS

    t_start, c_start, load = time.perf_counter(), time.process_time(), os.getloadavg()[0]
    config = base_config(plan, data_seed)
    missing = {
        m: "not in feddat_jax.methods.METHODS when this run started"
        for m in methods
        if m not in LIBRARY_METHODS
    }
    trained = [m for m in methods if m in LIBRARY_METHODS]
    heads = {m: head_for(config, m) for m in trained}
    settings: dict[tuple[str, int], dict] = {}  # (sweep, N or C) -> the JSON's setting
    launches, fedavg_one_launch = [], None
    total = len(sweep_names) * len(trained)
    for i, method in enumerate(trained):
        method_config = config.copy_and_resolve_references()
        method_config.method, method_config.peft.head = method, heads[method]
        chosen = {k: v for k, v in sweeps(method_config, plan).items() if k in sweep_names}
        for j, (sweep, (c, field)) in enumerate(chosen.items()):
            history, wall, cpu, resumed = launch(c, workdir / sweep / method)
            replicas = report.replica_scores(history, field)
            launches.append(
                {
                    "method": method,
                    "sweep": sweep,
                    "replicas": len(replicas),
                    "wall_s": round(wall, 1),
                    "cpu_s": round(cpu, 1),
                    "resumed": resumed,
                }
            )
            if method == "fedavg_adapter" and sweep == "client_count" and not resumed:
                fedavg_one_launch = wall
            print(
                f"[{len(chosen) * i + j + 1}/{total}] {method} {sweep}: {len(replicas)} replicas, "
                f"{wall:.0f} s{' (resumed)' if resumed else ''}",
                flush=True,
            )
            for value, group in report.by_value(replicas).items():
                n = value if sweep == "client_count" else COHORT_SWEEP_CLIENTS
                entry = settings.setdefault(
                    (sweep, value),
                    {
                        "sweep": sweep,
                        "num_clients": n,
                        "train_per_client": TRAIN_PER_CLIENT,
                        "clients_per_round": COHORT if sweep == "client_count" else value,
                        "eval_sample": group[0]["clients"],
                        "methods": {},
                    },
                )
                entry["methods"][method] = report.cell(group)
    # the references: blind on each setting's sampled clients; centralized per N that fits
    score_blind = blind_scorer(config, max(max(plan.counts), COHORT_SWEEP_CLIENTS))
    for entry in settings.values():
        entry["methods"]["blind"] = report.fixed_cell(score_blind(entry["eval_sample"]), plan.seeds)
    print("blind: scored on every setting's evaluation sample", flush=True)
    for n in plan.counts:
        if n > plan.centralized_max_n:
            continue
        entry = settings[("client_count", n)]
        cell, wall, cpu = centralized(
            config, n, plan.seeds, entry["eval_sample"], workdir / "centralized" / f"n{n}"
        )
        entry["methods"]["centralized"] = cell
        launches.append(
            {
                "method": "centralized",
                "sweep": f"N={n}",
                "replicas": len(plan.seeds),
                "wall_s": round(wall, 1),
                "cpu_s": round(cpu, 1),
                "resumed": False,
            }
        )
        print(f"centralized N {n}: {len(plan.seeds)} seeds, {wall:.0f} s", flush=True)
    missing["centralized"] = (
        f"trained at N <= {plan.centralized_max_n} only: it pools N x {TRAIN_PER_CLIENT} "
        f"questions for about {plan.rounds} epochs, N / {COHORT} times a federated round's work "
        "per epoch, so larger N cost more than this run's budget"
    )
    result = {
        "question": __doc__.splitlines()[0],
        "quick": plan.quick,
        "command": command("client_count"),
        "data_seed": data_seed,
        "fixed": {
            "family": FAMILY,
            "train_per_client": TRAIN_PER_CLIENT,
            "test_per_client": TEST_PER_CLIENT,
            "cohort": COHORT,
            "cohort_sweep_clients": COHORT_SWEEP_CLIENTS,
            "rounds": plan.rounds,
            "local_steps": LOCAL_STEPS,
            "batch_size": config.batch_size,
            "learning_rate": LEARNING_RATE,
            "eval_clients": EVAL_CLIENTS,
            "seeds": list(plan.seeds),
            "client_counts": list(plan.counts),
            "cohort_sizes": list(plan.cohort_sizes),
            "centralized_max_n": plan.centralized_max_n,
        },
        "heads": {**heads, "centralized": "shared"},
        "methods": [
            m
            for m in ("blind", *trained, "centralized")
            if m == "blind" or m in heads or any(m in s["methods"] for s in settings.values())
        ],
        "settings": list(settings.values()),
        "scaling": report.copy_scaling(ROOT / "benchmarks" / "results_scaling.json"),
        "launches": launches,
        "missing": missing,
    }
    if time_speedup and "fedavg_adapter" in heads:
        fedavg = config.copy_and_resolve_references()
        fedavg.method, fedavg.peft.head = "fedavg_adapter", heads["fedavg_adapter"]
        swept, _ = sweeps(fedavg, plan)["client_count"]
        detail = speedup(swept, plan, fedavg_one_launch)
        result["sweep_speedup"] = round(detail["separate_s"] / detail["one_launch_s"], 2)
        result["sweep_speedup_detail"] = detail
        print(f"sweep speedup: {result['sweep_speedup']:.2f}x", flush=True)
    result["minutes"] = round((time.perf_counter() - t_start) / 60, 1)
    result["cpu_minutes"] = round((time.process_time() - c_start) / 60, 1)  # all threads
    result["load_average"] = {"start": round(load, 2), "end": round(os.getloadavg()[0], 2)}
    return result


def write_outputs(result: dict, out: Path) -> None:
    """The JSON, then the MD and the PNG rendered from it."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results_client_count.json", result)
    (out / "CLIENT_COUNT.md").write_text(report.markdown(result))
    report.plot(result, out / "client_count.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"a smoke-sized run: {QUICK} (< 10 min on 2 cores)"
    )
    parser.add_argument(
        "--data-seed", type=int, default=0, help="data.seed: other clients' data (default 0)"
    )
    parser.add_argument(
        "--workdir",
        default="runs/client_count",
        help="where the launches train (a rerun resumes them)",
    )
    parser.add_argument("--out", default="benchmarks", help="where the JSON, PNG and MD go")
    parser.add_argument(
        "--methods", default=",".join(METHODS), help="methods besides the references (development)"
    )
    parser.add_argument(
        "--no-speedup",
        action="store_true",
        help="skip the separate launches that time sweep_speedup",
    )
    parser.add_argument(
        "--sweeps",
        default=",".join(SWEEP_NAMES),
        help="which launches per method: client_count (seeds x N), cohort (seeds x cohort size)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: re-render the MD and PNG from --out's JSON",
    )
    args = parser.parse_args()
    out = Path(args.out)
    if args.report_only:
        write_outputs(json.loads((out / "results_client_count.json").read_text()), out)
        return
    plan = Plan(quick=True, **QUICK) if args.quick else Plan()
    workdir = Path(args.workdir) / f"{'quick' if plan.quick else 'full'}_data{args.data_seed}"
    methods = tuple(m for m in args.methods.split(",") if m)
    sweep_names = tuple(k for k in args.sweeps.split(",") if k)
    unknown = sorted(set(sweep_names) - set(SWEEP_NAMES))
    if unknown:  # a typo would otherwise launch nothing for that sweep, silently
        parser.error(f"--sweeps: unknown {','.join(unknown)}; choose from {','.join(SWEEP_NAMES)}")
    result = run(plan, args.data_seed, workdir, methods, not args.no_speedup, sweep_names)
    write_outputs(result, out)
    print(report.markdown(result))


if __name__ == "__main__":
    sys.exit(main())
