"""Which parameter-efficient modules a backbone carries.

`PeftConfig` is a static (hashable) Flax attribute: it decides the *shape* of the parameter tree
(which adapters, LoRA factors and prompt tokens exist), never their values. The forward mode
(`none | shared | client | dat`) is a call argument, so one parameter tree serves every pass of
FedDAT's local step.
"""

from __future__ import annotations

import dataclasses

ADAPTER_NAMES = ("shared", "client")
LORA_TARGETS = ("query", "key", "value")


@dataclasses.dataclass(frozen=True)
class PeftConfig:
    """Parameter-efficient modules inserted into the frozen backbone.

    Attributes:
      adapters: subset of ("shared", "client"): bottleneck adapters created at every adapter site.
        FedDAT needs both; the one-adapter baselines use ("shared",).
      adapter_reduction: bottleneck = hidden // adapter_reduction (48 for width 768).
      dat_weights: (w_client, w_shared) of the fixed DAT mix y + w_c·a_c(y) + w_s·â_s(y).
      dat_gate: replace the fixed mix by a learned per-token gate
        g = sigmoid(Linear(y)): y + g·a_c(y) + (1 − g)·â_s(y). The gate starts at g = 0.5.
      lora_rank: rank r of LoRA factors added to `lora_targets` (0 = no LoRA).
      lora_alpha: LoRA scale numerator; the update is B·A·x · alpha / r.
      lora_targets: attention projections that get LoRA factors.
      num_text_prompts / num_visual_prompts: prompt tokens inserted after the text / image CLS token.
      prompt_hidden: hidden width of each prompt MLP (192 in the official code).
    """

    adapters: tuple[str, ...] = ()
    adapter_reduction: int = 16
    dat_weights: tuple[float, float] = (0.5, 0.5)
    dat_gate: bool = False
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_targets: tuple[str, ...] = ("query", "value")
    num_text_prompts: int = 0
    num_visual_prompts: int = 0
    prompt_hidden: int = 192

    def __post_init__(self) -> None:
        # Configs arrive from ml_collections / JSON as lists; tuples keep the dataclass hashable.
        for name in ("adapters", "dat_weights", "lora_targets"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        unknown = [a for a in self.adapters if a not in ADAPTER_NAMES]
        if unknown or len(set(self.adapters)) != len(self.adapters):
            raise ValueError(
                f"PeftConfig.adapters must be distinct names from {ADAPTER_NAMES}, got {self.adapters}"
            )
        if self.adapter_reduction < 1:
            raise ValueError(
                f"PeftConfig.adapter_reduction must be >= 1, got {self.adapter_reduction}"
            )
        if len(self.dat_weights) != 2 or not all(0.0 <= float(w) <= 1.0 for w in self.dat_weights):
            raise ValueError(
                f"PeftConfig.dat_weights must be two numbers (client, shared) in [0, 1], got {self.dat_weights}"
            )
        if self.dat_gate and set(self.adapters) != set(ADAPTER_NAMES):
            raise ValueError(
                f"PeftConfig.dat_gate needs adapters={ADAPTER_NAMES}, got {self.adapters}"
            )
        if self.lora_rank < 0:
            raise ValueError(f"PeftConfig.lora_rank must be >= 0, got {self.lora_rank}")
        bad_targets = [t for t in self.lora_targets if t not in LORA_TARGETS]
        if bad_targets:
            raise ValueError(
                f"PeftConfig.lora_targets must be a subset of {LORA_TARGETS}, got {self.lora_targets}"
            )
        if min(self.num_text_prompts, self.num_visual_prompts) < 0 or self.prompt_hidden < 1:
            raise ValueError("PeftConfig prompt counts must be >= 0 and prompt_hidden >= 1")
