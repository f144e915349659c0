"""Training checkpoints: plain state dicts written atomically, read back with ``weights_only=True``.

A checkpoint holds everything needed to continue bit-for-bit: model, EMA model, optimizer, scheduler, the RNG
states of python / numpy / torch (CPU and CUDA), the data-order generator, the epoch, the best validation loss
and its (EMA) weights, the per-epoch log and the training time so far. All RNG states are stored as tensors or
plain Python numbers so that ``torch.load(..., weights_only=True)`` accepts them (importing mace sets
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1, so the argument is always passed explicitly).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_torch_save
from ..errors import UserError
from .layout import CHECKPOINT

FORMAT = 1
NAME = CHECKPOINT  # the file name in a run folder


def rng_state(generator: torch.Generator | None = None) -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": None if gauss is None else float(gauss)},
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: dict[str, Any], generator: torch.Generator | None = None) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


def save(path: str | Path, **parts: Any) -> Path:
    """Write a checkpoint atomically (a reader or a kill never sees half a file)."""
    return atomic_torch_save({"format": FORMAT, **parts}, path)


def load(path: str | Path) -> dict[str, Any]:
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupted or foreign file
        raise UserError(f"cannot read checkpoint '{path}' ({type(e).__name__}: {str(e).splitlines()[0][:120]}); "
                        "delete it to restart the run, or use --force") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise UserError(f"checkpoint '{path}' has an unknown format; delete it or use --force to restart the run")
    return ck
