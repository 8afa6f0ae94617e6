"""COCO-QA (Ren et al. 2015, http://www.cs.toronto.edu/~mren/imageqa/data/cocoqa/),
``--raw_dir/cocoqa``.

Official files: ``cocoqa-2015-05-17.zip`` -> ``{train,test}/`` each with four parallel text
files, one example per line:

* ``img_ids.txt``   the COCO image id (int)
* ``questions.txt`` the question
* ``answers.txt``   the one-word answer
* ``types.txt``     the question type: 0 object, 1 number, 2 color, 3 location

The images are MS-COCO 2014 (train split from ``train2014``, test split from ``val2014``): put or
link ``train2014/`` and ``val2014/`` (``COCO_{train,val}2014_{id:012d}.jpg``) in the folder (or
under ``images/``); an id is looked up in both. One answer per question: soft score 1.0.
"""

from __future__ import annotations

from ._common import (
    ReadLog,
    Candidate,
    MalformedRecordError,
    MissingSourceError,
    Reader,
    find_path,
    norm_answer,
    require_dir,
    single_answer,
)

FILES = ("img_ids.txt", "questions.txt", "answers.txt", "types.txt")
TYPES = {0: "object", 1: "number", 2: "color", 3: "location"}


class COCOQAReader(Reader):
    name = "cocoqa"
    splits = ("train", "test")

    def scan(self, root, split, log=None):
        self._check_split(split)
        log = log or ReadLog()
        root = require_dir(root, "cocoqa folder")
        split_dir = find_path("cocoqa split folder", [root / split], is_dir=True)
        paths = [log.opened(find_path(f"cocoqa {n}", [split_dir / n])) for n in FILES]
        coco_dirs = [d / sub for d in (root, root / "images") for sub in ("train2014", "val2014")]
        coco_dirs = [d for d in coco_dirs if d.is_dir()]
        if not coco_dirs:
            raise MissingSourceError(
                "COCO 2014 image folder (train2014/ or val2014/)",
                [
                    root / "train2014",
                    root / "val2014",
                    root / "images" / "train2014",
                    root / "images" / "val2014",
                ],
            )
        handles = [open(p, encoding="utf-8") for p in paths]
        try:
            lineno = 0
            while True:
                lineno += 1
                rows = [h.readline() for h in handles]
                ended = [r == "" for r in rows]
                if all(ended):
                    return
                if any(ended):
                    short = paths[ended.index(True)]
                    log.handle(
                        MalformedRecordError(
                            short,
                            lineno,
                            "file ends before the other COCO-QA files "
                            f"({', '.join(p.name for p, e in zip(paths, ended) if not e)})",
                        )
                    )
                    return
                img_s, question, answer, qtype = (r.rstrip("\n").strip() for r in rows)
                try:
                    if not img_s.isdigit():
                        raise MalformedRecordError(
                            paths[0], lineno, f"image id {img_s!r} not an integer"
                        )
                    if not question:
                        raise MalformedRecordError(paths[1], lineno, "empty question")
                    if not answer:
                        raise MalformedRecordError(paths[2], lineno, "empty answer")
                    if not (qtype.isdigit() and int(qtype) in TYPES):
                        raise MalformedRecordError(paths[3], lineno, f"type {qtype!r} not in 0..3")
                    image_id = int(img_s)
                    ref = tuple(d / f"COCO_{d.name}_{image_id:012d}.jpg" for d in coco_dirs)
                    yield Candidate(
                        example_id=f"cocoqa/{split}/{lineno - 1}",
                        question=question,
                        answers=single_answer(norm_answer(answer)),
                        images=(ref,),
                        source=f"{split_dir}:{lineno}",
                    )
                except MalformedRecordError as e:
                    log.handle(e)
        finally:
            for h in handles:
                h.close()
