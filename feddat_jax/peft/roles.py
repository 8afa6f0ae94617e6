"""Parameter path -> role (frozen / shared / private), and the split/merge of a parameter tree.

Paths are the "/"-joined keys of the Flax `params` collection, e.g.
`vilt/encoder/layer_3/adapter_shared/down/kernel`. A rule set is an ordered list of
(regex, role); a path takes the role of the FIRST rule whose regex `re.search`es it. `search`
rather than `fullmatch` keeps rules short ("/adapter_shared/" instead of ".*/adapter_shared/.*");
anchor with ^ and $ where a rule must not match in the middle of a path. Every preset ends with
a catch-all, and a path no rule matches is an error rather than a silent default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jax
import numpy as np

Role = Literal["frozen", "shared", "private"]
Rules = Sequence[tuple[str, Role]]
ROLES: tuple[Role, ...] = ("frozen", "shared", "private")

# Parameters that only exist because of a PeftConfig (never in a pretrained checkpoint).
PEFT_PATTERN = r"(^|/)(adapter_shared|adapter_client|adapter_gate|prompts)/|/lora_[ab]$"
_HEAD: tuple[str, Role] = (r"^head/", "private")
_PEFT_FROZEN: tuple[str, Role] = (PEFT_PATTERN, "frozen")
_REST_FROZEN: tuple[str, Role] = (r".*", "frozen")

RULES: dict[str, tuple[tuple[str, Role], ...]] = {
    # FedDAT: only A_s travels; A_c, the DAT gate and the head stay with the client.
    "feddat": (
        _HEAD,
        (r"(^|/)adapter_shared/", "shared"),
        (r"(^|/)(adapter_client|adapter_gate)/", "private"),
        _REST_FROZEN,
    ),
    # FedAvg + one adapter (run with adapter_mode="shared").
    "adapter": (_HEAD, (r"(^|/)adapter_shared/", "shared"), _REST_FROZEN),
    # Local-only training of one adapter: nothing is shared.
    "local_adapter": (_HEAD, (r"(^|/)adapter_shared/", "private"), _REST_FROZEN),
    "lora": (_HEAD, (r"/lora_[ab]$", "shared"), _REST_FROZEN),
    "prompt": (_HEAD, (r"(^|/)prompts/", "shared"), _REST_FROZEN),
    # BitFit: every bias of the backbone.
    "bitfit": (_HEAD, _PEFT_FROZEN, (r"/bias$", "shared"), _REST_FROZEN),
    # Every normalisation layer (BERT's "LayerNorm" included, which the official code missed):
    # modules whose name contains "norm", case-insensitive.
    "layernorm": (
        _HEAD,
        _PEFT_FROZEN,
        (r"(?i)(^|/)[^/]*norm[^/]*/(scale|bias)$", "shared"),
        _REST_FROZEN,
    ),
    # FedAvg full fine-tuning of the whole backbone.
    "full": (_HEAD, _PEFT_FROZEN, (r".*", "shared")),
}


def rules_for(preset: str, head: Role = "private") -> tuple[tuple[str, Role], ...]:
    """The rule set of a preset name, with an error listing the choices. ``head="shared"`` makes
    the answer head a shared group (one head over the benchmark's answer space, aggregated like
    the shared modules: the cross-device setting, docs/CROSS_DEVICE.md)."""
    if preset not in RULES:
        raise ValueError(f"unknown partition preset {preset!r}; choose one of {sorted(RULES)}")
    if head not in ("private", "shared"):
        raise ValueError(f"head={head!r} is not one of ('private', 'shared')")
    return tuple((_HEAD[0], head) if rule == _HEAD else rule for rule in RULES[preset])


def role_of(path: str, rules: Rules) -> Role:
    """The role of the first rule whose regex `re.search`es `path`."""
    for pattern, role in rules:
        if re.search(pattern, path):
            if role not in ROLES:
                raise ValueError(f"rule {pattern!r} has role {role!r}; roles are {ROLES}")
            return role
    raise ValueError(f"no partition rule matches parameter {path!r}")


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": x}} -> {"a/b": x}. Leaves are anything that is not a Mapping."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, path + "/"))
        else:
            flat[path] = value
    return flat


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Inverse of `flatten`."""
    tree: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split("/")
        node = tree
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def split(params: Mapping[str, Any], rules: Rules) -> tuple[dict, dict, dict]:
    """(frozen, shared, private): nested dicts, each holding only the leaves of its role."""
    parts: dict[Role, dict[str, Any]] = {role: {} for role in ROLES}
    for path, leaf in flatten(params).items():
        parts[role_of(path, rules)][path] = leaf
    return tuple(unflatten(parts[role]) for role in ROLES)  # type: ignore[return-value]


def merge(*parts: Mapping[str, Any]) -> dict[str, Any]:
    """Exact inverse of `split` (any number of disjoint parts); a path in two parts is an error."""
    flat: dict[str, Any] = {}
    for part in parts:
        for path, leaf in flatten(part).items():
            if path in flat:
                raise ValueError(f"parameter {path!r} appears in more than one part")
            flat[path] = leaf
    return unflatten(flat)


def mask(params: Mapping[str, Any], rules: Rules, role: Role) -> dict[str, Any]:
    """Bool tree, True where a leaf has `role` (for optax.masked / multi_transform)."""
    return unflatten({path: role_of(path, rules) == role for path in flatten(params)})


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays (or ShapeDtypeStructs)."""
    return int(
        sum(np.prod(np.shape(leaf), dtype=np.int64) for leaf in jax.tree_util.tree_leaves(tree))
    )
