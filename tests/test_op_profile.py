"""benchmarks.op_profile: the optimized HLO's instructions joined with profiler events into
categories, on a hand-written HLO module (no tracing, no compiling)."""

import pytest

from benchmarks import op_profile

HLO = """HloModule jit_run

%fused_gelu (p: f32[4]) -> f32[4] {
  %p = f32[4]{0} parameter(0)
  ROOT %e = f32[4]{0} erf(f32[4]{0} %p), metadata={op_name="jit(run)/vilt/intermediate/erf"}
}

ENTRY %main (a: f32[4,4], b: f32[4,4]) -> f32[4,4] {
  %a = f32[4,4]{1,0} parameter(0)
  %b = f32[4,4]{1,0} parameter(1)
  %dot.1 = f32[4,4]{1,0} dot(f32[4,4]{1,0} %a, f32[4,4]{1,0} %b), metadata={op_name="jit(run)/transpose(jvp(ViltVQA))/vilt/dot_general"}
  %gelu_fusion = f32[4]{0} fusion(f32[4,4]{1,0} %dot.1), kind=kLoop, calls=%fused_gelu
  ROOT %copy.2 = f32[4,4]{1,0} copy(f32[4,4]{1,0} %dot.1)
}
"""


def test_hlo_instructions_and_their_categories():
    instrs = op_profile.parse_hlo(HLO)
    assert instrs["dot.1"]["op"] == "dot" and instrs["gelu_fusion"]["fused_ops"] == {"parameter", "erf"}
    assert op_profile.category(instrs["dot.1"]) == "matmul bwd"  # a transpose( in its op_name
    assert op_profile.category(instrs["gelu_fusion"]) == "gelu"  # by what it fuses
    assert op_profile.category(instrs["copy.2"]) == "copy / transpose"


def test_events_summed_by_category_and_unknown_events_apart():
    instrs = op_profile.parse_hlo(HLO)
    events = {"dot.1": 0.3, "gelu_fusion": 0.1, "copy.2": 0.1, "ThreadpoolListener": 2.0}
    prof = op_profile.categorize(events, instrs, round_s=0.25)
    assert prof["thread_seconds_per_round"] == pytest.approx(0.5)
    assert prof["categories"]["matmul bwd"] == pytest.approx(0.3)
    assert prof["categories"]["(not an HLO op)"] == pytest.approx(2.0)
    assert list(prof["categories"])[0] == "(not an HLO op)"  # sorted by time
