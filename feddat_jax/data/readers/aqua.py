"""AQUA, VQA on art (Garcia et al. 2020, https://github.com/noagarcia/ArtVQA/tree/master/AQUA),
``--raw_dir/aqua``.

Official files: ``AQUA/{train,val,test}.json`` (at the top of the folder or under ``AQUA/``), a
JSON array of::

    {"image": "<SemArt file name>.jpg", "question": str, "answer": str,
     "need_external_knowledge": bool}

and the SemArt images (``SemArt.zip`` -> ``SemArt/Images/``; read from ``Images/``,
``SemArt/Images/`` or ``images/``). There is no question id: the example id is the index of the
record in its file. One answer per question: soft score 1.0.
"""

from __future__ import annotations

from ._common import (
    ReadLog,
    Candidate,
    MalformedRecordError,
    Reader,
    find_path,
    iter_json_items,
    norm_answer,
    require_dir,
    single_answer,
    text_field,
)


class AQUAReader(Reader):
    name = "aqua"
    splits = ("train", "val", "test")

    def scan(self, root, split, log=None):
        self._check_split(split)
        log = log or ReadLog()
        root = require_dir(root, "aqua folder")
        path = find_path(
            "aqua annotations file", [root / f"{split}.json", root / "AQUA" / f"{split}.json"]
        )
        img_dir = find_path(
            "SemArt image folder",
            [root / "Images", root / "SemArt" / "Images", root / "images"],
            is_dir=True,
        )
        for index, (line, rec) in enumerate(iter_json_items(path, log=log)):
            try:
                image = text_field(rec, "image", path, line)
                question = text_field(rec, "question", path, line)
                answer = norm_answer(text_field(rec, "answer", path, line))
                yield Candidate(
                    example_id=f"aqua/{split}/{index}",
                    question=question,
                    answers=single_answer(answer),
                    images=((img_dir / image,),),
                    source=f"{path}:{line}",
                )
            except MalformedRecordError as e:
                log.handle(e)
