r"""One family of the embedded benchmark: FedDAT, its main baselines and the reference rows.

  python launch.py --config configs/embedded.py:function --workdir runs/function
  python launch.py --config configs/embedded.py:task,smoke --workdir /tmp/task_smoke
  python benchmarks/accuracy.py      # every family, several seeds, with the table and the plot

The argument names the family: domain (image style and phrasing per client), function (question
function per client), scene (objects and background per client) or task (VQA, true/false,
entailment, multiple choice); ",smoke" shrinks it to one tiny round. docs/BENCHMARK.md says what
each family and each property stands for.
"""

from feddat_jax.train.config_base import embedded_config


def get_config(arg: str = "domain"):
    family, _, variant = arg.partition(",")
    if family == "smoke":  # ":smoke" alone: the domain family's smoke variant
        family, variant = "domain", "smoke"
    return embedded_config(family, variant)
