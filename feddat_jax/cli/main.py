"""The command line of ``launch.py``: flags, ``--help``, and the one error boundary.

Every problem a user can fix reaches the terminal as ONE line on stderr,
``error: <what is wrong> (<where>); <how to fix it>``, with exit status 2: a bad flag, a config
file that does not load, an unknown config key, and every :class:`~feddat_jax.errors.FeddatError`
raised later, and a write the disk refuses (full, read-only). ``--debug`` shows the traceback
instead. An unexpected exception is a bug and keeps its traceback. Ctrl-C / SIGTERM end with
exit status 130 (see :mod:`feddat_jax.train.interrupt`).

This module imports no JAX, so ``--help`` answers at once.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import os
import re
import sys
from pathlib import Path

from absl import flags

from feddat_jax.errors import ConfigError, FeddatError, RunInterrupted, one_line

ROOT = Path(__file__).resolve().parents[2]
HELP_FLAGS = ("--help", "-h", "-help", "--helpshort", "--helpfull", "-?")
EXIT_ERROR, EXIT_INTERRUPTED = 2, 130
# a write the disk refused: full, over quota, read-only, no permission (train/checkpoints.py
# reports a checkpoint's own refusal with the last good checkpoint; these are the other writes)
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
DOCS = (
    ("README.md", "install, the demo, outputs, scale-out"),
    ("docs/METHOD.md", "the method, its equations, and our deviations from the official code"),
    ("docs/ARCHITECTURE.md", "the contracts between the parts of the library"),
    ("docs/USAGE.md", "every option, output, resume rule and sweep detail"),
    ("docs/BENCHMARK.md", "the embedded benchmark's design and what it measures"),
    ("docs/CROSS_DEVICE.md", "many clients: partitions, private state, evaluation samples"),
    ("docs/FLOWER.md", "the same client on Flower: simulation and deployment"),
    ("docs/PRIVACY.md", "differential privacy of the shared channel"),
    ("docs/ERRORS.md", "the one-line errors and what each asks you to do"),
    ("benchmarks/README.md", "speed: strategies, meshes, how to measure"),
)


def help_text() -> str:
    """What ``python launch.py --help`` prints: syntax, methods, configs, docs."""
    from feddat_jax.methods import METHODS  # imports JAX, but initialises no device

    configs = sorted((ROOT / "configs").glob("*.py"))
    width = max((len(p.stem) for p in configs), default=10)
    lines = [
        "usage: python launch.py --config CONFIG[:ARG] --workdir DIR [--config.KEY=VALUE ...]",
        "                        [--debug]",
        "",
        "Trains every method of CONFIG (a file in configs/) in DIR/<method>; rerunning the same",
        "command resumes. Results: DIR/results.json, DIR/results.txt and PNG plots.",
        "",
        "flags:",
        "  --config FILE[:ARG]     the experiment, e.g. configs/demo.py, configs/vilt.py:scene (ARG",
        "                          names the family) or configs/vilt.py:scene,smoke (one tiny round)",
        "  --workdir DIR           output folder; the same folder resumes the run",
        "  --config.KEY=VALUE      override any config field, e.g. --config.rounds=10,",
        "                          --config.optim.learning_rate=3e-4, --config.model.image_hw='(384,640)',",
        '                          --config.compare_methods=\'("feddat","fedavg_adapter")\'',
        "  --debug                 show the traceback of every error",
        "",
        "clients (docs/CROSS_DEVICE.md):",
        "  --config.data.partition=natural|iid|quantity|dirichlet",
        "                          natural: the benchmark's own clients; the others pool their",
        "                          examples and deal them over --config.data.num_clients=N clients",
        "                          (seeded by data.seed); --config.data.dirichlet_alpha=0.5 sets the",
        "                          skew of quantity and dirichlet (smaller = more skewed)",
        "  --config.peft.head=private|shared",
        "                          the answer head per client (cross-silo) or one aggregated head",
        "",
        "methods (--config.method=NAME):",
        *_wrap(", ".join(METHODS), "  "),
        "",
        "configs:",
        *(f"  {p.relative_to(ROOT)!s:<{width + 12}} {_summary(p)}" for p in configs),
        "",
        "docs:",
        *(f"  {name:<22} {what}" for name, what in DOCS),
    ]
    return "\n".join(lines)


def _wrap(text: str, indent: str, width: int = 96) -> list[str]:
    lines, line = [], indent
    for word in text.split(" "):
        if len(line) + len(word) > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += word + " "
    return lines + [line.rstrip()]


def _summary(path: Path) -> str:
    try:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    except (OSError, SyntaxError):
        return ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def fail(message: str) -> None:
    _close_progress_bars()
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(EXIT_ERROR)


def _close_progress_bars() -> None:
    """End an open tqdm bar's line, so that the message starts a line of its own."""
    tqdm = sys.modules.get("tqdm")
    for bar in list(getattr(getattr(tqdm, "tqdm", None), "_instances", ())):
        bar.close()


def parse_flags(argv: list[str], load_config) -> list[str]:
    """``app.run``'s ``flags_parser``: ``--help``, then flags, then the config (all errors in one
    line). ``load_config()`` reads the config flag's value, which loads the file lazily."""
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(help_text())
        sys.exit(0)
    try:
        rest = flags.FLAGS(argv)
        load_config()
    except flags.Error as err:
        fail(flag_error(err))
    except (AttributeError, KeyError) as err:  # ml_collections: an unknown config key
        fail(unknown_key(err, argv))
    except OSError as err:  # ml_collections: the config file did not load
        fail(config_file_error(err, argv))
    if len(rest) > 1:
        fail(one_line(f"unexpected arguments {rest[1:]}", "command line", "see --help"))
    return rest


def flag_error(err: flags.Error) -> str:
    text = str(err).strip()
    if "must have a value other than None" in text:
        name = re.search(r"--(\w+)", text)
        flag = name.group(1) if name else "config"
        return one_line(
            f"--{flag} is required",
            "command line",
            "e.g. python launch.py --config configs/demo.py --workdir runs/demo",
        )
    match = re.match(r"flag (--[^=\s]+)=?(.*?): (.*)$", text, re.S)
    if match and "Traceback" in match.group(3):  # the config file raised: keep its message
        raised = [line.strip() for line in match.group(3).splitlines() if line.strip()]
        message = re.sub(r"^\w+(Error|Exception): ", "", raised[-1])
        return one_line(
            message, f"{match.group(1)}={match.group(2)}", "see the config file's docstring"
        )
    if match:
        where = f"{match.group(1)}={match.group(2)}"
        return one_line(f"invalid value: {match.group(3)}", where, "see --help for the syntax")
    return one_line(text, "command line", "see --help")


def unknown_key(err: Exception, argv: list[str]) -> str:
    message = str(err.args[0] if err.args else err).replace("\\'", "'").replace("\\n", "\n")
    found = re.search(r"(\w+)", message)
    name = found.group(1) if found else message
    given = [a for a in argv if a.startswith("--config.") and re.search(rf"[.]{name}\b", a)]
    hint = re.search(r'Did you mean "([^"]+)"', message)
    fix = f'did you mean "{hint.group(1)}"?' if hint else "see the config file for its keys"
    return one_line(f"unknown config key {name!r}", given[0] if given else "--config.*", fix)


def config_file_error(err: OSError, argv: list[str]) -> str:
    given = next((a for a in argv if a.startswith("--config=")), None)
    if given is None and "--config" in argv[:-1]:
        given = "--config=" + argv[argv.index("--config") + 1]
    path = (given or "--config=?").split("=", 1)[1].split(":")[0]
    return one_line(
        f"config file {path} cannot be loaded ({_errno_text(err)})",
        given or "--config",
        "pass a file from configs/ (python launch.py --help lists them)",
    )


def _errno_text(err: OSError) -> str:
    found = re.search(r"\[Errno \d+\] ([^:\n]+)", str(err))
    return found.group(1) if found else str(err).splitlines()[0]


@contextlib.contextmanager
def error_boundary(debug: bool = False):
    """One line and exit 2 for a FeddatError; exit 130 for Ctrl-C / SIGTERM."""
    try:
        yield
    except FeddatError as err:
        if debug:
            raise
        fail(str(err))
    except OSError as err:
        if debug or err.errno not in DISK_ERRNOS:  # not the disk: a bug keeps its traceback
            raise
        fail(
            one_line(
                f"cannot write {err.filename or 'a file'} ({os.strerror(err.errno)})",
                "--workdir",
                "free space there or make it writable, then rerun the same command to resume "
                "from the last checkpoint",
            )
        )
    except RunInterrupted as stop:
        _close_progress_bars()
        print(
            f"interrupted after round {stop.rounds_done} ({stop.method}); rerun the same "
            "command to resume",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        if debug:
            raise
        print(
            "\naborted during a round; rerun the same command to resume from the last checkpoint",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(EXIT_INTERRUPTED)


def require(value, flag: str) -> None:
    if value in (None, ""):
        raise ConfigError(
            f"--{flag} is required",
            "command line",
            "e.g. python launch.py --config configs/demo.py --workdir runs/demo",
        )
