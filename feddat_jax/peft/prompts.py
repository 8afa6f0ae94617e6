"""Prompt tuning: learned tokens, each modality through its OWN small MLP.

Following the official code, every prompt set is an embedding table of `num` tokens passed through
Linear(H→prompt_hidden) → tanh → Linear(prompt_hidden→H), and the tokens are inserted right after
the modality's CLS token (so the pooler still reads the text CLS at index 0) with attention-mask
ones. Unlike the official ViLT code, which reused the text MLP for the visual prompts, the visual
prompts get their own MLP (METHOD.md §8).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from feddat_jax.peft.config import PeftConfig


class PromptEncoder(nn.Module):
    """`num_tokens` learned tokens → MLP → [num_tokens, hidden] prompt embeddings."""

    num_tokens: int
    hidden: int
    prompt_hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self) -> jax.Array:
        # N(0, 1) like the torch nn.Embedding the official code uses.
        tokens_PxH = self.param(
            "tokens", nn.initializers.normal(1.0), (self.num_tokens, self.hidden)
        )
        h = nn.tanh(nn.Dense(self.prompt_hidden, dtype=self.dtype, name="dense_in")(tokens_PxH))
        return nn.Dense(self.hidden, dtype=self.dtype, name="dense_out")(h)


class Prompts(nn.Module):
    """Text and visual prompt embeddings, or None for a modality without prompts."""

    peft: PeftConfig
    hidden: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self) -> tuple[jax.Array | None, jax.Array | None]:
        def encode(num: int, name: str) -> jax.Array | None:
            if num == 0:
                return None
            return PromptEncoder(num, self.hidden, self.peft.prompt_hidden, self.dtype, name=name)()

        return encode(self.peft.num_text_prompts, "text_mlp"), encode(
            self.peft.num_visual_prompts, "visual_mlp"
        )


def insert_after_cls(h_BxTxD: jax.Array, mask_BxT: jax.Array, prompts_PxD: jax.Array | None):
    """Inserts prompt tokens after position 0 (the CLS token); their mask is one."""
    if prompts_PxD is None:
        return h_BxTxD, mask_BxT
    batch = h_BxTxD.shape[0]
    p_BxPxD = jnp.broadcast_to(prompts_PxD.astype(h_BxTxD.dtype), (batch, *prompts_PxD.shape))
    h = jnp.concatenate([h_BxTxD[:, :1], p_BxPxD, h_BxTxD[:, 1:]], axis=1)
    ones_BxP = jnp.ones((batch, prompts_PxD.shape[0]), mask_BxT.dtype)
    return h, jnp.concatenate([mask_BxT[:, :1], ones_BxP, mask_BxT[:, 1:]], axis=1)
