"""Inputs, parameters and reference pieces shared by the ALBEF tests (tests/test_albef_*.py); the
PyTorch ALBEF itself is tests/albef_reference.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F
from albef_reference import CFG, albef_vqa_surgery

from feddat_jax.models.albef import example_inputs
from feddat_jax.peft.config import PeftConfig
from feddat_jax.peft.roles import flatten, unflatten

DAT = PeftConfig(adapters=("shared", "client"))
B, L, A, LA = 2, 6, 4, 5


def make_inputs(seed=0, num_answers=A, answer_len=LA):
    rng = np.random.default_rng(seed)
    q_mask = np.ones((B, L), np.int32)
    q_mask[1, 4:] = 0
    ids = np.zeros((num_answers, answer_len), np.int32)
    mask = np.zeros((num_answers, answer_len), np.int32)
    firsts = rng.choice(
        np.arange(5, CFG.vocab_size), num_answers, replace=False
    )  # no first-token ties
    for a in range(num_answers):  # "[CLS] w (w) [SEP] [SEP]" with 1 or 2 answer words, then padding
        row = [1, firsts[a], *rng.integers(5, CFG.vocab_size, a % 2), 2, 2]
        ids[a, : len(row)], mask[a, : len(row)] = row, 1
    return {
        "input_ids": rng.integers(1, CFG.vocab_size, (B, L)).astype(np.int32) * q_mask,
        "attention_mask": q_mask,
        "pixel_values": rng.normal(size=(B, CFG.image_size, CFG.image_size, 3)).astype(np.float32),
        "answer_input_ids": ids,
        "answer_attention_mask": mask,
    }


def random_params(model, seed=0):
    """A parameter tree of the model's shapes with the model's init distributions (normal(0.02)
    weights, zero biases, unit scales), built without compiling `init` (slow on CPU)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), example_inputs(model.config))["params"]
    rng = np.random.default_rng(seed)

    def leaf(path, shape, dtype):
        if path.endswith("bias"):
            return np.zeros(shape, dtype)
        if path.endswith("scale"):
            return np.ones(shape, dtype)
        return (0.02 * rng.standard_normal(shape)).astype(dtype)

    return unflatten(
        {path: jnp.asarray(leaf(path, s.shape, s.dtype)) for path, s in flatten(shapes).items()}
    )


_APPLY = {}


def apply_fn(model):
    """One jitted apply per model (compiles once per adapter mode)."""
    if model not in _APPLY:
        _APPLY[model] = jax.jit(
            lambda p, x, mode: model.apply({"params": p}, x, adapter_mode=mode), static_argnums=2
        )
    return _APPLY[model]


def torch_interpolate_pos_embed(pos, grid):
    """ALBEF's models/vit.interpolate_pos_embed."""
    old = int((pos.shape[-2] - 1) ** 0.5)
    tokens = pos[:, 1:].reshape(-1, old, old, pos.shape[-1]).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], tokens.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def reference_state(sd):
    """The state dict ALBEF's VQA model ends up with (key surgery + position-embedding resize)."""
    vqa = albef_vqa_surgery(sd)
    vqa["visual_encoder.pos_embed"] = torch_interpolate_pos_embed(
        vqa["visual_encoder.pos_embed"], CFG.grid
    )
    return vqa


def scaled_adapters(params, factor=20.0):
    """Adapters big enough that a misplaced site shows in the scores."""
    flat = flatten(params)
    return unflatten({k: v * factor if "/adapter_" in k else v for k, v in flat.items()})


def with_padded_candidate(inputs):
    """The answer list plus one all-zero row (a client with fewer real answers than A)."""
    return {
        **inputs,
        **{
            k: np.concatenate([inputs[k], np.zeros((1, LA), np.int32)])
            for k in ("answer_input_ids", "answer_attention_mask")
        },
    }
