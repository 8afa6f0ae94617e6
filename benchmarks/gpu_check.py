"""The GPU check: the FedDAT round of ViLT-B/32 (random weights) on one accelerator, vmapped
over the cohort against the sequential per-client loop, in float32 and bf16, in segments.

    bash benchmarks/gpu_check.sh                          # the real thing (ViLT-B/32, < 8 min)
    python -m benchmarks.gpu_check --size tiny            # the same module shrunk (CPU smoke)

Rows (most important first; a time budget skips what does not fit and says so):

* ``vmap``: ``fl.segments.SegmentedRound`` over the whole cohort C, S local steps in segments of
  K (``segment_steps``); ``loop``: the same round's C = 1 programs run for one client after
  another (jitting one client's local epoch and looping over clients);
* compile time apart (programs are compiled ahead of time, several at once in threads, so a
  row's ``compile_s`` is wall time under that concurrency);
* model FLOPs = XLA's cost analysis of ONE compiled client step (C = 1, no loop inside, so the
  count is complete) x C x S; achieved FLOP/s = that / round time; MFU against the card's
  datasheet peak of the compute dtype (printed; ``--peak-tflops`` overrides) and the fraction
  of the measured matmul peak (one big ``jnp.dot`` in that dtype);
* peak device memory (estimated): the largest sum of the live device arrays when a segment is
  handed to the round (``jax.live_arrays``: parameters, states, that segment's inputs and the
  previous one's) plus the largest program's XLA temp and output buffers
  (``compiled.memory_analysis()``); plus, where the backend reports it, the process's
  ``peak_bytes_in_use`` so far (a high-water mark of the whole run);
* the memory table: peak device memory against S at one cohort size, in segments (flat) and in
  one call (grows with S: the inputs are [C, S, B, ...]).

Writes ``gpu_check.json`` (rewritten after every row, so a time limit keeps what was measured)
into ``--out`` (default ``$OUT`` or ``benchmarks/``). Imports nothing beyond jax, flax, optax,
numpy and the round's own modules (no ml_collections, tensorflow-datasets, array_record,
dp_accounting or tensorboardX), so it runs on a bare accelerator image.
"""

from __future__ import annotations

import argparse
import os

from benchmarks import harness
from benchmarks.gpu_check_rows import Bench, datasheet_peak

DEFAULTS = {  # per harness size: cohorts, S, K, the memory table's C and S values
    "base": dict(cohorts="1,8,32,64", steps=8, segment_steps=4, memory_cohort=32,
                 memory_steps="8,32,128"),
    "mid": dict(cohorts="1,8,16", steps=8, segment_steps=4, memory_cohort=8,
                memory_steps="8,32,128"),
    "tiny": dict(cohorts="1,2,4", steps=4, segment_steps=2, memory_cohort=2,
                 memory_steps="4,8,16"),
}  # fmt: skip


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=tuple(DEFAULTS), default="base")
    p.add_argument("--cohorts", default="", help="comma-separated C (default per size)")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--steps", type=int, default=0, help="S local steps per round")
    p.add_argument("--segment-steps", type=int, default=0, help="K steps per call")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--memory-cohort", type=int, default=0, help="C of the memory table")
    p.add_argument("--memory-steps", default="", help="S values of the memory table")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=400.0, help="skip rows past this")
    p.add_argument("--compile-workers", type=int, default=8)
    p.add_argument(
        "--quiet-wait-s", type=float, default=200.0, help="wait for all compiles until then"
    )
    p.add_argument("--peak-tflops", default="", help="bfloat16=..,float32=.. (datasheet)")
    p.add_argument("--out", default=os.environ.get("OUT", ""), help="folder for gpu_check.json")
    args = p.parse_args(argv)
    d, shape = DEFAULTS[args.size], harness.SIZES[args.size]
    args.image, args.text_len, args.answers = shape.image_hw, shape.text_len, shape.answers
    args.cohorts = [int(c) for c in (args.cohorts or d["cohorts"]).split(",")]
    args.steps = args.steps or d["steps"]
    args.segment_steps = args.segment_steps or d["segment_steps"]
    args.memory_cohort = args.memory_cohort or d["memory_cohort"]
    args.memory_steps = [int(s) for s in (args.memory_steps or d["memory_steps"]).split(",")]
    args.dtypes = [t for t in args.dtypes.split(",") if t]
    return args


# ------------------------------------------------------------------------------------- main
class Units:
    """TFLOP and GB for ViLT-B; GFLOP and MB for the small CPU sizes."""

    def __init__(self, size: str):
        base = size == "base"
        self.flop, self.flops = ("T", 1e12) if base else ("G", 1e9)
        self.mem, self.bytes = ("GB", 2**30) if base else ("MB", 2**20)

    def b(self, x) -> str:
        return "-" if x is None else f"{x / self.bytes:.2f}"

    def header(self) -> str:
        f, m = self.flop, self.mem
        return (
            f"{'dtype':9} {'mode':5} {'C':>3} {'compile_s':>9} {'round_s':>9} {'step_ms':>8} "
            f"{f + 'FLOP/rnd':>10} {f + 'FLOP/s':>8} {'MFU%':>6} {'%mm_peak':>8} "
            f"{'mem_' + m:>7} {'dev_peak_' + m:>11} {'vmap_x':>6}"
        )


def recorded(bench: Bench, rows: list, row: dict, measure, label: str) -> bool:
    """Fill ``row`` by ``measure()``, add it to ``rows`` and save the JSON. An exception (e.g.
    out of memory at a large cohort or S) is recorded as the row's error and printed: the check
    goes on with the next row. False when the row failed."""
    try:
        measure()
    except Exception as e:  # recorded in the row, not raised: the next rows still run
        row["error"] = f"{type(e).__name__}: {str(e)[:400]}"
    rows.append(row)
    bench.save()
    if "error" in row:
        print(f"{label} ERROR {row['error'][:160]}", flush=True)
        return False
    return True


def round_row(bench: Bench, key: tuple[str, str, int], units: Units) -> None:
    """Measure one (dtype, mode, C) row, add it to the JSON and print it."""
    args, res = bench.args, bench.result
    dtype, mode, c = key
    if bench.elapsed() > args.budget_s:
        res["skipped"].append(f"{dtype} {mode} C={c}")
        return
    row = {"dtype": dtype, "mode": mode, "C": c, "S": args.steps, "K": args.segment_steps}

    def measure() -> None:
        row.update(bench.round_row(dtype, c, mode))
        flops, source = bench.step_flops(dtype)
        peaks = res["peaks"][dtype]
        row["step_gflop"], row["flops_source"] = flops / 1e9, source
        row["round_flop"] = flops * c * args.steps
        row["flop_per_s"] = row["round_flop"] / row["round_s"]
        row["mfu"] = row["flop_per_s"] / peaks["datasheet"] if peaks["datasheet"] else None
        row["matmul_peak_fraction"] = row["flop_per_s"] / peaks["measured"]
        row["device_peak_so_far"] = harness.device_peak_bytes()
        row["compiles_running"] = bench.compiling()
        vmap = [
            r
            for r in res["rows"]
            if (r["dtype"], r["mode"], r["C"]) == (dtype, "vmap", c) and "round_s" in r
        ]
        if mode == "loop" and vmap:  # how much faster the vmapped round of this cohort was
            row["vmap_speedup"] = row["round_s"] / vmap[0]["round_s"]

    if not recorded(bench, res["rows"], row, measure, f"{dtype:9} {mode:5} {c:>3}"):
        return
    mfu = "-" if row["mfu"] is None else f"{100 * row['mfu']:.1f}"
    sp = row.get("vmap_speedup")
    print(
        f"{dtype:9} {mode:5} {c:>3} {row['compile_s']:>9.1f} {row['round_s']:>9.3f} "
        f"{1000 * row['round_s'] / args.steps:>8.1f} {row['round_flop'] / units.flops:>10.2f} "
        f"{row['flop_per_s'] / units.flops:>8.1f} {mfu:>6} "
        f"{100 * row['matmul_peak_fraction']:>8.1f} {units.b(row['peak_mem_est']):>7} "
        f"{units.b(row['device_peak_so_far']):>11} {'-' if sp is None else f'{sp:.1f}x':>6}",
        flush=True,
    )


def memory_table(bench: Bench, dtype: str, units: Units) -> None:
    """Peak device memory against S at one cohort size: in segments (flat) and in one call."""
    args, res = bench.args, bench.result
    m = units.mem
    print(
        f"\n# peak device memory against S ({dtype}, C={args.memory_cohort}, B={args.batch}): "
        f"in segments of K={args.segment_steps} vs one call",
        flush=True,
    )
    print(
        f"{'S':>5} {'mode':9} {'inputs_' + m:>9} {'peak_' + m:>8} {'round_s':>8} {'compile_s':>9}"
    )
    for s in args.memory_steps:
        for segmented in (True, False):
            mode = "segments" if segmented else "one call"
            if bench.elapsed() > args.budget_s:
                res["skipped"].append(f"memory S={s} {mode}")
                continue
            row = {"S": s, "mode": mode, "C": args.memory_cohort, "dtype": dtype}
            measure = lambda: row.update(
                bench.memory_row(dtype, args.memory_cohort, s, segmented)  # noqa: B023
            )
            if not recorded(bench, res["memory"], row, measure, f"{s:>5} {mode:9}"):
                continue
            print(
                f"{s:>5} {mode:9} {units.b(row['input_bytes_on_device']):>9} "
                f"{units.b(row['peak_mem_est']):>8} {row['round_s']:>8.2f} "
                f"{row['compile_s']:>9.1f}",
                flush=True,
            )
    print(flush=True)


def main(argv=None) -> dict:
    args = parse_args(argv)
    bench = Bench(args)
    res, dev = bench.result, bench.result["device"]
    print(
        f"# {dev['backend']} {dev['kind']} x{dev['count']} | jax {dev['jax']} | ViLT {args.size} "
        f"{args.image[0]}x{args.image[1]} L={args.text_len} A={args.answers} B={args.batch} "
        f"S={args.steps} K={args.segment_steps} (segment_steps) | FedDAT",
        flush=True,
    )
    bench.build()
    res["setup_s"] = bench.elapsed()

    # Everything the rows need, lowered in priority order and compiled concurrently.
    big = sorted((c for c in args.cohorts if c != 1), key=lambda c: (c != 8, -c))
    for dtype in args.dtypes:
        bench.submit_step(dtype)
        for c in [1, *big]:  # C = 1 also serves the loop rows
            bench.submit_round(dtype, c, args.segment_steps, args.segment_steps)
    mem_dtype = args.dtypes[0]
    for s in args.memory_steps:
        bench.submit_round(mem_dtype, args.memory_cohort, s, 0)

    n_peak = 8192 if dev["backend"] != "cpu" else 1024
    res["peaks"] = {}
    for dtype in args.dtypes:
        measured = harness.matmul_peak(harness.DTYPES[dtype], n_peak)["flops_per_s"]
        sheet, source = datasheet_peak(dev["kind"], dtype, args.peak_tflops)
        res["peaks"][dtype] = {"measured": measured, "n": n_peak, "datasheet": sheet}
        res["peaks"][dtype]["source"] = source
        print(
            f"# {dtype} peak: measured {measured / 1e12:.2f} TFLOP/s ({n_peak}^2 dot); MFU "
            f"against {'-' if sheet is None else f'{sheet / 1e12:.1f}'} TFLOP/s ({source})",
            flush=True,
        )
    bench.wait_for_compiles(args.quiet_wait_s)
    print(
        f"# compiled {res['compiled_before_timing']} programs before timing "
        f"({res['compile_wait_end_s']:.0f} s into the run)",
        flush=True,
    )
    bench.save()

    plan = []  # (dtype, mode, C) in priority order
    for dtype in args.dtypes:
        for c in big:
            plan += [(dtype, "vmap", c), (dtype, "loop", c)]
        plan += [(dtype, "vmap", 1)] if 1 in args.cohorts else []
    # both dtypes' headline rows (C = 8, then the largest C) first, then the memory table, then
    # the rest; a row that would start past --budget-s is skipped (and listed)
    first = [p for p in plan if p[2] in (8, max(args.cohorts))]
    units = Units(args.size)
    print(units.header(), flush=True)
    for key in first:
        round_row(bench, key, units)
    memory_table(bench, mem_dtype, units)
    print(units.header(), flush=True)
    for key in [p for p in plan if p not in first]:
        round_row(bench, key, units)
    if res["skipped"]:
        print("\nskipped (past --budget-s): " + "; ".join(res["skipped"]))
    bench.pool.shutdown(wait=False, cancel_futures=True)
    res["total_s"] = bench.elapsed()
    bench.save()
    print(f"\nwrote {bench.out_path} ({res['total_s']:.0f} s)", flush=True)
    return res


if __name__ == "__main__":
    main()
