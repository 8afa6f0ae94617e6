"""Parameter layouts of PyTorch checkpoints versus ours, shared by every checkpoint loader.

Flax keeps a Dense kernel as [in, out] and a conv kernel as HWIO; PyTorch keeps a Linear weight as
[out, in] and a conv weight as OIHW. Every other tensor has the same layout in both.
"""

from __future__ import annotations

import numpy as np


def to_torch(path: str, value: np.ndarray) -> np.ndarray:
    """Our layout -> torch layout for the parameter at ``path`` ("a/b/kernel")."""
    if path.endswith("/kernel"):
        value = value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
    return np.ascontiguousarray(value, dtype=np.float32)


def from_torch(path: str, value: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_torch`."""
    if path.endswith("/kernel"):
        value = value.T if value.ndim == 2 else value.transpose(2, 3, 1, 0)
    return np.asarray(value, dtype=np.float32)
