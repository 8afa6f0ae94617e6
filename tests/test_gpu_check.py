"""benchmarks.gpu_check runs on a bare accelerator image: its smoke size completes on CPU with
every package the GPU machine lacks blocked, and writes its rows and memory table."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ABSENT_ON_GPU_IMAGE = (
    "ml_collections",
    "tensorflow_datasets",
    "array_record",
    "dp_accounting",
    "tensorboardX",
    "tensorflow",
)
RUNNER = f"""
import runpy, sys
for name in {ABSENT_ON_GPU_IMAGE!r}:
    sys.modules[name] = None  # importing it now raises ImportError
sys.argv = ["gpu_check", *sys.argv[1:]]
runpy.run_module("benchmarks.gpu_check", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow  # compiles a few tiny-ViLT programs (~1 min on 2 CPU cores)
def test_gpu_check_smoke_runs_without_the_absent_packages(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", RUNNER]
        + ["--size", "tiny", "--cohorts", "1,2", "--dtypes", "float32", "--steps", "4"]
        + ["--segment-steps", "2", "--memory-cohort", "2", "--memory-steps", "4,16"]
        + ["--repeats", "1", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = {(r["mode"], r["C"]): r for r in result["rows"]}
    assert set(rows) == {("vmap", 2), ("loop", 2), ("vmap", 1)}, result["rows"]
    for row in rows.values():
        assert "error" not in row and row["round_s"] > 0 and row["flop_per_s"] > 0
        assert row["flops_source"] == "compiled"
    assert rows[("loop", 2)]["vmap_speedup"] > 0
    memory = {(m["S"], m["mode"]): m for m in result["memory"]}
    assert all("error" not in m for m in memory.values()), result["memory"]
    # in segments S = 16 keeps two segments of inputs on device, as S = 4; in one call: 4x
    seg4, seg16 = memory[(4, "segments")], memory[(16, "segments")]
    one4, one16 = memory[(4, "one call")], memory[(16, "one call")]
    assert seg16["input_bytes_on_device"] == seg4["input_bytes_on_device"]
    assert one16["input_bytes_on_device"] == 4 * one4["input_bytes_on_device"]
    assert seg16["peak_mem_est"] < one16["peak_mem_est"]
