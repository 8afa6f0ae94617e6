"""Central differential privacy of the shared channel: the DP-FedAvg Gaussian aggregator.

The only thing a FedDAT client sends is its shared-adapter delta ``Δ_k = A_s^k - A_s``; the
client-specific adapter A_c and the task head never leave the client. This module makes the
*release* of the server's aggregate client-level differentially private (McMahan, Ramage, Talwar,
Zhang 2018, "Learning Differentially Private Recurrent Language Models"):

    Δ̃_k  = Δ_k · min(1, S / ‖Δ_k‖₂)          ‖·‖₂ over ALL leaves of the client's delta
    mean = (Σ_k Δ̃_k + N(0, (σ·S)² I)) / D     D = C (fixed-size cohorts) or q·N (Poisson)

Adding or removing one client changes ``Σ_k Δ̃_k`` by at most S (replacing one: at most 2S), so
the Gaussian noise with standard deviation σ·S makes the sum, and everything computed from it
afterwards (the server optimizer, every later round), differentially private at the client level.
:mod:`feddat_jax.fl.accounting` turns (σ, sampling, rounds, δ) into ε.

Why uniform weights: the FedAvg weights ``n_k / Σ n`` let one client's contribution grow with its
(data-dependent, unbounded) example count, and ``Σ n`` itself depends on every client's data, so the
influence of one client on the mean is not bounded by ``S / C``. The sensitivity argument above
needs every client to enter the sum with the same, data-independent weight, hence
``weights="uniform"`` is the only option with DP ("weighted" raises).

``DPGaussianAggregator`` implements the :class:`feddat_jax.fl.aggregation.Aggregator` protocol:
it only replaces the mean, so it composes with any server optimizer, and it is pure (jit / vmap
friendly; the noise comes from the round's aggregation key). With ``clip_norm=inf`` and
``noise_multiplier=0`` it computes exactly what ``MeanAggregator("uniform")`` computes.

Secrecy of the noise: the noise is drawn from the round's aggregation key, which is folded from
the server's run key. Anyone who knows that key can regenerate and subtract the noise, so a DP run
must draw its server key from a secret source (not a seed written in a config file).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from feddat_jax.errors import ConfigError
from feddat_jax.fl import placement
from feddat_jax.fl.aggregation import client_weights

PyTree = Any
ACCOUNTANT_METHODS = ("rdp", "pld")
SAMPLING_MODES = ("fixed", "poisson")


# ----------------------------------------------------------------------------- validation
def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def check_clip_norm(clip_norm) -> float:
    """S > 0 (``inf`` allowed: no clipping)."""
    if not _is_number(clip_norm) or not clip_norm > 0:  # also rejects NaN
        raise ConfigError(
            f"dp.clip_norm must be a number in (0, inf] (the L2 bound S on each "
            f"client's shared-adapter delta); got {clip_norm!r}"
        )
    return float(clip_norm)


def check_noise_multiplier(noise_multiplier) -> float:
    """σ >= 0 and finite (0: no noise, no privacy)."""
    if (
        not _is_number(noise_multiplier)
        or not noise_multiplier >= 0
        or not math.isfinite(noise_multiplier)
    ):
        raise ConfigError(
            f"dp.noise_multiplier must be a finite number in [0, inf) (the noise std "
            f"in units of clip_norm); got {noise_multiplier!r}"
        )
    return float(noise_multiplier)


def check_delta(delta) -> float:
    """δ in the open interval (0, 1)."""
    if not _is_number(delta) or not 0.0 < delta < 1.0:
        raise ConfigError(
            f"dp.delta must be a number in the open interval (0, 1) (typically below "
            f"1 / number of clients); got {delta!r}"
        )
    return float(delta)


def check_sample_rate(sample_rate) -> float:
    """q in (0, 1]."""
    if not _is_number(sample_rate) or not 0.0 < sample_rate <= 1.0:
        raise ConfigError(
            f"sample_rate (the client sampling probability q) must be a number in "
            f"(0, 1]; got {sample_rate!r}"
        )
    return float(sample_rate)


def check_accountant(method) -> str:
    if method not in ACCOUNTANT_METHODS:
        raise ConfigError(
            f"dp.accountant must be one of {', '.join(ACCOUNTANT_METHODS)}; got {method!r}"
        )
    return method


def check_sampling(sampling) -> str:
    if sampling not in SAMPLING_MODES:
        raise ConfigError(
            f"client sampling for DP must be one of {', '.join(SAMPLING_MODES)}; got {sampling!r}"
        )
    return sampling


# ----------------------------------------------------------------------------- clipping
def client_global_norms(delta_C: PyTree) -> jax.Array:
    """‖Δ_k‖₂ over all leaves of each client's delta, float32 [C]."""
    leaves = jax.tree.leaves(delta_C)
    if not leaves:
        raise ValueError("the clients' shared delta has no leaves")
    sq = [
        jnp.sum(jnp.square(x.astype(jnp.float32)).reshape(x.shape[0], -1), axis=1) for x in leaves
    ]
    return jnp.sqrt(sum(sq))


def clip_factors(norms_C: jax.Array, clip_norm: float) -> jax.Array:
    """``min(1, S / ‖Δ_k‖)`` per client; exactly 1 when the norm is within the bound (or S = inf)."""
    safe = jnp.where(norms_C > clip_norm, norms_C, 1.0)
    return jnp.where(norms_C > clip_norm, clip_norm / safe, 1.0).astype(jnp.float32)


def scale_clients(tree_C: PyTree, factors_C: jax.Array) -> PyTree:
    def scale(x):
        return x * factors_C.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype)

    return jax.tree.map(scale, tree_C)


def gaussian_noise_like(tree: PyTree, std: float, key: jax.Array) -> PyTree:
    """Independent N(0, std²) per coordinate, one sub-key per leaf."""
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noise = [std * jax.random.normal(k, x.shape, jnp.float32) for k, x in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, noise)


# ----------------------------------------------------------------------------- the aggregator
class DPGaussianAggregator:
    """Clip each client's whole delta to L2 norm S, sum, add N(0, (σS)²), divide by the cohort size.

    Args:
      clip_norm: S, the L2 bound on one client's shared delta (``inf``: no clipping).
      noise_multiplier: σ; the noise std on the SUM is ``σ·S`` (on the mean ``σ·S / D``).
      weights: must be ``"uniform"`` (see the module docstring for why "weighted" is refused).
      expected_cohort_size: ``None`` for fixed-size cohorts (divide by the static cohort size C).
        For Poisson sampling pass ``q·N``: the mean is divided by this fixed, data-independent
        denominator (McMahan et al.'s fixed-denominator estimator), and the cohort may be padded to
        a static size with masked slots (clients whose ``num_examples`` is 0 contribute nothing).
        A fixed-size cohort padded to a multiple of the mesh's ``clients`` devices needs nothing:
        with ``None`` the mean and the noise are divided by its real size (the rows whose
        ``num_examples`` is not 0).

    Metrics (server): ``dp/mean_preclip_norm`` (mean ‖Δ_k‖ over real clients, before clipping),
    ``dp/fraction_clipped`` (share of real clients with ‖Δ_k‖ > S), ``dp/noise_std`` (std of the
    noise on each coordinate of the returned mean, ``σ·S / D``). The pre-clip statistics are NOT
    privatized: they are for monitoring on the trusted server and must not be published.
    """

    def __init__(
        self,
        clip_norm: float,
        noise_multiplier: float,
        weights: str = "uniform",
        expected_cohort_size: float | None = None,
    ):
        self.clip_norm = check_clip_norm(clip_norm)
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        if weights == "weighted":
            raise ConfigError(
                "DP aggregation needs weights='uniform': with size weights n_k / Σn one client's "
                "influence on the mean grows with its own example count and Σn depends on every "
                "client's data, so it is not bounded by clip_norm / cohort_size and the Gaussian "
                "noise would not give the accounted privacy. Set aggregation to 'uniform' with DP."
            )
        if weights != "uniform":
            raise ConfigError(
                f"unknown aggregation {weights!r}; DP aggregation allows only 'uniform'"
            )
        self.weights = weights
        if expected_cohort_size is not None and (
            not _is_number(expected_cohort_size)
            or not expected_cohort_size > 0
            or not math.isfinite(expected_cohort_size)
        ):
            raise ValueError(
                f"expected_cohort_size (q·N for Poisson sampling) must be a finite number "
                f"> 0, or None for fixed-size cohorts; got {expected_cohort_size!r}"
            )
        if self.noise_multiplier > 0 and math.isinf(self.clip_norm):
            raise ConfigError(
                "dp.noise_multiplier > 0 needs a finite dp.clip_norm: the noise std is "
                "noise_multiplier · clip_norm and without clipping the sensitivity is "
                "unbounded"
            )
        self.expected_cohort_size = (
            None if expected_cohort_size is None else float(expected_cohort_size)
        )

    def __repr__(self):
        return (
            f"DPGaussianAggregator(clip_norm={self.clip_norm}, "
            f"noise_multiplier={self.noise_multiplier}, weights={self.weights!r}, "
            f"expected_cohort_size={self.expected_cohort_size})"
        )

    def __call__(
        self, delta_C: PyTree, num_examples_C: jax.Array, rng: jax.Array
    ) -> tuple[PyTree, dict[str, jax.Array]]:
        real_C = (num_examples_C > 0).astype(jnp.float32)
        num_real = jnp.maximum(jnp.sum(real_C), 1.0)
        # Padded slots (num_examples 0) are zeroed (not multiplied by 0: a padded row may hold
        # inf/NaN); a real row passes through bit for bit.
        delta_C = jax.tree.map(
            lambda x: jnp.where(
                (num_examples_C > 0).reshape((-1,) + (1,) * (x.ndim - 1)), x, jnp.zeros_like(x)
            ),
            delta_C,
        )
        norms_C = client_global_norms(delta_C)
        factors_C = clip_factors(norms_C, self.clip_norm)
        clipped_C = scale_clients(delta_C, factors_C)

        if self.expected_cohort_size is None:
            # Fixed-size cohort: the denominator is its real size C (the public cohort size; slots
            # padded to a multiple of the mesh's devices have num_examples 0 and weigh nothing). The
            # reduction is the very one MeanAggregator("uniform") uses, so S=inf, σ=0 is bit-exact.
            denominator = num_real
            mean = placement.reduce_weighted_mean(
                clipped_C, client_weights(num_examples_C, "uniform")
            )
        else:
            # Poisson cohort, possibly padded: masked rows weigh 0, fixed denominator q·N.
            denominator = self.expected_cohort_size
            w_C = real_C / denominator

            def reduce_leaf(x):
                return jnp.sum(w_C.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype) * x, axis=0)

            mean = jax.tree.map(reduce_leaf, clipped_C)

        noise_std = 0.0
        # a swept (traced) noise multiplier always draws: σ = 0 then adds exactly 0
        if not _is_number(self.noise_multiplier) or self.noise_multiplier > 0:
            noise_std = self.noise_multiplier * self.clip_norm / denominator
            # N(0, (σS)²) on the sum is N(0, (σS/D)²) on the mean.
            noise = gaussian_noise_like(mean, noise_std, rng)
            mean = jax.tree.map(
                lambda m, z: (m.astype(jnp.float32) + z).astype(m.dtype), mean, noise
            )

        clipped = (norms_C > self.clip_norm).astype(jnp.float32)
        metrics = {
            "dp/mean_preclip_norm": jnp.sum(norms_C * real_C) / num_real,
            "dp/fraction_clipped": jnp.sum(clipped * real_C) / num_real,
            "dp/noise_std": jnp.asarray(noise_std, jnp.float32),
        }
        return mean, metrics


def make_dp_aggregator(
    clip_norm: float,
    noise_multiplier: float,
    *,
    aggregation: str = "uniform",
    sampling: str = "fixed",
    num_clients: int | None = None,
    sample_rate: float | None = None,
) -> DPGaussianAggregator:
    """The aggregator for the loop's ``dp.*`` config; Poisson needs ``num_clients`` and q."""
    check_sampling(sampling)
    if sampling == "fixed":
        return DPGaussianAggregator(clip_norm, noise_multiplier, aggregation)
    if num_clients is None or sample_rate is None:
        raise ValueError("Poisson sampling needs num_clients and sample_rate (the denominator q·N)")
    q = check_sample_rate(sample_rate)
    return DPGaussianAggregator(
        clip_norm, noise_multiplier, aggregation, expected_cohort_size=q * num_clients
    )
