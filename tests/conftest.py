"""Fixtures that several test files share, and one compilation cache for the whole session."""

from __future__ import annotations

import os
import shutil
import tempfile

import pytest

# Most tests compile the same smoke-sized round and evaluation programs (the demo's smoke config,
# tiny ViLT). JAX's persistent compilation cache lets the first test compile each program and
# every later one load it: the xdist workers and the launch.py subprocesses inherit this
# process's environment, so the controller's folder serves them all. The key is the program's
# HLO, so a code change never hits a stale entry. The folder is removed at the session's end.
# A program loaded from this cache may leave jit's in-memory dispatch cache empty, so tests
# that count compilations assert ``_cache_size() <= 1`` (a second program still fails them).
_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="feddat_jax_tests_xla_")
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def pytest_sessionfinish(session) -> None:
    if _OWN_CACHE and not hasattr(session.config, "workerinput"):  # the controller, last
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


@pytest.fixture(scope="module")
def albef_released(tmp_path_factory):
    """(path of a random ALBEF.pth in the released layout, its state dict, our loaded params)."""
    from albef_helpers import DAT, random_params  # imported here: torch only when a test asks
    from albef_reference import CFG, released_state_dict, save_released

    from feddat_jax.models.albef import AlbefVQA
    from feddat_jax.models.albef_checkpoint import load_albef_params

    path = tmp_path_factory.mktemp("albef") / "ALBEF.pth"
    sd = released_state_dict()
    save_released(path, sd)
    return path, sd, load_albef_params(path, random_params(AlbefVQA(CFG, DAT)), CFG)
