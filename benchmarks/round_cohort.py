"""The synthetic cohort that ``bench_round.py`` (and ``bench_sweep.py``'s round part) time: the
FedDAT method on ViltVQA with random weights, cohort batches with the data contract's keys, dtypes
and shapes [C, S, B, ...], the cohort's stacked private state and tasks, and the host time of the
data pipeline on a synthetic store of the same shapes."""

from __future__ import annotations

import dataclasses
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from feddat_jax import methods
from feddat_jax.fl import local_optim
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import ClientTasks
from feddat_jax.models.inputs import to_model_inputs
from feddat_jax.models.vilt import ViltConfig, ViltVQA

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass
class Setup:
    model: ViltVQA
    algorithm: object
    server_tx: object
    frozen: dict
    shared: dict
    private_one: dict
    image_hw: tuple[int, int]
    text_len: int
    vocab: int
    answers: int
    steps: int
    batch: int


def build(args) -> Setup:
    base = args.size == "base"
    hw = tuple(int(v) for v in (args.image or ("384x640" if base else "64x64")).split("x"))
    text_len = args.text_len or (40 if base else 16)
    answers = args.answers or (100 if base else 10)
    cfg = ViltConfig() if base else ViltConfig.tiny()
    cfg = dataclasses.replace(
        cfg, max_position_embeddings=max(cfg.max_position_embeddings, text_len)
    )
    method = methods.get_method("feddat")
    model = ViltVQA(cfg, methods.peft_config(method), answers, DTYPES[args.dtype])
    example = synthetic_batches(
        np.random.default_rng(0), 1, 1, 1, hw, text_len, cfg.vocab_size, answers
    )
    example = jax.tree.map(lambda x: x[0, 0], example)
    params = jax.jit(lambda r, b: model.init(r, to_model_inputs(b), adapter_mode="none"))(
        jax.random.key(0), example
    )["params"]
    frozen, shared, private = methods.split_params(method, params)
    algorithm = methods.build_algorithm(
        method, methods.make_forward(model, to_model_inputs), local_optim.LocalOptimConfig()
    )
    server_tx = make_server_optimizer(method.server_optimizer)
    private_one = jax.tree.map(np.asarray, algorithm.init_private(shared, private))
    return Setup(
        model,
        algorithm,
        server_tx,
        frozen,
        shared,
        private_one,
        hw,
        text_len,
        cfg.vocab_size,
        answers,
        args.steps,
        args.batch,
    )


def synthetic_batches(rng, c, s, b, hw, text_len, vocab, answers) -> dict:
    """A cohort batch with the data contract's keys, dtypes and shapes [C,S,B,...]."""
    h, w = hw
    targets = np.zeros((c, s, b, answers), np.float32)
    label = rng.integers(0, answers, (c, s, b))
    np.put_along_axis(targets, label[..., None], 1.0, axis=-1)
    return {
        "input_ids": rng.integers(1, vocab, (c, s, b, text_len), dtype=np.int32),
        "attention_mask": np.ones((c, s, b, text_len), np.int32),
        "image": rng.integers(0, 256, (c, s, b, h, w, 3), dtype=np.uint8),
        "pixel_mask": np.ones((c, s, b, h, w), np.uint8),
        "targets": targets,
        "example_mask": np.ones((c, s, b), np.float32),
    }


def cohort_inputs(st: Setup, c: int):
    tasks = ClientTasks(
        answer_mask=np.ones((c, st.answers), np.float32),
        task_kind=np.zeros((c,), np.int32),
        num_examples=np.full((c,), st.steps * st.batch, np.int32),
    )
    private = jax.tree.map(lambda x: np.repeat(x[None], c, axis=0), st.private_one)
    return private, tasks, np.arange(c, dtype=np.int32)


def pipeline_time(st: Setup, c: int) -> float | None:
    """data.pipeline.cohort_batches on a synthetic store of C clients (None if unavailable)."""
    try:
        from feddat_jax.data.client_store import ClientDataStore
        from feddat_jax.data.pipeline import cohort_batches
    except Exception:  # the pipeline is optional here
        return None
    n = st.steps * st.batch
    arrays = synthetic_batches(
        np.random.default_rng(1), c, 1, n, st.image_hw, st.text_len, st.vocab, st.answers
    )
    arrays = {
        k: v.reshape((c * n,) + v.shape[3:]) for k, v in arrays.items() if k != "example_mask"
    }
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
