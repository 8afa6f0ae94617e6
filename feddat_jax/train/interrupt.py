"""Ctrl-C and SIGTERM: stop after the current round, with every finished round checkpointed.

The first SIGINT or SIGTERM only sets a flag; the training loop looks at it between rounds
(:meth:`StopRequest.requested`), checkpoints the last finished round if it is not saved yet, and
raises :class:`~feddat_jax.errors.RunInterrupted`. A second signal aborts at once
(``KeyboardInterrupt``): the run then resumes from its last checkpoint, which is still whole
because checkpoint writes are atomic.

In a multi-process run a signal may reach only some processes (Ctrl-C in one terminal); every
process asks all the others between rounds, so they all stop after the same round.
"""

from __future__ import annotations

import signal
import sys
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A context manager that turns SIGINT / SIGTERM into a request to stop between rounds."""

    def __init__(self):
        self._signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # handlers live there only
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        del frame
        if self._signal is not None:
            raise KeyboardInterrupt  # the second signal: stop now
        self._signal = signum
        print(
            f"\n{signal.Signals(signum).name}: stopping after the current round "
            "(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def request(self, signum: int = signal.SIGINT) -> None:
        """Ask for a stop as a signal would (tests, or a caller with its own stop condition)."""
        self._signal = signum

    def requested_here(self) -> bool:
        """Whether THIS process got a stop request (no collective: for single-process work)."""
        return self._signal is not None

    def requested(self) -> bool:
        """Whether any process got a stop request (a collective when there are several)."""
        local = self._signal is not None
        if jax.process_count() == 1:
            return local
        return bool(np.any(multihost_utils.process_allgather(np.asarray(local))))
