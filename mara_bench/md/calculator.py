"""ASE calculator for a trained mara_bench model (eV, eV/Å), and rebuilding a model from its run folder.

The neighbour list is rebuilt on every call (:func:`mara_bench.graph.build_graph` + :func:`collate`), so the
calculator is correct for any geometry, periodic or not. Forces are the model's own ``-dE/dx`` (autograd).
"""

from __future__ import annotations

import os

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from ..config import torch_dtype
from ..run.layout import load_run_model, pick_state_dict, read_run_config, resolve_run_dir  # noqa: F401  (re-exported)
from ..run.pipeline import resolve_device


class MaraBenchCalculator(Calculator):
    """ASE calculator wrapping an :class:`mara_bench.backbone.EnergyModel`.

    ``model``: the energy model (its ``r_max`` attribute is used unless ``r_max`` is given);
    ``dtype``: "float32" | "float64" (the model is cast); ``device``: "cpu", "cuda", "cuda:N" or "auto".
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model: torch.nn.Module, r_max: float | None = None, dtype: str | torch.dtype = "float64",
                 device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.dtype = torch_dtype(dtype)
        self.device = resolve_device(device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.r_max = float(r_max if r_max is not None else model.r_max)
        self.n_calls = 0

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, dtype: str | None = None, device: str = "cpu",
                 use_ema: bool = True) -> MaraBenchCalculator:
        """Calculator for the model saved in ``run_dir`` (dtype defaults to the run's dtype)."""
        model, cfg = load_run_model(run_dir, device="cpu", use_ema=use_ema)
        return cls(model, dtype=dtype or cfg.dtype, device=device)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        from ..graph import build_graph, collate

        a = self.atoms
        periodic = bool(np.any(a.pbc))
        g = build_graph(a.numbers, a.positions, self.r_max, cell=a.cell.array if periodic else None,
                        pbc=a.pbc if periodic else None)
        batch = collate([g], dtype=self.dtype).to(self.device, self.dtype)
        with torch.enable_grad():
            out = self.model(batch, compute_forces=True, training=False)
        energy = float(out["energy"].detach().reshape(-1)[0].cpu())
        forces = out["forces"].detach().cpu().numpy().astype(np.float64).reshape(len(a), 3)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
        self.n_calls += 1
