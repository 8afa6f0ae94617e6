r"""What does the frozen backbone's pooled token carry? A linear probe per question type.

  python -m benchmarks.probe_backbone                                   # the committed tiny ViLT
  python -m benchmarks.probe_backbone --checkpoint runs/tiny_vilt --train 2000 --test 500

Every downstream head (private to its client) reads only the pooled token, and the adapters can
only reshape what the frozen layers pass on. So before any federated run, this asks per question
type of the embedded benchmark: with plenty of data (``--train`` questions, far more than a client
has), how well does a softmax regression on the FROZEN pooled features answer held-out questions
(scenes of the unseen digit half, every domain style)? Three wordings:

* ``common``: the standard convention and the pretrained shapes (what pretraining saw);
* ``field``: the benchmark's world, whose scenes also hold the three field shapes (a chevron, a
  ring and a cross, ``embedded_world.FIELD_SHAPES``, named "delta", "gem", "spark") that
  pretraining never drew or named: the gap the shared adapter has to close from the clients'
  pooled data;
* ``swapped``: the common words in the swapped colour code (``hue`` convention; colour types only):
  the same images and answers as ``common``, worded by a client of that code (its word for each
  colour is the partner hue's). A probe as good here as under ``common`` would mean the frozen
  features serve either code, so a private head could absorb the concept shift on its own.

``majority`` is the most common training answer. Accuracy is exact-match on the single right
answer (not the VQA soft score). Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = Path(__file__).resolve().parent.parent

from feddat_jax.data import embedded_world as world
from feddat_jax.data.embedded import GENERATORS
from feddat_jax.data.embedded_families import DOMAIN_STYLES, VQA_MIX
from feddat_jax.data.embedded_lexicon import CONVENTIONS, HUE, Lexicon
from feddat_jax.models.inputs import to_model_inputs
from feddat_jax.models.vilt import ViltModel
from feddat_jax.models.vilt_checkpoint import load_vilt_params, read_vilt_config
from feddat_jax.train.config_base import TINY_VILT

TEXT_LEN = 24  # the embedded configs' max_text_len


WORDINGS = {
    "common": Lexicon(),
    "field": Lexicon(shape_set=world.BENCHMARK_SHAPES),
    "swapped": Lexicon(convention=CONVENTIONS[1]),  # the hue convention, common words
}


def questions(qtype: str, n: int, part: str, wording: str, image_size: int, seed: int):
    """``n`` (image, question, answer) of one type in one of the ``WORDINGS``, random domain
    style, drawn as the benchmark draws them (``QuestionType.ask``)."""
    gen = GENERATORS[qtype]
    lex = WORDINGS[wording].for_type(gen.axes)
    rng = np.random.default_rng([seed, part == "test"])  # common and swapped: the same scenes
    images, texts, answers = [], [], []
    while len(answers) < n:
        scene = world.sample_scene(rng, lex.shape_set, world.COLOURS, part)
        q = gen.ask(scene, rng, lex)  # a shifted type: only where the convention matters
        if q is not None:
            style = DOMAIN_STYLES[int(rng.integers(len(DOMAIN_STYLES)))]
            images.append(world.render(scene, style, image_size, rng))
            texts.append(q.text)
            answers.append(q.answer)
    return np.stack(images), texts, answers


class PooledFeatures:
    """The frozen backbone's pooled output for (images, texts), in batches."""

    def __init__(self, checkpoint: str):
        from transformers import BertTokenizerFast

        self.config = read_vilt_config(checkpoint)
        self.model = ViltModel(self.config)
        self.tokenizer = BertTokenizerFast.from_pretrained(checkpoint, local_files_only=True)
        size = self.config.image_size
        dummy = {
            "input_ids": jnp.zeros((1, TEXT_LEN), jnp.int32),
            "attention_mask": jnp.ones((1, TEXT_LEN), jnp.int32),
            "pixel_values": jnp.zeros((1, size, size, 3)),
            "pixel_mask": jnp.ones((1, size, size), jnp.int32),
        }
        init = self.model.init(jax.random.key(0), dummy)["params"]
        self.params = load_vilt_params(checkpoint, {"vilt": init})["vilt"]
        self._pooled = jax.jit(lambda p, x: self.model.apply({"params": p}, x)[1])

    def __call__(self, images: np.ndarray, texts: list[str], batch: int = 250) -> np.ndarray:
        enc = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=TEXT_LEN, return_tensors="np"
        )
        out = []
        for i in range(0, len(texts), batch):
            part = {
                "image": images[i : i + batch],
                "input_ids": enc["input_ids"][i : i + batch],
                "attention_mask": enc["attention_mask"][i : i + batch],
                "pixel_mask": np.ones(images[i : i + batch].shape[:3], np.int32),
            }
            out.append(np.asarray(self._pooled(self.params, to_model_inputs(part))))
        return np.concatenate(out)


def softmax_probe(x_tr, y_tr, x_te, y_te, steps: int = 500, l2: float = 1e-4) -> float:
    """Held-out accuracy of an L2-regularised softmax regression fitted full-batch with Adam."""
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    k = int(max(y_tr.max(), y_te.max())) + 1
    params = {"w": jnp.zeros((x_tr.shape[1], k)), "b": jnp.zeros(k)}
    tx = optax.adam(0.05)

    def loss(p):
        logits = x_tr @ p["w"] + p["b"]
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, y_tr).mean()
        return nll + l2 * jnp.sum(p["w"] ** 2)

    @jax.jit
    def step(p, s):
        g = jax.grad(loss)(p)
        u, s = tx.update(g, s)
        return optax.apply_updates(p, u), s

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return float(np.mean(np.asarray(jnp.argmax(x_te @ params["w"] + params["b"], -1)) == y_te))


def probe_type(features: PooledFeatures, qtype: str, args, wording: str) -> dict:
    size = features.config.image_size
    img_tr, txt_tr, ans_tr = questions(qtype, args.train, "train", wording, size, args.seed)
    img_te, txt_te, ans_te = questions(qtype, args.test, "test", wording, size, args.seed)
    labels = sorted(set(ans_tr) | set(ans_te))
    y_tr = np.array([labels.index(a) for a in ans_tr])
    y_te = np.array([labels.index(a) for a in ans_te])
    majority = np.bincount(y_tr, minlength=len(labels)).argmax()
    acc = softmax_probe(features(img_tr, txt_tr), y_tr, features(img_te, txt_te), y_te)
    return {"majority": float(np.mean(y_te == majority)), "probe": acc}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", default=TINY_VILT)
    p.add_argument("--types", default=",".join(VQA_MIX), help="question types, comma-separated")
    p.add_argument("--train", type=int, default=2000, help="probe training questions per type")
    p.add_argument("--test", type=int, default=500, help="held-out questions per type")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results_probe.json"))
    args = p.parse_args(argv)
    features = PooledFeatures(args.checkpoint)
    rows = {}
    print(f"{'question type':16s} {'majority':>9s} {'common':>8s} {'field':>8s} {'swapped':>8s}")
    for qtype in args.types.split(","):
        common = probe_type(features, qtype, args, "common")
        field = probe_type(features, qtype, args, "field")
        rows[qtype] = {"majority": common["majority"], "common": common["probe"]}
        rows[qtype]["field"] = field["probe"]
        swapped = "-"
        if HUE in GENERATORS[qtype].axes:
            rows[qtype]["swapped"] = probe_type(features, qtype, args, "swapped")["probe"]
            swapped = f"{100 * rows[qtype]['swapped']:.1f}"
        print(
            f"{qtype:16s} {100 * common['majority']:9.1f} {100 * common['probe']:8.1f} "
            f"{100 * field['probe']:8.1f} {swapped:>8s}",
            flush=True,
        )
    result = {"checkpoint": str(args.checkpoint), "train": args.train, "test": args.test}
    result["command"] = shlex.join(["python", "-m", "benchmarks.probe_backbone", *sys.argv[1:]])
    Path(args.out).write_text(json.dumps({**result, "types": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
