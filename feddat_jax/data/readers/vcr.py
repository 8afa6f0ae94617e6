"""VCR, Q->A (Zellers et al. 2019, https://visualcommonsense.com/download/), ``--raw_dir/vcr``.

Official files: ``vcr1annots.zip`` -> ``{train,val,test}.jsonl`` (at the top of the folder or
under ``annotation/`` / ``annotations/``), JSON lines (the r2c dataloader's format)::

    {"annot_id": "train-0", "img_id": "train-0", "movie": str, "img_fn":
     "lsmdc_3015_CHARLIE_ST_CLOUD/3015_CHARLIE_ST_CLOUD_00.23.57.935-00.24.00.783@0.jpg",
     "metadata_fn": "...json", "objects": ["person", "person", "car", ...],
     "question": ["Why", "is", [0], "smiling", "?"],           # ints index `objects`
     "answer_choices": [[tokens], [tokens], [tokens], [tokens]], "answer_label": 0..3,
     "rationale_choices": [...], "rationale_label": 0..3, "question_orig": str, ...}

and ``vcr1images.zip`` -> ``vcr1images/{img_fn}``. (``test.jsonl`` has no labels: use train/val.)

A 4-way multiple-choice classification task. Object references are rendered as the official
FedDAT code does (a person -> a gender-neutral name by index, anything else -> its class name),
the four choices are written into the question text as
``"{question} (A) {choice 0} (B) {choice 1} (C) {choice 2} (D) {choice 3}"`` and the answer is
the letter of ``answer_label``, one-hot; labels ``("A", "B", "C", "D")``.
"""

from __future__ import annotations

import re

from ._common import (
    ReadLog,
    Candidate,
    MalformedRecordError,
    Reader,
    field,
    find_path,
    iter_jsonl,
    require_dir,
    text_field,
)

LETTERS = ("A", "B", "C", "D")
# The list the VCR baselines (r2c, and the FedDAT code) use for person detections.
GENDER_NEUTRAL_NAMES = (
    "Casey",
    "Riley",
    "Jessie",
    "Jackie",
    "Avery",
    "Jaime",
    "Peyton",
    "Kerry",
    "Jody",
    "Kendall",
    "Skyler",
    "Frankie",
    "Pat",
    "Quinn",
    "Morgan",
    "Finley",
    "Harley",
    "Robbie",
    "Sidney",
    "Tommie",
    "Ashley",
    "Carter",
    "Adrian",
    "Clarke",
    "Logan",
    "Mickey",
    "Nicky",
    "Parker",
    "Tyler",
    "Reese",
    "Charlie",
    "Austin",
    "Denver",
    "Emerson",
    "Tatum",
    "Dallas",
    "Haven",
    "Jordan",
    "Robin",
    "Rory",
    "Bellamy",
    "Salem",
    "Sutton",
    "Gray",
    "Shae",
    "Kyle",
    "Alex",
    "Ryan",
    "Cameron",
    "Dakota",
)

_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.,!?;:'])")


def render_tokens(tokens, objects, path, line) -> str:
    """VCR token list (strings and lists of object indices) -> plain text."""
    if not isinstance(tokens, list) or not tokens:
        raise MalformedRecordError(path, line, "token list expected")
    words = []
    for tok in tokens:
        if isinstance(tok, str):
            words.append(tok)
            continue
        idxs = tok if isinstance(tok, list) else [tok]
        names = []
        for i in idxs:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < len(objects):
                raise MalformedRecordError(path, line, f"object reference {i!r} out of range")
            obj = str(objects[i])
            names.append(
                GENDER_NEUTRAL_NAMES[i % len(GENDER_NEUTRAL_NAMES)] if obj == "person" else obj
            )
        words.append(" and ".join(names))
    return _SPACE_BEFORE_PUNCT.sub(r"\1", " ".join(words)).strip()


class VCRReader(Reader):
    name = "vcr"
    splits = ("train", "val")
    task_kind = "classification"
    labels = LETTERS

    def scan(self, root, split, log=None):
        self._check_split(split)
        log = log or ReadLog()
        root = require_dir(root, "vcr folder")
        fname = f"{split}.jsonl"
        path = find_path(
            "vcr annotations file",
            [
                root / fname,
                root / "annotation" / fname,
                root / "annotations" / fname,
                root / "vcr1annots" / fname,
            ],
        )
        img_dir = find_path("vcr image folder", [root / "vcr1images", root / "images"], is_dir=True)
        for line, rec in iter_jsonl(path, log):
            try:
                annot_id = text_field(rec, "annot_id", path, line)
                img_fn = text_field(rec, "img_fn", path, line)
                objects = field(rec, "objects", path, line, list)
                question = render_tokens(
                    field(rec, "question", path, line, list), objects, path, line
                )
                choices = field(rec, "answer_choices", path, line, list)
                if len(choices) != len(LETTERS):
                    raise MalformedRecordError(path, line, f"{len(choices)} answer_choices, not 4")
                rendered = [render_tokens(c, objects, path, line) for c in choices]
                label = field(rec, "answer_label", path, line, int)
                if not 0 <= label < len(LETTERS):
                    raise MalformedRecordError(path, line, f"answer_label {label} not in 0..3")
                text = question + "".join(f" ({L}) {c}" for L, c in zip(LETTERS, rendered))
                yield Candidate(
                    example_id=f"vcr/{split}/{annot_id}",
                    question=text,
                    answers={LETTERS[label]: 1.0},
                    images=((img_dir / img_fn,),),
                    source=f"{path}:{line}",
                )
            except MalformedRecordError as e:
                log.handle(e)
