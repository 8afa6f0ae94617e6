"""ALBEF's image encoder: the timm-style ViT of ALBEF's models/vit.py (ViT-B/16), in Flax.

Pre-LN blocks `x + attn(norm1(x))`, `x + mlp(norm2(x))` with a fused qkv projection, a CLS token and
a learned position embedding added to [CLS, patches], and a final LayerNorm (eps 1e-6). FedDAT's
adapter site sits after each block's MLP residual, as the official FedDAT code's `Block.forward`
(`x = x + mlp(norm2(x)); x = adapter(x, x)` = `x + a(x)`). No dropout: the backbone is frozen and
ALBEF's drop rates are 0.

Module and parameter names mirror ALBEF's (`patch_embed`, `blocks_i/attn/qkv`, `blocks_i/mlp/fc1`,
`norm`, ...), so albef_checkpoint.py maps them mechanically.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from feddat_jax.models.activations import ACTIVATIONS
from feddat_jax.peft.adapters import AdapterSite
from feddat_jax.peft.config import PeftConfig

if TYPE_CHECKING:
    from feddat_jax.models.albef import AlbefConfig

INIT = nn.initializers.normal(0.02)  # the backbone is normally loaded from a checkpoint anyway


def layer_norm(eps: float, dtype: Any, name: str) -> nn.LayerNorm:
    # Two-pass variance like torch's LayerNorm (exact enough for the 1e-5 equivalence tests).
    return nn.LayerNorm(epsilon=eps, dtype=dtype, use_fast_variance=False, name=name)


def dense(features: int, dtype: Any, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, kernel_init=INIT, name=name)


class VitAttention(nn.Module):
    """Multi-head self-attention with one fused qkv projection (timm's `Attention`)."""

    config: AlbefConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxNxD: jax.Array) -> jax.Array:
        B, N, D = x_BxNxD.shape
        heads = self.config.vision_heads
        qkv_BxNx3xHxK = dense(3 * D, self.dtype, "qkv")(x_BxNxD).reshape(B, N, 3, heads, D // heads)
        ctx_BxNxHxK = jax.nn.dot_product_attention(
            qkv_BxNx3xHxK[:, :, 0], qkv_BxNx3xHxK[:, :, 1], qkv_BxNx3xHxK[:, :, 2]
        )
        return dense(D, self.dtype, "proj")(ctx_BxNxHxK.reshape(B, N, D))


class VitMlp(nn.Module):
    config: AlbefConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxNxD: jax.Array) -> jax.Array:
        h_BxNxF = ACTIVATIONS["gelu"](dense(self.config.vision_mlp_dim, self.dtype, "fc1")(x_BxNxD))
        return dense(x_BxNxD.shape[-1], self.dtype, "fc2")(h_BxNxF)


class VitBlock(nn.Module):
    """Pre-LN block; the adapter site sits after the MLP residual."""

    config: AlbefConfig
    peft: PeftConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x_BxNxD: jax.Array, adapter_mode: str) -> jax.Array:
        ln = functools.partial(layer_norm, self.config.vision_eps, self.dtype)
        x_BxNxD = x_BxNxD + VitAttention(self.config, self.dtype, name="attn")(ln("norm1")(x_BxNxD))
        y_BxNxD = x_BxNxD + VitMlp(self.config, self.dtype, name="mlp")(ln("norm2")(x_BxNxD))
        return AdapterSite(self.peft, self.dtype)(y_BxNxD, adapter_mode)


class VisionTransformer(nn.Module):
    """pixels [B, H, W, C] (normalised, NHWC, H = W = image_size) -> image tokens [B, 1 + N, D]."""

    config: AlbefConfig
    peft: PeftConfig = PeftConfig()
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pixels_BxHxWxC: jax.Array, adapter_mode: str = "none") -> jax.Array:
        cfg, D = self.config, self.config.vision_width
        if pixels_BxHxWxC.shape[1:3] != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"ALBEF expects {cfg.image_size}x{cfg.image_size} images (resized, not padded); "
                f"got pixel_values of shape {pixels_BxHxWxC.shape}"
            )
        patch = (cfg.patch_size, cfg.patch_size)
        x_BxGxGxD = nn.Conv(
            D,
            patch,
            strides=patch,
            padding="VALID",
            dtype=self.dtype,
            kernel_init=INIT,
            name="patch_embed",
        )(jnp.asarray(pixels_BxHxWxC, self.dtype))
        B = x_BxGxGxD.shape[0]
        cls_1x1xD = self.param("cls_token", INIT, (1, 1, D))
        pos_1xNxD = self.param("pos_embed", INIT, (1, cfg.num_patches + 1, D))
        x_BxNxD = jnp.concatenate(
            [
                jnp.broadcast_to(cls_1x1xD, (B, 1, D)).astype(self.dtype),
                x_BxGxGxD.reshape(B, -1, D),
            ],
            axis=1,
        )
        x_BxNxD = (x_BxNxD + pos_1xNxD).astype(self.dtype)
        for i in range(cfg.vision_layers):
            x_BxNxD = VitBlock(cfg, self.peft, self.dtype, name=f"blocks_{i}")(
                x_BxNxD, adapter_mode
            )
        return layer_norm(cfg.vision_eps, self.dtype, "norm")(x_BxNxD)
