"""FedDAT's local update against a plain, un-vmapped reference written here from the method's
definition (docs/METHOD.md)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy_model as toy
from one_federation import make_round_fn

from feddat_jax.fl import local_optim, losses
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.algorithms import FedDAT, FedDATConfig
from feddat_jax.fl.round import client_context
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import init_server_state, stack_clients
from feddat_jax.peft.roles import flatten, merge, unflatten

OPTIM = local_optim.LocalOptimConfig(learning_rate=1e-2, schedule_epochs=2.0)
B1, B2, EPS, WD = OPTIM.b1, OPTIM.b2, OPTIM.eps, OPTIM.weight_decay


def hand_adamw(params, grads, state, lr):
    """PyTorch AdamW, leaf by leaf, with the official decay mask: no decay where the PyTorch name
    holds "bias" or "LayerNorm.weight" (here: our leaves named bias, and the scales of modules
    named LayerNorm, BERT-style; ViLT's lower-case layernorm_* and the head's LayerNorm ARE
    decayed)."""
    new_p, new_s = {}, dict(state)
    for path, p in params.items():
        m, v, t = state.get(path, (jnp.zeros_like(p), jnp.zeros_like(p), 0))
        g = grads[path]
        t += 1
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        decay = 0.0 if path.endswith(("bias", "LayerNorm/scale")) else WD
        p = p * (1 - lr * decay)
        new_p[path] = p - lr * (m / (1 - B1**t)) / (jnp.sqrt(v / (1 - B2**t)) + EPS)
        new_s[path] = (m, v, t)
    return new_p, new_s


def flat(tree, prefix: str) -> dict:
    """``tree``'s leaves by "/"-joined path, each path after ``prefix``."""
    return {prefix + path: v for path, v in flatten(tree).items()}


def hand_lr(tick, total):
    warm = np.floor(0.1 * total)
    return OPTIM.learning_rate * (
        tick / max(1, warm) if tick < warm else max(0.0, (total - tick) / max(1, total - warm))
    )


def reference_round(forward, frozen, hat, a_c, head, batches, mask, kind, num_batches):
    """The method literally: teacher, step 1 on {A_s, h}, step 2 on {A_c, h}, two ticks per batch."""
    a_s, state, tick, T = hat, {}, 0, 3.0
    total = np.floor(OPTIM.schedule_epochs * num_batches)
    for batch in batches:
        em, y = batch["example_mask"], batch["targets"]
        params = lambda s, c, h: merge(frozen, s, c, {"head": h})
        z_t = forward(params(hat, a_c, head), batch, "dat")

        def l_shared(s, h):
            z = forward(params(s, a_c, h), batch, "shared")
            return 0.5 * (
                losses.task_loss(z, y, mask, kind, em) + losses.kd_loss(z, z_t, mask, em, T)
            ), z

        (_, z_s), (g_s, g_h) = jax.value_and_grad(l_shared, argnums=(0, 1), has_aux=True)(a_s, head)
        lr = hand_lr(tick, total)
        both, state = hand_adamw(
            {**flat(a_s, "S/"), **flat(head, "H/")},
            {**flat(g_s, "S/"), **flat(g_h, "H/")},
            state,
            lr,
        )
        a_s = unflatten({k[2:]: v for k, v in both.items() if k.startswith("S/")})
        head = unflatten({k[2:]: v for k, v in both.items() if k.startswith("H/")})
        tick += 1

        def l_dat(c, h):
            z = forward(params(hat, c, h), batch, "dat")
            return 0.5 * (
                losses.task_loss(z, y, mask, kind, em) + losses.kd_loss(z, z_s, mask, em, T)
            )

        g_c, g_h = jax.grad(l_dat, argnums=(0, 1))(a_c, head)
        lr = hand_lr(tick, total)
        both, state = hand_adamw(
            {**flat(a_c, "C/"), **flat(head, "H/")},
            {**flat(g_c, "C/"), **flat(g_h, "H/")},
            state,
            lr,
        )
        a_c = unflatten({k[2:]: v for k, v in both.items() if k.startswith("C/")})
        head = unflatten({k[2:]: v for k, v in both.items() if k.startswith("H/")})
        tick += 1
    return a_s, a_c, head


def toy_setup(n=10, batch_size=4, kind=0):
    rng = np.random.default_rng(3)
    ex = toy.client_examples(rng, n, 5, kind, 4)
    frozen, shared, private = toy.split(toy.init_params(jax.random.key(2), 5))
    tasks = toy.make_tasks([n], [kind], [4], 5)
    task = jax.tree.map(lambda x: x[0], tasks)
    return ex, frozen, shared, private, tasks, task


@pytest.mark.parametrize("kind", [0, 1], ids=["vqa", "classification"])
def test_local_epoch_equals_reference(kind):
    ex, frozen, shared, private, _, task = toy_setup(kind=kind)
    algo = FedDAT(toy.forward, FedDATConfig(optim=OPTIM))
    ctx = client_context(frozen, shared, task, 4, jnp.int32(0))
    local = algo.begin_round(ctx, algo.init_private(shared, private))
    batches = toy.unpadded_batches(ex, 4)  # sizes 4, 4, 2
    for batch in batches:
        local, _ = algo.local_step(ctx, local, batch, None)
    client_part = {"adapter_client": private["adapter_client"]}
    ref_s, ref_c, ref_h = reference_round(
        toy.forward,
        frozen,
        shared,
        client_part,
        private["head"],
        batches,
        task.answer_mask,
        task.task_kind,
        3,
    )
    for got, want in [(local["shared"], ref_s), (local["client"], ref_c), (local["head"], ref_h)]:
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, atol=1e-6, rtol=0)
    assert int(local["tick"]) == 2 * len(batches)


def test_each_substep_touches_only_its_own_params():
    ex, frozen, shared, private, _, task = toy_setup()
    algo = FedDAT(toy.forward, FedDATConfig(optim=OPTIM))
    ctx = client_context(frozen, shared, task, 4, jnp.int32(0))
    local = algo.begin_round(ctx, algo.init_private(shared, private))
    batch = toy.unpadded_batches(ex, 4)[0]
    hat_before = jax.tree.map(np.array, ctx.global_shared)
    for _ in range(2):  # the second batch has non-zero Adam moments everywhere
        z_t = algo.teacher_logits(ctx, local, batch)
        after1, z_s, _ = algo.shared_step(ctx, local, batch, z_t)
        same = lambda a, b: all(
            np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
        )
        assert same(after1["client"], local["client"]) and same(
            after1["opt"]["client"], local["opt"]["client"]
        )
        assert not same(after1["shared"], local["shared"])
        after2, _ = algo.dat_step(ctx, after1, batch, z_s)
        assert same(after2["shared"], after1["shared"]) and same(
            after2["opt"]["shared"], after1["opt"]["shared"]
        )
        assert not same(after2["client"], after1["client"])
        assert not same(after2["head"], after1["head"])  # the head trains in both steps
        local = after2
    assert same(ctx.global_shared, hat_before)  # Â_s never changes during the round


def test_freeze_client_adapter_after_round0_reproduces_the_official_bug():
    ex, frozen, shared, private, _, task = toy_setup()
    algo = FedDAT(toy.forward, FedDATConfig(optim=OPTIM, freeze_client_adapter_after_round0=True))
    batch = toy.unpadded_batches(ex, 4)[0]
    for rnd, should_change in [(0, True), (1, False)]:
        ctx = client_context(frozen, shared, task, 4, jnp.int32(rnd))
        local = algo.begin_round(ctx, algo.init_private(shared, private))
        new, _ = algo.local_step(ctx, local, batch, None)
        changed = not np.array_equal(
            new["client"]["adapter_client"]["kernel"], local["client"]["adapter_client"]["kernel"]
        )
        assert changed == should_change
        assert not np.array_equal(new["head"]["kernel"], local["head"]["kernel"])


class PoisonedPrivate(FedDAT):
    """FedDAT whose returned private state is all NaN: the server must not notice."""

    def end_round(self, ctx, local):
        shared, private = super().end_round(ctx, local)
        poison = lambda x: jnp.full_like(x, jnp.nan) if jnp.issubdtype(x.dtype, jnp.floating) else x
        return shared, jax.tree.map(poison, private)


def test_private_state_never_reaches_the_server():
    ex, frozen, shared, private, tasks, _ = toy_setup()
    batches = stack_clients([toy.batch_epoch(ex, 4, 3)] * 2)
    tasks2 = jax.tree.map(lambda x: jnp.concatenate([x, x]), tasks)
    server_tx = make_server_optimizer("fedavgm", learning_rate=1.0)
    results = []
    for algo_cls in (FedDAT, PoisonedPrivate):
        algo = algo_cls(toy.forward, FedDATConfig(optim=OPTIM))
        private_C = stack_clients([algo.init_private(shared, private)] * 2)
        server = init_server_state(shared, server_tx, jax.random.key(0))
        server, private_C, _ = make_round_fn(algo, server_tx, MeanAggregator())(
            frozen, server, private_C, tasks2, jnp.arange(2), batches
        )
        results.append((server, private_C))
    (clean, _), (poisoned, poisoned_private) = results
    floats = [x for x in jax.tree.leaves(poisoned_private) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(bool(jnp.all(jnp.isnan(x))) for x in floats)
    as_np = lambda s: jax.tree.leaves(s.replace(rng=jax.random.key_data(s.rng)))
    for a, b in zip(as_np(clean), as_np(poisoned)):
        assert np.all(np.isfinite(a)) and np.array_equal(a, b)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"temperature": 0.0}, "temperature"),
        ({"teacher_mode": "shared"}, "teacher_mode"),
        ({"eval_teacher": "newest"}, "eval_teacher"),
        ({"kd_weight": -1.0}, "kd_weight"),
    ],
)
def test_bad_config_values_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FedDATConfig(**kwargs)


def tiny_vilt_setup(num_answers=5, n=6):
    from feddat_jax import methods
    from feddat_jax.models.inputs import to_model_inputs
    from feddat_jax.models.vilt import ViltConfig, ViltVQA
    from feddat_jax.peft.config import PeftConfig

    rng = np.random.default_rng(0)
    ex = {
        "input_ids": rng.integers(1, 99, (n, 8)).astype(np.int32),
        "attention_mask": np.ones((n, 8), np.int32),
        "image": rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8),
        "pixel_mask": np.ones((n, 32, 32), np.uint8),
        "targets": np.eye(num_answers, dtype=np.float32)[rng.integers(0, 4, n)] * 0.9,
        "example_mask": np.ones((n,), np.float32),
    }
    ex["attention_mask"][:, 6:] = 0
    ex["pixel_mask"][:, :, 16:] = 0  # the right half of every image is padding
    model = ViltVQA(ViltConfig.tiny(), PeftConfig(adapters=("shared", "client")), num_answers)
    params = model.init(jax.random.key(0), to_model_inputs(ex), adapter_mode="none")["params"]
    method = methods.get_method("feddat")
    frozen, shared, private = methods.split_params(method, params)
    forward = methods.make_forward(model, to_model_inputs)
    return ex, forward, frozen, shared, private


def test_feddat_on_tiny_vilt_equals_reference():
    ex, forward, frozen, shared, private = tiny_vilt_setup()
    tasks = toy.make_tasks([6], [0], [4], 5)
    task = jax.tree.map(lambda x: x[0], tasks)
    # Adam normalises away the gradient's scale, so float noise of 1e-7 in a tiny gradient moves a
    # parameter by ~lr·1e-7 relative: a moderate lr keeps the comparison at the 1e-6 bar.
    algo = FedDAT(forward, FedDATConfig(optim=OPTIM))
    ctx = client_context(frozen, shared, task, 4, jnp.int32(0))
    local = algo.begin_round(ctx, algo.init_private(shared, private))
    batches = toy.unpadded_batches(ex, 4)  # sizes 4, 2
    step = jax.jit(algo.local_step)
    for batch in batches:
        local, _ = step(ctx, local, batch, None)
    head = private["head"]
    client_part = {k: v for k, v in private.items() if k != "head"}
    ref_s, ref_c, ref_h = reference_round(
        forward, frozen, shared, client_part, head, batches, task.answer_mask, task.task_kind, 2
    )
    for got, want in [(local["shared"], ref_s), (local["client"], ref_c), (local["head"], ref_h)]:
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, atol=1e-6, rtol=0)
    moved = jax.tree.leaves(
        jax.tree.map(lambda a, b: jnp.max(jnp.abs(a - b)), local["shared"], shared)
    )
    assert max(float(m) for m in moved) > 1e-3


@pytest.mark.parametrize("kind", [0, 1], ids=["vqa", "classification"])
def test_padded_examples_change_nothing(kind):
    """The loop pads every client's epoch to a static [S, B]: the padded rows (example_mask 0)
    hold garbage here, and the local epoch must equal the reference on the unpadded batches,
    so FedDAT's task and KD losses must both honour the example mask."""
    ex, frozen, shared, private, _, task = toy_setup(kind=kind)
    padded = toy.batch_epoch(ex, 4, 3)  # 10 examples: the last batch has 2 padded rows
    rng = np.random.default_rng(7)
    pad = padded["example_mask"] == 0
    assert pad.sum() == 2
    padded["image"][pad] = rng.integers(0, 256, padded["image"][pad].shape, dtype=np.uint8)
    padded["input_ids"][pad] = rng.integers(1, 20, padded["input_ids"][pad].shape)
    padded["targets"][pad] = rng.uniform(0.0, 1.0, padded["targets"][pad].shape)
    algo = FedDAT(toy.forward, FedDATConfig(optim=OPTIM))
    ctx = client_context(frozen, shared, task, 4, jnp.int32(0))
    local = algo.begin_round(ctx, algo.init_private(shared, private))
    for s in range(3):
        local, _ = algo.local_step(ctx, local, {k: v[s] for k, v in padded.items()}, None)
    client_part = {"adapter_client": private["adapter_client"]}
    ref_s, ref_c, ref_h = reference_round(
        toy.forward,
        frozen,
        shared,
        client_part,
        private["head"],
        toy.unpadded_batches(ex, 4),
        task.answer_mask,
        task.task_kind,
        3,
    )
    for got, want in [(local["shared"], ref_s), (local["client"], ref_c), (local["head"], ref_h)]:
        for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(g, w, atol=1e-6, rtol=0)
