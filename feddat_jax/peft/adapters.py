"""Bottleneck adapters and the per-layer adapter site that mixes them (FedDAT's DAT mode)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from feddat_jax.errors import ConfigError
from feddat_jax.peft.config import PeftConfig

ADAPTER_MODES = ("none", "shared", "client", "dat")
_NEEDED = {"none": (), "shared": ("shared",), "client": ("client",), "dat": ("client", "shared")}


class Adapter(nn.Module):
    """a(u) = W_up · ReLU(W_down · u + b_down) + b_up.

    Both kernels ~ N(0, 0.02) and biases 0, as in the official code: the up-projection is NOT
    zero-initialised, so a fresh adapter perturbs the backbone from the first step.
    """

    reduction: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, u_BxTxD: jax.Array) -> jax.Array:
        hidden = u_BxTxD.shape[-1]
        bottleneck = hidden // self.reduction
        if bottleneck < 1:
            raise ConfigError(
                f"adapter bottleneck hidden // reduction = {hidden} // {self.reduction} is 0",
                "config.peft.adapter_reduction",
                f"use a reduction of at most {hidden}",
            )
        dense = lambda features, name: nn.Dense(
            features, dtype=self.dtype, kernel_init=nn.initializers.normal(0.02), name=name
        )
        h_BxTxR = nn.relu(dense(bottleneck, "down")(u_BxTxD))
        return dense(hidden, "up")(h_BxTxR)


class AdapterSite(nn.Module):
    """Applies the adapters of one site (after a layer's FFN residual) in a given mode.

    - none:   y
    - shared: y + a_s(y)
    - client: y + a_c(y)
    - dat:    y + w_c·a_c(y) + w_s·a_s(y), or y + g·a_c(y) + (1 − g)·a_s(y) with the learned gate.

    The site shares its parent's scope, so its parameters appear directly under the layer as
    `adapter_shared`, `adapter_client` and `adapter_gate` (the path contract of ARCHITECTURE.md).
    At init every configured adapter is created whatever the mode, so the parameter tree never
    depends on the mode used for `init`.
    """

    peft: PeftConfig
    dtype: Any = jnp.float32

    def setup(self) -> None:
        nn.share_scope(self.parent, self)

    @nn.compact
    def __call__(self, y_BxTxD: jax.Array, mode: str) -> jax.Array:
        if mode not in ADAPTER_MODES:
            raise ValueError(f"adapter_mode must be one of {ADAPTER_MODES}, got {mode!r}")
        missing = [a for a in _NEEDED[mode] if a not in self.peft.adapters]
        if missing:
            raise ValueError(
                f"adapter_mode={mode!r} needs adapters {_NEEDED[mode]} but PeftConfig.adapters={self.peft.adapters}"
            )
        adapters = {
            name: Adapter(self.peft.adapter_reduction, self.dtype, name=f"adapter_{name}")
            for name in self.peft.adapters
        }
        gate = (
            nn.Dense(1, dtype=self.dtype, kernel_init=nn.initializers.zeros, name="adapter_gate")
            if self.peft.dat_gate
            else None
        )
        if self.is_initializing():
            for adapter in adapters.values():
                adapter(y_BxTxD)
            if gate is not None:
                gate(y_BxTxD)

        if mode == "none":
            return y_BxTxD
        if mode in ("shared", "client"):
            return y_BxTxD + adapters[mode](y_BxTxD)
        a_c = adapters["client"](y_BxTxD)
        a_s = adapters["shared"](y_BxTxD)
        if gate is not None:
            g_BxTx1 = nn.sigmoid(gate(y_BxTxD))
            return y_BxTxD + g_BxTx1 * a_c + (1.0 - g_BxTx1) * a_s
        w_c, w_s = self.peft.dat_weights
        return y_BxTxD + w_c * a_c + w_s * a_s
