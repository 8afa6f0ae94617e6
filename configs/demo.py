r"""The offline demo: FedDAT against the main baselines on the embedded Domain benchmark.

  python launch.py --config configs/demo.py --workdir runs/demo
  python launch.py --config configs/demo.py:smoke --workdir /tmp/demo_smoke   # one tiny round

Twelve clients whose images differ in style and whose questions differ in phrasing, with 16-64
training questions each (too few to learn alone) and 1,000 test questions each; every client
names three shapes by field terms the backbone never learned (shared knowledge); half of the
questions name a colour or a side, which the clients' four naming conventions answer differently
(the concept shift; docs/BENCHMARK.md). The frozen backbone is a tiny ViLT the project pretrained
on the embedded world (configs/pretrain_tiny_vilt.py). Reference rows: ``blind`` (no image) and
``centralized`` (one adapter on the pooled data). The comparison uses the fair learning-rate
schedule (every method's parameter groups get the same rate at the same batch, warmup ends inside
each round); the paper configs keep the official one. Every method trains three seeds as ONE
program (``sweep.seed``: the replica axis), so the table reports mean ± std over seeds. Minutes on
2 CPU cores.
"""

from feddat_jax.train.config_base import embedded_config


def get_config(arg: str = ""):
    return embedded_config("domain", arg)
