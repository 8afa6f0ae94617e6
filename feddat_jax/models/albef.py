"""ALBEF for VQA (Li et al. 2021; salesforce/ALBEF models/model_vqa.py) in Flax, with FedDAT's 30
adapter sites and generative answer ranking over each client's answer list.

    image --ViT-B/16--> image tokens --BERT text (6) + fusion (6, cross-attn)--> question states
    candidate answers --BERT decoder (6, causal + cross-attn)--> LM head --> per-candidate scores

Parameter tree (names mirror ALBEF's state dict, see albef_checkpoint.py):
    albef/visual_encoder/{patch_embed, cls_token, pos_embed, blocks_i/..., norm}
    albef/text_encoder/{embeddings, encoder/layer_i/...}     # layers >= text_layers: crossattention
    albef/text_decoder/{embeddings, encoder/layer_i/...}     # every layer: crossattention
    head/{transform/{dense, LayerNorm}, bias}                # the decoder's LM head (private in FedDAT)
Adapter sites (PeftConfig.adapters), 12 + 6 + 6 + 6 = 30 at full size:
    albef/visual_encoder/blocks_i/adapter_{shared,client}          after the MLP residual
    albef/text_{encoder,decoder}/encoder/layer_i/output/adapter_*  inside BertOutput (Pfeiffer)
The LM head's vocabulary projection is the decoder's word-embedding table (tied, as in ALBEF), so
the private head is transform + bias (~0.6M parameters at full size), like the official FedDAT
code's trainable `.cls.` parameters.

Model contract (docs/ARCHITECTURE.md) with two extra inputs:
    logits_BxA = AlbefVQA(config, peft).apply({"params": p}, inputs, adapter_mode="dat")
    inputs: input_ids, attention_mask [B, L]; pixel_values [B, H, W, 3] (ALBEF-normalised, H = W =
    image_size; no pixel mask: ALBEF resizes every image to a square); answer_input_ids,
    answer_attention_mask int32 [A, La] (the client's pre-tokenized answer list, see
    answer_ranking.tokenize_answers).
The answer list is per-client DATA and travels in the batch: the round's cohort batches carry
`answer_input_ids` / `answer_attention_mask` as [C, S, A, La] (the client's list repeated over its
S steps, no batch axis), so the round's vmap over C and scan over S hand each local step the [A, La]
list of its own client. (The FL core's ClientTasks / ClientContext have no field for it.)

Logits: `rank_k == 0` (default, training and evaluation): the sequence log-likelihood of every
candidate, [B, A]; the client's task loss, KD and argmax then run over its answer list exactly as
over ViLT's classifier logits. `rank_k > 0`: ALBEF's evaluation ranking (top-k by first-token
probability, re-ranked by first-token log-prob + sequence log-likelihood), NEG = -1e9 outside the
top-k: for argmax / `answer_ranking.rank_answers` only, not a training signal.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from feddat_jax.models import answer_ranking
from feddat_jax.models.albef_bert import (
    AlbefAnswerDecoder,
    AlbefLMHead,
    AlbefTextEncoder,
)
from feddat_jax.models.albef_vit import ACTIVATIONS, VisionTransformer
from feddat_jax.peft.config import PeftConfig

# ALBEF's image normalisation (CLIP statistics), after a bicubic resize to image_size x image_size.
IMAGE_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_STD = (0.26862954, 0.26130258, 0.27577711)
ANSWER_KEYS = ("answer_input_ids", "answer_attention_mask")


@dataclasses.dataclass(frozen=True)
class AlbefConfig:
    """ALBEF-VQA hyper-parameters (defaults: the released ALBEF, BERT-base + ViT-B/16 at 384 px)."""

    image_size: int = 384
    patch_size: int = 16
    vision_width: int = 768
    vision_layers: int = 12
    vision_heads: int = 12
    vision_mlp_dim: int = 3072
    vision_eps: float = 1e-6
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    text_layers: int = 6  # BERT's fusion_layer: layers below it see only the question
    fusion_layers: int = 6  # num_hidden_layers - fusion_layer: layers with cross-attention
    decoder_layers: int = 6
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"

    def __post_init__(self) -> None:
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"unsupported hidden_act {self.hidden_act!r}; supported: {sorted(ACTIVATIONS)}"
            )
        for width, heads, what in (
            (self.hidden_size, self.num_attention_heads, "hidden_size"),
            (self.vision_width, self.vision_heads, "vision_width"),
        ):
            if width % heads:
                raise ValueError(f"{what} {width} is not a multiple of {heads} heads")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if min(self.vision_layers, self.text_layers, self.fusion_layers, self.decoder_layers) < 0:
            raise ValueError("layer counts must be >= 0")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def encoder_layers(self) -> int:
        return self.text_layers + self.fusion_layers

    @property
    def num_adapter_sites(self) -> int:
        """12 ViT + 6 text + 6 fusion + 6 decoder = 30 at full size."""
        return self.vision_layers + self.encoder_layers + self.decoder_layers

    @classmethod
    def tiny(cls) -> AlbefConfig:
        """A few-thousand-parameter ALBEF for tests: 32 px images, 16 px patches, width 32, and
        distinct layer counts (2 ViT, 1 text, 2 fusion, 1 decoder) so that mix-ups show."""
        return cls(
            image_size=32,
            patch_size=16,
            vision_width=32,
            vision_layers=2,
            vision_heads=4,
            vision_mlp_dim=64,
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            text_layers=1,
            fusion_layers=2,
            decoder_layers=1,
            vocab_size=99,
            max_position_embeddings=32,
        )


class AlbefModel(nn.Module):
    """The frozen backbone ("albef"): `encode` (image + question -> question states) and `decode`
    (candidate answers -> decoder hidden states and the tied word table)."""

    config: AlbefConfig
    peft: PeftConfig = PeftConfig()
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.visual_encoder = VisionTransformer(self.config, self.peft, self.dtype)
        self.text_encoder = AlbefTextEncoder(self.config, self.peft, self.dtype)
        self.text_decoder = AlbefAnswerDecoder(self.config, self.peft, self.dtype)

    def encode(self, inputs: Mapping[str, jax.Array], adapter_mode: str = "none") -> jax.Array:
        image_BxNxE = self.visual_encoder(inputs["pixel_values"], adapter_mode)
        return self.text_encoder(
            inputs["input_ids"], inputs["attention_mask"], image_BxNxE, adapter_mode
        )

    def decode(self, ids_bxAxLa, mask_bxAxLa, q_BxLxD, q_mask_BxL, adapter_mode: str = "none"):
        return self.text_decoder(ids_bxAxLa, mask_bxAxLa, q_BxLxD, q_mask_BxL, adapter_mode)


class AlbefVQA(nn.Module):
    """Backbone "albef" + private LM head "head"; returns float32 per-candidate scores [B, A]."""

    config: AlbefConfig
    peft: PeftConfig = PeftConfig()
    rank_k: int = 0
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(
        self,
        inputs: Mapping[str, jax.Array],
        adapter_mode: str = "none",
        deterministic: bool = True,
    ):
        if self.peft.lora_rank or self.peft.num_text_prompts or self.peft.num_visual_prompts:
            raise ValueError(
                "ALBEF supports adapters only; LoRA and prompt tuning are not implemented for it"
            )
        albef = AlbefModel(self.config, self.peft, self.dtype, name="albef")
        head = AlbefLMHead(self.config, self.dtype, name="head")
        q_mask_BxL = inputs["attention_mask"]
        q_BxLxD = albef.encode(inputs, adapter_mode)
        ids_AxLa = jnp.asarray(inputs["answer_input_ids"], jnp.int32)
        mask_AxLa = jnp.asarray(inputs["answer_attention_mask"], jnp.int32)
        if ids_AxLa.ndim != 2:
            raise ValueError(
                f"answer_input_ids must be one client's answer list [A, La], got {ids_AxLa.shape}"
            )
        A = ids_AxLa.shape[0]
        if self.rank_k == 0 or self.is_initializing():
            h_BxAxLaxD, table_VxD = albef.decode(
                ids_AxLa[None], mask_AxLa[None], q_BxLxD, q_mask_BxL, adapter_mode
            )
            return answer_ranking.sequence_log_likelihood(
                head(h_BxAxLaxD, table_VxD), ids_AxLa, mask_AxLa
            )
        # ALBEF's rank_answer: the start token alone gives the first-token distribution ...
        h_Bx1x1xD, table_VxD = albef.decode(
            ids_AxLa[None, :1, :1],
            jnp.ones((1, 1, 1), jnp.int32),
            q_BxLxD,
            q_mask_BxL,
            adapter_mode,
        )
        first_BxA = answer_ranking.first_token_log_probs(
            head(h_Bx1x1xD, table_VxD)[:, 0, 0], ids_AxLa, mask_AxLa
        )
        # ... the top-k candidates by it are decoded in full and re-ranked.
        top_BxK = answer_ranking.top_k_candidates(first_BxA, min(self.rank_k, A))
        ids_BxKxLa, mask_BxKxLa = ids_AxLa[top_BxK], mask_AxLa[top_BxK]
        h_BxKxLaxD, table_VxD = albef.decode(
            ids_BxKxLa, mask_BxKxLa, q_BxLxD, q_mask_BxL, adapter_mode
        )
        loglik_BxK = answer_ranking.sequence_log_likelihood(
            head(h_BxKxLaxD, table_VxD), ids_BxKxLa, mask_BxKxLa
        )
        scores_BxK = jnp.take_along_axis(first_BxA, top_BxK, axis=1) + loglik_BxK
        valid_BxK = answer_ranking.candidate_valid(mask_BxKxLa)
        return answer_ranking.scatter_scores(
            jnp.where(valid_BxK, scores_BxK, answer_ranking.NEG), top_BxK, A
        )


def to_albef_inputs(batch: Mapping[str, Any]) -> dict[str, Any]:
    """A pipeline batch -> AlbefVQA inputs: uint8 `image` [..., H, W, 3] (already resized to
    image_size x image_size) normalised with ALBEF's mean/std; ids and masks as int32; the answer
    list passed through. Works on numpy or jax arrays, inside jit."""
    pixels = jnp.asarray(batch["image"], jnp.float32) * (1.0 / 255.0)
    out = {
        "input_ids": jnp.asarray(batch["input_ids"], jnp.int32),
        "attention_mask": jnp.asarray(batch["attention_mask"], jnp.int32),
        "pixel_values": (pixels - jnp.asarray(IMAGE_MEAN)) / jnp.asarray(IMAGE_STD),
    }
    missing = [k for k in ANSWER_KEYS if k not in batch]
    if missing:
        raise KeyError(
            f"an ALBEF batch needs the client's answer list {ANSWER_KEYS}; missing {missing}"
        )
    return {**out, **{k: jnp.asarray(batch[k], jnp.int32) for k in ANSWER_KEYS}}


def make_image_preprocessor(image_size: int = 384):
    """f(image) -> (uint8 [image_size, image_size, 3], uint8 all-ones pixel mask): ALBEF's
    `Resize((s, s), BICUBIC)` on a PIL image. Normalisation happens on device (to_albef_inputs)."""
    from PIL import Image

    def preprocess(image: Any) -> tuple[np.ndarray, np.ndarray]:
        pil = (
            image
            if isinstance(image, Image.Image)
            else Image.fromarray(np.asarray(image, np.uint8))
        )
        pil = pil.convert("RGB").resize((image_size, image_size), resample=Image.Resampling.BICUBIC)
        return np.asarray(pil, np.uint8), np.ones((image_size, image_size), np.uint8)

    return preprocess


def example_inputs(
    config: AlbefConfig,
    batch: int = 2,
    text_len: int = 8,
    num_answers: int = 4,
    answer_len: int = 4,
) -> dict[str, jax.Array]:
    """Placeholder inputs of the right shapes and dtypes (for `init` / `eval_shape`)."""
    zeros = functools.partial(jnp.zeros, dtype=jnp.int32)
    ones = functools.partial(jnp.ones, dtype=jnp.int32)
    return {
        "input_ids": zeros((batch, text_len)),
        "attention_mask": ones((batch, text_len)),
        "pixel_values": jnp.zeros((batch, config.image_size, config.image_size, 3), jnp.float32),
        "answer_input_ids": zeros((num_answers, answer_len)),
        "answer_attention_mask": ones((num_answers, answer_len)),
    }
