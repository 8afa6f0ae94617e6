"""Shared machinery of the source readers: errors, bad-input policy, JSON/JSONL scanning with
line numbers, image loading, soft scores.

A reader works in two steps so that a build never decodes the images of examples it will not keep:

* ``scan(root, split, log)`` parses the annotation files only and yields :class:`Candidate` s
  (question, soft-scored answers, where the image(s) live);
* :func:`load_example` turns one candidate into the shared record
  :class:`feddat_jax.data.records.Example` (image read, decoded once to verify it, stored as its
  encoded bytes).

``Reader.read`` chains both and is what "a reader yields Examples" means.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

# --------------------------------------------------------------------------------------------
# errors


class SourceError(Exception):
    """Base class of every error a reader raises about its input."""

    kind = "source_error"


class MissingSourceError(SourceError, FileNotFoundError):
    """A file or folder the source needs is not there (the message names every path tried)."""

    kind = "missing_source"

    def __init__(self, what: str, tried: Sequence[os.PathLike | str]):
        self.tried = [str(p) for p in tried]
        super().__init__(f"missing {what}: none of {', '.join(self.tried)} exists")


class RecordPos(int):
    """Where a record of a JSON document starts: the 1-based line (the int value), the 1-based
    column and the 0-based index of the record in its container (the official VQA files are one
    long line, so the line alone would not locate a record)."""

    def __new__(cls, line: int, column: int, index: int):
        obj = super().__new__(cls, line)
        obj.column, obj.index = column, index
        return obj


class MalformedRecordError(SourceError, ValueError):
    """A record that cannot be parsed; names the file and the 1-based line the record starts on
    (``file:line:column: malformed record #index`` for a record of a JSON document)."""

    kind = "malformed_record"

    def __init__(self, path: os.PathLike | str, line: int, reason: str):
        self.path, self.line, self.reason = str(path), int(line), reason
        self.column, self.index = getattr(line, "column", None), getattr(line, "index", None)
        where = f"{self.path}:{self.line}" + (f":{self.column}" if self.column else "")
        rec = f" #{self.index}" if self.index is not None else ""
        super().__init__(f"{where}: malformed record{rec}: {reason}")


class BadImageError(SourceError, ValueError):
    """An image that is missing or does not decode; names the file."""

    kind = "bad_image"

    def __init__(self, path: os.PathLike | str, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"bad image {self.path}: {reason}")


@dataclasses.dataclass
class ReadLog:
    """The bookkeeping of one read.

    Bad input policy: a malformed record or a bad image raises (default) or, with
    ``skip_bad=True``, is skipped and counted in ``skipped`` (by kind) with its message in
    ``messages`` (the first ``max_messages``); the build writes both to its manifest. A missing
    file or folder, or a JSON document that does not parse, always raises.
    ``files`` collects the annotation files the readers opened (the manifest checksums them).
    """

    skip_bad: bool = False
    skipped: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    messages: list = dataclasses.field(default_factory=list)
    max_messages: int = 50
    files: list = dataclasses.field(default_factory=list)

    def opened(self, path: os.PathLike | str) -> Path:
        path = Path(path)
        if path not in self.files:
            self.files.append(path)
        return path

    def handle(self, err: SourceError) -> None:
        if not self.skip_bad or isinstance(err, MissingSourceError):
            raise err
        self.skipped[err.kind] += 1
        if len(self.messages) < self.max_messages:
            self.messages.append(str(err))

    def total(self) -> int:
        return sum(self.skipped.values())


# --------------------------------------------------------------------------------------------
# candidates and the reader base class

# One image reference: the alternative locations of one image, first existing one wins.
ImageRef = tuple  # tuple[Path, ...]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """An annotation parsed, its image(s) not read yet."""

    example_id: str
    question: str
    answers: Mapping[str, float]
    images: tuple  # tuple[ImageRef, ...]: one ref, or two (NLVR2 left/right)
    source: str = ""  # "file:line" of the record, for error messages

    def top_answer(self) -> str:
        """The answer the example is labelled with: highest score, ties broken by the string."""
        return min(self.answers.items(), key=lambda kv: (-kv[1], kv[0]))[0]


class Reader:
    """One source family. Subclasses set ``name``, ``splits``, ``task_kind`` (``'vqa'`` or
    ``'classification'``), ``labels`` (the fixed label order of a classification source) and
    implement :meth:`scan`."""

    name: str = ""
    splits: tuple = ()
    task_kind: str = "vqa"
    labels: tuple | None = None

    def describe(self) -> dict:
        return {"reader": self.name}

    def scan(
        self, root: os.PathLike | str, split: str, log: ReadLog | None = None
    ) -> Iterator[Candidate]:
        raise NotImplementedError

    def read(
        self,
        root: os.PathLike | str,
        split: str,
        *,
        skip_bad: bool = False,
        log: ReadLog | None = None,
    ) -> Iterator[Any]:
        """Yield :class:`feddat_jax.data.records.Example` s (images loaded) of one split."""
        log = log if log is not None else ReadLog(skip_bad=skip_bad)
        for cand in self.scan(root, split, log):
            try:
                yield load_example(cand)
            except BadImageError as err:
                log.handle(err)

    def _check_split(self, split: str) -> None:
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; expected one of {self.splits}")


# --------------------------------------------------------------------------------------------
# files


def find_path(what: str, candidates: Iterable[os.PathLike | str], *, is_dir: bool = False) -> Path:
    """First existing path among ``candidates``; :class:`MissingSourceError` naming all of them."""
    tried = [Path(c) for c in candidates]
    for p in tried:
        if p.is_dir() if is_dir else p.is_file():
            return p
    raise MissingSourceError(what, tried)


def require_dir(root: os.PathLike | str, what: str = "source folder") -> Path:
    root = Path(root)
    if not root.is_dir():
        raise MissingSourceError(what, [root])
    return root


_WS = re.compile(r"[ \t\n\r]*")


class _LineCounter:
    """Converts increasing character offsets of one text into 1-based (line, column)."""

    def __init__(self, text: str):
        self.text, self.pos, self.line, self.line_start = text, 0, 1, 0

    def at(self, pos: int) -> int:
        if pos < self.pos:  # not expected; recount from the start
            self.pos, self.line, self.line_start = 0, 1, 0
        n = self.text.count("\n", self.pos, pos)
        if n:
            self.line += n
            self.line_start = self.text.rfind("\n", self.pos, pos) + 1
        self.pos = pos
        return self.line

    def record(self, pos: int, index: int) -> RecordPos:
        line = self.at(pos)
        return RecordPos(line, pos - self.line_start + 1, index)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise MalformedRecordError(path, 1, f"not UTF-8 text ({e})") from None


def iter_json_items(
    path: os.PathLike | str, key: str | None = None, log: ReadLog | None = None
) -> Iterator[tuple[int, Any]]:
    """Yield ``(pos, item)`` for each item of the JSON container at the top of ``path`` (or at
    top-level ``key``): list elements, or ``(k, v)`` pairs of an object. ``pos`` (a
    :class:`RecordPos`, an int) is the line where the item starts, with its column and index, so
    a malformed record can be reported by file and line. A JSON syntax error is fatal
    (the file cannot be resynchronised) and raises :class:`MalformedRecordError` with its line."""
    path = Path(path) if log is None else log.opened(path)
    text = _read_text(path)
    dec = json.JSONDecoder()
    lines = _LineCounter(text)

    def fail(pos: int, reason: str):
        raise MalformedRecordError(path, lines.at(pos), reason)

    def skip_ws(pos: int) -> int:
        return _WS.match(text, pos).end()

    def decode(pos: int):
        try:
            return dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise MalformedRecordError(
                path, RecordPos(e.lineno, e.colno, None), f"invalid JSON: {e.msg}"
            ) from None

    pos = skip_ws(0)
    if key is not None:
        if text[pos : pos + 1] != "{":
            fail(pos, f"expected a JSON object with key {key!r} at the top")
        pos = skip_ws(pos + 1)
        found = False
        while text[pos : pos + 1] != "}":
            if pos >= len(text):
                fail(pos, "unexpected end of file")
            k, pos = decode(pos)
            pos = skip_ws(pos)
            if text[pos : pos + 1] != ":":
                fail(pos, "expected ':'")
            pos = skip_ws(pos + 1)
            if k == key:
                found = True
                break
            _, pos = decode(pos)  # skip the value of another key
            pos = skip_ws(pos)
            if text[pos : pos + 1] == ",":
                pos = skip_ws(pos + 1)
        if not found:
            fail(0, f"top-level key {key!r} not found")
    opener = text[pos : pos + 1]
    if opener not in ("[", "{"):
        fail(pos, "expected a JSON array or object")
    closer = "]" if opener == "[" else "}"
    pos = skip_ws(pos + 1)
    first, index = True, 0
    while True:
        if pos >= len(text):
            fail(pos, "unexpected end of file")
        if text[pos] == closer:
            return
        if not first:
            if text[pos] != ",":
                fail(pos, f"expected ',' or '{closer}'")
            pos = skip_ws(pos + 1)
        first = False
        start = pos
        if opener == "[":
            item, pos = decode(pos)
        else:
            k, pos = decode(pos)
            pos = skip_ws(pos)
            if text[pos : pos + 1] != ":":
                fail(pos, "expected ':'")
            v, pos = decode(skip_ws(pos + 1))
            item = (k, v)
        yield lines.record(start, index), item
        index += 1
        pos = skip_ws(pos)


def iter_jsonl(path: os.PathLike | str, log: ReadLog) -> Iterator[tuple[int, Any]]:
    """Yield ``(line, obj)`` for each non-blank line of a JSON-lines file; an unparsable line is a
    malformed record (raised, or skipped and counted under ``skip_bad``)."""
    path = log.opened(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                log.handle(MalformedRecordError(path, lineno, f"invalid JSON line ({e})"))


def field(rec: Any, name: str, path: os.PathLike | str, line: int, types=None):
    """``rec[name]``, checked; a missing field or wrong type is a :class:`MalformedRecordError`."""
    if not isinstance(rec, dict):
        raise MalformedRecordError(path, line, f"expected a JSON object, got {type(rec).__name__}")
    if name not in rec:
        raise MalformedRecordError(path, line, f"missing field {name!r}")
    val = rec[name]
    if types is not None:
        allowed = types if isinstance(types, tuple) else (types,)
        if not isinstance(val, allowed) or (isinstance(val, bool) and bool not in allowed):
            raise MalformedRecordError(path, line, f"field {name!r} has type {type(val).__name__}")
    return val


def id_field(rec: Any, name: str, path, line) -> str:
    """An id that the source writes as an int or a string, as a string."""
    return str(field(rec, name, path, line, (int, str)))


def text_field(rec: Any, name: str, path, line) -> str:
    val = field(rec, name, path, line, str)
    if not val.strip():
        raise MalformedRecordError(path, line, f"field {name!r} is empty")
    return val.strip()


# --------------------------------------------------------------------------------------------
# answers and soft scores


def norm_answer(ans: str) -> str:
    """Answer normalisation used for every VQA source: lower case, whitespace collapsed."""
    return " ".join(str(ans).lower().split())


def vqa_min3_scores(answers: Iterable[str]) -> dict[str, float]:
    """VQAv2 soft score of each distinct answer among the (10) annotators: ``min(1, count / 3)``."""
    counts = collections.Counter(answers)
    return {a: min(1.0, c / 3.0) for a, c in counts.items()}


_ANNOTATOR_SCORE = {1: 0.3, 2: 0.6, 3: 0.9}


def annotator_scores(answers: Iterable[str]) -> dict[str, float]:
    """Soft score {0.3, 0.6, 0.9, 1.0} for 1/2/3/>=4 annotators giving the answer, as the official
    FedDAT code does for VQA Abstract and VizWiz (``get_score`` in ``src/utils/vqa_utils.py``)."""
    counts = collections.Counter(answers)
    return {a: _ANNOTATOR_SCORE.get(c, 1.0) for a, c in counts.items()}


def single_answer(ans: str) -> dict[str, float]:
    return {ans: 1.0}


def answer_list(rec: dict, path, line, key: str = "answers") -> list[str]:
    """The ``answer`` strings of a VQA-style ``answers`` list of ``{"answer": ...}`` dicts."""
    raw = field(rec, key, path, line, list)
    out = []
    for a in raw:
        if not isinstance(a, dict) or not isinstance(a.get("answer"), str):
            raise MalformedRecordError(path, line, f"entry of {key!r} without an 'answer' string")
        na = norm_answer(a["answer"])
        if na:
            out.append(na)
    if not out:
        raise MalformedRecordError(path, line, f"no non-empty answer in {key!r}")
    return out


# --------------------------------------------------------------------------------------------
# images

MAX_PAIR_HEIGHT = 384  # NLVR2 pairs are composed at this height at most (ViLT's shorter side)
PAIR_GAP = 0  # pixels between the left and right images of a pair


def resolve_image(ref: ImageRef) -> Path:
    for p in ref:
        if Path(p).is_file():
            return Path(p)
    tried = " or ".join(str(p) for p in ref)
    raise BadImageError(tried, "file not found")


def _decode(path: Path, data: bytes):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadImageError(path, f"does not decode ({e})") from None
    return img


def load_image_bytes(ref: ImageRef) -> bytes:
    """Encoded bytes of one image: kept as read when the file is a JPEG or PNG (by its header,
    whatever its extension), otherwise re-encoded to PNG. The image is fully decoded once so a
    truncated or corrupt file fails here, naming the file."""
    path = resolve_image(ref)
    data = path.read_bytes()
    img = _decode(path, data)
    if img.format in ("JPEG", "PNG"):
        return data
    buf = io.BytesIO()
    img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def load_pair_bytes(left: ImageRef, right: ImageRef) -> bytes:
    """NLVR2: the two images side by side (left | right) at a common height (the smaller of the
    two, at most ``MAX_PAIR_HEIGHT``), as one JPEG (quality 95) so that the shared one-image record
    and pipeline carry both."""
    from PIL import Image

    imgs = []
    for ref in (left, right):
        path = resolve_image(ref)
        imgs.append(_decode(path, path.read_bytes()).convert("RGB"))
    h = min(min(im.height for im in imgs), MAX_PAIR_HEIGHT)
    scaled = [
        im.resize((max(1, round(im.width * h / im.height)), h), Image.BICUBIC)
        if im.height != h
        else im
        for im in imgs
    ]
    canvas = Image.new("RGB", (sum(im.width for im in scaled) + PAIR_GAP, h), (0, 0, 0))
    canvas.paste(scaled[0], (0, 0))
    canvas.paste(scaled[1], (scaled[0].width + PAIR_GAP, 0))
    buf = io.BytesIO()
    canvas.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def load_example(cand: Candidate):
    """Read the image(s) of a candidate and return the shared record type."""
    from feddat_jax.data.records import Example

    if len(cand.images) == 1:
        image = load_image_bytes(cand.images[0])
    elif len(cand.images) == 2:
        image = load_pair_bytes(cand.images[0], cand.images[1])
    else:
        raise ValueError(f"{cand.example_id}: expected 1 or 2 images, got {len(cand.images)}")
    return Example(
        question=cand.question, image=image, answers=dict(cand.answers), example_id=cand.example_id
    )
