"""Reading a source in one call, for the reader tests (tests/test_readers_*.py)."""

from __future__ import annotations

import io

from PIL import Image

from feddat_jax.data.readers import get_reader
from feddat_jax.data.records import Example


def read_examples(name, root, split, **options) -> list[Example]:
    """Every example reader `name` (built with `options`) yields from `root`'s `split`."""
    return list(get_reader(name, **options).read(root, split))


def decode_image(ex: Example) -> Image.Image:
    img = Image.open(io.BytesIO(ex.image))
    img.load()
    return img
