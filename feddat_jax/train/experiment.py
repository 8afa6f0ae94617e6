"""Build everything one run needs from its config: data, model, method, and the jitted functions.

This is the only place where the config's names meet the library's objects, so a wrong key or
value fails here, before any compute, with a message that names it.

Every run builds R replicas of the federation (``train.sweep``; R = 1 unless the config sweeps
seeds or hyperparameters): the server state, every client's private state and the swept
hyperparameters have a leading replica axis R, and the round and evaluation functions are
``fl.replicas``' (one program for all R); the frozen backbone is built and placed once.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh

from feddat_jax import methods
from feddat_jax.data import loading
from feddat_jax.data import source as source_lib
from feddat_jax.data.client_store import RowStore
from feddat_jax.data.pipeline import eval_rows, gather_rows, task_metadata
from feddat_jax.data.records import FederatedBenchmark
from feddat_jax.errors import ConfigError
from feddat_jax.fl import communication, local_optim
from feddat_jax.fl import hparams as hparams_lib
from feddat_jax.fl import mesh as mesh_lib
from feddat_jax.fl import sampling as sampling_lib
from feddat_jax.fl.accounting import PrivacyAccountant
from feddat_jax.fl.aggregation import Aggregator, MeanAggregator
from feddat_jax.fl.algorithms import LocalAlgorithm
from feddat_jax.fl.privacy import make_dp_aggregator
from feddat_jax.fl.replicas import make_replica_eval_fn, stack_replicas
from feddat_jax.fl.segments import SegmentedRound
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import ClientTasks, ServerState, init_server_state, validate_tasks
from feddat_jax.models import backbones
from feddat_jax.train import scores
from feddat_jax.train.checkpoints import config_fingerprint
from feddat_jax.train.config_base import CLIENT_STORAGES, STRATEGIES, fingerprint_json
from feddat_jax.train.sweep import Sweep, SweepConfigError, sweep_from_config

PyTree = Any
log = logging.getLogger(__name__)
DATA_SOURCES = ("embedded", "tfds")
DP_SAMPLINGS = ("fixed", "poisson")
# A backbone with at least this many frozen parameters counts as "base" size for the "auto"
# strategy (ViLT-B/32 and ALBEF have ~10^8; the demo's tiny ViLT 10^6).
BASE_SIZE_PARAMS = 20_000_000


@dataclasses.dataclass
class Experiment:
    """A run's immutable pieces plus its initial state."""

    config: ml_collections.ConfigDict
    method: methods.Method
    benchmark: FederatedBenchmark
    train_store: RowStore  # decoded once (embedded) or read on demand (a stored benchmark)
    test_store: RowStore
    tasks: ClientTasks  # [N]
    algorithm: LocalAlgorithm
    frozen: PyTree  # placed on the mesh (replicated, or split over "model")
    server: ServerState  # the initial server state [R, ...], replicated on the mesh
    private_init: PyTree  # each replica's initial private state (every client's), host [R, ...]
    segmented_round: SegmentedRound  # the round: config.segment_steps steps per call (0 = all)
    eval_fn: Any  # make_replica_eval_fn
    param_share: communication.ParameterShare
    accountants: list[PrivacyAccountant | None]  # per replica (None: no DP)
    # ALBEF: every client's answer list [N, A, La] (backbones.answer_lists); {} for ViLT
    answers_N: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    mesh: Mesh | None = None  # the ("clients", "model") mesh the run is placed on
    strategy: str = "vmap"  # the resolved config.strategy
    sweep: Sweep = dataclasses.field(default_factory=Sweep)  # the replicas (R = 1 unswept)
    hparams: dict[str, jax.Array] = dataclasses.field(default_factory=dict)  # swept scalars [R]

    @property
    def round_fn(self):
        """The one-call round (``make_replica_round_fn``): the whole local epoch in one call."""
        return self.segmented_round.round_fn

    @property
    def client_names(self) -> list[str]:
        return [c.name for c in self.benchmark.clients]

    def run_fingerprint(self, extra: str = "") -> str:
        """What a checkpoint must match to be resumed: the config's numbers and the data, i.e. the
        benchmark's manifest (an embedded benchmark's generator version and source digest, a
        stored one's recorded build). The config alone would let a run folder resume on data
        that another generator version built and mix the two."""
        data = json.dumps(self.benchmark.manifest, sort_keys=True, default=str)
        return config_fingerprint(f"{fingerprint_json(self.config)}/data={data}{extra}")

    def round_steps(self) -> int:
        """Local steps of a round, one static shape for every round: the largest client's epoch
        (``ceil(n_k / B)``), at most ``optim.max_local_steps`` (FedAvg's K)."""
        steps = self.train_store.max_steps(self.config.batch_size)
        cap = self.config.optim.max_local_steps
        return min(steps, cap) if cap else steps

    def eval_rows(self, client_ids) -> np.ndarray:
        """int64 [C, S_e, B_e]: the test-store row of each evaluation slot of these clients (-1 =
        padding); S_e is the largest client's, so every chunk of clients has one shape. B_e is
        ``eval_batch_size`` or the largest client's test split if smaller: a batch of padding
        only costs memory (16-question clients in batches of 100 peaked 0.8 GB higher)."""
        largest = int(self.test_store.num_examples().max(initial=1))
        size = max(1, min(self.config.eval_batch_size, largest))
        steps = self.test_store.max_steps(size)
        return eval_rows(self.test_store, np.asarray(client_ids, np.int64), size, num_steps=steps)

    def eval_batches(self, client_ids) -> dict[str, np.ndarray]:
        """These clients' whole test splits [C, S_e, B_e, ...] (the rows of :meth:`eval_rows`),
        with their answer lists (ALBEF)."""
        ids = np.asarray(client_ids, np.int64)
        return self.with_answer_lists(gather_rows(self.test_store, self.eval_rows(ids)), ids)

    def eval_tags(self, client_ids) -> list[dict[str, np.ndarray]]:
        """Per client: its test rows' question type and group (host metadata, ``train.scores``)."""
        return scores.client_tags(self.test_store, client_ids)

    def accountant_of(self, replica: int) -> PrivacyAccountant | None:
        return self.accountants[replica]

    def with_answer_lists(self, batch: dict[str, np.ndarray], client_ids) -> dict[str, np.ndarray]:
        """A pipeline batch [C, S, B, ...] of these clients plus what the backbone needs per client
        (ALBEF: the answer lists [C, S, A, La])."""
        return backbones.with_answer_lists(batch, self.answers_N, client_ids)


def load_benchmark(
    data: ml_collections.ConfigDict, patch_size: int, head: str = "private"
) -> FederatedBenchmark:
    """Read on demand, partitioned, on the head's answer space (``data.loading``)."""
    return loading.load_benchmark(data, patch_size, head)


def row_store(
    config: ml_collections.ConfigDict, clients, part: str, encoder, num_answers: int
) -> RowStore:
    """A split's rows, read (a stored benchmark) or drawn (the embedded one) and decoded on
    demand: host memory does not grow with the clients; ``data.decoded_cache_mb`` of decoded
    rows are kept."""
    hw, length = tuple(config.model.image_hw), config.model.max_text_len
    return source_lib.RecordStore(
        clients,
        part,
        encoder,
        hw,
        length,
        num_answers,
        threads=config.data.read_threads,
        cache_bytes=int(config.data.decoded_cache_mb) << 20,
    )


def resolve_strategy(config: ml_collections.ConfigDict, frozen: PyTree) -> str:
    """``config.strategy``, with "auto" resolved by ``fl.mesh.default_strategy`` from the backend
    and the backbone's size ("base" from :data:`BASE_SIZE_PARAMS` frozen parameters)."""
    strategy = backbones.choice(config.strategy, STRATEGIES, "strategy")
    if strategy != "auto":
        return strategy
    size = "base" if communication.tree_num_params(frozen) >= BASE_SIZE_PARAMS else "tiny"
    return mesh_lib.default_strategy(jax.default_backend(), size)


def build_experiment(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> Experiment:
    """Everything one run needs; ``mesh`` defaults to ``fl.mesh.mesh_from_config(config.mesh)``
    (in a multi-process run, call ``fl.distributed.initialize_distributed`` first)."""
    mesh = mesh if mesh is not None else mesh_lib.mesh_from_config(config.mesh)
    backbones.choice(config.client_storage, CLIENT_STORAGES, "client_storage")
    method = methods.get_method(config.method)
    sweep = sweep_from_config(config, method)
    replica_configs = [sweep.replica_config(config, r) for r in range(sweep.size)]
    registered = sweep.registered_config(config).data  # a client-count sweep's largest count
    benchmark = load_benchmark(registered, backbones.patch_size(config), config.peft.head)
    encoder = backbones.text_encoder(config, benchmark)
    clients = benchmark.clients
    num_answers = max(len(c.answers) for c in clients)
    train_store, test_store = (
        row_store(config, clients, part, encoder, num_answers) for part in ("train", "test")
    )
    tasks = ClientTasks(
        **{k: jnp.asarray(v) for k, v in task_metadata(clients, num_answers).items()}
    )
    validate_tasks(tasks)
    answers_N = backbones.answer_lists(config, clients, encoder, num_answers)  # {} for ViLT

    peft = methods.peft_config(
        method,
        adapter_reduction=config.peft.adapter_reduction,
        **({"lora_rank": config.peft.lora_rank} if method.peft.get("lora_rank") else {}),
    )
    answer_len = answers_N["answer_input_ids"].shape[-1] if answers_N else 0
    model, params, inputs_fn, _, init_params = backbones.build_backbone(
        replica_configs[0], peft, num_answers, encoder, answer_len=answer_len
    )
    frozen, shared, private = methods.split_params(method, params, config.peft.head)

    forward = methods.make_forward(model, inputs_fn)
    parts = [
        replica_parts(c, method, forward, sweep.population(r, len(clients)), sweep)
        for r, c in enumerate(replica_configs)
    ]
    algorithm, server_tx, aggregator, _ = parts[0]
    seeds = sweep.seeds(config)
    if len(set(seeds)) > 1 and not config.model.checkpoint:
        log.warning(
            "model.checkpoint is empty: the frozen backbone is random, and every replica of the "
            "sweep uses the one of seed %d (a separate run with another seed draws its own)",
            seeds[0],
        )
    trainable = {seeds[0]: (shared, private)}
    for seed in seeds[1:]:
        if seed not in trainable:  # replicas that differ only in hyperparameters share it
            trainable[seed] = methods.split_params(
                method, init_params(seed), config.peft.head
            )[1:]
    servers, privates = zip(
        *(initial_state(algorithm, server_tx, *trainable[s], s) for s in seeds)
    )
    strategy = resolve_strategy(config, frozen)
    placement = mesh_lib.round_fn_kwargs(strategy, config.chunk_size or None)
    param_share = communication.parameter_share(frozen, shared, private)
    segmented_round = SegmentedRound(
        algorithm,
        server_tx,
        aggregator,
        segment_steps=config.segment_steps,
        mesh=mesh,
        **placement,
    )
    return Experiment(
        config=config,
        method=method,
        benchmark=benchmark,
        train_store=train_store,
        test_store=test_store,
        tasks=tasks,
        algorithm=algorithm,
        frozen=mesh_lib.put_frozen(frozen, mesh, config.mesh.shard_frozen),
        server=mesh_lib.put_replicated(stack_replicas(servers), mesh),
        private_init=jax.tree.map(lambda *xs: np.stack(xs), *privates),
        segmented_round=segmented_round,
        eval_fn=make_replica_eval_fn(algorithm, mesh=mesh, **placement),
        param_share=param_share,
        accountants=[p[3] for p in parts],
        answers_N=answers_N,
        mesh=mesh,
        strategy=strategy,
        sweep=sweep,
        hparams=mesh_lib.put_replicated(sweep.hparams(), mesh),
    )


def initial_state(
    algorithm: LocalAlgorithm, server_tx, shared: PyTree, private: PyTree, seed: int
) -> tuple[ServerState, PyTree]:
    """A federation's initial server state (its key from ``seed``) and the private state every
    one of its clients starts from, host numpy (METHOD.md §1: all clients start identical)."""
    server = init_server_state(shared, server_tx, jax.random.key(seed + 1))
    return server, jax.device_get(algorithm.init_private(shared, private))


def replica_parts(
    config: ml_collections.ConfigDict, method: methods.Method, forward, num_clients: int, sweep
) -> tuple[LocalAlgorithm, Any, Aggregator, PrivacyAccountant | None]:
    """One replica's (algorithm, server optimizer, aggregator, accountant), built from its own
    config, so its values meet every check a plain run's do. A swept server learning rate is
    applied in the round (``fl.hparams.scale_server_updates``): the optimizer gets 1."""
    try:
        algorithm = methods.build_algorithm(
            method,
            forward,
            local_optim.LocalOptimConfig(**config.optim),
            **algorithm_options(config, method),
        )
        hyper = dict(config.server.hyper)
        if hparams_lib.SERVER_LEARNING_RATE in sweep.fields:
            hyper["learning_rate"] = 1.0
        server_tx = make_server_optimizer(
            config.server.optimizer or method.server_optimizer, **hyper
        )
        aggregator, accountant = build_aggregation(config, num_clients)
    except ValueError as err:
        if not sweep.swept:
            raise
        values = {f: _get(config, f) for f in sweep.fields}
        raise SweepConfigError(f"config.sweep: the replica with {values}: {err}") from err
    return algorithm, server_tx, aggregator, accountant


def _get(config: ml_collections.ConfigDict, path: str):
    for key in path.split("."):
        config = config[key]
    return config


def build_aggregation(
    config: ml_collections.ConfigDict, num_clients: int
) -> tuple[Aggregator, PrivacyAccountant | None]:
    """The plain mean, or (``dp.enabled``) the DP-FedAvg aggregator and its privacy accountant."""
    sampling = backbones.choice(config.dp.get("sampling", "fixed"), DP_SAMPLINGS, "dp.sampling")
    if not config.dp.enabled:
        return MeanAggregator(config.aggregation), None
    dp = config.dp
    if sampling == "poisson":
        if jax.process_count() > 1:
            raise ConfigError(
                f"config.dp.sampling='poisson' supports one process only; this run has "
                f"{jax.process_count()} processes (use dp.sampling='fixed')"
            )
        q = poisson_sample_rate(config, num_clients)
        aggregator = make_dp_aggregator(
            dp.clip_norm,
            dp.noise_multiplier,
            aggregation=config.aggregation,
            sampling="poisson",
            num_clients=num_clients,
            sample_rate=q,
        )
        accountant = PrivacyAccountant(
            dp.noise_multiplier, "poisson", q, dp.delta, dp.accountant, num_clients
        )
        return aggregator, accountant
    aggregator = make_dp_aggregator(
        dp.clip_norm, dp.noise_multiplier, aggregation=config.aggregation
    )
    accountant = PrivacyAccountant.for_cohort(
        dp.noise_multiplier, num_clients, config.clients_per_round, dp.delta, dp.accountant
    )
    return aggregator, accountant


def poisson_sampling(config: ml_collections.ConfigDict) -> bool:
    """Whether the loop draws Poisson cohorts (``dp.enabled`` and ``dp.sampling="poisson"``)."""
    return bool(config.dp.enabled) and config.dp.get("sampling", "fixed") == "poisson"


def poisson_sample_rate(config: ml_collections.ConfigDict, num_clients: int) -> float:
    """q of Poisson sampling: ``clients_per_round`` as a fraction (an int count is count / N;
    so is a whole float > 1, which is what ConfigDict makes of a count set on the float field)."""
    cpr = config.clients_per_round
    if isinstance(cpr, float) and cpr > 1.0 and cpr.is_integer():
        cpr = int(cpr)
    if isinstance(cpr, (int, np.integer)) and not isinstance(cpr, bool):
        return sampling_lib.cohort_size(num_clients, int(cpr)) / num_clients
    sampling_lib.cohort_size(num_clients, cpr)  # the same checks as fixed-size cohorts
    return float(cpr)


def algorithm_options(config: ml_collections.ConfigDict, method: methods.Method) -> dict:
    """The config's algorithm options that apply to this method's algorithm."""
    if method.algorithm == "feddat":
        opts = dict(config.feddat)
        opts["freeze_client_adapter_after_round0"] = (
            config.faithful.freeze_client_adapter_after_round0
        )
    else:
        opts = {"prox_mu": config.fedprox_mu} if "prox_mu" in method.options else {}
    opts["reset_optimizer_each_round"] = config.reset_optimizer_each_round
    return opts

