"""The reference rows (blind, centralized) and the per-example score breakdowns."""

import dataclasses
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from feddat_jax.data.pipeline import gather_rows
from feddat_jax.data.records import ClientSplit, Example
from feddat_jax.fl import local_optim, losses
from feddat_jax.peft.roles import merge
from feddat_jax.train import blind, centralized, scores
from feddat_jax.train.checkpoints import CheckpointMismatchError
from feddat_jax.train.experiment import build_experiment
from feddat_jax.train.metrics import read_jsonl

ROOT = Path(__file__).resolve().parent.parent


def ex(question, answers, qtype="", group=""):
    return Example(question, b"", answers, "id", question_type=qtype, group=group)


def test_blind_answers_the_best_training_answer_of_each_question_type():
    client = ClientSplit(
        "c",
        "vqa",
        ["yes", "no", "2", "red"],
        train=[
            ex("is there a cat?", {"yes": 1.0}, "exists"),
            ex("is there a dog?", {"no": 1.0, "yes": 0.3}, "exists"),
            ex("is it big?", {"no": 1.0}, "exists"),
            ex("how many cats?", {"2": 1.0}, "count"),
        ],
        test=[
            ex("is there a cow?", {"no": 1.0, "yes": 0.3}, "exists"),  # "no" 2.0 > "yes" 1.3
            ex("how many dogs?", {"2": 0.6}, "count"),
            ex("what colour?", {"red": 1.0}, "colour"),  # unseen type: the best answer overall
        ],
    )
    np.testing.assert_allclose(blind.blind_scores(client), [1.0, 0.6, 0.0])
    # without tags, the question's first three words are its type
    assert blind.question_key(ex("how many dogs are there?", {})) == "how many dogs"


def test_summarize_means_per_client_group_and_type():
    names = ["a", "b"]
    per_client = [np.array([1.0, 0.0, 1.0, 1.0]), np.array([0.5, 0.5])]
    tags = [
        {
            "group": np.array(["shared", "shifted", "shifted", "shared"], object),
            "question_type": np.array(["x", "y", "y", "x"], object),
        },
        {
            "group": np.array(["shared", "shared"], object),
            "question_type": np.array(["x", "x"], object),
        },
    ]
    r = scores.summarize("v", per_client, names, tags)
    assert r["score/a/v"] == 75.0 and r["score/b/v"] == 50.0 and r["score/mean/v"] == 62.5
    assert r["group/shared/v"] == 75.0  # mean of a's 100 and b's 50
    assert r["group/shifted/v"] == 50.0  # only a has shifted questions
    assert r["qtype/y/v"] == 50.0 and r["qtype/x/v"] == 75.0
    # a type in one group gets no halves; a mixed type ("m": shared at a, shifted at b) does
    assert not any("@" in k for k in r)
    tags[0]["question_type"][1] = tags[1]["question_type"][0] = "m"
    r = scores.summarize("v", per_client, names, tags)
    assert r["qtype/m@shifted/v"] == 0.0 and r["qtype/m@shared/v"] == 50.0
    assert r["qtype/m/v"] == 25.0 and "qtype/y@shifted/v" not in r


def test_per_client_undoes_the_evaluation_padding():
    rows = np.array([[[3, 4], [5, -1]], [[0, 1], [-1, -1]]])
    values = np.array([[[0.1, 0.2], [0.3, 9.0]], [[0.4, 0.5], [9.0, 9.0]]])
    out = scores.per_client(values, rows)
    np.testing.assert_allclose(out[0], [0.1, 0.2, 0.3])
    np.testing.assert_allclose(out[1], [0.4, 0.5])


def test_epoch_rows_cover_the_pooled_data_once_per_epoch():
    rows = centralized.epoch_rows(23, 4, seed=1, epoch=2)
    assert rows.shape == (6, 4) and sorted(rows[rows >= 0].tolist()) == list(range(23))
    assert not np.array_equal(rows, centralized.epoch_rows(23, 4, seed=1, epoch=3))


def test_pooled_epochs_match_the_examples_of_capped_rounds():
    sizes = np.array([40, 10, 30])  # batch 4: 10, 3 and 8 batches an epoch
    assert centralized.pooled_epochs(6, sizes, 4, cap=0) == 6
    assert centralized.pooled_epochs(6, sizes, 4, cap=20) == 6  # the cap never binds
    # cap 5 batches: 20 + 10 + 20 = 50 of 80 examples a round, 6 rounds = 3.75 epochs
    assert centralized.pooled_epochs(6, sizes, 4, cap=5) == 4
    assert centralized.pooled_epochs(1, sizes, 4, cap=1) == 1  # never fewer than one epoch


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "configs"))
    import demo  # noqa: E402  (configs/ is not a package)

    c = demo.get_config("smoke")
    c.model.checkpoint, c.model.size = "", "tiny"
    c.method = centralized.METHOD
    c.data.num_clients, c.data.train_per_client, c.data.test_per_client = 3, 8, 4
    c.data.cache_dir = str(tmp_path_factory.mktemp("data") / "cache")
    c.batch_size, c.optim.warmup_fraction, c.rounds, c.tensorboard = 4, 0.0, 2, False
    return build_experiment(c)


def test_a_centralized_step_is_adamw_on_the_pooled_loss_with_each_clients_head(experiment):
    """One step of the pooled trainer against a hand-written loop over the batch's examples."""
    exp = experiment
    store = exp.train_store
    rows = centralized.epoch_rows(int(store.offsets[-1]), 4, seed=0, epoch=0)[:1]
    batch = jax.tree.map(lambda x: x[0], gather_rows(store, rows[None]))
    clients = np.repeat(np.arange(store.num_clients), store.num_examples())[rows]
    epoch_fn, tx = centralized.make_epoch_fn(exp, total_steps=10)
    trainable = centralized.initial_trainable(exp)
    state = {"trainable": trainable, "opt": tx.init(trainable), "tick": jnp.zeros((), jnp.int32)}
    expected_opt = tx.init(trainable)
    new_state, _ = epoch_fn(state, batch, clients)

    def pooled_loss(trainable):
        shared, heads = trainable
        total = 0.0
        for b in range(4):
            c = int(clients[0, b])
            head = jax.tree.map(lambda h: h[c], heads)
            one = jax.tree.map(lambda x: x[0, b][None], batch)
            z = exp.algorithm.forward(merge(exp.frozen, shared, head), one, "shared")
            total += losses.task_loss(
                z,
                one["targets"],
                exp.tasks.answer_mask[c],
                exp.tasks.task_kind[c],
                one["example_mask"],
            )
        return total / 4

    grads = jax.grad(pooled_loss)(trainable)
    lr = exp.config.optim.learning_rate  # no warmup: step 0 runs at the peak
    expected, _ = local_optim.apply_adamw(tx, grads, expected_opt, trainable, lr)
    for got, want in zip(jax.tree.leaves(new_state["trainable"]), jax.tree.leaves(expected)):
        # Adam divides by sqrt(v): where a gradient entry is near zero, the rounding of the two
        # loss sums moves that entry's update by up to ~0.2% of lr (seen once, on version 6 data).
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=5e-6)


def test_centralized_reference_trains_resumes_and_reports_like_a_method(experiment, tmp_path):
    history = centralized.train_centralized(experiment, tmp_path / "c")
    assert [r["round"] for r in history] == [1, 2]
    last = history[-1]
    assert np.isfinite(last["score/mean/global"]) and "group/shared/global" in last
    again = centralized.train_centralized(experiment, tmp_path / "c")  # complete: resumes, no work
    assert again == history
    longer = dataclasses.replace(experiment, config=experiment.config.copy_and_resolve_references())
    longer.config.rounds = 3  # another schedule horizon: another run, refused in this workdir
    with pytest.raises(CheckpointMismatchError):
        centralized.train_centralized(longer, tmp_path / "c")


def test_centralized_runs_once_per_seed_of_a_sweep_and_blind_once(tmp_path):
    """A sweep's centralized reference trains each distinct seed as the unswept run of that seed
    would (its own folder), tags its rows like a sweep's, and reports mean ± std over them;
    swept hyperparameters are the methods' (the reference keeps the config's own)."""
    from feddat_jax.train import references, report

    sys.path.insert(0, str(ROOT / "configs"))
    import demo

    c = demo.get_config("smoke")
    c.model.checkpoint, c.model.size = "", "tiny"
    c.data.num_clients, c.data.train_per_client, c.data.test_per_client = 3, 8, 4
    c.data.cache_dir = str(tmp_path / "cache")
    c.batch_size, c.rounds, c.tensorboard = 4, 1, False
    c.sweep.seed, c.sweep.optim.learning_rate = (0, 1), (1e-3, 3e-3)  # grid: seeds 0, 1, 0, 1
    assert references.reference_seeds(c) == [0, 1]
    rows = references.run_reference("centralized", c, tmp_path / "centralized")
    assert [(r["replica"], r["seed"]) for r in rows] == [(0, 0), (1, 1)]
    alone = c.copy_and_resolve_references()
    alone.sweep.seed, alone.sweep.optim.learning_rate, alone.seed = (), (), 1
    want = references.run_reference("centralized", alone, tmp_path / "alone")
    assert "replica" not in want[0]
    got = {k: v for k, v in rows[1].items() if not k.startswith("time/")}
    assert got == {"replica": 1, "seed": 1, **{k: v for k, v in want[0].items() if k in got}}
    assert (tmp_path / "centralized" / "seed_1" / "metrics.jsonl").is_file()
    assert len(read_jsonl(tmp_path / "centralized" / "metrics.jsonl")) == 2
    blind = references.run_reference("blind", c, tmp_path / "blind")
    scores = report.final_scores({"centralized": rows, "blind": blind}, [])
    assert scores["centralized"]["n"] == 2 and scores["centralized"]["seeds"] == [0, 1]
    assert (scores["blind"]["n"], scores["blind"]["std"]) == (1, 0.0)
