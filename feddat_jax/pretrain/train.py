"""Pretrain the demo's tiny ViLT on the embedded world: MLM + ITM + region labels + image QA.

FedDAT finetunes a *foundation* model; a backbone that does not see the images would make every
comparison meaningless. So the project pretrains its own tiny ViLT on a pooled corpus of the
embedded world (``pretrain.corpus``: its own scenes, every image style, the standard naming
convention) with ViLT's two objectives, on two kinds of text:

* captions (``embedded_captions``): masked language modelling of the caption's content words
  (colours, shapes, sizes, digits, counts, positions: each must be read off the image) and
  image-text matching against a random other image or a caption with one fact changed (the hard
  negatives that make ITM accuracy a measure of seeing);
* question-answer texts: MLM, with the answer masked half the time (this teaches the words of
  the questions, as a real model's pretraining text would);
* image question answering on the pooled output (the question alone in, the answer out of the
  corpus' answer list), as LXMERT pretrains with VQA-style data: the downstream heads read only
  the pooled token, and without this objective nothing teaches it to carry the answer (the v2
  backbone, trained without it, let adapters memorise but not generalise: docs/BENCHMARK.md).
  ``qa_share`` of each batch; its head is discarded like the others.

The backbone is saved in the transformers ViltModel layout (config.json + model.safetensors) with
its word-level BERT vocabulary (vocab.txt), so the benchmarks load it through the same code path
as ``dandelin/vilt-b32-mlm``. ``provenance.json`` records the config, the held-out scores during
training, and the time. ``configs/pretrain_tiny_vilt.py`` reruns it.
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

from feddat_jax.cli.validate import check_pretrain_stage
from feddat_jax.data.embedded_captions import MAYBE, TARGET, caption
from feddat_jax.data.embedded_lexicon import field_vocabulary
from feddat_jax.models.inputs import to_model_inputs
from feddat_jax.models.vilt import ViltConfig, ViltModel, VqaHead
from feddat_jax.models.vilt_checkpoint import load_vilt_params, save_vilt_checkpoint
from feddat_jax.pretrain.corpus import Corpus, build_corpus, corpus_texts

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_PUNCTUATION = {".", ",", ":", "?", ")", "("}


REGION_CLASSES = {"shape": 7, "colour": 6, "size": 2, "digit": 10}


class PretrainViLT(nn.Module):
    """The backbone plus the pretraining heads (discarded after pretraining): MLM on the text
    tokens, ITM on the pooled output, region labels (what each grid cell holds) on the image
    tokens of each cell, and image QA on the pooled output (the downstream VqaHead's shape)."""

    config: ViltConfig
    num_answers: int

    @nn.compact
    def __call__(self, inputs):
        seq_BxTxD, pooled_BxD = ViltModel(self.config, name="vilt")(inputs)
        L, D = inputs["input_ids"].shape[1], self.config.hidden_size
        h = nn.LayerNorm(name="mlm_norm")(nn.gelu(nn.Dense(D, name="mlm_dense")(seq_BxTxD[:, :L])))
        mlm_BxLxV = nn.Dense(self.config.vocab_size, name="mlm_out")(h)
        itm_Bx2 = nn.Dense(2, name="itm")(pooled_BxD)
        # image tokens: [image cls] + gh x gw patches in raster order; mean over each 2x2-grid cell
        B, g = seq_BxTxD.shape[0], inputs["pixel_values"].shape[1] // self.config.patch_size
        patches = seq_BxTxD[:, L + 1 :].reshape(B, 2, g // 2, 2, g // 2, D)
        cells_Bx4xD = patches.mean(axis=(2, 4)).reshape(B, 4, D)
        r = nn.LayerNorm(name="region_norm")(nn.gelu(nn.Dense(D, name="region_dense")(cells_Bx4xD)))
        regions = {k: nn.Dense(n, name=f"region_{k}")(r) for k, n in REGION_CLASSES.items()}
        qa_BxA = VqaHead(self.num_answers, name="qa")(pooled_BxD)
        return mlm_BxLxV, itm_Bx2, regions, qa_BxA


def build_tokenizer(texts: list[str], folder: Path, unused_words: tuple[str, ...] = ()):
    """A BERT tokenizer whose vocabulary is the corpus' whole words (one token per word) plus
    ``unused_words``: words the corpus never uses, whose embeddings pretraining never trains (the
    benchmark's field terms, ``embedded_lexicon.field_vocabulary``)."""
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import BertTokenizerFast

    split = BertPreTokenizer().pre_tokenize_str
    words = sorted({w for t in texts for w, _ in split(t.lower())} | set(unused_words))
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + tuple(words))}
    tokenizer = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


class BatchMaker:
    """Pretraining batches from a corpus; batch ``step`` is a pure function of (seed, step).

    ``caption_share`` of a batch are captions (ITM: half matched, a quarter with another
    scene's image, a quarter with one fact changed; MLM on matched captions: the target fact
    always, the other content words 15% of the time), ``qa_share`` are questions alone whose
    answer (its index in ``answers``) the pooled output must give, the rest question-answer
    texts (MLM; the answer masked half the time, 15% of the other words).
    """

    def __init__(
        self,
        corpus: Corpus,
        tokenizer,
        max_len: int,
        seed: int,
        batch_size: int,
        answers: list[str],
        caption_share: float = 0.5,
        qa_share: float = 0.3,
    ):
        self.corpus, self.tok, self.max_len = corpus, tokenizer, max_len
        self.seed, self.batch_size = seed, batch_size
        self.answer_index = {a: i for i, a in enumerate(answers)}
        self.num_captions = round(caption_share * batch_size)
        self.num_qa = round(qa_share * batch_size)
        self.mask_id = tokenizer.convert_tokens_to_ids("[MASK]")
        punct = [tokenizer.convert_tokens_to_ids(p) for p in _PUNCTUATION if p in tokenizer.vocab]
        self.no_mask = np.array(sorted(set(range(len(SPECIAL_TOKENS))) | set(punct)))

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tok(
            texts,
            padding="max_length",
            truncation=True,
            max_length=self.max_len,
            return_tensors="np",
        )
        return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)

    def captions(
        self, rng: np.random.Generator, n: int, maybe_rate: float = 0.15
    ) -> dict[str, np.ndarray]:
        scenes = rng.choice(len(self.corpus.scenes), n)
        kind = rng.choice(3, n, p=[0.5, 0.25, 0.25])  # 0 matched, 1 other image, 2 false caption
        other = (scenes + 1 + rng.choice(len(self.corpus.scenes) - 1, n)) % len(self.corpus.scenes)
        captions = [
            caption(self.corpus.scenes[s], rng, truthful=k != 2) for s, k in zip(scenes, kind)
        ]
        ids, attn = self._encode([c.text for c in captions])
        # one token per word (the vocabulary is the corpus' words): word i is token i + 1
        roles = np.zeros(ids.shape, np.int64)
        for row, c in enumerate(captions):
            roles[row, 1 : 1 + len(c.roles)] = c.roles[: ids.shape[1] - 1]
        chosen = (roles == TARGET) | ((roles == MAYBE) & (rng.random(ids.shape) < maybe_rate))
        matched = kind == 0
        return self._with_cells(
            {
                # every caption is masked alike (a mask must not tell a matched pair from a
                # mismatched one); only matched pairs are scored, as a wrong image cannot tell the word
                "input_ids": np.where(chosen, self.mask_id, ids),
                "attention_mask": attn,
                "image": self.corpus.images[np.where(kind == 1, other, scenes)],
                "mlm_labels": np.where(chosen & matched[:, None], ids, -1),
                "itm_labels": matched.astype(np.int32),
                "itm_weight": np.ones(n, np.float32),
                "qa_labels": np.full(n, -1, np.int32),
                "kind": kind,
            },
            np.where(kind == 1, other, scenes),
        )

    def questions(
        self, rng: np.random.Generator, n: int, answer_rate: float = 0.5, other_rate: float = 0.15
    ) -> dict[str, np.ndarray]:
        scenes, pairs = self._question_pairs(rng, n)
        ids, attn = self._encode([f"{q} {a}" for q, a in pairs])
        answer_len = [len(self.tok.tokenize(a)) for _, a in pairs]
        end = attn.sum(1) - 1  # the [SEP] position
        pos = np.arange(ids.shape[1])[None]
        answer = (pos >= (end - np.array(answer_len))[:, None]) & (pos < end[:, None])
        real = (attn == 1) & ~np.isin(ids, self.no_mask)
        chosen = (answer & (rng.random(n) < answer_rate)[:, None]) | (
            real & ~answer & (rng.random(ids.shape) < other_rate)
        )
        return self._with_cells(
            {
                "input_ids": np.where(chosen, self.mask_id, ids),
                "attention_mask": attn,
                "image": self.corpus.images[scenes],
                "mlm_labels": np.where(chosen, ids, -1),
                "itm_labels": np.ones(n, np.int32),
                "itm_weight": np.zeros(n, np.float32),
                "qa_labels": np.full(n, -1, np.int32),
                "kind": np.full(n, 3),
            },
            scenes,
        )

    def answering(self, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
        """Questions alone, labelled with their answer's index (-1 for an answer outside the list,
        which only a held-out corpus can have)."""
        scenes, pairs = self._question_pairs(rng, n)
        ids, attn = self._encode([q for q, _ in pairs])
        return self._with_cells(
            {
                "input_ids": ids,
                "attention_mask": attn,
                "image": self.corpus.images[scenes],
                "mlm_labels": np.full(ids.shape, -1, ids.dtype),
                "itm_labels": np.ones(n, np.int32),
                "itm_weight": np.zeros(n, np.float32),
                "qa_labels": np.array([self.answer_index.get(a, -1) for _, a in pairs], np.int32),
                "kind": np.full(n, 4),
            },
            scenes,
        )

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, step])
        rest = self.batch_size - self.num_captions - self.num_qa
        parts = [self.captions(rng, self.num_captions)]
        if self.num_qa:  # stage 1 draws exactly what it drew before this objective existed
            parts.append(self.answering(rng, self.num_qa))
        parts.append(self.questions(rng, rest))
        batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        batch["pixel_mask"] = np.ones(batch["image"].shape[:3], np.uint8)
        return batch

    def _question_pairs(
        self, rng: np.random.Generator, n: int
    ) -> tuple[np.ndarray, list[tuple[str, str]]]:
        """``n`` random scenes and one of each scene's (question, answer) texts."""
        scenes = rng.choice(len(self.corpus.scenes), n)
        return scenes, [
            self.corpus.qa[s][int(rng.integers(len(self.corpus.qa[s])))] for s in scenes
        ]

    def _with_cells(self, batch: dict, scene_of_image: np.ndarray) -> dict:
        """The region labels of each example's image (its own scene's, or the other scene's)."""
        for key, labels in self.corpus.cells.items():
            batch[f"cell_{key}"] = labels[scene_of_image]
        return batch


def _region_loss(regions: dict, batch: dict) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy over the labelled (cell, attribute) pairs; shape accuracy."""
    total, count = 0.0, 0.0
    for key, logits in regions.items():
        labels = batch[f"cell_{key}"]
        w = labels >= 0
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
        total, count = total + jnp.sum(nll * w), count + jnp.sum(w)
    shape_acc = jnp.mean(regions["shape"].argmax(-1) == batch["cell_shape"])
    return total / jnp.maximum(count, 1), shape_acc


def _losses(model, params, batch):
    mlm, itm, regions, qa = model.apply({"params": params}, to_model_inputs(batch))
    labels = batch["mlm_labels"]
    weight = labels >= 0
    logp = jax.nn.log_softmax(mlm)
    nll = -jnp.take_along_axis(logp, jnp.maximum(labels, 0)[..., None], -1)[..., 0]
    n_mlm = jnp.maximum(weight.sum(), 1)
    itm_w = batch["itm_weight"]
    itm_nll = optax.softmax_cross_entropy_with_integer_labels(itm, batch["itm_labels"])
    n_itm = jnp.maximum(itm_w.sum(), 1)
    metrics = {
        "mlm_loss": jnp.sum(nll * weight) / n_mlm,
        "mlm_acc": jnp.sum((mlm.argmax(-1) == labels) * weight) / n_mlm,
        "itm_loss": jnp.sum(itm_nll * itm_w) / n_itm,
        "itm_acc": jnp.sum((itm.argmax(-1) == batch["itm_labels"]) * itm_w) / n_itm,
    }
    metrics["region_loss"], metrics["region_shape_acc"] = _region_loss(regions, batch)
    qa_labels = batch["qa_labels"]
    qa_w = qa_labels >= 0
    qa_nll = optax.softmax_cross_entropy_with_integer_labels(qa, jnp.maximum(qa_labels, 0))
    n_qa = jnp.maximum(qa_w.sum(), 1)
    metrics["qa_loss"] = jnp.sum(qa_nll * qa_w) / n_qa
    metrics["qa_acc"] = jnp.sum((qa.argmax(-1) == qa_labels) * qa_w) / n_qa
    total = metrics["mlm_loss"] + metrics["itm_loss"] + metrics["region_loss"] + metrics["qa_loss"]
    return total, metrics


def held_out_scores(model, params, maker: BatchMaker, num_batches: int = 8) -> dict[str, float]:
    """On held-out scenes (``maker``'s corpus): ITM accuracy on matched captions, against another
    scene's image and against a one-fact-changed caption; MLM accuracy of masked caption words and
    of masked answers; the pooled output's answers to questions alone (``qa_acc``)."""
    apply = jax.jit(lambda p, x: model.apply({"params": p}, to_model_inputs(x)))
    hits: dict[str, list] = {}
    for b in range(num_batches):
        rng = np.random.default_rng([maker.seed, b])
        batches = {  # only the target fact of a caption, only the answer of a question
            "caption": maker.captions(rng, 64, maybe_rate=0.0),
            "answer": maker.questions(rng, 64, answer_rate=1.0, other_rate=0.0),
            "qa": maker.answering(rng, 64),
        }
        for name, batch in batches.items():
            batch["pixel_mask"] = np.ones(batch["image"].shape[:3], np.uint8)
            mlm, itm, regions, qa = jax.device_get(apply(params, batch))
            if name == "qa":
                hits.setdefault("qa_acc", []).extend(qa.argmax(-1) == batch["qa_labels"])
                continue
            w = batch["mlm_labels"] >= 0
            hits.setdefault(f"mlm_acc_{name}", []).extend(
                (mlm.argmax(-1) == batch["mlm_labels"])[w]
            )
            shape_hit = regions["shape"].argmax(-1) == batch["cell_shape"]
            hits.setdefault("region_shape_acc", []).extend(shape_hit.reshape(-1))
            if name == "caption":
                right = itm.argmax(-1) == batch["itm_labels"]
                for k, kind in enumerate(("matched", "random_image", "changed_fact")):
                    hits.setdefault(f"itm_acc_{kind}", []).extend(right[batch["kind"] == k])
    return {k: round(float(np.mean(v)), 4) for k, v in hits.items() if v}


def pretrain(cfg: ml_collections.ConfigDict, out_dir: str | Path) -> dict:
    """Pretrain and save the backbone into ``out_dir``; returns the provenance record."""
    out = Path(out_dir)
    check_pretrain_stage(cfg)
    t0 = time.time()
    corpus = build_corpus(cfg.num_scenes, cfg.image_size, cfg.corpus_seed)
    held_out = build_corpus(cfg.held_out_scenes, cfg.image_size, cfg.corpus_seed + 1)
    texts = corpus_texts(corpus, np.random.default_rng(cfg.corpus_seed))
    tokenizer = build_tokenizer(texts, out, field_vocabulary())
    corpus_seconds = time.time() - t0
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
    answers = sorted({a for pairs in corpus.qa for _, a in pairs})
    model = PretrainViLT(config, num_answers=len(answers))
    shares = {"caption_share": cfg.caption_share, "qa_share": cfg.qa_share}
    maker = BatchMaker(
        corpus, tokenizer, cfg.max_text_len, cfg.seed, cfg.batch_size, answers, **shares
    )
    eval_maker = BatchMaker(
        held_out, tokenizer, cfg.max_text_len, cfg.seed + 1, cfg.batch_size, answers, **shares
    )
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, cfg.steps // 20, cfg.steps
    )
    tx = optax.adamw(schedule, weight_decay=0.01)
    params = jax.jit(model.init)(jax.random.key(cfg.seed), to_model_inputs(maker(0)))["params"]
    earlier = {}
    if cfg.init_from:  # a second stage: the backbone continues, the pretraining heads restart
        params = {
            **params,
            "vilt": load_vilt_params(cfg.init_from, {"vilt": params["vilt"]})["vilt"],
        }
        earlier = json.loads((Path(cfg.init_from) / "provenance.json").read_text())
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        grads, metrics = jax.grad(lambda p: _losses(model, p, batch), has_aux=True)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    history, train_start = [], time.time()
    for s in tqdm(range(cfg.steps), desc="pretrain", dynamic_ncols=True):
        params, opt_state, metrics = step(params, opt_state, maker(s + 1))
        if (s + 1) % cfg.log_every == 0 or s + 1 == cfg.steps:
            row = {"step": s + 1, **{k: round(float(v), 4) for k, v in metrics.items()}}
            row["held_out"] = held_out_scores(model, params, eval_maker)
            row["seconds"] = round(time.time() - train_start, 1)
            history.append(row)
            tqdm.write(json.dumps(row))
    save_vilt_checkpoint(out, {"vilt": params["vilt"]}, config)
    provenance = {
        "what": "tiny ViLT backbone pretrained by feddat_jax on the embedded world",
        "objectives": "MLM (caption content words; QA texts, answer masked half the time) + ITM "
        "(captions vs another image or a one-fact-changed caption) + region labels (each grid "
        "cell's shape, colour, size, digit) + image QA on the pooled output (question alone in)",
        "config": json.loads(cfg.to_json()),
        "init_from": earlier.get("config")
        and {
            "config": earlier["config"],
            "seconds": earlier.get("seconds"),
            "final": earlier.get("final"),
        },
        "corpus_scenes": len(corpus.scenes),
        "vocab_size": len(tokenizer),
        "parameters": int(sum(x.size for x in jax.tree.leaves(params["vilt"]))),
        "corpus_seconds": round(corpus_seconds, 1),
        "seconds": round(time.time() - t0, 1),
        "total_seconds": round(
            time.time() - t0 + (earlier.get("total_seconds") or earlier.get("seconds") or 0), 1
        ),
        "final": history[-1] if history else {},
        "history": history,
    }
    (out / "provenance.json").write_text(json.dumps(provenance, indent=2))
    return provenance
