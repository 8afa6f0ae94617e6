"""Pretrain the demo's tiny ViLT on the embedded world, as ViLT itself was pretrained: MLM + ITM.

FedDAT finetunes a *foundation* model; a random backbone would make the demo meaningless. So the
project pretrains its own tiny ViLT on a pooled, non-federated corpus of the embedded world (every
family's generator, with a seed the demo never uses), with ViLT's two objectives:

* masked language modelling (MLM) on "question answer" text: 15% of the words are masked, and the
  answer words are masked half of the time, which forces the model to look at the image;
* image-text matching (ITM): half of the pairs get another example's image; a head on the pooled
  output says whether they match.

The backbone is saved in the transformers ViltModel layout (config.json + model.safetensors) with
its BERT word-piece vocabulary (vocab.txt), so the demo loads it through the same code path as the
real ``dandelin/vilt-b32-mlm`` checkpoint. ``configs/pretrain_tiny_vilt.py`` reruns it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from tqdm import tqdm

from feddat_jax.data import embedded
from feddat_jax.data.client_store import decode_image
from feddat_jax.models.inputs import to_model_inputs
from feddat_jax.models.vilt import ViltConfig, ViltModel
from feddat_jax.models.vilt_checkpoint import save_vilt_checkpoint

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
FAMILIES = ("domain", "function", "scene", "task")


class PretrainViLT(nn.Module):
    """The backbone plus the two pretraining heads (discarded after pretraining)."""

    config: ViltConfig

    @nn.compact
    def __call__(self, inputs):
        seq_BxTxD, pooled_BxD = ViltModel(self.config, name="vilt")(inputs)
        text_BxLxD = seq_BxTxD[:, : inputs["input_ids"].shape[1]]
        h = nn.LayerNorm(name="mlm_norm")(
            nn.gelu(nn.Dense(self.config.hidden_size, name="mlm_dense")(text_BxLxD))
        )
        mlm_BxLxV = nn.Dense(self.config.vocab_size, name="mlm_out")(h)
        itm_Bx2 = nn.Dense(2, name="itm")(pooled_BxD)
        return mlm_BxLxV, itm_Bx2


def build_corpus(cfg: ml_collections.ConfigDict) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Pooled (text, image, pixel mask) of every family's clients, with the pretraining seed."""
    texts, images, masks = [], [], []
    for family in FAMILIES:
        bench = embedded.make_benchmark(
            family,
            image_size=cfg.image_size,
            seed=cfg.corpus_seed,
            train_per_client=cfg.examples_per_client,
            test_per_client=1,
            patch_size=cfg.patch_size,
        )
        for client in bench.clients:
            for ex in client.train:
                answer = max(ex.answers, key=ex.answers.get)
                texts.append(f"{ex.question} {answer}")
                image, mask = decode_image(ex.image, cfg.image_size, cfg.image_size)
                images.append(image)
                masks.append(mask)
    return texts, np.stack(images), np.stack(masks)


def build_tokenizer(texts: list[str], folder: Path):
    """A BERT word-piece tokenizer whose vocabulary is the corpus' whole words."""
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import BertTokenizerFast

    split = BertPreTokenizer().pre_tokenize_str
    words = sorted({w for t in texts for w, _ in split(t.lower())})
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(words))}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


def mask_tokens(
    rng: np.random.Generator,
    ids_BxL: np.ndarray,
    answer_start_B: np.ndarray,
    mask_id: int,
    rate: float,
) -> tuple[np.ndarray, np.ndarray]:
    """(masked ids, MLM labels with -1 where not masked): random words + the answer half the time."""
    pos = np.arange(ids_BxL.shape[1])[None]
    real = (ids_BxL > 3) & (ids_BxL != mask_id)  # not [PAD]/[UNK]/[CLS]/[SEP]
    answer = (pos >= answer_start_B[:, None]) & real & (rng.random(len(ids_BxL)) < 0.5)[:, None]
    chosen = (real & (rng.random(ids_BxL.shape) < rate)) | answer
    labels = np.where(chosen, ids_BxL, -1)
    return np.where(chosen, mask_id, ids_BxL), labels


def pretrain(cfg: ml_collections.ConfigDict, out_dir: str | Path) -> dict:
    """Pretrain and save the backbone into ``out_dir``; returns the provenance record."""
    out = Path(out_dir)
    t0 = time.time()
    texts, images, pixel_masks = build_corpus(cfg)
    tokenizer = build_tokenizer(texts, out)
    enc = tokenizer(
        texts,
        padding="max_length",
        truncation=True,
        max_length=cfg.max_text_len,
        return_tensors="np",
    )
    ids = enc["input_ids"].astype(np.int32)
    # the answer is the text's last word: its first position is just before [SEP]
    answer_start = enc["attention_mask"].sum(1) - 2
    config = ViltConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=4 * cfg.hidden_size,
        vocab_size=len(tokenizer),
        max_position_embeddings=cfg.max_text_len,
        patch_size=cfg.patch_size,
        image_size=cfg.image_size,
    )
    model = PretrainViLT(config)
    mask_id = tokenizer.convert_tokens_to_ids("[MASK]")
    rng = np.random.default_rng(cfg.seed)

    def batch_at(step_rng: np.random.Generator) -> dict:
        idx = step_rng.choice(len(texts), cfg.batch_size, replace=False)
        swap = step_rng.random(cfg.batch_size) < 0.5
        img_idx = np.where(swap, step_rng.choice(len(texts), cfg.batch_size), idx)
        matched = (img_idx == idx) | ~swap
        masked, labels = mask_tokens(step_rng, ids[idx], answer_start[idx], mask_id, cfg.mask_rate)
        return {
            "input_ids": masked,
            "attention_mask": enc["attention_mask"][idx].astype(np.int32),
            "image": images[img_idx],
            "pixel_mask": pixel_masks[img_idx],
            "mlm_labels": labels,
            "itm_labels": matched.astype(np.int32),
        }

    def loss_fn(params, batch):
        mlm, itm = model.apply({"params": params}, to_model_inputs(batch))
        labels = batch["mlm_labels"]
        # MLM only on pairs that match: a swapped image cannot tell the answer
        weight = (labels >= 0) & (batch["itm_labels"][:, None] == 1)
        logp = jax.nn.log_softmax(mlm)
        nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
        mlm_loss = jnp.sum(nll * weight) / jnp.maximum(weight.sum(), 1)
        mlm_acc = jnp.sum((mlm.argmax(-1) == labels) * weight) / jnp.maximum(weight.sum(), 1)
        itm_loss = optax.softmax_cross_entropy_with_integer_labels(itm, batch["itm_labels"]).mean()
        itm_acc = jnp.mean(itm.argmax(-1) == batch["itm_labels"])
        return mlm_loss + itm_loss, {
            "mlm_loss": mlm_loss,
            "itm_loss": itm_loss,
            "mlm_acc": mlm_acc,
            "itm_acc": itm_acc,
        }

    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, cfg.steps // 10, cfg.steps
    )
    tx = optax.adamw(schedule, weight_decay=0.01)
    params = jax.jit(model.init)(jax.random.key(cfg.seed), to_model_inputs(batch_at(rng)))["params"]
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    history = []
    for s in tqdm(range(cfg.steps), desc="pretrain", dynamic_ncols=True):
        params, opt_state, metrics = step(params, opt_state, batch_at(rng))
        if (s + 1) % cfg.log_every == 0:
            history.append({"step": s + 1, **{k: float(v) for k, v in metrics.items()}})
    save_vilt_checkpoint(out, {"vilt": params["vilt"]}, config)
    provenance = {
        "what": "tiny ViLT backbone pretrained by feddat_jax on the embedded world",
        "objectives": "MLM (15% words + answer words half the time) + ITM",
        "config": json.loads(cfg.to_json()),
        "corpus_examples": len(texts),
        "vocab_size": len(tokenizer),
        "parameters": int(sum(x.size for x in jax.tree.leaves(params["vilt"]))),
        "seconds": round(time.time() - t0, 1),
        "final": history[-1] if history else {},
        "history": history,
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2))
    return provenance
