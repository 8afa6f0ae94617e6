"""VQAv2 and VQA Abstract Scenes: the VQA API's questions + annotations JSON pair.

Official files (https://visualqa.org/download.html, format of the VQA API ``vqaTools/vqa.py``):

* questions  ``{"info", "task_type", "data_type", "data_subtype", "license",
  "questions": [{"image_id": int, "question": str, "question_id": int}, ...]}``
* annotations ``{"info", "data_type", "data_subtype", "license",
  "annotations": [{"question_id": int, "image_id": int, "question_type": str,
  "answer_type": str, "multiple_choice_answer": str,
  "answers": [{"answer": str, "answer_confidence": "yes"|"maybe"|"no", "answer_id": int}] x10}]}``

VQAv2 (``--raw_dir/vqav2``):
  ``v2_OpenEnded_mscoco_{train,val}2014_questions.json``,
  ``v2_mscoco_{train,val}2014_annotations.json``
  (at the top or under ``Questions/`` / ``Annotations/``), images
  ``{train,val}2014/COCO_{split}2014_{image_id:012d}.jpg`` (the COCO 2014 zips).
  Soft score of an answer given by ``c`` of the 10 annotators: ``min(1, c/3)``.

VQA Abstract Scenes (``--raw_dir/vqa_abstract``; the v1 "abstract_v002" release):
  ``OpenEnded_abstract_v002_{train,val}2015_questions.json``,
  ``abstract_v002_{train,val}2015_annotations.json``, images
  ``scene_img_abstract_v002_{split}2015/abstract_v002_{split}2015_{image_id:012d}.png``.
  Soft score {0.3, 0.6, 0.9, 1.0} for 1/2/3/>=4 annotators (official FedDAT ``get_score``).
"""

from __future__ import annotations

from ._common import (
    ReadLog,
    Candidate,
    MalformedRecordError,
    Reader,
    annotator_scores,
    answer_list,
    find_path,
    id_field,
    iter_json_items,
    require_dir,
    text_field,
    vqa_min3_scores,
)

_JSON_DIRS = ("", "Questions", "Annotations", "questions", "annotations")


class _VQAFormatReader(Reader):
    splits = ("train", "val")
    year = ""
    questions_name = ""
    annotations_name = ""
    image_dirs: tuple = ()
    image_name = ""

    def _score(self, answers):
        raise NotImplementedError

    def scan(self, root, split, log=None):
        self._check_split(split)
        log = log or ReadLog()
        root = require_dir(root, f"{self.name} folder")
        fmt = dict(split=split, year=self.year)
        qpath = find_path(
            f"{self.name} questions file",
            [root / d / self.questions_name.format(**fmt) for d in _JSON_DIRS],
        )
        apath = find_path(
            f"{self.name} annotations file",
            [root / d / self.annotations_name.format(**fmt) for d in _JSON_DIRS],
        )
        img_dir = find_path(
            f"{self.name} image folder",
            [root / d.format(**fmt) for d in self.image_dirs],
            is_dir=True,
        )

        questions: dict[str, tuple[int, str, str] | None] = {}
        for line, rec in iter_json_items(qpath, key="questions", log=log):
            qid = None
            try:
                qid = id_field(rec, "question_id", qpath, line)
                questions[qid] = (
                    line,
                    text_field(rec, "question", qpath, line),
                    id_field(rec, "image_id", qpath, line),
                )
            except MalformedRecordError as e:
                if qid is not None:
                    questions[qid] = None  # counted once here, its annotation is dropped quietly
                log.handle(e)

        for line, rec in iter_json_items(apath, key="annotations", log=log):
            try:
                qid = id_field(rec, "question_id", apath, line)
                if qid not in questions:
                    raise MalformedRecordError(
                        apath, line, f"question_id {qid} not in {qpath.name}"
                    )
                if questions[qid] is None:
                    continue
                _, question, image_id = questions[qid]
                ann_image = id_field(rec, "image_id", apath, line)
                if ann_image != image_id:
                    raise MalformedRecordError(
                        apath, line, f"image_id {ann_image} != {image_id} of the question"
                    )
                if not image_id.isdigit():
                    raise MalformedRecordError(apath, line, f"image_id {image_id!r} not an integer")
                answers = self._score(answer_list(rec, apath, line))
                image = img_dir / self.image_name.format(image_id=int(image_id), **fmt)
                yield Candidate(
                    example_id=f"{self.name}/{split}/{qid}",
                    question=question,
                    answers=answers,
                    images=((image,),),
                    source=f"{apath}:{line}",
                )
            except MalformedRecordError as e:
                log.handle(e)


class VQAv2Reader(_VQAFormatReader):
    name = "vqav2"
    year = "2014"
    questions_name = "v2_OpenEnded_mscoco_{split}{year}_questions.json"
    annotations_name = "v2_mscoco_{split}{year}_annotations.json"
    image_dirs = ("{split}{year}", "images/{split}{year}", "Images/{split}{year}")
    image_name = "COCO_{split}{year}_{image_id:012d}.jpg"

    def _score(self, answers):
        return vqa_min3_scores(answers)


class VQAAbstractReader(_VQAFormatReader):
    name = "vqa_abstract"
    year = "2015"
    questions_name = "OpenEnded_abstract_v002_{split}{year}_questions.json"
    annotations_name = "abstract_v002_{split}{year}_annotations.json"
    image_dirs = (
        "scene_img_abstract_v002_{split}{year}",
        "images/scene_img_abstract_v002_{split}{year}",
        "{split}{year}",
        "images/{split}{year}",
        "images",
    )
    image_name = "abstract_v002_{split}{year}_{image_id:012d}.png"

    def _score(self, answers):
        return annotator_scores(answers)
