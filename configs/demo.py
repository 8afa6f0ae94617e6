r"""The offline demo: FedDAT against the main baselines on the embedded Domain benchmark.

  python launch.py --config configs/demo.py --workdir runs/demo
  python launch.py --config configs/demo.py:smoke --workdir /tmp/demo_smoke   # one tiny round

Five clients whose images differ in style and whose questions differ in phrasing; a tiny ViLT
that the project pretrained on the embedded world (configs/pretrain_tiny_vilt.py) is the frozen
backbone. Minutes on 2 CPU cores.
"""

from pathlib import Path

from feddat_jax.train.config_base import base_config

TINY_VILT = str(Path(__file__).resolve().parent.parent / "feddat_jax" / "assets" / "tiny_vilt")


def get_config(arg: str = ""):
    c = base_config()
    c.method = "feddat"
    c.compare_methods = ("feddat", "fedavg_adapter", "fedprox_adapter", "local_adapter")
    c.rounds = 20
    c.eval_every = 4
    c.batch_size = 8
    c.eval_batch_size = 50
    c.optim.learning_rate = 1e-3  # SPEC's 1e-4 is for ViLT-B; everything else is SPEC §2
    c.peft.adapter_reduction = 8  # width 128 -> bottleneck 16
    c.model.checkpoint = TINY_VILT if Path(TINY_VILT).is_dir() else ""
    c.model.size = "tiny"
    c.model.image_hw = (32, 32)
    c.model.max_text_len = 24
    c.data.source = "embedded"
    c.data.family = "domain"
    c.data.image_size = 32
    c.data.train_per_client = 160
    c.data.test_per_client = 300     # ±3% per-client noise at 100; the scores need the resolution
    if arg == "smoke":
        c.rounds, c.eval_every = 1, 1
        c.compare_methods = ("feddat", "fedavg_adapter")
        c.data.train_per_client, c.data.test_per_client = 16, 8
        c.tensorboard = False
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; allowed: '' or 'smoke'")
    return c
