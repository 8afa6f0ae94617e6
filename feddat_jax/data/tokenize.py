"""Text encoders: questions -> ``input_ids`` / ``attention_mask`` int32 [n, L].

Two implementations of one small interface, so the pipeline does not care which model it feeds:
the checkpoint's own BERT tokenizer (read from a local folder; nothing is fetched) for pretrained
backbones, and a word-level vocabulary built from the benchmark's questions for the tiny demo
model, whose embedding table should be as small as the templates' vocabulary.
"""

from __future__ import annotations

import collections
import json
import os
import re
from pathlib import Path
from typing import Protocol
from collections.abc import Iterable, Sequence

import numpy as np

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
_SPECIALS = (PAD, UNK, CLS, SEP)  # [PAD] = 0
_WORD_RE = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


class TextEncoder(Protocol):
    vocab_size: int

    def encode(self, texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
        """``input_ids`` and ``attention_mask``, int32 [len(texts), max_length]."""
        ...


def words(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks."""
    return _WORD_RE.findall(text.lower())


class WordVocabEncoder:
    """``[CLS] w1 .. wn [SEP]`` over a fixed word list; unknown words map to ``[UNK]``."""

    def __init__(self, vocab: Sequence[str]):
        if tuple(vocab[: len(_SPECIALS)]) != _SPECIALS:
            raise ValueError(
                f"a word vocabulary must start with {_SPECIALS}, got {list(vocab[:4])}"
            )
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.vocab_size = len(self.vocab)

    @classmethod
    def from_texts(cls, texts: Iterable[str], min_count: int = 1) -> WordVocabEncoder:
        """Words seen at least ``min_count`` times, most frequent first (ties: alphabetical)."""
        counts = collections.Counter(w for t in texts for w in words(t))
        kept = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls(list(_SPECIALS) + kept)

    @classmethod
    def from_benchmark(cls, benchmark) -> WordVocabEncoder:
        """From every client's train questions (test words the train split lacks become [UNK])."""
        return cls.from_texts(ex.question for c in benchmark.clients for ex in c.train)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(self.vocab))

    @classmethod
    def load(cls, path: str | os.PathLike) -> WordVocabEncoder:
        return cls(json.loads(Path(path).read_text()))

    def encode(self, texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
        if max_length < 2:
            raise ValueError(f"max_length={max_length} leaves no room for [CLS] and [SEP]")
        ids = np.zeros((len(texts), max_length), np.int32)
        unk = self.index[UNK]
        for row, text in enumerate(texts):
            body = [self.index.get(w, unk) for w in words(text)][: max_length - 2]
            seq = [self.index[CLS], *body, self.index[SEP]]
            ids[row, : len(seq)] = seq
        return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int32)}


class HFTokenizerEncoder:
    """The checkpoint's ``BertTokenizerFast``, loaded from a local folder (vocab.txt, or
    tokenizer.json) without touching the network."""

    def __init__(self, folder: str | os.PathLike):
        from transformers import BertTokenizerFast

        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"tokenizer folder {folder} does not exist")
        self.tokenizer = BertTokenizerFast.from_pretrained(str(folder), local_files_only=True)
        self.vocab_size = len(self.tokenizer)

    def encode(self, texts: Sequence[str], max_length: int) -> dict[str, np.ndarray]:
        out = self.tokenizer(
            list(texts),
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="np",
        )
        return {
            "input_ids": out["input_ids"].astype(np.int32),
            "attention_mask": out["attention_mask"].astype(np.int32),
        }
