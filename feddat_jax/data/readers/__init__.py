"""Readers of the real benchmarks' sources, one module per source family.

Each reader takes the source's own released files from a local folder (the docstring of its
module names the official files and their format) and yields the shared record
``feddat_jax.data.records.Example``; ``scan`` yields the same examples without reading images
(the split builder reads only the images of the examples it keeps).

    reader = get_reader("clove", setting="function", subset="attribute")
    for ex in reader.read("/data/clove", "train", skip_bad=True): ...

Registry names: vqav2, vqa_abstract, vizwiz, gqa, cocoqa, aqua, clove, nlvr2, snli_ve, vcr.
"""

from __future__ import annotations

from ._common import (
    BadImageError,
    ReadLog,
    Candidate,
    MalformedRecordError,
    MissingSourceError,
    Reader,
    SourceError,
    annotator_scores,
    load_example,
    norm_answer,
    vqa_min3_scores,
)
from .aqua import AQUAReader
from .clove import CLOVEReader
from .cocoqa import COCOQAReader
from .gqa import GQAReader
from .nlvr2 import NLVR2Reader
from .snli_ve import SNLIVEReader
from .vcr import VCRReader
from .vizwiz import VizWizReader
from .vqa_format import VQAAbstractReader, VQAv2Reader

READERS = {
    "vqav2": VQAv2Reader,
    "vqa_abstract": VQAAbstractReader,
    "vizwiz": VizWizReader,
    "gqa": GQAReader,
    "cocoqa": COCOQAReader,
    "aqua": AQUAReader,
    "clove": CLOVEReader,
    "nlvr2": NLVR2Reader,
    "snli_ve": SNLIVEReader,
    "vcr": VCRReader,
}


def get_reader(name: str, **options) -> Reader:
    """A reader instance by registry name (``options`` go to its constructor, e.g. CLOVE's
    ``setting`` and ``subset``)."""
    try:
        cls = READERS[name]
    except KeyError:
        raise KeyError(f"unknown reader {name!r}; known: {sorted(READERS)}") from None
    return cls(**options)


__all__ = [
    "READERS",
    "get_reader",
    "Reader",
    "Candidate",
    "ReadLog",
    "SourceError",
    "MissingSourceError",
    "MalformedRecordError",
    "BadImageError",
    "load_example",
    "norm_answer",
    "vqa_min3_scores",
    "annotator_scores",
    "AQUAReader",
    "CLOVEReader",
    "COCOQAReader",
    "GQAReader",
    "NLVR2Reader",
    "SNLIVEReader",
    "VCRReader",
    "VizWizReader",
    "VQAAbstractReader",
    "VQAv2Reader",
]
