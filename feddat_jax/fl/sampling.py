"""Seeded client sampling: the same run seed and round always give the same cohort."""

from __future__ import annotations

import numpy as np

from feddat_jax.errors import ConfigError


def cohort_size(num_registered: int, clients_per_round: int | float) -> int:
    """Resolve a count (int) or a fraction in (0, 1] (float) into a cohort size C.

    A whole-number float above 1 is a count: ml_collections keeps a float field a float, so
    ``--config.clients_per_round=3`` arrives as 3.0.
    """
    if isinstance(clients_per_round, bool) or not isinstance(clients_per_round, (int, float)):
        raise TypeError(
            f"clients_per_round must be an int count or a float fraction, got {clients_per_round!r}"
        )
    if isinstance(clients_per_round, float) and clients_per_round > 1.0:
        if not clients_per_round.is_integer():
            raise ConfigError(
                f"clients_per_round={clients_per_round} is neither a fraction in (0, 1] nor a "
                "whole number of clients"
            )
        clients_per_round = int(clients_per_round)
    if isinstance(clients_per_round, float):
        if not 0.0 < clients_per_round <= 1.0:
            raise ConfigError(f"clients_per_round fraction {clients_per_round} is outside (0, 1]")
        return max(1, int(round(clients_per_round * num_registered)))
    if not 1 <= clients_per_round <= num_registered:
        raise ConfigError(
            f"clients_per_round={clients_per_round} but only {num_registered} clients "
            f"are registered (allowed: 1..{num_registered})"
        )
    return clients_per_round


def sample_clients(
    seed: int, round_index: int, num_registered: int, clients_per_round: int | float
) -> np.ndarray:
    """Sorted indices of the clients that train in ``round_index`` (without replacement).

    The generator is keyed by (seed, round) alone, so a resumed run samples the same cohorts.
    All clients (C = N) is the identity, as the paper's experiments use.
    """
    c = cohort_size(num_registered, clients_per_round)
    if c == num_registered:
        return np.arange(num_registered)
    rng = np.random.default_rng([seed, round_index, 0x5A3])
    return np.sort(rng.choice(num_registered, size=c, replace=False))
