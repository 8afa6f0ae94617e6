"""Every client's examples, encoded once into host numpy arrays, and the row-store protocol.

Decoding PNG/JPEG and tokenizing are the expensive parts of input handling, and their result never
changes between rounds, so :class:`ClientDataStore` does them exactly once per run. A round then
only gathers rows by index (``pipeline``). All clients' rows are concatenated into one array per
key with per-client offsets: one allocation per key rather than N, and a cohort's rows come out of
a single fancy-index. That costs host memory in proportion to every registered client's data;
``data.source.RecordStore`` reads and decodes a cohort's rows on demand instead, behind the same
:class:`RowStore` protocol.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from PIL import Image

from feddat_jax.data.records import ClientSplit
from feddat_jax.data.tokenize import TextEncoder

KEYS = ("input_ids", "attention_mask", "image", "pixel_mask", "targets")


def decode_image(data: bytes, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode, scale to fit inside (height, width) keeping the aspect ratio, pad bottom/right.

    Returns ``image`` uint8 [H,W,3] and ``pixel_mask`` uint8 [H,W] (1 = real pixel). An image
    that already has the static size is passed through untouched (no resampling).
    """
    with Image.open(io.BytesIO(data)) as img:
        img = img.convert("RGB")
        scale = min(height / img.height, width / img.width)
        if scale != 1.0:
            size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
            img = img.resize(size, Image.BILINEAR)
        pixels = np.asarray(img, np.uint8)
    image = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), np.uint8)
    h, w = pixels.shape[:2]
    image[:h, :w] = pixels
    mask[:h, :w] = 1
    return image, mask


def _targets(client: ClientSplit, part: str, num_answers: int) -> np.ndarray:
    """Soft scores (or one-hot) at each answer's index in the client's own vocabulary; answers
    outside the vocabulary carry no target (the top-K rule of METHOD.md §5)."""
    index = {a: j for j, a in enumerate(client.answers)}
    examples = getattr(client, part)
    out = np.zeros((len(examples), num_answers), np.float32)
    for row, ex in enumerate(examples):
        for answer, score in ex.answers.items():
            if answer in index:
                out[row, index[answer]] = score
    return out


class RowStore(Protocol):
    """What the pipeline needs of a split's encoded rows: client k owns the global rows
    ``offsets[k] .. offsets[k + 1] - 1``; ``read`` returns every key of :data:`KEYS` for an array
    of global rows (any shape ``R``): ``input_ids`` [R, L], ``image`` [R, H, W, 3], ...; the
    arrays are the caller's (writable)."""

    names: tuple[str, ...]
    offsets: np.ndarray

    @property
    def num_clients(self) -> int: ...

    def num_examples(self) -> np.ndarray: ...

    def max_steps(self, batch_size: int) -> int: ...

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]: ...

    def row_tags(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Host metadata of these rows (``question_type``, ``group``: object arrays)."""
        ...


@dataclasses.dataclass(frozen=True)
class ClientDataStore:
    """Encoded rows of one split (``train`` or ``test``) of N clients.

    ``arrays[key][offsets[k]:offsets[k + 1]]`` are client k's rows, in the client's stored order.
    ``tags`` holds per-row host metadata that never goes to the device: the question type and the
    group ("shared"/"shifted", "" where the source does not say) by which scores are broken down.
    """

    names: tuple[str, ...]
    part: str
    offsets: np.ndarray
    arrays: dict[str, np.ndarray]
    tags: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @classmethod
    def build(
        cls,
        clients: Sequence[ClientSplit],
        part: str,
        encoder: TextEncoder,
        image_hw: tuple[int, int],
        max_length: int,
        num_answers: int | None = None,
    ) -> ClientDataStore:
        """Encode ``clients``' ``part`` split; ``num_answers`` (A) defaults to the largest
        vocabulary among them and must be the same for train and test stores of one run."""
        if part not in ("train", "test"):
            raise ValueError(f"part={part!r} is not one of ('train', 'test')")
        largest = max(len(c.answers) for c in clients)
        num_answers = largest if num_answers is None else num_answers
        if num_answers < largest:
            raise ValueError(
                f"num_answers={num_answers} < the largest client vocabulary ({largest})"
            )
        height, width = image_hw
        examples = [ex for c in clients for ex in getattr(c, part)]
        image = np.zeros((len(examples), height, width, 3), np.uint8)
        pixel_mask = np.zeros((len(examples), height, width), np.uint8)
        for row, ex in enumerate(examples):
            image[row], pixel_mask[row] = decode_image(ex.image, height, width)
        text = encoder.encode([ex.question for ex in examples], max_length)
        targets = (
            np.concatenate([_targets(c, part, num_answers) for c in clients])
            if examples
            else np.zeros((0, num_answers), np.float32)
        )
        sizes = [len(getattr(c, part)) for c in clients]
        return cls(
            names=tuple(c.name for c in clients),
            part=part,
            offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            arrays={
                "input_ids": text["input_ids"],
                "attention_mask": text["attention_mask"],
                "image": image,
                "pixel_mask": pixel_mask,
                "targets": targets,
            },
            tags={
                "question_type": np.array([ex.question_type for ex in examples], dtype=object),
                "group": np.array([ex.group for ex in examples], dtype=object),
            },
        )

    @property
    def num_clients(self) -> int:
        return len(self.names)

    @property
    def num_answers(self) -> int:
        return int(self.arrays["targets"].shape[1])

    def num_examples(self) -> np.ndarray:
        """int64 [N]: rows per client."""
        return np.diff(self.offsets)

    def max_steps(self, batch_size: int) -> int:
        """Batches in the largest client's epoch: a cohort padded to this compiles once."""
        return int(-(-self.num_examples().max(initial=0) // batch_size))

    def read(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """Every key's values at these global rows (one fancy-index per key: new arrays)."""
        return {key: self.arrays[key][rows] for key in KEYS}

    def row_tags(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {name: values[rows] for name, values in self.tags.items()}
