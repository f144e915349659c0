"""Force continuity across MARA's cone points (spec: "Smoothness"), measured on any energy/force model.

MARA's ``paper`` gate uses ρ_ek = r·sqrt(2 + 2 u_k·d̂) = r·|u_k + d̂|, with d = p_sender − p_receiver
(= −``GraphBatch.edge_vectors``). ρ_ek has a cone point (like |x| at 0) where d̂ = −u_k, i.e. where the edge vector
p_receiver − p_sender points along the grid direction +u_k. A cone in ρ is a kink in the energy, so the forces jump
there: they are not continuous functions of the positions.

The probe (:func:`force_continuity`): for each chosen edge (sender s, receiver t) of a structure and each chosen grid
direction u_k, rotate the structure rigidly so that p_t − p_s (+ periodic shift) = r·u_k exactly (the edge s → t then
sits on the cone point of token k; for a grid with antipodal pairs, such as 4x8, the reverse edge t → s sits on the
cone point of −u_k), then move the receiver t by ±ε along a direction perpendicular to the edge — a line through the
apex of the cone — and record J(ε) = F(+ε) − F(−ε) for every atom and component, for a decreasing sequence of ε.

* A smooth (C¹) model: J(ε) = 2ε·H·e + O(ε³) → 0 linearly with ε (H the Hessian, e the displacement direction).
* A cone point: J(ε) = Δ + O(ε) with Δ ≠ 0, a jump that does not shrink with ε.

Reported per ε: max |J(ε)| over probes, atoms and components; and the ε → 0 limit of the jump, estimated per probe
by Richardson extrapolation of the two smallest ε (Δ ≈ (q·J(ε₂) − J(ε₁)) / (q − 1), q = ε₁/ε₂, which removes the
linear term), max over probes. For a smooth model what is left is the cubic term of J (and round-off): ~1e-16 to
1e-10 eV/Å, depending on how stiff the model is.

Verdict, per probe and scale-free: the same extrapolation on the next-larger pair of ε leaves a cubic residual
(ε_coarse/ε_fine)³ times larger (1000× for decades), while a true jump Δ is the same in both. So the limit of a smooth
model is at most 10·(coarse limit)·(ε_fine/ε_coarse)³ (the *floor*, never below :data:`ROUNDOFF`); a limit above the
floor is a discontinuity. (A fixed absolute threshold would have to sit between a stiff smooth model's 2e-10 and a
trained MARA model's 1e-7 eV/Å, both measured.)

ε must stay above MARA's ``RHO_EPS`` clamp: |u + d̂|² is clamped at 1e-12, i.e. within an angle of 1e-6 rad of the
apex ρ is flat, so displacements with ε/r below ~1e-6 both land in the flat disk and show no jump. The default
ε = 1e-3, 1e-4, 1e-5 Å keeps ε/r ≥ 2e-6 for every edge shorter than 5 Å.

Everything is float64: ``fn`` must accept a float64 batch (cast the model with ``.to(torch.float64)`` first).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from ..graph import FrameGraph, GraphBatch, collate
from .s2grid import grid_points

__all__ = ["EPS", "ROUNDOFF", "model_grid", "default_directions", "align_rotation", "cone_aligned", "probe_edges",
           "force_continuity", "summary_line"]

EPS: tuple[float, ...] = (1e-3, 1e-4, 1e-5)  # Å, decreasing
ROUNDOFF = 1e-11  # eV/Å: the lowest floor of the verdict (float64 round-off of force differences is ~1e-14)

EnergyForcesFn = Callable[[GraphBatch], dict]


def model_grid(model, default: tuple[int, int] = (4, 8)) -> tuple[int, int]:
    """The (H, W) grid of ``model``'s first MARA module, else ``default`` (MARA's default grid: the baseline of a
    model without MARA is probed at the same directions)."""
    mods = model.mara_modules() if hasattr(model, "mara_modules") else []
    for m in mods:
        if getattr(m, "grid_shape", None) is not None:
            return tuple(int(x) for x in m.grid_shape)
    return tuple(int(x) for x in default)


def default_directions(grid: tuple[int, int]) -> list[int]:
    """Grid indices probed by default: the north pole (k = 0, where all W tokens of the first row coincide) and an
    off-pole point (k = W + 1: second colatitude, second longitude; a south-pole copy for a 2-row grid)."""
    H, W = (int(g) for g in grid)
    return sorted({0, min(W + 1, H * W - 1)})


def align_rotation(v: np.ndarray, u: np.ndarray) -> np.ndarray:
    """The proper rotation R [3, 3] of smallest angle with R·v̂ = u (Rodrigues; a half turn when v̂ = −u)."""
    a = np.asarray(v, dtype=np.float64)
    a = a / np.linalg.norm(a)
    b = np.asarray(u, dtype=np.float64)
    b = b / np.linalg.norm(b)
    c = float(a @ b)
    if c < -1.0 + 1e-12:  # antiparallel: half turn about any axis perpendicular to a
        axis = _perpendicular(a)
        return 2.0 * np.outer(axis, axis) - np.eye(3)
    w = np.cross(a, b)
    K = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
    return np.eye(3) + K + K @ K / (1.0 + c)


def _perpendicular(u: np.ndarray) -> np.ndarray:
    """A unit vector perpendicular to ``u``: u × (the coordinate axis least aligned with u), normalised."""
    axis = np.zeros(3)
    axis[int(np.argmin(np.abs(u)))] = 1.0
    p = np.cross(u, axis)
    return p / np.linalg.norm(p)


def cone_aligned(g: FrameGraph, edge: int, u: np.ndarray) -> FrameGraph:
    """``g`` rigidly rotated so that edge ``edge``'s vector p_receiver − p_sender + shift is |·|·u exactly
    (positions, shifts, cell and reference forces rotated; edges unchanged). MARA's d of that edge is then −r·u."""
    s, t = (int(x) for x in g.edge_index[:, edge])
    v = g.positions[t] - g.positions[s] + g.shifts[edge]
    R = align_rotation(v, u)
    pos = (g.positions - g.positions[s]) @ R.T
    shifts = g.shifts @ R.T
    u = np.asarray(u, dtype=np.float64) / np.linalg.norm(u)
    pos[t] = pos[s] + np.linalg.norm(v) * u - shifts[edge]  # exact alignment (the rotation is exact to ~1e-16)
    return replace(g, positions=pos, shifts=shifts, cell=g.cell @ R.T,
                   forces=None if g.forces is None else g.forces @ R.T)


def probe_edges(g: FrameGraph, n: int) -> list[int]:
    """Up to ``n`` edges of ``g``, shortest first, one per unordered atom pair, without self-image edges."""
    s, t = g.edge_index
    if len(s) == 0:
        return []
    r = np.linalg.norm(g.positions[t] - g.positions[s] + g.shifts, axis=-1)
    out, seen = [], set()
    for e in np.argsort(r, kind="stable"):
        pair = (min(int(s[e]), int(t[e])), max(int(s[e]), int(t[e])))
        if pair[0] == pair[1] or pair in seen:
            continue
        seen.add(pair)
        out.append(int(e))
        if len(out) == n:
            break
    return out


def _displaced(g: FrameGraph, atom: int, delta: np.ndarray) -> FrameGraph:
    pos = g.positions.copy()
    pos[atom] = pos[atom] + delta
    return replace(g, positions=pos)


def force_continuity(fn: EnergyForcesFn, graphs: Sequence[FrameGraph], grid: tuple[int, int] = (4, 8),
                     directions: Sequence[int] | None = None, edges_per_structure: int = 2,
                     eps: Sequence[float] = EPS, batch_size: int = 32, device=None,
                     keep_probes: bool = True) -> dict[str, Any]:
    """Largest force change under ±ε displacements across MARA cone points (see the module docstring).

    ``fn(batch) -> {"forces": [N, 3], ...}`` on a float64 batch; ``graphs``: the structures to probe (each gives
    ``edges_per_structure`` shortest edges × ``directions`` probes); ``grid``: the MARA grid (H, W) whose directions
    u_k = ``grid_points(H, W)[k]`` are probed; ``eps``: at least three decreasing displacements (Å).

    Returns ``eps_A`` (the sequence), ``jump_max_eV_A`` (per ε: max |F(+ε) − F(−ε)| over probes, atoms and
    components), ``jump_eV_A`` (that at the smallest ε), ``jump_limit_eV_A`` (the ε → 0 limit, Richardson over the
    two smallest ε, max over probes), ``shrink`` (jump at the smallest ε / jump at the largest: ≈ ε_min/ε_max for a
    smooth model, ≈ 1 for a cone point), ``continuous`` (every probe's limit ≤ its floor, see the module docstring),
    ``floor_eV_A`` (the floor of the probe with the largest limit), ``n_discontinuous`` (probes above their floor),
    ``n_probes``, ``grid``, ``directions``, ``frames``, ``dtype``, ``units`` and, with ``keep_probes``, ``probes`` (one
    record per probe: frame, sender, receiver, r_A, direction, jump_limit_eV_A, floor_eV_A, continuous).
    """
    eps = [float(e) for e in eps]
    if len(eps) < 3 or any(e <= 0 for e in eps) or any(a <= b for a, b in zip(eps, eps[1:], strict=False)):
        raise ValueError(f"eps must be >= 3 positive, strictly decreasing displacements, got {eps}")
    H, W = (int(x) for x in grid)
    u_all = grid_points(H, W).numpy()
    dirs = default_directions((H, W)) if directions is None else [int(k) for k in directions]
    if any(not 0 <= k < H * W for k in dirs):
        raise ValueError(f"grid directions {dirs} outside 0..{H * W - 1} for a {H}x{W} grid")
    # one probe = (frame, edge, direction); 2·len(eps) displaced copies each, all evaluated in float64 batches
    probes, copies = [], []
    for g in graphs:
        for e in probe_edges(g, edges_per_structure):
            s, t = (int(x) for x in g.edge_index[:, e])
            for k in dirs:
                ga = cone_aligned(g, e, u_all[k])
                perp = _perpendicular(u_all[k])
                probes.append({"frame": int(g.index), "sender": s, "receiver": t,
                               "r_A": float(np.linalg.norm(ga.positions[t] - ga.positions[s] + ga.shifts[e])),
                               "direction": int(k)})
                copies.extend(_displaced(ga, t, sign * h * perp) for h in eps for sign in (1.0, -1.0))
    if not probes:
        raise ValueError("force_continuity: the structures have no edges to probe")
    forces: list[np.ndarray] = []
    for lo in range(0, len(copies), batch_size):
        chunk = copies[lo:lo + batch_size]
        batch = collate(chunk, dtype=torch.float64)
        if device is not None:
            batch = batch.to(device)
        out = fn(batch)
        if "forces" not in out:
            raise ValueError("the model function must return a dict with 'forces' [N, 3]")
        f = out["forces"].detach().to(torch.float64).cpu().numpy()
        ptr = np.concatenate([[0], np.cumsum([len(c.numbers) for c in chunk])])
        forces.extend(f[a:b] for a, b in zip(ptr[:-1], ptr[1:], strict=True))
    n_eps = len(eps)
    def extrapolate(j_coarse, j_fine, q):  # ε → 0 limit of J = Δ + a·ε from two ε (ratio q)
        return float(np.abs((q * j_fine - j_coarse) / (q - 1.0)).max())

    jumps = np.zeros((len(probes), n_eps))
    for p, rec in enumerate(probes):
        J = [forces[(p * n_eps + i) * 2] - forces[(p * n_eps + i) * 2 + 1] for i in range(n_eps)]
        jumps[p] = [float(np.abs(j).max()) for j in J]
        rec["jump_limit_eV_A"] = extrapolate(J[-2], J[-1], eps[-2] / eps[-1])
        coarse = extrapolate(J[-3], J[-2], eps[-3] / eps[-2])
        rec["floor_eV_A"] = max(ROUNDOFF, 10.0 * coarse * (eps[-1] / eps[-2]) ** 3)
        rec["continuous"] = rec["jump_limit_eV_A"] <= rec["floor_eV_A"]
    per_eps = jumps.max(axis=0)
    worst = max(probes, key=lambda rec: rec["jump_limit_eV_A"])
    out: dict[str, Any] = {
        "eps_A": eps, "jump_max_eV_A": [float(x) for x in per_eps], "jump_eV_A": float(per_eps[-1]),
        "jump_limit_eV_A": worst["jump_limit_eV_A"],
        "shrink": float(per_eps[-1] / per_eps[0]) if per_eps[0] > 0 else 0.0,
        "continuous": all(rec["continuous"] for rec in probes), "floor_eV_A": worst["floor_eV_A"],
        "n_discontinuous": sum(not rec["continuous"] for rec in probes), "n_probes": len(probes),
        "grid": [H, W], "directions": dirs, "frames": sorted({rec["frame"] for rec in probes}),
        "dtype": "float64", "units": "eV/Å"}
    if keep_probes:
        out["probes"] = probes
    return out


def summary_line(block: dict[str, Any]) -> str:
    """One line for a run summary, e.g. 'force continuity at MARA cone points (float64): jump 3.5e-04 eV/Å at
    ε = 1e-05 Å, ε→0 limit 3.5e-04 eV/Å (discontinuous)'."""
    eps = block["eps_A"]
    verdict = "continuous" if block.get("continuous") else "DISCONTINUOUS"
    seq = ", ".join(f"{j:.1e}" for j in block["jump_max_eV_A"])
    return (f"force continuity at MARA cone points (float64, {block.get('n_probes', '?')} probes): "
            f"max |F(+ε) − F(−ε)| {seq} eV/Å for ε = {', '.join(f'{e:.0e}' for e in eps)} Å; "
            f"ε→0 limit {block['jump_limit_eV_A']:.1e} eV/Å ({verdict}; smooth floor {block['floor_eV_A']:.0e})")

