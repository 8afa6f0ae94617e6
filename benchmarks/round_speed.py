"""How fast is one federated round, for each way of running the cohort's clients, and where does its time go?

    python -m benchmarks.round_speed                          # CPU default, tiny ViLT, ~3 min
    python -m benchmarks.round_speed --size base --cohorts 1,4,16   # ViLT-B/32 size
    python -m benchmarks.round_speed --size mid --cohorts 16 --steps 8 --strategies vmap --trace
    python -m benchmarks.round_speed --size mid --cohorts 16 --steps 8 --strategies vmap \
        --compare /tmp/base --pairs 4                         # a change's before/after

Strategies (the same FedDAT local epoch, METHOD.md §1, on the harness's synthetic cohort):
  vmap  one jitted round, all cohort clients at once (the R = 1 round, chunk_size=None)
  scan  one jitted round, one client after another inside it (chunk_size=1: lax.map)
  loop  the sequential baseline: a Python loop over clients and steps, one jitted call per step

Reported per (strategy, cohort size C): compile time (AOT lower+compile, apart), the median
round time over --repeats runs (inputs already on device), examples/s, the model FLOPs of a round
(XLA's count of ONE client step x C x S; the round's own count, ``xla_round_gflop``, counts a
loop body once) and the achieved FLOP/s against the measured matmul peak of the same device.
The CPU-time columns are the same ratio in process CPU seconds (all threads; robust to other
processes on a shared CPU). The input table compares host time (building the synthetic cohort in
numpy; the data pipeline's ``cohort_batches`` on a synthetic store) with the host->device copy and
the device's round time.

``--trace`` adds each jitted round's per-op profile (``op_profile``: 3 rounds under
``jax.profiler``, op time by category). ``--compare DIR`` instead runs this module with the same
flags alternately in DIR (another checkout that has it) and in this one (``--pairs`` pairs of
processes), so a before/after is measured under the same machine load, and prints and writes the
medians.

Writes the table to stdout and everything to --out (JSON, rewritten after every row).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from benchmarks import harness, op_profile
from benchmarks.loop_round import LoopRound
from feddat_jax.fl.aggregation import MeanAggregator


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--size",
        choices=tuple(harness.SIZES),
        default="tiny",
        help="ViltConfig.tiny(), the profile's mid size or ViLT-B/32 (random weights)",
    )
    p.add_argument("--cohorts", default="1,5,16,64", help="comma-separated cohort sizes C")
    p.add_argument("--strategies", default="vmap,scan,loop")
    p.add_argument("--steps", type=int, default=2, help="local steps S per client")
    p.add_argument("--batch", type=int, default=2, help="batch size B (official: 2)")
    p.add_argument("--image", default="", help="HxW of the padded images (default: the size's)")
    p.add_argument("--text-len", type=int, default=0, help="L (default: the size's)")
    p.add_argument("--answers", type=int, default=0, help="head size A (default: the size's)")
    p.add_argument("--dtype", choices=tuple(harness.DTYPES), default="float32")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--peak-size", type=int, default=0, help="matmul size for the peak (0: auto)")
    p.add_argument("--no-pipeline", action="store_true", help="skip timing data.pipeline")
    p.add_argument("--trace", action="store_true", help="per-op profile of the jitted rounds")
    p.add_argument("--compare", default="", help="another checkout to interleave with")
    p.add_argument("--pairs", type=int, default=3, help="--compare: pairs of processes")
    p.add_argument(
        "--out", default="", help="JSON (default benchmarks/results_{round,compare}_<backend>.json)"
    )
    return p.parse_args(argv)


def pipeline_time(st: harness.Cohort, c: int) -> float:
    """``data.pipeline.cohort_batches`` on a synthetic store of C clients: the host's share of a
    round (row gather and padding), median of 3."""
    from feddat_jax.data.client_store import ClientDataStore
    from feddat_jax.data.pipeline import cohort_batches

    n = st.steps * st.batch
    arrays = dataclasses.replace(st, batch=n).batches(c, 1, seed=1)  # [C, 1, n, ...]
    arrays = {k: v.reshape((c * n,) + v.shape[3:]) for k, v in arrays.items() if k != "example_mask"}
    store = ClientDataStore(
        names=tuple(f"c{k}" for k in range(c)),
        part="train",
        offsets=np.arange(c + 1, dtype=np.int64) * n,
        arrays=arrays,
    )
    times = []
    for r in range(3):
        t0 = time.perf_counter()
        cohort_batches(store, np.arange(c), st.batch, seed=0, round_index=r, num_steps=st.steps)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_strategy(strategy, st, frozen, server, c, batches, batches_host, args, loop) -> dict:
    """Compile seconds, round times and the XLA round count of one strategy at one C (the
    ``loop`` strategy's per-client programs do not depend on C: after the first cohort only its
    server update compiles)."""
    private_C, tasks_C, ids_C = st.cohort(c)
    tasks, ids = jax.device_put(tasks_C), jax.device_put(ids_C)
    if strategy == "loop":
        compile_s = loop.compile(frozen, server, harness.fresh(private_C), tasks, batches)
        timings = harness.time_calls(
            lambda p: loop(frozen, server, p, tasks_C, ids_C, batches_host),
            lambda: (harness.fresh(private_C),),
            args.repeats,
        )
        return {
            "compile_s": compile_s,
            "round_s_all": timings.wall,
            "round_cpu_s_all": timings.cpu,
            "xla_round_gflop": None,
        }
    fn = harness.one_federation_round(
        st.algorithm, st.server_tx, MeanAggregator(), chunk_size=None if strategy == "vmap" else 1
    )
    t0 = time.perf_counter()
    compiled = fn.lower(frozen, server, harness.fresh(private_C), tasks, ids, batches).compile()
    compile_s = time.perf_counter() - t0
    make_args = lambda: (frozen, server, harness.fresh(private_C), tasks, ids, batches)
    timings = harness.time_calls(compiled, make_args, args.repeats)
    row = {
        "compile_s": compile_s,
        "round_s_all": timings.wall,
        "round_cpu_s_all": timings.cpu,
        "xla_round_gflop": harness.flops_of(compiled) / 1e9,
    }
    if args.trace:
        once = lambda: jax.block_until_ready(compiled(*make_args()))
        row["profile"] = op_profile.profile(compiled, once, statistics.median(timings.wall))
    return row


def print_row(row: dict) -> None:
    strategy, c = row["strategy"], row["C"]
    if "error" in row:
        print(f"{strategy:8} {c:>4} ERROR {row['error'][:100]}", flush=True)
        return
    xla = row["xla_round_gflop"]
    print(
        f"{strategy:8} {c:>4} {row['compile_s']:>9.2f} {row['round_s']:>9.4f} "
        f"{row['examples_per_s']:>9.1f} {row['model_gflop']:>10.3f} "
        f"{row['gflop_per_s']:>9.2f} {100 * row['peak_fraction']:>5.1f}% "
        f"{'-' if xla is None else f'{xla:.3f}':>10}",
        flush=True,
    )


def print_profile(prof: dict) -> None:
    total = prof["thread_seconds_per_round"]
    print(f"  thread time per round {total:.3f} s (executor threads; wall {prof['round_s']:.3f} s)")
    for cat, sec in prof["categories"].items():
        print(f"  {1000 * sec:9.1f} ms {100 * sec / total:5.1f}%  {cat}")
    print("  top ops")
    for op in prof["top_ops"]:
        print(f"  {op['ms']:9.2f} ms  {op['op']:24} {op['jax']}", flush=True)


def forwarded(argv: list[str]) -> list[str]:
    """The flags a compared process gets: ``argv`` without ``--compare``, ``--pairs``, ``--out``
    (and their values) and ``--trace``."""
    flags, skip_value = [], False
    for a in argv:
        name = a.split("=")[0]
        if skip_value:
            skip_value = False
        elif name in ("--compare", "--pairs", "--out"):
            skip_value = "=" not in a
        elif name != "--trace":
            flags.append(a)
    return flags


def compare(args, argv: list[str]) -> dict:
    """This module with the same flags, alternately in ``--compare``'s checkout ("before") and
    in this one ("after"); per (strategy, C) the medians over the pairs."""
    flags = forwarded(argv)
    runs: dict[str, list] = {"before": [], "after": []}
    for i in range(args.pairs):
        for label, code in (("before", os.path.abspath(args.compare)), ("after", str(harness.ROOT))):
            with tempfile.TemporaryDirectory() as d:
                out = Path(d) / "round.json"
                cmd = [sys.executable, "-m", "benchmarks.round_speed", *flags, "--out", str(out)]
                subprocess.run(cmd, cwd=code, capture_output=True, text=True, check=True)
                rows = json.loads(out.read_text())["rows"]
            load = os.getloadavg()[0]
            runs[label].append({"load": load, "rows": rows})
            for r in rows:
                print(f"{i} {label:6} {r['strategy']} C={r['C']}: round {r['round_s']:.4f} s "
                      f"(CPU {r['round_cpu_s']:.3f} s), load {load:.1f}", flush=True)  # fmt: skip
    summary = {}
    for label, pairs in runs.items():
        for key in {(r["strategy"], r["C"]) for r in pairs[0]["rows"]}:
            got = [r for p in pairs for r in p["rows"] if (r["strategy"], r["C"]) == key]
            med = lambda k: statistics.median(r[k] for r in got)  # noqa: B023
            summary[f"{label}: {key[0]} C={key[1]}"] = {
                "round_s": med("round_s"),
                "share": med("peak_fraction"),
                "round_cpu_s": med("round_cpu_s"),
                "cpu_share": med("cpu_peak_fraction"),
                "load": statistics.median(p["load"] for p in pairs),
            }
    for key, v in sorted(summary.items(), key=lambda kv: kv[0].split(": ")[::-1]):
        print(f"{key:24} round {v['round_s']:.4f} s ({100 * v['share']:.1f}% of peak), CPU "
              f"{v['round_cpu_s']:.3f} s ({100 * v['cpu_share']:.1f}%)")  # fmt: skip
    return {"compare": summary, "pairs": runs}


def fastest(result: dict, cohorts: list[int]) -> None:
    """The strategy that won most cohort sizes (ties: vmap), recorded in the result."""
    wins: dict[str, int] = {}
    for c in cohorts:
        ok = [r for r in result["rows"] if r["C"] == c and "round_s" in r]
        if ok:
            best = min(ok, key=lambda r: r["round_s"])["strategy"]
            wins[best] = wins.get(best, 0) + 1
    if wins:
        result["fastest"] = max(wins, key=lambda s: (wins[s], s == "vmap"))
        result["wins"] = wins
        print(f"\nfastest: {result['fastest']} (cohort sizes won: {wins})")


def run(args) -> dict:
    cohorts = [int(c) for c in args.cohorts.split(",") if c]
    strategies = [s for s in args.strategies.split(",") if s]
    device = harness.device_info()
    out_path = args.out or harness.default_out(f"round_{device['backend']}")
    result = {"command": harness.command("round_speed"), "device": device, "config": vars(args)}
    result.update(rows=[], inputs=[])
    start = time.perf_counter()
    image = tuple(int(v) for v in args.image.split("x")) if args.image else None
    st = harness.build(
        args.size, steps=args.steps, batch=args.batch, dtypes=(args.dtype,), image_hw=image,
        text_len=args.text_len, answers=args.answers,
    )  # fmt: skip
    result["setup_s"] = time.perf_counter() - start
    n_peak = args.peak_size or (2048 if device["backend"] == "cpu" else 8192)
    peak = result["peak"] = harness.matmul_peak(harness.DTYPES[args.dtype], n_peak)
    result["model"] = {
        "size": args.size, "image_hw": st.image_hw, "text_len": st.text_len,
        "answers": st.answers, "steps": st.steps, "batch": st.batch, "dtype": args.dtype,
        **st.parameter_counts(),
    }  # fmt: skip
    step_flops, result["flops_source"] = harness.step_flops(st.lower_step())
    print(
        f"# {device['backend']} {device['kind']} x{device['count']} | ViLT {args.size} "
        f"{st.image_hw[0]}x{st.image_hw[1]} L={st.text_len} A={st.answers} S={st.steps} "
        f"B={st.batch} {args.dtype} | matmul peak {peak['flops_per_s'] / 1e9:.1f} GFLOP/s "
        f"(n={n_peak})",
        flush=True,
    )
    frozen = jax.device_put(st.frozen)
    server = jax.device_put(st.server())
    loop = LoopRound(st)
    print(
        f"{'strategy':8} {'C':>4} {'compile_s':>9} {'round_s':>9} {'ex/s':>9} "
        f"{'GFLOP/rnd':>10} {'GFLOP/s':>9} {'%peak':>6} {'xla_rnd_GF':>10}",
        flush=True,
    )
    for c in cohorts:
        t_host = time.perf_counter()
        batches_host = st.batches(c, st.steps, seed=c)
        t_host = time.perf_counter() - t_host
        t_h2d = time.perf_counter()
        batches = jax.block_until_ready(jax.device_put(batches_host))
        inputs = {
            "C": c,
            "host_build_s": t_host,
            "h2d_s": time.perf_counter() - t_h2d,
            "batch_mb": sum(v.nbytes for v in batches_host.values()) / 2**20,
            "pipeline_s": None if args.no_pipeline else pipeline_time(st, c),
        }
        examples = c * st.steps * st.batch
        for strategy in strategies:
            row = {"strategy": strategy, "C": c, "examples": examples}
            try:
                row.update(time_strategy(strategy, st, frozen, server, c, batches, batches_host,
                                         args, loop))  # fmt: skip
                row["round_s"] = statistics.median(row["round_s_all"])
                row["round_cpu_s"] = statistics.median(row["round_cpu_s_all"])
                row["examples_per_s"] = examples / row["round_s"]
                row["model_gflop"] = step_flops * c * st.steps / 1e9
                row["gflop_per_s"] = row["model_gflop"] / row["round_s"]
                row["peak_fraction"] = row["gflop_per_s"] * 1e9 / peak["flops_per_s"]
                cpu_peak = 2 * n_peak**3 / peak["cpu_seconds"]
                row["cpu_peak_fraction"] = row["model_gflop"] * 1e9 / row["round_cpu_s"] / cpu_peak
            except Exception as e:  # e.g. out of memory at a large cohort: record and go on
                row["error"] = f"{type(e).__name__}: {str(e)[:300]}"
            result["rows"].append(row)
            if strategy == "vmap":
                inputs["round_s_vmap"] = row.get("round_s")
            harness.write_json(out_path, result)
            print_row(row)
            if "profile" in row:
                print_profile(row["profile"])
        result["inputs"].append(inputs)
        harness.write_json(out_path, result)

    print("\ninputs per round (host = numpy synthetic cohort, pipeline = cohort_batches)")
    print(f"{'C':>4} {'MB':>8} {'host_s':>8} {'pipeline_s':>10} {'h2d_s':>8} {'vmap_round_s':>12}")
    for i in result["inputs"]:
        p = "-" if i["pipeline_s"] is None else f"{i['pipeline_s']:.4f}"
        v = "-" if i.get("round_s_vmap") is None else f"{i['round_s_vmap']:.4f}"
        print(
            f"{i['C']:>4} {i['batch_mb']:>8.2f} {i['host_build_s']:>8.4f} {p:>10} "
            f"{i['h2d_s']:>8.4f} {v:>12}"
        )
    fastest(result, cohorts)
    result["total_s"] = time.perf_counter() - start
    harness.write_json(out_path, result)
    print(f"wrote {out_path}")
    return result


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if not args.compare:
        run(args)
        return
    result = {"command": harness.command("round_speed"), "device": harness.device_info()}
    result.update(args=vars(args), **compare(args, argv))
    out = args.out or harness.default_out(f"compare_{result['device']['backend']}")
    harness.write_json(out, result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
