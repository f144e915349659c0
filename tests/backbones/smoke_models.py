"""The smoke-preset model and batch builders the backbone tests share (``build``, ``batch``)."""

from __future__ import annotations

import numpy as np
import torch

from mara_bench.backbone import MaraOptions
from mara_bench.graph import collate
from mara_bench.testing import KitStats, random_molecule


def smoke_tools(backbone_cls, batch_seed: int = 4):
    """``(SMOKE, build, batch)`` for ``backbone_cls``: its smoke model options; ``build(variant, dtype, seed,
    **option_overrides)`` (seeded, unperturbed, kit statistics); ``batch(dtype)``: two random molecules (5, 6 atoms)."""
    smoke = backbone_cls.preset("smoke")["model"]

    def build(variant="off", dtype=torch.float64, seed=0, **over):
        torch.manual_seed(seed)
        return backbone_cls().build({**smoke, **over}, KitStats(), MaraOptions(variant=variant), dtype)

    def batch(dtype=torch.float64):
        rng = np.random.default_rng(batch_seed)
        return collate([random_molecule(k, rng, smoke["r_max"]) for k in (5, 6)], dtype=dtype)

    return smoke, build, batch
