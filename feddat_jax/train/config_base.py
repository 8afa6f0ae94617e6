"""The defaults every experiment config starts from (METHOD.md §2 hyperparameters).

Each file in ``configs/`` calls :func:`base_config` and changes what its experiment needs; any
field can be overridden on the command line (``--config.rounds=10``). The config is locked, so a
misspelt key is an error, and ml_collections refuses a value of the wrong type.
"""

from __future__ import annotations

import json
from pathlib import Path

import ml_collections

# the project's pretrained tiny ViLT (configs/pretrain_tiny_vilt.py), shipped in the package
TINY_VILT = str(Path(__file__).resolve().parent.parent / "assets" / "tiny_vilt")
REPO = Path(__file__).resolve().parents[2]  # the repository root: configs/ lives there

# Fields that do not change the numbers a run computes: excluded from the checkpoint fingerprint,
# so a resumed run may, e.g., train for more rounds or log differently. Where the run executes
# (mesh, strategy, chunk_size, client_storage, distributed) is here too: it changes the numbers
# only by float reduction order (a cross-device all-reduce, vmap vs lax.map batching; a 1-device
# and an 8-device run agree to ~1e-6), so a run may resume on another mesh or number of processes
# (checkpoints hold host copies of every client, independent of the mesh). A resume is bit for bit
# equal to an uninterrupted run when these fields are unchanged. A dotted name is a field of a
# block: how a stored benchmark is read, and where the embedded one is cached, change nothing.
NON_NUMERIC_FIELDS = (
    "rounds",
    "eval_every",
    "checkpoint_every",
    "tensorboard",
    "compare_methods",
    "references",
    "mesh",
    "strategy",
    "chunk_size",
    "segment_steps",
    "eval_clients_per_call",
    "client_storage",
    "distributed",
    "engine",
    "data.read_threads",
    "data.decoded_cache_mb",
    "data.example_cache_mb",
    "data.cache_dir",
)
STRATEGIES = ("auto", "vmap", "scan")
CLIENT_STORAGES = ("auto", "device", "host")
ENGINES = ("simulation", "flower")


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.method = "feddat"  # a key of feddat_jax.methods.METHODS
    c.compare_methods = ()  # if set, launch.py runs each of these methods in turn
    # reference rows of every comparison (train/references.py): "blind" (no image: the most
    # common training answer per question type) and "centralized" (one adapter, pooled data)
    c.references = ("blind", "centralized")
    c.rounds = 30
    c.clients_per_round = 1.0  # a float fraction of the registered clients, or an int count
    c.batch_size = 2
    c.eval_batch_size = 32
    c.eval_every = 5
    c.eval_clients = 0  # clients each evaluation scores: a seeded sample (0 = every client)
    c.eval_clients_per_call = 0  # clients evaluated per call (0 = a training cohort's size)
    # fedavg_ft: at most this many local steps of each evaluated client's finetune on its own
    # train data before it is scored (0 = as many as a training round: one local epoch, capped
    # at optim.max_local_steps); other methods ignore it
    c.finetune_steps = 0
    c.checkpoint_every = 1
    c.aggregation = "weighted"  # "uniform" reproduces the official code
    c.reset_optimizer_each_round = True
    c.fedprox_mu = 0.01
    c.tensorboard = True
    c.comm_max_bytes = 0.0  # stop cleanly before a round that would pass it (0 = no cap)
    # Scale-out (benchmarks/README.md): the same command runs on 1 device, 8 devices or several
    # hosts. The cohort's clients are sharded over the mesh's "clients" axis (-1 = every device not
    # on "model"), padded to a multiple of it with slots that weigh nothing.
    c.mesh = ml_collections.ConfigDict(dict(clients=-1, model=1, shard_frozen=False))
    c.strategy = "auto"  # "auto" (fl.mesh.default_strategy: backend, model size) | "vmap" | "scan"
    c.chunk_size = 0  # with "vmap": at most this many clients at once per device (0 = all)
    # the local epoch runs in calls of at most this many steps (fl.segments): device memory for a
    # round's inputs is [C, segment_steps, B, ...] instead of [C, S, B, ...] (0 = one call/round)
    c.segment_steps = 0
    # every client's private state: "device" (on the accelerator), "host" (numpy) or "auto" (device
    # when it fits in a quarter of a device's memory, 2 GiB where unknown; host with processes > 1)
    c.client_storage = "auto"
    # "simulation": the project's own loop; "flower": each method on Flower's simulation engine,
    # one node per client, same outputs (docs/FLOWER.md; needs pip install -e '.[flower]')
    c.engine = "simulation"
    # multi-process runs (fl.distributed.initialize_distributed); empty = one process, or the environment
    # (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID); auto_detect: SLURM / MPI / TPU;
    # initialization_timeout: seconds every process may take to join before the run gives up
    c.distributed = ml_collections.ConfigDict(
        dict(
            coordinator_address="",
            num_processes=0,
            process_id=-1,
            auto_detect=False,
            initialization_timeout=300,
        )
    )
    # central DP of the shared channel (docs/PRIVACY.md); needs aggregation="uniform". sampling:
    # "fixed" (clients_per_round clients each round) or "poisson" (each client independently with
    # probability q = clients_per_round as a fraction; an int count is count / N; one process only)
    c.dp = ml_collections.ConfigDict(
        dict(
            enabled=False,
            clip_norm=1.0,
            noise_multiplier=1.0,
            delta=1e-5,
            accountant="rdp",
            sampling="fixed",
        )
    )

    c.optim = ml_collections.ConfigDict(
        dict(
            learning_rate=1e-4,
            b1=0.9,
            b2=0.98,
            eps=1e-8,
            weight_decay=0.01,
            warmup_fraction=0.1,
            schedule_epochs=15.0,
            schedule="official",  # "fair" for comparisons (fl/local_optim.py)
            # local steps (batches) per round at most: FedAvg's K; 0 = one whole local epoch
            max_local_steps=0,
        )
    )
    c.server = ml_collections.ConfigDict()
    c.server.optimizer = ""  # "" = the method's own (fedavg unless e.g. fedadam_adapter)
    c.server.hyper = ml_collections.ConfigDict(
        dict(learning_rate=1.0, momentum=0.9, b1=0.9, b2=0.99, tau=1e-3)
    )
    c.feddat = ml_collections.ConfigDict(
        dict(temperature=3.0, task_weight=0.5, kd_weight=0.5, eval_teacher="round_start")
    )
    c.faithful = ml_collections.ConfigDict(
        dict(freeze_client_adapter_after_round0=False, same_order_each_round=False)
    )
    c.peft = ml_collections.ConfigDict(dict(adapter_reduction=16, lora_rank=16))
    # where the answer head lives: "private" (each client's own, over its own answers: the paper's
    # cross-silo design) | "shared" (one head over the benchmark's answer space, aggregated like
    # the shared adapter: cross-device, few examples per client; docs/CROSS_DEVICE.md)
    c.peft.head = "private"

    c.model = ml_collections.ConfigDict()
    c.model.name = "vilt"  # "vilt" | "albef" (feddat_jax.models.backbones.MODEL_NAMES)
    c.model.checkpoint = ""  # local HF folder; "" = random init at model.size
    c.model.size = "base"  # "tiny" | "base" (only without a checkpoint)
    c.model.dtype = "float32"  # compute dtype ("bfloat16" on GPU/TPU); params, optimizer stay f32
    c.model.image_hw = (384, 640)  # every image is padded to this static size (pixel mask)
    c.model.max_text_len = 40

    c.data = ml_collections.ConfigDict()
    c.data.source = "tfds"  # "tfds" (a built benchmark) | "embedded"
    c.data.tfds_dir = ""
    c.data.family = "domain"
    c.data.num_clients = 0  # 0 = every client of the family
    c.data.image_size = 64
    c.data.train_per_client = 300
    c.data.test_per_client = 100
    c.data.seed = 0
    # embedded: "mixed" (clients' naming conventions differ: the concept shift) | "standard"
    # (every client on the standard one: the control without the shift)
    c.data.conventions = "mixed"
    c.data.cache_dir = "~/.cache/feddat_jax/embedded"
    # a stored (tfds) benchmark is read on demand: decoding threads, and decoded rows kept in RAM
    # (0 = none; enough for every client's rows decodes each image once)
    c.data.read_threads = 8
    c.data.decoded_cache_mb = 0
    # embedded: clients are drawn on demand; drawn examples kept in RAM (LRU, MB)
    c.data.example_cache_mb = 256
    # how the examples are dealt to clients: "natural" (the benchmark's own clients) | "iid" |
    # "quantity" (client sizes ~ Dir(alpha)) | "dirichlet" (each label's shares ~ Dir(alpha)):
    # the natural clients' examples pooled and dealt over num_clients clients, seeded by data.seed
    c.data.partition = "natural"
    c.data.dirichlet_alpha = 0.5  # "quantity" and "dirichlet": smaller = more skewed
    c.sweep = sweep_section(c)
    return c


def family_and_variant(arg: str) -> tuple[str, str]:
    """A family config's argument ``FAMILY[,smoke]`` (``configs/vilt.py:scene,smoke``) as
    ``(family, variant)``; "" is the domain family and "smoke" alone the domain family's smoke
    variant. Anything else is refused (the command line shows the message in one line)."""
    from feddat_jax.data.embedded_families import FAMILIES

    family, _, variant = arg.partition(",")
    if family in ("", "smoke") and not variant:
        family, variant = "domain", family
    if family not in FAMILIES or variant not in ("", "smoke"):
        raise ValueError(
            f"unknown config argument {arg!r}; allowed: FAMILY or FAMILY,smoke with FAMILY one "
            f"of {', '.join(FAMILIES)}"
        )
    return family, variant


def config_from_file(spec: str) -> ml_collections.ConfigDict:
    """The config ``launch.py --config FILE[:ARG]`` builds (``configs/embedded.py:scene``), for
    scripts and tests: configs/ is not a package. A relative FILE is the repository's."""
    import importlib.util

    file, _, arg = spec.partition(":")
    path = Path(file) if Path(file).is_absolute() else REPO / file
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg) if arg else module.get_config()


def sweep_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """``config.sweep``: a mirror of the config in which every field is an empty tuple.

    Setting one to a tuple of values sweeps that field: the run trains one federation per value
    (``--config.sweep.seed='(0,1,2)'``, ``--config.sweep.optim.learning_rate='(1e-3,3e-4)'``)
    as ONE program on a replica axis (``train.sweep``, ``fl.replicas``). ``mode`` is "grid"
    (every combination of the swept fields) or "zip" (their i-th values together). Only the
    seed and the scalar hyperparameters of ``fl.hparams.SWEEPABLE`` can be swept; a field that
    changes shapes or structure (method, model.*, peft.*, data.*, batch_size, rounds, ...) is
    refused in one line (vary methods with ``compare_methods``). Every field is mirrored so that
    the refusal names it rather than failing as an unknown key.
    """

    def mirror(node: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
        return ml_collections.ConfigDict(
            {
                k: mirror(v) if isinstance(v, ml_collections.ConfigDict) else ()
                for k, v in node.items()
            }
        )

    section = mirror(config)
    section.mode = "grid"
    return section


def _drop_empty_sweep(d: dict) -> None:
    """Unset sweep fields leave the fingerprint alone (an unswept run's is what it always was)."""

    def prune(node):
        if not isinstance(node, dict):
            return node
        kept = {k: prune(v) for k, v in node.items()}
        return {k: v for k, v in kept.items() if v not in ((), [], {})}

    sweep = prune({k: v for k, v in d.get("sweep", {}).items() if k != "mode"})
    if sweep:
        d["sweep"] = {**sweep, "mode": d["sweep"].get("mode", "grid")}
    else:
        d.pop("sweep", None)


def without_non_numeric(config_dict: dict) -> dict:
    """A copy of the config's JSON data without :data:`NON_NUMERIC_FIELDS` and without the
    unset fields of ``sweep`` (a sweep's values and mode stay: they change the numbers)."""
    d = json.loads(json.dumps(config_dict))
    for key in NON_NUMERIC_FIELDS:
        *blocks, field = key.split(".")
        node = d
        for block in blocks:
            node = node.get(block) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(field, None)
    _drop_empty_sweep(d)
    return d


def fingerprint_json(config: ml_collections.ConfigDict) -> str:
    """The config as canonical JSON without the fields that do not change the numbers."""
    return json.dumps(without_non_numeric(json.loads(config.to_json())), sort_keys=True)
