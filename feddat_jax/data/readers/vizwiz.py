"""VizWiz-VQA (https://vizwiz.org/tasks-and-datasets/vqa/), ``--raw_dir/vizwiz``.

Official files: ``Annotations.zip`` -> ``{train,val}.json`` (read from the top of the folder or
from ``Annotations/``), a JSON array with one object per visual question::

    {"image": "VizWiz_train_00000000.jpg", "question": str,
     "answers": [{"answer": str, "answer_confidence": "yes"|"maybe"|"no"}] x10,
     "answer_type": "other"|"yes/no"|"number"|"unanswerable", "answerable": 0|1}

and ``train.zip`` / ``val.zip`` -> ``{train,val}/VizWiz_{split}_########.jpg``.
There is one question per image, so the image name is the example id. Soft score
{0.3, 0.6, 0.9, 1.0} for 1/2/3/>=4 of the 10 annotators (official FedDAT ``get_score``);
"unanswerable" is an answer like any other.
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
    iter_json_items,
    require_dir,
    text_field,
)


class VizWizReader(Reader):
    name = "vizwiz"
    splits = ("train", "val")

    def scan(self, root, split, log=None):
        self._check_split(split)
        log = log or ReadLog()
        root = require_dir(root, "vizwiz folder")
        path = find_path(
            "vizwiz annotations file",
            [
                root / f"{split}.json",
                root / "Annotations" / f"{split}.json",
                root / "annotations" / f"{split}.json",
            ],
        )
        img_dir = find_path(
            "vizwiz image folder", [root / split, root / "images" / split], is_dir=True
        )
        for line, rec in iter_json_items(path, log=log):
            try:
                image = text_field(rec, "image", path, line)
                question = text_field(rec, "question", path, line)
                answers = annotator_scores(answer_list(rec, path, line))
                stem = image.rsplit(".", 1)[0]
                yield Candidate(
                    example_id=f"vizwiz/{split}/{stem}",
                    question=question,
                    answers=answers,
                    images=((img_dir / image,),),
                    source=f"{path}:{line}",
                )
            except MalformedRecordError as e:
                log.handle(e)
