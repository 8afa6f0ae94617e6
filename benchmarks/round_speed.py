"""Per-round time of the FedDAT round for three client-execution strategies.

    python benchmarks/bench_round.py                          # CPU default, tiny ViLT, ~3 min
    python benchmarks/bench_round.py --size base --image 384x640 --cohorts 1,4,16   # ViLT-B/32

Strategies (the same FedDAT local epoch, METHOD.md §1, on the same synthetic cohort):
  vmap  one jitted round, all cohort clients at once (the R = 1 round, chunk_size=None)
  scan  one jitted round, one client after another inside it (chunk_size=1: lax.map)
  loop  the sequential baseline: a Python loop over clients and steps, one jitted call per step

Reported per (strategy, cohort size C): compile time (AOT lower+compile, apart), the median
round time over --repeats runs (inputs already on device), examples/s, the model FLOPs of a round
and the achieved FLOP/s against the measured matmul peak of the same device. XLA's cost analysis
counts a while-loop body once (it does not know trip counts), so the round's own number
(``xla_round_gflop``) undercounts scans; the model FLOPs are XLA's count for ONE client step
(3 forward + 2 backward passes) times C x S. The input table compares host time (building the
synthetic cohort in numpy; the data pipeline's ``cohort_batches`` on a synthetic store) with the
host->device copy and the device's round time.

Writes the table to stdout and everything to --out (JSON, rewritten after every row, so a run cut
short still leaves its results). Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import numpy as np
from round_cohort import DTYPES, build, cohort_inputs, pipeline_time, synthetic_batches
from round_timing import (
    LoopRound,
    flops_of,
    fresh,
    matmul_peak,
    one_federation_round,
    time_compiled,
)

from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.state import init_server_state


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--size",
        choices=("tiny", "base"),
        default="tiny",
        help="ViltConfig.tiny() or ViLT-B/32 (ViltConfig(), random weights)",
    )
    p.add_argument("--cohorts", default="1,5,16,64", help="comma-separated cohort sizes C")
    p.add_argument("--strategies", default="vmap,scan,loop")
    p.add_argument("--steps", type=int, default=2, help="local steps S per client")
    p.add_argument("--batch", type=int, default=2, help="batch size B (official: 2)")
    p.add_argument(
        "--image", default="", help="HxW of the padded images (tiny: 64x64, base: 384x640)"
    )
    p.add_argument("--text-len", type=int, default=0, help="L (tiny: 16, base: 40)")
    p.add_argument("--answers", type=int, default=0, help="head size A (tiny: 10, base: 100)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default="float32", help="compute dtype")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-size", type=int, default=0, help="matmul size for the peak (0: auto)")
    p.add_argument("--no-pipeline", action="store_true", help="skip timing data.pipeline")
    p.add_argument(
        "--out", default="", help="JSON path (default benchmarks/results_<backend>.json)"
    )
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------- main
def run(args) -> dict:
    cohorts = [int(c) for c in args.cohorts.split(",") if c]
    strategies = [s for s in args.strategies.split(",") if s]
    backend = jax.default_backend()
    device = jax.devices()[0]
    out_path = args.out or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), f"results_{backend}.json"
    )
    result = {
        "device": {
            "backend": backend,
            "kind": device.device_kind,
            "count": jax.device_count(),
            "host": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
        },
        "config": vars(args),
        "rows": [],
        "inputs": [],
    }

    def save():
        with open(out_path, "w") as f:
            json.dump(result, f, indent=1)

    start = time.perf_counter()
    st = build(args)
    result["setup_s"] = time.perf_counter() - start
    n_peak = args.peak_size or (2048 if backend == "cpu" else 8192)
    peak = matmul_peak(DTYPES[args.dtype], n_peak)
    result["peak"] = peak
    result["model"] = {
        "size": args.size,
        "image_hw": st.image_hw,
        "text_len": st.text_len,
        "answers": st.answers,
        "steps": st.steps,
        "batch": st.batch,
        "dtype": args.dtype,
        "frozen_params": sum(x.size for x in jax.tree.leaves(st.frozen)),
        "shared_params": sum(x.size for x in jax.tree.leaves(st.shared)),
        "private_state": sum(x.size for x in jax.tree.leaves(st.private_one)),
    }
    print(
        f"# {backend} {device.device_kind} x{jax.device_count()} | ViLT {args.size} "
        f"{st.image_hw[0]}x{st.image_hw[1]} L={st.text_len} A={st.answers} S={st.steps} "
        f"B={st.batch} {args.dtype} | matmul peak {peak['flops_per_s'] / 1e9:.1f} GFLOP/s "
        f"(n={n_peak})",
        flush=True,
    )
    frozen = jax.device_put(st.frozen)
    server = jax.device_put(init_server_state(st.shared, st.server_tx, jax.random.key(1)))
    loop = LoopRound(st) if "loop" in strategies else None
    step_flops = None

    header = (
        f"{'strategy':8} {'C':>4} {'compile_s':>9} {'round_s':>9} {'ex/s':>9} "
        f"{'GFLOP/rnd':>10} {'GFLOP/s':>9} {'%peak':>6} {'xla_rnd_GF':>10}"
    )
    print(header, flush=True)
    for c in cohorts:
        rng = np.random.default_rng(c)
        t_host = time.perf_counter()
        batches_host = synthetic_batches(
            rng, c, st.steps, st.batch, st.image_hw, st.text_len, st.vocab, st.answers
        )
        t_host = time.perf_counter() - t_host
        private_C, tasks_C, ids_C = cohort_inputs(st, c)
        t_h2d = time.perf_counter()
        batches = jax.block_until_ready(jax.device_put(batches_host))
        t_h2d = time.perf_counter() - t_h2d
        tasks_dev, ids_dev = jax.device_put(tasks_C), jax.device_put(ids_C)
        inputs = {
            "C": c,
            "host_build_s": t_host,
            "h2d_s": t_h2d,
            "batch_mb": sum(v.nbytes for v in batches_host.values()) / 2**20,
            "pipeline_s": None if args.no_pipeline else pipeline_time(st, c),
        }
        examples = c * st.steps * st.batch
        for strategy in strategies:
            row = {"strategy": strategy, "C": c, "examples": examples}
            try:
                if strategy == "loop":
                    row["compile_s"] = loop.compile(
                        frozen, server, fresh(private_C), tasks_dev, batches
                    )
                    if step_flops is None:
                        step_flops = flops_of(loop.compiled["step"])
                    times = []
                    for i in range(args.repeats + 1):
                        p = fresh(private_C)
                        jax.block_until_ready(p)
                        t0 = time.perf_counter()
                        jax.block_until_ready(loop(frozen, server, p, tasks_C, ids_C, batches_host))
                        if i:
                            times.append(time.perf_counter() - t0)
                    row["xla_round_gflop"] = None
                else:
                    fn = one_federation_round(
                        st.algorithm,
                        st.server_tx,
                        MeanAggregator(),
                        chunk_size=None if strategy == "vmap" else 1,
                    )
                    t0 = time.perf_counter()
                    compiled = fn.lower(
                        frozen, server, fresh(private_C), tasks_dev, ids_dev, batches
                    ).compile()
                    row["compile_s"] = time.perf_counter() - t0
                    row["xla_round_gflop"] = flops_of(compiled) / 1e9
                    times = time_compiled(
                        compiled,
                        lambda: (frozen, server, fresh(private_C), tasks_dev, ids_dev, batches),
                        args.repeats,
                    )
                if step_flops is None:  # XLA's count for one client step (no loops inside)
                    lo = LoopRound(st)
                    lo.compile(
                        frozen,
                        server,
                        fresh(jax.tree.map(lambda x: x[:1], private_C)),
                        jax.tree.map(lambda x: x[:1], tasks_dev),
                        jax.tree.map(lambda x: x[:1], batches),
                    )
                    step_flops = flops_of(lo.compiled["step"])
                row["round_s"] = statistics.median(times)
                row["round_s_all"] = times
                row["examples_per_s"] = examples / row["round_s"]
                row["model_gflop"] = step_flops * c * st.steps / 1e9
                row["gflop_per_s"] = row["model_gflop"] / row["round_s"]
                row["peak_fraction"] = row["gflop_per_s"] * 1e9 / peak["flops_per_s"]
            except Exception as e:  # e.g. out of memory at a large cohort: record and go on
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            result["rows"].append(row)
            if strategy == "vmap":
                inputs["round_s_vmap"] = row.get("round_s")
            save()
            if "error" in row:
                print(f"{strategy:8} {c:>4} ERROR {row['error'][:100]}", flush=True)
            else:
                xla = row["xla_round_gflop"]
                print(
                    f"{strategy:8} {c:>4} {row['compile_s']:>9.2f} {row['round_s']:>9.4f} "
                    f"{row['examples_per_s']:>9.1f} {row['model_gflop']:>10.3f} "
                    f"{row['gflop_per_s']:>9.2f} {100 * row['peak_fraction']:>5.1f}% "
                    f"{'-' if xla is None else f'{xla:.3f}':>10}",
                    flush=True,
                )
        result["inputs"].append(inputs)
        save()

    print(
        "\ninputs (per round; host = numpy synthetic cohort, pipeline = data.pipeline."
        "cohort_batches on a synthetic store)"
    )
    print(f"{'C':>4} {'MB':>8} {'host_s':>8} {'pipeline_s':>10} {'h2d_s':>8} {'vmap_round_s':>12}")
    for i in result["inputs"]:
        p = "-" if i["pipeline_s"] is None else f"{i['pipeline_s']:.4f}"
        v = "-" if i.get("round_s_vmap") is None else f"{i['round_s_vmap']:.4f}"
        print(
            f"{i['C']:>4} {i['batch_mb']:>8.2f} {i['host_build_s']:>8.4f} {p:>10} "
            f"{i['h2d_s']:>8.4f} {v:>12}"
        )

    # The fastest strategy: most cohort sizes won (ties: the larger cohorts decide).
    wins: dict[str, int] = {}
    for c in cohorts:
        ok = [r for r in result["rows"] if r["C"] == c and "round_s" in r]
        if ok:
            best = min(ok, key=lambda r: r["round_s"])["strategy"]
            wins[best] = wins.get(best, 0) + 1
    if wins:
        result["fastest"] = max(wins, key=lambda s: (wins[s], s == "vmap"))
        result["wins"] = wins
        print(f"\nfastest on {backend}: {result['fastest']} (cohort sizes won: {wins})")
    result["total_s"] = time.perf_counter() - start
    save()
    print(f"wrote {out_path}")
    return result


if __name__ == "__main__":
    run(parse_args())
