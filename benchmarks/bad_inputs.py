"""Runs launch.py on 77 bad inputs and prints a markdown table: input | exit | lines | the line.

    python -m benchmarks.bad_inputs > /tmp/bad_inputs.md      # ~10 min on 2 cores
    python -m benchmarks.bad_inputs workdir                   # only the cases whose label has "workdir"

Every user error should end in ONE line (``error: <what> (<where>); <fix>``) and exit 2; the
table is how we check that, and docs/ERRORS.md shows its last output.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TMP = Path(tempfile.mkdtemp(prefix="bad_inputs_"))
SMOKE = [
    "--config",
    "configs/demo.py:smoke",
    "--config.model.checkpoint=",
    "--config.model.size=tiny",
    f"--config.data.cache_dir={TMP / 'cache'}",
]


def launch(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    """launch.py with ``args``; its exit status is the result, not an exception."""
    return subprocess.run(
        [sys.executable, "launch.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def wd(name):
    return ["--workdir", str(TMP / name)]


CASES = [
    # (label, args, setup or None)
    ("no arguments", [], None),
    ("--help", ["--help"], None),
    ("missing --workdir", ["--config", "configs/demo.py:smoke"], None),
    ("missing config file", ["--config", "configs/nope.py", *wd("a")], None),
    ("bad config argument", ["--config", "configs/demo.py:bogus", *wd("a")], None),
    ("typo in a flag name", [*SMOKE, "--workdr", "x"], None),
    ("unknown config key", [*SMOKE, *wd("a"), "--config.no_such_key=1"], None),
    ("misspelt key (did you mean)", [*SMOKE, *wd("a"), "--config.round=3"], None),
    ("unknown nested key", [*SMOKE, *wd("a"), "--config.optim.lr=3"], None),
    ("wrong type", [*SMOKE, *wd("a"), "--config.rounds=abc"], None),
    ("non-boolean for a bool", [*SMOKE, *wd("a"), "--config.dp.enabled=maybe"], None),
    ("missing value", [*SMOKE, *wd("a"), "--config.rounds"], None),
    ("stray positional argument", [*SMOKE, *wd("a"), "extra"], None),
    (
        "unknown method",
        [*SMOKE, *wd("a"), "--config.compare_methods=()", "--config.method=fedsgd"],
        None,
    ),
    (
        "misspelt 2nd compare method",
        [*SMOKE, *wd("a"), '--config.compare_methods=("feddat","fedavgg")'],
        None,
    ),
    (
        "compare list without tuple syntax",
        [*SMOKE, *wd("a"), "--config.compare_methods=feddat,fedavg_adapter"],
        None,
    ),
    (
        "method listed twice",
        [*SMOKE, *wd("a"), '--config.compare_methods=("feddat","feddat")'],
        None,
    ),
    ("rounds=-1", [*SMOKE, *wd("a"), "--config.rounds=-1"], None),
    ("rounds=0", [*SMOKE, *wd("a"), "--config.rounds=0"], None),
    ("eval_every=0", [*SMOKE, *wd("a"), "--config.eval_every=0"], None),
    ("checkpoint_every=0", [*SMOKE, *wd("a"), "--config.checkpoint_every=0"], None),
    ("batch_size=0", [*SMOKE, *wd("a"), "--config.batch_size=0"], None),
    ("eval_batch_size=0", [*SMOKE, *wd("a"), "--config.eval_batch_size=0"], None),
    ("seed=-1", [*SMOKE, *wd("a"), "--config.seed=-1"], None),
    ("cohort > clients", [*SMOKE, *wd("a"), "--config.clients_per_round=7"], None),
    ("cohort fraction 0", [*SMOKE, *wd("a"), "--config.clients_per_round=0"], None),
    ("cohort 1.5", [*SMOKE, *wd("a"), "--config.clients_per_round=1.5"], None),
    ("negative learning rate", [*SMOKE, *wd("a"), "--config.optim.learning_rate=-1"], None),
    ("warmup_fraction=1.5", [*SMOKE, *wd("a"), "--config.optim.warmup_fraction=1.5"], None),
    ("AdamW b2=1.5", [*SMOKE, *wd("a"), "--config.optim.b2=1.5"], None),
    ("unknown server optimizer", [*SMOKE, *wd("a"), "--config.server.optimizer=sgd"], None),
    ("server lr 0", [*SMOKE, *wd("a"), "--config.server.hyper.learning_rate=0"], None),
    ("unknown aggregation", [*SMOKE, *wd("a"), "--config.aggregation=mean"], None),
    ("fedprox_mu<0", [*SMOKE, *wd("a"), "--config.fedprox_mu=-1"], None),
    ("FedDAT temperature 0", [*SMOKE, *wd("a"), "--config.feddat.temperature=0"], None),
    ("unknown eval_teacher", [*SMOKE, *wd("a"), "--config.feddat.eval_teacher=final"], None),
    ("DP with weighted aggregation", [*SMOKE, *wd("a"), "--config.dp.enabled=True"], None),
    (
        "DP negative noise",
        [
            *SMOKE,
            *wd("a"),
            "--config.dp.enabled=True",
            "--config.aggregation=uniform",
            "--config.dp.noise_multiplier=-1",
        ],
        None,
    ),
    (
        "DP delta=2",
        [
            *SMOKE,
            *wd("a"),
            "--config.dp.enabled=True",
            "--config.aggregation=uniform",
            "--config.dp.delta=2.0",
        ],
        None,
    ),
    ("unknown DP sampling", [*SMOKE, *wd("a"), "--config.dp.sampling=bernoulli"], None),
    ("adapter_reduction=0", [*SMOKE, *wd("a"), "--config.peft.adapter_reduction=0"], None),
    ("unknown model", [*SMOKE, *wd("a"), "--config.model.name=bert"], None),
    ("unknown model size", [*SMOKE, *wd("a"), "--config.model.size=huge"], None),
    ("unknown dtype", [*SMOKE, *wd("a"), "--config.model.dtype=float8"], None),
    ("image_hw one number", [*SMOKE, *wd("a"), "--config.model.image_hw=3"], None),
    (
        "ViLT checkpoint missing",
        [*SMOKE, *wd("a"), "--config.model.checkpoint=/nonexistent/vilt"],
        None,
    ),
    (
        "ALBEF + LoRA method",
        ["--config", "configs/albef.py:domain,smoke", *wd("a"), "--config.method=fedavg_lora"],
        None,
    ),
    (
        "ALBEF non-square images",
        ["--config", "configs/albef.py:domain,smoke", *wd("a"), "--config.model.image_hw=(32,64)"],
        None,
    ),
    (
        "ALBEF checkpoint missing",
        [
            "--config",
            "configs/albef.py:domain,smoke",
            *wd("a"),
            "--config.model.checkpoint=/nonexistent/ALBEF.pth",
        ],
        None,
    ),
    ("unknown data source", [*SMOKE, *wd("a"), "--config.data.source=hf"], None),
    ("unknown embedded family", [*SMOKE, *wd("a"), "--config.data.family=medical"], None),
    ("num_clients > family", [*SMOKE, *wd("a"), "--config.data.num_clients=9"], None),
    ("train_per_client=0", [*SMOKE, *wd("a"), "--config.data.train_per_client=0"], None),
    ("real-data config without data", ["--config", "configs/vilt.py:domain", *wd("a")], None),
    (
        "tfds_dir does not exist",
        [
            "--config",
            "configs/vilt.py:domain",
            *wd("a"),
            "--config.data.tfds_dir=/nonexistent/domain",
        ],
        None,
    ),
    (
        "tfds_dir without manifest",
        ["--config", "configs/vilt.py:domain", *wd("a"), f"--config.data.tfds_dir={TMP}"],
        None,
    ),
    ("unknown strategy", [*SMOKE, *wd("a"), "--config.strategy=pmap"], None),
    ("unknown client_storage", [*SMOKE, *wd("a"), "--config.client_storage=disk"], None),
    ("negative chunk_size", [*SMOKE, *wd("a"), "--config.chunk_size=-1"], None),
    ("mesh larger than the devices", [*SMOKE, *wd("mesh"), "--config.mesh.clients=3"], None),
    ("negative comm budget", [*SMOKE, *wd("a"), "--config.comm_max_bytes=-5"], None),
    (
        "coordinator without port",
        [
            *SMOKE,
            *wd("a"),
            "--config.distributed.coordinator_address=nohost",
            "--config.distributed.num_processes=2",
            "--config.distributed.process_id=1",
        ],
        None,
    ),
    (
        "multi-process without process_id",
        [
            *SMOKE,
            *wd("a"),
            "--config.distributed.coordinator_address=127.0.0.1:9",
            "--config.distributed.num_processes=2",
        ],
        None,
    ),
    (
        "initialization_timeout=0",
        [*SMOKE, *wd("a"), "--config.distributed.initialization_timeout=0"],
        None,
    ),
    (
        "wrong coordinator address",
        [
            *SMOKE,
            *wd("a"),
            "--config.distributed.coordinator_address=127.0.0.1:9",
            "--config.distributed.num_processes=2",
            "--config.distributed.process_id=1",
            "--config.distributed.initialization_timeout=5",
        ],
        None,
    ),
    ("workdir is a file", [*SMOKE, "--workdir", str(TMP / "afile" / "sub")], "afile"),
    ("workdir with foreign run files", [*SMOKE, *wd("foreign")], "foreign"),
    (
        "workdir with another config",
        [*SMOKE, *wd("done"), "--config.peft.adapter_reduction=4"],
        "done",
    ),
    ("workdir locked by a live run", [*SMOKE, *wd("locked")], "locked"),
    (
        "pretrain: steps=0",
        ["--config", "configs/pretrain_tiny_vilt.py:smoke", *wd("pre"), "--config.steps=0"],
        None,
    ),
    (
        "adapter_reduction larger than the width",
        [*SMOKE, *wd("wide"), "--config.peft.adapter_reduction=1000"],
        None,
    ),
    (
        "exploding learning rate (NaN loss)",
        [
            *SMOKE,
            *wd("nan"),
            "--config.compare_methods=('fedavg_adapter',)",
            "--config.optim.learning_rate=1e30",
            "--config.rounds=3",
        ],
        None,
    ),
    (
        "rerun of a finished run",
        [*SMOKE, *wd("done"), "--config.compare_methods=('fedavg_adapter',)"],
        None,
    ),
    (
        "truncated newest checkpoint",
        [*SMOKE, *wd("trunc"), "--config.compare_methods=('fedavg_adapter',)", "--config.rounds=2"],
        "trunc",
    ),
    (
        "Ctrl-C during a run",
        [*SMOKE, *wd("ctrlc"), "--config.compare_methods=('fedavg_adapter',)", "--config.rounds=4"],
        "SIGINT",
    ),
    (
        "rerun after Ctrl-C",
        [*SMOKE, *wd("ctrlc"), "--config.compare_methods=('fedavg_adapter',)", "--config.rounds=4"],
        None,
    ),
    (
        "kill -9, then rerun (stale lock)",
        [
            *SMOKE,
            *wd("killed"),
            "--config.compare_methods=('fedavg_adapter',)",
            "--config.rounds=3",
        ],
        "SIGKILL",
    ),
]


def setup(kind):
    if kind == "afile":
        (TMP / "afile").write_text("x")
    elif kind == "foreign":
        (TMP / "foreign").mkdir(exist_ok=True)
        (TMP / "foreign" / "results.json").write_text("{}")
    elif kind == "done":  # a finished 1-round run with the smoke config
        out = launch([*SMOKE, *wd("done"), "--config.compare_methods=('fedavg_adapter',)"])
        assert out.returncode == 0, out.stderr[-2000:]
    elif kind == "trunc":
        out = launch(
            [
                *SMOKE,
                *wd("trunc"),
                "--config.compare_methods=('fedavg_adapter',)",
                "--config.rounds=2",
            ]
        )
        assert out.returncode == 0, out.stderr[-2000:]
        for f in (TMP / "trunc" / "fedavg_adapter" / "checkpoints" / "2").rglob("*"):
            if f.is_file():
                f.write_bytes(f.read_bytes()[:7])
    elif kind == "locked":
        (TMP / "locked").mkdir(exist_ok=True)
        import socket

        pid = os.getppid()
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        (TMP / "locked" / "feddat.lock").write_text(
            json.dumps(
                {
                    "pid": pid,
                    "host": socket.gethostname(),
                    "process_start": start,
                    "since": "2025-01-01T00:00:00",
                }
            )
        )


def interrupted_run(args, sig):
    """Start launch.py, wait for its first finished round, send ``sig``; return the result."""
    import signal

    proc = subprocess.Popen(
        [sys.executable, "launch.py", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    workdir = Path(args[args.index("--workdir") + 1])
    metrics = workdir / "fedavg_adapter" / "metrics.jsonl"
    saved = workdir / "fedavg_adapter" / "checkpoints" / "1"
    while not (metrics.exists() and metrics.read_text().strip()) or (
        sig == "SIGKILL" and not saved.exists()
    ):
        time.sleep(0.2)
    proc.send_signal(getattr(signal, sig))
    out, err = proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def is_progress(line):
    return (
        "%|" in line
        or "step/s" in line
        or "s/step" in line
        or line.startswith(("fedavg_adapter:", "feddat:"))
    )


def main():
    only = sys.argv[1] if len(sys.argv) > 1 else ""
    print("| # | bad input | command-line arguments | exit | lines | what it prints |")
    print("|---|---|---|---|---|---|")
    for i, (label, args, kind) in enumerate(CASES, 1):
        if only and only not in label:
            continue
        note = ""
        if kind in ("SIGINT", "SIGKILL"):
            out = interrupted_run(args, kind)
            if kind == "SIGKILL":
                note = f"killed (exit {out.returncode}); rerun: "
                out = launch(args)
        else:
            if kind:
                setup(kind)
            out = launch(args)
        err = [l for l in out.stderr.strip().splitlines() if l.strip() and not is_progress(l)]
        said = [l for l in err if l.startswith(("error:", "warning:", "interrupted", "SIGINT"))]
        said += [
            l
            for l in out.stdout.splitlines()
            if l.startswith(("resumed", "fedavg_adapter already"))
        ]
        line = (
            " / ".join(said) if said else (err[-1] if err else out.stdout.strip().splitlines()[0])
        )
        line = note + line
        shown = " ".join(a for a in args if a not in SMOKE).replace(str(TMP), "$TMP")
        print(
            f"| {i} | {label} | `{shown}` | {out.returncode} | {len(err)} | `{line.replace(str(TMP), '$TMP')}` |",
            flush=True,
        )


if __name__ == "__main__":
    main()
