"""Local-training algorithms on the :class:`LocalAlgorithm` interface."""

from feddat_jax.fl.algorithms.base import ClientContext, Forward, LocalAlgorithm
from feddat_jax.fl.algorithms.fedavg import FedAvg, FedAvgConfig
from feddat_jax.fl.algorithms.feddat import FedDAT, FedDATConfig

ALGORITHMS = ("fedavg", "feddat")


def make_algorithm(name: str, forward: Forward, config) -> LocalAlgorithm:
    """The algorithm called ``name`` (FedProx is ``fedavg`` with ``prox_mu > 0``)."""
    if name == "fedavg":
        return FedAvg(forward, config)
    if name == "feddat":
        return FedDAT(forward, config)
    raise ValueError(f"unknown algorithm {name!r}; allowed: {', '.join(ALGORITHMS)}")


__all__ = [
    "ALGORITHMS",
    "ClientContext",
    "FedAvg",
    "FedAvgConfig",
    "FedDAT",
    "FedDATConfig",
    "Forward",
    "LocalAlgorithm",
    "make_algorithm",
]
