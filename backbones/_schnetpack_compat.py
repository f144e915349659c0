"""Import schnetpack 2.1.1 on torch versions whose ``torch.utils.data.dataloader`` no longer defines ``T_co``.

schnetpack's package ``__init__`` imports ``schnetpack.data.loader``, which does
``from torch.utils.data.dataloader import _collate_fn_t, T_co``; recent torch removed the (typing-only) ``T_co``.
We add that one name, a covariant ``TypeVar`` as torch used to define it, before importing. If torch still has
it, that step is a no-op. The import also pulls in lightning, whose import draws from Python's global RNG; the
RNG states are restored so that importing schnetpack does not change a seeded run.
"""

from __future__ import annotations

import random
import typing


def import_schnetpack():
    """Return the imported ``schnetpack`` module (with the missing typing name supplied first)."""
    import numpy as np
    import torch
    import torch.utils.data.dataloader as dataloader

    if not hasattr(dataloader, "T_co"):
        dataloader.T_co = typing.TypeVar("T_co", covariant=True)
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    try:
        import schnetpack
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
    return schnetpack
