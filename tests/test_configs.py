"""Every file of configs/ builds the experiment it built before the one-file-per-backbone move.

The frozen dicts are each config's fields that differ from ``base_config()``, captured from the old
``configs/vilt_<family>.py`` / ``albef_<family>.py`` / ``embedded.py`` / ``demo.py`` before the move
(the full JSON of all 28 variants was also compared byte for byte once, in the commit that moved them).
"""

import json

import pytest

from feddat_jax.train.config_base import TINY_VILT, base_config, config_from_file

FAMILIES = ("domain", "function", "scene", "task")
PAPER_SMOKE = {
    "batch_size": 4,
    "data.image_size": 32,
    "data.num_clients": 4,
    "data.source": "embedded",
    "data.test_per_client": 6,
    "data.train_per_client": 12,
    "eval_every": 1,
    "model.image_hw": [32, 32],
    "model.max_text_len": 16,
    "model.size": "tiny",
    "references": ["blind"],
    "rounds": 1,
    "segment_steps": 100,
    "tensorboard": False,
}
ALBEF = {"model.image_hw": [384, 384], "model.name": "albef", "model.tokenizer": ""}
EMBEDDED = {
    "batch_size": 8,
    "compare_methods": ["feddat", "fedavg_adapter", "local_adapter"],
    "data.image_size": 48,
    "data.source": "embedded",
    "data.test_per_client": 1000,
    "data.train_per_client": 200,
    "eval_batch_size": 100,
    "eval_every": 10,
    "model.checkpoint": "TINY_VILT",
    "model.image_hw": [48, 48],
    "model.max_text_len": 24,
    "model.size": "tiny",
    "optim.learning_rate": 0.001,
    "optim.schedule": "fair",
    "peft.adapter_reduction": 8,
    "rounds": 20,
    "sweep.seed": [0, 1, 2],
}
EMBEDDED_SMOKE = {
    **{k: v for k, v in EMBEDDED.items() if k != "sweep.seed"},
    "compare_methods": ["feddat", "fedavg_adapter"],
    "data.num_clients": 4,
    "data.test_per_client": 8,
    "data.train_per_client": 16,
    "eval_every": 1,
    "references": ["blind"],
    "rounds": 1,
    "tensorboard": False,
}
FROZEN = {
    "vilt.py:{}": {"segment_steps": 100},
    "vilt.py:{},smoke": PAPER_SMOKE,
    "albef.py:{}": {**ALBEF, "rounds": 20, "segment_steps": 100},
    "albef.py:{},smoke": {**PAPER_SMOKE, "model.name": "albef", "model.tokenizer": ""},
    "embedded.py:{}": EMBEDDED,
    "embedded.py:{},smoke": EMBEDDED_SMOKE,
}


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def changed(spec: str) -> dict:
    """The fields of ``spec``'s config that differ from base_config (every base field is kept)."""
    base = flat(json.loads(base_config().to_json()))
    fields = flat(json.loads(config_from_file(spec).to_json()))
    assert set(base) <= set(fields)
    diff = {k: v for k, v in fields.items() if k not in base or base[k] != v}
    if diff.get("model.checkpoint") == TINY_VILT:
        diff["model.checkpoint"] = "TINY_VILT"
    return diff


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("pattern", sorted(FROZEN))
def test_family_configs_equal_the_frozen_ones(pattern, family):
    expected = dict(FROZEN[pattern])
    if family != "domain":  # "domain" is base_config's family
        expected["data.family"] = family
    assert changed("configs/" + pattern.format(family)) == expected


def test_the_demo_is_embedded_domain_with_one_seed_and_one_evaluation():
    expected = {k: v for k, v in EMBEDDED.items() if k != "sweep.seed"}
    assert changed("configs/demo.py") == {**expected, "eval_every": 20}
    assert changed("configs/demo.py:smoke") == EMBEDDED_SMOKE


@pytest.mark.parametrize("name", ["vilt", "albef", "embedded"])
def test_the_argument_defaults_to_domain_and_smoke_alone_is_domain_smoke(name):
    assert config_from_file(f"configs/{name}.py").to_json() == config_from_file(
        f"configs/{name}.py:domain"
    ).to_json()
    assert config_from_file(f"configs/{name}.py:smoke").to_json() == config_from_file(
        f"configs/{name}.py:domain,smoke"
    ).to_json()


@pytest.mark.parametrize("arg", ["nope", "domain,big", "scene,smoke,x"])
def test_an_unknown_argument_is_refused_with_the_allowed_ones(arg):
    with pytest.raises(ValueError, match=r"allowed: FAMILY or FAMILY,smoke with FAMILY one of "):
        config_from_file(f"configs/vilt.py:{arg}")
