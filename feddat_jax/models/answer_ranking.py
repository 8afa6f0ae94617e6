"""Generative answer ranking over a client's answer list (ALBEF's `rank_answer`), jit-friendly.

A client's candidate answers are pre-tokenized once into `answer_input_ids` / `answer_attention_mask`
[A, La]: "[CLS] answer [SEP] [SEP]" (ALBEF appends "[SEP]" to every answer before tokenizing, and the
tokenizer adds [CLS] ... [SEP]), padded to a static La with id 0 / mask 0, and padded to A rows with
all-zero rows (invalid candidates). Position 0 ([CLS]) is the decoder's start token.

Scores of candidate a for an example (teacher-forced decoder, `logits[t]` predicts token t + 1):
- first-token log-prob  log p(tok_1 | [CLS], q)
- sequence log-likelihood  Σ_{t>=1, mask_t} log p(tok_t | tok_<t, q)  (ALBEF's −answer_loss: the
  summed token cross-entropy over the non-pad targets, without label smoothing)
- ALBEF's re-rank score  first-token log-prob + sequence log-likelihood. ALBEF picks the top-k
  candidates by first-token probability, then ranks them by this sum (which counts the first token
  twice: `topk_probs.log()` plus a loss that again covers the first answer token) and returns
  softmax(scores) over the k.

FL reading (what `AlbefVQA` returns as logits [B, A]): the sequence log-likelihood of EVERY
candidate, so the core's task loss, KD and argmax run over the client's answer list exactly as over
ViLT's classifier outputs. `rank_k > 0` switches to ALBEF's two-stage top-k ranking (evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

NEG = -1e9  # score of candidates that are padding or outside the top-k (the FL losses' "-inf")


def candidate_valid(answer_mask_AxLa: jax.Array) -> jax.Array:
    """bool [A]: a candidate is real when it has a first answer token (mask at position 1)."""
    return jnp.asarray(answer_mask_AxLa)[..., 1] > 0


def token_log_probs(logits_XxLaxV: jax.Array, ids_XxLa: jax.Array) -> jax.Array:
    """[..., La - 1]: log p(ids[t] | ids[<t]) for t = 1 .. La-1 from teacher-forced logits."""
    logits = logits_XxLaxV[..., :-1, :].astype(jnp.float32)
    targets = jnp.broadcast_to(jnp.asarray(ids_XxLa, jnp.int32)[..., 1:], logits.shape[:-1])
    picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return picked - jax.nn.logsumexp(logits, axis=-1)


def sequence_log_likelihood(
    logits_XxLaxV: jax.Array, ids_XxLa: jax.Array, mask_XxLa: jax.Array
) -> jax.Array:
    """[...]: Σ over the non-pad answer tokens t >= 1 of log p(tok_t | tok_<t); 0 for an all-pad row."""
    weights = jnp.asarray(mask_XxLa, jnp.float32)[..., 1:]
    return jnp.sum(token_log_probs(logits_XxLaxV, ids_XxLa) * weights, axis=-1)


def first_token_log_probs(
    first_logits_BxV: jax.Array, ids_AxLa: jax.Array, mask_AxLa: jax.Array
) -> jax.Array:
    """[B, A]: log p(first answer token | [CLS], q) of every candidate; NEG for invalid candidates."""
    logp_BxV = jax.nn.log_softmax(first_logits_BxV.astype(jnp.float32), axis=-1)
    logp_BxA = jnp.take(logp_BxV, jnp.asarray(ids_AxLa, jnp.int32)[:, 1], axis=-1)
    return jnp.where(candidate_valid(mask_AxLa)[None], logp_BxA, NEG)


def top_k_candidates(scores_BxA: jax.Array, k: int) -> jax.Array:
    """int32 [B, k]: indices of the k highest scores, best first (ties: lower index first)."""
    return jax.lax.top_k(scores_BxA, k)[1]


def scatter_scores(
    scores_BxK: jax.Array, ids_BxK: jax.Array, num_answers: int, fill: float = NEG
) -> jax.Array:
    """[B, A] with scores_BxK at ids_BxK and `fill` elsewhere."""
    out_BxA = jnp.full((scores_BxK.shape[0], num_answers), fill, jnp.float32)
    return out_BxA.at[jnp.arange(scores_BxK.shape[0])[:, None], ids_BxK].set(
        scores_BxK.astype(jnp.float32)
    )


def rank_answers(scores_BxA: jax.Array, k: int, answer_mask_A: jax.Array | None = None):
    """ALBEF's output format: (topk_ids [B, k] best first, topk_probs [B, k] = softmax over the k).

    `scores_BxA` are ALBEF re-rank scores (AlbefVQA with rank_k = k) or any per-candidate scores;
    `answer_mask_A` (the client's real answers) keeps padding out of the top-k."""
    if answer_mask_A is not None:
        scores_BxA = jnp.where(jnp.asarray(answer_mask_A) > 0, scores_BxA, NEG)
    top_scores_BxK, top_ids_BxK = jax.lax.top_k(scores_BxA.astype(jnp.float32), k)
    return top_ids_BxK, jax.nn.softmax(top_scores_BxK, axis=-1)


def tokenize_answers(
    tokenizer: Any,
    answers: Sequence[str],
    *,
    num_answers: int | None = None,
    length: int | None = None,
    eos: str = "[SEP]",
) -> tuple[np.ndarray, np.ndarray]:
    """A client's answer list -> (answer_input_ids, answer_attention_mask), int32 [A, La].

    As ALBEF: every answer gets `eos` appended and the BERT tokenizer adds [CLS] ... [SEP]. Rows are
    padded to `num_answers` (all-zero rows = invalid candidates) and tokens to `length` (static
    shapes for jit); an answer longer than `length` is an error rather than silently truncated."""
    num_answers = len(answers) if num_answers is None else num_answers
    if len(answers) > num_answers:
        raise ValueError(f"{len(answers)} answers do not fit num_answers={num_answers}")
    encoded = tokenizer([a + eos for a in answers], add_special_tokens=True)["input_ids"]
    longest = max((len(e) for e in encoded), default=2)
    length = longest if length is None else length
    if longest > length:
        worst = answers[int(np.argmax([len(e) for e in encoded]))]
        raise ValueError(
            f"answer {worst!r} needs {longest} tokens but the answer length is {length}"
        )
    ids = np.zeros((num_answers, length), np.int32)
    mask = np.zeros((num_answers, length), np.int32)
    for row, tokens in enumerate(encoded):
        ids[row, : len(tokens)] = tokens
        mask[row, : len(tokens)] = 1
    return ids, mask
