"""bf16 compute (``config.model.dtype="bfloat16"``): params and optimizer state stay float32, and a
FedDAT round and the logits agree with float32 within the tolerances stated here.

Tolerances (bf16 keeps 8 bits of mantissa, a relative rounding of 2^-8 = 0.4 %): logits within
2 % of their scale, a round's client losses within 1 %, and the shared parameters' round delta
within 5 % (relative L2; AdamW normalises each update, so rounding differences in small gradients
show in the delta more than in the loss).
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from one_federation import make_round_fn
from feddat_jax import methods
from feddat_jax.fl import local_optim
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import ClientTasks, init_server_state
from feddat_jax.models.albef import AlbefConfig, AlbefVQA, example_inputs
from feddat_jax.models.inputs import to_model_inputs
from feddat_jax.models.vilt import ViltConfig, ViltVQA
from feddat_jax.peft.config import PeftConfig

C, S, B, L, A, HW = 3, 2, 2, 16, 10, (64, 64)


def cohort_batch(rng):
    targets = np.zeros((C, S, B, A), np.float32)
    np.put_along_axis(targets, rng.integers(0, A, (C, S, B, 1)), 1.0, axis=-1)
    return {
        "input_ids": rng.integers(1, 99, (C, S, B, L), dtype=np.int32),
        "attention_mask": np.ones((C, S, B, L), np.int32),
        "image": rng.integers(0, 256, (C, S, B, *HW, 3), dtype=np.uint8),
        "pixel_mask": np.ones((C, S, B, *HW), np.uint8),
        "targets": targets,
        "example_mask": np.ones((C, S, B), np.float32),
    }


def vilt_round(dtype, params, batches):
    method = methods.get_method("feddat")
    model = ViltVQA(ViltConfig.tiny(), methods.peft_config(method), A, dtype)
    frozen, shared, private = methods.split_params(method, params)
    forward = methods.make_forward(model, to_model_inputs)
    optim = local_optim.LocalOptimConfig(learning_rate=1e-3)
    algorithm = methods.build_algorithm(method, forward, optim)
    server_tx = make_server_optimizer("fedavg")
    server = init_server_state(shared, server_tx, jax.random.key(1))
    one = algorithm.init_private(shared, private)
    private_C = jax.tree.map(lambda x: jnp.repeat(x[None], C, axis=0), one)
    tasks = ClientTasks(
        answer_mask=jnp.ones((C, A)),
        task_kind=jnp.zeros((C,), jnp.int32),
        num_examples=jnp.full((C,), S * B, jnp.int32),
    )
    new_server, private_C, metrics = make_round_fn(algorithm, server_tx, MeanAggregator())(
        frozen, server, private_C, tasks, jnp.arange(C), batches
    )
    step_batch = jax.tree.map(lambda x: x[0, 0], batches)
    hlo = jax.jit(lambda p: forward(p, step_batch, "dat")).lower(params).as_text()
    logits = forward(params, step_batch, "dat")
    return server, new_server, private_C, metrics, logits, hlo


def rel(a, b):
    return float(jnp.linalg.norm(a - b) / jnp.linalg.norm(b))


def flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


@pytest.fixture(scope="module")
def rounds():
    rng = np.random.default_rng(0)
    batches = cohort_batch(rng)
    model = ViltVQA(ViltConfig.tiny(), methods.peft_config(methods.get_method("feddat")), A)
    params = model.init(
        jax.random.key(0), to_model_inputs(jax.tree.map(lambda x: x[0, 0], batches)), "none"
    )["params"]
    return {
        name: vilt_round(dtype, params, batches)
        for name, dtype in (("f32", jnp.float32), ("bf16", jnp.bfloat16))
    }


def test_bf16_computes_in_bf16_and_keeps_float32_state(rounds):
    *_, hlo32 = rounds["f32"]
    _, server, private_C, _, logits, hlo16 = rounds["bf16"]
    dots = re.findall(r"stablehlo.dot_general.*-> tensor<\S*x(\w+)>", hlo16)
    assert dots.count("bf16") >= 0.8 * len(dots), dots  # the matmuls run in bf16
    assert "bf16" not in hlo32
    assert logits.dtype == jnp.float32  # losses see float32 logits
    for leaf in jax.tree.leaves((server.shared, server.opt_state, private_C)):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype


def test_bf16_round_agrees_with_float32(rounds):
    start, s32, p32, m32, z32, _ = rounds["f32"]
    _, s16, p16, m16, z16, _ = rounds["bf16"]
    assert 0 < float(jnp.max(jnp.abs(z16 - z32))) <= 0.02 * float(jnp.max(jnp.abs(z32)))
    for key in ("loss_shared", "loss_dat"):
        np.testing.assert_allclose(m16["clients"][key], m32["clients"][key], rtol=1e-2)
    delta32 = flat(s32.shared) - flat(start.shared)
    delta16 = flat(s16.shared) - flat(start.shared)
    assert 0 < rel(delta16, delta32) <= 0.05
    assert rel(flat(p16["params"]), flat(p32["params"])) <= 0.05


def test_bf16_albef_logits_agree_with_float32():
    cfg, peft = AlbefConfig.tiny(), PeftConfig(adapters=("shared", "client"))
    rng = np.random.default_rng(1)
    x = example_inputs(cfg, 2, 6, 4, 5)
    x = {
        k: jnp.asarray(rng.normal(size=v.shape), v.dtype)
        if v.dtype == jnp.float32
        else (jnp.asarray(rng.integers(1, cfg.vocab_size, v.shape), v.dtype) if "ids" in k else v)
        for k, v in x.items()
    }
    init = jax.jit(lambda key, x: AlbefVQA(cfg, peft).init(key, x, adapter_mode="dat"))
    params = init(jax.random.key(0), x)["params"]
    z32, z16 = (
        jax.jit(
            lambda p, x, dtype=dtype: AlbefVQA(cfg, peft, dtype=dtype).apply(
                {"params": p}, x, adapter_mode="dat"
            )
        )(params, x)
        for dtype in (jnp.float32, jnp.bfloat16)
    )
    assert z16.dtype == jnp.float32
    assert 0 < float(jnp.max(jnp.abs(z16 - z32))) <= 0.02 * float(jnp.max(jnp.abs(z32)))
