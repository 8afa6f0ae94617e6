"""Our Flax ViLT against transformers' PyTorch ViltModel / ViltForQuestionAnswering."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from feddat_jax.models.vilt import ViltConfig, ViltModel, ViltVQA
from feddat_jax.models.vilt_checkpoint import load_vilt_params, read_vilt_config
from feddat_jax.peft.config import PeftConfig
from feddat_jax.peft.roles import count_params, flatten, mask, merge, rules_for, split

NUM_ANSWERS = 5
TEXT_LEN, HEIGHT, WIDTH = 8, 64, 96  # 4 x 6 patches of 16 px, a non-square grid


def random_hf_vqa(config: ViltConfig, num_answers: int = NUM_ANSWERS, seed: int = 0):
    """A transformers ViltForQuestionAnswering whose every tensor (LayerNorms, CLS and position
    embeddings included, which HF initialises to constants) is random."""
    hf_config = transformers.ViltConfig(
        **{k: v for k, v in config.to_hf_dict().items() if k != "model_type"},
        num_labels=num_answers,
    )
    torch.manual_seed(seed)
    model = transformers.ViltForQuestionAnswering(hf_config).eval()
    with torch.no_grad():
        for tensor in model.parameters():
            tensor.add_(0.1 * torch.randn_like(tensor))
    return model


def make_inputs(seed: int = 0, batch: int = 2) -> dict[str, np.ndarray]:
    """Text padding in example 1 and an image whose bottom and right are padding."""
    rng = np.random.default_rng(seed)
    attention_mask = np.ones((batch, TEXT_LEN), np.int64)
    attention_mask[1, 5:] = 0
    pixel_mask = np.ones((batch, HEIGHT, WIDTH), np.int64)
    pixel_mask[1, 40:, :] = 0  # 40 rows: 3 patch rows, the third half padding (nearest sampling)
    pixel_mask[1, :, 70:] = 0
    return {
        "input_ids": rng.integers(0, 99, (batch, TEXT_LEN)),
        "attention_mask": attention_mask,
        "pixel_values": rng.normal(size=(batch, HEIGHT, WIDTH, 3)).astype(np.float32),
        "pixel_mask": pixel_mask,
    }


def torch_inputs(inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    out = {k: torch.tensor(v) for k, v in inputs.items()}
    out["pixel_values"] = out["pixel_values"].permute(0, 3, 1, 2)
    return out


def init_params(model, inputs) -> dict:
    return model.init(jax.random.key(0), jax.tree_util.tree_map(jnp.asarray, inputs))["params"]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> tuple[Path, transformers.ViltForQuestionAnswering]:
    folder = tmp_path_factory.mktemp("hf_vqa")
    model = random_hf_vqa(ViltConfig.tiny())
    model.save_pretrained(folder)
    return folder, model


def test_logits_and_pooled_match_transformers(hf_folder):
    folder, hf = hf_folder
    inputs = make_inputs()
    config = read_vilt_config(folder)
    model = ViltVQA(config, num_answers=NUM_ANSWERS)
    params = load_vilt_params(folder, init_params(model, inputs))
    with torch.no_grad():
        want_logits = hf(**torch_inputs(inputs)).logits.numpy()
        want = hf.vilt(**torch_inputs(inputs))

    logits = jax.jit(model.apply)({"params": params}, inputs)
    np.testing.assert_allclose(logits, want_logits, atol=1e-5, rtol=0)
    seq, pooled = ViltModel(config).apply({"params": params["vilt"]}, inputs)
    np.testing.assert_allclose(pooled, want.pooler_output.numpy(), atol=1e-5, rtol=0)
    # Text tokens and the image CLS token (index TEXT_LEN) are the same tokens in both models; the
    # patch tokens differ in order and count (we keep all patches, see vilt.py's docstring).
    np.testing.assert_allclose(
        seq[:, : TEXT_LEN + 1], want.last_hidden_state[:, : TEXT_LEN + 1].numpy(), atol=1e-5
    )
    assert seq.shape[1] == TEXT_LEN + 1 + (HEIGHT // 16) * (WIDTH // 16)


def test_valid_patch_tokens_match_as_a_set(hf_folder):
    """For the full image (example 0) transformers keeps every patch, in a random order."""
    folder, hf = hf_folder
    inputs = make_inputs()
    params = load_vilt_params(
        folder, init_params(ViltVQA(ViltConfig.tiny(), num_answers=NUM_ANSWERS), inputs)
    )
    seq, _ = ViltModel(ViltConfig.tiny()).apply({"params": params["vilt"]}, inputs)
    with torch.no_grad():
        want = hf.vilt(**torch_inputs(inputs)).last_hidden_state.numpy()
    ours, theirs = np.asarray(seq[0, TEXT_LEN + 1 :]), want[0, TEXT_LEN + 1 :]
    order = lambda x: x[np.lexsort(x.T[::-1])]
    np.testing.assert_allclose(order(ours), order(theirs), atol=1e-5)


def test_bf16_compute_keeps_fp32_params(hf_folder):
    folder, _ = hf_folder
    inputs = make_inputs()
    config = read_vilt_config(folder)
    params = load_vilt_params(folder, init_params(ViltVQA(config, num_answers=NUM_ANSWERS), inputs))
    fp32 = ViltVQA(config, num_answers=NUM_ANSWERS).apply({"params": params}, inputs)
    bf16_model = ViltVQA(config, num_answers=NUM_ANSWERS, dtype=jnp.bfloat16)
    assert all(v.dtype == jnp.float32 for v in flatten(init_params(bf16_model, inputs)).values())
    bf16 = bf16_model.apply({"params": params}, inputs)
    assert bf16.dtype == jnp.float32
    np.testing.assert_allclose(bf16, fp32, atol=0.05)


def test_prompts_keep_the_pooled_cls_and_extend_the_sequence():
    inputs = make_inputs()
    peft = PeftConfig(num_text_prompts=3, num_visual_prompts=2, prompt_hidden=8)
    model = ViltModel(ViltConfig.tiny(), peft)
    params = init_params(model, inputs)
    assert set(params["prompts"]) == {"text_mlp", "visual_mlp"}
    assert params["prompts"]["visual_mlp"]["tokens"].shape == (2, 32)
    seq, pooled = model.apply({"params": params}, inputs)
    assert seq.shape[1] == TEXT_LEN + 3 + 1 + 2 + 24
    np.testing.assert_allclose(
        jnp.tanh(seq[:, 0] @ params["pooler"]["kernel"] + params["pooler"]["bias"]),
        pooled,
        atol=1e-6,
    )
    # The prompts change the output: they are attended to.
    no_prompts = {k: v for k, v in params.items() if k != "prompts"}
    _, pooled_plain = ViltModel(ViltConfig.tiny()).apply({"params": no_prompts}, inputs)
    assert np.abs(pooled - pooled_plain).max() > 1e-4


@pytest.mark.slow
def test_vilt_b32_forward_backward_on_cpu():
    """ViLT-B/32 shapes (random weights), batch 2 at 384x384, gradient w.r.t. FedDAT's shared part."""
    config = ViltConfig()
    model = ViltVQA(config, PeftConfig(adapters=("shared", "client")), num_answers=100)
    rng = np.random.default_rng(0)
    inputs = {
        "input_ids": rng.integers(0, config.vocab_size, (2, 40)).astype(np.int32),
        "attention_mask": np.ones((2, 40), np.int32),
        "pixel_values": rng.normal(size=(2, 384, 384, 3)).astype(np.float32),
        "pixel_mask": np.ones((2, 384, 384), np.int32),
    }
    params = jax.jit(model.init)(jax.random.key(0), inputs)["params"]
    rules = rules_for("feddat")
    frozen, shared, private = split(params, rules)
    assert count_params(frozen) > 80_000_000

    def loss(shared_part):
        logits = model.apply(
            {"params": merge(frozen, shared_part, private)}, inputs, adapter_mode="dat"
        )
        return jnp.mean(logits**2)

    value, grads = jax.jit(jax.value_and_grad(loss))(shared)
    assert np.isfinite(value)
    leaves = jax.tree_util.tree_leaves(grads)
    assert len(leaves) == 12 * 4 and all(np.isfinite(g).all() for g in leaves)
    assert any(np.abs(g).max() > 0 for g in leaves)
    assert not any(flatten(mask(params, rules, "shared"))[p] for p in flatten(frozen))


def _torch_adapter(site: dict):
    """a(u) = W_up · ReLU(W_down · u + b_down) + b_up from one of our adapters' params."""
    t = lambda x: torch.tensor(np.asarray(x))
    down_w, down_b = t(site["down"]["kernel"]), t(site["down"]["bias"])
    up_w, up_b = t(site["up"]["kernel"]), t(site["up"]["bias"])
    return lambda u: torch.relu(u @ down_w + down_b) @ up_w + up_b


@pytest.mark.parametrize("mode", ["shared", "client", "dat"])
def test_adapters_sit_after_the_ffn_residual_with_the_default_half_half_mix(hf_folder, mode):
    """A hand-placed reference: transformers' ViLT with a hook on every layer's ``ViltOutput``,
    whose output is ``y = FFN(LN(h)) + h``, adding ``a(y)`` (DAT: ``½·a_c(y) + ½·a_s(y)``).
    The adapters are random and non-zero, so the placement and the mix both show in the logits
    (a zero up-projection would hide them)."""
    folder, hf = hf_folder
    inputs = make_inputs()
    model = ViltVQA(
        ViltConfig.tiny(), PeftConfig(adapters=("shared", "client")), num_answers=NUM_ANSWERS
    )
    params = load_vilt_params(folder, init_params(model, inputs))
    rng = np.random.default_rng(0)
    params = jax.tree_util.tree_map_with_path(  # big enough to matter
        lambda path, x: (
            x + 0.3 * rng.standard_normal(x.shape).astype(x.dtype)
            if "adapter_" in jax.tree_util.keystr(path)
            else x
        ),
        params,
    )
    ours = jax.jit(model.apply, static_argnames="adapter_mode")(
        {"params": params}, inputs, adapter_mode=mode
    )

    weights = {"shared": {"shared": 1.0}, "client": {"client": 1.0}}.get(
        mode, {"client": 0.5, "shared": 0.5}
    )
    hooks = []
    for i, layer in enumerate(hf.vilt.encoder.layer):
        sites = params["vilt"]["encoder"][f"layer_{i}"]
        adapters = {name: _torch_adapter(sites[f"adapter_{name}"]) for name in weights}

        def add_adapters(module, args, y, adapters=adapters):
            return y + sum(w * adapters[name](y) for name, w in weights.items())

        hooks.append(layer.output.register_forward_hook(add_adapters))
    try:
        with torch.no_grad():
            want = hf(**torch_inputs(inputs)).logits.numpy()
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        plain = hf(**torch_inputs(inputs)).logits.numpy()
    assert np.abs(want - plain).max() > 1e-2  # the adapters change the logits
    np.testing.assert_allclose(ours, want, atol=1e-4, rtol=0)
