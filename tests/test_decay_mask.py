"""The local AdamW's weight-decay mask against the official code's rule on PyTorch names.

The official code groups ``model.named_parameters()`` with
``no_decay = ["bias", "LayerNorm.weight"]``: no decay where the name contains either, decay for
the rest. Here the PyTorch side is transformers' ViLT and the ALBEF reference state dict; every
trainable leaf of ours (backbone, head, adapters, gate, LoRA, prompts) is compared."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from albef_reference import CFG as ALBEF_CFG
from albef_reference import albef_vqa_surgery, released_state_dict
from test_peft import FULL_PEFT, tiny_inputs
from test_vilt_equivalence import random_hf_vqa

from feddat_jax.fl import local_optim
from feddat_jax.models.albef import AlbefVQA, example_inputs
from feddat_jax.models.albef_checkpoint import albef_name
from feddat_jax.models.vilt import ViltConfig, ViltVQA
from feddat_jax.models.vilt_checkpoint import hf_name
from feddat_jax.peft.config import PeftConfig
from feddat_jax.peft.roles import PEFT_PATTERN, flatten

NO_DECAY = ["bias", "LayerNorm.weight"]  # the official code's list, verbatim


def official_decays(name: str) -> bool:
    return not any(nd in name for nd in NO_DECAY)


def torch_name(path: str) -> str:
    """Our backbone parameter path -> its PyTorch name, by the checkpoint loaders' own mappings
    (``head/…`` is ViLT's head when its modules are ViLT's, else ALBEF's LM head)."""
    if path.split("/", 1)[0] in ("vilt", "head"):
        try:
            return hf_name(path)
        except KeyError:  # a head with other modules than ViLT's
            pass
    return albef_name(path)


def shapes(model, inputs) -> dict:
    return jax.eval_shape(model.init, jax.random.key(0), inputs)["params"]


def check_against_torch(params: dict, torch_names: set[str]) -> dict[str, bool]:
    """Our mask vs the official rule on the PyTorch name of the same tensor; returns our mask."""
    mask = flatten(local_optim.decay_mask(params))
    backbone = {p for p in mask if not re.search(PEFT_PATTERN, p)}
    assert {torch_name(p) for p in backbone} == torch_names  # every tensor, named as PyTorch does
    for path in backbone:
        assert mask[path] == official_decays(torch_name(path)), path
    for path in set(mask) - backbone:  # PEFT: no pretrained tensor; only biases are exempt
        assert mask[path] == (not path.endswith("/bias")), path
    return mask


def test_vilt_mask_follows_the_official_rule():
    params = shapes(ViltVQA(ViltConfig.tiny(), FULL_PEFT, num_answers=3), tiny_inputs())
    hf = random_hf_vqa(ViltConfig.tiny(), num_answers=3)
    mask = check_against_torch(params, {name for name, _ in hf.named_parameters()})
    layer = "vilt/encoder/layer_0"
    assert mask["head/layernorm/scale"]  # the head's LayerNorm scale IS decayed
    assert mask[f"{layer}/layernorm_before/scale"] and mask[f"{layer}/layernorm_after/scale"]
    assert mask["vilt/layernorm/scale"]  # so are ViLT's lower-case layernorm scales
    assert not mask["vilt/embeddings/text_embeddings/LayerNorm/scale"]  # BERT-style: exempt
    assert not mask["head/layernorm/bias"] and mask[f"{layer}/attention/query/lora_a"]
    assert mask["vilt/prompts/text_mlp/tokens"] and mask[f"{layer}/adapter_gate/kernel"]


def test_albef_mask_follows_the_official_rule():
    model = AlbefVQA(ALBEF_CFG, PeftConfig(adapters=("shared", "client"), dat_gate=True))
    params = shapes(model, example_inputs(ALBEF_CFG))
    vqa_names = set(albef_vqa_surgery(released_state_dict()))
    tied = {
        "text_decoder.cls.predictions.decoder.weight",
        "text_decoder.cls.predictions.decoder.bias",
    }
    dropped = (
        "visual_encoder_m.",
        "text_encoder_m.",
        "text_decoder_m.",
        "vision_proj",
        "text_proj",
    )
    names = {
        n
        for n in vqa_names
        if n not in tied
        and not n.startswith(dropped)
        and not n.startswith("itm_head")
        and n not in ("temp", "image_queue", "text_queue", "queue_ptr", "idx_queue")
        and not n.endswith(".position_ids")
    }
    mask = check_against_torch(params, names)
    assert mask["albef/visual_encoder/blocks_0/norm1/scale"]  # ViT norms are decayed
    assert not mask["albef/text_encoder/encoder/layer_0/output/LayerNorm/scale"]
    assert not mask["head/transform/LayerNorm/scale"] and mask["head/transform/dense/kernel"]


@pytest.mark.parametrize("model_name", ["vilt", "albef"])
def test_the_optimizer_decays_exactly_the_masked_leaves_of_every_param_group(model_name):
    """With zero gradients AdamW's direction is ``wd·p``: non-zero exactly where the mask says.
    The groups are the trees the algorithms hand to the optimizer: FedAvg's (shared, private)
    tuple and FedDAT's head alone, whose paths lose their ``head/`` root."""
    if model_name == "vilt":
        params = shapes(ViltVQA(ViltConfig.tiny(), FULL_PEFT, num_answers=3), tiny_inputs())
    else:
        model = AlbefVQA(ALBEF_CFG, PeftConfig(adapters=("shared", "client")))
        params = shapes(model, example_inputs(ALBEF_CFG))
    params = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), params)
    full = flatten(local_optim.decay_mask(params))
    tx = local_optim.adamw_direction(local_optim.LocalOptimConfig(weight_decay=0.5))
    head = params["head"]
    rest = {k: v for k, v in params.items() if k != "head"}
    for group, prefix in (((rest, {"head": head}), ""), (head, "head/")):
        direction, _ = tx.update(jax.tree.map(jnp.zeros_like, group), tx.init(group), group)
        if isinstance(direction, tuple):
            direction = {**direction[0], **direction[1]}
        for path, d in flatten(direction).items():
            decayed = bool(np.any(np.asarray(d) != 0))
            assert decayed == full[prefix + path], prefix + path
