"""Tiny fixtures in each source's exact released file format (for tests and offline smoke runs).

Every ``write_*`` function writes the annotation file(s) of one split of one source exactly as the
official release lays them out (names, folders, JSON/JSONL/text structure, field names; see the
reader modules' docstrings) plus one tiny image per referenced image file. ``make_source`` fills a
source with synthetic items following an answer profile; ``make_benchmark_raw_dir`` does it for
every client of a benchmark. Nothing here is used by the readers themselves.
"""

from __future__ import annotations

import io
import json
import zlib
from pathlib import Path
from typing import Sequence

from feddat_jax.data.readers.clove import SCENES, annotation_name

# --------------------------------------------------------------------------------------------
# images


def image_bytes(key: str, fmt: str = "JPEG", size: tuple = (6, 4)) -> bytes:
    """A tiny solid-colour image, its colour derived from ``key`` (so images differ)."""
    from PIL import Image

    c = zlib.crc32(key.encode())
    img = Image.new("RGB", size, (c & 255, (c >> 8) & 255, (c >> 16) & 255))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def write_image(path: Path, fmt: str = "JPEG", size: tuple = (6, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(str(path.name), fmt, size))
    return path


def _dump(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))
    return path


def _dump_lines(path: Path, objs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


# --------------------------------------------------------------------------------------------
# per-source writers: items are plain dicts, see each signature


def _vqa_answers(answers: Sequence[str]) -> list[dict]:
    return [
        {"answer": a, "answer_confidence": "yes", "answer_id": i + 1} for i, a in enumerate(answers)
    ]


def write_vqa(root: Path, kind: str, split: str, items: Sequence[dict]) -> None:
    """VQAv2 (``kind='vqav2'``) or VQA Abstract (``'vqa_abstract'``); item: ``question_id``,
    ``image_id`` (int), ``question``, ``answers`` (list of the annotators' answers)."""
    if kind == "vqav2":
        sub, qname = f"{split}2014", f"v2_OpenEnded_mscoco_{split}2014_questions.json"
        aname, dtype = f"v2_mscoco_{split}2014_annotations.json", "mscoco"
        img = lambda i: root / sub / f"COCO_{sub}_{i:012d}.jpg"  # noqa: E731
        fmt = "JPEG"
    else:
        sub, qname = f"{split}2015", f"OpenEnded_abstract_v002_{split}2015_questions.json"
        aname, dtype = f"abstract_v002_{split}2015_annotations.json", "abstract_v002"
        img = lambda i: (
            root
            / f"scene_img_abstract_v002_{sub}"  # noqa: E731
            / f"abstract_v002_{sub}_{i:012d}.png"
        )
        fmt = "PNG"
    info = {"description": "fixture", "version": "2.0", "year": 2017}
    lic = {"name": "Creative Commons Attribution 4.0 International License", "url": ""}
    _dump(
        root / qname,
        {
            "info": info,
            "task_type": "Open-Ended",
            "data_type": dtype,
            "data_subtype": sub,
            "license": lic,
            "questions": [
                {
                    "image_id": it["image_id"],
                    "question": it["question"],
                    "question_id": it["question_id"],
                }
                for it in items
            ],
        },
    )
    _dump(
        root / aname,
        {
            "info": info,
            "license": lic,
            "data_subtype": sub,
            "data_type": dtype,
            "annotations": [
                {
                    "question_type": "what",
                    "multiple_choice_answer": it["answers"][0],
                    "answers": _vqa_answers(it["answers"]),
                    "image_id": it["image_id"],
                    "answer_type": "other",
                    "question_id": it["question_id"],
                }
                for it in items
            ],
        },
    )
    for it in items:
        write_image(img(it["image_id"]), fmt)


def write_vizwiz(root: Path, split: str, items: Sequence[dict]) -> None:
    """Item: ``index`` (int), ``question``, ``answers`` (10 strings)."""
    recs = []
    for it in items:
        image = f"VizWiz_{split}_{it['index']:08d}.jpg"
        recs.append(
            {
                "image": image,
                "question": it["question"],
                "answers": [{"answer": a, "answer_confidence": "yes"} for a in it["answers"]],
                "answer_type": "other",
                "answerable": 1,
            }
        )
        write_image(root / split / image)
    _dump(root / "Annotations" / f"{split}.json", recs)


def write_gqa(root: Path, split: str, items: Sequence[dict]) -> None:
    """Item: ``question_id`` (str), ``image_id`` (str), ``question``, ``answer``."""
    recs = {}
    for it in items:
        recs[it["question_id"]] = {
            "semantic": [{"operation": "select", "dependencies": [], "argument": "scene"}],
            "entailed": [],
            "equivalent": [it["question_id"]],
            "question": it["question"],
            "imageId": it["image_id"],
            "isBalanced": True,
            "groups": {"global": None, "local": "13-thing"},
            "answer": it["answer"],
            "semanticStr": "select: scene",
            "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
            "types": {"detailed": "place", "semantic": "global", "structural": "query"},
            "fullAnswer": f"It is {it['answer']}.",
        }
        write_image(root / "images" / f"{it['image_id']}.jpg")
    _dump(root / "questions1.2" / f"{split}_balanced_questions.json", recs)


def write_cocoqa(root: Path, split: str, items: Sequence[dict]) -> None:
    """Item: ``image_id`` (int), ``question``, ``answer``, ``type`` (0..3)."""
    d = root / split
    d.mkdir(parents=True, exist_ok=True)
    cols = {
        "img_ids.txt": "image_id",
        "questions.txt": "question",
        "answers.txt": "answer",
        "types.txt": "type",
    }
    for fname, key in cols.items():
        (d / fname).write_text("".join(f"{it[key]}\n" for it in items))
    coco = "train2014" if split == "train" else "val2014"
    for it in items:
        write_image(root / coco / f"COCO_{coco}_{it['image_id']:012d}.jpg")


def write_aqua(root: Path, split: str, items: Sequence[dict]) -> None:
    """Item: ``image`` (SemArt file name), ``question``, ``answer``, ``external`` (bool)."""
    _dump(
        root / "AQUA" / f"{split}.json",
        [
            {
                "image": it["image"],
                "question": it["question"],
                "answer": it["answer"],
                "need_external_knowledge": bool(it.get("external", False)),
            }
            for it in items
        ],
    )
    for it in items:
        write_image(root / "SemArt" / "Images" / it["image"])


def write_clove(root: Path, setting: str, subset: str, split: str, items: Sequence[dict]) -> None:
    """Item: ``question_id``, ``image_id`` (str), ``question``, ``answer``, optional
    ``image_source`` ('vg' default, or 'textvqa')."""
    stage = subset if setting == "function" else f"{SCENES[subset]}#{subset}"
    recs = []
    for it in items:
        src = it.get("image_source", "vg")
        recs.append(
            {
                "answer": it["answer"],
                "answers": [it["answer"]] * 10,
                "feature_path": f"{it['image_id']}.npy",
                "gqa_question": {},
                "gt_scene_graph_mask": [1, 0],
                "gt_scene_graph_seq": ["thing [SEP]"],
                "image_id": it["image_id"],
                "image_source": src,
                "ocr": [],
                "ocr_info": [],
                "ocr_tokens": [],
                "pred_scene_graph_seq": ["thing near thing [SEP]"],
                "program": [{"argument": "scene", "dependencies": [], "operation": "select"}],
                "question": it["question"],
                "question_id": it["question_id"],
                "raw_question_type": {
                    "detailed": "place",
                    "semantic": "global",
                    "structural": "query",
                },
                "set_name": split,
                "stage": stage,
                "supporting_fact": [],
            }
        )
        img_dir = root / ("vg/image" if src == "vg" else "textvqa")
        write_image(img_dir / f"{it['image_id']}.jpg")
    _dump(root / "json" / annotation_name(setting, subset, split), recs)


def write_nlvr2(root: Path, split: str, items: Sequence[dict]) -> None:
    """Item: ``identifier`` (``split-set-pair-sentence``), ``sentence``, ``label`` ('True' /
    'False'), optional ``image_format`` ('PNG' default; 'JPEG' writes a JPEG named .png) and
    ``sizes`` ((w, h) of left and right)."""
    recs = []
    for it in items:
        rec = {
            "validation": {"0": it["label"]},
            "sentence": it["sentence"],
            "left_url": "https://example.org/l.jpg",
            "writer": "1",
            "label": it["label"],
            "right_url": "https://example.org/r.jpg",
            "synset": "thing",
            "query": "things1",
            "identifier": it["identifier"],
            "extra_validations": {},
        }
        stem = "-".join(it["identifier"].split("-")[:3])
        img_dir = root / "images" / split
        if split == "train":
            rec["directory"] = int(it["identifier"].split("-")[1]) % 100
            img_dir = img_dir / str(rec["directory"])
        sizes = it.get("sizes", ((6, 4), (8, 4)))
        for k in (0, 1):
            write_image(img_dir / f"{stem}-img{k}.png", it.get("image_format", "PNG"), sizes[k])
        recs.append(rec)
    _dump_lines(root / "data" / f"{split}.json", recs)


def write_snli_ve(
    root: Path, split: str, items: Sequence[dict], id_field: str = "Flikr30kID"
) -> None:
    """Item: ``pair_id``, ``image_id`` (str digits), ``hypothesis``, ``label``. ``id_field``
    'Flikr30kID' writes ``"<id>.jpg"`` (the original generator), 'Flickr30K_ID' the bare id."""
    recs = []
    for it in items:
        rec = {
            "annotator_labels": [it["label"]],
            "captionID": f"{it['image_id']}.jpg#0",
            "gold_label": it["label"],
            "pairID": it["pair_id"],
            "sentence1": "A caption that the reader must not use.",
            "sentence1_binary_parse": "",
            "sentence1_parse": "",
            "sentence2": it["hypothesis"],
            "sentence2_binary_parse": "",
            "sentence2_parse": "",
        }
        rec[id_field] = f"{it['image_id']}.jpg" if id_field == "Flikr30kID" else str(it["image_id"])
        recs.append(rec)
        write_image(root / "flickr30k_images" / f"{it['image_id']}.jpg")
    _dump_lines(root / f"snli_ve_{split}.jsonl", recs)


def write_vcr(root: Path, split: str, items: Sequence[dict]) -> None:
    """Item: ``annot_id``, ``img_fn`` (``movie/file.jpg``), ``objects``, ``question`` (tokens),
    ``answer_choices`` (4 token lists), ``answer_label``."""
    recs = []
    for i, it in enumerate(items):
        recs.append(
            {
                "movie": it["img_fn"].split("/")[0],
                "objects": it["objects"],
                "interesting_scores": [0],
                "answer_likelihood": "likely",
                "img_fn": it["img_fn"],
                "metadata_fn": it["img_fn"].rsplit(".", 1)[0] + ".json",
                "answer_orig": "",
                "question_orig": "",
                "rationale_orig": "",
                "question": it["question"],
                "answer_match_iter": [0, 1, 2, 3],
                "answer_sources": [0, 1, 2, 3],
                "answer_choices": it["answer_choices"],
                "answer_label": it["answer_label"],
                "rationale_choices": [["Because", "."]] * 4,
                "rationale_label": 0,
                "img_id": f"{split}-{i}",
                "question_number": 1,
                "annot_id": it["annot_id"],
                "match_fold": f"{split}-0",
                "match_index": i,
            }
        )
        write_image(root / "vcr1images" / it["img_fn"])
    _dump_lines(root / f"{split}.jsonl", recs)


# --------------------------------------------------------------------------------------------
# synthetic sources following an answer profile

# Index into the answer pool per record; R = a "rare" record (single-answer sources: answer
# pool[3]; multi-annotator sources: 9 x pool[0] and 1 x pool[3]). With top_k = 3 exactly the R
# records fall out of the vocabulary filter, and pool[0..2] is the vocabulary in that order.
PROFILE = (0, 0, 0, 0, 1, 1, 1, 2, 2, "R")


def _synth(profile_idx, pool, multi: bool):
    if profile_idx == "R":
        return ([pool[0]] * 9 + [pool[3]]) if multi else [pool[3]]
    main = pool[profile_idx]
    if not multi:
        return [main]
    return [main] * 10 if main == pool[0] else [main] * 8 + [pool[0]] * 2


def make_source(
    reader: str, root: Path, split: str, n: int, pool: Sequence[str], offset: int = 0, **options
) -> None:
    """``n`` synthetic records of ``reader``'s format in ``root`` following :data:`PROFILE`
    (classification sources cycle their labels). ``offset`` keeps ids/images distinct across
    splits."""
    root = Path(root)
    rows = []
    for i in range(n):
        k = offset + i
        answers = _synth(
            PROFILE[i % len(PROFILE)], pool, reader in ("vqav2", "vqa_abstract", "vizwiz")
        )
        rows.append((k, f"what is thing {k}?", answers))
    if reader in ("vqav2", "vqa_abstract"):
        write_vqa(
            root,
            reader,
            split,
            [
                {"question_id": 1000 + k, "image_id": k, "question": q, "answers": a}
                for k, q, a in rows
            ],
        )
    elif reader == "vizwiz":
        write_vizwiz(root, split, [{"index": k, "question": q, "answers": a} for k, q, a in rows])
    elif reader == "gqa":
        write_gqa(
            root,
            split,
            [
                {"question_id": f"{k:08d}", "image_id": f"n{k}", "question": q, "answer": a[0]}
                for k, q, a in rows
            ],
        )
    elif reader == "cocoqa":
        write_cocoqa(
            root,
            split,
            [
                {"image_id": 500 + k, "question": q, "answer": a[0], "type": k % 4}
                for k, q, a in rows
            ],
        )
    elif reader == "aqua":
        write_aqua(
            root,
            split,
            [{"image": f"{k:05d}-painting.jpg", "question": q, "answer": a[0]} for k, q, a in rows],
        )
    elif reader == "clove":
        tag = options["subset"][:3].lower()
        write_clove(
            root,
            options["setting"],
            options["subset"],
            split,
            [
                {
                    "question_id": f"g{tag}{k:06d}",
                    "image_id": f"{tag}{k}",
                    "question": q,
                    "answer": a[0],
                }
                for k, q, a in rows
            ],
        )
    elif reader == "nlvr2":
        write_nlvr2(
            root,
            split,
            [
                {
                    "identifier": f"{split}-{k}-0-0",
                    "sentence": f"there are {k}",
                    "label": ("True", "False")[k % 2],
                }
                for k, _, _ in rows
            ],
        )
    elif reader == "snli_ve":
        labels = ("entailment", "neutral", "contradiction")
        write_snli_ve(
            root,
            split,
            [
                {
                    "pair_id": f"{k}.jpg#0r1e",
                    "image_id": str(100 + k),
                    "hypothesis": f"a thing {k}",
                    "label": labels[k % 3],
                }
                for k, _, _ in rows
            ],
        )
    elif reader == "vcr":
        write_vcr(
            root,
            split,
            [
                {
                    "annot_id": f"{split}-{k}",
                    "img_fn": f"movie_{k % 2}/shot{k}.jpg",
                    "objects": ["person", "car"],
                    "question": ["Why", "is", [0], "near", [1], "?"],
                    "answer_choices": [[f"choice{j}", "."] for j in range(4)],
                    "answer_label": k % 4,
                }
                for k, _, _ in rows
            ],
        )
    else:
        raise KeyError(reader)


def answer_pool(client: str) -> list[str]:
    """The four synthetic answers of a client, distinct per client, pool[0] < ... < pool[3]."""
    return [f"{client.lower()} {w}" for w in ("alpha", "bravo", "charlie", "delta")]


def make_benchmark_raw_dir(bdef, raw_dir: Path, n_per_split: int = 10) -> Path:
    """A ``--raw_dir`` with a synthetic source for every client of ``bdef``."""
    raw_dir = Path(raw_dir)
    for src in bdef.clients:
        for j, split in enumerate((src.train_split, src.test_split)):
            make_source(
                src.reader,
                raw_dir / src.folder,
                split,
                n_per_split,
                answer_pool(src.client),
                offset=j * n_per_split,
                **dict(src.options),
            )
    return raw_dir
