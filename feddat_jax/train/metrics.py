"""Metrics sinks: JSON lines, CSV and TensorBoard, all fed the same flat per-round records.

A record is a flat dict ``{"round": r, "name/sub": value, ...}``. The full history is kept in
memory (it is small: one record per round) and goes into every checkpoint, so a resumed run
rewrites the files from the checkpoint's history: no round is lost or written twice.

A sweep's records also carry ``replica``, ``seed`` and the swept values (one row per replica and
round in the same files); TensorBoard gets one run per replica (``tensorboard/<replica>_<values>``),
so its UI overlays them. Only the ``name/sub`` metrics go to TensorBoard.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

Record = dict[str, Any]


def to_python(value: Any) -> Any:
    """Numpy / JAX scalars to plain Python numbers for JSON."""
    if isinstance(value, (np.generic, np.ndarray)) or hasattr(value, "item"):
        return np.asarray(value).item()
    return value


class MetricsWriter:
    """Writes ``metrics.jsonl``, ``metrics.csv`` and TensorBoard events into ``workdir``."""

    def __init__(
        self,
        workdir: str | Path,
        history: list[Record] | None = None,
        tensorboard: bool = True,
        runs: list[str] | None = None,
    ):
        """``runs``: a sweep's replica names, one TensorBoard run each (None: one run)."""
        self.workdir = Path(workdir)
        self.history: list[Record] = list(history or [])
        self._tb = []
        if tensorboard:
            from tensorboardX import SummaryWriter  # imported lazily: only the shell needs it

            folder = self.workdir / "tensorboard"
            self._tb = (
                [SummaryWriter(str(folder / f"{i}_{name}")) for i, name in enumerate(runs)]
                if runs
                else [SummaryWriter(str(folder))]
            )
        self._rewrite()

    def write(self, record: Record) -> None:
        record = {k: to_python(v) for k, v in record.items()}
        self.history.append(record)
        with open(self.workdir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        self._write_csv()
        if self._tb:
            tb = self._tb[int(record.get("replica", 0))]
            for key, value in record.items():
                if "/" in key and isinstance(value, (int, float)) and math.isfinite(value):
                    tb.add_scalar(key, value, record["round"])
            tb.flush()

    def _rewrite(self) -> None:
        with open(self.workdir / "metrics.jsonl", "w") as f:
            for record in self.history:
                f.write(json.dumps(record) + "\n")
        self._write_csv()

    def _write_csv(self) -> None:
        columns = sorted({k for r in self.history for k in r}, key=lambda k: (k != "round", k))
        with open(self.workdir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.history)

    def close(self) -> None:
        for tb in self._tb:
            tb.close()


def read_jsonl(path: str | Path) -> list[Record]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
