"""LoRA: a low-rank update ADDED to a frozen pretrained projection.

The official FedDAT code replaced the pretrained query/value projections by the LoRA layer; the
method (and our baseline) keeps them and adds B·A·x · alpha / r (METHOD.md §4, §8).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

# Kaiming-uniform with a = sqrt(5) over fan_in, the initialisation of HF PEFT's `lora_A`.
_LORA_A_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


class LoRADense(nn.Module):
    """nn.Dense plus optional LoRA factors in the SAME scope.

    Parameters: `kernel`, `bias` (the frozen projection, same names as nn.Dense so checkpoints
    map unchanged) and, when rank > 0, `lora_a` [in, r] (Kaiming-uniform) and `lora_b` [r, out]
    (zeros, so a fresh LoRA leaves the output unchanged).
    """

    features: int
    rank: int = 0
    alpha: float = 16.0
    use_bias: bool = True
    dtype: Any = jnp.float32
    kernel_init: Any = nn.initializers.normal(0.02)

    def setup(self) -> None:
        self.base = nn.Dense(
            self.features, use_bias=self.use_bias, dtype=self.dtype, kernel_init=self.kernel_init
        )
        nn.share_scope(self, self.base)

    @nn.compact
    def __call__(self, x_BxTxI: jax.Array) -> jax.Array:
        y_BxTxO = self.base(x_BxTxI)
        if self.rank == 0:
            return y_BxTxO
        a_IxR = self.param("lora_a", _LORA_A_INIT, (x_BxTxI.shape[-1], self.rank))
        b_RxO = self.param("lora_b", nn.initializers.zeros, (self.rank, self.features))
        x, a_IxR, b_RxO = nn.dtypes.promote_dtype(x_BxTxI, a_IxR, b_RxO, dtype=self.dtype)
        return y_BxTxO + (x @ a_IxR @ b_RxO) * (self.alpha / self.rank)
