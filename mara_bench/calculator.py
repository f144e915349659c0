"""ASE calculator for a trained mara_bench model (eV, eV/Å), and rebuilding a model from its run folder.

The neighbour list is rebuilt on every call (:func:`mara_bench.graph.build_graph` + :func:`collate`), so the
calculator is correct for any geometry, periodic or not. Forces are the model's own ``-dE/dx`` (autograd).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from .errors import UserError
from .pipeline import resolve_device

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _torch_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise UserError(f"bad dtype '{dtype}': choose float32 or float64")
    return _DTYPES[dtype]


class MaraBenchCalculator(Calculator):
    """ASE calculator wrapping an :class:`mara_bench.backbone.EnergyModel`.

    ``model``: the energy model (its ``r_max`` attribute is used unless ``r_max`` is given);
    ``dtype``: "float32" | "float64" (the model is cast); ``device``: "cpu", "cuda", "cuda:N" or "auto".
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, model: torch.nn.Module, r_max: float | None = None, dtype: str | torch.dtype = "float64",
                 device: str = "cpu", **kwargs):
        super().__init__(**kwargs)
        self.dtype = _torch_dtype(dtype)
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
        from .graph import build_graph, collate

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


# ---------------------------------------------------------------------------------------------- run folders
def read_run_config(run_dir: str | os.PathLike):
    """The :class:`RunConfig` saved in ``run_dir/config.json`` (UserError when missing/unreadable)."""
    from .atomic import read_json
    from .config import RunConfig

    f = Path(run_dir) / "config.json"
    if not f.is_file():
        raise UserError(f"'{run_dir}' is not a run folder (no config.json); pass a folder under results/ or a run id")
    saved = read_json(f)
    return RunConfig.from_dict({k: v for k, v in saved.items() if k not in ("run_id", "config_hash")})


def pick_state_dict(ckpt: Any, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The weights to use from a training checkpoint (mara_bench.checkpoint format).

    With ``use_ema`` (default): ``best_state`` (the best-validation EMA weights, what the pipeline evaluates), else
    the last EMA weights, else the raw model. Without: the raw model weights of the last epoch.
    """
    if not isinstance(ckpt, dict):
        raise UserError("checkpoint.pt does not hold a dict of state dicts; re-run the training with --force")
    cands = []
    if use_ema:
        cands.append(ckpt.get("best_state"))
        ema = ckpt.get("ema")
        cands.append(ema.get("model") if isinstance(ema, dict) else None)
    cands.append(ckpt.get("model"))
    for sd in cands:
        if isinstance(sd, dict) and sd and all(isinstance(v, torch.Tensor) for v in sd.values()):
            return sd
    raise UserError(f"checkpoint.pt has no model weights (keys: {', '.join(map(str, ckpt))}); re-run with --force")


def load_run_model(run_dir: str | os.PathLike, device: str = "cpu", use_ema: bool = True, with_prepared=False):
    """Rebuild the trained model of a run folder: ``(EnergyModel, RunConfig)`` (+ the pipeline's Prepared).

    Reads config.json, re-resolves backbone preset + overrides + dataset + statistics with the pipeline's own
    ``prepare`` (so E0s and avg_num_neighbors are exactly those the model was trained with), builds the model and
    loads the checkpoint weights (:func:`pick_state_dict`).
    """
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    ckpt_path = run_dir / "checkpoint.pt"
    if not ckpt_path.is_file():
        raise UserError(f"run folder '{run_dir}' has no checkpoint.pt; train it first with 'mara_bench run'")
    from . import checkpoint, pipeline

    cfg.output_dir = str(run_dir.parent)  # the folder may have moved since training
    prepared = pipeline.prepare(cfg)
    prepared.device = resolve_device(device)
    model = pipeline.build_model(prepared, _torch_dtype(cfg.dtype))
    sd = pick_state_dict(checkpoint.load(ckpt_path), use_ema)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise UserError(f"checkpoint.pt in '{run_dir}' does not match the rebuilt model "
                        f"({str(e).splitlines()[0][:160]}); was the backbone code changed?") from None
    model.eval()
    return (model, cfg, prepared) if with_prepared else (model, cfg)


def resolve_run_dir(run: str, output_dir: str | os.PathLike = "results") -> Path:
    """A run folder from a path or a run id (unique prefix allowed) under ``output_dir``."""
    p = Path(run)
    if p.is_dir():
        return p
    base = Path(output_dir)
    if (base / run).is_dir():
        return base / run
    matches = sorted(d for d in base.glob(f"{run}*") if d.is_dir()) if base.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UserError(f"run id '{run}' is ambiguous under '{base}': {', '.join(m.name for m in matches[:5])}")
    raise UserError(f"no run folder '{run}' (looked for a path and under '{base}/'); see 'ls {base}'")
