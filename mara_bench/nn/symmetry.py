"""Symmetry measurements on energy/force models (spec: "Symmetry: what to measure, not assume").

``fn(batch: GraphBatch) -> {"energy": [G], "forces": [N, 3]}`` is any energy model (e.g. an ``EnergyModel`` with
``compute_forces=True``). Everything is done in float64: the batch is cast with ``batch.to(dtype=torch.float64)``,
so ``fn`` must accept float64 inputs (cast the model with ``.to(torch.float64)`` first).

Errors are reported in the model's units (eV, eV/Å): ``energy_*`` per graph, ``forces_*`` per Cartesian component.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..graph import GraphBatch

EnergyForcesFn = Callable[[GraphBatch], dict]

__all__ = ["random_rotations", "transform_batch", "permute_batch", "equivariance_error", "permutation_error"]


def random_rotations(n: int, seed: int = 0, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """``n`` Haar-random proper rotations [n, 3, 3] (det +1), reproducible from ``seed``.

    The one rotation sampler of mara_bench (symmetry measurements, the rotated test set of
    :func:`mara_bench.run.evaluate.rotated_copy`, the MD rotation jump): ``scipy.spatial.transform.Rotation.random``
    (uniform unit quaternions) from ``numpy.random.default_rng(seed)``, computed in float64; no global RNG is
    touched. The first k of ``random_rotations(n, seed)`` do not depend on n.
    """
    import numpy as np
    from scipy.spatial.transform import Rotation

    R = Rotation.random(int(n), random_state=np.random.default_rng(int(seed))).as_matrix().reshape(int(n), 3, 3)
    return torch.from_numpy(R).to(dtype=dtype, device=device)


def transform_batch(batch: GraphBatch, R: torch.Tensor) -> GraphBatch:
    """Apply the orthogonal map x -> R x to positions, shifts, cells (rows are lattice vectors) and forces."""
    out = batch.clone()
    Rt = R.to(batch.positions).t()
    out.positions = batch.positions @ Rt
    out.shifts = batch.shifts @ Rt
    out.cell = batch.cell @ Rt
    if batch.forces is not None:
        out.forces = batch.forces @ Rt
    return out


def permute_batch(batch: GraphBatch, seed: int = 0) -> tuple[GraphBatch, torch.Tensor, torch.Tensor]:
    """Shuffle atoms within each graph and shuffle the edge list.

    Returns (new batch, atom_perm, edge_perm): new atom a is old atom ``atom_perm[a]``, new edge e is old edge
    ``edge_perm[e]``. Graph membership and periodic shifts are carried along, so the structures are unchanged.
    """
    g = torch.Generator().manual_seed(int(seed))
    ptr = batch.ptr.tolist()
    atom_perm = torch.cat([lo + torch.randperm(hi - lo, generator=g) for lo, hi in zip(ptr[:-1], ptr[1:], strict=True)])
    atom_perm = atom_perm.to(batch.positions.device)
    inverse = torch.empty_like(atom_perm)
    inverse[atom_perm] = torch.arange(len(atom_perm), device=atom_perm.device)
    edge_perm = torch.randperm(batch.edge_index.shape[1], generator=g).to(batch.edge_index.device)
    out = batch.clone()
    out.positions = batch.positions[atom_perm]
    out.numbers = batch.numbers[atom_perm]
    out.batch = batch.batch[atom_perm]
    out.edge_index = inverse[batch.edge_index][:, edge_perm]
    out.shifts = batch.shifts[edge_perm]
    out.unit_shifts = batch.unit_shifts[edge_perm]
    if batch.forces is not None:
        out.forces = batch.forces[atom_perm]
    return out, atom_perm, edge_perm


def _predict(fn: EnergyForcesFn, batch: GraphBatch) -> tuple[torch.Tensor, torch.Tensor]:
    out = fn(batch)
    if "energy" not in out or "forces" not in out:
        raise ValueError("the model function must return a dict with 'energy' [G] and 'forces' [N, 3]")
    return out["energy"].detach().to(torch.float64), out["forces"].detach().to(torch.float64)


def _stats(dE: list[torch.Tensor], dF: list[torch.Tensor], prefix: str = "") -> dict[str, float]:
    e, f = torch.cat([x.reshape(-1) for x in dE]), torch.cat([x.reshape(-1) for x in dF])
    return {f"{prefix}energy_max_abs": float(e.max()), f"{prefix}energy_mean_abs": float(e.mean()),
            f"{prefix}forces_max_abs": float(f.max()) if f.numel() else 0.0,
            f"{prefix}forces_mean_abs": float(f.mean()) if f.numel() else 0.0}


def equivariance_error(fn: EnergyForcesFn, batch: GraphBatch, n_rotations: int = 3, seed: int = 0,
                       reflection: bool = True) -> dict:
    """|E(Qx) − E(x)| and |F(Qx) − Q F(x)| over ``n_rotations`` random rotations Q = R and, with ``reflection``,
    as many improper maps Q = −R (inversion after the rotation). All in float64.

    Returns ``energy_max_abs``, ``energy_mean_abs``, ``forces_max_abs``, ``forces_mean_abs`` over all maps, the same
    with a ``rotation_`` / ``reflection_`` prefix for each kind, and ``n_rotations``, ``reflection``.
    """
    if n_rotations < 1:
        raise ValueError("n_rotations must be >= 1")
    b0 = batch.to(dtype=torch.float64)
    E0, F0 = _predict(fn, b0)
    kinds: dict[str, tuple[list, list]] = {"rotation": ([], [])}
    if reflection:
        kinds["reflection"] = ([], [])
    for R in random_rotations(n_rotations, seed, torch.float64, b0.positions.device):
        for kind, (dE, dF) in kinds.items():
            Q = R if kind == "rotation" else -R
            E1, F1 = _predict(fn, transform_batch(b0, Q))
            dE.append((E1 - E0).abs())
            dF.append((F1 - F0 @ Q.t()).abs())
    out: dict = _stats([x for v in kinds.values() for x in v[0]], [x for v in kinds.values() for x in v[1]])
    for kind, (dE, dF) in kinds.items():
        out.update(_stats(dE, dF, prefix=f"{kind}_"))
    out.update(n_rotations=int(n_rotations), reflection=bool(reflection))
    return out


def permutation_error(fn: EnergyForcesFn, batch: GraphBatch, seed: int = 0) -> dict:
    """|E(Px) − E(x)| and |F(Px) − P F(x)| after shuffling atoms within each graph and the edge order (float64)."""
    b0 = batch.to(dtype=torch.float64)
    E0, F0 = _predict(fn, b0)
    b1, atom_perm, _ = permute_batch(b0, seed)
    E1, F1 = _predict(fn, b1)
    return _stats([(E1 - E0).abs()], [(F1 - F0[atom_perm]).abs()])
