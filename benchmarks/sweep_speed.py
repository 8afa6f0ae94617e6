"""How much faster is a sweep as ONE program than one run per value? Wall time, compile included.

    python -m benchmarks.sweep_speed                  # CPU, tiny model: launches + rounds (~20 min)
    python -m benchmarks.sweep_speed --size base      # ViLT-B/32 size, random weights (one GPU)

Two measurements (``--parts``):

``launch`` (tiny only): the demo's FedDAT on its pretrained tiny ViLT as a short ablation run,
through ``launch.py``: R seeds in ONE launch (``--config.sweep.seed=(0,..,R-1)``) against R
launches one after another (seed 0..R-1, each its own process: start-up, data, compile, training,
evaluation, checkpoints, report). "R separate" is the sum of the first R separate launches.

``round`` (both sizes): the FedDAT round on the harness's synthetic cohort of C clients per
replica (random weights) in this process: the replica round's compile time and median round time
per R, with a swept (traced) learning rate; against the one-federation round, of which R runs
one after another cost ``R x (compile + K rounds)`` (a fresh process recompiles; here every run
gets a new jit).

Prints the tables and writes everything to ``--out`` (JSON, rewritten after every row, so a run
cut short by ``--budget-s`` or a time limit keeps what it measured). Not a test.

The ``round`` part imports only jax, flax, optax, numpy and the model and round code (no
ml_collections, tensorflow-datasets, dp_accounting or tensorboardX), so it runs on a bare GPU image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks import harness
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.replicas import make_replica_round_fn, stack_replicas

ROOT = harness.ROOT


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=tuple(harness.SIZES), default="tiny")
    p.add_argument("--replicas", default="1,4,8,16", help="comma-separated R")
    p.add_argument(
        "--parts", default="", help="launch,round (default: both for tiny, round for base)"
    )
    # the launch part: a short ablation run of the demo
    p.add_argument("--launch-rounds", type=int, default=5)
    p.add_argument("--train-per-client", type=int, default=32)
    p.add_argument("--test-per-client", type=int, default=100)
    p.add_argument("--launch-batch", type=int, default=2)
    # the round part (the harness's synthetic cohort)
    p.add_argument("--cohort", type=int, default=5, help="clients per replica C")
    p.add_argument("--steps", type=int, default=2, help="local steps S per client")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="K rounds of a whole run (round part)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--image", default="")
    p.add_argument("--text-len", type=int, default=0)
    p.add_argument("--answers", type=int, default=0)
    p.add_argument("--dtype", choices=tuple(harness.DTYPES), default="float32")
    p.add_argument("--budget-s", type=float, default=0, help="skip rows after this many seconds")
    p.add_argument(
        "--out", default="", help="JSON path (default benchmarks/results_sweep_<backend>.json)"
    )
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------ launches
def launch_cmd(workdir: Path, args, *extra: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "launch.py"),
        "--config",
        str(ROOT / "configs" / "demo.py"),
        "--workdir",
        str(workdir),
        "--config.compare_methods=('feddat',)",
        f"--config.rounds={args.launch_rounds}",
        f"--config.eval_every={args.launch_rounds}",
        f"--config.batch_size={args.launch_batch}",
        f"--config.data.train_per_client={args.train_per_client}",
        f"--config.data.test_per_client={args.test_per_client}",
        f"--config.data.cache_dir={args.cache}",
        "--config.tensorboard=False",
        "--config.references=()",  # the methods' runs only: the reference rows are not swept
        *extra,
    ]


def timed_launch(workdir: Path, args, *extra: str) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    out = subprocess.run(
        launch_cmd(workdir, args, *extra),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    wall = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"launch {extra} failed:\n{out.stderr[-3000:]}")
    rows = [json.loads(x) for x in (workdir / "feddat" / "metrics.jsonl").read_text().splitlines()]
    round_s = {r["round"]: r["time/round_s"] for r in rows}
    replicas = 1 + max(r.get("replica", 0) for r in rows)
    return {
        "wall_s": wall,
        "first_round_s": round_s[1],  # includes the round's compile
        "later_rounds_s": sum(v for k, v in round_s.items() if k > 1),
        "replicas": replicas,
        "load_before": load,  # 1-minute load average: other jobs on the host
        "load_after": os.getloadavg()[0],
    }


def launch_part(args, replicas: list[int], report: dict, save) -> None:
    """Sweep launches and the separate launches they are compared with, interleaved (R=1 sweep,
    seed 0, R=4 sweep, seeds 1..3, ...) so that a change of the host's load hits both."""
    root = Path(tempfile.mkdtemp(prefix="bench_sweep_"))
    args.cache = root / "cache"
    warmup = ("--config.rounds=1", "--config.eval_every=1", "--config.sweep.seed=()")
    timed_launch(root / "warmup", args, *warmup)  # builds the data, warms the file caches
    separate, rows = [], []
    for r in sorted(replicas):
        seeds = "(" + ",".join(str(s) for s in range(r)) + ("," if r == 1 else "") + ")"
        one = timed_launch(root / f"sweep{r}", args, f"--config.sweep.seed={seeds}")
        while len(separate) < r:
            seed = len(separate)
            flags = (f"--config.seed={seed}", "--config.sweep.seed=()")  # the demo sweeps 3
            separate.append(timed_launch(root / f"seed{seed}", args, *flags))
        if one["replicas"] != r or any(s["replicas"] != 1 for s in separate):
            raise RuntimeError("a launch trained another number of replicas than asked")
        sep = sum(s["wall_s"] for s in separate[:r])
        rows.append({"R": r, "sweep": one, "separate_wall_s": sep, "speedup": sep / one["wall_s"]})
        report["launch"] = {"rows": rows, "separate": separate}
        save()
    print_launch(rows, separate)


def print_launch(rows, separate) -> None:
    print("\nlaunch: R seeds in one launch vs R launches one after another (wall s, all included)")
    print(f"{'R':>3} {'one launch':>11} {'1st round':>10} {'later rnds':>11} "
          f"{'R launches':>11} {'speedup':>8}")  # fmt: skip
    for row in rows:
        s = row["sweep"]
        print(
            f"{row['R']:>3} {s['wall_s']:>11.1f} {s['first_round_s']:>10.1f} "
            f"{s['later_rounds_s']:>11.1f} {row['separate_wall_s']:>11.1f} {row['speedup']:>7.2f}x"
        )
    walls = [s["wall_s"] for s in separate]
    loads = [x["load_before"] for x in separate] + [r["sweep"]["load_before"] for r in rows]
    print(
        f"one separate launch: median {statistics.median(walls):.1f} s (of {len(walls)}); "
        f"host load average during the launches {min(loads):.1f}-{max(loads):.1f} "
        f"on {os.cpu_count()} cores"
    )


# -------------------------------------------------------------------------------------- rounds
def replica_inputs(st: harness.Cohort, replicas: int, c: int, seed: int = 0):
    """R federations' round inputs: own server keys, own cohort data, a swept learning rate."""
    batches = st.batches(replicas * c, st.steps, seed=seed)
    batches = {k: v.reshape((replicas, c) + v.shape[1:]) for k, v in batches.items()}
    stack = lambda t: jax.tree.map(lambda x: np.stack([x] * replicas), t)
    private, tasks, ids = stack(st.cohort(c))
    server = stack_replicas([st.server(seed=r) for r in range(replicas)])
    hparams = {"optim.learning_rate": np.geomspace(1e-4, 1e-3, replicas).astype(np.float32)}
    return server, private, tasks, ids, batches, hparams


def measure(fn, frozen, server, private, rest, repeats: int) -> tuple[float, list[float], int]:
    """(compile s, round times, peak device bytes or -1) of a jitted round."""
    t0 = time.perf_counter()
    compiled = jax.jit(fn, donate_argnums=(2,)).lower(frozen, server, private, *rest).compile()
    compile_s = time.perf_counter() - t0
    timings = harness.time_calls(
        compiled, lambda: (frozen, server, harness.fresh(private), *rest), repeats
    )
    peak = harness.device_peak_bytes()
    return compile_s, timings.wall, -1 if peak is None else int(peak)


def round_part(args, replicas: list[int], report: dict, save, start: float) -> None:
    image = tuple(int(v) for v in args.image.split("x")) if args.image else None
    st = harness.build(
        args.size, steps=args.steps, batch=args.batch, dtypes=(args.dtype,), image_hw=image,
        text_len=args.text_len, answers=args.answers,
    )  # fmt: skip
    frozen = jax.device_put(st.frozen)
    agg = MeanAggregator()
    c = args.cohort
    server, private, tasks, ids, batches, hp = replica_inputs(st, 1, c)
    one = lambda t: jax.tree.map(lambda x: x[0], t)
    single = harness.one_federation_round(st.algorithm, st.server_tx, agg, jit=False)
    rest = (one(tasks), one(ids), jax.device_put(one(batches)))
    compile_1, times_1, mem_1 = measure(
        single, frozen, one(server), one(private), rest, args.repeats
    )
    round_1 = statistics.median(times_1)
    run_1 = compile_1 + args.rounds * round_1
    report["round"]["single"] = {"compile_s": compile_1, "round_s": times_1, "peak_bytes": mem_1}
    rows = []
    for r in replicas:
        if args.budget_s and time.perf_counter() - start > args.budget_s:
            print(f"(budget of {args.budget_s:.0f} s reached: R={r} skipped)")
            continue
        server, private, tasks, ids, batches, hp = replica_inputs(st, r, c, seed=r)
        fn = make_replica_round_fn(st.algorithm, st.server_tx, agg, jit=False)
        rest = (tasks, ids, jax.device_put(batches), hp)
        compile_s, times, mem = measure(fn, frozen, server, private, rest, args.repeats)
        round_s = statistics.median(times)
        rows.append(
            {
                "R": r,
                "layout": "vmap",
                "compile_s": compile_s,
                "round_s": times,
                "peak_bytes": mem,
                "run_s": compile_s + args.rounds * round_s,
                "separate_run_s": r * run_1,
                "speedup_run": r * run_1 / (compile_s + args.rounds * round_s),
                "speedup_round": r * round_1 / round_s,
                "load": os.getloadavg()[0],
            }
        )
        report["round"]["rows"] = rows
        save()
    print_rounds(args, compile_1, round_1, rows)


def print_rounds(args, compile_1: float, round_1: float, rows) -> None:
    print(
        f"\nround: {args.size} FedDAT round, C={args.cohort}, S={args.steps}, B={args.batch}; one "
        f"federation: compile {compile_1:.2f} s, round {round_1:.4f} s; a run = compile + "
        f"{args.rounds} rounds"
    )
    print(f"{'R':>3} {'layout':>6} {'compile s':>10} {'round s':>9} {'R x round s':>12} "
          f"{'round speedup':>14} {'run s':>8} {'R runs s':>9} {'run speedup':>12}")  # fmt: skip
    for row in rows:
        rs = statistics.median(row["round_s"])
        print(
            f"{row['R']:>3} {row['layout']:>6} {row['compile_s']:>10.2f} {rs:>9.4f} "
            f"{row['R'] * round_1:>12.4f} {row['speedup_round']:>13.2f}x {row['run_s']:>8.2f} "
            f"{row['separate_run_s']:>9.2f} {row['speedup_run']:>11.2f}x"
        )


def main(argv=None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    replicas = [int(r) for r in args.replicas.split(",")]
    parts = (args.parts or ("launch,round" if args.size == "tiny" else "round")).split(",")
    if "launch" in parts and args.size != "tiny":
        raise SystemExit("error: the launch part runs the demo's tiny model only (--size tiny)")
    out = Path(args.out or harness.default_out(f"sweep_{jax.default_backend()}"))
    report = {
        "command": harness.command("sweep_speed"),
        "device": str(jax.devices()[0]),
        "backend": jax.default_backend(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
        "args": {k: v for k, v in vars(args).items()},
        "launch": {},
        "round": {},
    }

    def save() -> None:
        harness.write_json(out, report)

    print(f"device {report['device']} ({report['backend']}), jax {jax.__version__}")
    if "round" in parts:
        round_part(args, replicas, report, save, start)
    if "launch" in parts:
        launch_part(args, replicas, report, save)
    save()
    print(f"\nwrote {out} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
