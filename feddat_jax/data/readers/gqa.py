"""GQA balanced questions (https://cs.stanford.edu/people/dorarad/gqa/download.html),
``--raw_dir/gqa``.

Official files: ``questions1.2.zip`` -> ``{train,val,testdev}_balanced_questions.json`` (read from
the top of the folder or from ``questions1.2/`` / ``questions/``), one JSON object keyed by
question id::

    {"02930152": {"imageId": "2354786", "question": str, "answer": str, "fullAnswer": str,
                  "isBalanced": true, "types": {"structural", "semantic", "detailed"},
                  "semantic": [...], "semanticStr": str, "groups": {...},
                  "entailed": [...], "equivalent": [...], "annotations": {...}}, ...}

and ``images.zip`` -> ``images/{imageId}.jpg``. One answer per question: soft score 1.0.
"""

from __future__ import annotations

from ._common import (
    ReadLog,
    Candidate,
    MalformedRecordError,
    Reader,
    find_path,
    id_field,
    iter_json_items,
    norm_answer,
    require_dir,
    single_answer,
    text_field,
)


class GQAReader(Reader):
    name = "gqa"
    splits = ("train", "val", "testdev")

    def scan(self, root, split, log=None):
        self._check_split(split)
        log = log or ReadLog()
        root = require_dir(root, "gqa folder")
        fname = f"{split}_balanced_questions.json"
        path = find_path(
            "gqa balanced questions file",
            [root / fname, root / "questions1.2" / fname, root / "questions" / fname],
        )
        img_dir = find_path(
            "gqa image folder", [root / "images", root / "allImages" / "images"], is_dir=True
        )
        for line, (qid, rec) in iter_json_items(path, log=log):
            try:
                image_id = id_field(rec, "imageId", path, line)
                question = text_field(rec, "question", path, line)
                answer = norm_answer(text_field(rec, "answer", path, line))
                yield Candidate(
                    example_id=f"gqa/{split}/{qid}",
                    question=question,
                    answers=single_answer(answer),
                    images=((img_dir / f"{image_id}.jpg",),),
                    source=f"{path}:{line}",
                )
            except MalformedRecordError as e:
                log.handle(e)
