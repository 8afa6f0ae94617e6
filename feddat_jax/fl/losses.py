"""Task losses, knowledge distillation and scores, all masked twice.

* ``answer_mask_A`` hides the padding of a client's head (clients of one cohort can have different
  answer counts; their heads are padded to the largest). Padded logits never enter a softmax, a
  BCE, a KD term or an argmax.
* ``example_mask_B`` hides padded examples of a client's last (partial) batch. Losses are means
  over real examples only, so a padded batch gives exactly the loss of the unpadded one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from feddat_jax.fl.state import TASK_VQA

_NEG = -1e9  # stands for -inf in masked logits; finite so that 0 · log p stays 0, never NaN


def masked_mean(values_B: jax.Array, example_mask_B: jax.Array) -> jax.Array:
    """Mean over real examples; 0 for a batch with none (a no-op step)."""
    m = example_mask_B.astype(values_B.dtype)
    return jnp.sum(values_B * m) / jnp.maximum(jnp.sum(m), 1.0)


def masked_log_softmax(z_BxA: jax.Array, answer_mask_A: jax.Array) -> jax.Array:
    z = jnp.where(answer_mask_A > 0, z_BxA.astype(jnp.float32), _NEG)
    return jax.nn.log_softmax(z, axis=-1)


def vqa_bce_loss(z_BxA, targets_BxA, answer_mask_A, example_mask_B):
    """``num_answers · BCEWithLogits`` of the official code: summed over answers, mean over examples."""
    z = z_BxA.astype(jnp.float32)
    bce_BxA = jnp.maximum(z, 0) - z * targets_BxA + jnp.log1p(jnp.exp(-jnp.abs(z)))
    return masked_mean(jnp.sum(bce_BxA * answer_mask_A, axis=-1), example_mask_B)


def cross_entropy_loss(z_BxA, targets_BxA, answer_mask_A, example_mask_B):
    """Cross-entropy against (one-hot or soft) targets over the client's real answers."""
    logp_BxA = masked_log_softmax(z_BxA, answer_mask_A)
    return masked_mean(-jnp.sum(targets_BxA * answer_mask_A * logp_BxA, axis=-1), example_mask_B)


def task_loss(z_BxA, targets_BxA, answer_mask_A, task_kind, example_mask_B):
    """The client's own task loss; ``task_kind`` is data, so a mixed-task cohort stays vmappable."""
    bce = vqa_bce_loss(z_BxA, targets_BxA, answer_mask_A, example_mask_B)
    ce = cross_entropy_loss(z_BxA, targets_BxA, answer_mask_A, example_mask_B)
    return jnp.where(task_kind == TASK_VQA, bce, ce)


def kd_loss(z_student_BxA, z_teacher_BxA, answer_mask_A, example_mask_B, temperature: float):
    """``T² · mean_batch KL(σ_T(teacher) ‖ σ_T(student))`` over the real answers.

    This is PyTorch's ``kl_div(log_softmax(s/T), softmax(t/T), reduction="batchmean") · T²`` used
    by the official code. The teacher gets no gradient.
    """
    t = jax.lax.stop_gradient(z_teacher_BxA)
    logp_t = masked_log_softmax(t / temperature, answer_mask_A)
    logp_s = masked_log_softmax(z_student_BxA / temperature, answer_mask_A)
    p_t = jnp.exp(logp_t) * answer_mask_A
    kl_B = jnp.sum(p_t * (logp_t - logp_s), axis=-1)
    return temperature**2 * masked_mean(kl_B, example_mask_B)


def example_scores(z_BxA, targets_BxA, answer_mask_A, example_mask_B):
    """``target[argmax z]`` per example, 0 for padding: the VQA soft score in [0, 1] (accuracy
    for one-hot targets)."""
    z = jnp.where(answer_mask_A > 0, z_BxA.astype(jnp.float32), _NEG)
    pred_B = jnp.argmax(z, axis=-1)
    hit_B = jnp.take_along_axis(targets_BxA, pred_B[:, None], axis=-1)[:, 0]
    return hit_B * example_mask_B


def score_sum(z_BxA, targets_BxA, answer_mask_A, example_mask_B):
    """``Σ target[argmax z]`` over real examples."""
    return jnp.sum(example_scores(z_BxA, targets_BxA, answer_mask_A, example_mask_B))
