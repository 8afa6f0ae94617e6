"""ALBEF as a backbone of the shared machinery: config -> build_experiment (per-client answer lists
in every batch) -> round / eval -> launch.py, with random weights or a loaded checkpoint."""

import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from feddat_jax import methods
from feddat_jax.data.tokenize import HFTokenizerEncoder, words
from feddat_jax.models import backbones
from feddat_jax.models.albef_checkpoint import save_albef_checkpoint
from feddat_jax.peft.roles import flatten
from feddat_jax.train import loop
from feddat_jax.train.config_base import config_from_file
from feddat_jax.train.experiment import build_experiment

ROOT = Path(__file__).resolve().parent.parent
FEDDAT_METHODS = sorted(m for m, r in methods.METHODS.items() if r.algorithm == "feddat")
# FedDAT on ALBEF: the method and its gate (a backbone-side module). The loss ablations
# (no_mkd, kd_to_*_only, no_global_teacher) change the local step only, the same code for every
# backbone: test_methods trains one step of each on ViLT.
ALBEF_FEDDAT = ("feddat", "feddat_gate")
ADAPTER_BASELINES = (
    "local_adapter",
    "fedavg_adapter",
    "fedprox_adapter",
    "fedavg_bitfit",
    "fedavg_layernorm",
    "fedavg_full",
)


def albef_smoke(cache_dir, family="domain", **overrides):
    c = config_from_file(f"configs/albef.py:{family},smoke")
    c.data.cache_dir = str(cache_dir)
    for key, value in overrides.items():
        target = c
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
    return c


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def experiment(cache):
    return build_experiment(albef_smoke(cache))


def test_paper_configs_follow_spec():
    for family in ("domain", "function", "scene", "task"):
        c = config_from_file(f"configs/albef.py:{family}")
        assert (c.model.name, c.model.size, tuple(c.model.image_hw)) == (
            "albef",
            "base",
            (384, 384),
        )
        assert (c.rounds, c.eval_every, c.batch_size, c.model.max_text_len) == (20, 5, 2, 40)
        assert (c.optim.learning_rate, c.optim.b2, c.optim.weight_decay) == (1e-4, 0.98, 0.01)
        assert c.data.source == "tfds" and c.data.family == family
        smoke = config_from_file(f"configs/albef.py:{family},smoke")
        assert (smoke.rounds, smoke.model.size, smoke.data.source) == (1, "tiny", "embedded")


def test_every_batch_carries_its_clients_answer_lists(experiment):
    exp = experiment
    answers = exp.answers_N
    n, a = len(exp.client_names), exp.tasks.answer_mask.shape[1]
    ids, mask = answers["answer_input_ids"], answers["answer_attention_mask"]
    assert ids.shape[:2] == (n, a) and ids.dtype == np.int32 and mask.shape == ids.shape
    # row j is the client's answer j ("[CLS] answer [SEP] [SEP]"); padding rows are all zero
    np.testing.assert_array_equal(mask[:, :, 1] > 0, np.asarray(exp.tasks.answer_mask) > 0)
    encoder = backbones.text_encoder(exp.config, exp.benchmark)
    client = exp.benchmark.clients[2]
    for j, answer in enumerate(client.answers):
        body = [encoder.index[w] for w in words(answer)]
        cls, sep = encoder.index["[CLS]"], encoder.index["[SEP]"]
        assert list(ids[2, j][mask[2, j] > 0]) == [cls, *body, sep, sep]
    # eval data: every client's list repeated over its steps
    eval_data = exp.eval_batches(np.arange(n))
    steps = eval_data["example_mask"].shape[1]
    for key in backbones.ANSWER_KEYS:
        assert eval_data[key].shape == (n, steps) + ids.shape[1:]
        np.testing.assert_array_equal(
            eval_data[key], np.broadcast_to(answers[key][:, None], eval_data[key].shape)
        )
    # a cohort's train batches (the loop's prefetched build): the cohort's own lists, [C, S, A, La]
    from feddat_jax.data.pipeline import cohort_batches

    cohort = np.array([3, 1])
    batch = exp.with_answer_lists(
        cohort_batches(exp.train_store, cohort, 4, seed=0, round_index=0), cohort
    )
    assert batch["answer_input_ids"].shape == (2, batch["example_mask"].shape[1]) + ids.shape[1:]
    assert batch["answer_input_ids"].flags.c_contiguous
    np.testing.assert_array_equal(batch["answer_input_ids"][1, -1], ids[1])
    np.testing.assert_array_equal(batch["answer_attention_mask"][0, 0], mask[3])


def test_eval_fn_scores_every_client_for_every_feddat_variant(experiment):
    exp = experiment
    params = flatten({**exp.frozen, **exp.server.shared})
    assert any(p.startswith("albef/visual_encoder/") for p in params)
    assert set(flatten(exp.server.shared)) and all(
        "/adapter_shared/" in p for p in flatten(exp.server.shared)
    )
    scores_R = jax.device_get(
        exp.eval_fn(  # every value on the replica axis (R = 1) but the shared test data
            exp.frozen,
            exp.server.shared,
            exp.server.shared,
            jax.tree.map(  # every client at the initial private state
                lambda x: np.repeat(x[:, None], len(exp.client_names), 1), exp.private_init
            ),
            jax.tree.map(lambda x: x[None], exp.tasks),
            exp.eval_batches(np.arange(len(exp.client_names))),
        )
    )
    scores = {variant: values[0] for variant, values in scores_R.items()}
    assert set(scores) == {"dat", "client", "shared"}
    rows = exp.eval_rows(np.arange(len(exp.client_names)))
    for variant, per_example in scores.items():
        assert per_example.shape == rows.shape, variant
        assert np.all((per_example >= 0) & (per_example <= 1))
        assert np.all(per_example[rows < 0] == 0)  # padding scores nothing


@pytest.mark.slow  # one round + eval compile per method (10-30 s each on 2 CPU cores)
@pytest.mark.parametrize("method", ALBEF_FEDDAT + ADAPTER_BASELINES)
def test_every_adapter_method_trains_one_albef_round(method, cache, tmp_path):
    exp = build_experiment(albef_smoke(cache, method=method, eval_batch_size=8))
    history = loop.train(exp, tmp_path, show_progress=False)
    variants = ("dat", "client", "shared") if method in FEDDAT_METHODS else ("global",)
    assert all(np.isfinite(history[-1][f"score/mean/{v}"]) for v in variants)
    assert np.isfinite(
        history[-1]["train/loss" if method not in FEDDAT_METHODS else "train/loss_dat"]
    )


def test_config_errors_name_the_problem(cache, tmp_path):
    with pytest.raises(
        ValueError, match=r"'bert' is not a valid model.name \(config.model.name\); choose one of"
    ):
        build_experiment(albef_smoke(cache, **{"model.name": "bert"}))
    with pytest.raises(ValueError, match="square"):
        build_experiment(albef_smoke(cache, **{"model.image_hw": (32, 64)}))
    with pytest.raises(ValueError, match="adapters only"):
        build_experiment(albef_smoke(cache, method="fedavg_lora"))
    file = tmp_path / "ALBEF.pth"
    file.write_bytes(b"")
    with pytest.raises(ValueError, match="model.tokenizer"):
        build_experiment(albef_smoke(cache, **{"model.checkpoint": str(file)}))


def _vocab_folder(path: Path, benchmark, size: int) -> Path:
    """A BERT vocab.txt of ``size`` tokens covering the benchmark's questions and answers."""
    texts = [ex.question for c in benchmark.clients for ex in c.train] + [
        a for c in benchmark.clients for a in c.answers
    ]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + sorted(
        {w for t in texts for w in words(t)}
    )
    vocab = (vocab + [f"[unused{i}]" for i in range(size)])[:size]
    path.mkdir(parents=True, exist_ok=True)
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return path


def test_checkpoint_and_tokenizer_load_through_build_experiment(experiment, cache, tmp_path):
    """A tiny ALBEF saved in ALBEF's VQA layout loads into the run (backbone AND LM head), the
    questions and answers are spelt by the BERT tokenizer, and a wrong vocabulary is refused."""
    tokenizer = _vocab_folder(
        tmp_path / "bert", experiment.benchmark, 99
    )  # AlbefConfig.tiny() vocab
    config = albef_smoke(cache, **{"model.tokenizer": str(tokenizer)})
    saved = backbones.build_backbone(
        config.copy_and_resolve_references(),
        methods.peft_config(methods.get_method("feddat")),
        19,
        HFTokenizerEncoder(tokenizer),
    ).params
    saved = jax.tree.map(lambda x: np.asarray(x) + 0.5, saved)  # unlike any init
    save_albef_checkpoint(tmp_path / "albef.safetensors", saved)
    config.model.checkpoint = str(tmp_path / "albef.safetensors")
    exp = build_experiment(config)

    want = {p: v for p, v in flatten(saved).items() if "/adapter_" not in p}
    frozen = flatten(exp.frozen)
    head = flatten({"head": exp.private_init["params"]["head"]})
    for path, value in want.items():
        got = frozen[path] if path in frozen else head[path][0]  # replica 0
        np.testing.assert_array_equal(np.asarray(got), value, err_msg=path)
    assert not any(
        np.allclose(np.asarray(v), flatten(saved)[p]) for p, v in flatten(exp.server.shared).items()
    )  # adapters keep their init
    hf = HFTokenizerEncoder(tokenizer).tokenizer
    row = exp.benchmark.clients[0].answers.index("no")
    ids = exp.answers_N["answer_input_ids"][0, row]
    assert hf.convert_ids_to_tokens([int(i) for i in ids if i]) == ["[CLS]", "no", "[SEP]", "[SEP]"]

    _vocab_folder(tmp_path / "small", experiment.benchmark, 80)
    config.model.tokenizer = str(tmp_path / "small")
    with pytest.raises(ValueError, match="tokenizer has 80 tokens"):
        build_experiment(config)


def test_albef_smoke_config_runs_one_round_through_launch(cache, tmp_path):
    start = time.perf_counter()
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "launch.py"),
            "--config",
            "configs/albef.py:domain,smoke",
            "--workdir",
            str(tmp_path / "run"),
            f"--config.data.cache_dir={cache}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert list(results) == ["feddat", "blind"]  # the smoke config's one reference row
    assert results["feddat"]["round"] == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "feddat" / "metrics.jsonl").open()]
    assert len(rows) == 1 and np.isfinite(rows[0]["score/mean/dat"])
    print(f"launch.py albef smoke: {time.perf_counter() - start:.0f} s")
