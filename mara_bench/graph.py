"""Graphs: neighbour lists within r_max and the backbone-agnostic :class:`GraphBatch`.

Edge convention (identical to MACE's): ``edge_index[0]`` is the **sender** j, ``edge_index[1]`` the
**receiver** i; messages flow j -> i and are summed at i. ``shifts`` are Cartesian periodic shifts so that
``vector_e = positions[receiver] - positions[sender] + shifts`` (see :meth:`GraphBatch.edge_vectors`).
MARA's spec uses d_e = p_j - p_i = ``-vector_e``; backbone adapters pass that.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch


def neighbor_list(
    positions: np.ndarray, r_max: float, cell: np.ndarray | None = None, pbc: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ordered pairs (sender, receiver) with |vector| < r_max, no self-edges without a shift.

    Returns ``edge_index`` [2, E] int64, ``shifts`` [E, 3] float64 (Cartesian), ``unit_shifts`` [E, 3] int64.
    Non-periodic systems use an exact all-pairs search (KD-tree above 3,000 atoms); periodic ones matscipy.
    """
    positions = np.asarray(positions, dtype=np.float64)
    n = len(positions)
    periodic = pbc is not None and bool(np.any(pbc))
    if periodic:
        from matscipy.neighbours import neighbour_list as mnl

        cell = np.asarray(cell, dtype=np.float64)
        i, j, S = mnl("ijS", positions=positions, cell=cell, pbc=np.asarray(pbc, dtype=bool), cutoff=float(r_max))
        edge_index = np.stack([i, j]).astype(np.int64)
        unit_shifts = S.astype(np.int64)
        shifts = unit_shifts.astype(np.float64) @ cell
    else:
        if n <= 3000:
            d = np.linalg.norm(positions[None, :, :] - positions[:, None, :], axis=-1)
            np.fill_diagonal(d, np.inf)
            i, j = np.nonzero(d < r_max)
        else:
            from scipy.spatial import cKDTree

            pairs = cKDTree(positions).query_pairs(r_max, output_type="ndarray")
            i = np.concatenate([pairs[:, 0], pairs[:, 1]])
            j = np.concatenate([pairs[:, 1], pairs[:, 0]])
            order = np.lexsort((j, i))
            i, j = i[order], j[order]
        edge_index = np.stack([i, j]).astype(np.int64)
        unit_shifts = np.zeros((edge_index.shape[1], 3), dtype=np.int64)
        shifts = np.zeros((edge_index.shape[1], 3), dtype=np.float64)
    return edge_index, shifts, unit_shifts


@dataclass
class FrameGraph:
    """One structure with its neighbour list, in numpy (cached once per dataset and r_max)."""

    numbers: np.ndarray  # [n] int
    positions: np.ndarray  # [n, 3] Å
    edge_index: np.ndarray  # [2, e]
    shifts: np.ndarray  # [e, 3] Å
    unit_shifts: np.ndarray  # [e, 3]
    cell: np.ndarray  # [3, 3] Å (zeros when not periodic)
    pbc: np.ndarray  # [3] bool
    energy: float | None = None  # eV
    forces: np.ndarray | None = None  # [n, 3] eV/Å
    index: int = 0  # frame index within its split


def build_graph(numbers, positions, r_max, cell=None, pbc=None, energy=None, forces=None, index=0) -> FrameGraph:
    pbc_arr = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool).reshape(3)
    cell_arr = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64).reshape(3, 3)
    ei, sh, us = neighbor_list(positions, r_max, cell_arr, pbc_arr)
    return FrameGraph(
        numbers=np.asarray(numbers, dtype=np.int64),
        positions=np.asarray(positions, dtype=np.float64),
        edge_index=ei,
        shifts=sh,
        unit_shifts=us,
        cell=cell_arr,
        pbc=pbc_arr,
        energy=None if energy is None else float(energy),
        forces=None if forces is None else np.asarray(forces, dtype=np.float64),
        index=int(index),
    )


@dataclass
class GraphBatch:
    """A batch of structures as one disjoint graph (torch tensors). Built by :func:`collate`."""

    positions: torch.Tensor  # [N, 3]
    numbers: torch.Tensor  # [N] long
    batch: torch.Tensor  # [N] long, graph index of each atom
    ptr: torch.Tensor  # [G + 1] long
    edge_index: torch.Tensor  # [2, E] long (sender, receiver)
    shifts: torch.Tensor  # [E, 3]
    unit_shifts: torch.Tensor  # [E, 3]
    cell: torch.Tensor  # [G, 3, 3]
    pbc: torch.Tensor  # [G, 3] bool
    energy: torch.Tensor | None  # [G] eV
    forces: torch.Tensor | None  # [N, 3] eV/Å
    frame_index: torch.Tensor  # [G] long

    @property
    def num_graphs(self) -> int:
        return int(self.ptr.numel() - 1)

    @property
    def num_atoms(self) -> torch.Tensor:
        return self.ptr[1:] - self.ptr[:-1]

    def edge_vectors(self, positions: torch.Tensor | None = None) -> torch.Tensor:
        """receiver - sender + shift, [E, 3]; pass the positions tensor you differentiate."""
        pos = self.positions if positions is None else positions
        return pos[self.edge_index[1]] - pos[self.edge_index[0]] + self.shifts

    def to(self, device=None, dtype: torch.dtype | None = None) -> GraphBatch:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                if v.is_floating_point() and dtype is not None:
                    v = v.to(device=device, dtype=dtype)
                else:
                    v = v.to(device=device)
            out[f.name] = v
        return GraphBatch(**out)

    def clone(self) -> GraphBatch:
        return GraphBatch(**{f.name: (v.clone() if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                             for f in fields(self)})


def collate(graphs: list[FrameGraph], dtype: torch.dtype = torch.float64) -> GraphBatch:
    """Concatenate frame graphs into one GraphBatch, offsetting edge indices."""
    if not graphs:
        raise ValueError("collate() needs at least one graph")
    counts = np.array([len(g.numbers) for g in graphs], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    edge_index = np.concatenate([g.edge_index + offsets[k] for k, g in enumerate(graphs)], axis=1)
    has_e = all(g.energy is not None for g in graphs)
    has_f = all(g.forces is not None for g in graphs)

    def t(x, dt=dtype):
        return torch.as_tensor(np.asarray(x), dtype=dt)

    return GraphBatch(
        positions=t(np.concatenate([g.positions for g in graphs])),
        numbers=t(np.concatenate([g.numbers for g in graphs]), torch.long),
        batch=t(np.repeat(np.arange(len(graphs)), counts), torch.long),
        ptr=t(offsets, torch.long),
        edge_index=t(edge_index, torch.long),
        shifts=t(np.concatenate([g.shifts for g in graphs])),
        unit_shifts=t(np.concatenate([g.unit_shifts for g in graphs])),
        cell=t(np.stack([g.cell for g in graphs])),
        pbc=t(np.stack([g.pbc for g in graphs]), torch.bool),
        energy=t([g.energy for g in graphs]) if has_e else None,
        forces=t(np.concatenate([g.forces for g in graphs])) if has_f else None,
        frame_index=t([g.index for g in graphs], torch.long),
    )
