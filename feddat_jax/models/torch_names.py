"""The PyTorch name of every parameter of ours, for rules the official code states on names.

The official code's AdamW decays every parameter except those whose PyTorch name contains
``bias`` or ``LayerNorm.weight`` (see :mod:`feddat_jax.fl.local_optim`). To apply the same rule
we name our Flax leaves as PyTorch would, with the checkpoint loaders' own mappings
(:func:`~feddat_jax.models.vilt_checkpoint.hf_name`, :func:`~feddat_jax.models.albef_checkpoint.
albef_name`), so there is one mapping per backbone. PEFT modules have no pretrained tensor; the
same mappings name them where they sit (``…layer.3.adapter_shared.down.weight``). A tree of
neither backbone (the tests' toy model) gets the same leaf renaming.
"""

from __future__ import annotations

from feddat_jax.models.albef_checkpoint import albef_name
from feddat_jax.models.vilt_checkpoint import hf_name

# Flax leaf -> PyTorch leaf, for trees of neither backbone
FLAX_TO_TORCH_LEAF = {"kernel": "weight", "scale": "weight", "embedding": "weight"}


def torch_name(path: str) -> str:
    """Our parameter path ("vilt/encoder/layer_0/output/kernel") -> its PyTorch name.

    ``head/…`` is ViLT's head when its modules are ViLT's, else ALBEF's (its LM head).
    """
    root = path.split("/", 1)[0]
    if root in ("vilt", "head"):
        try:
            return hf_name(path)
        except KeyError:  # a head with other modules than ViLT's
            pass
    if root in ("albef", "head"):
        return albef_name(path)
    *modules, leaf = path.split("/")
    return ".".join([*modules, FLAX_TO_TORCH_LEAF.get(leaf, leaf)])
