"""Graphs: neighbour lists within r_max, and the graph types, which are torch-geometric's.

* :class:`FrameGraph` — one structure with its neighbour list in numpy (what the dataset layer caches).
* :class:`MaraData` — one structure as a ``torch_geometric.data.Data`` (``FrameGraph.to_data()``).
* :data:`GraphBatch` — a batch of them: exactly the class PyG's own collation
  (``Batch.from_data_list`` / ``torch_geometric.loader.DataLoader``) makes for ``MaraData``, so PyG's API
  (``to_data_list()``, ``batch.batch``, ``batch.ptr``, transforms) works on it, and so does mara_bench's
  (``positions``/``numbers`` = PyG's ``pos``/``z``, ``edge_vectors``, ``num_atoms``, ``to(device, dtype)``).

Edge convention (identical to MACE's and to PyG's ``source_to_target`` flow): ``edge_index[0]`` is the **sender**
j, ``edge_index[1]`` the **receiver** i; messages flow j -> i and are summed at i. ``shifts`` are Cartesian
periodic shifts so that ``vector_e = positions[receiver] - positions[sender] + shifts``
(see :meth:`MaraData.edge_vectors`). MARA's spec uses d_e = p_j - p_i = ``-vector_e``; backbone adapters pass that.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass

import numpy as np
import torch

with warnings.catch_warnings():
    # torch-geometric 2.8.1 decorates a few functions with torch.jit.script at import time, which torch 2.13
    # deprecates: a warning about PyG's internals that users of mara_bench cannot act on
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=DeprecationWarning)
    from torch_geometric.data import Batch, Data


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

    def to_data(self) -> MaraData:
        """This frame as a :class:`MaraData` (float64; the tensors share memory with the numpy arrays)."""
        def t(a, dt):  # torch.from_numpy: no copy (scalars via 0-d arrays: ~3x cheaper than torch.tensor)
            return torch.from_numpy(np.ascontiguousarray(a, dtype=dt))

        f64, i64 = np.float64, np.int64
        d = {"pos": t(self.positions, f64), "z": t(self.numbers, i64), "edge_index": t(self.edge_index, i64),
             "shifts": t(self.shifts, f64), "unit_shifts": t(self.unit_shifts, i64), "cell": t(self.cell, f64),
             "pbc": t(self.pbc, bool), "frame_index": torch.from_numpy(np.asarray(self.index, dtype=i64))}
        if self.energy is not None:
            d["energy"] = torch.from_numpy(np.asarray(self.energy, dtype=f64))  # 0-d
        if self.forces is not None:
            d["forces"] = t(self.forces, f64)
        return MaraData.from_dict(d)


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


# ---------------------------------------------------------------------------------------------- PyG types
_STACKED = frozenset({"cell", "pbc", "energy", "frame_index"})  # one per structure: stacked on a new dim 0
_ALIASES = {"positions": "pos", "numbers": "z"}  # mara_bench name -> PyG name


def _alias(pyg_name: str, doc: str) -> property:
    def get(self):
        return self[pyg_name] if pyg_name in self._store else None

    def set(self, value):
        self[pyg_name] = value

    return property(get, set, doc=doc)


def _optional(name: str, doc: str) -> property:
    """An attribute that reads as None when absent (labels: not every dataset has energies/forces)."""
    def get(self):
        return self[name] if name in self._store else None

    def set(self, value):
        self[name] = value  # None removes it (PyG storage semantics)

    return property(get, set, doc=doc)


class MaraData(Data):
    """One structure as a ``torch_geometric.data.Data`` (usually made by :meth:`FrameGraph.to_data`).

    Attributes (PyG names; mara_bench aliases in brackets): ``pos`` [n, 3] Å (``positions``), ``z`` [n] long
    (``numbers``), ``edge_index`` [2, e] (sender, receiver), ``shifts`` [e, 3] Å, ``unit_shifts`` [e, 3] long,
    ``cell`` [3, 3] Å, ``pbc`` [3] bool, ``frame_index`` (0-dim long), and when labelled ``energy`` (0-dim, eV) and
    ``forces`` [n, 3] eV/Å. Batching (PyG's collation) concatenates the per-atom and per-edge tensors, offsets
    ``edge_index`` by the atoms before it, and stacks the per-structure ones (``cell`` -> [G, 3, 3], ``energy`` -> [G]).
    """

    positions = _alias("pos", "[N, 3] positions (Å); PyG's ``pos``")
    numbers = _alias("z", "[N] atomic numbers; PyG's ``z``")
    energy = _optional("energy", "[G] (batch) or 0-dim (frame) energy in eV; None when unlabelled")
    forces = _optional("forces", "[N, 3] forces in eV/Å; None when unlabelled")

    def __cat_dim__(self, key, value, *args, **kwargs):
        if key in _STACKED:
            return None
        return super().__cat_dim__(key, value, *args, **kwargs)

    def __inc__(self, key, value, *args, **kwargs):
        if key == "frame_index":  # an index into the split, not into the atoms
            return 0
        return super().__inc__(key, value, *args, **kwargs)

    @property
    def num_atoms(self) -> torch.Tensor:
        """[G] atoms per structure (a one-element tensor for a single frame)."""
        ptr = self["ptr"] if "ptr" in self._store else None
        if ptr is None:
            return torch.tensor([int(self.num_nodes)], device=self.pos.device)
        return ptr[1:] - ptr[:-1]

    def edge_vectors(self, positions: torch.Tensor | None = None) -> torch.Tensor:
        """receiver - sender + shift, [E, 3]; pass the positions tensor you differentiate."""
        pos = self.pos if positions is None else positions
        return pos[self.edge_index[1]] - pos[self.edge_index[0]] + self.shifts

    def to(self, device=None, *args, dtype: torch.dtype | None = None, non_blocking: bool = False):
        """A copy on ``device`` with floating tensors as ``dtype`` (integer/bool tensors keep theirs).

        Unlike PyG's in-place ``Data.to``, ``self`` is left unchanged (mara_bench code reuses batches). Accepts
        PyG's form ``to(device, *attrs)`` and mara_bench's ``to(device, dtype)``.
        """
        attrs = [a for a in args if isinstance(a, str)]
        dts = [a for a in args if isinstance(a, torch.dtype)]
        if len(attrs) + len(dts) != len(args) or len(dts) > 1 or (dts and dtype is not None):
            raise TypeError(f"to(device, *attribute names | dtype): got {args!r}")
        if isinstance(device, torch.dtype):  # to(torch.float32)
            device, dtype = None, device
        dtype = dtype if dtype is not None else (dts[0] if dts else None)

        def move(x: torch.Tensor) -> torch.Tensor:
            if dtype is not None and x.is_floating_point():
                return x.to(device=device, dtype=dtype, non_blocking=non_blocking)
            return x.to(device=device, non_blocking=non_blocking) if device is not None else x

        return copy.copy(self).apply(move, *attrs)


def _batch_class() -> type:
    """The class PyG's collation creates for batches of :class:`MaraData` (PyG registers it once, so
    ``Batch.from_data_list`` and ``torch_geometric.loader.DataLoader`` always return this very class)."""
    one = MaraData.from_dict({"pos": torch.zeros(1, 3), "z": torch.ones(1, dtype=torch.long)})
    return type(Batch.from_data_list([one]))


GraphBatch = _batch_class()
"""A batch of structures as one disjoint graph: ``torch_geometric.data.Batch`` of :class:`MaraData`
(``MaraDataBatch``). Besides the attributes of :class:`MaraData` (concatenated), PyG adds ``batch`` [N] (graph of
each atom), ``ptr`` [G + 1] and ``num_graphs``. Built by :func:`collate` or by PyG itself."""


def collate(graphs: list[FrameGraph], dtype: torch.dtype = torch.float64) -> GraphBatch:
    """Frame graphs -> one :data:`GraphBatch` by PyG's ``Batch.from_data_list`` (edge indices offset per graph),
    floating tensors as ``dtype``. Energies/forces are kept only when every frame has them."""
    if not graphs:
        raise ValueError("collate() needs at least one graph")
    data = [g.to_data() for g in graphs]
    for key in ("energy", "forces"):
        if any(key not in d for d in data) and any(key in d for d in data):
            for d in data:
                d[key] = None
    batch = Batch.from_data_list(data)
    return batch if dtype == torch.float64 else batch.to(dtype=dtype)
