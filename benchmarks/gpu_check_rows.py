"""The programs and measurements of ``gpu_check.py``: the model, synthetic segments, the
ahead-of-time compiled round programs (compiled concurrently) and the per-row measurements.
See ``gpu_check.py`` for what the rows mean."""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import numpy as np

from feddat_jax import methods
from feddat_jax.fl import local_optim
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.round import client_context
from feddat_jax.fl.segments import SegmentedRound
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import ClientTasks, init_server_state
from feddat_jax.models.inputs import to_model_inputs
from feddat_jax.models.vilt import ViltConfig, ViltVQA

DTYPES = {"bfloat16": jnp.bfloat16, "float32": jnp.float32}
# Dense datasheet peaks in TFLOP/s (H200 / H100 SXM: bf16 989.5, fp32 66.9 without TF32; XLA may
# run float32 matmuls as TF32 (494.7) by default, so a float32 MFU above 100 % means TF32).
DATASHEET_TFLOPS = {
    "H200": {"bfloat16": 989.5, "float32": 66.9},
    "H100": {"bfloat16": 989.5, "float32": 66.9},
    "A100": {"bfloat16": 312.0, "float32": 19.5},
}


def vilt_config(size: str, text_len: int) -> ViltConfig:
    if size == "tiny":
        cfg = ViltConfig.tiny()
    elif size == "mid":  # the issue-15 CPU profiling size
        cfg = ViltConfig(
            hidden_size=192,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=768,
            vocab_size=99,
            patch_size=16,
            image_size=64,
        )
    else:
        cfg = ViltConfig()  # ViLT-B/32
    return dataclasses.replace(
        cfg, max_position_embeddings=max(cfg.max_position_embeddings, text_len)
    )


# ------------------------------------------------------------------------------------- setup
@dataclasses.dataclass
class Setup:
    """One compute dtype's model pieces (parameters are shared by every dtype)."""

    dtype: str
    algorithm: object
    forward: object


def random_params(model, example) -> dict:
    """The model's parameter tree with BERT-like random values, without compiling ``init``."""
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), to_model_inputs(example), adapter_mode="none")
    )["params"]
    rng = np.random.default_rng(0)

    def leaf(path, s):
        name = str(path[-1])
        if "bias" in name:
            return np.zeros(s.shape, s.dtype)
        if "scale" in name:
            return np.ones(s.shape, s.dtype)
        return (0.02 * rng.standard_normal(s.shape)).astype(s.dtype)

    return jax.tree_util.tree_map_with_path(leaf, shapes)


def synthetic_block(rng, c: int, k: int, args, vocab: int) -> dict:
    """One segment's host batches [C, K, B, ...] with the data contract's keys and dtypes: up to
    8 random steps, repeated (the values do not change the timing; drawing GBs would)."""
    h, w = args.image
    b, a, n = args.batch, args.answers, min(c * k, 8)
    targets = np.zeros((n, b, a), np.float32)
    np.put_along_axis(targets, rng.integers(0, a, (n, b, 1)), 1.0, axis=-1)
    steps = {
        "input_ids": rng.integers(1, vocab, (n, b, args.text_len), dtype=np.int32),
        "attention_mask": np.ones((n, b, args.text_len), np.int32),
        "image": rng.integers(0, 256, (n, b, h, w, 3), dtype=np.uint8),
        "pixel_mask": np.ones((n, b, h, w), np.uint8),
        "targets": targets,
        "example_mask": np.ones((n, b), np.float32),
    }
    rows = np.arange(c * k) % n
    return {key: v[rows].reshape((c, k) + v.shape[1:]) for key, v in steps.items()}


def block_spec(c: int, k: int, args) -> dict:
    """The shapes and dtypes of :func:`synthetic_block` without building it."""
    one = synthetic_block(np.random.default_rng(0), 1, 1, args, 2)
    return {key: jax.ShapeDtypeStruct((c, k) + v.shape[2:], v.dtype) for key, v in one.items()}


def first_row(tree):
    return jax.tree.map(lambda x: x[0], tree)


def client_rows(tree, k: int):
    """Client k of a stacked cohort value, as a cohort of one."""
    return jax.tree.map(lambda x: x[k : k + 1], tree)


def stacked_spec(x, c: int):
    """The spec of a cohort value of C clients, from a cohort of one."""
    return jax.ShapeDtypeStruct((c,) + np.shape(x)[1:], x.dtype)


def spec(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), tree)


def one_replica(tree):
    """Values (or specs) of one federation with the replica axis every round has (R = 1)."""

    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return jax.ShapeDtypeStruct((1,) + x.shape, x.dtype)
        return x[None]

    return jax.tree.map(leaf, tree)


def live_bytes() -> int:
    return sum(x.nbytes for x in jax.live_arrays())


def device_peak() -> int | None:
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # backends without memory stats
        return None
    return stats.get("peak_bytes_in_use")


def flops_of(stage) -> float:
    """FLOPs from a Lowered's or Compiled's cost analysis (a dict, or a list of one)."""
    try:
        ca = stage.cost_analysis()
    except Exception:
        return 0.0
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return float((ca or {}).get("flops", 0.0))


def extra_bytes(compiled) -> int:
    """A program's own device memory beyond its arguments: temp + outputs not aliased."""
    try:
        m = compiled.memory_analysis()
        return int(m.temp_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes)
    except Exception:
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
    def __init__(self, args):
        self.args = args
        self.t_start = time.perf_counter()
        out_dir = args.out or os.path.dirname(os.path.abspath(__file__))
        os.makedirs(out_dir, exist_ok=True)
        self.out_path = os.path.join(out_dir, "gpu_check.json")
        dev = jax.devices()[0]
        self.result = {
            "device": {
                "backend": jax.default_backend(),
                "kind": dev.device_kind,
                "count": jax.device_count(),
                "host": platform.node(),
                "jax": jax.__version__,
                "matmul_precision": str(getattr(jax.config, "jax_default_matmul_precision", "?")),
            },
            "config": {k: v for k, v in vars(args).items()},
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
        tmp = self.out_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.result, f, indent=1, default=str)
        os.replace(tmp, self.out_path)

    # ---- model ---------------------------------------------------------------------------------
    def build(self):
        args = self.args
        self.cfg = vilt_config(args.size, args.text_len)
        method = methods.get_method("feddat")
        peft = methods.peft_config(method)
        example = jax.tree.map(
            lambda x: x[0, 0], synthetic_block(np.random.default_rng(0), 1, 1, args, 2)
        )
        params = random_params(ViltVQA(self.cfg, peft, args.answers), example)
        frozen, shared, private = methods.split_params(method, params)
        self.frozen = jax.device_put(frozen)
        self.setups = {}
        for name in args.dtypes:
            model = ViltVQA(self.cfg, peft, args.answers, DTYPES[name])
            forward = methods.make_forward(model, to_model_inputs)
            algorithm = methods.build_algorithm(method, forward, local_optim.LocalOptimConfig())
            self.setups[name] = Setup(name, algorithm, forward)
        any_alg = next(iter(self.setups.values())).algorithm
        self.server_tx = make_server_optimizer(method.server_optimizer)
        self.server = jax.device_put(init_server_state(shared, self.server_tx, jax.random.key(1)))
        self.server_R = one_replica(self.server)
        self.private_one = jax.tree.map(np.asarray, any_alg.init_private(shared, private))
        self.result["model"] = {
            "size": args.size,
            "image_hw": args.image,
            "text_len": args.text_len,
            "answers": args.answers,
            "batch": args.batch,
            "steps": args.steps,
            "segment_steps": args.segment_steps,
            "frozen_params": int(sum(x.size for x in jax.tree.leaves(frozen))),
            "shared_params": int(sum(x.size for x in jax.tree.leaves(shared))),
            "private_state_floats": int(sum(x.size for x in jax.tree.leaves(self.private_one))),
        }

    def cohort(self, c: int):
        tasks = ClientTasks(
            answer_mask=np.ones((c, self.args.answers), np.float32),
            task_kind=np.zeros((c,), np.int32),
            num_examples=np.full((c,), self.args.steps * self.args.batch, np.int32),
        )
        private = jax.tree.map(lambda x: np.repeat(x[None], c, axis=0), self.private_one)
        return private, tasks, np.arange(c, dtype=np.int32)

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
            self.setups[dtype].algorithm,
            self.server_tx,
            MeanAggregator(),
            segment_steps=segment_steps,
        )
        private, tasks, ids = jax.tree.map(lambda x: stacked_spec(x[:1], c), self.cohort(1))
        self.submit(
            name,
            lambda: seg.lower(
                spec(self.frozen), spec(self.server_R), *one_replica((private, tasks, ids)),
                one_replica(block_spec(c, steps_per_call, self.args)),
            ),
        )  # fmt: skip
        self.rounds[name] = seg
        return name

    def submit_step(self, dtype: str):
        """ONE client step at C = 1 (no loop inside): XLA's FLOP count of the model."""
        setup, b = self.setups[dtype], self.args.batch
        private, tasks, _ = self.cohort(1)
        alg = setup.algorithm
        one = first_row
        batch = one(one(synthetic_block(np.random.default_rng(0), 1, 1, self.args, 2)))

        def step(frozen, gshared, tasks_k, local, batch, key):
            ctx = client_context(frozen, gshared, tasks_k, b, jnp.zeros((), jnp.int32))
            return alg.local_step(ctx, local, batch, key)

        def lower():
            ctx = client_context(self.frozen, self.server.shared, one(tasks), b, 0)
            local = jax.eval_shape(alg.begin_round, ctx, one(private))
            return {
                "step": jax.jit(step).lower(
                    spec(self.frozen), spec(self.server.shared), spec(one(tasks)), local,
                    spec(batch), jax.random.key(0),
                )
            }  # fmt: skip

        self.submit(f"{dtype}/step", lower)

    def step_flops(self, dtype: str) -> tuple[float, str]:
        compiled, _, lowered = self.compiled(f"{dtype}/step")
        got = flops_of(compiled["step"])
        ref = flops_of(lowered["step"])
        if got > 0.5 * ref:
            return got, "compiled"
        return ref, "lowered (the compiled count was missing)"

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

    def vmap_row(self, dtype: str, c: int) -> dict:
        args = self.args
        name = self.submit_round(dtype, c, args.segment_steps, args.segment_steps)
        seg, compile_s, extra = self.install(name)
        private, tasks, ids = self.cohort(c)
        vocab = self.cfg.vocab_size
        block = synthetic_block(np.random.default_rng(c), c, args.segment_steps, args, vocab)
        n_seg = -(-args.steps // args.segment_steps)
        samples: list[int] = []
        self.run_round(seg, self.placed(private, tasks, ids), block, n_seg, samples)  # warm-up
        times = []
        for _ in range(args.repeats):
            placed = self.placed(private, tasks, ids)
            t0 = time.perf_counter()
            self.run_round(seg, placed, block, n_seg)
            times.append(time.perf_counter() - t0)
        return {
            "compile_s": compile_s,
            "round_s_all": times,
            "round_s": statistics.median(times),
            "peak_mem_est": max(samples) + extra,
        }

    def loop_row(self, dtype: str, c: int) -> dict:
        """The C = 1 round's programs, one client after another (one repeat at C >= 32)."""
        args = self.args
        seg, compile_s, extra = self.install(
            self.submit_round(dtype, 1, args.segment_steps, args.segment_steps)
        )
        private, tasks, ids = self.cohort(c)
        vocab = self.cfg.vocab_size
        block = synthetic_block(np.random.default_rng(c), c, args.segment_steps, args, vocab)
        n_seg = -(-args.steps // args.segment_steps)
        one = client_rows
        samples: list[int] = []
        first = self.placed(one(private, 0), one(tasks, 0), one(ids, 0))
        self.run_round(seg, first, one(block, 0), n_seg, samples)  # warm-up
        times = []
        for _ in range(1 if c >= 32 else min(2, args.repeats)):
            placed = [self.placed(one(private, k), one(tasks, k), one(ids, k)) for k in range(c)]
            t0 = time.perf_counter()
            for k in range(c):
                self.run_round(seg, placed[k], one(block, k), n_seg)
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
        private, tasks, ids = self.cohort(c)
        block = synthetic_block(np.random.default_rng(steps), c, k, args, self.cfg.vocab_size)
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
