"""Activation functions by transformers' ``hidden_act`` names, for the ViLT and ALBEF backbones.

``gelu`` is the exact GELU as PyTorch computes it, ``x/2 · (1 + erf(x/√2))``. ``jax.nn.gelu(x,
approximate=False)`` computes the same function through ``erfc``, which XLA expands into two
branches and an exponential: on CPU about twice the element-wise work of ``erf``'s single
polynomial, and GELU and its derivative were the largest non-matmul cost of the FedDAT round
(benchmarks/RESULTS.md, "Where the round's CPU time goes"). The two agree to ~1e-6.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import numpy as np

_SQRT_HALF = float(np.sqrt(0.5))


def gelu(x: jax.Array) -> jax.Array:
    """Exact (erf) GELU, in the dtype of ``x``."""
    return 0.5 * x * (1.0 + jax.lax.erf(x * _SQRT_HALF))


ACTIVATIONS = {
    "gelu": gelu,
    "gelu_new": functools.partial(nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(nn.gelu, approximate=True),
    "relu": nn.relu,
    "silu": nn.silu,
    "swish": nn.silu,
}
