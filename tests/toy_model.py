"""A tiny model with the real model's contract, for testing the federated core fast.

Params: ``backbone`` (frozen), ``adapter_shared`` / ``adapter_client`` (adapters), ``head``.
``forward(params, batch, mode)`` honours the adapter modes none / shared / client / dat with the
DAT's fixed ½-½ mix, so every algorithm runs on it exactly as on ViLT.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from feddat_jax.fl.state import ClientTasks, stack_clients

H, W, FEAT, HID = 4, 4, 48, 8


def init_params(key, num_answers: int) -> dict:
    k = jax.random.split(key, 5)
    dense = lambda key, i, o: {
        "kernel": 0.3 * jax.random.normal(key, (i, o)),
        "bias": jnp.zeros((o,)),
    }
    return {
        "backbone": dense(k[0], FEAT, HID),
        "adapter_shared": dense(k[1], HID, HID),
        "adapter_client": dense(k[2], HID, HID),
        "head": dense(k[3], HID, num_answers),
    }


def forward(params, batch, mode: str):
    x = batch["image"].reshape(batch["image"].shape[:-3] + (-1,)).astype(jnp.float32) / 255.0
    x = x + 0.01 * jnp.sum(batch["input_ids"], axis=-1, keepdims=True)
    h = jnp.tanh(x @ params["backbone"]["kernel"] + params["backbone"]["bias"])
    adapt = lambda p: jnp.tanh(h @ p["kernel"] + p["bias"])
    if mode == "shared":
        h = h + adapt(params["adapter_shared"])
    elif mode == "client":
        h = h + adapt(params["adapter_client"])
    elif mode == "dat":
        h = h + 0.5 * adapt(params["adapter_client"]) + 0.5 * adapt(params["adapter_shared"])
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def split(params):
    """(frozen, shared, private) as the 'feddat' partition preset would split them."""
    return (
        {"backbone": params["backbone"]},
        {"adapter_shared": params["adapter_shared"]},
        {"adapter_client": params["adapter_client"], "head": params["head"]},
    )


def client_examples(
    rng: np.random.Generator, n: int, num_answers: int, kind: int, real_answers: int
) -> dict:
    """n random examples of one client (unbatched), answers only among its real answers."""
    label = rng.integers(0, real_answers, n)
    targets = np.zeros((n, num_answers), np.float32)
    if kind == 0:
        targets[np.arange(n), label] = rng.choice([0.3, 0.6, 1.0], n)
    else:
        targets[np.arange(n), label] = 1.0
    image = rng.integers(0, 256, (n, H, W, 3)).astype(np.uint8)
    image[np.arange(n), 0, 0, 0] = (label * 60).astype(np.uint8)  # learnable signal
    return {
        "input_ids": rng.integers(1, 20, (n, 5)).astype(np.int32),
        "attention_mask": np.ones((n, 5), np.int32),
        "image": image,
        "pixel_mask": np.ones((n, H, W), np.uint8),
        "targets": targets,
        "example_mask": np.ones((n,), np.float32),
    }


def batch_epoch(examples: dict, batch_size: int, num_steps: int) -> dict:
    """Pad one client's examples to [num_steps, batch_size, ...] with example_mask 0."""
    n = examples["example_mask"].shape[0]
    total = num_steps * batch_size
    out = {}
    for k, v in examples.items():
        pad = np.zeros((total - n,) + v.shape[1:], v.dtype)
        out[k] = np.concatenate([v, pad]).reshape((num_steps, batch_size) + v.shape[1:])
    return out


def unpadded_batches(examples: dict, batch_size: int) -> list[dict]:
    n = examples["example_mask"].shape[0]
    return [
        {k: v[i : i + batch_size] for k, v in examples.items()} for i in range(0, n, batch_size)
    ]


def make_tasks(sizes, kinds, real_answers, num_answers) -> ClientTasks:
    mask = np.zeros((len(sizes), num_answers), np.float32)
    for i, r in enumerate(real_answers):
        mask[i, :r] = 1.0
    return ClientTasks(
        answer_mask=jnp.asarray(mask),
        task_kind=jnp.asarray(kinds, jnp.int32),
        num_examples=jnp.asarray(sizes, jnp.int32),
    )


def cohort(algorithm, sizes, kinds, real, num_answers: int = 5, batch_size: int = 4):
    """A toy cohort ready for ``run_round``: per-client examples, their padded [C,S,B,...] epoch,
    the split params, every client's fresh private state and the task metadata."""
    rng = np.random.default_rng(0)
    examples = [client_examples(rng, n, num_answers, k, r) for n, k, r in zip(sizes, kinds, real)]
    steps = max(-(-n // batch_size) for n in sizes)
    batches = stack_clients([batch_epoch(e, batch_size, steps) for e in examples])
    frozen, shared, private = split(init_params(jax.random.key(0), num_answers))
    private_C = stack_clients([algorithm.init_private(shared, private)] * len(sizes))
    tasks = make_tasks(sizes, kinds, real, num_answers)
    return examples, batches, frozen, shared, private, private_C, tasks
