"""The federated split builder and its CLI, on tiny fixtures of every source."""

from __future__ import annotations

import hashlib
import json

import pytest
import reader_fixtures as fx

from feddat_jax.data import build
from feddat_jax.data.benchmarks import BENCHMARKS, get_benchmark
from feddat_jax.data.readers import BadImageError, MalformedRecordError, MissingSourceError
from feddat_jax.data.tfds_store import read_benchmark

DOCUMENTED_CLIENTS = {
    "domain": ["aqua", "vqa_abstract", "vizwiz", "cocoqa", "gqa"],
    "function": ["attribute", "knowledge", "logical", "object", "relation"],
    "scene": [
        "ShopAndDining",
        "Workplace",
        "HomeOrHotel",
        "Transportation",
        "SportAndLeisure",
        "Outdoors",
    ],
    "task": ["vqav2", "nlvr2", "snli_ve", "vcr"],
}
CLASSIFICATION_LABELS = {
    "nlvr2": ["false", "true"],
    "snli_ve": ["entailment", "neutral", "contradiction"],
    "vcr": ["A", "B", "C", "D"],
}
ARGS = ["--train", "5", "--test", "3", "--top_k", "3"]
N = 10  # records per source split (reader_fixtures.PROFILE: 1 of 10 falls out of the top-3 filter)


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    for bdef in BENCHMARKS.values():
        fx.make_benchmark_raw_dir(bdef, root, n_per_split=N)
    return root


def _ids(bench):
    return {
        c.name: ([e.example_id for e in c.train], [e.example_id for e in c.test])
        for c in bench.clients
    }


@pytest.mark.parametrize("name", sorted(DOCUMENTED_CLIENTS))
def test_cli_builds_documented_benchmark(raw_dir, tmp_path, name):
    out = tmp_path / name
    assert (
        build.main(
            [
                "--benchmark",
                name,
                "--raw_dir",
                str(raw_dir),
                "--out",
                str(out),
                "--seed",
                "0",
                *ARGS,
            ]
        )
        == 0
    )
    bench = read_benchmark(out)
    assert bench.name == name and bench.seed == 0
    assert [c.name for c in bench.clients] == DOCUMENTED_CLIENTS[name]
    info = json.loads((out / "manifest.json").read_text())["info"]
    for c in bench.clients:
        if c.name in CLASSIFICATION_LABELS:
            assert c.task_kind == "classification" and c.answers == CLASSIFICATION_LABELS[c.name]
            eligible = N
        else:
            assert c.task_kind == "vqa" and c.answers == fx.answer_pool(c.name)[:3]
            eligible = N - 1
        assert (len(c.train), len(c.test)) == (5, 3)
        for ex in c.train + c.test:  # every kept example has ALL its answers in the vocabulary
            assert set(ex.answers) <= set(c.answers) and ex.image
        src = get_benchmark(name).clients[
            [s.client for s in get_benchmark(name).clients].index(c.name)
        ]
        assert all(f"/{src.train_split}/" in e.example_id for e in c.train)
        assert all(f"/{src.test_split}/" in e.example_id for e in c.test)
        counts = info["counts"][c.name]
        assert counts["train"] == {
            "source_split": src.train_split,
            "records": N,
            "eligible": eligible,
            "taken": 5,
            "target": 5,
        }
        assert counts["test"]["eligible"] == eligible and counts["test"]["taken"] == 3
        files = info["sources"][c.name]["files"]
        assert len(files) >= 2 and all(len(h) == 64 for h in files.values())
        assert info["skipped"][c.name] == {}
    assert info["recipe"]["top_k"] == 3 and info["recipe"]["seed"] == 0


def test_soft_scores_survive_the_build(raw_dir):
    bench = build.build_benchmark("domain", raw_dir, n_train=9, n_test=9, top_k=3)
    abstract = bench.client("vqa_abstract")
    scores = {s for ex in abstract.train for s in ex.answers.values()}
    assert scores == {1.0, 0.6}  # 8 x main + 2 x pool[0] -> 1.0 and 0.6 (2 annotators)
    assert len(abstract.train) == 9  # all eligible records, the rare one filtered


def test_same_seed_identical_splits_other_seed_differs(raw_dir, tmp_path):
    kw = dict(n_train=5, n_test=3, top_k=3)
    a = build.build_benchmark("task", raw_dir, seed=7, **kw)
    b = build.build_benchmark("task", raw_dir, seed=7, **kw)
    assert _ids(a) == _ids(b)
    assert all(ca.train == cb.train and ca.test == cb.test for ca, cb in zip(a.clients, b.clients))
    c = build.build_benchmark("task", raw_dir, seed=8, **kw)
    assert _ids(a) != _ids(c)
    # the client name is folded into the seed: two clients do not share a permutation
    assert (
        build.client_rng(0, "attribute", 0).permutation(N).tolist()
        != build.client_rng(0, "knowledge", 0).permutation(N).tolist()
    )
    # and on disk: byte-identical record files
    for out in ("x", "y"):
        assert (
            build.main(
                [
                    "--benchmark",
                    "scene",
                    "--raw_dir",
                    str(raw_dir),
                    "--out",
                    str(tmp_path / out),
                    "--seed",
                    "3",
                    *ARGS,
                ]
            )
            == 0
        )
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    files = sorted(p.name for p in (tmp_path / "x").glob("*.array_record*"))
    assert files and all(sha(tmp_path / "x" / f) == sha(tmp_path / "y" / f) for f in files)


def test_missing_source_folder_is_named(tmp_path, capsys):
    fx.make_benchmark_raw_dir(get_benchmark("domain"), tmp_path / "raw", n_per_split=N)
    (tmp_path / "raw" / "gqa" / "questions1.2" / "val_balanced_questions.json").unlink()
    rc = build.main(
        [
            "--benchmark",
            "domain",
            "--raw_dir",
            str(tmp_path / "raw"),
            "--out",
            str(tmp_path / "out"),
            *ARGS,
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "val_balanced_questions.json" in err and "missing gqa" in err
    with pytest.raises(MissingSourceError, match="--raw_dir"):
        build.build_benchmark("task", tmp_path / "nothing")
    with pytest.raises(MissingSourceError, match=r"missing vqav2 folder.*vqav2"):
        build.build_benchmark("task", tmp_path / "raw")


def _corrupt_sources(root):
    """One malformed record in a JSON array (CLOVE), one undecodable image (the 2nd train image
    of the attribute client)."""
    path = root / "clove" / "json" / "function" / "functional_knowledge_train.json"
    recs = json.loads(path.read_text())
    recs[2]["question"] = 42
    path.write_text(json.dumps(recs, indent=1))
    bad_img = root / "clove" / "vg" / "image" / "att1.jpg"
    bad_img.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return path, bad_img


def test_bad_input_fails_without_skip_bad_and_is_counted_with_it(tmp_path, capsys):
    root = tmp_path / "raw"
    fx.make_benchmark_raw_dir(get_benchmark("function"), root, n_per_split=N)
    path, bad_img = _corrupt_sources(root)
    function = {s.client: s for s in get_benchmark("function").clients}
    # without --skip_bad: the malformed record stops the build, naming file and line
    with pytest.raises(MalformedRecordError) as err:
        build.build_client(function["knowledge"], root, n_train=N, n_test=3, top_k=3)
    record_starts = [i + 1 for i, ln in enumerate(path.read_text().splitlines()) if ln == " {"]
    assert (err.value.path, err.value.line) == (str(path), record_starts[2])
    assert "field 'question' has type int" in str(err.value)
    # the undecodable image: named
    with pytest.raises(BadImageError, match=str(bad_img)):
        build.build_client(function["attribute"], root, n_train=N, n_test=3, top_k=3)
    rc = build.main(
        [
            "--benchmark",
            "function",
            "--raw_dir",
            str(root),
            "--out",
            str(tmp_path / "o1"),
            *ARGS,
            "--train",
            str(N),
        ]
    )
    assert rc == 1 and f"bad image {bad_img}" in capsys.readouterr().err
    # with --skip_bad: both skipped, counted per client, the counts still reach the target
    out = tmp_path / "out"
    assert (
        build.main(
            [
                "--benchmark",
                "function",
                "--raw_dir",
                str(root),
                "--out",
                str(out),
                "--skip_bad",
                "--train",
                "9",
                "--test",
                "3",
                "--top_k",
                "3",
            ]
        )
        == 0
    )
    info = json.loads((out / "manifest.json").read_text())["info"]
    assert info["skipped"]["knowledge"] == {"malformed_record": 1}
    assert info["skipped"]["attribute"] == {"bad_image": 1}
    assert info["skipped_total"] == {"bad_image": 1, "malformed_record": 1}
    assert info["counts"]["knowledge"]["train"]["records"] == N - 1
    assert info["counts"]["attribute"]["train"]["taken"] == N - 2  # 1 rare + 1 bad image
    assert any(str(bad_img) in m for m in info["skipped_messages"]["attribute"])
    bench = read_benchmark(out)
    assert "clove_function_attribute/train/gatt000001" not in {
        e.example_id for e in bench.client("attribute").train
    }
