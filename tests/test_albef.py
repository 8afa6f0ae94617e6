"""ALBEF in Flax: the released checkpoint layout, a PyTorch reference of ALBEF's VQA forward and
rank_answer, the 30 adapter sites, and a vmapped FedDAT round with per-client answer lists."""

from __future__ import annotations

import pickle
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from feddat_jax.fl import local_optim
from feddat_jax.fl.aggregation import MeanAggregator
from feddat_jax.fl.algorithms import FedDAT, FedDATConfig
from feddat_jax.fl.round import client_context, make_round_fn, round_keys
from feddat_jax.fl.server_optimizers import make_server_optimizer
from feddat_jax.fl.state import ClientTasks, init_server_state, stack_clients
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
from feddat_jax.models.albef_checkpoint import (
    CheckpointError,
    convert_albef_checkpoint,
    interpolate_pos_embed,
    load_albef_params,
    read_state_dict,
    save_albef_checkpoint,
)
from feddat_jax.peft.config import PeftConfig
from feddat_jax.peft.partition import (
    count_params,
    flatten,
    merge,
    rules_for,
    split,
    unflatten,
)

CFG = AlbefConfig.tiny()  # 2 ViT, 1 text, 2 fusion, 1 decoder layers: 6 adapter sites
PRETRAIN_GRID = (
    3  # the checkpoint's ViT grid (48 px); the model's is 2 (32 px): pos_embed is resized
)
DAT = PeftConfig(adapters=("shared", "client"))
B, L, A, LA = 2, 6, 4, 5


# ---------------------------------------------------------------------------------------------
# A random state dict in the released ALBEF.pth layout (salesforce/ALBEF models/model_pretrain.py:
# ViT visual_encoder, BertForMaskedLM text_encoder, projections, ITM head, momentum copies, queues).
# ---------------------------------------------------------------------------------------------
def _vit_shapes(prefix, cfg, grid):
    D, F_, p = cfg.vision_width, cfg.vision_mlp_dim, cfg.patch_size
    shapes = {
        f"{prefix}.cls_token": (1, 1, D),
        f"{prefix}.pos_embed": (1, grid * grid + 1, D),
        f"{prefix}.patch_embed.proj.weight": (D, 3, p, p),
        f"{prefix}.patch_embed.proj.bias": (D,),
        f"{prefix}.norm.weight": (D,),
        f"{prefix}.norm.bias": (D,),
    }
    for i in range(cfg.vision_layers):
        b = f"{prefix}.blocks.{i}"
        shapes.update(
            {
                f"{b}.norm1.weight": (D,),
                f"{b}.norm1.bias": (D,),
                f"{b}.attn.qkv.weight": (3 * D, D),
                f"{b}.attn.qkv.bias": (3 * D,),
                f"{b}.attn.proj.weight": (D, D),
                f"{b}.attn.proj.bias": (D,),
                f"{b}.norm2.weight": (D,),
                f"{b}.norm2.bias": (D,),
                f"{b}.mlp.fc1.weight": (F_, D),
                f"{b}.mlp.fc1.bias": (F_,),
                f"{b}.mlp.fc2.weight": (D, F_),
                f"{b}.mlp.fc2.bias": (D,),
            }
        )
    return shapes


def _bert_mlm_shapes(prefix, cfg):
    """BertForMaskedLM(config_bert.json: fusion_layer = text_layers) without pooler."""
    H, I, V, E = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, cfg.vision_width
    e = f"{prefix}.bert.embeddings"
    shapes = {
        f"{e}.word_embeddings.weight": (V, H),
        f"{e}.position_embeddings.weight": (cfg.max_position_embeddings, H),
        f"{e}.token_type_embeddings.weight": (2, H),
        f"{e}.LayerNorm.weight": (H,),
        f"{e}.LayerNorm.bias": (H,),
    }
    for i in range(cfg.encoder_layers):
        lay = f"{prefix}.bert.encoder.layer.{i}"
        blocks = ["attention"] + (["crossattention"] if i >= cfg.text_layers else [])
        for blk in blocks:
            kv_in = E if blk == "crossattention" else H
            for proj, fan_in in (("query", H), ("key", kv_in), ("value", kv_in)):
                shapes.update(
                    {
                        f"{lay}.{blk}.self.{proj}.weight": (H, fan_in),
                        f"{lay}.{blk}.self.{proj}.bias": (H,),
                    }
                )
            shapes.update(
                {
                    f"{lay}.{blk}.output.dense.weight": (H, H),
                    f"{lay}.{blk}.output.dense.bias": (H,),
                    f"{lay}.{blk}.output.LayerNorm.weight": (H,),
                    f"{lay}.{blk}.output.LayerNorm.bias": (H,),
                }
            )
        shapes.update(
            {
                f"{lay}.intermediate.dense.weight": (I, H),
                f"{lay}.intermediate.dense.bias": (I,),
                f"{lay}.output.dense.weight": (H, I),
                f"{lay}.output.dense.bias": (H,),
                f"{lay}.output.LayerNorm.weight": (H,),
                f"{lay}.output.LayerNorm.bias": (H,),
            }
        )
    c = f"{prefix}.cls.predictions"
    shapes.update(
        {
            f"{c}.bias": (V,),
            f"{c}.transform.dense.weight": (H, H),
            f"{c}.transform.dense.bias": (H,),
            f"{c}.transform.LayerNorm.weight": (H,),
            f"{c}.transform.LayerNorm.bias": (H,),
        }
    )
    return shapes


def released_state_dict(cfg=CFG, grid=PRETRAIN_GRID, seed=0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    shapes = {**_vit_shapes("visual_encoder", cfg, grid), **_bert_mlm_shapes("text_encoder", cfg)}
    sd = {}
    for key, shape in shapes.items():
        value = 0.2 * torch.randn(shape, generator=g)
        sd[key] = value + 1.0 if re.search(r"(LayerNorm|\.norm\d?)\.weight$", key) else value
    # ALBEF ties the MLM decoder to the word embeddings: both names are in the state dict.
    sd["text_encoder.cls.predictions.decoder.weight"] = sd[
        "text_encoder.bert.embeddings.word_embeddings.weight"
    ]
    sd["text_encoder.cls.predictions.decoder.bias"] = sd["text_encoder.cls.predictions.bias"]
    sd["text_encoder.bert.embeddings.position_ids"] = torch.arange(cfg.max_position_embeddings)[
        None
    ]
    extras = {
        "vision_proj.weight": (16, cfg.vision_width),
        "vision_proj.bias": (16,),
        "text_proj.weight": (16, cfg.hidden_size),
        "text_proj.bias": (16,),
        "itm_head.weight": (2, cfg.hidden_size),
        "itm_head.bias": (2,),
        "temp": (),
        "image_queue": (16, 8),
        "text_queue": (16, 8),
    }
    for key, shape in extras.items():
        sd[key] = torch.randn(shape, generator=g)
        if key.startswith(("vision_proj", "text_proj")):
            sd[key.replace("_proj", "_proj_m")] = sd[key].clone()
    sd["queue_ptr"] = torch.zeros(1, dtype=torch.long)
    for key in [k for k in sd if k.startswith(("visual_encoder.", "text_encoder."))]:
        momentum = key.replace("visual_encoder.", "visual_encoder_m.").replace(
            "text_encoder.", "text_encoder_m."
        )
        sd[momentum] = sd[key].clone()
    return sd


def save_released(path, sd):
    """As ALBEF's Pretrain.py: {'model': state_dict, 'optimizer': ..., 'config': ..., 'epoch': ...}."""
    torch.save(
        {
            "model": sd,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
            "config": {
                "image_res": 256,
                "bert_config": "configs/config_bert.json",
                "queue_size": 65536,
            },
            "epoch": 29,
        },
        path,
    )


def albef_vqa_surgery(sd, cfg=CFG) -> dict[str, torch.Tensor]:
    """ALBEF's VQA.py key surgery, written out as the original loop (6 -> the layer offset)."""
    offset = cfg.encoder_layers - cfg.decoder_layers
    sd = {k: v for k, v in sd.items()}
    for key in list(sd.keys()):
        if "bert" in key:
            sd[key.replace("bert.", "")] = sd[key]
        if "text_encoder" in key and not key.startswith("text_encoder_m"):
            if "layer" in key:
                parts = key.split(".")
                if int(parts[4]) < offset:
                    del sd[key]
                    continue
                parts[4] = str(int(parts[4]) - offset)
                enc_key = ".".join(parts)
            else:
                enc_key = key
            sd[enc_key.replace("text_encoder", "text_decoder")] = sd[key]
            del sd[key]
    return sd


# ---------------------------------------------------------------------------------------------
# A functional PyTorch ALBEF (models/vit.py, models/xbert.py, model_vqa.rank_answer) with the
# official FedDAT adapters (vit.Block: x + a(x); xbert.BertOutput: adapter_layer_forward_bert).
# ---------------------------------------------------------------------------------------------
def _t(x):
    return torch.tensor(np.asarray(x), dtype=torch.float32)


def _adapter_fn(site, mode, weights=(0.5, 0.5)):
    """u -> Σ w·a(u) from our Flax site params (kernels are [in, out])."""
    if site is None or mode == "none":
        return None
    mix = {
        "shared": [("shared", 1.0)],
        "client": [("client", 1.0)],
        "dat": [("client", weights[0]), ("shared", weights[1])],
    }[mode]

    def a(u):
        out = 0.0
        for name, w in mix:
            p = site[f"adapter_{name}"]
            h = F.relu(u @ _t(p["down"]["kernel"]) + _t(p["down"]["bias"]))
            out = out + w * (h @ _t(p["up"]["kernel"]) + _t(p["up"]["bias"]))
        return out

    return a


def _heads(x, n):
    return x.reshape(x.shape[0], x.shape[1], n, -1).transpose(1, 2)


def torch_vit(sd, cfg, pixels, sites, mode):
    D, n = cfg.vision_width, cfg.vision_heads
    ln = lambda x, k: F.layer_norm(x, (D,), sd[f"{k}.weight"], sd[f"{k}.bias"], eps=1e-6)
    x = (
        F.conv2d(
            pixels,
            sd["visual_encoder.patch_embed.proj.weight"],
            sd["visual_encoder.patch_embed.proj.bias"],
            stride=cfg.patch_size,
        )
        .flatten(2)
        .transpose(1, 2)
    )
    x = (
        torch.cat([sd["visual_encoder.cls_token"].expand(x.shape[0], -1, -1), x], 1)
        + sd["visual_encoder.pos_embed"]
    )
    for i in range(cfg.vision_layers):
        b = f"visual_encoder.blocks.{i}"
        qkv = F.linear(ln(x, f"{b}.norm1"), sd[f"{b}.attn.qkv.weight"], sd[f"{b}.attn.qkv.bias"])
        qkv = qkv.reshape(x.shape[0], x.shape[1], 3, n, D // n).permute(2, 0, 3, 1, 4)
        attn = ((qkv[0] @ qkv[1].transpose(-2, -1)) * (D // n) ** -0.5).softmax(-1)
        x = x + F.linear(
            (attn @ qkv[2]).transpose(1, 2).reshape(x.shape),
            sd[f"{b}.attn.proj.weight"],
            sd[f"{b}.attn.proj.bias"],
        )
        h = F.gelu(
            F.linear(ln(x, f"{b}.norm2"), sd[f"{b}.mlp.fc1.weight"], sd[f"{b}.mlp.fc1.bias"])
        )
        x = x + F.linear(h, sd[f"{b}.mlp.fc2.weight"], sd[f"{b}.mlp.fc2.bias"])
        adapt = _adapter_fn(sites.get(("vit", i)), mode)
        x = x if adapt is None else x + adapt(x)
    return ln(x, "visual_encoder.norm")


def torch_bert(
    sd, prefix, cfg, ids, ext_mask, enc, enc_ext, layers, fusion, sites, site_kind, mode
):
    H, n = cfg.hidden_size, cfg.num_attention_heads
    ln = lambda x, k: F.layer_norm(x, (H,), sd[f"{k}.weight"], sd[f"{k}.bias"], eps=1e-12)
    lin = lambda x, k: F.linear(x, sd[f"{k}.weight"], sd[f"{k}.bias"])
    e = f"{prefix}.embeddings"
    x = (
        sd[f"{e}.word_embeddings.weight"][ids]
        + sd[f"{e}.token_type_embeddings.weight"][0]
        + sd[f"{e}.position_embeddings.weight"][: ids.shape[1]]
    )
    x = ln(x, f"{e}.LayerNorm")

    def attention(k, h, kv, mask):
        q, key, v = (
            _heads(lin(x, f"{k}.self.{name}"), n)
            for x, name in ((h, "query"), (kv, "key"), (kv, "value"))
        )
        probs = ((q @ key.transpose(-1, -2)) / (H // n) ** 0.5 + mask).softmax(-1)
        return ln(
            lin((probs @ v).transpose(1, 2).reshape(h.shape), f"{k}.output.dense") + h,
            f"{k}.output.LayerNorm",
        )

    for i in range(layers):
        lay = f"{prefix}.encoder.layer.{i}"
        x = attention(f"{lay}.attention", x, x, ext_mask)
        if i >= fusion:
            x = attention(f"{lay}.crossattention", x, enc, enc_ext)
        h = lin(F.gelu(lin(x, f"{lay}.intermediate.dense")), f"{lay}.output.dense")
        adapt = _adapter_fn(sites.get((site_kind, i)), mode)
        if adapt is None:
            x = ln(h + x, f"{lay}.output.LayerNorm")
        else:  # Adapter.adapter_layer_forward_bert: residual = h; LN(h + x) -> adapter; LN(h + up + x)
            up = adapt(ln(h + x, f"{lay}.output.LayerNorm"))
            x = ln((h + up) + x, f"{lay}.output.LayerNorm")
    return x


def torch_decoder(sd, cfg, ids, mask, q, q_mask, sites, mode):
    """BertLMHeadModel: causal mask, cross-attention everywhere, tied LM head; returns logits."""
    La = ids.shape[1]
    causal = (torch.arange(La)[None, :] <= torch.arange(La)[:, None]).float()
    ext = (1.0 - causal[None, None] * mask[:, None, None, :].float()) * -10000.0
    q_ext = (1.0 - q_mask[:, None, None, :].float()) * -10000.0
    h = torch_bert(
        sd, "text_decoder.bert", cfg, ids, ext, q, q_ext, cfg.decoder_layers, 0, sites, "dec", mode
    )
    c = "text_decoder.cls.predictions"
    t = F.gelu(F.linear(h, sd[f"{c}.transform.dense.weight"], sd[f"{c}.transform.dense.bias"]))
    t = F.layer_norm(
        t,
        (cfg.hidden_size,),
        sd[f"{c}.transform.LayerNorm.weight"],
        sd[f"{c}.transform.LayerNorm.bias"],
        eps=1e-12,
    )
    return F.linear(t, sd[f"{c}.decoder.weight"], sd[f"{c}.decoder.bias"])


def torch_albef(sd, cfg, inputs, sites=None, mode="none", k=None):
    """(sequence log-likelihood [B, A] of every candidate, ALBEF rank_answer (topk_ids, topk_probs)
    and the re-rank log-prob sums [B, k])."""
    sites = sites or {}
    pixels = _t(inputs["pixel_values"]).permute(0, 3, 1, 2)
    q_ids, q_mask, a_ids, a_mask = (
        torch.tensor(np.asarray(inputs[k]), dtype=torch.long)
        for k in ("input_ids", "attention_mask", "answer_input_ids", "answer_attention_mask")
    )
    image = torch_vit(sd, cfg, pixels, sites, mode)
    q = torch_bert(
        sd,
        "text_encoder",
        cfg,
        q_ids,
        (1.0 - q_mask[:, None, None, :].float()) * -10000.0,
        image,
        torch.zeros(1),
        cfg.encoder_layers,
        cfg.text_layers,
        sites,
        "enc",
        mode,
    )
    nb, na = q.shape[0], a_ids.shape[0]
    # every candidate of every question (model_vqa's training path / rank_answer's second pass)
    rep = lambda x: x.repeat_interleave(na, 0)  # = model_vqa.tile
    logits = torch_decoder(
        sd, cfg, a_ids.repeat(nb, 1), a_mask.repeat(nb, 1), rep(q), rep(q_mask), sites, mode
    )
    targets = a_ids.repeat(nb, 1).masked_fill(a_ids.repeat(nb, 1) == 0, -100)
    loss = (
        F.cross_entropy(
            logits[:, :-1].reshape(-1, cfg.vocab_size), targets[:, 1:].reshape(-1), reduction="none"
        )
        .view(nb * na, -1)
        .sum(1)
    )
    loglik = -loss.view(nb, na)
    if k is None:
        return loglik.double().numpy()
    # model_vqa.rank_answer
    start = torch_decoder(
        sd, cfg, a_ids[0, 0].repeat(nb, 1), torch.ones(nb, 1), q, q_mask, sites, mode
    )
    prob_first = F.softmax(start[:, 0, :], dim=1).index_select(1, a_ids[:, 1])
    topk_probs, topk_ids = prob_first.topk(k, dim=1)
    sums = topk_probs.log() + torch.gather(loglik, 1, topk_ids)
    probs, rerank = F.softmax(sums, -1).topk(k, dim=1)
    ranked_ids = torch.gather(topk_ids, 1, rerank)
    return (
        loglik.double().numpy(),
        ranked_ids.numpy(),
        probs.numpy(),
        topk_ids.numpy(),
        sums.numpy(),
    )


def torch_sites(params, cfg=CFG):
    """Our adapter params, keyed like the reference's sites."""
    p = params["albef"]
    sites = {("vit", i): p["visual_encoder"][f"blocks_{i}"] for i in range(cfg.vision_layers)}
    sites.update(
        {
            ("enc", i): p["text_encoder"]["encoder"][f"layer_{i}"]["output"]
            for i in range(cfg.encoder_layers)
        }
    )
    sites.update(
        {
            ("dec", i): p["text_decoder"]["encoder"][f"layer_{i}"]["output"]
            for i in range(cfg.decoder_layers)
        }
    )
    return sites


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
def make_inputs(seed=0, num_answers=A, answer_len=LA):
    rng = np.random.default_rng(seed)
    q_mask = np.ones((B, L), np.int32)
    q_mask[1, 4:] = 0
    ids = np.zeros((num_answers, answer_len), np.int32)
    mask = np.zeros((num_answers, answer_len), np.int32)
    firsts = rng.choice(
        np.arange(5, CFG.vocab_size), num_answers, replace=False
    )  # no first-token ties
    for a in range(num_answers):  # "[CLS] w (w) [SEP] [SEP]" with 1 or 2 answer words, then padding
        row = [1, firsts[a], *rng.integers(5, CFG.vocab_size, a % 2), 2, 2]
        ids[a, : len(row)], mask[a, : len(row)] = row, 1
    return {
        "input_ids": rng.integers(1, CFG.vocab_size, (B, L)).astype(np.int32) * q_mask,
        "attention_mask": q_mask,
        "pixel_values": rng.normal(size=(B, CFG.image_size, CFG.image_size, 3)).astype(np.float32),
        "answer_input_ids": ids,
        "answer_attention_mask": mask,
    }


def random_params(model, seed=0):
    """A parameter tree of the model's shapes with the model's init distributions (normal(0.02)
    weights, zero biases, unit scales), built without compiling `init` (slow on CPU)."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), example_inputs(model.config))["params"]
    rng = np.random.default_rng(seed)

    def leaf(path, shape, dtype):
        if path.endswith("bias"):
            return np.zeros(shape, dtype)
        if path.endswith("scale"):
            return np.ones(shape, dtype)
        return (0.02 * rng.standard_normal(shape)).astype(dtype)

    return unflatten(
        {path: jnp.asarray(leaf(path, s.shape, s.dtype)) for path, s in flatten(shapes).items()}
    )


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """(path of a random ALBEF.pth in the released layout, its state dict, our loaded params)."""
    path = tmp_path_factory.mktemp("albef") / "ALBEF.pth"
    sd = released_state_dict()
    save_released(path, sd)
    return path, sd, load_albef_params(path, random_params(AlbefVQA(CFG, DAT)), CFG)


_APPLY = {}


def apply_fn(model):
    """One jitted apply per model (compiles once per adapter mode)."""
    if model not in _APPLY:
        _APPLY[model] = jax.jit(
            lambda p, x, mode: model.apply({"params": p}, x, adapter_mode=mode), static_argnums=2
        )
    return _APPLY[model]


def torch_interpolate_pos_embed(pos, grid):
    """ALBEF's models/vit.interpolate_pos_embed."""
    old = int((pos.shape[-2] - 1) ** 0.5)
    tokens = pos[:, 1:].reshape(-1, old, old, pos.shape[-1]).permute(0, 3, 1, 2)
    tokens = F.interpolate(tokens, size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:, :1], tokens.permute(0, 2, 3, 1).flatten(1, 2)], dim=1)


def reference_state(sd):
    """The state dict ALBEF's VQA model ends up with (key surgery + position-embedding resize)."""
    vqa = albef_vqa_surgery(sd)
    vqa["visual_encoder.pos_embed"] = torch_interpolate_pos_embed(
        vqa["visual_encoder.pos_embed"], CFG.grid
    )
    return vqa


def scaled_adapters(params, factor=20.0):
    """Adapters big enough that a misplaced site shows in the scores."""
    flat = flatten(params)
    return unflatten({k: v * factor if "/adapter_" in k else v for k, v in flat.items()})


def with_padded_candidate(inputs):
    """The answer list plus one all-zero row (a client with fewer real answers than A)."""
    return {
        **inputs,
        **{
            k: np.concatenate([inputs[k], np.zeros((1, LA), np.int32)])
            for k in ("answer_input_ids", "answer_attention_mask")
        },
    }


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------
def test_released_checkpoint_loads_and_matches_torch_albef(released):
    """ALBEF.pth layout -> our tree (decoder = the encoder's last layer, head = MLM head, resized
    pos_embed); our scores = ALBEF's per-candidate answer log-likelihoods, with FedDAT's adapters."""
    _, sd, params = released
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


def test_rank_k_reproduces_albef_rank_answer(released):
    """rank_k > 0: top-k by first-token probability, re-ranked by first-token log-prob + sequence
    log-likelihood; rank_answers returns ALBEF's (topk_ids, topk_probs)."""
    _, sd, params = released
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


def test_checkpoint_layouts_roundtrip_and_safetensors_conversion(released, tmp_path):
    path, _, params = released
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
def test_zero_up_projections_equal_the_plain_model(released, peft, modes):
    """Equal up to float32 rounding (XLA compiles the two programs differently: <= 1e-6 relative)."""
    _, _, loaded = released
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


# ---------------------------------------------------------------------------------------------
# a FedDAT round with the tiny ALBEF: vmapped through make_round_fn == per-client loop
# ---------------------------------------------------------------------------------------------
# Full batches only (one compile of the reference step); clients 0 and 2 end with padding-only steps,
# which the round must skip. Partial batches (example masks) are covered model-agnostically by
# tests/test_round.py.
SIZES, KINDS, REAL = (4, 6, 2), (0, 1, 0), (4, 3, 4)
OPTIM = local_optim.LocalOptimConfig(learning_rate=1e-2, schedule_epochs=2.0)


def client_data(seed, n, kind, real):
    """n examples (unbatched) and the client's own answer list (`real` real answers of A)."""
    rng = np.random.default_rng(seed)
    answers = make_inputs(seed=100 + seed)
    ids, mask = answers["answer_input_ids"].copy(), answers["answer_attention_mask"].copy()
    ids[real:], mask[real:] = 0, 0
    label = rng.integers(0, real, n)
    targets = np.zeros((n, A), np.float32)
    targets[np.arange(n), label] = rng.choice([0.3, 0.6, 1.0], n) if kind == 0 else 1.0
    q_mask = np.ones((n, L), np.int32)
    q_mask[0, 3:] = 0
    examples = {
        "input_ids": rng.integers(1, CFG.vocab_size, (n, L)).astype(np.int32) * q_mask,
        "attention_mask": q_mask,
        "image": rng.integers(0, 256, (n, CFG.image_size, CFG.image_size, 3)).astype(np.uint8),
        "targets": targets,
        "example_mask": np.ones((n,), np.float32),
    }
    return examples, {"answer_input_ids": ids, "answer_attention_mask": mask}


def epoch_batches(examples, answers, steps):
    """[S, B, ...] padded per-example arrays + the answer list repeated over the S steps."""
    out = {}
    for k, v in examples.items():
        pad = np.zeros((steps * B - len(v),) + v.shape[1:], v.dtype)
        out[k] = np.concatenate([v, pad]).reshape((steps, B) + v.shape[1:])
    return {**out, **{k: np.broadcast_to(v, (steps,) + v.shape).copy() for k, v in answers.items()}}


@pytest.mark.slow  # ~1 min on 2 CPU cores: compiling the vmapped round and the reference step
def test_feddat_round_with_albef_vmapped_equals_per_client_loop(released):
    _, _, params = released
    model = AlbefVQA(CFG, DAT)

    def forward(p, batch, mode):
        return model.apply({"params": p}, to_albef_inputs(batch), adapter_mode=mode)

    algorithm = FedDAT(forward, FedDATConfig(optim=OPTIM))
    frozen, shared, private = split(params, rules_for("feddat"))
    assert (
        set(private) == {"albef", "head"} and merge(frozen, shared, private).keys() == params.keys()
    )
    data = [client_data(c, n, k, r) for c, (n, k, r) in enumerate(zip(SIZES, KINDS, REAL))]
    steps = max(-(-n // B) for n in SIZES)
    batches = stack_clients([epoch_batches(ex, ans, steps) for ex, ans in data])
    answer_mask = np.zeros((len(SIZES), A), np.float32)
    for c, r in enumerate(REAL):
        answer_mask[c, :r] = 1.0
    tasks = ClientTasks(
        answer_mask=jnp.asarray(answer_mask),
        task_kind=jnp.asarray(KINDS, jnp.int32),
        num_examples=jnp.asarray(SIZES, jnp.int32),
    )
    server_tx = make_server_optimizer("fedavg")
    server = init_server_state(shared, server_tx, jax.random.key(1))
    private_C = stack_clients([algorithm.init_private(shared, private)] * len(SIZES))

    run = make_round_fn(algorithm, server_tx, MeanAggregator("weighted"))
    new_server, new_private_C, metrics = run(
        frozen, server, private_C, tasks, jnp.arange(len(SIZES)), batches
    )

    # each client alone, on its unpadded batches, then the size-weighted average
    train_key, _ = round_keys(server)
    step = jax.jit(algorithm.local_step)
    deltas, privates = [], []
    for cid, (examples, answers) in enumerate(data):
        task = ClientTasks(
            *(x[cid] for x in (tasks.answer_mask, tasks.task_kind, tasks.num_examples))
        )
        ctx = client_context(frozen, server.shared, task, B, server.round)
        local = algorithm.begin_round(ctx, algorithm.init_private(shared, private))
        key = jax.random.fold_in(train_key, cid)
        for s, start in enumerate(range(0, SIZES[cid], B)):
            batch = {**{k: v[start : start + B] for k, v in examples.items()}, **answers}
            local, _ = step(ctx, local, batch, jax.random.fold_in(key, s))
        shared_k, private_k = algorithm.end_round(ctx, local)
        deltas.append(jax.tree.map(jnp.subtract, shared_k, server.shared))
        privates.append(private_k)
    w = np.asarray(SIZES, np.float32) / sum(SIZES)
    ref_shared = jax.tree.map(
        lambda g, *d: g + sum(wi * di for wi, di in zip(w, d)), server.shared, *deltas
    )

    diff = lambda a, b: max(
        float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
    )
    assert diff(new_server.shared, ref_shared) <= 1e-5
    assert diff(new_private_C, stack_clients(privates)) <= 1e-5
    assert diff(new_server.shared, server.shared) > 1e-3  # the round really trained A_s
    assert (
        diff(new_private_C["params"]["head"], jax.tree.map(lambda x: x[None], private["head"]))
        > 1e-3
    )
    np.testing.assert_array_equal(metrics["clients"]["steps"], [2, 3, 1])
    assert np.all(np.isfinite(np.asarray(metrics["clients"]["loss_shared"])))
