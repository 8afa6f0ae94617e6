"""HF checkpoint loading/saving, and the input preparation helpers."""

from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest
import torch
import transformers
from PIL import Image
from safetensors.numpy import load_file, save_file
from test_vilt_equivalence import NUM_ANSWERS, init_params, make_inputs, random_hf_vqa, torch_inputs

from feddat_jax.models.inputs import load_processors, make_image_preprocessor, to_model_inputs
from feddat_jax.models.vilt import ViltConfig, ViltModel, ViltVQA
from feddat_jax.models.vilt_checkpoint import (
    CheckpointError,
    load_vilt_params,
    read_vilt_config,
    save_vilt_checkpoint,
)
from feddat_jax.peft.config import PeftConfig
from feddat_jax.peft.roles import PEFT_PATTERN, flatten

CONFIG = ViltConfig.tiny()


@pytest.fixture(scope="module")
def hf_vqa():
    return random_hf_vqa(CONFIG)


@pytest.fixture(scope="module")
def model_and_init():
    model = ViltVQA(
        CONFIG, PeftConfig(adapters=("shared", "client"), lora_rank=2), num_answers=NUM_ANSWERS
    )
    return model, init_params(model, make_inputs())


def assert_trees_equal(a, b, skip_peft: bool = False):
    keep = lambda path: not (skip_peft and re.search(PEFT_PATTERN, path))
    fa = {p: v for p, v in flatten(a).items() if keep(p)}
    fb = {p: v for p, v in flatten(b).items() if keep(p)}
    assert list(fa) == list(fb)
    for path, value in fa.items():
        np.testing.assert_array_equal(value, fb[path], err_msg=path)


def test_missing_folder_and_non_vilt_config(tmp_path, model_and_init):
    _, params = model_and_init
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'nope'} does not exist"):
        load_vilt_params(tmp_path / "nope", params)
    with pytest.raises(CheckpointError, match=f"{tmp_path} has no config.json"):
        read_vilt_config(tmp_path)
    transformers.BertConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=4
    ).save_pretrained(tmp_path)
    with pytest.raises(
        CheckpointError, match=r"config.json is not a ViLT config: model_type='bert'"
    ):
        load_vilt_params(tmp_path, params)


def test_folder_without_weights(tmp_path, model_and_init):
    (tmp_path / "config.json").write_text(json.dumps(CONFIG.to_hf_dict()))
    with pytest.raises(CheckpointError, match=f"{tmp_path} has no model.safetensors"):
        load_vilt_params(tmp_path, model_and_init[1])


def test_missing_unexpected_and_misshaped_tensors_are_named(tmp_path, hf_vqa, model_and_init):
    _, params = model_and_init
    hf_vqa.save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["vilt.encoder.layer.1.attention.attention.value.weight"]
    del tensors["vilt.pooler.dense.bias"]
    tensors["vilt.encoder.layer.7.output.dense.bias"] = np.zeros(32, np.float32)
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(CheckpointError) as err:
        load_vilt_params(tmp_path, params)
    message = str(err.value)
    assert str(tmp_path) in message
    assert (
        "missing tensors (2): ['vilt.encoder.layer.1.attention.attention.value.weight', 'vilt.pooler.dense.bias']"
        in message
    )
    assert "unexpected tensors (1): ['vilt.encoder.layer.7.output.dense.bias']" in message

    tensors = load_file(tmp_path / "model.safetensors")
    tensors.pop("vilt.encoder.layer.7.output.dense.bias")
    tensors["vilt.encoder.layer.1.attention.attention.value.weight"] = np.zeros(
        (32, 32), np.float32
    )
    tensors["vilt.pooler.dense.bias"] = np.zeros(32, np.float32)
    tensors["classifier.3.bias"] = np.zeros(7, np.float32)  # a head for another answer count
    save_file(tensors, tmp_path / "model.safetensors")
    with pytest.raises(
        CheckpointError, match=r"shape mismatches \(1\): \['classifier.3.bias: checkpoint \(7,\)"
    ):
        load_vilt_params(tmp_path, params)
    load_vilt_params(tmp_path, params, load_head=False)  # the backbone alone loads
    assert set(load_vilt_params(tmp_path, {"vilt": params["vilt"]})) == {
        "vilt"
    }  # so does a headless tree


def test_vilt_model_keys_load_and_the_head_keeps_its_init(tmp_path, hf_vqa, model_and_init):
    _, params = model_and_init
    hf_vqa.vilt.save_pretrained(tmp_path)  # "embeddings.…" keys, no classifier
    loaded = load_vilt_params(tmp_path, params)
    assert_trees_equal(loaded["head"], params["head"])
    peft = {p: v for p, v in flatten(params).items() if re.search(PEFT_PATTERN, p)}
    assert peft and all(np.array_equal(flatten(loaded)[p], v) for p, v in peft.items())
    inputs = make_inputs()
    _, pooled = ViltModel(CONFIG).apply({"params": loaded["vilt"]}, inputs)
    with torch.no_grad():
        want = hf_vqa.vilt(**torch_inputs(inputs)).pooler_output.numpy()
    np.testing.assert_allclose(pooled, want, atol=1e-5)


def test_masked_lm_checkpoint_loads_without_its_pretraining_head(tmp_path, hf_vqa, model_and_init):
    mlm = transformers.ViltForMaskedLM(hf_vqa.config)
    mlm.vilt.load_state_dict(hf_vqa.vilt.state_dict())
    mlm.save_pretrained(tmp_path)
    loaded = load_vilt_params(tmp_path, model_and_init[1])
    hf_vqa.vilt.save_pretrained(tmp_path / "plain")
    assert_trees_equal(loaded, load_vilt_params(tmp_path / "plain", model_and_init[1]))


def test_pytorch_bin_loads_with_weights_only(tmp_path, hf_vqa, model_and_init):
    hf_vqa.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(hf_vqa.state_dict(), tmp_path / "pytorch_model.bin")
    hf_vqa.save_pretrained(tmp_path / "st")
    assert_trees_equal(
        load_vilt_params(tmp_path, model_and_init[1]),
        load_vilt_params(tmp_path / "st", model_and_init[1]),
    )


def test_save_round_trip_is_a_real_hf_checkpoint(tmp_path, model_and_init):
    model, params = model_and_init
    params = jax.tree_util.tree_map(lambda x: x + 0.01, params)  # biases and LayerNorms non-trivial
    save_vilt_checkpoint(tmp_path, params, CONFIG)
    assert read_vilt_config(tmp_path) == CONFIG
    fresh = init_params(model, make_inputs(seed=5))
    loaded = load_vilt_params(tmp_path, jax.tree_util.tree_map(np.zeros_like, fresh))
    assert_trees_equal(loaded, params, skip_peft=True)
    assert all(not np.any(v) for p, v in flatten(loaded).items() if re.search(PEFT_PATTERN, p))

    hf = transformers.ViltForQuestionAnswering.from_pretrained(tmp_path).eval()
    inputs = make_inputs()
    with torch.no_grad():
        want = hf(**torch_inputs(inputs)).logits.numpy()
    # LoRA factors are zero and adapters are off: the loaded tree computes the HF model exactly.
    np.testing.assert_allclose(
        model.apply({"params": loaded}, inputs, adapter_mode="none"), want, atol=1e-5
    )


def test_to_model_inputs_normalises_uint8_images():
    image = np.array([[[[0, 255, 128]]]], np.uint8)
    batch = {
        "image": image,
        "pixel_mask": np.ones((1, 1, 1), np.uint8),
        "input_ids": np.zeros((1, 3), np.int64),
        "attention_mask": np.ones((1, 3), np.int64),
        "targets": np.zeros((1, 4), np.float32),
    }
    inputs = jax.jit(to_model_inputs)(batch)
    assert set(inputs) == {"input_ids", "attention_mask", "pixel_values", "pixel_mask"}
    np.testing.assert_allclose(
        inputs["pixel_values"][0, 0, 0], [-1.0, 1.0, 128 / 127.5 - 1], atol=1e-6
    )
    assert inputs["pixel_mask"].dtype == np.int32 and inputs["input_ids"].dtype == np.int32


def test_image_preprocessor_matches_vilt_image_processor(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 130, 3), dtype=np.uint8)
    hf = transformers.ViltImageProcessorPil(size={"shortest_edge": 64})
    want = hf(Image.fromarray(image), return_tensors="np")
    ours, mask = make_image_preprocessor(shortest_edge=64, pad_to=(64, 128))(image)
    h, w = want["pixel_values"].shape[2:]
    # 64 x 166 exceeds the longer-side cap int(1333 / 800 * 64) = 106: 41 x 106, floored to 32 x 96.
    assert (h, w) == (32, 96)
    assert ours.shape == (64, 128, 3) and mask[:h, :w].all() and mask.sum() == h * w
    pixels = np.asarray(
        to_model_inputs(
            {
                "image": ours[None],
                "pixel_mask": mask[None],
                "input_ids": np.zeros((1, 1)),
                "attention_mask": np.ones((1, 1)),
            }
        )["pixel_values"][0]
    )
    np.testing.assert_allclose(
        pixels[:h, :w].transpose(2, 0, 1), want["pixel_values"][0], atol=1e-6
    )
    np.testing.assert_allclose(pixels[h:], -1.0)  # zero padding, normalised

    _, tall_mask = make_image_preprocessor(shortest_edge=64, pad_to=(64, 128))(
        image.transpose(1, 0, 2)
    )
    assert (
        tall_mask.sum(0).max() <= 64 and tall_mask.sum(1).max() <= 128
    )  # shrunk to fit the static pad


def test_load_processors_reads_a_local_folder(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "what", "color", "is", "it", "?"]
    transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}).save_pretrained(
        tmp_path / "proc"
    )
    transformers.ViltImageProcessorPil(size={"shortest_edge": 64}).save_pretrained(
        tmp_path / "proc"
    )
    tokenizer, preprocess = load_processors(tmp_path / "proc")
    assert tokenizer("what color is it?")["input_ids"] == [2, 5, 6, 7, 8, 9, 3]
    image, mask = preprocess(np.zeros((32, 32, 3), np.uint8))
    assert image.shape == (96, 96, 3) and mask.sum() == 64 * 64
    with pytest.raises(FileNotFoundError, match="missing"):
        load_processors(tmp_path / "missing")
