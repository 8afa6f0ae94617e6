r"""FedDAT with ViLT-B/32 on the paper's Task benchmark (METHOD.md §2 hyperparameters, 30 rounds).

  python -m feddat_jax.data.build --benchmark task --raw_dir RAW --out data/task
  python launch.py --config configs/vilt_task.py --workdir runs/vilt_task \
      --config.data.tfds_dir=data/task --config.model.checkpoint=PATH/TO/vilt-b32-mlm

Any baseline or ablation is one override, e.g. --config.method=fedavg_adapter (the names are in
feddat_jax/methods.py); the official code's behaviour is --config.aggregation=uniform
--config.faithful.freeze_client_adapter_after_round0=True --config.faithful.same_order_each_round=True.
bf16 compute on GPU/TPU (parameters and optimizer state stay float32; tests/test_bf16.py
states the tolerance): --config.model.dtype=bfloat16. The local epoch runs in segments of
--config.segment_steps=100 steps (device memory for the inputs does not grow with S; 0 = one call).
Smoke test (one round, tiny random ViLT, embedded data): --config configs/vilt_task.py:smoke
"""

from feddat_jax.train.config_base import paper_config


def get_config(arg: str = ""):
    return paper_config("task", arg)
