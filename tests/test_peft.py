"""Adapters, DAT mix, LoRA, prompts config and the param-path partition."""

from __future__ import annotations

import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddat_jax.fl.local_optim import decay_mask
from feddat_jax.models.vilt import ViltConfig, ViltVQA
from feddat_jax.peft import roles
from feddat_jax.peft.adapters import AdapterSite
from feddat_jax.peft.config import PeftConfig
from feddat_jax.peft.roles import (
    count_params,
    flatten,
    merge,
    role_of,
    rules_for,
    split,
    unflatten,
)

FULL_PEFT = PeftConfig(
    adapters=("shared", "client"),
    dat_gate=True,
    lora_rank=4,
    num_text_prompts=2,
    num_visual_prompts=2,
    prompt_hidden=8,
)


def tiny_inputs(batch: int = 2) -> dict[str, jnp.ndarray]:
    rng = np.random.default_rng(1)
    attention_mask = np.ones((batch, 6), np.int32)
    attention_mask[-1, 4:] = 0
    pixel_mask = np.ones((batch, 64, 64), np.int32)
    pixel_mask[-1, :, 40:] = 0
    return {
        "input_ids": jnp.asarray(rng.integers(0, 99, (batch, 6)), jnp.int32),
        "attention_mask": jnp.asarray(attention_mask),
        "pixel_values": jnp.asarray(rng.normal(size=(batch, 64, 64, 3)), jnp.float32),
        "pixel_mask": jnp.asarray(pixel_mask),
    }


def init(model, inputs=None) -> dict:
    return model.init(jax.random.key(0), tiny_inputs() if inputs is None else inputs)["params"]


def with_leaves(params: dict, pattern: str, fn) -> dict:
    """params with fn applied to every leaf whose path matches `pattern`."""
    return unflatten({p: fn(v) if re.search(pattern, p) else v for p, v in flatten(params).items()})


@pytest.mark.parametrize("gate", [False, True])
def test_zero_up_projection_reproduces_the_backbone_in_every_mode(gate):
    inputs = tiny_inputs()
    peft = PeftConfig(adapters=("shared", "client"), dat_gate=gate)
    model = ViltVQA(ViltConfig.tiny(), peft, num_answers=3)
    params = init(model, inputs)
    plain = ViltVQA(ViltConfig.tiny(), num_answers=3)
    backbone = {p: v for p, v in flatten(params).items() if "adapter_" not in p}
    want = plain.apply({"params": unflatten(backbone)}, inputs)
    zeroed = with_leaves(params, r"/adapter_(shared|client)/up/", jnp.zeros_like)
    for mode in ("none", "shared", "client", "dat"):
        np.testing.assert_array_equal(
            model.apply({"params": zeroed}, inputs, adapter_mode=mode), want
        )
        if mode != "none":  # and the random (non-zero) up-projection does change the output
            assert (
                np.abs(model.apply({"params": params}, inputs, adapter_mode=mode) - want).max()
                > 1e-6
            )


def test_lora_with_zero_b_reproduces_the_backbone():
    inputs = tiny_inputs()
    model = ViltVQA(
        ViltConfig.tiny(),
        PeftConfig(lora_rank=4, lora_targets=("query", "key", "value")),
        num_answers=3,
    )
    params = init(model, inputs)
    paths = flatten(params)
    assert "vilt/encoder/layer_1/attention/value/lora_b" in paths
    assert not np.any(paths["vilt/encoder/layer_1/attention/value/lora_b"])  # B = 0 at init
    assert np.std(paths["vilt/encoder/layer_1/attention/value/lora_a"]) > 0
    plain = unflatten({p: v for p, v in paths.items() if "lora_" not in p})
    want = ViltVQA(ViltConfig.tiny(), num_answers=3).apply({"params": plain}, inputs)
    np.testing.assert_allclose(model.apply({"params": params}, inputs), want, atol=1e-7)
    bumped = with_leaves(params, r"/lora_b$", lambda b: b + 0.05)
    assert np.abs(model.apply({"params": bumped}, inputs) - want).max() > 1e-5


class _Layer(nn.Module):
    """AdapterSite shares its parent's scope, so it needs a parent."""

    peft: PeftConfig

    @nn.compact
    def __call__(self, y, mode):
        return AdapterSite(self.peft)(y, mode)


def _adapter(p: dict, u: jnp.ndarray) -> jnp.ndarray:
    return (
        jax.nn.relu(u @ p["down"]["kernel"] + p["down"]["bias"]) @ p["up"]["kernel"]
        + p["up"]["bias"]
    )


def test_dat_mode_is_the_weighted_sum_of_the_two_adapters_by_hand():
    y = jax.random.normal(jax.random.key(3), (2, 5, 32))
    layer = _Layer(PeftConfig(adapters=("shared", "client"), dat_weights=(0.7, 0.2)))
    params = layer.init(jax.random.key(0), y, "none")["params"]
    assert set(params) == {"adapter_shared", "adapter_client"}
    params = with_leaves(
        params, r"/bias$", lambda b: b + 0.1
    )  # non-zero biases enter the check too
    a_c, a_s = _adapter(params["adapter_client"], y), _adapter(params["adapter_shared"], y)
    got = layer.apply({"params": params}, y, "dat")
    np.testing.assert_allclose(got, y + 0.7 * a_c + 0.2 * a_s, atol=1e-6)
    np.testing.assert_allclose(layer.apply({"params": params}, y, "client"), y + a_c, atol=1e-6)
    np.testing.assert_allclose(layer.apply({"params": params}, y, "shared"), y + a_s, atol=1e-6)


def test_learned_gate_starts_at_one_half_and_gates_per_token():
    y = jax.random.normal(jax.random.key(3), (2, 5, 32))
    layer = _Layer(PeftConfig(adapters=("shared", "client"), dat_gate=True))
    params = layer.init(jax.random.key(0), y, "none")["params"]
    a_c, a_s = _adapter(params["adapter_client"], y), _adapter(params["adapter_shared"], y)
    np.testing.assert_allclose(
        layer.apply({"params": params}, y, "dat"), y + 0.5 * a_c + 0.5 * a_s, atol=1e-6
    )
    params["adapter_gate"] = {"kernel": jnp.full((32, 1), 0.3), "bias": jnp.array([0.1])}
    g = jax.nn.sigmoid(y @ params["adapter_gate"]["kernel"] + 0.1)
    np.testing.assert_allclose(
        layer.apply({"params": params}, y, "dat"), y + g * a_c + (1 - g) * a_s, atol=1e-6
    )


def test_adapter_init_and_vilt_b_parameter_count():
    model = ViltVQA(ViltConfig(), PeftConfig(adapters=("shared", "client")), num_answers=100)
    shapes = jax.eval_shape(model.init, jax.random.key(0), tiny_inputs())["params"]
    shared = {p: v for p, v in flatten(shapes).items() if "/adapter_shared/" in p}
    assert count_params(shared) == 894_528  # 12 sites x (768*48 + 48 + 48*768 + 768)
    assert shapes["vilt"]["encoder"]["layer_11"]["adapter_client"]["down"]["kernel"].shape == (
        768,
        48,
    )

    params = init(
        ViltVQA(ViltConfig.tiny(), PeftConfig(adapters=("shared", "client"), adapter_reduction=2))
    )
    site = params["vilt"]["encoder"]["layer_0"]
    for name in ("adapter_shared", "adapter_client"):
        for proj in ("down", "up"):
            assert (
                0.01 < float(jnp.std(site[name][proj]["kernel"])) < 0.03
            )  # N(0, 0.02), up NOT zero
            assert not np.any(site[name][proj]["bias"])
    assert not np.allclose(
        site["adapter_shared"]["up"]["kernel"], site["adapter_client"]["up"]["kernel"]
    )


def test_mode_and_config_errors():
    model = ViltVQA(ViltConfig.tiny(), PeftConfig(adapters=("shared",)), num_answers=3)
    params = init(model)
    with pytest.raises(ValueError, match="needs adapters"):
        model.apply({"params": params}, tiny_inputs(), adapter_mode="dat")
    with pytest.raises(ValueError, match="adapter_mode must be one of"):
        model.apply({"params": params}, tiny_inputs(), adapter_mode="both")
    with pytest.raises(ValueError, match=r"dat_weights .* in \[0, 1\]"):
        PeftConfig(adapters=("shared", "client"), dat_weights=(1.5, 0.5))
    with pytest.raises(ValueError, match="adapters must be distinct names"):
        PeftConfig(adapters=("global",))
    with pytest.raises(ValueError, match="lora_targets"):
        PeftConfig(lora_rank=2, lora_targets=("dense",))
    with pytest.raises(ValueError, match="dat_gate needs"):
        PeftConfig(adapters=("shared",), dat_gate=True)
    config = PeftConfig(adapters=["shared", "client"], dat_weights=[0.5, 0.5])  # lists from configs
    assert hash(config) == hash(PeftConfig(adapters=("shared", "client")))


@pytest.fixture(scope="module")
def full_params() -> dict:
    return init(ViltVQA(ViltConfig.tiny(), FULL_PEFT, num_answers=3))


def test_split_merge_round_trip(full_params):
    for preset in roles.RULES:
        parts = split(full_params, rules_for(preset))
        assert sum(count_params(p) for p in parts) == count_params(full_params)
        for role, part in zip(roles.ROLES, parts):
            assert all(role_of(p, rules_for(preset)) == role for p in flatten(part))
        merged = merge(*parts)
        assert jax.tree_util.tree_structure(merged) == jax.tree_util.tree_structure(full_params)
        assert all(
            a is b
            for a, b in zip(
                jax.tree_util.tree_leaves(merged), jax.tree_util.tree_leaves(full_params)
            )
        )
    with pytest.raises(ValueError, match="more than one part"):
        merge(full_params, {"head": full_params["head"]})


LAYER = "vilt/encoder/layer_1"
EXPECTED_ROLES = {  # path -> role per preset (presets not listed for a path: frozen)
    f"{LAYER}/adapter_shared/down/kernel": {
        "feddat": "shared",
        "adapter": "shared",
        "local_adapter": "private",
    },
    f"{LAYER}/adapter_client/up/bias": {"feddat": "private"},
    f"{LAYER}/adapter_gate/kernel": {"feddat": "private"},
    f"{LAYER}/attention/query/lora_a": {"lora": "shared"},
    f"{LAYER}/attention/query/kernel": {"full": "shared"},
    f"{LAYER}/attention/query/bias": {"full": "shared", "bitfit": "shared"},
    f"{LAYER}/layernorm_after/scale": {"full": "shared", "layernorm": "shared"},
    "vilt/embeddings/text_embeddings/LayerNorm/bias": {
        "full": "shared",
        "layernorm": "shared",
        "bitfit": "shared",
    },
    "vilt/layernorm/scale": {"full": "shared", "layernorm": "shared"},
    "vilt/embeddings/cls_token": {"full": "shared"},
    "vilt/prompts/visual_mlp/tokens": {"prompt": "shared"},
    "vilt/prompts/text_mlp/dense_in/bias": {"prompt": "shared"},
    f"{LAYER}/adapter_shared/up/bias": {
        "feddat": "shared",
        "adapter": "shared",
        "local_adapter": "private",
    },
}


@pytest.mark.parametrize("preset", sorted(roles.RULES))
def test_preset_roles(preset, full_params):
    rules = rules_for(preset)
    paths = flatten(full_params)
    for path, expected in EXPECTED_ROLES.items():
        assert path in paths
        assert role_of(path, rules) == expected.get(preset, "frozen"), (preset, path)
    for path in paths:
        if path.startswith("head/"):
            assert role_of(path, rules) == "private"
    shared_mask = flatten(roles.mask(full_params, rules, "shared"))
    assert {p for p, m in shared_mask.items() if m} == set(flatten(split(full_params, rules)[1]))


def test_partition_helpers_and_errors(full_params):
    with pytest.raises(
        ValueError, match=r"unknown partition preset 'fedavg'; choose one of \['adapter'"
    ):
        rules_for("fedavg")
    with pytest.raises(ValueError, match="no partition rule matches"):
        role_of("vilt/pooler/kernel", [(r"^head/", "private")])
    decay = flatten(decay_mask(full_params))  # the local optimizer's weight-decay mask
    assert decay["vilt/pooler/kernel"] and decay["vilt/embeddings/cls_token"]
    assert not decay["vilt/pooler/bias"]  # the official rule: tests/test_decay_mask.py
    assert (
        count_params({"a": jnp.zeros((3, 4)), "b": {"c": jax.ShapeDtypeStruct((5,), jnp.float32)}})
        == 17
    )
