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

# The training recipe of schnetpack 2.1.1's configs/experiment/md17.yaml and rmd17.yaml (the two agree on every value
# here): the `paper` presets of SchNet and PaiNN train with it. Light on purpose (the registered modules import it).
SCHNETPACK_MD17_TRAIN: dict = {
    "batch_size": 10, "max_train_frames": 950, "max_val_frames": 50, "max_epochs": 2000,
    "optimizer": "adamw", "lr": 0.001, "weight_decay": 0.0,
    "energy_weight": 0.01, "forces_weight": 0.99, "energy_loss": "total",
    "scheduler": "plateau", "scheduler_patience": 75, "scheduler_factor": 0.5,
    "ema_decay": 0.995, "early_stopping_patience": 200, "grad_clip": None,
}

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
