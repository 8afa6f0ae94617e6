"""Build a real federated benchmark from the sources' released files and store it as TFDS.

    python -m feddat_jax.data.build --benchmark domain --raw_dir /data/raw \
        --out /data/fed/domain [--seed 0 --train 2500 --test 500 --top_k 100 --skip_bad \
        --overwrite]

``--raw_dir`` holds one folder per source (``feddat_jax.data.benchmarks`` lists them; each reader's
docstring gives the files it reads). ``--out`` receives one tensorflow-datasets dataset (array_record,
readable without TensorFlow) with ``manifest.json``, written by
``feddat_jax.data.tfds_store.write_benchmark`` and read back with ``read_benchmark``.

The split recipe (ours: the paper's official one was never released)
---------------------------------------------------------------------
For every client (one source each), with ``K = --top_k``, ``N_train = --train``,
``N_test = --test``:

1. Read the client's source *train* split (``ClientSource.train_split``) and its held-out split
   (``test_split``, e.g. the source's val or test file). Soft scores per source (METHOD.md §5):
   VQAv2 ``min(1, count/3)`` over its 10 annotators; VQA Abstract and VizWiz {0.3, 0.6, 0.9, 1.0}
   for 1/2/3/>=4 annotators (the official FedDAT ``get_score``); 1.0 for the single-answer
   sources (GQA, COCO-QA, AQUA, CLOVE); one-hot for the classification tasks.
2. Answer vocabulary = the client's top-K answers of its train split, ranked by summed soft score
   (for single-answer sources: by frequency), ties broken by the answer string
   (``records.answer_vocabulary``); the order is the client's head order. Classification clients
   (NLVR2, SNLI-VE, VCR) use their fixed label list instead (``("false", "true")``,
   ``("entailment", "neutral", "contradiction")``, ``("A", "B", "C", "D")``).
3. Keep the examples (of both splits) whose answers are ALL in the vocabulary.
4. Sample ``min(N_train, eligible)`` train and ``min(N_test, eligible)`` test examples without
   replacement: a permutation from ``np.random.default_rng([seed, crc32(client name), part])``
   (``part`` 0 = train, 1 = test) walked in order. Only the images of walked examples are read;
   under ``--skip_bad`` an image that is missing or does not decode is skipped, counted, and the
   walk goes on, so the counts still reach the target when enough good examples exist.
   The same seed and inputs give byte-identical splits.

Bad input: a missing file or folder raises naming every path tried; a malformed record raises
naming its file and line, and an undecodable image raises naming its file, unless ``--skip_bad``,
which skips them and records per client how many of each kind were skipped (and the first
messages) in the manifest. A JSON document that does not parse at all is always fatal.

The manifest (``manifest.json`` -> ``info``) records per client the source (reader, options,
folder, splits, sha256 of each annotation file read), the counts (records read, eligible after
the top-K filter, taken), the skipped counts, and the recipe parameters; ``tfds_store`` adds the
answer lists, the seed and the sha256 of every record file.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np

from feddat_jax.data.benchmarks import BENCHMARKS, BenchmarkDef, ClientSource, get_benchmark
from feddat_jax.data.readers import (
    BadImageError,
    Candidate,
    MissingSourceError,
    ReadLog,
    SourceError,
    load_example,
)
from feddat_jax.data.records import ClientSplit, FederatedBenchmark, answer_vocabulary
from feddat_jax.data.tfds_store import sha256_file

RECIPE_VERSION = 1


class BuildError(ValueError):
    """A client that cannot be built (e.g. nothing left after the top-K filter)."""


def client_rng(seed: int, client: str, part: int) -> np.random.Generator:
    """The seeded stream of one client's train (part 0) or test (part 1) sampling."""
    return np.random.default_rng([int(seed), zlib.crc32(client.encode("utf-8")), int(part)])


def _take(cands: list[Candidate], n: int, rng: np.random.Generator, log: ReadLog) -> list:
    out = []
    for i in rng.permutation(len(cands)):
        if len(out) >= n:
            break
        try:
            out.append(load_example(cands[int(i)]))
        except BadImageError as err:
            log.handle(err)
    return out


def build_client(
    src: ClientSource,
    raw_dir: str | Path,
    *,
    seed: int = 0,
    n_train: int = 2500,
    n_test: int = 500,
    top_k: int = 100,
    skip_bad: bool = False,
) -> tuple[ClientSplit, dict]:
    """One client's split and its manifest entry (see the module docstring for the recipe)."""
    reader = src.make_reader()
    root = Path(raw_dir) / src.folder
    log = ReadLog(skip_bad=skip_bad)

    if reader.task_kind == "classification":
        vocab = list(reader.labels)
    else:  # first pass over the train split: only the answer counts are kept
        vocab = answer_vocabulary(
            reader.scan(root, src.train_split, ReadLog(skip_bad=skip_bad)), top_k
        )
    keep = set(vocab)

    counts, parts = {}, {}
    for part_idx, (part, split, n) in enumerate(
        (("train", src.train_split, n_train), ("test", src.test_split, n_test))
    ):
        records, eligible = 0, []
        for cand in reader.scan(root, split, log):
            records += 1
            if keep.issuperset(cand.answers):
                eligible.append(cand)
        if not eligible:
            raise BuildError(
                f"client {src.client!r}: no {part} example of {root} ({split} split, "
                f"{records} records) has all its answers in the top-{top_k} answers"
            )
        parts[part] = _take(eligible, n, client_rng(seed, src.client, part_idx), log)
        if not parts[part]:
            raise BuildError(
                f"client {src.client!r}: every sampled {part} image was bad "
                f"({log.skipped['bad_image']} skipped)"
            )
        counts[part] = {
            "source_split": split,
            "records": records,
            "eligible": len(eligible),
            "taken": len(parts[part]),
            "target": n,
        }

    client = ClientSplit(
        name=src.client,
        task_kind=reader.task_kind,
        answers=vocab,
        train=parts["train"],
        test=parts["test"],
    )
    entry = {
        "source": {
            **src.describe(),
            "files": {
                str(p.relative_to(root)) if p.is_relative_to(root) else str(p): sha256_file(p)
                for p in log.files
            },
        },
        "counts": counts,
        "skipped": dict(sorted(log.skipped.items())),
        "skipped_messages": list(log.messages),
    }
    return client, entry


def build_benchmark(
    benchmark: str | BenchmarkDef,
    raw_dir: str | Path,
    *,
    seed: int = 0,
    n_train: int = 2500,
    n_test: int = 500,
    top_k: int = 100,
    skip_bad: bool = False,
    verbose: bool = False,
) -> FederatedBenchmark:
    """Build every client of ``benchmark`` from ``raw_dir``; nothing is written."""
    bdef = get_benchmark(benchmark) if isinstance(benchmark, str) else benchmark
    raw_dir = Path(raw_dir)
    if not raw_dir.is_dir():
        raise MissingSourceError("--raw_dir folder", [raw_dir])
    clients, sources, counts, skipped, messages = [], {}, {}, {}, {}
    for src in bdef.clients:
        t0 = time.time()
        client, entry = build_client(
            src, raw_dir, seed=seed, n_train=n_train, n_test=n_test, top_k=top_k, skip_bad=skip_bad
        )
        clients.append(client)
        sources[src.client] = entry["source"]
        counts[src.client] = entry["counts"]
        skipped[src.client] = entry["skipped"]
        if entry["skipped_messages"]:
            messages[src.client] = entry["skipped_messages"]
        if verbose:
            print(
                f"[build] {bdef.name}/{src.client}: train {len(client.train)} test "
                f"{len(client.test)} answers {len(client.answers)} skipped "
                f"{sum(entry['skipped'].values())} ({time.time() - t0:.1f}s)",
                file=sys.stderr,
            )
    total = collections.Counter()
    for s in skipped.values():
        total.update(s)
    manifest = {
        "benchmark": bdef.name,
        "description": bdef.description,
        "recipe": {
            "version": RECIPE_VERSION,
            "seed": seed,
            "train": n_train,
            "test": n_test,
            "top_k": top_k,
            "skip_bad": skip_bad,
            "rng": "np.random.default_rng([seed, crc32(client), part])",
        },
        "sources": sources,
        "counts": counts,
        "skipped": skipped,
        "skipped_total": dict(sorted(total.items())),
        "skipped_messages": messages,
    }
    return FederatedBenchmark(name=bdef.name, clients=clients, seed=seed, manifest=manifest)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m feddat_jax.data.build",
        description="Build a real federated benchmark (one client per source) and store it as a "
        "TFDS dataset with its manifest.",
    )
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    parser.add_argument("--raw_dir", required=True, help="folder with one sub-folder per source")
    parser.add_argument("--out", required=True, help="output folder of the TFDS dataset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train", type=int, default=2500, help="train examples per client")
    parser.add_argument("--test", type=int, default=500, help="test examples per client")
    parser.add_argument("--top_k", type=int, default=100, help="answer vocabulary per client")
    parser.add_argument(
        "--skip_bad",
        action="store_true",
        help="skip (and count in the manifest) malformed records and bad images",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    args = parser.parse_args(argv)
    for flag in ("train", "test", "top_k"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be >= 1")

    from feddat_jax.data.tfds_store import write_benchmark

    try:
        bench = build_benchmark(
            args.benchmark,
            args.raw_dir,
            seed=args.seed,
            n_train=args.train,
            n_test=args.test,
            top_k=args.top_k,
            skip_bad=args.skip_bad,
            verbose=True,
        )
        out = write_benchmark(bench, args.out, overwrite=args.overwrite)
    except (SourceError, BuildError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {bench.name} ({len(bench.clients)} clients) to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
