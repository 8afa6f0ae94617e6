"""ViLT (transformers' `ViltModel` architecture) in Flax, with FedDAT's PEFT insertion points.

Static shapes: transformers' ViltEmbeddings.visual_embed gathers the valid patches of each image
(a data-dependent gather, random order, random duplicated padding patches). Under jit we keep every
patch in raster order and mask the padded ones out of attention instead. Attention is permutation
equivariant and masked tokens get zero weight, so the text tokens, the pooled output and the logits
equal transformers' (max_image_length=-1); only the image part of `sequence_output` differs in token
order and count (all gh·gw patches here, padded positions included). A positive max_image_length
makes transformers randomly SUBSAMPLE patches; we always keep them all.

Module and parameter names mirror transformers' so that checkpoint mapping stays mechanical
(see vilt_checkpoint.py); PEFT parameters follow docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from feddat_jax.models.activations import ACTIVATIONS, gelu
from feddat_jax.peft.adapters import AdapterSite
from feddat_jax.peft.config import PeftConfig
from feddat_jax.peft.lora import LoRADense
from feddat_jax.peft.prompts import Prompts, insert_after_cls

_INIT = nn.initializers.normal(
    0.02
)  # BERT/ViLT initialiser; the backbone is normally loaded anyway


@dataclasses.dataclass(frozen=True)
class ViltConfig:
    """The architecture hyper-parameters of transformers' ViltConfig that shape the network."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    vocab_size: int = 30522
    type_vocab_size: int = 2
    modality_type_vocab_size: int = 2
    max_position_embeddings: int = 40
    patch_size: int = 32
    image_size: int = 384
    num_channels: int = 3
    max_image_length: int = -1
    qkv_bias: bool = True

    def __post_init__(self) -> None:
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"unsupported hidden_act {self.hidden_act!r}; supported: {sorted(ACTIVATIONS)}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads"
            )

    @classmethod
    def from_hf(cls, hf_config: Any) -> ViltConfig:
        """From a transformers.ViltConfig or its config.json dict (unknown keys are ignored)."""
        get = (
            hf_config.get
            if isinstance(hf_config, Mapping)
            else functools.partial(getattr, hf_config)
        )
        values = {f.name: get(f.name, f.default) for f in dataclasses.fields(cls)}
        for name in ("image_size", "patch_size"):  # transformers allows (h, w); ViLT is square
            size = values[name]
            if isinstance(size, (list, tuple)):
                if len(set(size)) != 1:
                    raise ValueError(f"non-square ViLT {name} {size} is not supported")
                values[name] = int(size[0])
        return cls(**values)

    @classmethod
    def tiny(cls) -> ViltConfig:
        """A few-thousand-parameter ViLT for tests and CPU demos."""
        return cls(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            vocab_size=99,
            max_position_embeddings=16,
            patch_size=16,
            image_size=64,
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json content transformers' ViltConfig reads back."""
        return {
            "model_type": "vilt",
            **dataclasses.asdict(self),
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        }


def _layer_norm(eps: float, dtype: Any, name: str) -> nn.LayerNorm:
    # Two-pass variance like torch's LayerNorm: exact enough for the 1e-5 equivalence tests.
    return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


def _dense(features: int, dtype: Any, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, kernel_init=_INIT, name=name)


def _nearest_index(out_size: int, in_size: int) -> np.ndarray:
    """Source index of torch `interpolate(mode="nearest")`: floor(i · in/out) in float32, clamped."""
    scale = np.float32(in_size) / np.float32(out_size)
    return np.minimum(np.floor(np.arange(out_size, dtype=np.float32) * scale), in_size - 1).astype(
        np.int32
    )


def _bilinear_weights(out_len_B: jax.Array, grid: int, src: int) -> jax.Array:
    """[B, grid, src] weights resizing `src` points to `out_len` points (bilinear, align_corners),
    zero beyond out_len (visual_embed's zero padding). out_len is data-dependent, the shape is not."""
    scale_B = (src - 1) / jnp.maximum(out_len_B - 1, 1).astype(jnp.float32)
    pos_BxG = jnp.arange(grid, dtype=jnp.float32)[None, :] * scale_B[:, None]
    w_BxGxS = jnp.maximum(
        0.0, 1.0 - jnp.abs(pos_BxG[..., None] - jnp.arange(src, dtype=jnp.float32))
    )
    return jnp.where((jnp.arange(grid)[None, :] < out_len_B[:, None])[..., None], w_BxGxS, 0.0)


class TextEmbeddings(nn.Module):
    """BERT embeddings: word + token type 0 + absolute position, then LayerNorm."""

    config: ViltConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids_BxL: jax.Array) -> jax.Array:
        cfg, length = self.config, ids_BxL.shape[1]

        def embed(num: int, name: str) -> nn.Embed:
            return nn.Embed(num, cfg.hidden_size, dtype=self.dtype, embedding_init=_INIT, name=name)

        h_BxLxD = embed(cfg.vocab_size, "word_embeddings")(ids_BxL)
        h_BxLxD = h_BxLxD + embed(cfg.type_vocab_size, "token_type_embeddings")(
            jnp.zeros_like(ids_BxL)
        )
        h_BxLxD = h_BxLxD + embed(cfg.max_position_embeddings, "position_embeddings")(
            jnp.arange(length)[None]
        )
        return _layer_norm(cfg.layer_norm_eps, self.dtype, "LayerNorm")(h_BxLxD)


class ViltEmbeddings(nn.Module):
    """[text tokens (+ text prompts), image CLS (+ visual prompts), all patches] and their mask."""

    config: ViltConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inputs: Mapping[str, jax.Array], text_prompts=None, visual_prompts=None):
        cfg, D = self.config, self.config.hidden_size
        text_BxLxD = TextEmbeddings(cfg, self.dtype, name="text_embeddings")(
            jnp.asarray(inputs["input_ids"])
        )
        text_mask_BxL = jnp.asarray(inputs["attention_mask"], jnp.int32)

        pixels_BxHxWxC = jnp.asarray(inputs["pixel_values"], self.dtype)
        patch = (cfg.patch_size, cfg.patch_size)
        x_BxGhxGwxD = nn.Conv(
            D,
            patch,
            strides=patch,
            padding="VALID",
            dtype=self.dtype,
            kernel_init=_INIT,
            name="patch_embeddings",
        )(pixels_BxHxWxC)
        B, Gh, Gw, _ = x_BxGhxGwxD.shape
        pixel_mask_BxHxW = jnp.asarray(inputs["pixel_mask"], jnp.int32)
        rows, cols = (_nearest_index(g, s) for g, s in zip((Gh, Gw), pixel_mask_BxHxW.shape[1:]))
        patch_mask_BxGhxGw = pixel_mask_BxHxW[:, rows][:, :, cols]
        # As transformers: the image is the valid rows of patch column 0 by the valid columns of row 0.
        h_B, w_B = patch_mask_BxGhxGw[:, :, 0].sum(1), patch_mask_BxGhxGw[:, 0, :].sum(1)

        grid = cfg.image_size // cfg.patch_size
        pos_1xNxD = self.param("position_embeddings", _INIT, (1, grid * grid + 1, D))
        spatial_PxPxD = pos_1xNxD[0, 1:].reshape(grid, grid, D)
        pos_BxGhxGwxD = jnp.einsum(
            "bip,pqd,bjq->bijd",
            _bilinear_weights(h_B, Gh, grid),
            spatial_PxPxD,
            _bilinear_weights(w_B, Gw, grid),
        )
        cls_1x1xD = self.param("cls_token", _INIT, (1, 1, D))
        image_BxNxD = jnp.concatenate(
            [
                jnp.broadcast_to(cls_1x1xD + pos_1xNxD[:, :1], (B, 1, D)),
                (x_BxGhxGwxD + pos_BxGhxGwxD.astype(self.dtype)).reshape(B, Gh * Gw, D),
            ],
            axis=1,
        ).astype(self.dtype)
        image_mask_BxN = jnp.concatenate(
            [jnp.ones((B, 1), jnp.int32), patch_mask_BxGhxGw.reshape(B, -1)], axis=1
        )

        text_BxLxD, text_mask_BxL = insert_after_cls(text_BxLxD, text_mask_BxL, text_prompts)
        image_BxNxD, image_mask_BxN = insert_after_cls(image_BxNxD, image_mask_BxN, visual_prompts)
        modality = nn.Embed(
            cfg.modality_type_vocab_size,
            D,
            dtype=self.dtype,
            embedding_init=_INIT,
            name="token_type_embeddings",
        )
        text_BxLxD = text_BxLxD + modality(jnp.zeros(text_BxLxD.shape[:2], jnp.int32))
        image_BxNxD = image_BxNxD + modality(jnp.ones(image_BxNxD.shape[:2], jnp.int32))
        return (
            jnp.concatenate([text_BxLxD, image_BxNxD], axis=1),
            jnp.concatenate([text_mask_BxL, image_mask_BxN], axis=1),
        )


class ViltAttention(nn.Module):
    """Multi-head self-attention; query/key/value carry LoRA factors when targeted."""

    config: ViltConfig
    peft: PeftConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_BxTxD: jax.Array, mask_BxT: jax.Array) -> jax.Array:
        cfg, peft = self.config, self.peft
        B, T, D = h_BxTxD.shape
        heads = cfg.num_attention_heads

        def project(name: str) -> jax.Array:
            rank = peft.lora_rank if name in peft.lora_targets else 0
            dense = LoRADense(D, rank, peft.lora_alpha, cfg.qkv_bias, self.dtype, _INIT, name=name)
            return dense(h_BxTxD).reshape(B, T, heads, D // heads)

        ctx_BxTxNxH = jax.nn.dot_product_attention(
            project("query"),
            project("key"),
            project("value"),
            mask=mask_BxT[:, None, None, :].astype(bool),
        )
        return _dense(D, self.dtype, "output")(ctx_BxTxNxH.reshape(B, T, D))


class ViltLayer(nn.Module):
    """Pre-LN block; the adapter site sits after the FFN residual."""

    config: ViltConfig
    peft: PeftConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_BxTxD: jax.Array, mask_BxT: jax.Array, adapter_mode: str) -> jax.Array:
        cfg = self.config
        ln = functools.partial(_layer_norm, cfg.layer_norm_eps, self.dtype)
        h_BxTxD = h_BxTxD + ViltAttention(cfg, self.peft, self.dtype, name="attention")(
            ln("layernorm_before")(h_BxTxD), mask_BxT
        )
        ffn_BxTxF = ACTIVATIONS[cfg.hidden_act](
            _dense(cfg.intermediate_size, self.dtype, "intermediate")(
                ln("layernorm_after")(h_BxTxD)
            )
        )
        y_BxTxD = h_BxTxD + _dense(cfg.hidden_size, self.dtype, "output")(ffn_BxTxF)
        return AdapterSite(self.peft, self.dtype)(y_BxTxD, adapter_mode)


class ViltEncoder(nn.Module):
    config: ViltConfig
    peft: PeftConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_BxTxD: jax.Array, mask_BxT: jax.Array, adapter_mode: str) -> jax.Array:
        for i in range(self.config.num_hidden_layers):
            h_BxTxD = ViltLayer(self.config, self.peft, self.dtype, name=f"layer_{i}")(
                h_BxTxD, mask_BxT, adapter_mode
            )
        return h_BxTxD


class ViltModel(nn.Module):
    """ViLT backbone: returns (sequence_output [B, T, D], pooled_output [B, D]).

    `dtype` is the compute dtype (e.g. bfloat16); parameters stay float32. There is no dropout: the
    backbone is frozen and ViLT's dropout rates are 0, so `deterministic` changes nothing and exists
    for the model contract.
    """

    config: ViltConfig
    peft: PeftConfig = PeftConfig()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        inputs: Mapping[str, jax.Array],
        adapter_mode: str = "none",
        deterministic: bool = True,
    ):
        cfg = self.config
        text_prompts, visual_prompts = None, None
        if self.peft.num_text_prompts or self.peft.num_visual_prompts:
            text_prompts, visual_prompts = Prompts(
                self.peft, cfg.hidden_size, self.dtype, name="prompts"
            )()
        h_BxTxD, mask_BxT = ViltEmbeddings(cfg, self.dtype, name="embeddings")(
            inputs, text_prompts, visual_prompts
        )
        h_BxTxD = ViltEncoder(cfg, self.peft, self.dtype, name="encoder")(
            h_BxTxD, mask_BxT, adapter_mode
        )
        seq_BxTxD = _layer_norm(cfg.layer_norm_eps, self.dtype, "layernorm")(h_BxTxD)
        pooled_BxD = jnp.tanh(_dense(cfg.hidden_size, self.dtype, "pooler")(seq_BxTxD[:, 0]))
        return seq_BxTxD, pooled_BxD


class VqaHead(nn.Module):
    """Linear(H→2H) → LayerNorm → GELU → Linear(2H→A): ViltForQuestionAnswering's classifier."""

    num_answers: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pooled_BxD: jax.Array) -> jax.Array:
        h_BxE = _dense(2 * pooled_BxD.shape[-1], self.dtype, "dense_in")(pooled_BxD)
        h_BxE = gelu(_layer_norm(1e-5, self.dtype, "layernorm")(h_BxE))  # torch defaults
        return _dense(self.num_answers, self.dtype, "dense_out")(h_BxE)


class ViltVQA(nn.Module):
    """Backbone "vilt" + per-client head "head"; returns float32 logits [B, num_answers]."""

    config: ViltConfig
    peft: PeftConfig = PeftConfig()
    num_answers: int = 100
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        inputs: Mapping[str, jax.Array],
        adapter_mode: str = "none",
        deterministic: bool = True,
    ):
        _, pooled_BxD = ViltModel(self.config, self.peft, self.dtype, name="vilt")(
            inputs, adapter_mode, deterministic
        )
        return VqaHead(self.num_answers, self.dtype, name="head")(pooled_BxD).astype(jnp.float32)
