"""Synthetic stored benchmarks with real-size images, for the host-memory and paper-scale runs.

Images are 480x640 JPEGs (~90 KB, the size of a COCO photo; smooth gradients plus noise) drawn
from a pool of 16, so writing 10,000 clients takes a couple of minutes, not hours. Each store is
written once into its folder and reused while its manifest exists.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image

from feddat_jax.data import tfds_store
from feddat_jax.data.records import ClientSplit, Example, FederatedBenchmark

ANSWERS = ("yes", "no", "two", "red", "dog")


def jpeg_pool(count: int = 16, hw: tuple[int, int] = (480, 640)) -> list[bytes]:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0 : hw[0], 0 : hw[1]]
    pool = []
    for i in range(count):
        img = np.stack([(x * (i + 1) // 5), (y * (i + 2) // 5), ((x + y) * (i + 3) // 7)], -1)
        img = (img % 256 + rng.integers(-20, 20, img.shape)).clip(0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=85)
        pool.append(buf.getvalue())
    return pool


def write_store(out: str | Path, num_clients: int, train: int, test: int) -> Path:
    """``num_clients`` clients of ``train`` + ``test`` VQA examples each (reused if written)."""
    out = Path(out)
    if (out / tfds_store.MANIFEST).is_file():
        return out
    pool = jpeg_pool()

    def example(k: int, j: int) -> Example:
        question = f"what is in picture {j} of client {k} ?"
        answer = ANSWERS[(k + j) % len(ANSWERS)]
        return Example(question, pool[(k + j) % len(pool)], {answer: 1.0}, f"c{k}_{j}")

    clients = [
        ClientSplit(
            f"c{k}",
            "vqa",
            list(ANSWERS),
            [example(k, j) for j in range(train)],
            [example(k, train + j) for j in range(test)],
        )
        for k in range(num_clients)
    ]
    t0 = time.perf_counter()
    tfds_store.write_benchmark(FederatedBenchmark(f"synth{num_clients}", clients, 0), out)
    print(f"# wrote {out} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return out
