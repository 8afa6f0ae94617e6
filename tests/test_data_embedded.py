"""The embedded benchmark: determinism, the four kinds of heterogeneity, caching, bad input."""

import io
import itertools

import numpy as np
import pytest
from PIL import Image

from feddat_jax.data import embedded
from feddat_jax.data.embedded import FAMILIES, load_or_build, make_benchmark

SMALL = dict(train_per_client=16, test_per_client=4)


@pytest.fixture(scope="module")
def families():
    return {f: make_benchmark(f, **SMALL) for f in FAMILIES}


def qtype(example):
    return example.example_id.rsplit("/", 1)[1]


def test_same_seed_is_byte_identical_and_seed_matters():
    a = make_benchmark("scene", num_clients=2, **SMALL, seed=3)
    b = make_benchmark("scene", num_clients=2, **SMALL, seed=3)
    c = make_benchmark("scene", num_clients=2, **SMALL, seed=4)
    assert a == b
    assert [e.image for e in a.clients[0].train] == [e.image for e in b.clients[0].train]
    assert [e.image for e in a.clients[0].train] != [e.image for e in c.clients[0].train]


def test_client_data_do_not_depend_on_num_clients():
    two = make_benchmark("function", num_clients=2, **SMALL)
    five = make_benchmark("function", **SMALL)
    assert two.clients == five.clients[:2]


def test_every_family_is_well_formed(families):
    for family, bench in families.items():
        assert [c.name for c in bench.clients] == [d.name for d in FAMILIES[family]]
        for c in bench.clients:
            assert c.train and c.test and 1 <= len(c.answers) <= 100
            for ex in c.train + c.test:
                assert set(ex.answers) <= set(c.answers)
                assert ex.image.startswith(b"\x89PNG")
                assert Image.open(io.BytesIO(ex.image)).size == (32, 32)
                scores = set(ex.answers.values())
                if c.task_kind == "classification":
                    assert list(ex.answers.values()) == [1.0]
                else:
                    assert scores <= {0.3, 0.6, 0.9, 1.0} and max(scores) == 1.0


def test_domain_clients_differ_in_pixels_and_size(families):
    clients = families["domain"].clients
    stats = {}
    for c in clients:
        ims = np.stack([np.asarray(Image.open(io.BytesIO(e.image))) for e in c.train]) / 1.0
        stats[c.name] = np.array([ims.mean(), ims.std(), np.abs(np.diff(ims, axis=2)).mean()])
    for a, b in itertools.combinations(stats, 2):
        assert np.abs(stats[a] - stats[b]).max() > 5.0, (a, b, stats[a], stats[b])
    assert len({len(c.train) for c in clients}) == len(clients)  # +-40% sizes by default
    assert len({ex.question.split()[0] for c in clients for ex in c.train[:8]}) > 3  # phrasing
    info = families["domain"].manifest["clients"]
    assert len({tuple(v["question_types"]) for v in info.values()}) == 1  # same question types
    for c in clients:
        assert {qtype(e) for e in c.train} <= set(info[c.name]["question_types"])


def test_function_clients_have_disjoint_question_types(families):
    types = {c.name: {qtype(e) for e in c.train + c.test} for c in families["function"].clients}
    for a, b in itertools.combinations(types, 2):
        assert not types[a] & types[b], (a, b)


def test_scene_clients_differ_in_objects(families):
    seen = {}
    for c in families["scene"].clients:
        seen[c.name] = {
            max(e.answers, key=e.answers.get) for e in c.train if qtype(e) in ("shape", "colour")
        }
    for a, b in itertools.combinations(seen, 2):
        assert seen[a] != seen[b], (a, b)
    info = families["scene"].manifest["clients"]
    assert len({tuple(v["shapes"] + v["colours"]) for v in info.values()}) == len(info)


def test_task_clients_differ_in_task(families):
    clients = families["task"].clients
    assert [c.task_kind for c in clients] == [
        "vqa",
        "classification",
        "classification",
        "classification",
    ]
    assert sorted(clients[1].answers) == ["false", "true"]
    assert sorted(clients[2].answers) == ["false", "true", "unknown"]
    assert sorted(clients[3].answers) == ["a", "b", "c", "d"]
    assert all(") " in e.question for e in clients[3].train)  # options listed in the question


def test_load_or_build_reuses_the_cache(tmp_path, monkeypatch):
    first = load_or_build("task", tmp_path, num_clients=2, train_per_client=4, test_per_client=2)
    monkeypatch.setattr(embedded, "make_benchmark", lambda *a, **k: pytest.fail("rebuilt"))
    again = load_or_build("task", tmp_path, num_clients=2, train_per_client=4, test_per_client=2)
    assert again == first
    other = embedded.cache_path(
        "task", tmp_path, num_clients=2, train_per_client=5, test_per_client=2
    )
    assert other != embedded.cache_path(
        "task", tmp_path, num_clients=2, train_per_client=4, test_per_client=2
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(family="nope"), r"'nope'.*\['domain', 'function', 'scene', 'task'\]"),
        (dict(family="task", num_clients=9), r"num_clients=9 is not in 1\.\.4"),
        (dict(family="task", num_clients=0), r"num_clients=0"),
        (dict(family="task", image_size=40, patch_size=16), r"image_size=40.*patch_size=16"),
        (dict(family="task", top_k=101), r"top_k=101"),
    ],
)
def test_bad_input_names_value_and_choices(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_benchmark(**kwargs, train_per_client=2, test_per_client=1)
