"""How do start-up, round and evaluation time, host memory and checkpoints grow with the clients registered (N = 100 to 100,000) when a round trains the same cohort?

    python -m benchmarks.scaling                        # N = 100, 1,000, 10,000, 100,000
    python -m benchmarks.scaling --counts 100,1000 --rounds 3

The cross-device setting on the embedded benchmark (domain family, tiny ViLT, FedDAT): N clients
of ``--train`` training and ``--test`` test questions each, drawn on demand; ``--cohort`` of them
train each round; each evaluation scores a seeded sample of ``--eval-clients``. Every N runs in a
fresh process (its own peak RSS): ``build_experiment`` (``startup_s``), then ``--rounds`` rounds
of ``train.loop.train`` with one evaluation and one checkpoint after the last. Columns:
``startup_s``; ``round_s`` and ``round_min_s`` (median and fastest of the rounds after the
first, which compiles: on a shared machine the fastest is the one least disturbed);
``eval_s`` (the evaluation, compiled in it); ``peak_rss_mb`` (the process's peak);
``checkpoint_bytes`` (the last round's checkpoint folder) and ``trained`` (clients that hold
private state of their own: the checkpoint's rows). Writes ``--out`` after every N.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import command, default_out, write_json


def measure(args: argparse.Namespace, n: int) -> dict:
    """One N, in this process."""
    import numpy as np

    from feddat_jax.train.config_base import config_from_file
    from feddat_jax.train.experiment import build_experiment
    from feddat_jax.train.loop import train

    c = config_from_file("configs/demo.py")
    c.method, c.compare_methods, c.references = "feddat", (), ()
    c.data.num_clients, c.data.train_per_client, c.data.test_per_client = n, args.train, args.test
    c.clients_per_round, c.eval_clients = args.cohort, args.eval_clients
    c.rounds, c.eval_every, c.checkpoint_every = args.rounds, args.rounds, args.rounds
    c.tensorboard = False
    t0 = time.perf_counter()
    exp = build_experiment(c)
    startup = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as workdir:
        history = train(exp, workdir, show_progress=False)
        folder = Path(workdir) / "checkpoints" / str(args.rounds)
        checkpoint = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        meta = json.loads(next(folder.rglob("meta/metadata")).read_text())
    return {
        "num_clients": n,
        "clients_per_round": args.cohort,
        "train_per_client": args.train,
        "startup_s": round(startup, 2),
        "round_s": round(float(np.median([r["time/round_s"] for r in history[1:]])), 3),
        "round_min_s": round(float(np.min([r["time/round_s"] for r in history[1:]])), 3),
        "eval_s": round(history[-1]["time/eval_s"], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "checkpoint_bytes": checkpoint,
        "trained": meta["trained_slots"],
        "score": round(history[-1]["score/mean/dat"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="100,1000,10000,100000")
    parser.add_argument("--cohort", type=int, default=10)
    parser.add_argument("--train", type=int, default=16)
    parser.add_argument("--test", type=int, default=16)
    parser.add_argument("--eval-clients", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default=str(default_out("scaling")))
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process's N
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args, args.one)))
        return
    rows: list[dict] = []
    result = {"command": command("scaling"), "rows": rows}
    print(f"{'N':>8} {'start s':>8} {'round s':>8} {'eval s':>7} {'peak MB':>8} "
          f"{'ckpt MB':>8} {'trained':>8}", flush=True)
    for n in (int(x) for x in args.counts.split(",")):
        child = [sys.executable, "-m", "benchmarks.scaling", *sys.argv[1:], "--one", str(n)]
        done = subprocess.run(child, capture_output=True, text=True)
        if done.returncode:
            rows.append({"num_clients": n, "error": done.stderr.strip().splitlines()[-1]})
            print(f"{n:>8} failed: {rows[-1]['error']}", flush=True)
        else:
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{n:>8} {row['startup_s']:>8.1f} {row['round_s']:>8.2f} {row['eval_s']:>7.1f} "
                  f"{row['peak_rss_mb']:>8} {row['checkpoint_bytes'] / 1e6:>8.2f} "
                  f"{row['trained']:>8}", flush=True)
        write_json(args.out, result)


if __name__ == "__main__":
    main()
