"""Where does the time of the mid-size FedDAT round go on CPU, and how close is it to the matmul peak?

    python -m benchmarks.profile_round                      # time the round, print the share
    python -m benchmarks.profile_round --trace              # + per-op profile (jax.profiler)
    python -m benchmarks.profile_round --compare /tmp/base  # interleave with another checkout

The round is the harness's ``mid`` size (issue 15): ViLT of width 192, 4 layers, 4 heads, FFN
768, 64x64 images of 16-pixel patches, 16 text tokens, 100 answers, FedDAT, B = 2, S = 8, C = 16,
float32; the library's R = 1 round (vmap over the cohort, one call per round), inputs on device.

Share of peak = (XLA's FLOP count of ONE client step x C x S) / round time / matmul peak, where the
peak is the best of 5 runs of one 2048x2048 float32 ``jnp.dot`` on the same device. ``--trace``
adds a ``jax.profiler`` trace of 3 rounds, summed by XLA op (fusion) name and by op category.

``--compare DIR`` runs this module alternately in DIR (another checkout, with this module) and in
this checkout (``--rounds`` pairs of subprocesses, each timing ``--repeats`` rounds), so a
before/after is measured under the same machine load; it prints the medians and the load average.
``--out`` writes the measurement (or the comparison) as JSON.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax

from benchmarks import harness
from feddat_jax.fl.aggregation import MeanAggregator


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cohort", type=int, default=16)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--trace", action="store_true", help="per-op profile of 3 rounds")
    p.add_argument("--compare", default="", help="another checkout to interleave with")
    p.add_argument("--rounds", type=int, default=3, help="--compare: subprocess pairs")
    p.add_argument("--json", action="store_true", help="print one JSON line (for --compare)")
    p.add_argument("--out", default="", help="also write the result to this JSON file")
    return p.parse_args(argv)


def measure(args) -> dict:
    """Time the round, its share of the matmul peak and (``--trace``) its per-op profile."""
    st = harness.build("mid", steps=args.steps, batch=args.batch)
    c, s = args.cohort, args.steps
    private, tasks, ids = st.cohort(c)
    frozen, server = jax.device_put(st.frozen), jax.device_put(st.server())
    tasks, ids, batches = jax.device_put((tasks, ids, st.batches(c, s)))
    flops, _ = harness.step_flops(st.lower_step())
    run = harness.one_federation_round(st.algorithm, st.server_tx, MeanAggregator())
    t0 = time.perf_counter()
    compiled = run.lower(frozen, server, harness.fresh(private), tasks, ids, batches).compile()
    compile_s = time.perf_counter() - t0
    args_of = lambda: (frozen, server, harness.fresh(private), tasks, ids, batches)
    timings = harness.time_calls(compiled, args_of, args.repeats)
    peak = harness.matmul_peak(harness.DTYPES["float32"], 2048)
    round_s, round_cpu_s = statistics.median(timings.wall), statistics.median(timings.cpu)
    out = {
        "code": os.getcwd(),
        "compile_s": compile_s,
        "round_s": round_s,
        "round_s_all": timings.wall,
        "step_gflop": flops / 1e9,
        "round_gflop": flops * c * s / 1e9,
        "gflop_per_s": flops * c * s / round_s / 1e9,
        "peak_gflop_per_s": peak["flops_per_s"] / 1e9,
        "share": flops * c * s / round_s / peak["flops_per_s"],
        # the same ratio in CPU seconds (all threads), robust to other processes' load
        "round_cpu_s": round_cpu_s,
        "cpu_share": (flops * c * s / round_cpu_s) / (2 * 2048**3 / peak["cpu_seconds"]),
        "load": os.getloadavg(),
    }
    if args.trace:
        once = lambda: jax.block_until_ready(compiled(*args_of()))
        events = trace_events(once, 3)
        out["profile"] = categorize(events, parse_hlo(compiled.as_text()), round_s)
    return out


def trace_events(run_once, rounds: int) -> dict[str, float]:
    """Seconds per round of every XLA:CPU op event (summed over the executor's threads)."""
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d):
            for _ in range(rounds):
                run_once()
        path = next(
            os.path.join(root, f) for root, _, fs in os.walk(d) for f in fs if f.endswith(".pb")
        )
        data = jax.profiler.ProfileData.from_file(path)
    by_name: dict[str, float] = collections.defaultdict(float)
    for plane in data.planes:
        for line in plane.lines:
            if "XLAEigen" not in line.name:  # the executor's worker threads
                continue
            for ev in line.events:
                by_name[ev.name] += ev.duration_ns / 1e9 / rounds
    return dict(by_name)


_INSTR = re.compile(r"^\s*(?:ROOT )?%(\S+) = .*? ([a-z][\w-]*)\(")


def parse_hlo(text: str) -> dict[str, dict]:
    """Per instruction of the optimized HLO: its opcode, JAX op_name and the ops it fuses."""
    comps: dict[str, list[str]] = {}
    comp_names: dict[str, list[str]] = {}  # the JAX op_names of a computation's instructions
    instrs: dict[str, dict] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"^(?:ENTRY )?%(\S+) .*\{$", line)
        if head:
            current = head.group(1)
            comps[current], comp_names[current] = [], []
            continue
        m = _INSTR.match(line)
        if not m or current is None:
            continue
        name, op = m.groups()
        comps[current].append(op)
        calls = re.search(r"calls=%([\w.\-]+)", line)
        op_name = re.search(r'op_name="([^"]*)"', line)
        instrs[name] = {
            "op": op,
            "calls": calls.group(1) if calls else None,
            "op_name": op_name.group(1) if op_name else "",
            "ynn": "__ynn_fusion" in line,
        }
        comp_names[current].append(instrs[name]["op_name"])
    for ins in instrs.values():
        ins["fused_ops"] = set(comps.get(ins["calls"] or "", ()))
        ins["fused_names"] = " ".join(comp_names.get(ins["calls"] or "", ()))
    return instrs


def category(ins: dict) -> str:
    """A coarse label: matmul (fwd/bwd), attention softmax, layer norm, optimizer, ..."""
    ops, name = ins["fused_ops"] | {ins["op"]}, ins["op_name"]
    inner = ins["fused_names"]  # what the fused instructions were in the JAX program
    bwd = "transpose(" in name
    if ins["ynn"] or "dot" in ops or "convolution" in ops:
        what = " attention core" if "BNTS" in name or "BTNH,BSNH" in name else ""
        return "matmul" + what + (" bwd" if bwd else " fwd")
    if "/erf" in name or "/erf" in inner:  # erf or erfc: the exact GELU and its derivative
        return "gelu" + (" bwd" if bwd else "")
    for key, label in (
        ("dot_product_attention", "attention (softmax, mask)"),
        ("LayerNorm", "layer norm"),
        ("layernorm", "layer norm"),
        ("gather", "gather"),
        ("scatter", "scatter"),
    ):
        if key in name or key in ops or key in inner:
            return label + (" bwd" if bwd else "")
    if ins["op"] in ("copy", "transpose") or ops <= {"copy", "transpose", "bitcast", "parameter"}:
        return "copy / transpose"
    if "select" in ops and "while" in name and "closed_call" not in name:
        return "step mask (where active)"
    if ins["op"] in ("dynamic-slice", "dynamic-update-slice", "slice", "concatenate"):
        return "slice / update"
    return "other elementwise" + (" bwd" if bwd else "")


def categorize(events: dict[str, float], instrs: dict[str, dict], round_s: float) -> dict:
    by_cat: dict[str, float] = collections.defaultdict(float)
    unknown = 0.0
    for name, seconds in events.items():
        ins = instrs.get(name)
        if ins is None:
            unknown += seconds
            continue
        by_cat[category(ins)] += seconds
    op_seconds = sum(by_cat.values())
    by_cat["(not an HLO op)"] = unknown  # executor spans that contain the ops: not summed
    others = sorted(((s, n) for n, s in events.items() if n not in instrs), reverse=True)[:8]
    top = sorted(
        ((s, n, instrs[n]["op_name"][-90:]) for n, s in events.items() if n in instrs),
        reverse=True,
    )[:12]
    top_other = sorted(
        (
            (s, n, instrs[n]["op_name"][-90:] + " " + ",".join(sorted(instrs[n]["fused_ops"]))[:60])
            for n, s in events.items()
            if n in instrs and not category(instrs[n]).startswith("matmul")
        ),
        reverse=True,
    )[:25]
    return {
        "thread_seconds_per_round": op_seconds,
        "round_s": round_s,
        "categories": dict(sorted(by_cat.items(), key=lambda kv: -kv[1])),
        "non_hlo_events": {n: 1000 * s for s, n in others},
        "top_ops": [{"ms": 1000 * s, "op": n, "jax": j} for s, n, j in top + top_other],
    }


def compare(args) -> dict:
    """Alternate processes in the other checkout and in this one: each measures with its own
    ``feddat_jax`` and ``benchmarks`` (the first entry of ``sys.path`` is its folder)."""
    here, there = str(harness.ROOT), os.path.abspath(args.compare)
    results = {"before": [], "after": []}
    for i in range(args.rounds):
        for label, code in (("before", there), ("after", here)):
            cmd = [sys.executable, "-m", "benchmarks.profile_round", "--json"]
            cmd += ["--repeats", str(args.repeats), "--cohort", str(args.cohort)]
            cmd += ["--steps", str(args.steps), "--batch", str(args.batch)]
            line = subprocess.run(cmd, cwd=code, capture_output=True, text=True, check=True)
            r = json.loads(line.stdout.strip().splitlines()[-1])
            results[label].append(r)
            print(
                f"{i} {label:6} round {r['round_s']:.4f}s (cpu {r['round_cpu_s']:.3f}s) share "
                f"{100 * r['share']:.1f}% (cpu-time share {100 * r['cpu_share']:.1f}%) "
                f"(step {r['step_gflop']:.3f} GFLOP, peak {r['peak_gflop_per_s']:.0f} GFLOP/s, "
                f"load {r['load'][0]:.2f})",
                flush=True,
            )
    summary = {}
    for label, rows in results.items():
        summary[label] = {
            "round_s": statistics.median(r["round_s"] for r in rows),
            "share": statistics.median(r["share"] for r in rows),
            "round_cpu_s": statistics.median(r["round_cpu_s"] for r in rows),
            "cpu_share": statistics.median(r["cpu_share"] for r in rows),
            "step_gflop": rows[0]["step_gflop"],
            "peak_gflop_per_s": statistics.median(r["peak_gflop_per_s"] for r in rows),
            "load": statistics.median(r["load"][0] for r in rows),
        }
    b, a = summary["before"], summary["after"]
    print(json.dumps(summary, indent=1))
    print(
        f"before {b['round_s']:.4f}s ({100 * b['share']:.1f}% of peak) -> after "
        f"{a['round_s']:.4f}s ({100 * a['share']:.1f}%); speedup "
        f"{b['round_s'] / a['round_s']:.2f}x; same-FLOP share "
        f"{100 * b['share'] * b['round_s'] / a['round_s']:.1f}% (before's FLOP count)\n"
        f"CPU time: before {b['round_cpu_s']:.3f}s ({100 * b['cpu_share']:.1f}%) -> after "
        f"{a['round_cpu_s']:.3f}s ({100 * a['cpu_share']:.1f}%); "
        f"{b['round_cpu_s'] / a['round_cpu_s']:.2f}x"
    )
    return {"compare": summary, "pairs": results}


def main(argv=None):
    args = parse_args(argv)
    if args.compare:
        result = compare(args)
        if args.out:
            harness.write_json(args.out, {"command": harness.command("profile_round"), "device": harness.device_info(),
                 "args": vars(args), **result})
        return
    out = measure(args)
    if args.out:
        harness.write_json(args.out, {"command": harness.command("profile_round"), "device": harness.device_info(),
                 "args": vars(args), "measure": out})
    if args.json:
        print(json.dumps(out))
        return
    print(
        f"round {out['round_s']:.4f}s (median of {args.repeats}; compile {out['compile_s']:.1f}s) "
        f"| {out['round_gflop']:.2f} GFLOP/round = {out['step_gflop']:.3f}/step x C x S | "
        f"{out['gflop_per_s']:.1f} GFLOP/s of {out['peak_gflop_per_s']:.1f} peak = "
        f"{100 * out['share']:.1f}% | CPU time {out['round_cpu_s']:.3f}s, "
        f"{100 * out['cpu_share']:.1f}% | load {out['load'][0]:.2f}"
    )
    prof = out.get("profile")
    if prof:
        total = prof["thread_seconds_per_round"]
        print(
            f"\nthread time per round {total:.3f}s (executor threads; wall {prof['round_s']:.3f}s)"
        )
        for cat, sec in prof["categories"].items():
            print(f"{1000 * sec:9.1f} ms {100 * sec / total:5.1f}%  {cat}")
        print("\ntop ops")
        for row in prof["top_ops"]:
            print(f"{row['ms']:9.2f} ms  {row['op']:24} {row['jax']}")


if __name__ == "__main__":
    main()
