"""Readers of the question-answering sources (VQA v2, VQA abstract, VizWiz, GQA, COCO-QA, AQUA,
CLOVE), on tiny fixtures in each source's released format."""

from __future__ import annotations

import json

import pytest
import reader_fixtures as fx
from reader_helpers import decode_image, read_examples

from feddat_jax.data.readers import MalformedRecordError, get_reader

# ------------------------------------------------------------------------------------ VQA format


def test_vqav2_soft_scores_min_count_over_3(tmp_path):
    fx.write_vqa(
        tmp_path,
        "vqav2",
        "train",
        [
            {
                "question_id": 458752000,
                "image_id": 458752,
                "question": "What is this photo taken looking through?",
                "answers": ["net"] * 7 + ["netting", "netting", "Mesh "],
            },
            {
                "question_id": 262148000,
                "image_id": 262148,
                "question": "Where is he looking?",
                "answers": ["down"] * 10,
            },
        ],
    )
    exs = read_examples("vqav2", tmp_path, "train")
    assert [e.example_id for e in exs] == ["vqav2/train/458752000", "vqav2/train/262148000"]
    assert exs[0].question == "What is this photo taken looking through?"
    assert exs[0].answers == pytest.approx({"net": 1.0, "netting": 2 / 3, "mesh": 1 / 3})
    assert exs[1].answers == {"down": 1.0}
    src = tmp_path / "train2014" / "COCO_train2014_000000458752.jpg"
    assert exs[0].image == src.read_bytes()  # JPEG bytes kept as released
    assert decode_image(exs[0]).format == "JPEG"


def test_vqa_abstract_annotator_scores_and_png_images(tmp_path):
    fx.write_vqa(
        tmp_path,
        "vqa_abstract",
        "val",
        [
            {
                "question_id": 50,
                "image_id": 5,
                "question": "Who is sitting?",
                "answers": ["man"] * 5 + ["woman"] * 3 + ["boy"] * 2 + ["dog"],
            },
        ],
    )
    (ex,) = read_examples("vqa_abstract", tmp_path, "val")
    assert ex.answers == {"man": 1.0, "woman": 0.9, "boy": 0.6, "dog": 0.3}
    assert ex.example_id == "vqa_abstract/val/50"
    assert decode_image(ex).format == "PNG"
    assert (
        tmp_path / "scene_img_abstract_v002_val2015" / "abstract_v002_val2015_000000000005.png"
    ).read_bytes() == ex.image


def test_vqa_annotation_without_question_is_malformed_with_line(tmp_path):
    fx.write_vqa(
        tmp_path,
        "vqav2",
        "val",
        [{"question_id": 1, "image_id": 1, "question": "q?", "answers": ["a"] * 10}],
    )
    apath = tmp_path / "v2_mscoco_val2014_annotations.json"
    doc = json.loads(apath.read_text())
    doc["annotations"][0]["question_id"] = 999
    apath.write_text(json.dumps(doc, indent=1))
    with pytest.raises(MalformedRecordError) as err:
        read_examples("vqav2", tmp_path, "val")
    assert err.value.path == str(apath) and err.value.line > 1
    assert "question_id 999" in str(err.value) and str(apath) in str(err.value)


# ------------------------------------------------------------------------------------- VizWiz


def test_vizwiz(tmp_path):
    fx.write_vizwiz(
        tmp_path,
        "train",
        [
            {
                "index": 0,
                "question": "What's the name of this product?",
                "answers": ["basil leaves"] * 4
                + ["basil"] * 3
                + ["unanswerable"] * 2
                + ["Basil Leaves"],
            },
            {"index": 1, "question": "What is this?", "answers": ["soda"] * 10},
        ],
    )
    exs = read_examples("vizwiz", tmp_path, "train")
    assert exs[0].example_id == "vizwiz/train/VizWiz_train_00000000"
    assert exs[0].answers == {"basil leaves": 1.0, "basil": 0.9, "unanswerable": 0.6}
    assert exs[1].answers == {"soda": 1.0}
    assert exs[1].image == (tmp_path / "train" / "VizWiz_train_00000001.jpg").read_bytes()


# ---------------------------------------------------------------------------------------- GQA


def test_gqa_balanced_questions_keyed_by_id(tmp_path):
    fx.write_gqa(
        tmp_path,
        "val",
        [
            {
                "question_id": "02930152",
                "image_id": "2354786",
                "question": "Is the sky dark?",
                "answer": "Yes",
            },
            {
                "question_id": "07333408",
                "image_id": "2375429",
                "question": "What is on the white wall?",
                "answer": "pipe",
            },
        ],
    )
    exs = read_examples("gqa", tmp_path, "val")
    assert [(e.example_id, e.question, e.answers) for e in exs] == [
        ("gqa/val/02930152", "Is the sky dark?", {"yes": 1.0}),
        ("gqa/val/07333408", "What is on the white wall?", {"pipe": 1.0}),
    ]
    assert exs[1].image == (tmp_path / "images" / "2375429.jpg").read_bytes()


# ------------------------------------------------------------------------------------ COCO-QA


def test_cocoqa_parallel_text_files(tmp_path):
    fx.write_cocoqa(
        tmp_path,
        "test",
        [
            {
                "image_id": 262148,
                "question": "what is the man riding on the street",
                "answer": "skateboard",
                "type": 0,
            },
            {
                "image_id": 393225,
                "question": "how many bowls of soup are there",
                "answer": "two",
                "type": 1,
            },
        ],
    )
    exs = read_examples("cocoqa", tmp_path, "test")
    assert [(e.example_id, e.question, e.answers) for e in exs] == [
        ("cocoqa/test/0", "what is the man riding on the street", {"skateboard": 1.0}),
        ("cocoqa/test/1", "how many bowls of soup are there", {"two": 1.0}),
    ]
    assert exs[0].image == (tmp_path / "val2014" / "COCO_val2014_000000262148.jpg").read_bytes()


def test_cocoqa_bad_type_and_short_file_name_file_and_line(tmp_path):
    fx.write_cocoqa(
        tmp_path,
        "train",
        [
            {"image_id": 1, "question": "what color is the cat", "answer": "black", "type": 2},
            {"image_id": 2, "question": "where is the cat", "answer": "sofa", "type": 7},
        ],
    )
    with pytest.raises(MalformedRecordError, match=r"types\.txt:2: .*type '7'"):
        read_examples("cocoqa", tmp_path, "train")
    (tmp_path / "train" / "types.txt").write_text("2\n")
    with pytest.raises(MalformedRecordError, match=r"types\.txt:2: .*ends before"):
        read_examples("cocoqa", tmp_path, "train")


# --------------------------------------------------------------------------------------- AQUA


def test_aqua(tmp_path):
    fx.write_aqua(
        tmp_path,
        "train",
        [
            {
                "image": "23361-01lucret.jpg",
                "question": "who was portrayed as a symbol of purity",
                "answer": "Lucretia",
                "external": True,
            },
            {
                "image": "00001-1annunci.jpg",
                "question": "what is the angel holding",
                "answer": "lily",
            },
        ],
    )
    exs = read_examples("aqua", tmp_path, "train")
    assert [(e.example_id, e.answers) for e in exs] == [
        ("aqua/train/0", {"lucretia": 1.0}),
        ("aqua/train/1", {"lily": 1.0}),
    ]
    assert exs[0].image == (tmp_path / "SemArt" / "Images" / "23361-01lucret.jpg").read_bytes()


# -------------------------------------------------------------------------------------- CLOVE


def test_clove_function_and_scene_files(tmp_path):
    fx.write_clove(
        tmp_path,
        "function",
        "attribute",
        "train",
        [
            {
                "question_id": "g06778809",
                "image_id": "440",
                "question": "What color is the kiosk?",
                "answer": "white",
            }
        ],
    )
    fx.write_clove(
        tmp_path,
        "scene",
        "ShopAndDining",
        "val",
        [
            {
                "question_id": "g1",
                "image_id": "441",
                "question": "What place is this?",
                "answer": "kiosk",
            },
            {
                "question_id": "t2",
                "image_id": "abc123",
                "question": "What brand?",
                "answer": "Nike",
                "image_source": "textvqa",
            },
        ],
    )
    assert (tmp_path / "json/scene/scene_a#ShopAndDining_val.json").is_file()
    (ex,) = read_examples("clove", tmp_path, "train", setting="function", subset="attribute")
    assert (ex.example_id, ex.question, ex.answers) == (
        "clove_function_attribute/train/g06778809",
        "What color is the kiosk?",
        {"white": 1.0},
    )
    assert ex.image == (tmp_path / "vg/image/440.jpg").read_bytes()
    exs = read_examples("clove", tmp_path, "val", setting="scene", subset="ShopAndDining")
    assert [e.answers for e in exs] == [{"kiosk": 1.0}, {"nike": 1.0}]
    assert exs[1].image == (tmp_path / "textvqa/abc123.jpg").read_bytes()
    with pytest.raises(ValueError, match="scenetext|subset"):
        get_reader("clove", setting="scene", subset="attribute")
