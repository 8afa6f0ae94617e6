r"""FedDAT with ALBEF (14M, ViT-B/16 at 384x384) on the paper's Function benchmark (METHOD.md §2, 20 rounds).

  python -m feddat_jax.data.build --benchmark function --raw_dir RAW --out data/function
  python launch.py --config configs/albef_function.py --workdir runs/albef_function \
      --config.data.tfds_dir=data/function --config.model.checkpoint=PATH/TO/ALBEF.pth \
      --config.model.tokenizer=PATH/TO/bert-base-uncased

Answers are generated: each client's answer list is ranked by the decoder's sequence likelihood.
Any baseline or ablation is one override, e.g. --config.method=fedavg_adapter (ALBEF carries
adapters only: not fedavg_lora / fedavg_prompt); the official code's behaviour is
--config.aggregation=uniform --config.faithful.freeze_client_adapter_after_round0=True
--config.faithful.same_order_each_round=True.
bf16 compute on GPU/TPU (parameters and optimizer state stay float32; tests/test_bf16.py
states the tolerance): --config.model.dtype=bfloat16. The local epoch runs in segments of
--config.segment_steps=100 steps (device memory for the inputs does not grow with S; 0 = one call).
Smoke test (one round, tiny random ALBEF, embedded data): --config configs/albef_function.py:smoke
"""

from feddat_jax.train.config_base import albef_paper_config


def get_config(arg: str = ""):
    return albef_paper_config("function", arg)
