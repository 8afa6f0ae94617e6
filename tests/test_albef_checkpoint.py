"""ALBEF's released checkpoint in Flax: the ALBEF.pth layout -> our parameter tree, scores equal to
a PyTorch reference of ALBEF's VQA forward, checkpoint round trips and conversion, load errors that
name the file and the bad keys, and the position-embedding resize."""

from __future__ import annotations

import pickle

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from albef_helpers import (
    DAT,
    A,
    apply_fn,
    make_inputs,
    reference_state,
    scaled_adapters,
    torch_interpolate_pos_embed,
    with_padded_candidate,
)
from albef_reference import CFG, released_state_dict, save_released, torch_albef, torch_sites

from feddat_jax.models.albef import AlbefConfig, AlbefVQA, example_inputs
from feddat_jax.models.albef_checkpoint import (
    CheckpointError,
    convert_albef_checkpoint,
    interpolate_pos_embed,
    load_albef_params,
    read_state_dict,
    save_albef_checkpoint,
)
from feddat_jax.peft.roles import flatten


def test_released_checkpoint_loads_and_matches_torch_albef(albef_released):
    """ALBEF.pth layout -> our tree (decoder = the encoder's last layer, head = MLM head, resized
    pos_embed); our scores = ALBEF's per-candidate answer log-likelihoods, with FedDAT's adapters."""
    _, sd, params = albef_released
    dec, enc = (
        params["albef"]["text_decoder"],
        sd["text_encoder.bert.encoder.layer.2.crossattention.self.key.weight"],
    )
    np.testing.assert_array_equal(
        dec["encoder"]["layer_0"]["crossattention"]["self"]["key"]["kernel"], enc.numpy().T
    )
    np.testing.assert_array_equal(
        params["head"]["bias"], sd["text_encoder.cls.predictions.bias"].numpy()
    )
    assert params["albef"]["visual_encoder"]["pos_embed"].shape == (
        1,
        CFG.num_patches + 1,
        CFG.vision_width,
    )

    ref_sd = reference_state(sd)
    params = scaled_adapters(params)
    inputs = make_inputs()
    run = apply_fn(AlbefVQA(CFG, DAT))
    outputs = {}
    for mode in ("none", "shared", "dat"):
        outputs[mode] = np.asarray(run(params, with_padded_candidate(inputs), mode))
        ref = torch_albef(ref_sd, CFG, inputs, torch_sites(params), mode)
        np.testing.assert_allclose(outputs[mode][:, :A], ref, rtol=1e-5, atol=1e-4, err_msg=mode)
        np.testing.assert_array_equal(outputs[mode][:, A], 0.0)  # a padded candidate scores nothing
    assert np.all(outputs["none"][:, :A] < 0)
    assert np.abs(outputs["dat"] - outputs["none"]).max() > 0.1  # the adapters really act
    assert np.abs(outputs["dat"] - outputs["shared"]).max() > 0.1


def test_checkpoint_layouts_roundtrip_and_safetensors_conversion(albef_released, tmp_path):
    path, _, params = albef_released
    template = jax.tree.map(jnp.zeros_like, params)
    peft = lambda p: {k: v for k, v in flatten(p).items() if "/adapter_" in k}
    backbone = lambda p: {k: np.asarray(v) for k, v in flatten(p).items() if "/adapter_" not in k}
    converted = convert_albef_checkpoint(path, tmp_path / "albef.safetensors")
    kept = read_state_dict(converted)
    assert not any(
        k.startswith(("visual_encoder_m.", "text_encoder_m.", "itm_head.", "image_queue"))
        for k in kept
    )
    for source in (converted, tmp_path / "vqa.pth", tmp_path / "vqa.safetensors"):
        if source != converted:
            save_albef_checkpoint(source, params)  # ALBEF's VQA layout: text_decoder.* present
        loaded = load_albef_params(source, template, CFG)
        jax.tree.map(np.testing.assert_array_equal, backbone(loaded), backbone(params))
        jax.tree.map(
            np.testing.assert_array_equal, peft(loaded), peft(template)
        )  # PEFT keeps its init
    assert "text_decoder.bert.encoder.layer.0.output.dense.weight" in read_state_dict(
        tmp_path / "vqa.pth"
    )
    no_head = load_albef_params(path, template, CFG, load_head=False)
    jax.tree.map(np.testing.assert_array_equal, no_head["head"], template["head"])


def test_checkpoint_errors_name_the_file_and_the_first_bad_keys(tmp_path):
    template = jax.eval_shape(AlbefVQA(CFG, DAT).init, jax.random.key(0), example_inputs(CFG))[
        "params"
    ]
    template = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), template)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_albef_params(tmp_path / "nope.pth", template, CFG)

    sd = released_state_dict()
    del sd["visual_encoder.blocks.1.mlp.fc2.bias"]
    sd["text_encoder.bert.encoder.layer.0.extra.weight"] = torch.zeros(3)
    save_released(tmp_path / "bad.pth", sd)
    with pytest.raises(CheckpointError) as err:
        load_albef_params(tmp_path / "bad.pth", template, CFG)
    for needle in (
        "bad.pth",
        "missing tensors (1)",
        "visual_encoder.blocks.1.mlp.fc2.bias",
        "unexpected tensors (1)",
        "text_encoder.bert.encoder.layer.0.extra.weight",
    ):
        assert needle in str(err.value)

    sd = released_state_dict()
    sd["text_encoder.cls.predictions.decoder.weight"] = (
        sd["text_encoder.cls.predictions.decoder.weight"] + 1.0
    )
    save_released(tmp_path / "untied.pth", sd)
    with pytest.raises(CheckpointError, match="untied LM-head tensors"):
        load_albef_params(tmp_path / "untied.pth", template, CFG)

    wide = released_state_dict(AlbefConfig(**{**CFG.__dict__, "vocab_size": 120}))
    save_released(tmp_path / "wide.pth", wide)
    with pytest.raises(
        CheckpointError, match=r"shape mismatches .*word_embeddings.weight: checkpoint \(120, 32\)"
    ):
        load_albef_params(tmp_path / "wide.pth", template, CFG)

    # weights-only loading refuses arbitrary objects; a trusted file converts once
    torch.save(
        {"model": released_state_dict(), "args": pickle.loads(pickle.dumps(_Args()))},
        tmp_path / "args.pth",
    )
    with pytest.raises(CheckpointError, match="trust_pickle=True"):
        load_albef_params(tmp_path / "args.pth", template, CFG)
    converted = convert_albef_checkpoint(
        tmp_path / "args.pth", tmp_path / "args.safetensors", trust_pickle=True
    )
    load_albef_params(converted, template, CFG)


class _Args:  # stands for the argparse.Namespace some training scripts pickle into checkpoints
    lr = 1e-4


@pytest.mark.parametrize("old,new", [(16, 24), (3, 2), (2, 5)])
def test_pos_embed_interpolation_matches_torch_bicubic(old, new):
    pos = torch.randn(1, old * old + 1, 8, generator=torch.Generator().manual_seed(old))
    np.testing.assert_allclose(
        interpolate_pos_embed(pos.numpy(), new),
        torch_interpolate_pos_embed(pos, new).numpy(),
        rtol=1e-5,
        atol=1e-5,
    )  # torch resizes in float32
