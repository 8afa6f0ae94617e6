"""Local ALBEF checkpoints (the released `ALBEF.pth`, or ALBEF's fine-tuned VQA checkpoints) <->
our Flax parameter tree. Nothing is downloaded.

Files: a PyTorch checkpoint read with `torch.load(weights_only=True)` (never unpickling arbitrary
objects; the state dict may sit under "model" as ALBEF saves it, or "state_dict"), or a
`.safetensors` file (or a folder holding `model.safetensors`), e.g. written once by
`convert_albef_checkpoint`.

Two key layouts are accepted:
- pretraining (`ALBEF.pth`): `visual_encoder.*`, `text_encoder.bert.{embeddings,encoder}.*`
  (12 layers; layers >= 6 carry `crossattention.*`), `text_encoder.cls.predictions.*` (the MLM head),
  plus momentum copies, projections, ITM head and queues, which VQA does not use and are dropped.
  As ALBEF's VQA.py does when no decoder weights exist, the answer decoder is initialised from the
  encoder: decoder layer j <- encoder layer (encoder_layers - decoder_layers + j) (the last 6),
  decoder embeddings <- encoder embeddings, decoder LM head <- the MLM head.
- VQA (`model_vqa.ALBEF.state_dict()`): `text_encoder.{embeddings,encoder}.*`, `text_decoder.bert.*`,
  `text_decoder.cls.predictions.*`.
The ViT position embedding is resized to the model's grid with torch's bicubic interpolation
(align_corners=False), as ALBEF's `interpolate_pos_embed` (ALBEF.pth is pretrained at 256 px: 16x16
patches; VQA runs at 384 px: 24x24). Loading is strict: every backbone parameter must be filled and
every kept tensor used; `cls.predictions.decoder.{weight,bias}` must equal the decoder's word
embeddings and `cls.predictions.bias` (ALBEF ties them). PEFT parameters keep the model's own init.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from feddat_jax.models.albef import AlbefConfig
from feddat_jax.models.torch_layout import from_torch, to_torch
from feddat_jax.models.vilt_checkpoint import CheckpointError
from feddat_jax.peft.roles import PEFT_PATTERN, flatten, unflatten

__all__ = [
    "CheckpointError",
    "albef_name",
    "convert_albef_checkpoint",
    "interpolate_pos_embed",
    "load_albef_params",
    "read_state_dict",
    "save_albef_checkpoint",
    "to_vqa_layout",
]

# Pretraining-only tensors that ALBEF's VQA model does not have.
IGNORED_PREFIXES = (
    "visual_encoder_m.",
    "text_encoder_m.",
    "text_decoder_m.",
    "vision_proj.",
    "vision_proj_m.",
    "text_proj.",
    "text_proj_m.",
    "itm_head.",
)
IGNORED_KEYS = ("temp", "image_queue", "text_queue", "queue_ptr", "idx_queue")
IGNORED_SUFFIXES = (".position_ids",)  # BertEmbeddings' position-id buffer
_ROOTS = (
    ("albef/visual_encoder", "visual_encoder"),
    ("albef/text_encoder", "text_encoder"),
    ("albef/text_decoder", "text_decoder.bert"),
    ("head", "text_decoder.cls.predictions"),
)
_LEAVES = {"kernel": "weight", "scale": "weight", "embedding": "weight"}
_TIED = {
    "text_decoder.cls.predictions.decoder.weight": "text_decoder.bert.embeddings.word_embeddings.weight",
    "text_decoder.cls.predictions.decoder.bias": "text_decoder.cls.predictions.bias",
}


def _ignored(key: str) -> bool:
    return key in IGNORED_KEYS or key.startswith(IGNORED_PREFIXES) or key.endswith(IGNORED_SUFFIXES)


def albef_name(path: str) -> str:
    """Our parameter path -> the key of ALBEF's VQA model (`model_vqa.ALBEF`)."""
    for ours, theirs in _ROOTS:
        if path.startswith(ours + "/"):
            parts = path[len(ours) + 1 :].split("/")
            parts[-1] = _LEAVES.get(parts[-1], parts[-1])
            name = re.sub(r"\b(blocks|layer)_(\d+)\b", r"\1.\2", ".".join(parts))
            return f"{theirs}.{re.sub(r'^patch_embed[.]', 'patch_embed.proj.', name)}"
    raise ValueError(f"{path!r} is not an ALBEF parameter path")


def _bicubic_matrix(out_size: int, in_size: int, a: float = -0.75) -> np.ndarray:
    """[out, in] weights of torch's 1-D bicubic resize (align_corners=False, border-clamped taps)."""

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        src = (in_size / out_size) * (i + 0.5) - 0.5
        x0 = math.floor(src)
        t = src - x0
        for offset, weight in zip((-1, 0, 1, 2), (far(t + 1), near(t), near(1 - t), far(2 - t))):
            matrix[i, min(max(x0 + offset, 0), in_size - 1)] += weight
    return matrix


def interpolate_pos_embed(pos_1xNxD: np.ndarray, grid: int) -> np.ndarray:
    """ALBEF's `interpolate_pos_embed`: keep the CLS row, resize the square patch grid to grid x grid
    with torch's bicubic interpolation. Returns the input unchanged when the grid already matches."""
    pos_1xNxD = np.asarray(pos_1xNxD, np.float32)
    old = round((pos_1xNxD.shape[1] - 1) ** 0.5)
    if old * old != pos_1xNxD.shape[1] - 1:
        raise CheckpointError(
            f"position embedding {pos_1xNxD.shape} is not CLS + a square patch grid"
        )
    if old == grid:
        return pos_1xNxD
    spatial = pos_1xNxD[0, 1:].reshape(old, old, -1).astype(np.float64)
    resize = _bicubic_matrix(grid, old)
    resized = np.einsum("ip,pqd,jq->ijd", resize, spatial, resize).reshape(1, grid * grid, -1)
    return np.concatenate([pos_1xNxD[:, :1], resized.astype(np.float32)], axis=1)


def _torch_load(file: Path, weights_only: bool = True) -> Any:
    try:
        import torch
    except ImportError as err:
        raise CheckpointError(
            f"reading {file} needs PyTorch (or convert it to .safetensors)"
        ) from err
    try:
        return torch.load(file, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises several types for a refused or corrupt pickle
        hint = (
            " If the file is trusted, convert it once with convert_albef_checkpoint(src, dst, "
            "trust_pickle=True)."
            if weights_only
            else ""
        )
        raise CheckpointError(
            f"cannot read ALBEF checkpoint {file}: {type(err).__name__}: {err}.{hint}"
        ) from err


def _unwrap(obj: Any, file: Path) -> Mapping[str, Any]:
    """The state dict inside a torch checkpoint object (ALBEF saves {"model": state_dict, ...})."""
    for key in ("model", "state_dict"):
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            return obj[key]
    if isinstance(obj, Mapping) and obj and all(hasattr(v, "shape") for v in obj.values()):
        return obj
    keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
    raise CheckpointError(
        f"{file} holds no ALBEF state dict (expected a 'model' entry or a flat dict of tensors); "
        f"found {keys}"
    )


def _resolve(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise CheckpointError(f"ALBEF checkpoint folder {path} has no model.safetensors")
        return path / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"ALBEF checkpoint {path} does not exist")
    return path


def read_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """All tensors of an ALBEF checkpoint as float32 numpy arrays, keyed by ALBEF's names."""
    file = _resolve(path)
    if file.suffix == ".safetensors":
        from safetensors.numpy import load_file

        return {k: np.asarray(v, np.float32) for k, v in load_file(file).items()}
    state = _unwrap(_torch_load(file), file)
    bad = [k for k, v in state.items() if not hasattr(v, "detach")]
    if bad:
        raise CheckpointError(f"{file}: state dict entries that are not tensors: {bad[:5]}")
    return {k: v.detach().float().numpy() for k, v in state.items()}


def convert_albef_checkpoint(
    src: str | Path, dst: str | Path, *, trust_pickle: bool = False
) -> Path:
    """One-time conversion of a torch ALBEF checkpoint to one safetensors file holding the tensors
    the VQA model can use (momentum models, projections and queues are dropped). `trust_pickle`
    allows a full unpickle for a trusted file that weights-only loading refuses."""
    from safetensors.numpy import save_file

    file = _resolve(src)
    state = _unwrap(_torch_load(file, weights_only=not trust_pickle), file)
    tensors = {
        k: v.detach().float().numpy()
        for k, v in state.items()
        if hasattr(v, "detach") and not _ignored(k)
    }
    if not tensors:
        raise CheckpointError(f"{file} has no ALBEF tensors to convert")
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata={"format": "pt", "source": file.name})
    return dst


def to_vqa_layout(
    state: Mapping[str, np.ndarray], config: AlbefConfig
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """(tensors keyed like ALBEF's VQA model, VQA key -> source key) from either layout, with the
    pretraining-only tensors dropped and, for a pretraining checkpoint, the decoder derived."""
    out, source = {}, {}
    for key, value in state.items():
        if _ignored(key):
            continue
        new = re.sub(r"^text_encoder\.bert\.", "text_encoder.", key)
        out[new], source[new] = value, key
    if not any(k.startswith("text_decoder.") for k in out):
        offset = config.encoder_layers - config.decoder_layers
        for key in [k for k in out if k.startswith("text_encoder.")]:
            layer = re.match(r"text_encoder\.encoder\.layer\.(\d+)\.(.*)$", key)
            if layer and int(layer.group(1)) < offset:
                continue
            new = (
                f"text_decoder.bert.encoder.layer.{int(layer.group(1)) - offset}.{layer.group(2)}"
                if layer
                else key.replace("text_encoder.cls.", "text_decoder.cls.").replace(
                    "text_encoder.", "text_decoder.bert.", 1
                )
            )
            out[new], source[new] = out[key], source[key]
        for key in [k for k in out if k.startswith("text_encoder.cls.")]:  # moved to the decoder
            del out[key]
    return out, source


def load_albef_params(
    path: str | Path, params: Mapping[str, Any], config: AlbefConfig, *, load_head: bool = True
) -> dict[str, Any]:
    """`params` (the model's own init: {"albef": …, "head": …}) with the checkpoint's tensors in.

    The head (`text_decoder.cls.predictions.{transform.*, bias}`) is loaded when `load_head`,
    otherwise it keeps its init. Raises CheckpointError naming the file and the first missing /
    unexpected / mis-shaped tensors."""
    file = _resolve(path)
    state, source = to_vqa_layout(read_state_dict(file), config)
    flat, used, missing, bad_shapes = dict(flatten(params)), set(), [], []
    for path_, init in flat.items():
        if re.search(PEFT_PATTERN, path_) or (path_.startswith("head/") and not load_head):
            continue
        name = albef_name(path_)
        if name not in state:
            missing.append(name)
            continue
        value = from_torch(path_, state[name])
        if path_.endswith("visual_encoder/pos_embed"):
            value = interpolate_pos_embed(value, config.grid)
        if value.shape != np.shape(init):
            bad_shapes.append(f"{name}: checkpoint {value.shape} vs model {np.shape(init)}")
        flat[path_] = value.astype(np.asarray(init).dtype)
        used.add(name)
    untied = []
    for alias, target in _TIED.items():
        if alias in state and load_head:
            if target in state and np.array_equal(state[alias], state[target]):
                used.add(alias)
            else:
                untied.append(f"{alias} != {target}")
    skipped = () if load_head else ("text_decoder.cls.",)
    unexpected = sorted(
        {source[k] for k in state if k not in used and not k.startswith(skipped)}
        - {source[k] for k in used}
    )
    if missing or unexpected or bad_shapes or untied:
        raise CheckpointError(
            f"ALBEF checkpoint {file} does not match the model: "
            + "; ".join(
                f"{what} ({len(items)}): {items[:5]}"
                for what, items in (
                    ("missing tensors", missing),
                    ("unexpected tensors", unexpected),
                    ("shape mismatches", bad_shapes),
                    ("untied LM-head tensors", untied),
                )
                if items
            )
        )
    return unflatten(flat)


def save_albef_checkpoint(path: str | Path, params: Mapping[str, Any]) -> None:
    """Writes backbone + head in ALBEF's VQA key layout (tied `cls.predictions.decoder.*` included):
    a `.safetensors` file, or a torch file {"model": state_dict} for any other suffix. PEFT
    parameters are not part of that layout and are skipped."""
    flat = {p: np.asarray(v) for p, v in flatten(params).items() if not re.search(PEFT_PATTERN, p)}
    tensors = {albef_name(p): to_torch(p, v) for p, v in flat.items()}
    if "text_decoder.cls.predictions.bias" in tensors:
        for alias, target in _TIED.items():
            tensors[alias] = tensors[target]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(
            {k: np.ascontiguousarray(v) for k, v in tensors.items()},
            str(path),
            metadata={"format": "pt"},
        )
    else:
        import torch

        torch.save({"model": {k: torch.from_numpy(np.array(v)) for k, v in tensors.items()}}, path)
