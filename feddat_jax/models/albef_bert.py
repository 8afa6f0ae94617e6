"""ALBEF's BERT parts (ALBEF's models/xbert.py) in Flax: the text/fusion encoder, the answer decoder
and the decoder's LM head, with FedDAT's adapter site inside every BertOutput.

- Text encoder (`BertModel`, fusion_layer = text_layers): layers [0, text_layers) are plain BERT
  layers over the question; layers [text_layers, text_layers + fusion_layers) add cross-attention
  to the image tokens after the self-attention.
- Answer decoder (`BertLMHeadModel`, fusion_layer = 0): every layer has causal self-attention over
  the answer tokens and cross-attention to the fused question states. The decoder runs on a
  [B, A, La] block of candidate answers at once: self-attention per candidate ([B·A, La]),
  cross-attention with the A·La candidate tokens of an example as queries against that example's
  question states ([B, A·La] vs [B, L]), so question states are never copied A times.
- LM head (`BertLMPredictionHead`): dense → act → LayerNorm → tied word embeddings + bias. The
  vocabulary projection IS the decoder's (frozen) word-embedding table, as in ALBEF, where
  `cls.predictions.decoder.weight` is tied to `bert.embeddings.word_embeddings.weight`; the head
  owns only `transform/*` and `bias`.

Adapter placement in BertOutput (the official FedDAT code's `Adapter.adapter_layer_forward_bert`,
Pfeiffer-style with residual_before_ln=True and the original LayerNorm both before and after):
    h = dense(intermediate);  u = LayerNorm(h + x);  out = LayerNorm((h + a(u)) + x)
where a(u) is the site's adapter mix (shared / client / DAT). The site is the project's
AdapterSite applied to u, so a(u) = AdapterSite(u, mode) − u (exactly 0 when the up-projections
are 0); mode "none" returns u, the plain BertOutput.

Masks are boolean (masked logits get jax's large negative number); ALBEF adds −10000, which gives
the same probabilities in float32 whenever a row has at least one unmasked key.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from feddat_jax.models.albef_vit import ACTIVATIONS, INIT, dense, layer_norm
from feddat_jax.peft.adapters import AdapterSite
from feddat_jax.peft.config import PeftConfig

if TYPE_CHECKING:
    from feddat_jax.models.albef import AlbefConfig


class BertEmbeddings(nn.Module):
    """word + token type 0 + absolute position, then LayerNorm. Also returns the word table."""

    config: AlbefConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids_XxL: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg, length = self.config, ids_XxL.shape[-1]
        embed = functools.partial(
            nn.Embed, features=cfg.hidden_size, dtype=self.dtype, embedding_init=INIT
        )
        words = embed(cfg.vocab_size, name="word_embeddings")
        h_XxLxD = words(ids_XxL)
        h_XxLxD = h_XxLxD + embed(cfg.type_vocab_size, name="token_type_embeddings")(
            jnp.zeros_like(ids_XxL)
        )
        h_XxLxD = h_XxLxD + embed(cfg.max_position_embeddings, name="position_embeddings")(
            jnp.arange(length)
        )
        return layer_norm(cfg.layer_norm_eps, self.dtype, "LayerNorm")(h_XxLxD), words.embedding


class BertSelfAttention(nn.Module):
    """Queries from `h`, keys/values from `kv` (= h for self-attention); returns the context."""

    config: AlbefConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, h_GxTxD: jax.Array, kv_GxSxE: jax.Array, mask: jax.Array | None
    ) -> jax.Array:
        G, T, D = h_GxTxD.shape
        heads = self.config.num_attention_heads

        def project(name: str, x: jax.Array) -> jax.Array:
            return dense(D, self.dtype, name)(x).reshape(x.shape[0], x.shape[1], heads, D // heads)

        ctx_GxTxHxK = jax.nn.dot_product_attention(
            project("query", h_GxTxD),
            project("key", kv_GxSxE),
            project("value", kv_GxSxE),
            mask=mask,
        )
        return ctx_GxTxHxK.reshape(G, T, D)


class BertSelfOutput(nn.Module):
    config: AlbefConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ctx_GxTxD: jax.Array, x_GxTxD: jax.Array) -> jax.Array:
        h_GxTxD = dense(self.config.hidden_size, self.dtype, "dense")(ctx_GxTxD)
        return layer_norm(self.config.layer_norm_eps, self.dtype, "LayerNorm")(h_GxTxD + x_GxTxD)


class BertAttention(nn.Module):
    config: AlbefConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self, h_GxTxD: jax.Array, kv_GxSxE: jax.Array, mask: jax.Array | None
    ) -> jax.Array:
        ctx_GxTxD = BertSelfAttention(self.config, self.dtype, name="self")(h_GxTxD, kv_GxSxE, mask)
        return BertSelfOutput(self.config, self.dtype, name="output")(ctx_GxTxD, h_GxTxD)


class BertIntermediate(nn.Module):
    config: AlbefConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_GxTxD: jax.Array) -> jax.Array:
        cfg = self.config
        return ACTIVATIONS[cfg.hidden_act](
            dense(cfg.intermediate_size, self.dtype, "dense")(h_GxTxD)
        )


class BertOutput(nn.Module):
    """dense → (adapter site, Pfeiffer residual_before_ln placement) → LayerNorm(· + residual)."""

    config: AlbefConfig
    peft: PeftConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, inter_GxTxF: jax.Array, x_GxTxD: jax.Array, adapter_mode: str) -> jax.Array:
        cfg = self.config
        norm = layer_norm(cfg.layer_norm_eps, self.dtype, "LayerNorm")
        h_GxTxD = dense(cfg.hidden_size, self.dtype, "dense")(inter_GxTxF)
        u_GxTxD = norm(h_GxTxD + x_GxTxD)
        site_GxTxD = AdapterSite(self.peft, self.dtype)(u_GxTxD, adapter_mode)
        if adapter_mode == "none":
            return u_GxTxD
        a_GxTxD = (site_GxTxD.astype(jnp.float32) - u_GxTxD.astype(jnp.float32)).astype(
            h_GxTxD.dtype
        )
        return norm((h_GxTxD + a_GxTxD) + x_GxTxD)


class BertLayer(nn.Module):
    """Self-attention, optional cross-attention, FFN. `h` is [G, T, D] with G = B·(groups per
    example); the cross-attention regroups it to [B, (G/B)·T, D] against `cross` [B, S, E]."""

    config: AlbefConfig
    peft: PeftConfig
    has_cross_attention: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_GxTxD, self_mask, adapter_mode, cross_BxSxE=None, cross_mask=None):
        h_GxTxD = BertAttention(self.config, self.dtype, name="attention")(
            h_GxTxD, h_GxTxD, self_mask
        )
        if self.has_cross_attention:
            G, T, D = h_GxTxD.shape
            B = cross_BxSxE.shape[0]
            q_BxQxD = h_GxTxD.reshape(B, (G // B) * T, D)
            h_GxTxD = BertAttention(self.config, self.dtype, name="crossattention")(
                q_BxQxD, cross_BxSxE, cross_mask
            ).reshape(G, T, D)
        inter_GxTxF = BertIntermediate(self.config, self.dtype, name="intermediate")(h_GxTxD)
        return BertOutput(self.config, self.peft, self.dtype, name="output")(
            inter_GxTxF, h_GxTxD, adapter_mode
        )


class BertEncoder(nn.Module):
    """`num_layers` BertLayers named layer_i; layers i >= fusion_layer have cross-attention."""

    config: AlbefConfig
    peft: PeftConfig
    num_layers: int
    fusion_layer: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_GxTxD, self_mask, adapter_mode, cross_BxSxE=None, cross_mask=None):
        for i in range(self.num_layers):
            layer = BertLayer(
                self.config, self.peft, i >= self.fusion_layer, self.dtype, name=f"layer_{i}"
            )
            h_GxTxD = layer(h_GxTxD, self_mask, adapter_mode, cross_BxSxE, cross_mask)
        return h_GxTxD


class AlbefTextEncoder(nn.Module):
    """question [B, L] + image tokens [B, N, E] -> fused question states [B, L, D]."""

    config: AlbefConfig
    peft: PeftConfig = PeftConfig()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids_BxL, mask_BxL, image_BxNxE, adapter_mode: str = "none") -> jax.Array:
        cfg = self.config
        h_BxLxD, _ = BertEmbeddings(cfg, self.dtype, name="embeddings")(
            jnp.asarray(ids_BxL, jnp.int32)
        )
        self_mask = jnp.asarray(mask_BxL).astype(bool)[:, None, None, :]
        return BertEncoder(
            cfg,
            self.peft,
            cfg.text_layers + cfg.fusion_layers,
            cfg.text_layers,
            self.dtype,
            name="encoder",
        )(h_BxLxD, self_mask, adapter_mode, image_BxNxE, None)


class AlbefAnswerDecoder(nn.Module):
    """Candidate answers [b, A, La] (b = 1: one list shared by the batch, or b = B) decoded against
    question states [B, L, D] -> (hidden [B, A, La, D], word-embedding table [V, D])."""

    config: AlbefConfig
    peft: PeftConfig = PeftConfig()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, ids_bxAxLa, mask_bxAxLa, q_BxLxD, q_mask_BxL, adapter_mode: str = "none"):
        cfg = self.config
        B, (_, A, La) = q_BxLxD.shape[0], ids_bxAxLa.shape
        emb_bxAxLaxD, table_VxD = BertEmbeddings(cfg, self.dtype, name="embeddings")(
            jnp.asarray(ids_bxAxLa, jnp.int32)
        )
        h_GxLaxD = jnp.broadcast_to(emb_bxAxLaxD, (B, A, La, cfg.hidden_size)).reshape(
            B * A, La, -1
        )
        causal_LaxLa = jnp.tril(jnp.ones((La, La), bool))
        self_mask = causal_LaxLa & jnp.asarray(mask_bxAxLa).astype(bool)[..., None, :]
        self_mask = jnp.broadcast_to(self_mask, (B, A, La, La)).reshape(B * A, 1, La, La)
        cross_mask = jnp.asarray(q_mask_BxL).astype(bool)[:, None, None, :]
        h_GxLaxD = BertEncoder(cfg, self.peft, cfg.decoder_layers, 0, self.dtype, name="encoder")(
            h_GxLaxD, self_mask, adapter_mode, q_BxLxD, cross_mask
        )
        return h_GxLaxD.reshape(B, A, La, -1), table_VxD


class PredictionTransform(nn.Module):
    config: AlbefConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_XxD: jax.Array) -> jax.Array:
        cfg = self.config
        h_XxD = ACTIVATIONS[cfg.hidden_act](dense(cfg.hidden_size, self.dtype, "dense")(h_XxD))
        return layer_norm(cfg.layer_norm_eps, self.dtype, "LayerNorm")(h_XxD)


class AlbefLMHead(nn.Module):
    """BertLMPredictionHead with the vocabulary projection tied to the decoder's word embeddings:
    logits = transform(h) · table^T + bias. Owns `transform/{dense, LayerNorm}` and `bias` only."""

    config: AlbefConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, h_XxD: jax.Array, table_VxD: jax.Array) -> jax.Array:
        t_XxD = PredictionTransform(self.config, self.dtype, name="transform")(h_XxD)
        bias_V = self.param("bias", nn.initializers.zeros, (self.config.vocab_size,))
        t_XxD, table_VxD, bias_V = nn.dtypes.promote_dtype(
            t_XxD, table_VxD, bias_V, dtype=self.dtype
        )
        return t_XxD @ table_VxD.T + bias_V
