"""The project's own error types: problems a user can fix, reported as one line.

``launch.py`` catches :class:`FeddatError` at its single boundary and prints
``error: <what is wrong> (<where>); <how to fix it>`` to stderr with exit status 2 (``--debug``
shows the traceback). Any other exception is a bug and keeps its traceback.

Each type also subclasses the builtin a caller would naturally catch (``ValueError`` for bad
values, ``OSError`` for files), so library code that catches those keeps working.
"""

from __future__ import annotations


class FeddatError(Exception):
    """An error the user can fix: ``what`` is wrong, ``where`` (a config key, a file), ``fix``.

    ``str(err)`` is the one line the boundary prints (without the ``error:`` prefix).
    """

    def __init__(self, what: str, where: str = "", fix: str = ""):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(one_line(what, where, fix))


def one_line(what: str, where: str = "", fix: str = "") -> str:
    """``<what> (<where>); <fix>`` with the empty parts left out, newlines folded."""
    text = what + (f" ({where})" if where else "") + (f"; {fix}" if fix else "")
    return " ".join(text.split())


class ConfigError(FeddatError, ValueError):
    """A config value that is missing, out of range, of the wrong kind, or inconsistent."""


class DataError(FeddatError, ValueError):
    """A data folder or benchmark that is missing, incomplete or corrupt."""


class CheckpointError(FeddatError, ValueError):
    """A model checkpoint (or a run checkpoint) that is missing, unreadable, does not fit, or
    cannot be written (a full disk, a read-only folder)."""


class CheckpointMismatchError(CheckpointError):
    """The workdir holds checkpoints of a different experiment."""


class WorkdirError(FeddatError, OSError):
    """A workdir that cannot be used: not writable, locked by a live run, or another run's."""


class DistributedError(FeddatError, RuntimeError):
    """A multi-process run that cannot start: missing settings or a coordinator not reached."""


class NonFiniteLossError(FeddatError, FloatingPointError):
    """A client's loss became NaN or infinite; the last good checkpoint is kept."""


class RunInterrupted(Exception):
    """SIGINT or SIGTERM stopped the run cleanly after ``rounds_done`` rounds of ``method``.

    Not a :class:`FeddatError`: the boundary prints its own message and exits with 130.
    """

    def __init__(self, method: str, rounds_done: int):
        self.method, self.rounds_done = method, rounds_done
        super().__init__(f"interrupted after round {rounds_done}; rerun the same command to resume")
