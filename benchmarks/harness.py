"""The synthetic FedDAT round every speed benchmark times, and how it is timed.

One place builds the cohort (FedDAT on ``ViltVQA`` with random weights, batches with the data
contract's keys, dtypes and shapes ``[C, S, B, ...]``, the cohort's private state and tasks) and
one place measures it (the library's round at R = 1, fresh donated buffers, medians after a
warm-up, XLA's FLOP count of one client step, the device's matmul peak), so that
``round_speed``, ``sweep_speed`` and ``gpu_check`` time the same thing and
their numbers can be compared.

Imports only jax, flax, optax, numpy and the round's own modules (no ml_collections,
tensorflow-datasets, array_record, dp_accounting or tensorboardX): it runs on a bare
accelerator image.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from feddat_jax import methods
from feddat_jax.fl import local_optim
from feddat_jax.fl.replicas import make_replica_round_fn
from feddat_jax.fl.round import client_context
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import ClientTasks, init_server_state
from feddat_jax.models.inputs import to_model_inputs
from feddat_jax.models.vilt import ViltConfig, ViltVQA

ROOT = Path(__file__).resolve().parent.parent
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Size:
    """A model size and its input shapes: images padded to ``image_hw``, ``text_len`` tokens,
    ``answers`` outputs of the head."""

    model: Callable[[], ViltConfig]
    image_hw: tuple[int, int]
    text_len: int
    answers: int


SIZES = {
    "tiny": Size(ViltConfig.tiny, (64, 64), 16, 10),
    # the mid size of the CPU profile (issue 15): width 192, 4 layers, 64x64 images of 16 px patches
    "mid": Size(
        lambda: ViltConfig(
            hidden_size=192,
            num_hidden_layers=4,
            num_attention_heads=4,
            intermediate_size=768,
            vocab_size=99,
            patch_size=16,
            image_size=64,
        ),
        (64, 64),
        16,
        100,
    ),
    "base": Size(ViltConfig, (384, 640), 40, 100),  # ViLT-B/32
}


# ------------------------------------------------------------------------------------ the cohort
@dataclasses.dataclass
class Cohort:
    """FedDAT on ViltVQA of one size with random weights, and synthetic cohorts of it.

    ``algorithms`` holds one FedDAT algorithm per compute dtype; the parameters (``frozen``,
    ``shared``) and a client's initial private state (``private_one``) are shared by all."""

    size: str
    config: ViltConfig
    image_hw: tuple[int, int]
    text_len: int
    answers: int
    steps: int
    batch: int
    algorithms: dict
    server_tx: object
    frozen: dict
    shared: dict
    private_one: dict

    @property
    def algorithm(self):
        """The first dtype's algorithm (the one a single-dtype benchmark times)."""
        return next(iter(self.algorithms.values()))

    def batches(self, c: int, s: int, seed: int = 0, distinct: int | None = None) -> dict:
        """Host batches ``[C, S, B, ...]`` of random values. With ``distinct``, only that many
        random steps are drawn and repeated (the values do not change a timing; drawing GBs of
        them would)."""
        rng = np.random.default_rng(seed)
        n = c * s if distinct is None else min(c * s, distinct)
        b, a, (h, w), t = self.batch, self.answers, self.image_hw, self.text_len
        targets = np.zeros((n, b, a), np.float32)
        np.put_along_axis(targets, rng.integers(0, a, (n, b, 1)), 1.0, axis=-1)
        steps = {
            "input_ids": rng.integers(1, self.config.vocab_size, (n, b, t), dtype=np.int32),
            "attention_mask": np.ones((n, b, t), np.int32),
            "image": rng.integers(0, 256, (n, b, h, w, 3), dtype=np.uint8),
            "pixel_mask": np.ones((n, b, h, w), np.uint8),
            "targets": targets,
            "example_mask": np.ones((n, b), np.float32),
        }
        rows = np.arange(c * s) % n
        return {k: v[rows].reshape((c, s) + v.shape[1:]) for k, v in steps.items()}

    def batch_spec(self, c: int, s: int) -> dict:
        """The shapes and dtypes of :meth:`batches` without building them."""
        return spec(self.batches(1, 1), lead=(c, s), drop=2)

    def cohort(self, c: int):
        """(private states, tasks, client ids) of C clients, host arrays with a leading C."""
        tasks = ClientTasks(
            answer_mask=np.ones((c, self.answers), np.float32),
            task_kind=np.zeros((c,), np.int32),
            num_examples=np.full((c,), self.steps * self.batch, np.int32),
        )
        private = jax.tree.map(lambda x: np.repeat(x[None], c, axis=0), self.private_one)
        return private, tasks, np.arange(c, dtype=np.int32)

    def server(self, seed: int = 1):
        """A fresh server state (the global shared adapter and its optimizer), host arrays."""
        return init_server_state(self.shared, self.server_tx, jax.random.key(seed))

    def lower_step(self, dtype: str | None = None):
        """ONE client's local step at C = 1 (no loop inside, so XLA counts all its FLOPs),
        lowered: the FLOP count of a round is this step's times C x S."""
        alg = self.algorithms[dtype] if dtype else self.algorithm
        b = self.batch
        private, tasks, _ = self.cohort(1)
        first = lambda t: jax.tree.map(lambda x: x[0], t)

        def step(frozen, gshared, tasks_k, local, batch, key):
            ctx = client_context(frozen, gshared, tasks_k, b, jnp.zeros((), jnp.int32))
            return alg.local_step(ctx, local, batch, key)

        ctx = client_context(self.frozen, self.shared, first(tasks), b, 0)
        local = jax.eval_shape(alg.begin_round, ctx, first(private))
        batch = first(first(self.batches(1, 1)))
        return jax.jit(step).lower(
            spec(self.frozen), spec(self.shared), spec(first(tasks)), local, spec(batch),
            jax.random.key(0),
        )  # fmt: skip

    def parameter_counts(self) -> dict:
        count = lambda t: int(sum(np.size(x) for x in jax.tree.leaves(t)))
        return {
            "frozen_params": count(self.frozen),
            "shared_params": count(self.shared),
            "private_state_floats": count(self.private_one),
        }


def build(
    size: str,
    *,
    steps: int,
    batch: int,
    dtypes: tuple[str, ...] = ("float32",),
    image_hw: tuple[int, int] | None = None,
    text_len: int | None = None,
    answers: int | None = None,
) -> Cohort:
    """The cohort of ``size`` (``tiny``, ``mid`` or ``base``); image, text length and answers
    default to the size's."""
    shape = SIZES[size]
    image_hw = tuple(image_hw or shape.image_hw)
    text_len = text_len or shape.text_len
    answers = answers or shape.answers
    config = shape.model()
    config = dataclasses.replace(
        config, max_position_embeddings=max(config.max_position_embeddings, text_len)
    )
    method = methods.get_method("feddat")
    peft = methods.peft_config(method)
    algorithms = {}
    for dtype in dtypes:
        model = ViltVQA(config, peft, answers, DTYPES[dtype])
        forward = methods.make_forward(model, to_model_inputs)
        algorithms[dtype] = methods.build_algorithm(
            method, forward, local_optim.LocalOptimConfig()
        )
    cohort = Cohort(size, config, image_hw, text_len, answers, steps, batch, algorithms,
                    make_server_optimizer(method.server_optimizer), {}, {}, {})  # fmt: skip
    example = jax.tree.map(lambda x: x[0, 0], cohort.batches(1, 1))
    params = random_params(ViltVQA(config, peft, answers), example)
    cohort.frozen, cohort.shared, private = methods.split_params(method, params)
    cohort.private_one = jax.tree.map(
        np.asarray, cohort.algorithm.init_private(cohort.shared, private)
    )
    return cohort


def random_params(model, example) -> dict:
    """The model's parameter tree with BERT-like random values, without compiling ``init``
    (a timing does not depend on the values; compiling ViLT-B's init takes a while)."""
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


def spec(tree, lead: tuple[int, ...] = (), drop: int = 0):
    """Shapes and dtypes of a tree's leaves; ``drop`` leading axes replaced by ``lead``."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(tuple(lead) + np.shape(x)[drop:], x.dtype), tree
    )


# -------------------------------------------------------------------------------- the round
def one_federation_round(algorithm, server_tx, aggregator, *, chunk_size=None, jit=True):
    """The library's round at R = 1 (what a run that sweeps nothing compiles), called with one
    federation's values: the replica axis is added and dropped inside the program."""
    run_R = make_replica_round_fn(algorithm, server_tx, aggregator, chunk_size=chunk_size, jit=False)

    def run(frozen, server, *cohort):
        lift = jax.tree.map(lambda x: x[None], (server, *cohort))
        return jax.tree.map(lambda x: x[0], run_R(frozen, *lift))

    return jax.jit(run, donate_argnums=(2,)) if jit else run


def fresh(tree):
    """New device buffers (the round donates the cohort's private state)."""
    return jax.tree.map(lambda x: jax.device_put(np.asarray(x)), tree)


@dataclasses.dataclass
class Timings:
    """Wall and process-CPU seconds of each timed call (the warm-up call excluded)."""

    wall: list[float]
    cpu: list[float]


def time_calls(fn: Callable, make_args: Callable[[], tuple], repeats: int) -> Timings:
    """``fn(*make_args())`` ``repeats`` times after one warm-up call (caches, allocators); the
    arguments are built and on device before each clock starts."""
    out = Timings([], [])
    for i in range(repeats + 1):
        args = jax.block_until_ready(make_args())
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn(*args))
        if i:
            out.wall.append(time.perf_counter() - t0)
            out.cpu.append(time.process_time() - c0)
    return out


def flops_of(stage) -> float:
    """FLOPs from a Lowered's or Compiled's cost analysis (a dict, or a list of one); 0 where
    the backend gives none."""
    try:
        ca = stage.cost_analysis()
    except Exception:  # backends without a cost analysis
        return 0.0
    if isinstance(ca, (list, tuple)):
        ca = ca[0] if ca else {}
    return float((ca or {}).get("flops", 0.0))


def step_flops(lowered, compiled=None) -> tuple[float, str]:
    """(FLOPs of one client step, where the count came from): the compiled program's count, or
    the lowered one's where compiling lost it."""
    got, ref = flops_of(compiled or lowered.compile()), flops_of(lowered)
    if got > 0.5 * ref:
        return got, "compiled"
    return ref, "lowered (the compiled count was missing)"


def matmul_peak(dtype, n: int) -> dict:
    """FLOP/s of one n x n ``jnp.dot`` on the default device: the best of 5, in wall and in
    process-CPU seconds (the latter robust to other processes on a shared CPU)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dtype)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32).astype(dtype)
    timings = time_calls(jax.jit(jnp.dot), lambda: (a, b), 5)
    best = min(timings.wall)
    return {
        "n": n,
        "dtype": jnp.dtype(dtype).name,
        "seconds": best,
        "flops_per_s": 2 * n**3 / best,
        "cpu_seconds": min(timings.cpu),
    }


def device_peak_bytes() -> int | None:
    """The process's peak device memory so far, where the backend reports it."""
    try:
        stats = jax.devices()[0].memory_stats() or {}
    except Exception:  # backends without memory stats
        return None
    return stats.get("peak_bytes_in_use")


# ------------------------------------------------------------------------------------ results
def device_info() -> dict:
    device = jax.devices()[0]
    return {
        "backend": jax.default_backend(),
        "kind": device.device_kind,
        "count": jax.device_count(),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "jax": jax.__version__,
    }


def command(module: str) -> str:
    """The command line that ran ``benchmarks.<module>`` (recorded in its JSON, shown in
    RESULTS.md)."""
    return shlex.join(["python", "-m", f"benchmarks.{module}", *sys.argv[1:]])


def default_out(name: str) -> Path:
    """``benchmarks/results_<name>.json``: where a script's committed results live."""
    return ROOT / "benchmarks" / f"results_{name}.json"


def write_json(path: str | Path, result: dict) -> None:
    """Written whole or not at all (a script rewrites its JSON after every row, so a run cut
    short keeps what it measured)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1, default=str))
    os.replace(tmp, path)
