"""Stacked cohort batches: exact epochs with masks, resume determinism, eval, metadata, prefetch,
and the two text encoders."""

import io

import numpy as np
import pytest
from PIL import Image

from feddat_jax.data import pipeline
from feddat_jax.data.client_store import ClientDataStore, decode_image
from feddat_jax.data.records import ClientSplit, Example
from feddat_jax.data.tokenize import HFTokenizerEncoder, WordVocabEncoder

SIZES = (3, 10, 17)
B, L, HW = 4, 8, (6, 6)


def png(value: int, hw=(6, 6)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((*hw, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def make_clients():
    """Example ``uid`` (1-based, global) is written into every pixel, to be traced in batches."""
    clients, uid = [], 0
    for k, n in enumerate(SIZES):
        answers = ["yes", "no", "maybe"][: k + 1]
        train = []
        for _ in range(n):
            uid += 1
            train.append(
                Example(
                    f"is it {uid} ?",
                    png(uid),
                    {answers[uid % len(answers)]: 1.0, answers[0]: 0.3},
                    f"e{uid}",
                )
            )
        test = train[:2]
        clients.append(
            ClientSplit(f"c{k}", "vqa" if k != 1 else "classification", answers, train, test)
        )
    return clients


@pytest.fixture(scope="module")
def clients():
    return make_clients()


@pytest.fixture(scope="module")
def store(clients):
    encoder = WordVocabEncoder.from_texts(e.question for c in clients for e in c.train)
    return ClientDataStore.build(clients, "train", encoder, HW, L)


def test_every_example_once_per_epoch_padding_masked(store):
    batch = pipeline.cohort_batches(store, [0, 1, 2], B, seed=0, round_index=0)
    C, S = 3, -(-max(SIZES) // B)
    assert batch["input_ids"].shape == (C, S, B, L) and batch["input_ids"].dtype == np.int32
    assert batch["attention_mask"].shape == (C, S, B, L)
    assert batch["image"].shape == (C, S, B, *HW, 3) and batch["image"].dtype == np.uint8
    assert batch["pixel_mask"].shape == (C, S, B, *HW) and batch["pixel_mask"].dtype == np.uint8
    assert batch["targets"].shape == (C, S, B, 3) and batch["targets"].dtype == np.float32
    assert batch["example_mask"].shape == (C, S, B) and batch["example_mask"].dtype == np.float32
    uid_CxSxB = batch["image"][..., 0, 0, 0].astype(int)
    starts = np.cumsum((0,) + SIZES)
    for c, n in enumerate(SIZES):
        real = batch["example_mask"][c] == 1
        assert real.sum() == n
        assert sorted(uid_CxSxB[c][real]) == list(range(starts[c] + 1, starts[c] + n + 1))
        for key in ("input_ids", "image", "pixel_mask", "targets", "attention_mask"):
            assert not batch[key][c][~real].any(), key  # padding rows are zeros
    assert batch["pixel_mask"][batch["example_mask"] == 1].all()


def test_targets_use_each_clients_own_vocabulary(store, clients):
    batch = pipeline.eval_batches(store, [1], B)
    first = clients[1].train[0]
    expected = np.zeros(3, np.float32)
    for answer, score in first.answers.items():
        expected[clients[1].answers.index(answer)] = score
    np.testing.assert_array_equal(batch["targets"][0, 0, 0], expected)
    assert batch["image"][0, 0, 0, 0, 0, 0] == SIZES[0] + 1  # eval keeps stored order


def test_same_round_same_arrays_resume_determinism(clients, store):
    a = pipeline.cohort_batches(store, [2, 0], B, seed=5, round_index=7)
    encoder = WordVocabEncoder.from_texts(e.question for c in clients for e in c.train)
    fresh = ClientDataStore.build(clients, "train", encoder, HW, L)  # a resumed process
    b = pipeline.cohort_batches(fresh, [2, 0], B, seed=5, round_index=7)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    nxt = pipeline.cohort_batches(store, [2, 0], B, seed=5, round_index=8)
    assert not np.array_equal(a["image"], nxt["image"])
    r0 = pipeline.cohort_batches(store, [2, 0], B, seed=5, round_index=0)
    r9 = pipeline.cohort_batches(
        store, [2, 0], B, seed=5, round_index=9, same_order_each_round=True
    )
    assert all(np.array_equal(r0[k], r9[k]) for k in r0)


def test_static_steps_and_bad_ids(store):
    batch = pipeline.cohort_batches(
        store, [0], B, seed=0, round_index=0, num_steps=store.max_steps(B)
    )
    assert batch["example_mask"].shape == (1, 5, B)
    with pytest.raises(ValueError, match="num_steps=2 would drop data"):
        pipeline.cohort_batches(store, [2], B, seed=0, round_index=0, num_steps=2)
    with pytest.raises(ValueError, match=r"client ids \[7\]"):
        pipeline.cohort_batches(store, [7], B, seed=0, round_index=0)


def test_segment_window_is_a_slice_of_the_epoch_padded(store):
    full = pipeline.cohort_batches(store, [2, 0], B, seed=3, round_index=1)  # S = 5
    part = pipeline.cohort_batches(
        store, [2, 0], B, seed=3, round_index=1, num_steps=5, window=(3, 5), window_steps=3
    )
    for key in full:
        assert part[key].shape == full[key][:, :3].shape, key
        np.testing.assert_array_equal(part[key][:, :2], full[key][:, 3:5])
        assert not part[key][:, 2].any(), key  # the padding step is empty
    with pytest.raises(ValueError, match="does not fit"):
        pipeline.cohort_batches(store, [2], B, seed=0, round_index=0, window=(4, 7))


def test_task_metadata(clients):
    meta = pipeline.task_metadata(clients)
    np.testing.assert_array_equal(meta["answer_mask"], [[1, 0, 0], [1, 1, 0], [1, 1, 1]])
    assert meta["answer_mask"].dtype == np.float32
    np.testing.assert_array_equal(meta["task_kind"], [0, 1, 0])
    np.testing.assert_array_equal(meta["num_examples"], SIZES)
    assert meta["task_kind"].dtype == meta["num_examples"].dtype == np.int32


def test_prefetcher_matches_direct_build(store):
    def build(r):
        return pipeline.cohort_batches(store, [0, 1, 2], B, seed=1, round_index=r)

    with pipeline.Prefetcher(build, last_round=2) as prefetch:
        for r in range(3):
            got = prefetch.get(r)
            assert all(np.array_equal(got[k], build(r)[k]) for k in got)
    assert prefetch.build_seconds > 0 and prefetch.wait_seconds >= 0


def test_decode_image_fits_and_masks():
    image, mask = decode_image(png(9, hw=(4, 8)), 6, 6)  # 4x8 -> scaled to 3x6, padded
    assert image.shape == (6, 6, 3) and mask.sum() == 18 and mask[:3].all()
    assert (image[:3] == 9).all() and not image[3:].any()


def test_word_vocab_encoder():
    enc = WordVocabEncoder.from_texts(["what color is it?", "what shape is it?"])
    assert enc.vocab[:4] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    out = enc.encode(["what colour is it?", "what shape is it? " * 5], max_length=8)
    ids = out["input_ids"]
    assert ids.shape == (2, 8) and ids.dtype == np.int32
    assert ids[0].tolist() == [
        2,
        enc.index["what"],
        1,
        enc.index["is"],
        enc.index["it"],
        enc.index["?"],
        3,
        0,
    ]  # unknown word -> [UNK], padded with 0
    assert ids[1, -1] == 3 and out["attention_mask"][1].all()  # truncated, [SEP] kept


def test_hf_tokenizer_from_local_folder(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "color", "is", "it", "?"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    out = HFTokenizerEncoder(tmp_path).encode(["What color is it?", "zebra"], max_length=8)
    assert out["input_ids"].shape == (2, 8) and out["input_ids"].dtype == np.int32
    assert out["input_ids"][0].tolist() == [2, 5, 6, 7, 8, 9, 3, 0]
    assert out["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        HFTokenizerEncoder(tmp_path / "does-not-exist")
