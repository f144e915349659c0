"""Systems for timing: molecules (dataset frames, ASE molecules, npz files) batched to a target atom count, with zero
energy and force labels (the loss's work does not depend on their values), and the statistics models are built with
(the dataset's for a dataset molecule, else synthetic). See timing.sweep.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..graph import FrameGraph, GraphBatch, build_graph, collate


@dataclass
class Molecule:
    name: str
    source: str  # "dataset" | "file" | "ase"
    frames: list[tuple[np.ndarray, np.ndarray]]  # (numbers [n], positions [n, 3] Å), all with the same n
    dataset: Any = None  # the Dataset object when loaded through the data layer

    @property
    def n_atoms(self) -> int:
        return len(self.frames[0][0])


def _from_ase(name: str) -> Molecule:
    from ase.build import molecule
    from ase.collections import g2

    if name not in g2.names:
        from ..errors import unknown

        raise unknown("ASE molecule for --molecule ase:NAME", name, g2.names)
    a = molecule(name)
    return Molecule(f"ase:{name}", "ase", [(a.numbers.astype(np.int64), a.positions.astype(np.float64))])


def _from_npz(path: str, max_frames: int = 512) -> Molecule:
    with np.load(path) as d:
        keys = set(d.files)
        if {"nuclear_charges", "coords"} <= keys:
            z, r = d["nuclear_charges"], d["coords"]
        elif {"z", "R"} <= keys:
            z, r = d["z"], d["R"]
        else:
            raise UserError(f"--molecule file '{path}': npz needs keys nuclear_charges+coords (rMD17) or z+R (sGDML)")
        r = r[:max_frames]
    z = np.asarray(z, dtype=np.int64).reshape(-1)
    return Molecule(path, "file", [(z, np.asarray(p, dtype=np.float64)) for p in np.asarray(r).reshape(-1, len(z), 3)])


def load_molecule(spec: str = "default", data_dir: str | None = None) -> Molecule:
    """``ase:NAME`` (ASE g2 molecule), a path to an npz/extxyz file, or a dataset name of the data layer.

    ``default`` is the embedded default dataset (ethanol).
    """
    import os

    spec = str(spec)
    if spec.startswith("ase:"):
        return _from_ase(spec[4:])
    if os.path.exists(spec):
        if spec.endswith(".npz"):
            return _from_npz(spec)
        from ase.io import read

        try:
            atoms = read(spec, index=":512")
        except Exception as e:  # ase raises many types for unreadable files
            raise UserError(f"--molecule file '{spec}' could not be read by ase.io: {e}") from None
        n = len(atoms[0])
        frames = [(a.numbers.astype(np.int64), a.positions.astype(np.float64)) for a in atoms if len(a) == n]
        return Molecule(spec, "file", frames)
    from ..data import load_dataset

    ds = load_dataset(spec, data_dir=data_dir)
    fr = ds.splits["train"]
    ptr = np.asarray(fr.ptr)
    n = int(ptr[1] - ptr[0])
    frames = [(np.asarray(fr.numbers[ptr[i]:ptr[i + 1]], dtype=np.int64),
               np.asarray(fr.positions[ptr[i]:ptr[i + 1]], dtype=np.float64))
              for i in range(min(len(ptr) - 1, 512)) if int(ptr[i + 1] - ptr[i]) == n]
    return Molecule(spec, "dataset", frames, dataset=ds)


def make_batch(mol: Molecule, n_atoms: int, r_max: float, dtype: torch.dtype) -> tuple[GraphBatch, list[FrameGraph]]:
    """round(n_atoms / molecule size) copies (>= 1) of the molecule's frames, cycled, as one batch with zero energy
    and force labels (a training step's loss needs labels; their values do not change the work)."""
    copies = max(1, int(round(n_atoms / mol.n_atoms)))
    cache: dict[int, FrameGraph] = {}
    graphs = []
    for k in range(copies):
        i = k % len(mol.frames)
        if i not in cache:
            numbers, positions = mol.frames[i]
            cache[i] = build_graph(numbers, positions, r_max=r_max, energy=0.0, forces=np.zeros_like(positions),
                                   index=i)
        graphs.append(cache[i])
    return collate(graphs, dtype=dtype), graphs


def synthetic_stats(mol: Molecule, graphs: list[FrameGraph]):
    """``DatasetStats`` built from the molecule (elements, measured neighbour count; E0 = 0, unit scales)."""
    from ..data.stats import DatasetStats

    elements = sorted({int(z) for z in mol.frames[0][0]})
    avg = float(np.mean([g.edge_index.shape[1] / max(1, len(g.numbers)) for g in graphs]))
    return DatasetStats(elements=elements, e0s={z: 0.0 for z in elements}, avg_num_neighbors=avg,
                        energy_per_atom_mean=0.0, energy_per_atom_std=1.0, force_rms=1.0, n_frames=len(graphs))


def stats_for(mol: Molecule, graphs: list[FrameGraph], r_max: float, train_opts: dict[str, Any] | None = None,
              seed: int = 0):
    """(stats, kind): for a dataset molecule the statistics a run with ``train_opts`` and ``seed`` builds its model
    with (``pipeline.training_stats``), else :func:`synthetic_stats`; kind is "dataset" or "synthetic"."""
    if mol.dataset is not None:
        from ..run.pipeline import training_stats

        return training_stats(mol.dataset, train_opts or {}, seed, r_max)[0], "dataset"
    return synthetic_stats(mol, graphs), "synthetic"
