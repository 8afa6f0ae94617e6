"""``peft.head="shared"``: one head over the benchmark's answer space, a shared parameter group."""

import pytest

from feddat_jax.cli.validate import validate_config
from feddat_jax.data import loading
from feddat_jax.errors import ConfigError
from feddat_jax.peft import roles
from feddat_jax.train.config_base import base_config


def test_the_head_is_a_shared_group_only_when_asked():
    for preset in ("adapter", "lora", "full"):
        assert roles.role_of("head/dense/kernel", roles.rules_for(preset)) == "private"
        shared = roles.rules_for(preset, "shared")
        assert roles.role_of("head/dense/kernel", shared) == "shared"
        assert roles.role_of("vilt/encoder/layer_0/attention/query/kernel", shared) == (
            "shared" if preset == "full" else "frozen"
        )
    with pytest.raises(ValueError, match="head='both'"):
        roles.rules_for("adapter", "both")


def test_every_client_answers_over_the_family_space():
    c = base_config()
    c.data.source, c.data.family, c.data.num_clients = "embedded", "task", 4
    c.data.train_per_client, c.data.test_per_client, c.data.image_size = 6, 30, 32
    private = loading.load_benchmark(c.data, 8)
    shared = loading.load_benchmark(c.data, 8, "shared")
    space = sorted({a for client in private.clients for a in client.answers})
    for a, b in zip(private.clients, shared.clients, strict=True):
        assert list(b.answers) == space and b.train is a.train  # the same examples
        assert set(a.answers) <= set(space)


def test_a_method_whose_head_is_the_clients_refuses_a_shared_head():
    c = base_config()
    c.data.source, c.peft.head = "embedded", "shared"
    for method in ("feddat", "local_adapter"):
        c.method = method
        with pytest.raises(ConfigError, match=f"method '{method}' keeps its answer head") as err:
            validate_config(c)
        assert "\n" not in str(err.value)
    c.method, c.peft.head = "fedavg_adapter", "global"
    with pytest.raises(ConfigError, match="'global' is not a valid peft.head"):
        validate_config(c)
