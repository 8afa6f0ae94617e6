"""The command line: one line per bad input (exit 2), --help, --debug, and config validation.

The subprocess cases stop before any training (validation needs no device), so each costs only
the interpreter's start."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from test_launch import ROOT, smoke_config

from feddat_jax.cli import main as cli
from feddat_jax.cli.validate import validate_config
from feddat_jax.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DistributedError,
    FeddatError,
    NonFiniteLossError,
    WorkdirError,
)
from feddat_jax.methods import METHODS

SMOKE = ["--config", "configs/demo.py:smoke"]


def launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "launch.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_error_line(out: subprocess.CompletedProcess) -> str:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    return lines[0]


@pytest.mark.parametrize(
    "args,expected",
    [
        # a bad config (item 2): a misspelt SECOND method fails before the first one trains
        (
            [*SMOKE, '--config.compare_methods=("feddat","fedavgg")'],
            "error: unknown method 'fedavgg' (config.compare_methods='fedavgg'); choose from:",
        ),
        ([*SMOKE, "--config.rounds=-1"], "error: rounds must be >= 1, got -1 (config.rounds);"),
        (
            [*SMOKE, "--config.round=3"],
            "error: unknown config key 'round' (--config.round=3); did you mean \"rounds\"?",
        ),
        (
            [*SMOKE, "--config.rounds=abc"],
            "error: invalid value: invalid literal for int() with base 10: 'abc' "
            "(--config.rounds=abc)",
        ),
        # missing data (item 2): the message names the config key to set
        (
            ["--config", "configs/vilt.py:scene"],
            "error: this config reads a built benchmark but no folder is set "
            "(config.data.tfds_dir='');",
        ),
        (
            ["--config", "configs/nope.py"],
            "error: config file configs/nope.py cannot be loaded (No such file or directory)",
        ),
        (["--config", "configs/demo.py:bogus"], "error: unknown config argument 'bogus'"),
        # a sweep may vary scalars only; a key it does not mirror is unknown
        (
            [*SMOKE, "--config.sweep.batch_size=(2,4)"],
            "error: config.sweep.batch_size: batch_size cannot be swept",
        ),
        (
            [*SMOKE, "--config.sweep.seedz=(0,1)"],
            "error: unknown config key 'seedz' (--config.sweep.seedz=(0,1)); did you mean \"seed\"?",
        ),
    ],
)
def test_bad_inputs_print_one_line_and_exit_2(args, expected, tmp_path):
    line = one_error_line(launch(*args, "--workdir", str(tmp_path / "run")))
    assert line.startswith(expected)
    assert not (tmp_path / "run" / "config.json").exists()


def test_debug_shows_the_traceback(tmp_path):
    out = launch(*SMOKE, "--workdir", str(tmp_path), "--config.rounds=0", "--debug")
    assert out.returncode != 0 and "Traceback" in out.stderr and "ConfigError" in out.stderr


def test_help_exits_0_with_the_syntax_methods_configs_and_docs():
    start = time.perf_counter()
    out = launch("--help")
    assert out.returncode == 0, out.stderr
    assert "--config.KEY=VALUE" in out.stdout and "--workdir DIR" in out.stdout
    assert all(name in out.stdout for name in METHODS)
    assert all(f"configs/{p.name}" in out.stdout for p in (ROOT / "configs").glob("*.py"))
    assert "docs/METHOD.md" in out.stdout and "README.md" in out.stdout
    assert all((ROOT / name).is_file() for name, _ in cli.DOCS)
    assert time.perf_counter() - start < 60  # no device, no data: seconds even on a busy CPU


def test_a_join_timeout_names_the_address_and_the_process(tmp_path):
    """Item 5: JAX itself would abort with a C++ stack trace after its own deadline."""
    out = launch(
        *SMOKE,
        "--workdir",
        str(tmp_path),
        "--config.distributed.coordinator_address=127.0.0.1:9",
        "--config.distributed.num_processes=2",
        "--config.distributed.process_id=1",
        "--config.distributed.initialization_timeout=2",
        timeout=60,
    )
    assert one_error_line(out) == (
        "error: this process did not join the multi-process run within 2 s (process 1 of 2, "
        "coordinator 127.0.0.1:9); check that process 0 runs and that its address is reachable "
        "from this host, or raise config.distributed.initialization_timeout"
    )
    assert not (tmp_path / "config.json").exists()


# ------------------------------------------------------------------------------ the boundary
def test_the_boundary_prints_project_errors_in_one_line_and_keeps_bugs(capsys):
    for error in (
        ConfigError("rounds must be >= 1, got 0", "config.rounds", "e.g. --config.rounds=30"),
        DataError("x"),
        CheckpointError("x"),
        WorkdirError("x"),
        DistributedError("x"),
        NonFiniteLossError("x"),
    ):
        with pytest.raises(SystemExit) as stop, cli.error_boundary():
            raise error
        assert stop.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "error: rounds must be >= 1, got 0 (config.rounds); e.g. --config.rounds=30"
    with pytest.raises(ZeroDivisionError), cli.error_boundary():  # a bug keeps its traceback
        raise ZeroDivisionError
    with pytest.raises(ConfigError), cli.error_boundary(debug=True):
        raise ConfigError("x")


def test_library_errors_for_user_input_are_project_errors():
    from feddat_jax import methods
    from feddat_jax.data import embedded
    from feddat_jax.data.tfds_store import StoreError
    from feddat_jax.fl import sampling
    from feddat_jax.fl.server_optimizers import make_server_optimizer
    from feddat_jax.models import backbones

    for call in (
        lambda: methods.get_method("fedsgd"),
        lambda: backbones.choice("x", ("a",), "model.name"),
        lambda: embedded.family_clients("medical"),
        lambda: sampling.cohort_size(5, 7),
        lambda: make_server_optimizer("sgd"),
    ):
        with pytest.raises(ConfigError):
            call()
    assert issubclass(StoreError, DataError) and issubclass(ConfigError, ValueError)
    assert issubclass(CheckpointError, FeddatError)


# ------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "key,value,match",
    [
        ("eval_every", 0, r"eval_every must be >= 1, got 0 \(config\.eval_every\)"),
        ("checkpoint_every", 0, r"checkpoint_every must be >= 1"),
        ("clients_per_round", 7.0, r"only 4 clients .*\(config\.clients_per_round=7\.0\)"),
        ("optim.learning_rate", -1.0, r"\(config\.optim\.learning_rate=-1\.0\)"),
        ("optim.b2", 1.5, r"optim\.b2 must be in \[0, 1\)"),
        ("server.optimizer", "sgd", r"'sgd' is not a valid server\.optimizer"),
        ("feddat.temperature", 0.0, r"\(config\.feddat\.temperature=0\.0\)"),
        ("peft.adapter_reduction", 0, r"\(config\.peft\.adapter_reduction=0\)"),
        ("dp.enabled", True, r"DP needs every client to weigh the same"),
        ("model.checkpoint", "/nonexistent", r"\(config\.model\.checkpoint='/nonexistent'\)"),
        ("data.family", "medical", r"unknown benchmark family 'medical'"),
        ("data.num_clients", 100_001, r"data\.num_clients must be in 0\.\.100000"),
        ("data.partition", "zipf", r"'zipf' is not a valid data\.partition"),
        ("data.dirichlet_alpha", 0.0, r"data\.dirichlet_alpha must be > 0"),
        ("data.conventions", "hue", r"'hue' is not a valid data\.conventions"),
        ("data.read_threads", 0, r"data\.read_threads must be >= 1"),
        ("data.decoded_cache_mb", -1, r"data\.decoded_cache_mb must be >= 0"),
        ("references", ("blind", "oracle"), r"unknown reference\(s\) \['oracle'\]"),
        ("references", ("blind", "blind"), r"a reference is listed twice"),
        ("optim.schedule", "cosine", r"'cosine' is not a valid optim\.schedule"),
        ("segment_steps", -1, r"segment_steps must be >= 0"),
        ("optim.max_local_steps", -1, r"optim\.max_local_steps must be >= 0"),
        ("eval_clients_per_call", -1, r"eval_clients_per_call must be >= 0"),
        ("strategy", "pmap", r"'pmap' is not a valid strategy"),
        ("distributed.coordinator_address", "nohost", r"'nohost' is not host:port"),
        ("sweep.rounds", (1, 2), r"config\.sweep\.rounds: rounds cannot be swept"),
        ("sweep.mode", "cross", r"config\.sweep\.mode='cross' is not one of"),
        # every replica's values are checked like a run's, naming the replica
        (
            "sweep.optim.learning_rate",
            (1e-3, -1.0),
            (
                r"\(config\.optim\.learning_rate=-1\.0, replica 1 of config\.sweep: "
                r"optim\.learning_rate=-1\)"
            ),
        ),
        ("sweep.seed", (0, -1), r"seed must be >= 0.*replica 1 of config\.sweep: seed=-1"),
    ],
)
def test_validation_names_the_key(key, value, match, tmp_path):
    config = smoke_config(tmp_path)
    validate_config(config)  # the smoke config itself is fine
    *parents, leaf = key.split(".")
    node = config
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(FeddatError, match=match):
        validate_config(config)


def test_validation_of_the_pretraining_config():
    sys.path.insert(0, str(ROOT / "configs"))
    import pretrain_tiny_vilt  # configs/ is not a package

    config = pretrain_tiny_vilt.get_config("smoke")
    validate_config(config)
    config.num_heads = 3  # hidden_size 32
    with pytest.raises(ConfigError, match=r"hidden_size must be a multiple of num_heads=3"):
        validate_config(config)
    config.num_heads, config.held_out_scenes = 4, 0
    with pytest.raises(ConfigError, match=r"held_out_scenes must be >= 1"):
        validate_config(config)
    config.held_out_scenes, config.caption_share, config.qa_share = 20, 0.5, 0.6
    with pytest.raises(ConfigError, match=r"qa_share plus caption_share=0\.5 must be at most 1"):
        validate_config(config)
    config.qa_share, config.init_from = 0.3, "/nonexistent/stage1"
    with pytest.raises(
        CheckpointError, match=r"no provenance\.json.*pretrain_tiny_vilt\.py:stage1"
    ):
        validate_config(config)


def test_validation_checks_every_compared_method_and_albef_combinations(tmp_path):
    config = smoke_config(tmp_path)
    config.compare_methods = ("feddat", "fedavg_lora")
    validate_config(config)
    config.model.name = "albef"
    config.model.image_hw = (32, 32)
    with pytest.raises(ConfigError, match="'fedavg_lora' needs LoRA or prompts"):
        validate_config(config)


def test_validation_refuses_a_sweep_key_the_config_does_not_have(tmp_path):
    """A config FILE may add keys to ``sweep`` (the command line cannot): each is refused."""
    config = smoke_config(tmp_path)
    with config.sweep.unlocked():
        config.sweep.learning_rate = (1e-3, 1e-4)  # optim.learning_rate is meant
    with pytest.raises(ConfigError, match=r"config\.sweep\.learning_rate: learning_rate cannot"):
        validate_config(config)
