"""The rows of ``gpu_check``: the harness's cohort in several dtypes, its round in segments
(``fl.segments.SegmentedRound``) compiled ahead of time (several programs at once, in threads),
and the per-row measurements of time and device memory. See ``gpu_check`` for what the rows mean."""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax

from benchmarks import harness
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.segments import SegmentedRound

# Dense datasheet peaks in TFLOP/s (H200 / H100 SXM: bf16 989.5, fp32 66.9 without TF32; XLA may
# run float32 matmuls as TF32 (494.7) by default, so a float32 MFU above 100 % means TF32).
DATASHEET_TFLOPS = {
    "H200": {"bfloat16": 989.5, "float32": 66.9},
    "H100": {"bfloat16": 989.5, "float32": 66.9},
    "A100": {"bfloat16": 312.0, "float32": 19.5},
}
DISTINCT_STEPS = 8  # random steps drawn per segment, then repeated (values do not change a timing)


def one_replica(tree):
    """Values (or specs) of one federation with the replica axis every round has (R = 1)."""

    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct((1,) + x.shape, x.dtype)
        return x[None]

    return jax.tree.map(leaf, tree)


def live_bytes() -> int:
    return sum(x.nbytes for x in jax.live_arrays())


def extra_bytes(compiled) -> int:
    """A program's own device memory beyond its arguments: temp + outputs not aliased."""
    try:
        m = compiled.memory_analysis()
        return int(m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)
    except Exception:  # backends without a memory analysis
        return 0


def datasheet_peak(kind: str, dtype: str, override: str) -> tuple[float | None, str]:
    for item in filter(None, override.split(",")):
        name, value = item.split("=")
        if name == dtype:
            return float(value) * 1e12, "--peak-tflops"
    for card, peaks in DATASHEET_TFLOPS.items():
        if card.lower() in kind.lower():
            return peaks[dtype] * 1e12, f"{card} datasheet (dense)"
    return None, "unknown card: MFU against the measured matmul peak only"


# -------------------------------------------------------------------------------- the bench
class Bench:
    """The check's state: the cohort, the programs compiling in threads, the result so far."""

    def __init__(self, args):
        self.args = args
        self.t_start = time.perf_counter()
        self.out_path = Path(args.out or harness.ROOT / "benchmarks") / "gpu_check.json"
        self.result = {
            "command": harness.command("gpu_check"),
            "device": {
                **harness.device_info(),
                "matmul_precision": str(getattr(jax.config, "jax_default_matmul_precision", "?")),
            },
            "config": dict(vars(args)),
            "rows": [],
            "memory": [],
            "skipped": [],
        }
        self.pool = ThreadPoolExecutor(args.compile_workers, thread_name_prefix="compile")
        self.programs: dict = {}  # name -> (future of (compiled, compile s, lowered), lower s)
        self.rounds: dict[str, SegmentedRound] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.t_start

    def save(self) -> None:
        self.result["elapsed_s"] = self.elapsed()
        harness.write_json(self.out_path, self.result)

    # ---- model ---------------------------------------------------------------------------------
    def build(self):
        args = self.args
        st = self.st = harness.build(
            args.size, steps=args.steps, batch=args.batch, dtypes=tuple(args.dtypes),
            image_hw=args.image, text_len=args.text_len, answers=args.answers,
        )  # fmt: skip
        self.frozen = jax.device_put(st.frozen)
        self.server_R = one_replica(jax.device_put(st.server()))
        self.result["model"] = {
            "size": args.size,
            "image_hw": args.image,
            "text_len": args.text_len,
            "answers": args.answers,
            "batch": args.batch,
            "steps": args.steps,
            "segment_steps": args.segment_steps,
            **st.parameter_counts(),
        }

    def block(self, c: int, k: int, seed: int) -> dict:
        """One segment's host batches [C, K, B, ...]."""
        return self.st.batches(c, k, seed=seed, distinct=DISTINCT_STEPS)

    # ---- compiling -----------------------------------------------------------------------------
    def submit(self, name: str, lower):
        """Lower now (Python, holds the GIL), compile on the pool (XLA releases the GIL)."""
        t0 = time.perf_counter()
        lowered = lower()

        def compile_all():
            c0 = time.perf_counter()
            compiled = {k: v.compile() for k, v in lowered.items()}
            return compiled, time.perf_counter() - c0, lowered

        self.programs[name] = (self.pool.submit(compile_all), time.perf_counter() - t0)

    def compiled(self, name: str):
        future, lower_s = self.programs[name]
        compiled, compile_s, lowered = future.result()
        return compiled, lower_s + compile_s, lowered

    def compiling(self) -> int:
        """Programs still compiling (on a GPU, XLA's autotuner runs kernels while it compiles)."""
        return sum(not future.done() for future, _ in self.programs.values())

    def wait_for_compiles(self, until_s: float) -> None:
        """Let every submitted program finish compiling before the first timing, so timings do not
        share the device with autotuning, but start timing by ``until_s`` into the run anyway."""
        total = len(self.programs)
        while self.compiling() and self.elapsed() < until_s:
            time.sleep(1.0)
        self.result["compiled_before_timing"] = f"{total - self.compiling()}/{total}"
        self.result["compile_wait_end_s"] = self.elapsed()

    def submit_round(self, dtype: str, c: int, steps_per_call: int, segment_steps: int):
        name = f"{dtype}/C{c}/K{steps_per_call}/seg{segment_steps}"
        if name in self.programs:
            return name
        seg = SegmentedRound(
            self.st.algorithms[dtype],
            self.st.server_tx,
            MeanAggregator(),
            segment_steps=segment_steps,
        )
        cohort = harness.spec(self.st.cohort(1), lead=(c,), drop=1)
        self.submit(
            name,
            lambda: seg.lower(
                harness.spec(self.frozen), harness.spec(self.server_R), *one_replica(cohort),
                one_replica(self.st.batch_spec(c, steps_per_call)),
            ),
        )  # fmt: skip
        self.rounds[name] = seg
        return name

    def submit_step(self, dtype: str):
        """ONE client step at C = 1 (no loop inside): XLA's FLOP count of the model."""
        self.submit(f"{dtype}/step", lambda: {"step": self.st.lower_step(dtype)})

    def step_flops(self, dtype: str) -> tuple[float, str]:
        compiled, _, lowered = self.compiled(f"{dtype}/step")
        return harness.step_flops(lowered["step"], compiled["step"])

    # ---- running -------------------------------------------------------------------------------
    def segments(self, block: dict, num_segments: int, samples: list | None):
        """Each segment's inputs placed when the round asks for it (like the training loop)."""
        for _ in range(num_segments):
            placed = jax.device_put(one_replica(block))
            if samples is not None:
                jax.block_until_ready(placed)
                samples.append(live_bytes())
            yield placed

    def placed(self, private, tasks, ids):
        """A cohort's state on device (the round donates it: one copy per run), placed before
        the clock starts, as the training loop's registry gathers it before the round."""
        return jax.block_until_ready(jax.device_put(one_replica((private, tasks, ids))))

    def run_round(self, seg, placed, block, num_segments, samples=None):
        out = seg(self.frozen, self.server_R, *placed, self.segments(block, num_segments, samples))
        jax.block_until_ready(out)
        return out

    def install(self, name: str):
        compiled, compile_s, _ = self.compiled(name)
        seg = self.rounds[name]
        seg.install(compiled)
        return seg, compile_s, max(extra_bytes(p) for p in compiled.values())

    def round_row(self, dtype: str, c: int, mode: str) -> dict:
        """``vmap``: the round of the whole cohort; ``loop``: the C = 1 round's programs, one
        client after another (one repeat at C >= 32). A warm-up round (of client 0 alone for
        the loop) samples the memory; each repeat places every group's state, then times."""
        args = self.args
        size = c if mode == "vmap" else 1
        seg, compile_s, extra = self.install(
            self.submit_round(dtype, size, args.segment_steps, args.segment_steps)
        )
        cohort, block = self.st.cohort(c), self.block(c, args.segment_steps, seed=c)
        groups = [slice(k, k + size) for k in range(0, c, size)]
        part = lambda tree, g: jax.tree.map(lambda x: x[g], tree)
        n_seg = -(-args.steps // args.segment_steps)
        samples: list[int] = []
        warm = self.placed(*part(cohort, groups[0]))
        self.run_round(seg, warm, part(block, groups[0]), n_seg, samples)
        repeats = args.repeats if mode == "vmap" else (1 if c >= 32 else min(2, args.repeats))
        times = []
        for _ in range(repeats):
            placed = [self.placed(*part(cohort, g)) for g in groups]
            t0 = time.perf_counter()
            for g, p in zip(groups, placed):
                self.run_round(seg, p, part(block, g), n_seg)
            times.append(time.perf_counter() - t0)
        return {
            "compile_s": compile_s,
            "round_s_all": times,
            "round_s": statistics.median(times),
            "peak_mem_est": max(samples) + extra,
        }

    def memory_row(self, dtype: str, c: int, steps: int, segmented: bool) -> dict:
        """One round of S steps: in segments of K (one segment's inputs placed at a time, the
        next while it runs) or in one call (the whole epoch's inputs on device)."""
        args = self.args
        k = args.segment_steps if segmented else steps
        seg, compile_s, extra = self.install(
            self.submit_round(dtype, c, k, args.segment_steps if segmented else 0)
        )
        private, tasks, ids = self.st.cohort(c)
        block = self.block(c, k, seed=steps)
        placed = self.placed(private, tasks, ids)
        samples: list[int] = []
        t0 = time.perf_counter()
        self.run_round(seg, placed, block, -(-steps // k), samples)
        seconds = time.perf_counter() - t0
        in_flight = min(2, -(-steps // k))  # the running segment and the next
        return {
            "compile_s": compile_s,
            "round_s": seconds,
            "input_bytes_on_device": sum(v.nbytes for v in block.values()) * in_flight,
            "peak_mem_est": max(samples) + extra,
        }
