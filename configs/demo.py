r"""The offline demo: FedDAT against the main baselines on the embedded Domain benchmark.

  python launch.py --config configs/demo.py --workdir runs/demo
  python launch.py --config configs/demo.py:smoke --workdir /tmp/demo_smoke   # one tiny round

Twelve clients whose images differ in style and whose questions differ in phrasing, with 80-320
training questions each and 1,000 test questions each; a third of the objects are three field
shapes that the backbone never saw in pretraining, so every client needs them learned from too few
examples of its own (the shared knowledge); a third of the questions name a colour that
picks one of two objects, and half the clients use a colour code that swaps red with green and
blue with yellow, so clients disagree on those answers (the concept shift; docs/BENCHMARK.md). The
frozen backbone is a tiny ViLT the project pretrained on the embedded world
(configs/pretrain_tiny_vilt.py). Reference rows: ``blind`` (no image) and ``centralized`` (one
adapter on the pooled data). The comparison uses the fair learning-rate schedule (every method's
parameter groups get the same rate at the same batch, warmup ends inside each round); the paper
configs keep the official one.

The demo is ``configs/embedded.py:domain`` with ONE seed and one evaluation, at the end, so that it
fits in about ten minutes on 2 CPU cores; ``benchmarks/accuracy.py`` runs the same settings with
seeds 0, 1, 2 on the replica axis and reports mean ± std (benchmarks/ACCURACY.md).
"""

from pathlib import Path

from feddat_jax.train.config_base import TINY_VILT, base_config


def get_config(arg: str = ""):
    c = base_config()
    c.compare_methods = ("feddat", "fedavg_adapter", "local_adapter")
    c.rounds, c.eval_every = 20, 20  # one evaluation, after the last round
    c.batch_size, c.eval_batch_size = 8, 100
    c.optim.learning_rate = 1e-3  # METHOD.md §2's 1e-4 is for ViLT-B; everything else is as there
    c.optim.schedule = "fair"
    c.peft.adapter_reduction = 8  # width 128 -> bottleneck 16
    c.model.checkpoint = TINY_VILT if Path(TINY_VILT).is_dir() else ""  # "": random init
    c.model.size, c.model.image_hw, c.model.max_text_len = "tiny", (48, 48), 24
    c.data.source, c.data.family, c.data.image_size = "embedded", "domain", 48
    c.data.train_per_client = 200  # 80-320 per client (size_spread 0.6)
    c.data.test_per_client = 1000  # a client's score to about +-3 points (95% CI)
    if arg == "smoke":  # one tiny round (the tests)
        c.rounds, c.eval_every, c.tensorboard = 1, 1, False
        c.compare_methods = ("feddat", "fedavg_adapter")
        c.data.num_clients, c.data.train_per_client, c.data.test_per_client = 4, 16, 8
        c.references = ("blind",)  # the centralized reference has its own tests
    elif arg:
        raise ValueError(f"unknown config argument {arg!r}; allowed: '' or 'smoke'")
    return c
