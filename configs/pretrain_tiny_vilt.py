r"""Pretrain the demo's tiny ViLT backbone on the embedded world (MLM + ITM); writes a checkpoint.

  python launch.py --config configs/pretrain_tiny_vilt.py --workdir feddat_jax/assets/tiny_vilt
  python launch.py --config configs/pretrain_tiny_vilt.py:smoke --workdir /tmp/pretrain_smoke

The committed feddat_jax/assets/tiny_vilt/ was made by exactly the first command (see its
provenance.json for the held-out scores along the way and the time it took on 2 CPU cores).
"""

import ml_collections


def get_config(arg: str = ""):
    c = ml_collections.ConfigDict()
    c.kind = "pretrain"
    c.seed = 0
    c.corpus_seed = 1234  # the corpus' own scenes; benchmarks use other seeds and streams
    c.num_scenes = 20000
    c.held_out_scenes = 1000
    c.image_size = 48  # 6x6 patches of 8 pixels: a small object spans about 2x2 patches
    c.patch_size = 8
    c.max_text_len = 32
    c.hidden_size = 128
    c.num_layers = 4
    c.num_heads = 4
    c.batch_size = 64
    c.steps = 5000
    c.learning_rate = 1e-3
    c.log_every = 500
    if arg == "smoke":
        c.num_scenes, c.held_out_scenes, c.steps, c.log_every = 40, 20, 4, 2
        c.hidden_size, c.num_layers, c.batch_size = 32, 1, 8
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; allowed: '' or 'smoke'")
    return c
