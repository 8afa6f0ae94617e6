r"""Pretrain the demo's tiny ViLT backbone on the embedded world (MLM + ITM); writes a checkpoint.

  python launch.py --config configs/pretrain_tiny_vilt.py --workdir feddat_jax/assets/tiny_vilt

The committed feddat_jax/assets/tiny_vilt/ was made by exactly this command (see its
provenance.json). About 10 minutes on 2 CPU cores.
"""

import ml_collections


def get_config(arg: str = ""):
    c = ml_collections.ConfigDict()
    c.kind = "pretrain"
    c.seed = 0
    c.corpus_seed = 1234  # the demo's benchmark uses seed 0: no example is shared
    c.examples_per_client = 400
    c.image_size = 32
    c.patch_size = 8
    c.max_text_len = 24
    c.hidden_size = 128
    c.num_layers = 4
    c.num_heads = 4
    c.batch_size = 64
    c.steps = 3000
    c.learning_rate = 1e-3
    c.mask_rate = 0.15
    c.log_every = 100
    if arg == "smoke":
        c.examples_per_client, c.steps, c.log_every, c.hidden_size, c.num_layers = 8, 4, 2, 32, 1
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; allowed: '' or 'smoke'")
    return c
