r"""Pretrain the demo's tiny ViLT backbone on the embedded world, in two stages; writes a checkpoint.

  python launch.py --config configs/pretrain_tiny_vilt.py:stage1 --workdir runs/tiny_vilt_stage1
  python launch.py --config configs/pretrain_tiny_vilt.py --workdir feddat_jax/assets/tiny_vilt
  python launch.py --config configs/pretrain_tiny_vilt.py:smoke --workdir /tmp/pretrain_smoke

Stage 1 (6,000 steps): masked words, image-text matching, region labels and (30% of each batch)
image question answering on the pooled output, the token every downstream head reads. Stage 2
(6,000 steps, continuing from stage 1's folder, ``init_from``) shifts the batch towards question
answering (50%), which stage 1 leaves underfitted. One image token per grid cell (24-pixel patches
on 48-pixel images): five image tokens instead of 37, so a step costs about a quarter as much. The
committed feddat_jax/assets/tiny_vilt/ was made by exactly the first two commands (its
provenance.json has both stages' configs, the held-out scores along the way and the times).
"""

import ml_collections


def get_config(arg: str = ""):
    c = ml_collections.ConfigDict()
    c.kind = "pretrain"
    c.seed = 0
    c.corpus_seed = 1234  # the corpus' own scenes; benchmarks use other seeds and streams
    c.num_scenes = 20000
    c.held_out_scenes = 1000
    c.image_size = 48  # 2x2 patches of 24 pixels: one image token per grid cell (one object)
    c.patch_size = 24
    c.max_text_len = 32
    c.hidden_size = 128
    c.num_layers = 4
    c.num_heads = 4
    c.batch_size = 64
    c.learning_rate = 1e-3
    c.log_every = 500
    # stage 2: 30% of the batch captions (MLM + ITM), half questions the pooled output answers,
    # the rest question-answer texts (MLM); it continues from stage 1's checkpoint
    c.steps = 6000
    c.caption_share = 0.3
    c.qa_share = 0.5
    c.init_from = "runs/tiny_vilt_stage1"  # a checkpoint folder to continue from; "" = scratch
    if arg == "stage1":
        c.steps, c.caption_share, c.qa_share, c.init_from = 6000, 0.5, 0.3, ""
    elif arg == "smoke":
        c.num_scenes, c.held_out_scenes, c.steps, c.log_every = 40, 20, 4, 2
        c.hidden_size, c.num_layers, c.batch_size, c.init_from = 32, 1, 8, ""
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; allowed: '', 'stage1' or 'smoke'")
    return c
