"""FedDAT's three evaluation variants against the method's definition, written out by hand on the
toy model: the DAT (A_c and the round-start Â_s, ½-½), A_c alone and A_s alone (docs/METHOD.md).

A variant computed in another adapter mode (A_s alone through the client adapter, say) gives
numbers of the right shape that no other test compares: here every variant is compared to its
own hand-written forward, with A_c, A_s and the round-start Â_s all different."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toy_model as toy
from feddat_jax.fl import local_optim
from feddat_jax.fl.algorithms import FedDAT, FedDATConfig
from feddat_jax.fl.round import client_context


def by_hand(params: dict, batch: dict, adapters: list[tuple[float, dict]]) -> jax.Array:
    """The toy backbone, plus ``weight · adapter(h)`` for each given adapter, then the head."""
    x = batch["image"].reshape(batch["image"].shape[:-3] + (-1,)).astype(jnp.float32) / 255.0
    x = x + 0.01 * jnp.sum(batch["input_ids"], axis=-1, keepdims=True)
    h = jnp.tanh(x @ params["backbone"]["kernel"] + params["backbone"]["bias"])
    out = h + sum(w * jnp.tanh(h @ a["kernel"] + a["bias"]) for w, a in adapters)
    return out @ params["head"]["kernel"] + params["head"]["bias"]


@pytest.mark.parametrize("eval_teacher", ["round_start", "latest_global"])
def test_each_variant_uses_its_own_adapters(eval_teacher):
    params = toy.init_params(jax.random.key(0), 5)
    frozen, shared, private = toy.split(params)
    round_start = {"adapter_shared": toy.init_params(jax.random.key(1), 5)["adapter_shared"]}
    examples = toy.client_examples(np.random.default_rng(0), 6, 5, 0, 4)
    batch = jax.tree.map(jnp.asarray, examples)
    task = jax.tree.map(lambda x: x[0], toy.make_tasks([6], [0], [4], 5))
    algo = FedDAT(
        toy.forward,
        FedDATConfig(optim=local_optim.LocalOptimConfig(), eval_teacher=eval_teacher),
    )
    ctx = client_context(frozen, round_start, task, 4, jnp.int32(0))
    logits = algo.eval_logits(ctx, algo.init_private(shared, private), shared, batch)

    a_c, a_s = private["adapter_client"], shared["adapter_shared"]
    teacher = a_s if eval_teacher == "latest_global" else round_start["adapter_shared"]
    want = {
        "dat": by_hand(params, batch, [(0.5, a_c), (0.5, teacher)]),
        "client": by_hand(params, batch, [(1.0, a_c)]),
        "shared": by_hand(params, batch, [(1.0, a_s)]),
    }
    assert set(logits) == set(want)
    for variant, expected in want.items():
        np.testing.assert_allclose(logits[variant], expected, atol=1e-6, err_msg=variant)
    for a, b in [("dat", "client"), ("dat", "shared"), ("client", "shared")]:
        assert not np.allclose(want[a], want[b], atol=1e-3)  # the variants can be told apart
