"""Input preparation: pipeline batches -> model inputs, and the text/image preprocessors.

Images travel through the data pipeline as uint8 (4x smaller than float32) and are normalised on
device by `to_model_inputs`. The host-side image preprocessor resizes exactly like transformers'
ViltImageProcessor (shorter side, longer side cap, size divisor, PIL bicubic) but pads every image
to ONE static size, so a jitted round compiles once; the pixel mask says which pixels are real.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from PIL import Image

ImagePreprocessor = Callable[[Any], tuple[np.ndarray, np.ndarray]]
_MEAN = _STD = 0.5  # ViLT's normalisation


def to_model_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """uint8 `image` [..., H, W, 3] -> float32 `pixel_values` ((x/255 − 0.5) / 0.5); int32 masks and ids.

    Works on numpy or jax arrays, inside jit. Other batch keys (targets, example_mask) are left out.
    """
    pixels = jnp.asarray(batch["image"], jnp.float32) * (1.0 / 255.0)
    return {
        "input_ids": jnp.asarray(batch["input_ids"], jnp.int32),
        "attention_mask": jnp.asarray(batch["attention_mask"], jnp.int32),
        "pixel_values": (pixels - _MEAN) / _STD,
        "pixel_mask": jnp.asarray(batch["pixel_mask"], jnp.int32),
    }


def resize_size(
    height: int, width: int, shortest_edge: int, longest_edge: int, size_divisor: int
) -> tuple[int, int]:
    """ViltImageProcessor's output size: shorter side -> shortest_edge, longer side <= longest_edge,
    both rounded then floored to a multiple of size_divisor."""
    scale = shortest_edge / min(height, width)
    new_h, new_w = (
        (shortest_edge, scale * width) if height < width else (scale * height, shortest_edge)
    )
    if max(new_h, new_w) > longest_edge:
        shrink = longest_edge / max(new_h, new_w)
        new_h, new_w = shrink * new_h, shrink * new_w
    new_h, new_w = int(new_h + 0.5), int(new_w + 0.5)
    return new_h // size_divisor * size_divisor, new_w // size_divisor * size_divisor


def make_image_preprocessor(
    shortest_edge: int = 384,
    longest_edge: int | None = None,
    size_divisor: int = 32,
    pad_to: tuple[int, int] | None = None,
) -> ImagePreprocessor:
    """Returns f(image) -> (uint8 [pad_h, pad_w, 3] image, uint8 [pad_h, pad_w] pixel mask).

    `longest_edge` defaults to ViltImageProcessor's int(1333 / 800 · shortest_edge) (639 for 384).
    `pad_to` defaults to a square that holds any resized image; a smaller pad (e.g. (384, 640))
    saves compute, and images that would not fit are shrunk further (keeping their aspect ratio) —
    the only place where we depart from ViltImageProcessor.
    """
    longest = longest_edge or int(1333 / 800 * shortest_edge)
    pad_h, pad_w = pad_to or (longest // size_divisor * size_divisor,) * 2

    def preprocess(image: Any) -> tuple[np.ndarray, np.ndarray]:
        pil = (
            image
            if isinstance(image, Image.Image)
            else Image.fromarray(np.asarray(image, np.uint8))
        )
        pil = pil.convert("RGB")
        new_h, new_w = resize_size(pil.height, pil.width, shortest_edge, longest, size_divisor)
        if new_h > pad_h or new_w > pad_w:
            fit = min(pad_h / new_h, pad_w / new_w)
            new_h, new_w = (
                max(size_divisor, int(s * fit) // size_divisor * size_divisor)
                for s in (new_h, new_w)
            )
        resized = np.asarray(
            pil.resize((new_w, new_h), resample=Image.Resampling.BICUBIC), np.uint8
        )
        out = np.zeros((pad_h, pad_w, 3), np.uint8)
        mask = np.zeros((pad_h, pad_w), np.uint8)
        out[:new_h, :new_w] = resized
        mask[:new_h, :new_w] = 1
        return out, mask

    return preprocess


def load_processors(
    folder: str | Path, pad_to: tuple[int, int] | None = None
) -> tuple[Any, ImagePreprocessor]:
    """(BertTokenizerFast from the folder, image preprocessor). A preprocessor_config.json in the
    folder sets shortest_edge and size_divisor; its mean/std must be ViLT's 0.5 because
    `to_model_inputs` normalises with those."""
    from transformers import BertTokenizerFast

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"processor folder {folder} does not exist")
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    settings: dict[str, Any] = {}
    config_file = folder / "preprocessor_config.json"
    if config_file.is_file():
        settings = json.loads(config_file.read_text())
        for key in ("image_mean", "image_std"):
            if any(abs(v - 0.5) > 1e-6 for v in settings.get(key, [0.5])):
                raise ValueError(
                    f"{config_file}: {key}={settings[key]} but ViLT inputs are normalised with 0.5"
                )
    shortest = settings.get("size", {}).get("shortest_edge", 384)
    return tokenizer, make_image_preprocessor(
        shortest, None, settings.get("size_divisor", 32), pad_to
    )
