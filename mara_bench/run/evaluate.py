"""Evaluation of a trained model: every test set of the dataset, a randomly rotated copy of the test set
("test_rotated"), the equivariance error and the force continuity at MARA's cone points (mara_bench.nn.continuity) of
a float64 copy of the model, MARA gates. Writes predictions.npz and gates.npz; returns the metrics dict that the
pipeline puts into metrics.json.
"""

from __future__ import annotations

import copy
import io
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..atomic import atomic_write_bytes
from ..graph import FrameGraph, collate
from .layout import GATES, PREDICTIONS
from .metrics import all_metrics

MAX_GATE_EDGES = 500_000  # per MARA block, seeded subsample beyond this
SYMMETRY_FRAMES = 8
SYMMETRY_ROTATIONS = 4  # and as many reflections (mara_bench.nn.symmetry.equivariance_error)
CONTINUITY_FRAMES = 2  # the first test structures probed for force continuity (mara_bench.nn.continuity) ...
CONTINUITY_EDGES = 1  # ... at their shortest edge, on 2 grid directions: 4 probes x 3 eps x 2 signs = 24 forces


def predict(model: torch.nn.Module, graphs: list[FrameGraph], batch_size: int, dtype: torch.dtype, device,
            gates: list | None = None, desc: str = "predict", progress: bool = False) -> dict[str, Any]:
    """Run ``model`` on ``graphs``; arrays in eV, eV/Å (float64). Appends per-batch gate records to ``gates``."""
    from tqdm.auto import tqdm

    model.eval()
    has_f = all(g.forces is not None for g in graphs)
    has_e = all(g.energy is not None for g in graphs)
    e_pred, f_pred = [], []
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for s in tqdm(range(0, len(graphs), batch_size), desc=desc, leave=False, disable=not progress):
        batch = collate(graphs[s : s + batch_size], dtype=dtype).to(device)
        out = model(batch, compute_forces=has_f, training=False)
        e_pred.append(out["energy"].detach().double().cpu().numpy())
        if has_f:
            f_pred.append(out["forces"].detach().double().cpu().numpy())
        if gates is not None:
            ei = batch.edge_index.cpu().numpy()
            r = batch.edge_vectors().detach().double().norm(dim=-1).cpu().numpy()
            z = batch.numbers.cpu().numpy()
            gates.append([(g.detach().double().reshape(-1).cpu().numpy(), r, z[ei[0]], z[ei[1]])
                          for g in model.last_gates()])
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    counts = np.array([len(g.numbers) for g in graphs], dtype=np.int64)
    return {
        # cost record (energy + forces, this batch size and device; gate bookkeeping included)
        "timing": {"wall_s": wall, "process_cpu_s": cpu, "structures": len(graphs), "batch_size": batch_size,
                   "ms_per_structure": 1000 * wall / max(len(graphs), 1),
                   "cpu_ms_per_structure": 1000 * cpu / max(len(graphs), 1)},
        "energy_pred": np.concatenate(e_pred),
        "energy_ref": np.array([g.energy for g in graphs], dtype=np.float64) if has_e else None,
        "forces_pred": np.concatenate(f_pred) if has_f else None,
        "forces_ref": np.concatenate([g.forces for g in graphs]).astype(np.float64) if has_f else None,
        "ptr": np.concatenate([[0], np.cumsum(counts)]),
        "numbers": np.concatenate([g.numbers for g in graphs]),
        "frame_index": np.array([g.index for g in graphs], dtype=np.int64),
    }


def rotate_graph(g: FrameGraph, R: np.ndarray) -> FrameGraph:
    """Rigidly rotate a structure (positions, cell, shifts, reference forces); the edges are unchanged."""
    return replace(g, positions=g.positions @ R.T, shifts=g.shifts @ R.T, cell=g.cell @ R.T,
                   forces=None if g.forces is None else g.forces @ R.T)


def rotated_copy(graphs: list[FrameGraph], seed: int) -> list[FrameGraph]:
    from ..nn.symmetry import random_rotations

    Rs = random_rotations(len(graphs), seed).numpy()
    return [rotate_graph(g, R) for g, R in zip(graphs, Rs, strict=True)]


def equivariance(model: torch.nn.Module, graphs: list[FrameGraph], seed: int, device) -> dict[str, Any]:
    """Equivariance error of a float64 copy of ``model`` on a seeded subset of ``graphs``."""
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(graphs), size=min(SYMMETRY_FRAMES, len(graphs)), replace=False))
    m64 = copy.deepcopy(model).to(torch.float64).eval()
    batch = collate([graphs[i] for i in idx], dtype=torch.float64).to(device)

    def fn(b):
        return m64(b, compute_forces=True, training=False)

    from ..nn.symmetry import equivariance_error

    out = dict(equivariance_error(fn, batch, n_rotations=SYMMETRY_ROTATIONS, seed=seed, reflection=True))
    out.update({"frames": [int(graphs[i].index) for i in idx], "dtype": "float64", "units": "eV, eV/Å"})
    return out


def continuity(model: torch.nn.Module, graphs: list[FrameGraph], device) -> dict[str, Any]:
    """Force continuity across MARA's cone points (:func:`mara_bench.nn.continuity.force_continuity`) of a float64 copy
    of ``model`` on the shortest edge of each of the first :data:`CONTINUITY_FRAMES` of ``graphs``, for the grid of the model's MARA modules
    (the default 4x8 grid for a run without MARA, as the baseline)."""
    from ..backbone import MaraOptions
    from ..nn.continuity import force_continuity, model_grid

    m64 = copy.deepcopy(model).to(torch.float64).eval()
    grid = model_grid(m64, default=MaraOptions().grid)

    def fn(b):
        return m64(b, compute_forces=True, training=False)

    return force_continuity(fn, graphs[:CONTINUITY_FRAMES], grid=grid, edges_per_structure=CONTINUITY_EDGES,
                            device=device)


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _gate_arrays(records: list, seed: int) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if not records or not records[0]:
        return out
    rng = np.random.default_rng(seed)
    for k in range(len(records[0])):
        cols = [np.concatenate([rec[k][c] for rec in records]) for c in range(4)]
        if len(cols[0]) > MAX_GATE_EDGES:
            keep = np.sort(rng.choice(len(cols[0]), MAX_GATE_EDGES, replace=False))
            cols = [c[keep] for c in cols]
        for name, c in zip(("gate", "r", "z_sender", "z_receiver"), cols, strict=True):
            out[f"block{k}_{name}"] = c.astype(np.float32 if name in ("gate", "r") else np.int16)
    return out


def evaluate_run(model: torch.nn.Module, test_graphs: dict[str, list[FrameGraph]], run_dir: Path, *,
                 dtype: torch.dtype, device, batch_size: int, seed: int, mara: bool = False,
                 progress: bool = False, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Metrics for every test set (``test_graphs``: name -> graphs, "test" first) plus "test_rotated",
    equivariance, force continuity and, for MARA runs, gates. Writes predictions.npz (and gates.npz)."""
    run_dir = Path(run_dir)
    sets = dict(test_graphs)
    if "test" in sets:
        sets["test_rotated"] = rotated_copy(sets["test"], seed=seed + 7919)
    results, arrays, gate_records, out_timing = {}, {}, ([] if mara else None), {}
    for name, graphs in sets.items():
        if not graphs:
            continue
        pred = predict(model, graphs, batch_size, dtype, device, gates=gate_records if name == "test" else None,
                       desc=f"eval {name}", progress=progress)
        timing = pred.pop("timing")
        results[name] = all_metrics(pred)
        if name == "test" or "inference" not in out_timing:
            out_timing["inference"] = {"test_set": name, **timing}
        for k, v in pred.items():
            if v is not None:
                arrays[f"{name}__{k}"] = v
    arrays["sets"] = np.array(list(results))
    _save_npz(run_dir / PREDICTIONS, arrays)
    out: dict[str, Any] = {"test_sets": results, **out_timing}
    ref_set = "test" if "test" in sets else next(iter(sets))
    if all(g.forces is not None for g in sets[ref_set]):
        out["symmetry"] = equivariance(model, sets[ref_set], seed=seed, device=device)
        out["force_continuity"] = continuity(model, sets[ref_set], device=device)
    if mara and gate_records:
        _save_npz(run_dir / GATES, _gate_arrays(gate_records, seed))
        out["gates_file"] = GATES
    return out
