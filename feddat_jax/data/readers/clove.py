"""CLOVE (CLVQA, Lei et al. AAAI 2023, https://github.com/showlab/CLVQA), ``--raw_dir/clove``.

Official files: the release ``CLOVE-json.zip`` ->
``json/function/functional_{stage}_{train,val}.json``
(stages attribute, knowledge, logical, object, relation, scenetext) and
``json/scene/scene_{a..f}#{Scene}_{train,val}.json`` (a#ShopAndDining, b#Workplace,
c#HomeOrHotel, d#Transportation, e#SportAndLeisure, f#Outdoors); the same names the CLVQA code
(``mmclvqa/mmf/common/CL_constant.py``) and the FedDAT code use. ``json/`` may sit at the top of the
folder or under ``CLOVE/``. Each file is a JSON array of (README "Example of data sample")::

    {"question_id": "g06778809", "question": str, "answer": str,
     "answers": [str] x10,        # VQAv2-style, the answer repeated when there is one
     "image_id": "440", "image_source": "vg" | "textvqa", "stage": str, "set_name": str,
     "gqa_question": {...}, "program": [...], "gt_scene_graph_seq": [...], ...}

Images: Visual Genome for ``image_source == "vg"`` (``vg/image/{id}.jpg``, ``VG_100K/{id}.jpg``,
``VG_100K_2/{id}.jpg`` or ``images/{id}.jpg``), TextVQA for ``"textvqa"`` (``textvqa/{id}.jpg``,
``textvqa/train_images/{id}.jpg`` or ``train_images/{id}.jpg``). The label is the ``answer``
field with soft score 1.0 (CLOVE is generated from GQA/TextVQA with one answer per question).
"""

from __future__ import annotations

from pathlib import Path

from ._common import (
    ReadLog,
    Candidate,
    MalformedRecordError,
    MissingSourceError,
    Reader,
    find_path,
    id_field,
    iter_json_items,
    norm_answer,
    require_dir,
    single_answer,
    text_field,
)

FUNCTIONS = ("attribute", "knowledge", "logical", "object", "relation", "scenetext")
SCENES = {
    "ShopAndDining": "a",
    "Workplace": "b",
    "HomeOrHotel": "c",
    "Transportation": "d",
    "SportAndLeisure": "e",
    "Outdoors": "f",
}

_IMAGE_DIRS = {
    "vg": ("vg/image", "VG_100K", "VG_100K_2", "vg/VG_100K", "vg/VG_100K_2", "images"),
    "textvqa": ("textvqa", "textvqa/train_images", "train_images"),
}


def annotation_name(setting: str, subset: str, split: str) -> str:
    if setting == "function":
        return f"function/functional_{subset}_{split}.json"
    return f"scene/scene_{SCENES[subset]}#{subset}_{split}.json"


class CLOVEReader(Reader):
    """``CLOVEReader(setting="function", subset="attribute")`` or
    ``CLOVEReader(setting="scene", subset="ShopAndDining")``."""

    name = "clove"
    splits = ("train", "val")

    def __init__(self, setting: str, subset: str):
        if setting == "function" and subset not in FUNCTIONS:
            raise ValueError(f"clove function subset {subset!r} not in {FUNCTIONS}")
        if setting == "scene" and subset not in SCENES:
            raise ValueError(f"clove scene subset {subset!r} not in {tuple(SCENES)}")
        if setting not in ("function", "scene"):
            raise ValueError(f"clove setting {setting!r} not in ('function', 'scene')")
        self.setting, self.subset = setting, subset

    def describe(self) -> dict:
        return {"reader": self.name, "setting": self.setting, "subset": self.subset}

    def scan(self, root, split, log=None):
        self._check_split(split)
        log = log or ReadLog()
        root = require_dir(root, "clove folder")
        rel = annotation_name(self.setting, self.subset, split)
        path = find_path(
            f"clove {self.setting} {self.subset} file",
            [root / "json" / rel, root / "CLOVE" / "json" / rel, root / rel],
        )
        existing: dict[str, list[Path]] = {}
        tag = f"clove_{self.setting}_{self.subset}"
        for line, rec in iter_json_items(path, log=log):
            try:
                qid = id_field(rec, "question_id", path, line)
                question = text_field(rec, "question", path, line)
                answer = norm_answer(text_field(rec, "answer", path, line))
                image_id = id_field(rec, "image_id", path, line)
                source = text_field(rec, "image_source", path, line)
                if source not in _IMAGE_DIRS:
                    raise MalformedRecordError(path, line, f"unknown image_source {source!r}")
                if source not in existing:
                    dirs = [root / d for d in _IMAGE_DIRS[source]]
                    existing[source] = [d for d in dirs if d.is_dir()]
                    if not existing[source]:
                        raise MissingSourceError(f"clove {source} image folder", dirs)
                ref = tuple(d / f"{image_id}.jpg" for d in existing[source])
                yield Candidate(
                    example_id=f"{tag}/{split}/{qid}",
                    question=question,
                    answers=single_answer(answer),
                    images=(ref,),
                    source=f"{path}:{line}",
                )
            except MalformedRecordError as e:
                log.handle(e)
