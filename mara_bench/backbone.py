"""The backbone plugin API.

A backbone is a class registered in the entry-point group ``mara_bench.backbones`` (built-ins are registered in
our pyproject exactly like a third-party plugin). Importing the class must be cheap: import the heavy package
(mace, nequip, schnetpack, ...) inside :meth:`Backbone.build`, never at module level, so that
``mara_bench list`` stays fast.

Contract
--------
* ``presets``: ``{"smoke"|"quick"|"paper": {"model": {...}, "train": {...}}}``. ``model`` must contain
  ``r_max`` (Å). ``train`` holds keys of :data:`TRAIN_DEFAULTS` that differ from the defaults.
* ``build(model_options, stats, mara, dtype)`` returns an :class:`EnergyModel`.
* The model's ``forward(batch, compute_forces=True, training=False)`` returns ``{"energy": [G], "forces": [N, 3]}``
  in eV and eV/Å; forces are ``-dE/dpositions`` by autograd (``create_graph=training``), so MARA's contribution
  is included. MARA modules live inside the model (:meth:`EnergyModel.mara_modules`) and keep their last gates.

This module is deliberately light (no torch import): ``mara_bench list`` reads backbone classes without
importing torch. :class:`EnergyModel` lives in :mod:`mara_bench.model` and is re-exported here lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .data.stats import DatasetStats
    from .model import EnergyModel

# Shared training hyper-parameters (one training loop for every backbone). Presets override a subset.
TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 5,
    "max_epochs": 100,
    "max_train_frames": None,  # use only the first N (seeded-shuffled) train frames; None = all
    "max_val_frames": None,
    "optimizer": "amsgrad",  # adam | amsgrad | adamw
    "lr": 0.01,
    "weight_decay": 0.0,
    "energy_weight": 1.0,  # per-atom energy MSE weight
    "forces_weight": 1000.0,  # per-component force MSE weight
    "stage2_start": None,  # fraction of max_epochs after which stage-two loss weights apply (None = no stage two)
    "stage2_energy_weight": 1000.0,
    "stage2_forces_weight": 100.0,
    "ema_decay": 0.99,  # None or 0 disables EMA
    "scheduler": "plateau",  # plateau | none
    "scheduler_patience": 50,
    "scheduler_factor": 0.8,
    "early_stopping_patience": None,  # epochs without val improvement; None = off
    "grad_clip": 10.0,
    "time_limit_s": None,  # stop training after this wall time (checked per epoch); None = off
    "eval_batch_size": 32,
}


@dataclass(frozen=True)
class MaraOptions:
    """What MARA variant to attach and with which options (from RunConfig)."""

    variant: str = "off"  # off | paper | control
    grid: tuple[int, int] = (4, 8)
    hidden: int = 32
    heads: int = 1

    @property
    def enabled(self) -> bool:
        return self.variant != "off"

    @classmethod
    def from_config(cls, cfg) -> MaraOptions:
        from .config import parse_grid

        return cls(variant=cfg.mara, grid=parse_grid(cfg.mara_grid), hidden=cfg.mara_hidden, heads=cfg.mara_heads)


class Backbone:
    """Base class for backbone plugins. Subclass, fill the class attributes and implement ``build``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()  # import names of the packages build() needs
    presets: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}
    mara_placement: ClassVar[str] = ""  # one line: where MARA attaches in this backbone

    def build(self, model_options: dict[str, Any], stats: DatasetStats, mara: MaraOptions,
              dtype: torch.dtype | None = None) -> EnergyModel:
        raise NotImplementedError

    # helpers shared by all backbones ------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> dict[str, dict[str, Any]]:
        from .errors import unknown

        if name not in cls.presets:
            raise unknown(f"preset for backbone '{cls.name}'", name, cls.presets)
        p = cls.presets[name]
        return {"model": dict(p["model"]), "train": {**TRAIN_DEFAULTS, **p.get("train", {})}}


def __getattr__(name: str):  # PEP 562: lazy re-export, keeps this module torch-free
    if name == "EnergyModel":
        from .model import EnergyModel

        return EnergyModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
