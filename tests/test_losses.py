"""Each loss term against a hand computation in numpy on fixed logits."""

import jax
import numpy as np

from feddat_jax.fl import losses

Z_S = np.array([[1.0, -0.5, 2.0, 0.3], [0.2, 0.1, -1.0, 0.0], [3.0, 1.0, 0.0, -2.0]], np.float32)
Z_T = np.array([[0.5, 0.5, 1.5, -1.0], [1.0, -1.0, 0.0, 0.5], [2.0, 2.0, 1.0, 0.0]], np.float32)
TGT = np.array([[0.0, 0.3, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.6, 0.0, 0.0]], np.float32)
ALL_A = np.ones(4, np.float32)
ALL_B = np.ones(3, np.float32)


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def test_kd_is_t_squared_batchmean_kl_teacher_to_student():
    T = 3.0
    lt, ls = np_log_softmax(Z_T / T), np_log_softmax(Z_S / T)
    expected = T**2 * np.mean(np.sum(np.exp(lt) * (lt - ls), -1))
    got = losses.kd_loss(Z_S, Z_T, ALL_A, ALL_B, T)
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert float(losses.kd_loss(Z_T, Z_T, ALL_A, ALL_B, T)) == 0.0


def test_kd_gradient_moves_student_toward_teacher_and_not_teacher():
    g_s, g_t = jax.grad(losses.kd_loss, argnums=(0, 1))(Z_S, Z_T, ALL_A, ALL_B, 3.0)
    assert np.all(np.asarray(g_t) == 0.0)  # the teacher is a stop-gradient
    # analytic gradient: T · (softmax(s/T) − softmax(t/T)) / B
    ps = np.exp(np_log_softmax(Z_S / 3.0))
    pt = np.exp(np_log_softmax(Z_T / 3.0))
    np.testing.assert_allclose(g_s, 3.0 * (ps - pt) / 3, rtol=1e-4, atol=1e-6)
    step = losses.kd_loss(Z_S - 0.5 * np.asarray(g_s), Z_T, ALL_A, ALL_B, 3.0)
    assert step < losses.kd_loss(Z_S, Z_T, ALL_A, ALL_B, 3.0)


def test_vqa_bce_sums_answers_and_averages_examples():
    p = 1 / (1 + np.exp(-Z_S))
    bce = -(TGT * np.log(p) + (1 - TGT) * np.log(1 - p))
    expected = 4 * bce.mean()  # num_answers · BCEWithLogits(mean)
    np.testing.assert_allclose(losses.vqa_bce_loss(Z_S, TGT, ALL_A, ALL_B), expected, rtol=1e-5)


def test_cross_entropy_and_task_kind_switch():
    onehot = np.eye(4, dtype=np.float32)[[2, 0, 1]]
    expected = -np.mean(np.sum(onehot * np_log_softmax(Z_S), -1))
    ce = losses.cross_entropy_loss(Z_S, onehot, ALL_A, ALL_B)
    np.testing.assert_allclose(ce, expected, rtol=1e-5)
    np.testing.assert_allclose(losses.task_loss(Z_S, onehot, ALL_A, 1, ALL_B), expected, rtol=1e-5)
    np.testing.assert_allclose(
        losses.task_loss(Z_S, onehot, ALL_A, 0, ALL_B),
        losses.vqa_bce_loss(Z_S, onehot, ALL_A, ALL_B),
        rtol=1e-6,
    )


def test_answer_padding_is_invisible_to_every_term():
    pad = np.full((3, 2), 50.0, np.float32)  # huge logits in padded answer slots
    zs, zt = np.concatenate([Z_S, pad], 1), np.concatenate([Z_T, -pad], 1)
    tgt = np.concatenate([TGT, np.ones((3, 2), np.float32)], 1)  # even junk targets there
    mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
    for fn in (losses.vqa_bce_loss, losses.cross_entropy_loss):
        np.testing.assert_allclose(fn(zs, tgt, mask, ALL_B), fn(Z_S, TGT, ALL_A, ALL_B), rtol=1e-6)
    np.testing.assert_allclose(
        losses.kd_loss(zs, zt, mask, ALL_B, 3.0),
        losses.kd_loss(Z_S, Z_T, ALL_A, ALL_B, 3.0),
        rtol=1e-6,
    )
    np.testing.assert_allclose(
        losses.score_sum(zs, tgt, mask, ALL_B), losses.score_sum(Z_S, TGT, ALL_A, ALL_B)
    )


def test_example_padding_is_invisible_and_empty_batch_is_zero():
    ex = np.array([1, 1, 0], np.float32)
    z = Z_S.copy()
    z[2] = 1e4  # garbage in the padded example
    np.testing.assert_allclose(
        losses.vqa_bce_loss(z, TGT, ALL_A, ex),
        losses.vqa_bce_loss(Z_S[:2], TGT[:2], ALL_A, ALL_B[:2]),
        rtol=1e-6,
    )
    assert float(losses.kd_loss(Z_S, Z_T, ALL_A, np.zeros(3, np.float32), 3.0)) == 0.0


def test_score_is_soft_target_at_argmax():
    # argmax rows: 2, 0, 0 → targets 1.0, 1.0, 0.0; without answer 0: 2, 1, 1 → 1.0, 0.0, 0.6
    assert float(losses.score_sum(Z_S, TGT, ALL_A, ALL_B)) == 2.0
    assert float(
        losses.score_sum(Z_S, TGT, np.array([0, 1, 1, 1], np.float32), ALL_B)
    ) == np.float32(1.6)
