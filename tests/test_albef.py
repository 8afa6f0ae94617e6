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
from albef_reference import (
    CFG,
    albef_vqa_surgery,
    released_state_dict,
    save_released,
    torch_albef,
    torch_sites,
)

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

DAT = PeftConfig(adapters=("shared", "client"))
B, L, A, LA = 2, 6, 4, 5


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
