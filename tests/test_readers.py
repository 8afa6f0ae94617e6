"""Readers of the real benchmarks' sources, on tiny fixtures in each source's released format."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from feddat_jax.data.readers import (
    READERS,
    BadImageError,
    MalformedRecordError,
    MissingSourceError,
    ReadLog,
    get_reader,
)
from feddat_jax.data.readers import fixtures as fx
from feddat_jax.data.readers._common import iter_json_items
from feddat_jax.data.records import Example


def _read(name, root, split, **options):
    return list(get_reader(name, **options).read(root, split))


def _decoded(ex: Example) -> Image.Image:
    img = Image.open(io.BytesIO(ex.image))
    img.load()
    return img


def test_registry_names():
    assert sorted(READERS) == [
        "aqua",
        "clove",
        "cocoqa",
        "gqa",
        "nlvr2",
        "snli_ve",
        "vcr",
        "vizwiz",
        "vqa_abstract",
        "vqav2",
    ]
    with pytest.raises(KeyError, match="unknown reader"):
        get_reader("nope")


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
    exs = _read("vqav2", tmp_path, "train")
    assert [e.example_id for e in exs] == ["vqav2/train/458752000", "vqav2/train/262148000"]
    assert exs[0].question == "What is this photo taken looking through?"
    assert exs[0].answers == pytest.approx({"net": 1.0, "netting": 2 / 3, "mesh": 1 / 3})
    assert exs[1].answers == {"down": 1.0}
    src = tmp_path / "train2014" / "COCO_train2014_000000458752.jpg"
    assert exs[0].image == src.read_bytes()  # JPEG bytes kept as released
    assert _decoded(exs[0]).format == "JPEG"


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
    (ex,) = _read("vqa_abstract", tmp_path, "val")
    assert ex.answers == {"man": 1.0, "woman": 0.9, "boy": 0.6, "dog": 0.3}
    assert ex.example_id == "vqa_abstract/val/50"
    assert _decoded(ex).format == "PNG"
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
        _read("vqav2", tmp_path, "val")
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
    exs = _read("vizwiz", tmp_path, "train")
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
    exs = _read("gqa", tmp_path, "val")
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
    exs = _read("cocoqa", tmp_path, "test")
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
        _read("cocoqa", tmp_path, "train")
    (tmp_path / "train" / "types.txt").write_text("2\n")
    with pytest.raises(MalformedRecordError, match=r"types\.txt:2: .*ends before"):
        _read("cocoqa", tmp_path, "train")


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
    exs = _read("aqua", tmp_path, "train")
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
    (ex,) = _read("clove", tmp_path, "train", setting="function", subset="attribute")
    assert (ex.example_id, ex.question, ex.answers) == (
        "clove_function_attribute/train/g06778809",
        "What color is the kiosk?",
        {"white": 1.0},
    )
    assert ex.image == (tmp_path / "vg/image/440.jpg").read_bytes()
    exs = _read("clove", tmp_path, "val", setting="scene", subset="ShopAndDining")
    assert [e.answers for e in exs] == [{"kiosk": 1.0}, {"nike": 1.0}]
    assert exs[1].image == (tmp_path / "textvqa/abc123.jpg").read_bytes()
    with pytest.raises(ValueError, match="scenetext|subset"):
        get_reader("clove", setting="scene", subset="attribute")


# -------------------------------------------------------------------------------------- NLVR2


def test_nlvr2_pair_side_by_side_and_train_directories(tmp_path):
    fx.write_nlvr2(
        tmp_path,
        "train",
        [
            {
                "identifier": "train-10171-0-0",
                "sentence": "One image shows exactly two dogs.",
                "label": "True",
                "sizes": ((6, 4), (10, 8)),
            },
            {
                "identifier": "train-10171-1-1",
                "sentence": "There is a cat.",
                "label": "False",
                "image_format": "JPEG",
            },  # a JPEG named .png, as some released files are
        ],
    )
    assert (tmp_path / "images/train/71/train-10171-0-img1.png").is_file()
    exs = _read("nlvr2", tmp_path, "train")
    assert [(e.example_id, e.question, e.answers) for e in exs] == [
        ("nlvr2/train/train-10171-0-0", "One image shows exactly two dogs.", {"true": 1.0}),
        ("nlvr2/train/train-10171-1-1", "There is a cat.", {"false": 1.0}),
    ]
    assert _decoded(exs[0]).size == (6 + 5, 4)  # right image 10x8 scaled to the common height 4
    assert _decoded(exs[1]).size == (6 + 8, 4)
    assert get_reader("nlvr2").task_kind == "classification"
    assert get_reader("nlvr2").labels == ("false", "true")


def test_nlvr2_dev_without_directory(tmp_path):
    fx.write_nlvr2(
        tmp_path, "dev", [{"identifier": "dev-850-0-0", "sentence": "s", "label": "False"}]
    )
    (ex,) = _read("nlvr2", tmp_path, "dev")
    assert ex.answers == {"false": 1.0} and _decoded(ex).size == (6 + 8, 4)


# ------------------------------------------------------------------------------------ SNLI-VE


@pytest.mark.parametrize("id_field", ["Flikr30kID", "Flickr30K_ID"])
def test_snli_ve_both_image_id_fields(tmp_path, id_field):
    fx.write_snli_ve(
        tmp_path,
        "dev",
        [
            {
                "pair_id": "3416050480.jpg#4r1n",
                "image_id": "3416050480",
                "hypothesis": "The sisters are hugging goodbye.",
                "label": "neutral",
            },
            {
                "pair_id": "3416050480.jpg#4r1e",
                "image_id": "3416050480",
                "hypothesis": "Two people hug.",
                "label": "entailment",
            },
        ],
        id_field=id_field,
    )
    exs = _read("snli_ve", tmp_path, "dev")
    assert [(e.example_id, e.question, e.answers) for e in exs] == [
        ("snli_ve/dev/3416050480.jpg#4r1n", "The sisters are hugging goodbye.", {"neutral": 1.0}),
        ("snli_ve/dev/3416050480.jpg#4r1e", "Two people hug.", {"entailment": 1.0}),
    ]
    assert exs[0].image == (tmp_path / "flickr30k_images/3416050480.jpg").read_bytes()


def test_snli_ve_bad_label_names_line(tmp_path):
    fx.write_snli_ve(
        tmp_path,
        "test",
        [
            {"pair_id": "1", "image_id": "1", "hypothesis": "h", "label": "entailment"},
            {"pair_id": "2", "image_id": "2", "hypothesis": "h", "label": "-"},
        ],
    )
    path = tmp_path / "snli_ve_test.jsonl"
    with pytest.raises(MalformedRecordError, match=rf"{path}:2: .*gold_label '-'"):
        _read("snli_ve", tmp_path, "test")


# ---------------------------------------------------------------------------------------- VCR


def test_vcr_choices_in_question_and_letter_label(tmp_path):
    fx.write_vcr(
        tmp_path,
        "val",
        [
            {
                "annot_id": "val-0",
                "img_fn": "lsmdc_3015_CHARLIE_ST_CLOUD/3015_00.23.57.935@0.jpg",
                "objects": ["person", "person", "car"],
                "question": ["Why", "is", [0], "looking", "at", [1, 2], "?"],
                "answer_choices": [
                    ["Because", [1], "is", "talking", "."],
                    ["No", "reason", "."],
                    ["To", "drive", "the", [2], "."],
                    ["He", "is", "tired", "."],
                ],
                "answer_label": 2,
            }
        ],
    )
    (ex,) = _read("vcr", tmp_path, "val")
    assert ex.question == (
        "Why is Casey looking at Riley and car? (A) Because Riley is talking. "
        "(B) No reason. (C) To drive the car. (D) He is tired."
    )
    assert ex.answers == {"C": 1.0} and ex.example_id == "vcr/val/val-0"
    assert (
        ex.image
        == (
            tmp_path / "vcr1images/lsmdc_3015_CHARLIE_ST_CLOUD/3015_00.23.57.935@0.jpg"
        ).read_bytes()
    )


def test_vcr_object_reference_out_of_range(tmp_path):
    fx.write_vcr(
        tmp_path,
        "train",
        [
            {
                "annot_id": "train-0",
                "img_fn": "m/a.jpg",
                "objects": ["person"],
                "question": ["Where", "is", [3], "?"],
                "answer_choices": [["x"]] * 4,
                "answer_label": 0,
            }
        ],
    )
    with pytest.raises(MalformedRecordError, match=r"train\.jsonl:1: .*object reference 3"):
        _read("vcr", tmp_path, "train")


# ------------------------------------------------------------------------------ bad input, all


def test_missing_files_and_folders_are_named(tmp_path):
    with pytest.raises(MissingSourceError, match=str(tmp_path / "nothere")):
        _read("gqa", tmp_path / "nothere", "train")
    fx.write_gqa(
        tmp_path, "val", [{"question_id": "1", "image_id": "1", "question": "q", "answer": "a"}]
    )
    with pytest.raises(MissingSourceError, match="train_balanced_questions.json"):
        _read("gqa", tmp_path, "train")
    fx.write_vizwiz(tmp_path / "vw", "val", [{"index": 0, "question": "q", "answers": ["a"]}])
    (tmp_path / "vw" / "val" / "VizWiz_val_00000000.jpg").unlink()
    (tmp_path / "vw" / "val").rmdir()
    with pytest.raises(MissingSourceError, match=r"vizwiz image folder.*vw/val"):
        _read("vizwiz", tmp_path / "vw", "val")
    with pytest.raises(ValueError, match="unknown split"):
        _read("vizwiz", tmp_path / "vw", "test")


def test_malformed_json_array_record_reports_its_line(tmp_path):
    fx.write_aqua(
        tmp_path,
        "val",
        [
            {"image": "a.jpg", "question": "q1", "answer": "x"},
            {"image": "b.jpg", "question": "q2", "answer": "y"},
        ],
    )
    path = tmp_path / "AQUA" / "val.json"
    recs = json.loads(path.read_text())
    del recs[1]["answer"]
    path.write_text(json.dumps(recs, indent=1))
    line_of_second = path.read_text().splitlines().index(" {", 2) + 1
    with pytest.raises(MalformedRecordError) as err:
        _read("aqua", tmp_path, "val")
    assert (err.value.path, err.value.line) == (str(path), line_of_second)
    assert "missing field 'answer'" in str(err.value)
    # under skip_bad the record is skipped and counted, the rest is read
    log = ReadLog(skip_bad=True)
    exs = list(get_reader("aqua").read(tmp_path, "val", log=log))
    assert [e.answers for e in exs] == [{"x": 1.0}]
    assert log.skipped == {"malformed_record": 1} and f"{path}:{line_of_second}" in log.messages[0]


def test_json_syntax_error_is_fatal_with_line(tmp_path):
    path = tmp_path / "Annotations" / "train.json"
    path.parent.mkdir(parents=True)
    (tmp_path / "train").mkdir()
    path.write_text('[\n {"image": "a.jpg",\n  "question": "q" "answers": []}\n]\n')
    for skip_bad in (False, True):
        with pytest.raises(MalformedRecordError, match=rf"{path}:3:19: .*invalid JSON"):
            list(get_reader("vizwiz").read(tmp_path, "train", skip_bad=skip_bad))


def test_jsonl_bad_line_skipped_and_counted(tmp_path):
    fx.write_nlvr2(
        tmp_path,
        "dev",
        [
            {"identifier": "dev-1-0-0", "sentence": "s", "label": "True"},
            {"identifier": "dev-2-0-0", "sentence": "t", "label": "False"},
        ],
    )
    path = tmp_path / "data" / "dev.json"
    lines = path.read_text().splitlines()
    path.write_text(lines[0] + "\n{not json\n" + lines[1] + "\n")
    with pytest.raises(MalformedRecordError, match=rf"{path}:2: .*invalid JSON line"):
        _read("nlvr2", tmp_path, "dev")
    log = ReadLog(skip_bad=True)
    exs = list(get_reader("nlvr2").read(tmp_path, "dev", log=log))
    assert [e.example_id for e in exs] == ["nlvr2/dev/dev-1-0-0", "nlvr2/dev/dev-2-0-0"]
    assert log.skipped == {"malformed_record": 1}


def test_undecodable_or_missing_image_names_the_file(tmp_path):
    fx.write_gqa(
        tmp_path,
        "train",
        [
            {"question_id": "1", "image_id": "100", "question": "q1", "answer": "a"},
            {"question_id": "2", "image_id": "200", "question": "q2", "answer": "b"},
            {"question_id": "3", "image_id": "300", "question": "q3", "answer": "c"},
        ],
    )
    bad = tmp_path / "images" / "200.jpg"
    bad.write_bytes(fx.image_bytes("x")[:40])  # a truncated JPEG
    (tmp_path / "images" / "300.jpg").unlink()
    with pytest.raises(BadImageError, match=rf"{bad}: does not decode"):
        _read("gqa", tmp_path, "train")
    log = ReadLog(skip_bad=True)
    exs = list(get_reader("gqa").read(tmp_path, "train", log=log))
    assert [e.example_id for e in exs] == ["gqa/train/1"]
    assert log.skipped == {"bad_image": 2}
    assert any("300.jpg" in m and "not found" in m for m in log.messages)


def test_iter_json_items_lines_for_keyed_object(tmp_path):
    path = tmp_path / "q.json"
    path.write_text('{"info": {"a": [1, 2]},\n "questions": [\n  {"x": 1},\n\n  {"x": 2}\n ]}')
    items = list(iter_json_items(path, key="questions"))
    assert items == [(3, {"x": 1}), (5, {"x": 2})]
    assert [(p.column, p.index) for p, _ in items] == [(3, 0), (3, 1)]
    # the official VQA files are one long line: the column and record index locate the record
    path.write_text('{"questions": [{"x": 1}, {"y": 2}]}')
    (_, first), (pos, second) = iter_json_items(path, key="questions")
    assert (int(pos), pos.column, pos.index) == (1, 26, 1)
    err = MalformedRecordError(path, pos, "missing field 'x'")
    assert str(err) == f"{path}:1:26: malformed record #1: missing field 'x'"
    with pytest.raises(MalformedRecordError, match="key 'annotations' not found"):
        list(iter_json_items(path, key="annotations"))
