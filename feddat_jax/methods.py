"""Every method of the paper's tables as a recipe on ONE machinery.

A method is (local algorithm, partition preset, PEFT modules, adapter mode, server optimizer,
algorithm options, and whether each client finetunes before it is scored). Baselines and ablations are entries here, not forks of the training code, so a
config switches between them with one override (``--config.method=fedavg_lora``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax

from feddat_jax.errors import ConfigError
from feddat_jax.fl import local_optim
from feddat_jax.fl.algorithms import FedAvg, FedAvgConfig, FedDAT, FedDATConfig, LocalAlgorithm
from feddat_jax.fl.algorithms.base import Forward
from feddat_jax.peft import roles
from feddat_jax.peft.config import PeftConfig

PyTree = Any
_BOTH = {"adapters": ("shared", "client")}
_ONE = {"adapters": ("shared",)}


@dataclasses.dataclass(frozen=True)
class Method:
    """How to train one entry of the paper's tables."""

    algorithm: str  # "feddat" | "fedavg" (FedProx = fedavg with prox_mu > 0)
    partition: str  # a preset of feddat_jax.peft.roles.RULES
    peft: dict = dataclasses.field(default_factory=dict)  # PeftConfig fields
    adapter_mode: str = "none"  # forward mode of single-model methods
    server_optimizer: str = "fedavg"
    options: dict = dataclasses.field(default_factory=dict)  # FedAvgConfig / FedDATConfig fields
    # evaluate each client after a short finetune of its own (train.finetune); training unchanged
    finetune: bool = False


METHODS: dict[str, Method] = {
    # FedDAT and its ablations (METHOD.md §4).
    "feddat": Method("feddat", "feddat", _BOTH),
    "feddat_no_mkd": Method(
        "feddat", "feddat", _BOTH, options={"kd_to_shared": False, "kd_to_dat": False}
    ),
    "feddat_kd_to_shared_only": Method("feddat", "feddat", _BOTH, options={"kd_to_dat": False}),
    "feddat_kd_to_dat_only": Method("feddat", "feddat", _BOTH, options={"kd_to_shared": False}),
    "feddat_no_global_teacher": Method(
        "feddat", "feddat", _BOTH, options={"teacher_mode": "client"}
    ),
    "feddat_gate": Method("feddat", "feddat", {**_BOTH, "dat_gate": True}),
    # Baselines: heads are always private.
    "local_adapter": Method("fedavg", "local_adapter", _ONE, "shared"),
    "fedavg_full": Method("fedavg", "full"),
    "fedavg_adapter": Method("fedavg", "adapter", _ONE, "shared"),
    "fedavg_lora": Method("fedavg", "lora", {"lora_rank": 16}),
    "fedavg_bitfit": Method("fedavg", "bitfit"),
    "fedavg_layernorm": Method("fedavg", "layernorm"),
    "fedavg_prompt": Method("fedavg", "prompt", {"num_text_prompts": 5, "num_visual_prompts": 5}),
    "fedprox_adapter": Method("fedavg", "adapter", _ONE, "shared", options={"prox_mu": 0.01}),
    "fedavgm_adapter": Method("fedavg", "adapter", _ONE, "shared", server_optimizer="fedavgm"),
    "fedadam_adapter": Method("fedavg", "adapter", _ONE, "shared", server_optimizer="fedadam"),
    "fedyogi_adapter": Method("fedavg", "adapter", _ONE, "shared", server_optimizer="fedyogi"),
    # FedAvg + adapter, scored after each client finetunes the global model on its own data
    # (config.finetune_steps local steps): the personalization baseline of pFL-Bench
    "fedavg_ft": Method("fedavg", "adapter", _ONE, "shared", finetune=True),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(
            f"unknown method {name!r}", "config.method", f"choose from: {', '.join(METHODS)}"
        )
    return METHODS[name]


def peft_config(method: Method, **overrides) -> PeftConfig:
    """The method's PEFT modules; ``overrides`` (e.g. ``adapter_reduction``) come from the config."""
    return PeftConfig(**{**overrides, **method.peft})


def build_algorithm(
    method: Method, forward: Forward, optim: local_optim.LocalOptimConfig, **options
) -> LocalAlgorithm:
    """The local algorithm with the method's options, then the config's ``options`` on top."""
    opts = {**method.options, **options}
    if method.algorithm == "feddat":
        return FedDAT(forward, FedDATConfig(optim=optim, **opts))
    if method.algorithm == "fedavg":
        return FedAvg(forward, FedAvgConfig(adapter_mode=method.adapter_mode, optim=optim, **opts))
    raise ValueError(f"unknown algorithm {method.algorithm!r} in method recipe")


def split_params(
    method: Method, params: PyTree, head: str = "private"
) -> tuple[PyTree, PyTree, PyTree]:
    """``(frozen, shared, private)`` of a full parameter tree under the method's partition, the
    answer head ``head`` ("private", or "shared": ``config.peft.head``)."""
    return roles.split(params, roles.rules_for(method.partition, head))


def make_forward(model, inputs_fn: Callable[[dict], dict]) -> Forward:
    """``forward(params, batch, mode)`` for a Flax model whose ``__call__(inputs, adapter_mode)``."""

    def forward(params: PyTree, batch: dict, adapter_mode: str) -> jax.Array:
        return model.apply({"params": params}, inputs_fn(batch), adapter_mode=adapter_mode)

    return forward
