"""A federated benchmark on disk: one tensorflow-datasets dataset (array_record) + manifest.json.

Why TFDS without TensorFlow: the format is a standard others can open with ``tfds.data_source``,
ArrayRecord gives random access, and TFDS's NumPy path needs no TensorFlow. We write the records
ourselves (``ArrayRecordWriter`` + ``tfds.folder_dataset.write_metadata``) rather than through a
builder's ``download_and_prepare``, which drags in download machinery this offline store never uses.

Layout of ``out_dir``::

    <name>-<client>_<train|test>.array_record-00000-of-00001   one split per client and part
    dataset_info.json, features.json                           TFDS metadata
    manifest.json                                              clients, counts, answers, sha256s

Images are kept as their encoded bytes (PNG/JPEG) and read back undecoded, so a round trip returns
exactly the bytes that went in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

from feddat_jax.errors import DataError
from feddat_jax.data.records import ClientSplit, Example, FederatedBenchmark

FORMAT_VERSION = 2
MANIFEST = "manifest.json"
_PARTS = ("train", "test")
_NAME_RE = re.compile(r"^[A-Za-z0-9_]+$")
_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


class StoreError(DataError):
    """A stored benchmark that is missing, incomplete or corrupt; the message names the file."""


def _features():
    import tensorflow_datasets as tfds

    return tfds.features.FeaturesDict(
        {
            "question": tfds.features.Text(),
            "image": tfds.features.Image(shape=(None, None, 3), encoding_format=None),
            "answers": tfds.features.Sequence(tfds.features.Text()),
            "scores": tfds.features.Sequence(np.float32),
            "client": tfds.features.Text(),
            "example_id": tfds.features.Text(),
            "question_type": tfds.features.Text(),
            "group": tfds.features.Text(),
        }
    )


def split_name(client: str, part: str) -> str:
    return f"{client}_{part}"


def record_filename(benchmark_name: str, client: str, part: str) -> str:
    return f"{benchmark_name}-{split_name(client, part)}.array_record-00000-of-00001"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (manifest checksums)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_names(benchmark: FederatedBenchmark) -> None:
    names = [benchmark.name] + [c.name for c in benchmark.clients]
    bad = [n for n in names if not _NAME_RE.match(n)]
    if bad:
        raise ValueError(
            f"names {bad} are not usable as TFDS dataset/split names; allowed "
            "characters: letters, digits, '_'"
        )
    clients = [c.name for c in benchmark.clients]
    if len(set(clients)) != len(clients) or not clients:
        raise ValueError(f"client names must be unique and non-empty, got {clients}")


def _write_split(path: Path, features, client: str, examples: list[Example]) -> None:
    from array_record.python.array_record_module import ArrayRecordWriter

    writer = ArrayRecordWriter(str(path), "group_size:1")
    try:
        for ex in examples:
            answers = list(ex.answers)
            writer.write(
                features.serialize_example(
                    {
                        "question": ex.question,
                        "image": ex.image,
                        "answers": answers,
                        "scores": [ex.answers[a] for a in answers],
                        "client": client,
                        "example_id": ex.example_id,
                        "question_type": ex.question_type,
                        "group": ex.group,
                    }
                )
            )
    finally:
        writer.close()


def write_benchmark(
    benchmark: FederatedBenchmark, out_dir: str | os.PathLike, *, overwrite: bool = False
) -> Path:
    """Write ``benchmark`` as one TFDS dataset plus ``manifest.json`` into ``out_dir``.

    Returns ``out_dir``. A non-empty ``out_dir`` is refused unless ``overwrite`` (then its files
    are replaced), so a half-written or foreign folder is never mixed with a new benchmark.
    """
    import tensorflow_datasets as tfds

    _check_names(benchmark)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True to replace it")
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.iterdir():
        if stale.is_file():
            stale.unlink()
    features = _features()
    split_infos, files, clients = [], {}, []
    for c in benchmark.clients:
        for part in _PARTS:
            examples = getattr(c, part)
            if not examples:
                raise ValueError(
                    f"client {c.name!r} has no {part} examples; every client needs both"
                )
            fname = record_filename(benchmark.name, c.name, part)
            _write_split(out / fname, features, c.name, examples)
            files[fname] = sha256_file(out / fname)
            split_infos.append(
                tfds.core.SplitInfo(
                    name=split_name(c.name, part),
                    shard_lengths=[len(examples)],
                    num_bytes=(out / fname).stat().st_size,
                )
            )
        clients.append(
            {
                "name": c.name,
                "task_kind": c.task_kind,
                "answers": list(c.answers),
                "num_train": len(c.train),
                "num_test": len(c.test),
            }
        )
    template = tfds.core.ShardedFileTemplate(
        data_dir=out,
        template=_TEMPLATE,
        dataset_name=benchmark.name,
        filetype_suffix="array_record",
    )
    tfds.folder_dataset.write_metadata(
        data_dir=out,
        features=features,
        split_infos=split_infos,
        version="1.0.0",
        filename_template=template,
        check_data=False,
    )
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": benchmark.name,
        "seed": benchmark.seed,
        "sources": benchmark.manifest.get("sources", {c["name"]: c["name"] for c in clients}),
        "clients": clients,
        "sha256": files,
        "info": benchmark.manifest,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return out


def load_manifest(out: Path) -> dict:
    """The manifest of a stored benchmark (format checked); reads nothing else."""
    path = out / MANIFEST
    if not path.is_file():
        raise StoreError(f"missing {path}: not a stored benchmark (write it with write_benchmark)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StoreError(f"corrupt {path}: {e}") from e
    if manifest.get("format_version") != FORMAT_VERSION:
        raise StoreError(
            f"{path}: format_version {manifest.get('format_version')!r}, "
            f"this reader knows {FORMAT_VERSION}"
        )
    return manifest


def verify_checksums(out_dir: str | os.PathLike) -> dict:
    """Check every record file against the manifest; returns the manifest or raises StoreError."""
    out = Path(out_dir)
    manifest = load_manifest(out)
    for fname in sorted(manifest["sha256"]):
        verify_file(out, fname, manifest)
    return manifest


def verify_file(out_dir: str | os.PathLike, fname: str, manifest: dict) -> None:
    """Check one record file against the manifest's sha256; raises StoreError naming it."""
    path = Path(out_dir) / fname
    if not path.is_file():
        raise StoreError(f"missing record file {path}")
    expected = manifest["sha256"].get(fname)
    got = sha256_file(path)
    if got != expected:
        raise StoreError(
            f"corrupt record file {path}: sha256 {got[:16]}... != manifest's "
            f"{str(expected)[:16]}..."
        )


def decode_record(rec: dict) -> Example:
    """A record read from a split's data source (image bytes undecoded) as an Example."""

    def text(v) -> str:
        return v.decode("utf-8") if isinstance(v, bytes) else str(v)

    # The shortest decimal of the stored float32 gives back scores like 0.3 exactly.
    answers = {text(a): float(str(np.float32(s))) for a, s in zip(rec["answers"], rec["scores"])}
    return Example(
        question=text(rec["question"]),
        image=bytes(rec["image"]),
        answers=answers,
        example_id=text(rec["example_id"]),
        question_type=text(rec["question_type"]),
        group=text(rec["group"]),
    )


def read_benchmark(out_dir: str | os.PathLike) -> FederatedBenchmark:
    """Read a benchmark written by :func:`write_benchmark` (checksums verified first)."""
    import tensorflow_datasets as tfds

    out = Path(out_dir)
    manifest = verify_checksums(out)
    builder = tfds.builder_from_directory(out)
    source = builder.as_data_source(decoders={"image": tfds.decode.SkipDecoding()})
    clients = []
    for c in manifest["clients"]:
        parts = {}
        for part in _PARTS:
            data = source[split_name(c["name"], part)]
            parts[part] = [decode_record(r) for r in data.__getitems__(list(range(len(data))))]
            if len(parts[part]) != c[f"num_{part}"]:
                raise StoreError(
                    f"{out / record_filename(manifest['name'], c['name'], part)}: "
                    f"{len(parts[part])} records, manifest says {c[f'num_{part}']}"
                )
        clients.append(
            ClientSplit(
                name=c["name"], task_kind=c["task_kind"], answers=list(c["answers"]), **parts
            )
        )
    return FederatedBenchmark(
        name=manifest["name"], clients=clients, seed=manifest["seed"], manifest=manifest["info"]
    )
