"""Every method of the paper's tables builds and trains through the same machinery."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import toy_model as toy

from feddat_jax import methods
from feddat_jax.fl import local_optim
from feddat_jax.fl.round import client_context
from feddat_jax.models.inputs import to_model_inputs
from feddat_jax.models.vilt import ViltConfig, ViltVQA
from feddat_jax.peft.roles import count_params, flatten

OPTIM = local_optim.LocalOptimConfig(learning_rate=1e-2)


def batch(n=4, a=5):
    rng = np.random.default_rng(0)
    return {
        "input_ids": rng.integers(1, 99, (n, 8)).astype(np.int32),
        "attention_mask": np.ones((n, 8), np.int32),
        "image": rng.integers(0, 256, (n, 32, 32, 3)).astype(np.uint8),
        "pixel_mask": np.ones((n, 32, 32), np.uint8),
        "targets": np.eye(a, dtype=np.float32)[rng.integers(0, a, n)],
        "example_mask": np.ones((n,), np.float32),
    }


# what each method shares with the server: a regex every shared path must match
SHARED = {
    "feddat": "adapter_shared",
    "local_adapter": None,
    "fedavg_full": "^vilt/",
    "fedavg_lora": "lora_",
    "fedavg_bitfit": "bias$",
    "fedavg_layernorm": "(?i)norm",
    "fedavg_prompt": "prompts",
}


@pytest.mark.parametrize("name", sorted(methods.METHODS))
def test_method_builds_and_one_local_step_trains_what_it_should(name):
    method = methods.get_method(name)
    model = ViltVQA(ViltConfig.tiny(), methods.peft_config(method), 5)
    b = batch()
    params = model.init(jax.random.key(0), to_model_inputs(b), adapter_mode="none")["params"]
    frozen, shared, private = methods.split_params(method, params)
    assert "head" in private and (count_params(frozen) > 0) == (name != "fedavg_full")
    pattern = SHARED.get(name, "adapter_shared")
    if pattern is None:
        assert not shared
    else:
        import re

        assert shared and all(re.search(pattern, p) for p in flatten(shared))
    algo = methods.build_algorithm(method, methods.make_forward(model, to_model_inputs), OPTIM)
    task = jax.tree.map(lambda x: x[0], toy.make_tasks([4], [1], [5], 5))
    ctx = client_context(frozen, shared, task, 4, jnp.int32(0))
    local = algo.begin_round(ctx, algo.init_private(shared, private))
    for _ in range(2):  # the warmup schedule's first tick has lr 0
        local, metrics = algo.local_step(ctx, local, b, None)
    new_shared, new_private = algo.end_round(ctx, local)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    changed = lambda a, c: any(
        not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c))
    )
    assert changed(new_private["params"]["head"], private["head"])
    if shared:
        assert changed(new_shared, shared)
    logits = algo.eval_logits(ctx, new_private, new_shared, b)
    assert set(logits) == set(algo.eval_variants)


def test_unknown_method_lists_choices():
    with pytest.raises(ValueError, match="choose from: .*feddat"):
        methods.get_method("fedsgd")
