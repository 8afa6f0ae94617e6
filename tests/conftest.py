"""Fixtures that several test files share."""

from __future__ import annotations

import pytest


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
