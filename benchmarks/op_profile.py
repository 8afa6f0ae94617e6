"""Where a compiled round's CPU time goes: a ``jax.profiler`` trace of a few calls, summed by
XLA op (fusion) name, joined with the optimized HLO's ``op_name`` metadata into categories
(matmul forward / backward / attention core, GELU, layer norm, copies, ...). ``round_speed
--trace`` uses it."""

from __future__ import annotations

import collections
import os
import re
import tempfile
from collections.abc import Callable

import jax


def profile(compiled, run_once: Callable[[], object], round_s: float, rounds: int = 3) -> dict:
    """The per-op profile of ``rounds`` calls of ``run_once`` (calls of ``compiled``)."""
    events = trace_events(run_once, rounds)
    return categorize(events, parse_hlo(compiled.as_text()), round_s)


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
