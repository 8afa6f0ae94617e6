"""Backbones by name (``config.model.name``): the model, its initial parameters, its input prep.

    backbone = build_backbone(config, peft, num_answers, encoder)
    model, params, inputs_fn, patch_size = backbone

``vilt``  ViltVQA; ``inputs_fn`` = models.inputs.to_model_inputs; the head is a new classifier
          per client (never loaded from the checkpoint).
``albef`` AlbefVQA; ``inputs_fn`` = models.albef.to_albef_inputs, which needs each client's
          answer list in the batch (:func:`answer_lists`, [N, A, La]); the head is the decoder's
          LM head, loaded with the backbone. Square images (``model.image_hw`` = (s, s)).

Without ``model.checkpoint`` the backbone is randomly initialised at ``model.size`` ("tiny" for
tests and smoke runs, "base" for the full architecture), with a word vocabulary of the benchmark.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from feddat_jax.data.records import ClientSplit, FederatedBenchmark
from feddat_jax.data.tokenize import (
    CLS,
    SEP,
    HFTokenizerEncoder,
    TextEncoder,
    WordVocabEncoder,
    words,
)
from feddat_jax.errors import CheckpointError, ConfigError
from feddat_jax.models.albef import AlbefConfig, AlbefVQA, example_inputs, to_albef_inputs
from feddat_jax.models.albef_checkpoint import load_albef_params
from feddat_jax.models.answer_ranking import tokenize_answers
from feddat_jax.models.inputs import to_model_inputs
from feddat_jax.models.vilt import ViltConfig, ViltVQA
from feddat_jax.models.vilt_checkpoint import load_vilt_params, read_vilt_config
from feddat_jax.peft.config import PeftConfig

PyTree = Any
MODEL_NAMES = ("vilt", "albef")
MODEL_SIZES = ("tiny", "base")
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ANSWER_KEYS = ("answer_input_ids", "answer_attention_mask")


class Backbone(NamedTuple):
    model: Any  # a Flax module: apply(params, inputs, adapter_mode)
    params: PyTree  # backbone + PEFT + head, pretrained where loaded (init of config.seed)
    inputs_fn: Callable[[dict], dict]  # pipeline batch -> model inputs (inside jit)
    patch_size: int
    # params of another seed (a sweep's replicas): the same jitted init, the checkpoint loaded
    init: Callable[[int], PyTree] | None = None


def choice(value: str, allowed, key: str) -> str:
    if value not in allowed:
        raise ConfigError(
            f"{value!r} is not a valid {key}", f"config.{key}", f"choose one of {tuple(allowed)}"
        )
    return value


def model_name(config: ml_collections.ConfigDict) -> str:
    return choice(config.model.name, MODEL_NAMES, "model.name")


def patch_size(config: ml_collections.ConfigDict) -> int:
    """The backbone's patch size (the embedded benchmark draws images in multiples of it)."""
    if model_name(config) == "albef":
        return albef_config(config, vocab_size=1).patch_size
    if config.model.checkpoint:
        return read_vilt_config(config.model.checkpoint).patch_size
    size = choice(config.model.size, MODEL_SIZES, "model.size")
    return (ViltConfig.tiny() if size == "tiny" else ViltConfig()).patch_size


# ---------------------------------------------------------------------------------------------
# text: question encoder and (ALBEF) per-client answer lists
# ---------------------------------------------------------------------------------------------
def _tokenizer_folder(config: ml_collections.ConfigDict) -> str:
    """ViLT: the HF checkpoint folder. ALBEF: ``model.tokenizer`` (a BERT folder with vocab.txt),
    else the checkpoint when it is a folder."""
    folder = config.model.get("tokenizer", "")
    if folder or model_name(config) == "vilt" or Path(config.model.checkpoint).is_dir():
        return folder or config.model.checkpoint
    raise ConfigError(
        f"ALBEF checkpoint {config.model.checkpoint!r} is a file and carries no tokenizer",
        "config.model.tokenizer",
        "set --config.model.tokenizer=PATH/bert-base-uncased (a folder with vocab.txt)",
    )


def text_encoder(config: ml_collections.ConfigDict, benchmark: FederatedBenchmark) -> TextEncoder:
    """The checkpoint's own tokenizer, or (random-init model) a word vocabulary of the benchmark:
    its train questions, plus (ALBEF, which spells answers with it) every client's answers."""
    if config.model.checkpoint:
        return HFTokenizerEncoder(_tokenizer_folder(config))
    if model_name(config) == "albef":
        return WordVocabEncoder.from_texts(
            [ex.question for c in benchmark.clients for ex in c.train]
            + [a for c in benchmark.clients for a in c.answers]
        )
    return WordVocabEncoder.from_benchmark(benchmark)


class _WordTokenizer:
    """A WordVocabEncoder behind the HF call ``tok(texts, add_special_tokens=True)["input_ids"]``
    that ``tokenize_answers`` uses; a trailing literal "[SEP]" (ALBEF's answer eos) is one token."""

    def __init__(self, encoder: WordVocabEncoder):
        self.encoder = encoder

    def __call__(self, texts: Sequence[str], add_special_tokens: bool = True) -> dict:
        index, unk = self.encoder.index, self.encoder.index["[UNK]"]
        rows = []
        for text in texts:
            eos = text.endswith(SEP)
            body = [index.get(w, unk) for w in words(text[: -len(SEP)] if eos else text)]
            body += [index[SEP]] if eos else []
            rows.append([index[CLS], *body, index[SEP]] if add_special_tokens else body)
        return {"input_ids": rows}


def answer_lists(
    config: ml_collections.ConfigDict,
    clients: Sequence[ClientSplit],
    encoder: TextEncoder,
    num_answers: int,
) -> dict[str, np.ndarray]:
    """ALBEF: every client's answer vocabulary tokenized once, ``answer_input_ids`` /
    ``answer_attention_mask`` int32 [N, A, La] (row j = the client's answer j, as its targets;
    all-zero rows pad to A; La = the longest answer of the run). ViLT: {} (a classifier head)."""
    if model_name(config) != "albef":
        return {}
    tokenizer = (
        encoder.tokenizer if isinstance(encoder, HFTokenizerEncoder) else _WordTokenizer(encoder)
    )
    lists = [tokenize_answers(tokenizer, list(c.answers), num_answers=num_answers) for c in clients]
    length = max(ids.shape[1] for ids, _ in lists)
    lists = [
        tokenize_answers(tokenizer, list(c.answers), num_answers=num_answers, length=length)
        for c in clients
    ]
    return {
        "answer_input_ids": np.stack([ids for ids, _ in lists]),
        "answer_attention_mask": np.stack([mask for _, mask in lists]),
    }


def with_answer_lists(
    batch: dict[str, np.ndarray], answers_N: dict[str, np.ndarray], client_ids: Sequence[int]
) -> dict[str, np.ndarray]:
    """``batch`` [C, S, B, ...] plus the C clients' answer lists repeated over S: [C, S, A, La]
    (contiguous host arrays, so the transfer to the device does no host work)."""
    if not answers_N:
        return batch
    ids = np.asarray(client_ids, np.int64)
    steps = batch["example_mask"].shape[1]
    out = dict(batch)
    for key in ANSWER_KEYS:
        rows = answers_N[key][ids][:, None]
        out[key] = np.ascontiguousarray(np.broadcast_to(rows, (len(ids), steps) + rows.shape[2:]))
    return out


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
def vilt_config(config: ml_collections.ConfigDict, vocab_size: int) -> ViltConfig:
    if config.model.checkpoint:
        return read_vilt_config(config.model.checkpoint)
    size = choice(config.model.size, MODEL_SIZES, "model.size")
    base = ViltConfig.tiny() if size == "tiny" else ViltConfig()
    return dataclasses.replace(
        base,
        vocab_size=vocab_size,
        max_position_embeddings=config.model.max_text_len,
        image_size=max(config.model.image_hw),
    )


def albef_config(
    config: ml_collections.ConfigDict, vocab_size: int, answer_len: int = 0
) -> AlbefConfig:
    """ALBEF at ``model.size`` ("base": ViT-B/16 + BERT-base, ALBEF.pth's architecture) and the
    run's square image size. A checkpoint keeps the architecture's vocabulary and positions (its
    tensors must fit them); a random-init model gets the run's word vocabulary."""
    size = choice(config.model.size, MODEL_SIZES, "model.size")
    height, width = config.model.image_hw
    if height != width:
        raise ConfigError(
            "ALBEF resizes every image to a square",
            f"config.model.image_hw={tuple(config.model.image_hw)}",
            "use a square size, e.g. '(384, 384)'",
        )
    base = AlbefConfig.tiny() if size == "tiny" else AlbefConfig()
    if config.model.checkpoint:
        return dataclasses.replace(base, image_size=height)
    positions = max(base.max_position_embeddings, config.model.max_text_len, answer_len)
    return dataclasses.replace(
        base, vocab_size=vocab_size, image_size=height, max_position_embeddings=positions
    )


def _vilt(config, peft: PeftConfig, num_answers: int, encoder: TextEncoder, dtype) -> Backbone:
    model = ViltVQA(vilt_config(config, encoder.vocab_size), peft, num_answers, dtype)
    height, width = config.model.image_hw
    example = {
        "input_ids": np.zeros((1, config.model.max_text_len), np.int32),
        "attention_mask": np.ones((1, config.model.max_text_len), np.int32),
        "image": np.zeros((1, height, width, 3), np.uint8),
        "pixel_mask": np.ones((1, height, width), np.uint8),
    }
    init_fn = jax.jit(lambda r, b: model.init(r, to_model_inputs(b), adapter_mode="none"))

    def init(seed: int) -> PyTree:
        params = init_fn(jax.random.key(seed), example)["params"]
        if config.model.checkpoint:
            params = load_vilt_params(config.model.checkpoint, params, load_head=False)
        return params

    return Backbone(model, init(config.seed), to_model_inputs, model.config.patch_size, init)


def _albef(
    config, peft: PeftConfig, num_answers: int, encoder: TextEncoder, dtype, answer_len: int
) -> Backbone:
    albef = albef_config(config, encoder.vocab_size, answer_len)
    if config.model.checkpoint and encoder.vocab_size != albef.vocab_size:
        raise CheckpointError(
            f"the tokenizer has {encoder.vocab_size} tokens but the ALBEF checkpoint's "
            f"BERT has {albef.vocab_size}: use bert-base-uncased's vocab.txt"
        )
    longest = max(answer_len, config.model.max_text_len)
    if longest > albef.max_position_embeddings:
        raise ConfigError(
            f"texts of {longest} tokens (model.max_text_len or an answer) exceed "
            f"ALBEF's {albef.max_position_embeddings} positions"
        )
    model = AlbefVQA(albef, peft, dtype=dtype)
    example = example_inputs(
        albef,
        batch=1,
        text_len=config.model.max_text_len,
        num_answers=num_answers,
        answer_len=max(answer_len, 2),
    )
    init_fn = jax.jit(lambda r, x: model.init(r, x, adapter_mode="none"))

    def init(seed: int) -> PyTree:
        params = init_fn(jax.random.key(seed), example)["params"]
        if config.model.checkpoint:  # the LM head is ALBEF's own: loaded with the backbone
            params = load_albef_params(config.model.checkpoint, params, albef, load_head=True)
        return params

    return Backbone(model, init(config.seed), to_albef_inputs, albef.patch_size, init)


def build_backbone(
    config: ml_collections.ConfigDict,
    peft: PeftConfig,
    num_answers: int,
    encoder: TextEncoder,
    *,
    answer_len: int = 0,
) -> Backbone:
    """``config.model.name``'s model with its initial params (seeded by ``config.seed``), its input
    prep and patch size. ``answer_len`` (ALBEF) is La of :func:`answer_lists`."""
    dtype = DTYPES[choice(config.model.dtype, DTYPES, "model.dtype")]
    if model_name(config) == "albef":
        return _albef(config, peft, num_answers, encoder, dtype, answer_len)
    return _vilt(config, peft, num_answers, encoder, dtype)
