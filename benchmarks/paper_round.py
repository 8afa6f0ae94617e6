"""Does the configs/vilt.py:domain paper config fit in host memory at paper scale? The first segments of a round on CPU.

    python -m benchmarks.paper_round                 # 3 segments of K = 2 steps, ~10 min
    python -m benchmarks.paper_round --segments 3 --segment-steps 2 --train 2500

``configs/vilt.py:domain`` as a user runs it (``launch.py``'s ``build_experiment`` and
``train.loop.train``), on a synthetic stored benchmark of the paper's shape: 5 clients of
``--train`` examples (2,500: S = 1,250 local steps of B = 2) with real-size 480x640 JPEG images
padded to 384x640, ViLT-B/32 with random weights (no checkpoint), float32. The round runs in
segments of ``--segment-steps`` (the config's 100 would take about an hour per segment on 2 CPU
cores) and the run stops after ``--segments`` of them. Printed per segment: seconds (the first
includes compilation), RSS and peak RSS. The whole round would take hours on CPU; the point is the
memory: the decode-once store would hold 12.5 GB of decoded images and a one-call round another
[5, 1250, 2, 384, 640, 3] = 12.3 GB of inputs, past 24 GB together.
"""

from __future__ import annotations

import argparse
import dataclasses
import resource
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.harness import command, default_out, write_json
from benchmarks.synthetic_store import write_store
from feddat_jax.train import loop
from feddat_jax.train.config_base import config_from_file
from feddat_jax.train.experiment import build_experiment


class Stop(Exception):
    """Raised from the progress hook once enough segments ran."""


class FirstSegments:
    """The experiment's SegmentedRound, stopping the run after ``count`` segments and recording
    each one's time and the process's memory."""

    def __init__(self, inner, count: int, rows: list, t0: float):
        self.inner, self.count, self.rows, self.last = inner, count, rows, t0

    def windows(self, num_steps: int):
        return self.inner.windows(num_steps)

    def __call__(self, *args, on_segment=None, **kwargs):
        def hook(k: int) -> None:
            now = time.perf_counter()
            self.rows.append(
                {
                    "segment": k,
                    "seconds": now - self.last,
                    "rss_MB": psutil.Process().memory_info().rss / 2**20,
                    "peak_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                }
            )
            self.last = now
            r = self.rows[-1]
            print(
                f"segment {k}: {r['seconds']:.1f} s, RSS {r['rss_MB']:.0f} MB, "
                f"peak {r['peak_MB']:.0f} MB",
                flush=True,
            )
            if on_segment is not None:
                on_segment(k)
            if k + 1 >= self.count:
                raise Stop

        return self.inner(*args, on_segment=hook, **kwargs)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=5)
    p.add_argument("--train", type=int, default=2500)
    p.add_argument("--test", type=int, default=20)
    p.add_argument("--segments", type=int, default=3)
    p.add_argument("--segment-steps", type=int, default=2)
    p.add_argument("--store-dir", default="/tmp/feddat_paper_store")
    p.add_argument("--out", default=str(default_out("paper_round")))
    args = p.parse_args(argv)
    store = write_store(
        Path(args.store_dir) / f"c{args.clients}_tr{args.train}_te{args.test}",
        args.clients,
        args.train,
        args.test,
    )
    cfg = config_from_file("configs/vilt.py:domain")
    cfg.data.tfds_dir, cfg.model.checkpoint = str(store), ""  # random ViLT-B/32
    cfg.segment_steps, cfg.rounds, cfg.tensorboard = args.segment_steps, 1, False
    t0 = time.perf_counter()
    exp = build_experiment(cfg)
    out = {
        "command": command("paper_round"),
        "args": vars(args),
        "startup_s": time.perf_counter() - t0,
        "startup_rss_MB": psutil.Process().memory_info().rss / 2**20,
        "steps_per_round": exp.train_store.max_steps(cfg.batch_size),
        "clients": len(exp.client_names),
        "strategy": exp.strategy,
        "segments": [],
    }
    print(
        f"# vilt.py:domain: {out['clients']} clients, S = {out['steps_per_round']} steps of B = "
        f"{cfg.batch_size}, images {tuple(cfg.model.image_hw)}, segments of "
        f"{args.segment_steps} steps ({exp.strategy}); start-up {out['startup_s']:.0f} s, "
        f"RSS {out['startup_rss_MB']:.0f} MB",
        flush=True,
    )
    exp = dataclasses.replace(
        exp,
        segmented_round=FirstSegments(
            exp.segmented_round, args.segments, out["segments"], time.perf_counter()
        ),
    )
    with tempfile.TemporaryDirectory() as workdir:
        try:
            loop.train(exp, workdir, show_progress=False)
        except Stop:
            pass
    out["peak_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    write_json(args.out, out)
    later = [r["seconds"] for r in out["segments"][1:]]
    print(
        f"peak RSS {out['peak_MB']:.0f} MB; seconds per segment after the first: "
        f"{', '.join(f'{s:.1f}' for s in later)}; wrote {args.out}",
        flush=True,
    )
    return out


if __name__ == "__main__":
    main()
