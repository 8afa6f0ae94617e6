"""How do host memory and start-up time grow with the number of registered clients N (100 to 10,000)?

    python -m benchmarks.host_memory                       # N = 100, 1000, 10000
    python -m benchmarks.host_memory --counts 100,1000 --eager-up-to 1000

Each N gets a synthetic stored benchmark (tensorflow-datasets array_record + manifest, written
once into ``--store-dir`` and reused): ``--train`` + ``--test`` examples per client whose images
are real-size 480x640 JPEGs (~90 KB; a pool of 16 distinct ones). Then, in a fresh process per
(N, mode), the run's data side is timed and its RSS read:

* ``on_demand`` (what ``train.experiment`` does for ``data.source="tfds"``): ``build_experiment``
  (manifest, lazy client splits, RecordStores, task metadata, the tiny ViLT checkpoint's HF
  tokenizer and model, 384x640 images), then one training segment of a cohort of C clients
  (``cohort_batches(window=...)``: read, decode, resize) and one evaluation chunk;
* ``decode_once`` (the previous behaviour, for comparison, up to ``--eager-up-to`` clients):
  ``tfds_store.read_benchmark`` (every record's bytes) + ``ClientDataStore.build`` (every image
  decoded into RAM) for both splits.

Columns: ``data_s`` / ``data_MB`` (the data side alone: manifest, lazy splits, row stores and
task metadata; then RSS), ``startup_s`` / ``rss_start_MB`` (the whole ``build_experiment``, model
and client registry included), ``peak_MB`` (the process's peak RSS), ``segment_s`` (the first
segment's rows read and decoded), ``registry_MB`` (the client registry's private state at
start-up: each replica's one initial state, ``exp.private_init``; ``rss-registry`` is the rest).
Writes ``--out`` after every row.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.harness import ROOT, command, default_out, write_json
from benchmarks.synthetic_store import write_store

TINY_VILT = ROOT / "feddat_jax" / "assets" / "tiny_vilt"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--counts", default="100,1000,10000")
    p.add_argument("--train", type=int, default=2, help="train examples per client")
    p.add_argument("--test", type=int, default=1, help="test examples per client")
    p.add_argument("--cohort", type=int, default=5, help="C clients in the timed segment")
    p.add_argument("--segment-steps", type=int, default=1)
    p.add_argument("--eager-up-to", type=int, default=1000, help="largest N for decode_once")
    p.add_argument("--store-dir", default="/tmp/feddat_host_memory_stores")
    p.add_argument("--out", default=str(default_out("host_memory")))
    p.add_argument("--child", nargs=2, metavar=("N", "MODE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def store_for(n: int, args) -> Path:
    out = Path(args.store_dir) / f"n{n}_tr{args.train}_te{args.test}"
    return write_store(out, n, args.train, args.test)


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def child(n: int, mode: str, args) -> dict:
    """One (N, mode) measurement, in its own process (its RSS is this run's alone)."""
    import numpy as np

    store = store_for(n, args)
    base = rss_mb()
    t0 = time.perf_counter()
    out = {"N": n, "mode": mode, "rss_before_MB": base}
    if mode == "on_demand":
        from feddat_jax.data import source
        from feddat_jax.data.pipeline import cohort_batches, task_metadata
        from feddat_jax.data.tokenize import HFTokenizerEncoder
        from feddat_jax.train.config_base import config_from_file
        from feddat_jax.train.experiment import build_experiment, row_store

        cfg = config_from_file("configs/vilt.py:domain")
        cfg.data.tfds_dir, cfg.model.checkpoint = str(store), str(TINY_VILT)
        cfg.model.image_hw, cfg.model.max_text_len = (384, 640), 24
        cfg.clients_per_round, cfg.eval_batch_size = args.cohort, 2
        # the data side alone (what grew with N before): manifest, lazy splits, row stores
        bench = source.open_benchmark(store)
        stores = [
            row_store(cfg, bench.clients, part, HFTokenizerEncoder(str(TINY_VILT)), 5)
            for part in ("train", "test")
        ]
        task_metadata(bench.clients)
        out["data_startup_s"] = time.perf_counter() - t0
        out["rss_data_MB"] = rss_mb()
        del bench, stores
        exp = build_experiment(cfg)
        out["startup_s"] = time.perf_counter() - t0
        out["rss_start_MB"] = rss_mb()
        out["registry_MB"] = sum(x.nbytes for x in __import__("jax").tree.leaves(exp.private_init))
        out["registry_MB"] /= 2**20
        ids = np.arange(min(args.cohort, n))
        t1 = time.perf_counter()
        steps = exp.train_store.max_steps(cfg.batch_size)
        batch = cohort_batches(
            exp.train_store, ids, cfg.batch_size, seed=0, round_index=0, num_steps=steps,
            window=(0, min(args.segment_steps, steps)),
        )  # fmt: skip
        out["segment_s"] = time.perf_counter() - t1
        out["segment_MB"] = sum(v.nbytes for v in batch.values()) / 2**20
        out["eval_chunk_MB"] = sum(v.nbytes for v in exp.eval_batches(ids).values()) / 2**20
    else:
        from feddat_jax.data import tfds_store
        from feddat_jax.data.client_store import ClientDataStore
        from feddat_jax.data.tokenize import HFTokenizerEncoder

        bench = tfds_store.read_benchmark(store)
        encoder = HFTokenizerEncoder(str(TINY_VILT))
        stores = [
            ClientDataStore.build(bench.clients, part, encoder, (384, 640), 24, 5)
            for part in ("train", "test")
        ]
        out["startup_s"] = out["data_startup_s"] = time.perf_counter() - t0
        out["rss_start_MB"] = out["rss_data_MB"] = rss_mb()
        out["decoded_MB"] = sum(v.nbytes for s in stores for v in s.arrays.values()) / 2**20
    out["peak_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args)))
        return
    counts = [int(c) for c in args.counts.split(",")]
    for n in counts:
        store_for(n, args)
    rows = []
    print(
        f"{'N':>6} {'mode':11} {'data_s':>7} {'data_MB':>7} {'startup_s':>9} "
        f"{'rss_start_MB':>12} {'peak_MB':>8} "
        f"{'segment_s':>9} {'registry_MB':>11} {'rss-registry':>12} {'decoded_MB':>10}",
        flush=True,
    )
    for n in counts:
        for mode in ("on_demand", "decode_once"):
            if mode == "decode_once" and n > args.eager_up_to:
                continue
            cmd = [sys.executable, "-m", "benchmarks.host_memory", "--child", str(n), mode]
            cmd += argv or sys.argv[1:]
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if done.returncode:
                row = {"N": n, "mode": mode, "error": done.stderr[-800:]}
            else:
                row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            write_json(args.out, {"command": command("host_memory"), "args": vars(args), "rows": rows})
            if "error" in row:
                print(f"{n:>6} {mode:11} ERROR {row['error'][-300:]}", flush=True)
                continue
            seg = row.get("segment_s")
            print(
                f"{n:>6} {mode:11} {row['data_startup_s']:>7.2f} {row['rss_data_MB']:>7.0f} "
                f"{row['startup_s']:>9.2f} {row['rss_start_MB']:>12.0f} "
                f"{row['peak_MB']:>8.0f} {'-' if seg is None else f'{seg:.2f}':>9} "
                f"{row.get('registry_MB', 0):>11.1f} "
                f"{row['rss_start_MB'] - row.get('registry_MB', 0):>12.0f} "
                f"{row.get('decoded_MB', 0):>10.0f}",
                flush=True,
            )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
