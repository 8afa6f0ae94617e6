r"""FedDAT with ALBEF (14M, ViT-B/16 at 384x384) on one of the paper's benchmarks (METHOD.md §2, 20 rounds).

  python -m feddat_jax.data.build --benchmark domain --raw_dir RAW --out data/domain
  python launch.py --config configs/albef.py:domain --workdir runs/albef_domain \
      --config.data.tfds_dir=data/domain --config.model.checkpoint=PATH/TO/ALBEF.pth \
      --config.model.tokenizer=PATH/TO/bert-base-uncased
  python launch.py --config configs/albef.py:domain,smoke --workdir /tmp/s   # 1 tiny round

The argument names the benchmark: domain, function, scene or task; ",smoke" shrinks the same
experiment to one round of a tiny random ALBEF on the embedded family of the same name. Answers
are generated: each client's answer list is ranked by the decoder's sequence likelihood. Every
other setting is base_config's (train/config_base.py). Any baseline or ablation is one override,
e.g. --config.method=fedavg_adapter (ALBEF carries adapters only: not fedavg_lora /
fedavg_prompt); the official code's behaviour is --config.aggregation=uniform
--config.faithful.freeze_client_adapter_after_round0=True --config.faithful.same_order_each_round=True.
bf16 compute on GPU/TPU: --config.model.dtype=bfloat16.
"""

from feddat_jax.train.config_base import base_config, family_and_variant


def get_config(arg: str = "domain"):
    family, variant = family_and_variant(arg)
    c = base_config()
    c.model.name = "albef"
    c.model.image_hw = (384, 384)  # ALBEF's VQA resolution (square: no padding, no pixel mask)
    c.model.tokenizer = ""  # BERT tokenizer folder; "" = the checkpoint's, if it is a folder
    c.data.family = family  # read from --config.data.tfds_dir (data.source "tfds")
    c.segment_steps = 100  # the local epoch in calls of 100 steps (0 = one call per round)
    c.rounds = 20
    if variant == "smoke":  # one round of a tiny random ALBEF on the embedded family
        c.data.source, c.data.num_clients, c.references = "embedded", 4, ("blind",)
        c.data.train_per_client, c.data.test_per_client, c.data.image_size = 12, 6, 32
        c.model.size, c.model.image_hw, c.model.max_text_len = "tiny", (32, 32), 16
        c.rounds, c.eval_every, c.batch_size, c.tensorboard = 1, 1, 4, False
    return c
