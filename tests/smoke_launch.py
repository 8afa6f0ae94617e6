"""The command line of a tiny launch.py run (the demo's smoke config on a random tiny ViLT), which
the tests that drive launch.py as a user would all start from."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def smoke_command(workdir: Path, *extra: str, cache: Path | None = None) -> list[str]:
    """``python launch.py`` on configs/demo.py:smoke in ``workdir``, then ``extra`` flags;
    ``cache`` (when given) holds the generated benchmark data between runs."""
    return [
        sys.executable,
        str(ROOT / "launch.py"),
        "--config",
        "configs/demo.py:smoke",
        "--workdir",
        str(workdir),
        "--config.model.checkpoint=",
        "--config.model.size=tiny",
        *([f"--config.data.cache_dir={cache}"] if cache is not None else []),
        *extra,
    ]
