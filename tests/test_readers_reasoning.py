"""Readers of the reasoning, entailment and multiple-choice sources (NLVR2, SNLI-VE, VCR), on tiny
fixtures in each source's released format."""

from __future__ import annotations

import pytest
import reader_fixtures as fx
from reader_helpers import decode_image, read_examples

from feddat_jax.data.readers import MalformedRecordError, get_reader

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
    exs = read_examples("nlvr2", tmp_path, "train")
    assert [(e.example_id, e.question, e.answers) for e in exs] == [
        ("nlvr2/train/train-10171-0-0", "One image shows exactly two dogs.", {"true": 1.0}),
        ("nlvr2/train/train-10171-1-1", "There is a cat.", {"false": 1.0}),
    ]
    assert decode_image(exs[0]).size == (6 + 5, 4)  # right image 10x8 scaled to the common height 4
    assert decode_image(exs[1]).size == (6 + 8, 4)
    assert get_reader("nlvr2").task_kind == "classification"
    assert get_reader("nlvr2").labels == ("false", "true")


def test_nlvr2_dev_without_directory(tmp_path):
    fx.write_nlvr2(
        tmp_path, "dev", [{"identifier": "dev-850-0-0", "sentence": "s", "label": "False"}]
    )
    (ex,) = read_examples("nlvr2", tmp_path, "dev")
    assert ex.answers == {"false": 1.0} and decode_image(ex).size == (6 + 8, 4)


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
    exs = read_examples("snli_ve", tmp_path, "dev")
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
        read_examples("snli_ve", tmp_path, "test")


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
    (ex,) = read_examples("vcr", tmp_path, "val")
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
        read_examples("vcr", tmp_path, "train")
