"""SNLI-VE visual entailment (Xie et al. 2019, https://github.com/necla-ml/SNLI-VE),
``--raw_dir/snli_ve``.

Official files: ``snli_ve_{train,dev,test}.jsonl`` (at the top of the folder, or under ``data/``
or ``annotations/``), JSON lines with the SNLI fields plus the Flickr30k image id::

    {"Flikr30kID": "2248275918.jpg" | "Flickr30K_ID": "2248275918", "pairID": str,
     "captionID": str, "sentence1": str (the caption: NOT used, the image is the premise),
     "sentence2": str (the hypothesis), "gold_label": "entailment"|"neutral"|"contradiction",
     "annotator_labels": [...], "sentence1_parse": ..., ...}

(The generator's releases name the id ``Flikr30kID`` (sic, with ``.jpg``) or ``Flickr30K_ID``
(bare); both are read.) Images: Flickr30k ``flickr30k_images/{id}.jpg`` or
``flickr30k-images/{id}.jpg``. A 3-way classification task: the hypothesis is the question, the
answer is the gold label, one-hot; labels ``("entailment", "neutral", "contradiction")``.
"""

from __future__ import annotations

from ._common import (
    ReadLog,
    Candidate,
    MalformedRecordError,
    Reader,
    field,
    find_path,
    id_field,
    iter_jsonl,
    require_dir,
    text_field,
)

LABELS = ("entailment", "neutral", "contradiction")


class SNLIVEReader(Reader):
    name = "snli_ve"
    splits = ("train", "dev", "test")
    task_kind = "classification"
    labels = LABELS

    def scan(self, root, split, log=None):
        self._check_split(split)
        log = log or ReadLog()
        root = require_dir(root, "snli_ve folder")
        fname = f"snli_ve_{split}.jsonl"
        path = find_path(
            "snli_ve annotations file",
            [root / fname, root / "data" / fname, root / "annotations" / fname],
        )
        img_dir = find_path(
            "flickr30k image folder",
            [
                root / "flickr30k_images",
                root / "flickr30k-images",
                root / "flickr30k_images" / "flickr30k_images",
                root / "images",
            ],
            is_dir=True,
        )
        for line, rec in iter_jsonl(path, log):
            try:
                if isinstance(rec, dict) and "Flickr30K_ID" in rec:
                    image_id = id_field(rec, "Flickr30K_ID", path, line)
                else:
                    image_id = id_field(rec, "Flikr30kID", path, line)
                image_id = image_id[:-4] if image_id.lower().endswith(".jpg") else image_id
                hypothesis = text_field(rec, "sentence2", path, line)
                label = str(field(rec, "gold_label", path, line, str)).strip().lower()
                if label not in LABELS:
                    raise MalformedRecordError(path, line, f"gold_label {label!r} not in {LABELS}")
                pair = id_field(rec, "pairID", path, line)
                yield Candidate(
                    example_id=f"snli_ve/{split}/{pair}",
                    question=hypothesis,
                    answers={label: 1.0},
                    images=((img_dir / f"{image_id}.jpg",),),
                    source=f"{path}:{line}",
                )
            except MalformedRecordError as e:
                log.handle(e)
