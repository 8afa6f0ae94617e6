"""The ALBEF VQA model in Flax: ALBEF's rank_answer, the 30 adapter sites and FedDAT's partition,
adapters with zero up-projections equal to the plain model, answer tokenization and image inputs."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from albef_helpers import (
    DAT,
    LA,
    A,
    B,
    apply_fn,
    make_inputs,
    random_params,
    reference_state,
    scaled_adapters,
    with_padded_candidate,
)
from albef_reference import CFG, torch_albef, torch_sites

from feddat_jax.models import answer_ranking
from feddat_jax.models.albef import (
    ANSWER_KEYS,
    IMAGE_MEAN,
    IMAGE_STD,
    AlbefConfig,
    AlbefVQA,
    example_inputs,
    make_image_preprocessor,
    to_albef_inputs,
)
from feddat_jax.peft.config import PeftConfig
from feddat_jax.peft.roles import count_params, flatten, rules_for, split, unflatten


def test_rank_k_reproduces_albef_rank_answer(albef_released):
    """rank_k > 0: top-k by first-token probability, re-ranked by first-token log-prob + sequence
    log-likelihood; rank_answers returns ALBEF's (topk_ids, topk_probs)."""
    _, sd, params = albef_released
    params = scaled_adapters(params)
    inputs, k = make_inputs(seed=1), 2
    scores = np.asarray(
        apply_fn(AlbefVQA(CFG, DAT, rank_k=k))(params, with_padded_candidate(inputs), "dat")
    )
    _, ids, probs, topk_ids, sums = torch_albef(
        reference_state(sd), CFG, inputs, torch_sites(params), "dat", k=k
    )
    np.testing.assert_allclose(np.take_along_axis(scores, topk_ids, 1), sums, rtol=1e-5, atol=1e-4)
    assert np.sum(scores == answer_ranking.NEG) == B * (A + 1 - k)  # padded candidate never ranked
    our_ids, our_probs = answer_ranking.rank_answers(jnp.asarray(scores), k)
    np.testing.assert_array_equal(our_ids, ids)
    np.testing.assert_allclose(our_probs, probs, rtol=1e-5, atol=1e-6)


def test_thirty_adapter_sites_and_feddat_partition():
    """Full size: 12 ViT + 6 text + 6 fusion + 6 decoder sites of 768·48+48+48·768+768 = 74,544
    parameters each: 2,236,320 per adapter set. FedDAT shares A_s only; A_c and the LM head
    (transform + bias; the vocabulary projection is the frozen, tied word table) are private."""
    full = AlbefConfig()
    assert full.num_adapter_sites == 30
    shapes = jax.eval_shape(
        AlbefVQA(full, DAT).init, jax.random.key(0), example_inputs(full, 1, 4, 2, 3)
    )["params"]
    flat = flatten(shapes)
    for name in ("shared", "client"):
        sites: dict[str, int] = {}
        for path, leaf in flat.items():
            site = re.match(rf"(.*)/adapter_{name}/", path)
            if site:
                sites[site.group(1)] = sites.get(site.group(1), 0) + int(np.prod(leaf.shape))
        assert len(sites) == 30 and set(sites.values()) == {768 * 48 + 48 + 48 * 768 + 768}
        assert sum(sites.values()) == 2_236_320
        kinds = [re.sub(r"_\d+", "_i", s) for s in sites]
        assert kinds.count("albef/visual_encoder/blocks_i") == 12
        assert kinds.count("albef/text_encoder/encoder/layer_i/output") == 12
        assert kinds.count("albef/text_decoder/encoder/layer_i/output") == 6
    frozen, shared, private = split(shapes, rules_for("feddat"))
    assert count_params(shared) == 2_236_320 and set(flatten(shared)) == {
        p for p in flat if "/adapter_shared/" in p
    }
    assert count_params(private) == 2_236_320 + (768 * 768 + 768) + 2 * 768 + 30522
    assert set(private) == {"albef", "head"}
    assert "albef/text_decoder/embeddings/word_embeddings/embedding" in flatten(frozen)
    assert count_params(frozen) + count_params(shared) + count_params(private) == count_params(
        shapes
    )


@pytest.mark.parametrize(
    "peft,modes",
    [
        (DAT, ("none", "shared", "client", "dat")),
        (PeftConfig(adapters=("shared", "client"), dat_gate=True), ("dat",)),
    ],
    ids=["fixed-mix", "learned-gate"],
)
def test_zero_up_projections_equal_the_plain_model(albef_released, peft, modes):
    """Equal up to float32 rounding (XLA compiles the two programs differently: <= 1e-6 relative)."""
    _, _, loaded = albef_released
    adapted = random_params(AlbefVQA(CFG, peft), seed=3)
    backbone = {k: v for k, v in flatten(loaded).items() if "/adapter_" not in k}
    adapters = {
        k: (jnp.zeros_like(v) if "/up/" in k else v)
        for k, v in flatten(adapted).items()
        if "/adapter_" in k
    }
    assert adapters and all(
        float(jnp.abs(v).max()) > 0 for k, v in adapters.items() if "/down/kernel" in k
    )
    params = unflatten({**backbone, **adapters})
    inputs = make_inputs(seed=2)
    plain = np.asarray(apply_fn(AlbefVQA(CFG))(unflatten(backbone), inputs, "none"))
    run = apply_fn(AlbefVQA(CFG, peft))
    for mode in modes:
        np.testing.assert_allclose(
            run(params, inputs, mode), plain, rtol=1e-6, atol=1e-6, err_msg=mode
        )


def test_tokenize_answers_as_albef(tmp_path):
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", "red", "car", "##s"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast.from_pretrained(str(tmp_path), local_files_only=True)
    ids, mask = answer_ranking.tokenize_answers(
        tokenizer, ["yes", "red cars"], num_answers=3, length=6
    )
    np.testing.assert_array_equal(ids, [[2, 5, 3, 3, 0, 0], [2, 7, 8, 9, 3, 3], [0, 0, 0, 0, 0, 0]])
    np.testing.assert_array_equal(mask, ids > 0)
    np.testing.assert_array_equal(answer_ranking.candidate_valid(mask), [True, True, False])
    with pytest.raises(ValueError, match="needs 6 tokens"):
        answer_ranking.tokenize_answers(tokenizer, ["red cars"], length=5)


def test_image_preprocessing_and_model_inputs():
    """ALBEF's Resize((s, s), BICUBIC) on PIL, then ToTensor + Normalize(CLIP mean/std) on device."""
    from PIL import Image

    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3)).astype(np.uint8)
    pixels, mask = make_image_preprocessor(CFG.image_size)(image)
    expected = np.asarray(
        Image.fromarray(image).resize((32, 32), resample=Image.Resampling.BICUBIC)
    )
    np.testing.assert_array_equal(pixels, expected)
    assert pixels.dtype == np.uint8 and mask.shape == (32, 32) and mask.all()
    answers = make_inputs()
    inputs = to_albef_inputs(
        {
            "image": pixels[None],
            "input_ids": np.ones((1, 3)),
            "attention_mask": np.ones((1, 3)),
            **{k: answers[k] for k in ANSWER_KEYS},
        }
    )
    normalised = (pixels / 255.0 - np.asarray(IMAGE_MEAN)) / np.asarray(IMAGE_STD)
    np.testing.assert_allclose(inputs["pixel_values"][0], normalised, rtol=1e-5, atol=1e-5)
    assert inputs["answer_input_ids"].shape == (A, LA) and inputs["input_ids"].dtype == jnp.int32
    with pytest.raises(KeyError, match="answer list"):
        to_albef_inputs(
            {"image": pixels[None], "input_ids": np.ones((1, 3)), "attention_mask": np.ones((1, 3))}
        )
