"""A FedDAT round with the tiny ALBEF and per-client answer lists: vmapped through make_round_fn
equals a per-client loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from albef_helpers import DAT, A, B, L, make_inputs
from albef_reference import CFG
from one_federation import make_round_fn

from feddat_jax.fl import local_optim
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.algorithms import FedDAT, FedDATConfig
from feddat_jax.fl.round import client_context, round_keys
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import ClientTasks, init_server_state, stack_clients
from feddat_jax.models.albef import AlbefVQA, to_albef_inputs
from feddat_jax.peft.roles import merge, rules_for, split

# Full batches only (one compile of the reference step); clients 0 and 2 end with padding-only steps,
# which the round must skip. Partial batches (example masks) are covered model-agnostically by
# tests/test_round.py.
SIZES, KINDS, REAL = (4, 6, 2), (0, 1, 0), (4, 3, 4)
OPTIM = local_optim.LocalOptimConfig(learning_rate=1e-2, schedule_epochs=2.0)


def client_data(seed, n, kind, real):
    """n examples (unbatched) and the client's own answer list (`real` real answers of A)."""
    rng = np.random.default_rng(seed)
    answers = make_inputs(seed=100 + seed)
    ids, mask = answers["answer_input_ids"].copy(), answers["answer_attention_mask"].copy()
    ids[real:], mask[real:] = 0, 0
    label = rng.integers(0, real, n)
    targets = np.zeros((n, A), np.float32)
    targets[np.arange(n), label] = rng.choice([0.3, 0.6, 1.0], n) if kind == 0 else 1.0
    q_mask = np.ones((n, L), np.int32)
    q_mask[0, 3:] = 0
    examples = {
        "input_ids": rng.integers(1, CFG.vocab_size, (n, L)).astype(np.int32) * q_mask,
        "attention_mask": q_mask,
        "image": rng.integers(0, 256, (n, CFG.image_size, CFG.image_size, 3)).astype(np.uint8),
        "targets": targets,
        "example_mask": np.ones((n,), np.float32),
    }
    return examples, {"answer_input_ids": ids, "answer_attention_mask": mask}


def epoch_batches(examples, answers, steps):
    """[S, B, ...] padded per-example arrays + the answer list repeated over the S steps."""
    out = {}
    for k, v in examples.items():
        pad = np.zeros((steps * B - len(v),) + v.shape[1:], v.dtype)
        out[k] = np.concatenate([v, pad]).reshape((steps, B) + v.shape[1:])
    return {**out, **{k: np.broadcast_to(v, (steps,) + v.shape).copy() for k, v in answers.items()}}


@pytest.mark.slow  # ~1 min on 2 CPU cores: compiling the vmapped round and the reference step
def test_feddat_round_with_albef_vmapped_equals_per_client_loop(albef_released):
    _, _, params = albef_released
    model = AlbefVQA(CFG, DAT)

    def forward(p, batch, mode):
        return model.apply({"params": p}, to_albef_inputs(batch), adapter_mode=mode)

    algorithm = FedDAT(forward, FedDATConfig(optim=OPTIM))
    frozen, shared, private = split(params, rules_for("feddat"))
    assert (
        set(private) == {"albef", "head"} and merge(frozen, shared, private).keys() == params.keys()
    )
    data = [client_data(c, n, k, r) for c, (n, k, r) in enumerate(zip(SIZES, KINDS, REAL))]
    steps = max(-(-n // B) for n in SIZES)
    batches = stack_clients([epoch_batches(ex, ans, steps) for ex, ans in data])
    answer_mask = np.zeros((len(SIZES), A), np.float32)
    for c, r in enumerate(REAL):
        answer_mask[c, :r] = 1.0
    tasks = ClientTasks(
        answer_mask=jnp.asarray(answer_mask),
        task_kind=jnp.asarray(KINDS, jnp.int32),
        num_examples=jnp.asarray(SIZES, jnp.int32),
    )
    server_tx = make_server_optimizer("fedavg")
    server = init_server_state(shared, server_tx, jax.random.key(1))
    private_C = stack_clients([algorithm.init_private(shared, private)] * len(SIZES))

    run = make_round_fn(algorithm, server_tx, MeanAggregator("weighted"))
    new_server, new_private_C, metrics = run(
        frozen, server, private_C, tasks, jnp.arange(len(SIZES)), batches
    )

    # each client alone, on its unpadded batches, then the size-weighted average
    train_key, _ = round_keys(server)
    step = jax.jit(algorithm.local_step)
    deltas, privates = [], []
    for cid, (examples, answers) in enumerate(data):
        task = ClientTasks(
            *(x[cid] for x in (tasks.answer_mask, tasks.task_kind, tasks.num_examples))
        )
        ctx = client_context(frozen, server.shared, task, B, server.round)
        local = algorithm.begin_round(ctx, algorithm.init_private(shared, private))
        key = jax.random.fold_in(train_key, cid)
        for s, start in enumerate(range(0, SIZES[cid], B)):
            batch = {**{k: v[start : start + B] for k, v in examples.items()}, **answers}
            local, _ = step(ctx, local, batch, jax.random.fold_in(key, s))
        shared_k, private_k = algorithm.end_round(ctx, local)
        deltas.append(jax.tree.map(jnp.subtract, shared_k, server.shared))
        privates.append(private_k)
    w = np.asarray(SIZES, np.float32) / sum(SIZES)
    ref_shared = jax.tree.map(
        lambda g, *d: g + sum(wi * di for wi, di in zip(w, d)), server.shared, *deltas
    )

    diff = lambda a, b: max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )
    assert diff(new_server.shared, ref_shared) <= 1e-5
    assert diff(new_private_C, stack_clients(privates)) <= 1e-5
    assert diff(new_server.shared, server.shared) > 1e-3  # the round really trained A_s
    assert (
        diff(new_private_C["params"]["head"], jax.tree.map(lambda x: x[None], private["head"]))
        > 1e-3
    )
    np.testing.assert_array_equal(metrics["clients"]["steps"], [2, 3, 1])
    assert np.all(np.isfinite(np.asarray(metrics["clients"]["loss_shared"])))
