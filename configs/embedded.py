r"""One family of the embedded benchmark: FedDAT, its main baselines and the reference rows.

  python launch.py --config configs/embedded.py:function --workdir runs/function
  python launch.py --config configs/embedded.py:task,smoke --workdir /tmp/task_smoke

The argument names the family: domain (image style and phrasing per client), function (question
function per client), scene (objects and background per client) or task (VQA, true/false,
entailment, multiple choice); ",smoke" shrinks it to one tiny round (4 clients, one seed: the
tests). docs/BENCHMARK.md says what each family and each property stands for. The frozen backbone
is the project's pretrained tiny ViLT (configs/pretrain_tiny_vilt.py). The comparison uses the fair
schedule (fl/local_optim.py): every method's parameter groups get the same learning rate at the
same batch and warmup ends inside each round. Every method trains seeds 0, 1, 2 on the replica
axis as one program (train/sweep.py): the results are mean ± std.
"""

from pathlib import Path

from feddat_jax.train.config_base import TINY_VILT, base_config, family_and_variant


def get_config(arg: str = "domain"):
    family, variant = family_and_variant(arg)
    c = base_config()
    c.compare_methods = ("feddat", "fedavg_adapter", "local_adapter")
    c.rounds, c.eval_every = 20, 10
    c.batch_size, c.eval_batch_size = 8, 100
    c.optim.learning_rate = 1e-3  # METHOD.md §2's 1e-4 is for ViLT-B; everything else is as there
    c.optim.schedule = "fair"
    c.peft.adapter_reduction = 8  # width 128 -> bottleneck 16
    c.model.checkpoint = TINY_VILT if Path(TINY_VILT).is_dir() else ""  # "": random init
    c.model.size, c.model.image_hw, c.model.max_text_len = "tiny", (48, 48), 24
    c.data.source, c.data.family, c.data.image_size = "embedded", family, 48
    c.data.train_per_client = 200  # 80-320 per client (size_spread 0.6)
    c.data.test_per_client = 1000  # a client's score to about +-3 points (95% CI)
    c.sweep.seed = (0, 1, 2)  # three seeds per method as ONE program: mean ± std
    if variant == "smoke":
        c.rounds, c.eval_every, c.tensorboard = 1, 1, False
        c.compare_methods = ("feddat", "fedavg_adapter")
        c.data.num_clients, c.data.train_per_client, c.data.test_per_client = 4, 16, 8
        c.references = ("blind",)  # the centralized reference has its own tests
        c.sweep.seed = ()
    return c
