"""What every reader shares: the registry, errors that name the file and line of bad input (missing
files, malformed records, invalid JSON, undecodable images), skip_bad counting, and the JSON item
iterator behind the line numbers."""

from __future__ import annotations

import json

import pytest
import reader_fixtures as fx
from reader_helpers import read_examples

from feddat_jax.data.readers import (
    READERS,
    BadImageError,
    MalformedRecordError,
    MissingSourceError,
    ReadLog,
    get_reader,
)
from feddat_jax.data.readers._common import iter_json_items


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


# ------------------------------------------------------------------------------ bad input, all


def test_missing_files_and_folders_are_named(tmp_path):
    with pytest.raises(MissingSourceError, match=str(tmp_path / "nothere")):
        read_examples("gqa", tmp_path / "nothere", "train")
    fx.write_gqa(
        tmp_path, "val", [{"question_id": "1", "image_id": "1", "question": "q", "answer": "a"}]
    )
    with pytest.raises(MissingSourceError, match="train_balanced_questions.json"):
        read_examples("gqa", tmp_path, "train")
    fx.write_vizwiz(tmp_path / "vw", "val", [{"index": 0, "question": "q", "answers": ["a"]}])
    (tmp_path / "vw" / "val" / "VizWiz_val_00000000.jpg").unlink()
    (tmp_path / "vw" / "val").rmdir()
    with pytest.raises(MissingSourceError, match=r"vizwiz image folder.*vw/val"):
        read_examples("vizwiz", tmp_path / "vw", "val")
    with pytest.raises(ValueError, match="unknown split"):
        read_examples("vizwiz", tmp_path / "vw", "test")


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
        read_examples("aqua", tmp_path, "val")
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
        read_examples("nlvr2", tmp_path, "dev")
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
        read_examples("gqa", tmp_path, "train")
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
    (_, _), (pos, _) = iter_json_items(path, key="questions")
    assert (int(pos), pos.column, pos.index) == (1, 26, 1)
    err = MalformedRecordError(path, pos, "missing field 'x'")
    assert str(err) == f"{path}:1:26: malformed record #1: missing field 'x'"
    with pytest.raises(MalformedRecordError, match="key 'annotations' not found"):
        list(iter_json_items(path, key="annotations"))
