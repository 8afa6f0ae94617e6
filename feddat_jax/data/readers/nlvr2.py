"""NLVR2 (Suhr et al. 2019, https://github.com/lil-lab/nlvr/tree/master/nlvr2), ``--raw_dir/nlvr2``.

Official files: ``nlvr2/data/{train,dev,test1}.json`` (read from ``data/`` or the top of the
folder), JSON lines, one example per line::

    {"identifier": "train-10171-0-0", "sentence": str, "label": "True" | "False",
     "left_url": str, "right_url": str, "writer": str, "synset": str, "query": str,
     "validation": {...}, "extra_validations": {...}, "directory": int  # train only}

Images (the direct-download zips): for identifier ``split-set-pair-sentence`` the pair is
``split-set-pair-img0.png`` (left) and ``split-set-pair-img1.png`` (right), under
``images/{split}/{directory}/`` for train (``train/0`` .. ``train/99``) and ``images/{split}/``
otherwise (``images/`` may be omitted). Some ``.png`` files are JPEGs: they are read by header.

A binary classification task: answers ``{"true": 1.0}`` or ``{"false": 1.0}``, labels
``("false", "true")``. Both images go into the one image of the shared record, side by side
(left | right, common height <= 384, JPEG q95; see ``_common.load_pair_bytes``).
"""

from __future__ import annotations

from ._common import (
    ReadLog,
    Candidate,
    MalformedRecordError,
    MissingSourceError,
    Reader,
    field,
    find_path,
    iter_jsonl,
    require_dir,
    text_field,
)

_LABELS = {"true": "true", "false": "false"}


class NLVR2Reader(Reader):
    name = "nlvr2"
    splits = ("train", "dev", "test1")
    task_kind = "classification"
    labels = ("false", "true")

    def scan(self, root, split, log=None):
        self._check_split(split)
        log = log or ReadLog()
        root = require_dir(root, "nlvr2 folder")
        path = find_path(
            "nlvr2 annotations file", [root / "data" / f"{split}.json", root / f"{split}.json"]
        )
        img_dirs = [d for d in (root / "images" / split, root / split) if d.is_dir()]
        if not img_dirs:
            raise MissingSourceError("nlvr2 image folder", [root / "images" / split, root / split])
        for line, rec in iter_jsonl(path, log):
            try:
                ident = text_field(rec, "identifier", path, line)
                parts = ident.split("-")
                if len(parts) != 4:
                    raise MalformedRecordError(
                        path, line, f"identifier {ident!r} is not split-set_id-pair_id-sentence_id"
                    )
                sentence = text_field(rec, "sentence", path, line)
                raw = field(rec, "label", path, line, (str, bool))
                label = _LABELS.get(str(raw).strip().lower())
                if label is None:
                    raise MalformedRecordError(path, line, f"label {raw!r} is not True/False")
                stem = "-".join(parts[:3])
                sub = rec.get("directory")
                refs = []
                for k in (0, 1):
                    name = f"{stem}-img{k}.png"
                    alts = []
                    for d in img_dirs:
                        if sub is not None:
                            alts.append(d / str(sub) / name)
                        alts.append(d / name)
                    refs.append(tuple(alts))
                yield Candidate(
                    example_id=f"nlvr2/{split}/{ident}",
                    question=sentence,
                    answers={label: 1.0},
                    images=tuple(refs),
                    source=f"{path}:{line}",
                )
            except MalformedRecordError as e:
                log.handle(e)
