"""A PyTorch reference for the ALBEF tests: a random state dict in the released ``ALBEF.pth``
layout and a functional PyTorch ALBEF (ViT, BERT, decoder, rank_answer) with the official FedDAT
adapter placements. Kept apart from tests/test_albef_*.py so the tests read on their own."""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F

from feddat_jax.models.albef import AlbefConfig

CFG = AlbefConfig.tiny()  # 2 ViT, 1 text, 2 fusion, 1 decoder layers: 6 adapter sites
PRETRAIN_GRID = (
    3  # the checkpoint's ViT grid (48 px); the model's is 2 (32 px): pos_embed is resized
)


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
