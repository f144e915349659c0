"""Example mara_bench backbone plugin: MiniSchNet, a small SchNet-style model (Schütt et al. 2018) in pure torch.

Only this module's class attributes are read by ``mara_bench list``; the model code lives in ``model.py`` and is
imported by :meth:`MiniSchNetBackbone.build` (keep heavy imports out of the class's module).
"""

from __future__ import annotations

from typing import Any, ClassVar

from mara_bench.backbone import Backbone

__all__ = ["MiniSchNetBackbone"]


class MiniSchNetBackbone(Backbone):
    name: ClassVar[str] = "minischnet"
    description: ClassVar[str] = "example plugin: small SchNet-style invariant model (pure torch)"
    requires: ClassVar[tuple[str, ...]] = ("torch",)
    mara_placement: ClassVar[str] = "every interaction: on the per-edge filtered messages, before the neighbour sum"
    presets: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {
        "smoke": {"model": {"r_max": 4.0, "features": 16, "interactions": 2, "num_rbf": 8},
                  "train": {"max_epochs": 2, "max_train_frames": 20, "max_val_frames": 10}},
        "quick": {"model": {"r_max": 5.0, "features": 64, "interactions": 3, "num_rbf": 20},
                  "train": {"max_epochs": 40, "lr": 0.002, "optimizer": "adam", "time_limit_s": 240}},
        "paper": {"model": {"r_max": 5.0, "features": 64, "interactions": 3, "num_rbf": 20},
                  "train": {"max_epochs": 500, "lr": 0.001, "optimizer": "adam"}},
    }

    def build(self, model_options, stats, mara, dtype=None):
        from .model import build_minischnet

        return build_minischnet(model_options, stats, mara, dtype)
