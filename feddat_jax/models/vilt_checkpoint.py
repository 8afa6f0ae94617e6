"""Local Hugging Face ViLT checkpoints <-> our Flax parameter tree.

Nothing is downloaded: a checkpoint is a folder with config.json and model.safetensors (or a
sharded model.safetensors.index.json, or a pytorch_model.bin read with `weights_only=True`).
Both ViltModel-style keys ("embeddings.…") and task-model keys ("vilt.embeddings.…",
"classifier.…") are accepted. Loading is strict: every backbone parameter must be filled and
every tensor used, except the pretraining heads of ViltForMaskedLM ("mlm_score.*", "itm_score.*"),
which are dropped on purpose. PEFT parameters never come from a checkpoint: they keep the model's
own init.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from feddat_jax.errors import CheckpointError  # a missing or mismatched checkpoint
from feddat_jax.models.torch_layout import from_torch, to_torch
from feddat_jax.models.vilt import ViltConfig
from feddat_jax.peft.roles import PEFT_PATTERN, flatten, unflatten

IGNORED_PREFIXES = ("mlm_score.", "itm_score.")
_HEAD_MODULES = {
    "dense_in": "classifier.0",
    "layernorm": "classifier.1",
    "dense_out": "classifier.3",
}
# Our module path (dots) -> transformers' module path, applied in order after "layer_i" -> "layer.i".
_RENAMES = (
    (r"\.attention\.(query|key|value)\.", r".attention.attention.\1."),
    (r"\.attention\.output\.", ".attention.output.dense."),
    (r"\.(intermediate|output)\.(weight|bias)$", r".\1.dense.\2"),
    (r"^pooler\.", "pooler.dense."),
    (r"^embeddings\.patch_embeddings\.", "embeddings.patch_embeddings.projection."),
)
_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def hf_name(path: str) -> str:
    """Our parameter path ("vilt/…" or "head/…") -> transformers' ViltForQuestionAnswering key."""
    root, *parts = path.split("/")
    parts[-1] = _LEAVES.get(parts[-1], parts[-1])
    if root == "head":
        return f"{_HEAD_MODULES[parts[0]]}.{parts[1]}"
    name = re.sub(r"\blayer_(\d+)\b", r"layer.\1", ".".join(parts))
    for pattern, replacement in _RENAMES:
        name = re.sub(pattern, replacement, name)
    return f"vilt.{name}"


def read_vilt_config(folder: str | Path) -> ViltConfig:
    """The ViltConfig of a checkpoint folder, with clear errors for a missing or non-ViLT folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"ViLT checkpoint folder {folder} does not exist")
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} has no config.json: not a Hugging Face checkpoint folder")
    hf_config = json.loads(config_file.read_text())
    if hf_config.get("model_type") != "vilt":
        raise CheckpointError(
            f"{config_file} is not a ViLT config: model_type={hf_config.get('model_type')!r}, "
            f"architectures={hf_config.get('architectures')}"
        )
    return ViltConfig.from_hf(hf_config)


def read_state_dict(folder: str | Path) -> dict[str, np.ndarray]:
    """All tensors of a checkpoint folder as float32 numpy arrays, keyed by transformers' names."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file():
        files = [folder / "model.safetensors"]
    elif (folder / "model.safetensors.index.json").is_file():
        weight_map = json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]
        files = [folder / name for name in sorted(set(weight_map.values()))]
    elif (folder / "pytorch_model.bin").is_file():
        return _read_torch_bin(folder / "pytorch_model.bin")
    else:
        raise CheckpointError(
            f"{folder} has no model.safetensors, model.safetensors.index.json or pytorch_model.bin"
        )
    from safetensors.numpy import load_file

    tensors: dict[str, np.ndarray] = {}
    for file in files:
        tensors.update(load_file(file))
    return {k: np.asarray(v, np.float32) for k, v in tensors.items()}


def _read_torch_bin(file: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:
        raise CheckpointError(
            f"reading {file} needs PyTorch (or convert it to model.safetensors)"
        ) from err
    state = torch.load(
        file, map_location="cpu", weights_only=True
    )  # never unpickle arbitrary objects
    return {k: v.detach().float().numpy() for k, v in state.items()}


def load_vilt_params(
    folder: str | Path, params: Mapping[str, Any], *, load_head: bool = True
) -> dict[str, Any]:
    """`params` (the model's own init: {"vilt": …, "head": …}) with the checkpoint's tensors in
    (as host numpy arrays, in each init leaf's dtype).

    The head is loaded from "classifier.*" when the checkpoint has it, `params` has a head and
    `load_head` is True; otherwise it keeps its init and "classifier.*" tensors are ignored. Raises CheckpointError naming the folder and the first missing /
    unexpected / mis-shaped tensors.
    """
    folder = Path(folder)
    read_vilt_config(folder)
    state = read_state_dict(folder)
    if not any(k.startswith("vilt.") for k in state):  # ViltModel-style keys
        state = {
            (k if k.startswith(("classifier.",) + IGNORED_PREFIXES) else f"vilt.{k}"): v
            for k, v in state.items()
        }
    load_head = load_head and "head" in params
    has_head = load_head and any(k.startswith("classifier.") for k in state)

    flat, used, missing, bad_shapes = dict(flatten(params)), set(), [], []
    for path, init in flat.items():
        if re.search(PEFT_PATTERN, path) or (path.startswith("head/") and not has_head):
            continue
        name = hf_name(path)
        if name not in state:
            missing.append(name)
            continue
        value = from_torch(path, state[name])
        if value.shape != np.shape(init):
            bad_shapes.append(f"{name}: checkpoint {value.shape} vs model {np.shape(init)}")
        flat[path] = value.astype(init.dtype)
        used.add(name)
    skipped = () if load_head else ("classifier.",)
    unexpected = [
        k for k in state if k not in used and not k.startswith(IGNORED_PREFIXES + skipped)
    ]
    if missing or unexpected or bad_shapes:
        raise CheckpointError(
            f"checkpoint {folder} does not match the model: "
            + "; ".join(
                f"{what} ({len(items)}): {items[:5]}"
                for what, items in (
                    ("missing tensors", missing),
                    ("unexpected tensors", unexpected),
                    ("shape mismatches", bad_shapes),
                )
                if items
            )
        )
    return unflatten(flat)


def save_vilt_checkpoint(folder: str | Path, params: Mapping[str, Any], config: ViltConfig) -> None:
    """Writes config.json + model.safetensors in transformers' ViltForQuestionAnswering layout
    (ViltModel layout without a head). PEFT parameters are not part of that layout and are skipped."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    flat = {p: np.asarray(v) for p, v in flatten(params).items() if not re.search(PEFT_PATTERN, p)}
    tensors = {hf_name(p): to_torch(p, v) for p, v in flat.items()}
    hf_config = config.to_hf_dict()
    if "head/dense_out/kernel" in flat:
        num_answers = flat["head/dense_out/kernel"].shape[1]
        hf_config["architectures"] = ["ViltForQuestionAnswering"]
        hf_config["id2label"] = {str(i): f"LABEL_{i}" for i in range(num_answers)}
    else:
        hf_config["architectures"] = ["ViltModel"]
        tensors = {k.removeprefix("vilt."): v for k, v in tensors.items()}
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True))
