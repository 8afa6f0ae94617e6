"""Where the time of the mid-size FedDAT round goes on CPU, and how close it is to the matmul peak.

    python benchmarks/profile_round.py                      # time the round, print the share
    python benchmarks/profile_round.py --trace              # + per-op profile (jax.profiler)
    python benchmarks/profile_round.py --compare /tmp/base  # interleave with another checkout

The round is the issue-15 mid-size one: ViLT of width 192, 4 layers, 4 heads, FFN 768, 64x64
images of 16-pixel patches, 16 text tokens, 100 answers, FedDAT, B = 2, S = 8, C = 16, float32;
``make_round_fn`` (vmap over the cohort, one call per round), inputs on device.

Share of peak = (XLA's FLOP count of ONE client step x C x S) / round time / matmul peak, where the
peak is the best of 5 runs of one 2048x2048 float32 ``jnp.dot`` on the same device. ``--trace``
adds a ``jax.profiler`` trace of 3 rounds, summed by XLA op (fusion) name and by op category.

``--compare DIR`` runs this script alternately against DIR's ``feddat_jax`` and this checkout's
(``--rounds`` pairs of subprocesses, each timing ``--repeats`` rounds), so a before/after is
measured under the same machine load; it prints the medians and the load average.
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

HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--code", default=os.path.dirname(HERE), help="checkout whose feddat_jax runs")
    p.add_argument("--cohort", type=int, default=16)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--trace", action="store_true", help="per-op profile of 3 rounds")
    p.add_argument("--compare", default="", help="another checkout to interleave with")
    p.add_argument("--rounds", type=int, default=3, help="--compare: subprocess pairs")
    p.add_argument("--json", action="store_true", help="print one JSON line (for --compare)")
    return p.parse_args(argv)


def measure(args) -> dict:
    sys.path.insert(0, args.code)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from feddat_jax import methods
    from feddat_jax.fl import local_optim
    from feddat_jax.fl.aggregation import MeanAggregator
    from feddat_jax.fl.round import client_context

    try:  # code before the replica axis was always on
        from feddat_jax.fl.round import make_round_fn
    except ImportError:
        from round_timing import one_federation_round as make_round_fn
    from feddat_jax.fl.server_optimizers import make_server_optimizer
    from feddat_jax.fl.state import ClientTasks, init_server_state
    from feddat_jax.models.inputs import to_model_inputs
    from feddat_jax.models.vilt import ViltConfig, ViltVQA

    cfg = ViltConfig(
        hidden_size=192,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=768,
        vocab_size=99,
        max_position_embeddings=16,
        patch_size=16,
        image_size=64,
    )
    C, S, B, L, A, HW = args.cohort, args.steps, args.batch, 16, 100, (64, 64)
    method = methods.get_method("feddat")
    model = ViltVQA(cfg, methods.peft_config(method), A, jnp.float32)
    rng = np.random.default_rng(0)
    targets = np.zeros((C, S, B, A), np.float32)
    np.put_along_axis(targets, rng.integers(0, A, (C, S, B, 1)), 1.0, axis=-1)
    batches = {
        "input_ids": rng.integers(1, 99, (C, S, B, L), dtype=np.int32),
        "attention_mask": np.ones((C, S, B, L), np.int32),
        "image": rng.integers(0, 256, (C, S, B, *HW, 3), dtype=np.uint8),
        "pixel_mask": np.ones((C, S, B, *HW), np.uint8),
        "targets": targets,
        "example_mask": np.ones((C, S, B), np.float32),
    }
    one = jax.tree.map(lambda x: x[0, 0], batches)
    params = jax.jit(lambda r, b: model.init(r, to_model_inputs(b), adapter_mode="none"))(
        jax.random.key(0), one
    )["params"]
    frozen, shared, private = methods.split_params(method, params)
    algorithm = methods.build_algorithm(
        method, methods.make_forward(model, to_model_inputs), local_optim.LocalOptimConfig()
    )
    server_tx = make_server_optimizer(method.server_optimizer)
    server = init_server_state(shared, server_tx, jax.random.key(1))
    private_one = algorithm.init_private(shared, private)
    tasks = ClientTasks(
        answer_mask=jnp.ones((C, A), jnp.float32),
        task_kind=jnp.zeros((C,), jnp.int32),
        num_examples=jnp.full((C,), S * B, jnp.int32),
    )
    ids = jnp.arange(C, dtype=jnp.int32)
    batches = jax.device_put(batches)

    def fresh_private():
        return jax.tree.map(lambda x: jnp.array(np.repeat(np.asarray(x)[None], C, 0)), private_one)

    # XLA's FLOPs of one client step (no loops inside, so the count is complete)
    def step(frozen, gshared, tasks_k, local, batch, key):
        ctx = client_context(frozen, gshared, tasks_k, B, jnp.zeros((), jnp.int32))
        return algorithm.local_step(ctx, local, batch, key)

    tasks0 = jax.tree.map(lambda x: x[0], tasks)
    ctx0 = client_context(frozen, shared, tasks0, B, jnp.zeros((), jnp.int32))
    local0 = algorithm.begin_round(ctx0, private_one)
    step_c = jax.jit(step).lower(frozen, shared, tasks0, local0, one, jax.random.key(0)).compile()
    ca = step_c.cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    step_flops = float(ca["flops"])

    run = make_round_fn(algorithm, server_tx, MeanAggregator())
    t0 = time.perf_counter()
    compiled = run.lower(frozen, server, fresh_private(), tasks, ids, batches).compile()
    compile_s = time.perf_counter() - t0

    cpu_times = []

    def once():
        p = fresh_private()
        jax.block_until_ready(p)
        t, c = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(frozen, server, p, tasks, ids, batches))
        cpu_times.append(time.process_time() - c)
        return time.perf_counter() - t

    once()
    cpu_times.clear()
    times = [once() for _ in range(args.repeats)]

    n = 2048
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    dot(a, a).block_until_ready()
    best = best_cpu = float("inf")
    for _ in range(5):
        t, c = time.perf_counter(), time.process_time()
        dot(a, a).block_until_ready()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    peak = 2 * n**3 / best
    round_s = statistics.median(times)
    round_cpu_s = statistics.median(cpu_times)
    out = {
        "code": args.code,
        "compile_s": compile_s,
        "round_s": round_s,
        "round_s_all": times,
        "step_gflop": step_flops / 1e9,
        "round_gflop": step_flops * C * S / 1e9,
        "gflop_per_s": step_flops * C * S / round_s / 1e9,
        "peak_gflop_per_s": peak / 1e9,
        "share": step_flops * C * S / round_s / peak,
        # the same ratio in CPU seconds (all threads), robust to other processes' load
        "round_cpu_s": round_cpu_s,
        "cpu_share": (step_flops * C * S / round_cpu_s) / (2 * n**3 / best_cpu),
        "load": os.getloadavg(),
    }
    if args.trace:
        events = trace_events(once, 3)
        out["profile"] = categorize(events, parse_hlo(compiled.as_text()), round_s)
    return out


def trace_events(run_once, rounds: int) -> dict[str, float]:
    """Seconds per round of every XLA:CPU op event (summed over the executor's threads)."""
    import jax

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


def compare(args) -> None:
    here, there = os.path.dirname(HERE), os.path.abspath(args.compare)
    results = {"before": [], "after": []}
    for i in range(args.rounds):
        for label, code in (("before", there), ("after", here)):
            cmd = [sys.executable, os.path.abspath(__file__), "--json", "--code", code]
            cmd += ["--repeats", str(args.repeats), "--cohort", str(args.cohort)]
            cmd += ["--steps", str(args.steps), "--batch", str(args.batch)]
            env = {**os.environ, "PYTHONPATH": code}
            line = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
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


def main(argv=None):
    args = parse_args(argv)
    if args.compare:
        compare(args)
        return
    out = measure(args)
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
