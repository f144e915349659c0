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


def preset_parameter_counts(backbone_cls, presets=("smoke", "quick", "paper"), variants=("off", "paper", "control")):
    """``{(preset, variant): parameter count}`` of every preset's model (float32, seed 0), after checking what holds
    for every backbone: ``paper`` adds parameters, and ``control`` adds as many as ``paper`` (±10 % of the added)."""
    counts = {}
    for preset in presets:
        for variant in variants:
            torch.manual_seed(0)
            model = backbone_cls().build(backbone_cls.preset(preset)["model"], KitStats(), MaraOptions(variant),
                                         torch.float32)
            counts[preset, variant] = sum(p.numel() for p in model.parameters())
    print(counts)
    for preset in presets:
        added = counts[preset, "paper"] - counts[preset, "off"]
        assert added > 0 and abs(counts[preset, "control"] - counts[preset, "paper"]) <= 0.1 * added, counts
    return counts
