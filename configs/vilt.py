r"""FedDAT with ViLT-B/32 on one of the paper's benchmarks (METHOD.md §2 hyperparameters, 30 rounds).

  python -m feddat_jax.data.build --benchmark domain --raw_dir RAW --out data/domain
  python launch.py --config configs/vilt.py:domain --workdir runs/vilt_domain \
      --config.data.tfds_dir=data/domain --config.model.checkpoint=PATH/TO/vilt-b32-mlm
  python launch.py --config configs/vilt.py:domain,smoke --workdir /tmp/s   # 1 tiny round

The argument names the benchmark: domain, function, scene or task; ",smoke" shrinks the same
experiment to one round of a tiny random ViLT on the embedded family of the same name, so the
config runs without the real data. Every other setting is base_config's (train/config_base.py):
METHOD.md §2's batch 2, learning rate 1e-4 with the official schedule, evaluation every 5 rounds.
Any baseline or ablation is one override, e.g. --config.method=fedavg_adapter (the names are in
feddat_jax/methods.py); the official code's behaviour is --config.aggregation=uniform
--config.faithful.freeze_client_adapter_after_round0=True --config.faithful.same_order_each_round=True.
bf16 compute on GPU/TPU (parameters and optimizer state stay float32; tests/test_bf16.py states
the tolerance): --config.model.dtype=bfloat16.
"""

from feddat_jax.train.config_base import base_config, family_and_variant


def get_config(arg: str = "domain"):
    family, variant = family_and_variant(arg)
    c = base_config()
    c.data.family = family  # read from --config.data.tfds_dir (data.source "tfds")
    # S = 1,250 steps per round at the paper's client sizes: 13 calls of [C, 100, B, ...], so
    # device memory for a round's inputs does not grow with S (0 = one call)
    c.segment_steps = 100
    if variant == "smoke":  # one round of a tiny random ViLT on the embedded family
        c.data.source, c.data.num_clients, c.references = "embedded", 4, ("blind",)
        c.data.train_per_client, c.data.test_per_client, c.data.image_size = 12, 6, 32
        c.model.size, c.model.image_hw, c.model.max_text_len = "tiny", (32, 32), 16
        c.rounds, c.eval_every, c.batch_size, c.tensorboard = 1, 1, 4, False
    return c
