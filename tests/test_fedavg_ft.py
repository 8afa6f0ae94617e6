"""fedavg_ft: FedAvg + adapter trained exactly as fedavg_adapter, each evaluated client scored
after a short finetune on its own train data (fl.evaluation.finetune_client, train.finetune).

Two runs of the demo's smoke config are shared by the tests, fedavg_ft and fedavg_adapter: 4
clients of about 16 training questions and 100 test questions each, 2 rounds, and the pretrained
tiny ViLT, so that a few local steps change answers."""

from __future__ import annotations

import dataclasses
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from smoke_launch import ROOT, smoke_command
from test_launch import final_state, numbers

from feddat_jax.cli.validate import validate_config
from feddat_jax.data.pipeline import cohort_batches
from feddat_jax.errors import ConfigError
from feddat_jax.fl.evaluation import make_eval_fn
from feddat_jax.fl.round import client_context
from feddat_jax.train import finetune, loop
from feddat_jax.train.cohorts import EVAL_SAMPLE_DRAW
from feddat_jax.train.config_base import TINY_VILT, config_from_file
from feddat_jax.train.experiment import build_experiment
from feddat_jax.train.report import format_table, headline_variant

ROUNDS = 2
SCORES = ("score/", "score_", "group/", "qtype/", "eval/")  # the keys an evaluation writes


def config(method: str = "fedavg_ft", rounds: int = ROUNDS):
    c = config_from_file("configs/demo.py:smoke")
    c.method, c.compare_methods, c.model.checkpoint = method, (), TINY_VILT
    c.rounds, c.eval_every, c.tensorboard = rounds, 1, False
    c.data.test_per_client = 100  # scores fine enough to tell two finetunes apart
    return c


def with_rounds(exp, rounds: int):
    cfg = exp.config.copy_and_resolve_references()
    cfg.rounds = rounds
    return dataclasses.replace(exp, config=cfg)


def host_leaves(tree) -> list[np.ndarray]:
    def leaf(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return np.asarray(x)

    return [leaf(x) for x in jax.tree.leaves(tree)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fedavg_ft")
    ft = build_experiment(config("fedavg_ft"))
    avg = build_experiment(config("fedavg_adapter"))
    tuned = loop.train(ft, root / "ft", show_progress=False)
    plain = loop.train(avg, root / "avg", show_progress=False)
    return root, ft, avg, tuned, plain


def test_training_is_fedavg_adapters_bit_for_bit_and_the_finetune_is_stored_nowhere(runs):
    root, ft, avg, tuned, plain = runs
    assert len(tuned) == len(plain) == ROUNDS
    for a, b in zip(numbers(tuned), numbers(plain)):
        train_a = {k: v for k, v in a.items() if not k.startswith(SCORES)}
        train_b = {k: v for k, v in b.items() if not k.startswith(SCORES)}
        assert train_a == train_b  # the rounds: loss, lr, cohort, server, communication
        global_b = {k: v for k, v in b.items() if k.startswith(SCORES)}
        assert {k: a[k] for k in global_b} == global_b  # the untouched model scores the same
        assert "score/mean/finetuned" in a and "score/mean/finetuned" not in b
    assert headline_variant(tuned) == "finetuned" and headline_variant(plain) == "global"
    # the finetuned parameters reach neither the server nor any client's saved state
    (step_a, state_a, _), (step_b, state_b, _) = (
        final_state(ft, root / "ft"),
        final_state(avg, root / "avg"),
    )
    assert step_a == step_b == ROUNDS
    for x, y in zip(host_leaves(state_a), host_leaves(state_b), strict=True):
        np.testing.assert_array_equal(x, y)


def row(tree, *index):
    """One row of every leaf of a stacked tree (``tree[index]``, leaf by leaf)."""
    return jax.tree.map(lambda x: x[index], tree)


def by_hand(exp, state, k: int, local_step, plain) -> float:
    """Client k's finetuned score computed alone: its epoch in the order of (seed,
    EVAL_SAMPLE_DRAW + rounds done), one ``local_step`` per batch from the global shared params
    and its own private state, then the plain evaluation of the result (no finetune in it)."""
    algo = exp.algorithm
    shared = row(state["server"].shared, 0)
    slot = list(np.asarray(state["private"]["ids"][0])).index(k)
    private, tasks = row(state["private"]["state"], 0, slot), row(exp.tasks, k)
    epoch = cohort_batches(exp.train_store, [k], 8, seed=0, round_index=EVAL_SAMPLE_DRAW + ROUNDS)
    ctx = client_context(exp.frozen, shared, tasks, 8, jnp.int32(0))
    local = algo.begin_round(ctx, private)
    for s in range(epoch["example_mask"].shape[1]):
        local, _ = local_step(ctx, local, row(epoch, 0, s), None)
    new_shared, new_private = algo.end_round(ctx, local)
    scores = plain(
        exp.frozen,
        shared,
        new_shared,
        row(new_private, None),
        row(tasks, None),
        exp.eval_batches([k]),
    )
    return 100.0 * float(np.mean(loop.client_scores(exp, scores, [k])["global"][0]))


def test_finetuned_score_is_the_clients_own_local_update_then_the_plain_evaluation(runs):
    root, exp, _, tuned, _ = runs
    _, state, _ = final_state(exp, root / "ft")  # the state the last evaluation scored
    last, local_step, plain = (
        tuned[-1],
        jax.jit(exp.algorithm.local_step),
        jax.jit(make_eval_fn(exp.algorithm)),
    )
    for k, name in enumerate(exp.client_names):
        hand = by_hand(exp, state, k, local_step, plain)
        assert last[f"score/{name}/finetuned"] == pytest.approx(hand, abs=1e-9), name
    # the finetune moved some client's answers: the comparison means something
    assert any(
        last[f"score/{name}/finetuned"] != last[f"score/{name}/global"] for name in exp.client_names
    )


def test_finetune_steps_default_to_a_round_and_stop_at_the_epoch(runs):
    _, exp, _, _, _ = runs

    def steps(value: int) -> int:
        cfg = exp.config.copy_and_resolve_references()
        cfg.finetune_steps = value
        return finetune.finetune_steps(dataclasses.replace(exp, config=cfg))

    epoch = exp.train_store.max_steps(exp.config.batch_size)  # the largest client's batches
    assert epoch > 1 and exp.round_steps() == epoch  # the smoke config caps no round
    assert (steps(0), steps(1), steps(100)) == (epoch, 1, epoch)
    one = finetune.client_batches(exp, [0, 1], seed=0, rounds_done=3)
    assert one["example_mask"].shape[:2] == (2, epoch)
    again = finetune.client_batches(exp, [0, 1], seed=0, rounds_done=3)
    later = finetune.client_batches(exp, [0, 1], seed=0, rounds_done=4)
    np.testing.assert_array_equal(one["input_ids"], again["input_ids"])  # (seed, round) alone
    assert not np.array_equal(one["input_ids"], later["input_ids"])  # a new order each time


def test_a_negative_finetune_steps_is_one_line(tmp_path):
    c = config()
    c.finetune_steps = -1
    with pytest.raises(ConfigError, match=r"finetune_steps must be >= 0, got -1") as err:
        validate_config(c)
    assert "\n" not in str(err.value)
    out = subprocess.run(
        smoke_command(tmp_path, "--config.method=fedavg_ft", "--config.finetune_steps=-1"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("error: finetune_steps must be >= 0, got -1 (config.finetune_steps)")


def test_the_table_row_keeps_its_columns_under_the_longer_variant_name():
    row = {"clients": {}, "groups": {}, "comm_mb": 1.0}
    scores = {
        "fedavg_adapter": {**row, "variant": "global", "mean": 60.1},
        "fedavg_ft": {**row, "variant": "finetuned", "mean": 60.4},
    }
    head, _, plain, tuned = format_table(scores, []).splitlines()
    assert len(head) == len(plain) == len(tuned)
    assert tuned.index("60.4") == plain.index("60.1") == head.index("mean") + len("mean") - 4


def test_a_resumed_run_equals_the_uninterrupted_one(runs, tmp_path):
    root, exp, _, tuned, _ = runs
    loop.train(with_rounds(exp, ROUNDS - 1), tmp_path, show_progress=False)
    resumed = loop.train(exp, tmp_path, show_progress=False)
    assert numbers(resumed) == numbers(tuned)
    (_, a, _), (_, b, _) = final_state(exp, tmp_path), final_state(exp, root / "ft")
    for x, y in zip(host_leaves(a), host_leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)


def evaluation(row: dict) -> dict:
    return {k: v for k, v in row.items() if k.startswith(("score/", "group/", "qtype/"))}


@pytest.mark.slow
def test_a_swept_replica_finetunes_like_its_own_run(tmp_path):
    # replica 1 (seed 1, lr 3e-3) finetunes in its seed's order with its own learning rate
    swept = config(rounds=1)
    swept.sweep.seed, swept.sweep.optim.learning_rate, swept.sweep.mode = (
        (0, 1),
        (1e-3, 3e-3),
        "zip",
    )
    history = loop.train(build_experiment(swept), tmp_path / "sweep", show_progress=False)
    alone = config(rounds=1)
    alone.seed, alone.optim.learning_rate = 1, 3e-3
    own = loop.train(build_experiment(alone), tmp_path / "alone", show_progress=False)
    replica = next(r for r in history if r.get("replica") == 1)
    assert evaluation(replica) == evaluation(own[0])
    assert replica["score/mean/finetuned"] != replica["score/mean/global"]


@pytest.mark.slow
def test_the_flower_engine_finetunes_like_the_simulation(tmp_path):
    pytest.importorskip("flwr")
    from feddat_jax.flower import runconfig
    from feddat_jax.flower.simulation import simulate

    spec = "configs/demo.py:smoke"
    overrides = {
        "rounds": 1,
        "method": "fedavg_ft",
        "model.checkpoint": TINY_VILT,
        "data.test_per_client": 100,
    }
    simulated = loop.train(
        build_experiment(runconfig.load(spec, overrides)), tmp_path / "sim", show_progress=False
    )
    flower = simulate(spec, overrides, tmp_path / "flower", nodes=4)
    assert evaluation(flower[0]) == evaluation(simulated[0])
    assert "score/mean/finetuned" in flower[0]
