"""The privacy accountant of the DP shared channel, and Poisson client sampling for it.

One round of :class:`feddat_jax.fl.privacy.DPGaussianAggregator` is a subsampled Gaussian
mechanism on the clients' clipped shared deltas; ``T`` rounds are its T-fold composition. ε is
computed by Google's ``dp_accounting`` for the DpEvent that describes the run:

* ``sampling="fixed"`` (C of N clients drawn without replacement, the FedDAT default): a fixed
  cohort size only makes sense with the *replace-one* neighbouring relation (N is public). Replacing
  one client's data moves the clipped sum by up to ``2S``, so the noise std ``σS`` is ``σ/2`` times
  that sensitivity: the event is ``SampledWithoutReplacementDpEvent(N, C, GaussianDpEvent(σ/2))``
  under ``NeighboringRelation.REPLACE_ONE`` (RDP only: dp_accounting's PLD accountant has no
  sampling-without-replacement event). Full participation (C = N, the paper's setting) is a plain
  Gaussian mechanism with sensitivity ``2S``: ``GaussianDpEvent(σ/2)`` (RDP or PLD).

  A trap this avoids: for ``REPLACE_ONE`` the two dp_accounting accountants read the Gaussian's
  noise multiplier differently. The RDP accountant's sampling-without-replacement bound (Wang,
  Balle, Kasiviswanathan 2019, Thm. 27) takes it relative to the full replace-one distance (at
  q = 1 it returns ``α / (2σ²)``), whereas the PLD accountant's REPLACE adjacency takes it relative
  to the per-record bound and shifts by twice the sensitivity itself. Hence ``σ/2`` under RDP's
  REPLACE_ONE, and, for full participation, the unsampled ``GaussianDpEvent(σ/2)`` under
  ``ADD_OR_REMOVE_ONE``, whose meaning (shift 1, std σ/2) both accountants agree on (an unsampled
  Gaussian's privacy profile depends only on shift / std).
* ``sampling="poisson"`` (each client joins each round independently with probability q):
  add/remove-one relation, sensitivity ``S`` (the aggregator divides by the fixed q·N), the event is
  ``PoissonSampledDpEvent(q, GaussianDpEvent(σ))`` (RDP or PLD).

Consequently, for the same σ, Poisson sampling yields a markedly smaller ε than fixed-size
cohorts (the factor 2 in sensitivity): both are reported correctly, neither is approximated by the
other.

Static shapes: the jitted round needs a static cohort size, while a Poisson cohort's size varies.
:func:`poisson_sample` draws the cohort, :func:`max_poisson_cohort` gives the largest cohort over
the planned rounds (computable before training since sampling does not depend on data), and
:func:`pad_cohort` pads each cohort to that size with a client mask. The padded slots must get an
all-zero ``example_mask`` and ``num_examples = 0`` (so their delta is exactly zero and the
aggregator ignores them), and their private state must not be scattered back.
"""

from __future__ import annotations

import math

import dp_accounting
import numpy as np

from feddat_jax.fl import sampling as fl_sampling
from feddat_jax.fl.privacy import (
    check_accountant,
    check_delta,
    check_noise_multiplier,
    check_sample_rate,
    check_sampling,
)

NeighboringRelation = dp_accounting.NeighboringRelation
_POISSON_SALT = 0x9015


class PrivacyAccountant:
    """ε after T rounds of the DP Gaussian aggregator, at a fixed δ.

    Args:
      noise_multiplier: σ (noise std on the clipped sum is σ·S).
      sampling: ``"fixed"`` (C of N without replacement) or ``"poisson"`` (probability q).
      sample_rate: q in (0, 1]; for fixed-size cohorts q = C / N and ``q·N`` must be an integer.
      delta: δ in (0, 1).
      method: ``"rdp"`` (RdpAccountant) or ``"pld"`` (PLDAccountant; Poisson or full participation
        only).
      num_clients: N, the registered clients; required for fixed-size sampling with q < 1.
    """

    def __init__(
        self,
        noise_multiplier: float,
        sampling: str = "fixed",
        sample_rate: float = 1.0,
        delta: float = 1e-5,
        method: str = "rdp",
        num_clients: int | None = None,
    ):
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        self.sampling = check_sampling(sampling)
        self.sample_rate = check_sample_rate(sample_rate)
        self.delta = check_delta(delta)
        self.method = check_accountant(method)
        self.num_clients = num_clients
        self.cohort_size = None
        if sampling == "fixed" and self.sample_rate < 1.0:
            if (
                isinstance(num_clients, bool)
                or not isinstance(num_clients, (int, np.integer))
                or num_clients < 1
            ):
                raise ValueError(
                    f"fixed-size sampling with sample_rate {self.sample_rate} < 1 needs "
                    f"num_clients (the registered population N >= 1); got {num_clients!r}"
                )
            exact = self.sample_rate * num_clients
            cohort = int(round(exact))
            if abs(exact - cohort) > 1e-6 * max(1.0, exact) or cohort < 1:
                raise ValueError(
                    f"fixed-size sampling needs sample_rate = cohort / num_clients; "
                    f"sample_rate {self.sample_rate} · num_clients {num_clients} = {exact} "
                    f"is not a whole cohort size (use PrivacyAccountant.for_cohort)"
                )
            self.cohort_size = cohort
            if method == "pld":
                raise ValueError(
                    "dp.accountant='pld' cannot account fixed-size cohorts (dp_accounting's "
                    "PLD accountant has no sampling-without-replacement event); use "
                    "dp.accountant='rdp', Poisson sampling, or full participation"
                )
        self._cache: dict[int, float] = {}

    @classmethod
    def for_cohort(
        cls,
        noise_multiplier: float,
        num_clients: int,
        clients_per_round: int | float,
        delta: float,
        method: str = "rdp",
    ) -> "PrivacyAccountant":
        """Fixed-size cohorts resolved exactly as the loop does (a count or a fraction of N)."""
        c = fl_sampling.cohort_size(num_clients, clients_per_round)
        return cls(noise_multiplier, "fixed", c / num_clients, delta, method, num_clients)

    @property
    def neighboring_relation(self) -> NeighboringRelation:
        """REPLACE_ONE for fixed-size cohorts with q < 1, else ADD_OR_REMOVE_ONE (see module doc)."""
        return (
            NeighboringRelation.REPLACE_ONE
            if self.cohort_size is not None
            else NeighboringRelation.ADD_OR_REMOVE_ONE
        )

    def round_event(self) -> dp_accounting.DpEvent:
        """The DpEvent of ONE round (see the module docstring for the sensitivity)."""
        if self.sampling == "poisson":
            gaussian = dp_accounting.GaussianDpEvent(self.noise_multiplier)
            if self.sample_rate == 1.0:
                return gaussian
            return dp_accounting.PoissonSampledDpEvent(self.sample_rate, gaussian)
        # Replace-one: the clipped sum moves by up to 2S, the noise std is σS = (σ/2)·2S.
        gaussian = dp_accounting.GaussianDpEvent(self.noise_multiplier / 2.0)
        if self.cohort_size is None:  # full participation: an unsampled Gaussian, sensitivity 2S
            return gaussian
        return dp_accounting.SampledWithoutReplacementDpEvent(
            self.num_clients, self.cohort_size, gaussian
        )

    def dp_event(self, rounds: int) -> dp_accounting.DpEvent:
        return dp_accounting.SelfComposedDpEvent(self.round_event(), rounds)

    def _new_accountant(self) -> dp_accounting.PrivacyAccountant:
        if self.method == "rdp":
            return dp_accounting.rdp.RdpAccountant(neighboring_relation=self.neighboring_relation)
        return dp_accounting.pld.PLDAccountant(neighboring_relation=self.neighboring_relation)

    def epsilon_after(self, rounds: int) -> float:
        """ε of the run after ``rounds`` DP rounds at this accountant's δ (0 rounds: 0; σ = 0: inf)."""
        if isinstance(rounds, bool) or not isinstance(rounds, (int, np.integer)) or rounds < 0:
            raise ValueError(f"rounds must be an integer >= 0; got {rounds!r}")
        rounds = int(rounds)
        if rounds == 0:
            return 0.0
        if self.noise_multiplier == 0.0:
            return math.inf
        if rounds not in self._cache:
            accountant = self._new_accountant()
            accountant.compose(self.dp_event(rounds))
            self._cache[rounds] = float(accountant.get_epsilon(self.delta))
        return self._cache[rounds]

    def metrics(self, rounds: int) -> dict[str, float]:
        """What the loop logs after each round: ``{"dp/epsilon": ε, "dp/delta": δ}``."""
        return {"dp/epsilon": self.epsilon_after(rounds), "dp/delta": self.delta}

    def __repr__(self):
        return (
            f"PrivacyAccountant(noise_multiplier={self.noise_multiplier}, "
            f"sampling={self.sampling!r}, sample_rate={self.sample_rate}, delta={self.delta}, "
            f"method={self.method!r}, num_clients={self.num_clients})"
        )


# ----------------------------------------------------------------------------- Poisson cohorts
def poisson_sample(
    seed: int, round_index: int, num_registered: int, sample_rate: float
) -> np.ndarray:
    """Sorted ids of the clients that join ``round_index``: each independently with probability q.

    Keyed by (seed, round) alone like :func:`feddat_jax.fl.sampling.sample_clients`, so a resumed
    run draws the same cohorts. The cohort may be empty (the round then releases pure noise).
    """
    q = check_sample_rate(sample_rate)
    if num_registered < 1:
        raise ValueError(f"num_registered must be >= 1; got {num_registered}")
    if q == 1.0:
        return np.arange(num_registered)
    rng = np.random.default_rng([seed, round_index, _POISSON_SALT])
    return np.flatnonzero(rng.random(num_registered) < q)


def max_poisson_cohort(
    seed: int, num_rounds: int, num_registered: int, sample_rate: float, start_round: int = 0
) -> int:
    """The largest Poisson cohort over rounds ``[start_round, start_round + num_rounds)`` (>= 1).

    Sampling depends only on (seed, round), never on data, so the loop can compute the static
    padded cohort size before training without touching the privacy analysis.
    """
    sizes = [
        poisson_sample(seed, r, num_registered, sample_rate).size
        for r in range(start_round, start_round + num_rounds)
    ]
    return max([1] + sizes)


def pad_cohort(ids: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids_C, mask_C)`` of static length ``size``: the cohort, then slots pointing at client 0.

    ``mask_C`` is True for real clients. The loop must give padded slots an all-zero
    ``example_mask`` and ``num_examples = 0``, and scatter back only ``ids_C[mask_C]``.
    """
    ids = np.asarray(ids, np.int64)
    if ids.size > size:
        raise ValueError(
            f"Poisson cohort of {ids.size} clients exceeds the padded size {size}; "
            f"size the padding with max_poisson_cohort over the planned rounds"
        )
    out = np.zeros((size,), np.int32)
    out[: ids.size] = ids
    mask = np.zeros((size,), bool)
    mask[: ids.size] = True
    return out, mask
