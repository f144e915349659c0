"""EnergyModel: the torch module every backbone's build() returns (see mara_bench.backbone for the contract)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .graph import GraphBatch


class EnergyModel(torch.nn.Module):
    """Base class of what :meth:`Backbone.build` returns."""

    r_max: float = 5.0

    def forward(self, batch: GraphBatch, compute_forces: bool = True, training: bool = False) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def mara_modules(self) -> list[torch.nn.Module]:
        from .mara import MARA

        return [m for m in self.modules() if isinstance(m, MARA)]

    def last_gates(self) -> list[torch.Tensor]:
        """Per MARA module (one per interaction block), the gates [E, 1] of the last forward pass."""
        return [m.last_gates for m in self.mara_modules() if getattr(m, "last_gates", None) is not None]


class EdgeContext:
    """Per-forward edge vectors shared by a model's MARA wrappers (a plain object, not a Module, so deepcopy
    copies it once). Adapters store ``vectors`` [E, 3] = p_sender - p_receiver before the backbone's forward."""

    def __init__(self) -> None:
        self.vectors: torch.Tensor | None = None

    def require(self, n_edges: int, dtype: torch.dtype, model: str) -> torch.Tensor:
        """This forward's edge vectors as ``dtype``; RuntimeError when a wrapper runs outside ``model``'s forward."""
        v = self.vectors
        if v is None or v.shape[0] != n_edges:
            raise RuntimeError(f"MARA wrapper called without this forward's edge vectors (use {model})")
        return v.to(dtype)
