"""Check a whole config before any training, so a bad value costs seconds, not a round.

:func:`validate_config` reads every field a run uses, and the data folder's manifest, but touches
no JAX device (it runs before a multi-process run joins its peers). Each problem raises
:class:`~feddat_jax.errors.ConfigError` (or ``DataError`` / ``CheckpointError`` for missing
folders) whose message names the config key to set. Where the library already checks a value
(optimizers, PEFT, DP, client sampling) its own check is called, so the rules live in one place.
The mesh is checked when it is built (it needs the devices).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
from pathlib import Path

import ml_collections

from feddat_jax import methods as methods_lib
from feddat_jax.data import tfds_store
from feddat_jax.data.embedded_families import (
    CONVENTION_MODES,
    DEFAULT_CLIENTS,
    MAX_CLIENTS,
    family_clients,
)
from feddat_jax.data.loading import HEADS
from feddat_jax.data.partition import PARTITIONS
from feddat_jax.errors import CheckpointError, ConfigError, DataError, FeddatError
from feddat_jax.fl import privacy, sampling
from feddat_jax.fl.aggregation import AGGREGATION_WEIGHTS
from feddat_jax.fl.algorithms.feddat import FedDATConfig
from feddat_jax.fl.local_optim import SCHEDULES, LocalOptimConfig
from feddat_jax.fl.server_optimizers import SERVER_OPTIMIZERS
from feddat_jax.models import backbones
from feddat_jax.peft.config import PeftConfig
from feddat_jax.train.config_base import CLIENT_STORAGES, ENGINES, STRATEGIES
from feddat_jax.train.experiment import DATA_SOURCES
from feddat_jax.train.references import check_references
from feddat_jax.train.sweep import sweep_from_config

BUILD_HINT = "python -m feddat_jax.data.build --benchmark NAME --raw_dir RAW --out DIR"


def _at(key: str, value) -> str:
    return f"config.{key}={value!r}"


def _need(ok: bool, key: str, value, rule: str, fix: str) -> None:
    """Raise unless ``ok``: ``<key> <rule>, got <value> (config.<key>); <fix>``."""
    if not ok:
        raise ConfigError(f"{key} {rule}, got {value!r}", f"config.{key}", fix)


def _value(c: ml_collections.ConfigDict, key: str):
    for part in key.split("."):
        c = c[part]
    return c


def _at_least(c: ml_collections.ConfigDict, key: str, low: int, example) -> None:
    value = _value(c, key)
    _need(value >= low, key, value, f"must be >= {low}", f"e.g. --config.{key}={example}")


def _above(c: ml_collections.ConfigDict, key: str, low: float, example) -> None:
    value = _value(c, key)
    _need(value > low, key, value, f"must be > {low}", f"e.g. --config.{key}={example}")


@contextlib.contextmanager
def _guard(key: str, value, fix: str = ""):
    """Turn a library check's ValueError / TypeError into a ConfigError naming ``key`` (for a
    block such as ``optim``, the field the message names)."""
    try:
        yield
    except (ValueError, TypeError) as err:
        what = err.what if isinstance(err, FeddatError) else str(err)
        fix = fix or (err.fix if isinstance(err, FeddatError) else "")
        where = _at(key, value)
        if isinstance(value, dict):
            field = next((k for k in sorted(value, key=len, reverse=True) if k in what), None)
            where = _at(f"{key}.{field}", value[field]) if field else f"config.{key}"
        error = type(err) if isinstance(err, FeddatError) else ConfigError
        raise error(what, where, fix or "see the config file's comments") from err


def _choice(config: ml_collections.ConfigDict, key: str, allowed) -> str:
    value = _value(config, key)
    if value not in allowed:
        raise ConfigError(
            f"{value!r} is not a valid {key}", f"config.{key}", f"choose one of {tuple(allowed)}"
        )
    return value


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raise a one-line error for the first field that would make the run fail or mislead."""
    if config.get("kind") == "pretrain":
        return _pretrain(config)
    _schedule(config)
    names = run_methods(config)
    run_references(config)
    _optimizers(config)
    _peft_and_model(config, names)
    _privacy(config)
    _execution(config)
    num_clients = _data(config)
    fix = f"use a fraction in (0, 1] or a count of at most {num_clients} clients"
    with _guard("clients_per_round", config.clients_per_round, fix):
        sampling.cohort_size(num_clients, config.clients_per_round)
    _sweep(config, names)


def run_methods(config: ml_collections.ConfigDict) -> list[str]:
    """The methods a run trains (``compare_methods``, else ``method``), each checked."""
    key = "compare_methods" if config.compare_methods else "method"
    names = list(config.compare_methods) or [config.method]
    for name in names:
        fix = f"choose from: {', '.join(methods_lib.METHODS)}"
        if isinstance(name, str) and "," in name:
            fix = 'write a tuple: --config.compare_methods=\'("feddat","fedavg_adapter")\''
        with _guard(key, name, fix):
            methods_lib.get_method(name)
    if len(set(names)) != len(names):
        raise ConfigError(
            "a method is listed twice", _at(key, tuple(names)), "list each method once"
        )
    return names


def with_method(config: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
    """A copy of ``config`` that trains ``method`` (one method of ``compare_methods``)."""
    method_config = config.copy_and_resolve_references()
    method_config.method = method
    return method_config


def _sweep(config: ml_collections.ConfigDict, names: list[str]) -> None:
    """``config.sweep`` for every method (``train.sweep``), then each replica's values checked
    like a run's own (a bad value names its replica)."""
    for method in names:
        method_config = with_method(config, method)
        sweep = sweep_from_config(method_config, methods_lib.get_method(method))
        if not sweep.swept:
            continue
        for r in range(sweep.size):
            try:
                validate_config(sweep.replica_config(method_config, r))
            except FeddatError as err:
                where = f"{err.where}, replica {r} of config.sweep: {sweep.label(r)}"
                raise type(err)(err.what, where.lstrip(", "), err.fix) from err


def run_references(config: ml_collections.ConfigDict) -> list[str]:
    """The reference rows a run computes after its methods (``references``), each checked."""
    names = tuple(config.get("references", ()))
    with _guard("references", names):
        check_references(names)
    if len(set(names)) != len(names):
        raise ConfigError(
            "a reference is listed twice", _at("references", names), "list each one once"
        )
    return list(names)


def _schedule(c: ml_collections.ConfigDict) -> None:
    for key, example in (
        ("rounds", 30),
        ("eval_every", 5),
        ("checkpoint_every", 1),
        ("batch_size", 2),
        ("eval_batch_size", 32),
    ):
        _at_least(c, key, 1, example)
    _at_least(c, "seed", 0, 0)
    _at_least(c, "comm_max_bytes", 0, 0)
    _at_least(c, "segment_steps", 0, 100)  # 0: the whole epoch in one call
    _at_least(c, "eval_clients_per_call", 0, 0)  # 0: a training cohort's size
    _at_least(c, "eval_clients", 0, 0)  # 0: every client
    _at_least(c, "finetune_steps", 0, 5)  # 0: a training round's steps
    _at_least(c, "fedprox_mu", 0, 0.01)
    _choice(c, "aggregation", AGGREGATION_WEIGHTS)


def _unit(c: ml_collections.ConfigDict, key: str, example: float) -> None:
    value = _value(c, key)
    _need(0 <= value < 1, key, value, "must be in [0, 1)", f"e.g. --config.{key}={example}")


def _optimizers(c: ml_collections.ConfigDict) -> None:
    _choice(c, "optim.schedule", SCHEDULES)
    _at_least(c, "optim.max_local_steps", 0, 10)
    optim = dict(c.optim)
    with _guard("optim", optim):
        LocalOptimConfig(**optim)
    _unit(c, "optim.b1", 0.9)
    _unit(c, "optim.b2", 0.98)
    _above(c, "optim.eps", 0, 1e-8)
    _at_least(c, "optim.weight_decay", 0, 0.01)
    _choice(c, "server.optimizer", ("", *SERVER_OPTIMIZERS))
    _above(c, "server.hyper.learning_rate", 0, 1.0)
    for key, example in (("momentum", 0.9), ("b1", 0.9), ("b2", 0.99)):
        _unit(c, f"server.hyper.{key}", example)
    _above(c, "server.hyper.tau", 0, 1e-3)
    with _guard("feddat", dict(c.feddat)):
        FedDATConfig(**c.feddat)


def _peft_and_model(c: ml_collections.ConfigDict, names: list[str]) -> None:
    name = _choice(c, "model.name", backbones.MODEL_NAMES)
    _choice(c, "model.size", backbones.MODEL_SIZES)
    _choice(c, "model.dtype", tuple(backbones.DTYPES))
    hw = tuple(c.model.image_hw)
    ok_hw = len(hw) == 2 and all(isinstance(v, int) and v >= 8 for v in hw)
    _need(
        ok_hw,
        "model.image_hw",
        hw,
        "must be two sizes >= 8",
        "e.g. --config.model.image_hw='(384,640)'",
    )
    _need(
        c.model.max_text_len >= 2,
        "model.max_text_len",
        c.model.max_text_len,
        "must be >= 2",
        "e.g. --config.model.max_text_len=40",
    )
    if _choice(c, "peft.head", HEADS) == "shared":
        for method in names:
            recipe = methods_lib.get_method(method)
            if recipe.algorithm == "feddat" or recipe.partition == "local_adapter":
                raise ConfigError(
                    f"method {method!r} keeps its answer head with the client",
                    _at("peft.head", "shared"),
                    "use a FedAvg-family method (e.g. fedavg_adapter) or peft.head='private'",
                )
    for method in names:
        peft = methods_lib.get_method(method).peft
        modules = {k: v for k, v in dict(c.peft).items() if k != "head"}  # head: a role, below
        with _guard("peft", modules):
            PeftConfig(**{**modules, **peft})
        if name == "albef" and (peft.get("lora_rank") or peft.get("num_text_prompts")):
            raise ConfigError(
                f"method {method!r} needs LoRA or prompts, which ALBEF does not implement",
                _at("model.name", name),
                "use the ViLT backbone or an adapter method",
            )
    checkpoint = c.model.checkpoint
    if name == "vilt":
        if checkpoint:
            with _guard("model.checkpoint", checkpoint, "give a local Hugging Face ViLT folder"):
                backbones.vilt_config(c, vocab_size=1)
        return
    with _guard("model.image_hw", hw):
        backbones.albef_config(c, vocab_size=1)
    if checkpoint and not Path(checkpoint).exists():
        raise CheckpointError(
            "the ALBEF checkpoint does not exist",
            _at("model.checkpoint", checkpoint),
            "give ALBEF.pth, a converted .safetensors file, or a folder holding one",
        )
    tokenizer = c.model.get("tokenizer", "")
    if checkpoint and not tokenizer and not Path(checkpoint).is_dir():
        raise ConfigError(
            "an ALBEF checkpoint file carries no tokenizer",
            _at("model.tokenizer", tokenizer),
            "set --config.model.tokenizer=PATH/bert-base-uncased (a folder with vocab.txt)",
        )
    if tokenizer and not Path(tokenizer).is_dir():
        raise CheckpointError(
            "the tokenizer folder does not exist",
            _at("model.tokenizer", tokenizer),
            "give a BERT tokenizer folder (with vocab.txt)",
        )


def _privacy(c: ml_collections.ConfigDict) -> None:
    dp = c.dp
    _choice(c, "dp.sampling", privacy.SAMPLING_MODES)
    if not dp.enabled:
        return
    if c.aggregation != "uniform":
        raise ConfigError(
            "DP needs every client to weigh the same",
            _at("aggregation", c.aggregation),
            "add --config.aggregation=uniform",
        )
    for key, check in (
        ("clip_norm", privacy.check_clip_norm),
        ("noise_multiplier", privacy.check_noise_multiplier),
        ("delta", privacy.check_delta),
        ("accountant", privacy.check_accountant),
    ):
        with _guard(f"dp.{key}", dp[key], "see docs/PRIVACY.md"):
            check(dp[key])


def _execution(c: ml_collections.ConfigDict) -> None:
    _choice(c, "strategy", STRATEGIES)
    if _choice(c, "engine", ENGINES) == "flower" and importlib.util.find_spec("flwr") is None:
        raise ConfigError(
            "engine 'flower' needs the flwr package", "config.engine", "pip install -e '.[flower]'"
        )
    _choice(c, "client_storage", CLIENT_STORAGES)
    _at_least(c, "chunk_size", 0, 0)
    clients = c.mesh.clients
    _need(
        clients == -1 or clients >= 1,
        "mesh.clients",
        clients,
        "must be -1 (every device) or >= 1",
        "e.g. --config.mesh.clients=-1",
    )
    _at_least(c, "mesh.model", 1, 1)
    timeout = c.distributed.get("initialization_timeout", 300)
    _need(
        timeout > 0,
        "distributed.initialization_timeout",
        timeout,
        "must be > 0 seconds",
        "e.g. --config.distributed.initialization_timeout=300",
    )
    address = c.distributed.coordinator_address
    host, _, port = address.rpartition(":")
    if address and not (host and port.isdigit()):
        raise ConfigError(
            f"coordinator address {address!r} is not host:port",
            "config.distributed.coordinator_address",
            "give process 0's host and a free port, e.g. 10.0.0.1:1234",
        )


def _data(c: ml_collections.ConfigDict) -> int:
    """Check the data fields and folder; returns the number of clients the run registers."""
    data = c.data
    source = _choice(c, "data.source", DATA_SOURCES)
    _at_least(c, "data.read_threads", 1, 8)
    _at_least(c, "data.decoded_cache_mb", 0, 0)
    _at_least(c, "data.example_cache_mb", 0, 256)
    _choice(c, "data.partition", PARTITIONS)
    _above(c, "data.dirichlet_alpha", 0.0, 0.5)
    _need(
        data.num_clients >= 0,
        "data.num_clients",
        data.num_clients,
        "must be >= 0 (0: the benchmark's own clients)",
        "e.g. --config.data.num_clients=100",
    )
    if source == "tfds":
        natural = _tfds_clients(data.tfds_dir)
        return data.num_clients if data.partition != "natural" and data.num_clients else natural
    with _guard("data.family", data.family):
        family_clients(data.family)
    _choice(c, "data.conventions", CONVENTION_MODES)
    _need(
        0 <= data.num_clients <= MAX_CLIENTS,
        "data.num_clients",
        data.num_clients,
        f"must be in 0..{MAX_CLIENTS} (the embedded families define up to {MAX_CLIENTS} "
        f"clients; 0: {DEFAULT_CLIENTS})",
        f"e.g. --config.data.num_clients={DEFAULT_CLIENTS}",
    )
    _at_least(c, "data.train_per_client", 1, 300)
    _at_least(c, "data.test_per_client", 1, 100)
    _need(
        data.image_size >= 16,
        "data.image_size",
        data.image_size,
        "must be >= 16",
        "e.g. --config.data.image_size=64",
    )
    _at_least(c, "data.seed", 0, 0)
    return data.num_clients or DEFAULT_CLIENTS


def _tfds_clients(folder: str) -> int:
    where = _at("data.tfds_dir", folder)
    fix = f"build the benchmark with `{BUILD_HINT}` and pass --config.data.tfds_dir=DIR"
    if not folder:
        raise ConfigError(
            "this config reads a built benchmark but no folder is set",
            where,
            fix + ", or run the config's FAMILY,smoke variant on the embedded data",
        )
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DataError("the benchmark folder does not exist", where, fix)
    manifest = path / tfds_store.MANIFEST
    if not manifest.is_file():
        raise DataError(f"{path} holds no built benchmark (no {tfds_store.MANIFEST})", where, fix)
    try:
        clients = json.loads(manifest.read_text())["clients"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(
            f"{manifest} is unreadable ({type(err).__name__})", where, "rebuild the benchmark"
        ) from err
    if not clients:
        raise DataError(f"{manifest} lists no clients", where, "rebuild the benchmark")
    return len(clients)


def _pretrain(c: ml_collections.ConfigDict) -> None:
    for key in (
        "num_scenes",
        "held_out_scenes",
        "image_size",
        "patch_size",
        "max_text_len",
        "hidden_size",
        "num_layers",
        "num_heads",
        "batch_size",
        "steps",
        "log_every",
    ):
        _at_least(c, key, 1, 1)
    _at_least(c, "corpus_seed", 0, 1234)
    _above(c, "learning_rate", 0, 1e-3)
    check_pretrain_stage(c)
    _need(
        c.hidden_size % c.num_heads == 0,
        "hidden_size",
        c.hidden_size,
        f"must be a multiple of num_heads={c.num_heads}",
        f"e.g. --config.hidden_size={32 * c.num_heads}",
    )
    _need(
        c.image_size % c.patch_size == 0,
        "image_size",
        c.image_size,
        f"must be a multiple of patch_size={c.patch_size}",
        f"e.g. --config.image_size={4 * c.patch_size}",
    )


def check_pretrain_stage(c: ml_collections.ConfigDict) -> None:
    """The batch shares of the objectives, and the earlier stage a second stage continues (also
    called by ``pretrain`` itself, for callers that skip the launch's validation)."""
    shares = [k for k in ("caption_share", "qa_share") if k in c]
    for key in shares:
        _need(0 <= c[key] <= 1, key, c[key], "must be in [0, 1]", f"e.g. --config.{key}=0.5")
    if len(shares) == 2:
        total = c.caption_share + c.qa_share
        _need(
            total <= 1,
            "qa_share",
            c.qa_share,
            f"plus caption_share={c.caption_share} must be at most 1 (the rest of the batch is "
            "question-answer text)",
            f"e.g. --config.qa_share={max(0.0, 1 - c.caption_share):g}",
        )
    init_from = c.get("init_from", "")
    if init_from and not (Path(init_from).expanduser() / "provenance.json").is_file():
        raise CheckpointError(
            "init_from holds no earlier pretraining stage (no provenance.json)",
            _at("init_from", init_from),
            "run stage 1 into it first: python launch.py --config "
            f"configs/pretrain_tiny_vilt.py:stage1 --workdir {init_from}",
        )
