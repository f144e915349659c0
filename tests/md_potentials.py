"""Tiny analytic potentials (EnergyModel subclasses) for calculator and MD tests: exact, fast, real autograd.

* :class:`MorsePair` — a Morse pair potential with a smooth cosine cutoff; exactly E(3)-invariant, periodic-safe.
  ``anisotropy != 0`` adds ``c * sum_e fc(r) (v_z / r)^2``, which depends on the laboratory frame (a stand-in for
  a model that is not rotation invariant, like MARA's ``paper`` variant).
* :class:`ElasticNetwork` — harmonic springs between the bonded pairs of a reference geometry (plus Morse
  repulsion); an exactly invariant, stable molecule for NVE/NVT tests.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mara_bench.model import EnergyModel


def _cutoff(r, r_max):
    return 0.5 * (torch.cos(math.pi * r / r_max) + 1.0) * (r < r_max)


class MorsePair(EnergyModel):
    def __init__(self, r_max=5.0, depth=0.1, alpha=1.5, r_eq=1.6, anisotropy=0.0):
        super().__init__()
        self.r_max = r_max
        self.depth = torch.nn.Parameter(torch.tensor(depth, dtype=torch.float64))
        self.alpha, self.r_eq, self.anisotropy = alpha, r_eq, anisotropy

    def edge_energy(self, vec, r):
        x = torch.exp(-self.alpha * (r - self.r_eq))
        e = 0.5 * self.depth * (x * x - 2.0 * x) * _cutoff(r, self.r_max)
        if self.anisotropy:
            e = e + self.anisotropy * _cutoff(r, self.r_max) * (vec[:, 2] / r) ** 2
        return e

    def forward(self, batch, compute_forces=True, training=False):
        pos = batch.positions.requires_grad_(True) if compute_forces else batch.positions
        vec = batch.edge_vectors(pos)
        r = vec.norm(dim=-1)
        e_edge = self.edge_energy(vec, r)
        energy = torch.zeros(batch.num_graphs, dtype=pos.dtype, device=pos.device)
        energy = energy.index_add(0, batch.batch[batch.edge_index[1]], e_edge)
        out = {"energy": energy}
        if compute_forces:
            (g,) = torch.autograd.grad(energy.sum(), pos, create_graph=training)
            out["forces"] = -g
        return out


class ElasticNetwork(MorsePair):
    """Springs k (r - r0)^2 on the pairs bonded in ``ref_positions`` (single-structure batches only)."""

    def __init__(self, numbers, ref_positions, k=20.0, r_max=5.0):
        super().__init__(r_max=r_max, depth=0.01, alpha=2.0, r_eq=2.5)
        from ase.data import covalent_radii

        pos = np.asarray(ref_positions, dtype=np.float64)
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1)
        rc = covalent_radii[np.asarray(numbers)]
        bonded = (d < 1.2 * (rc[:, None] + rc[None])) & ~np.eye(len(pos), dtype=bool)
        self.register_buffer("r0", torch.as_tensor(d))
        self.register_buffer("bonded", torch.as_tensor(bonded))
        self.k = k

    def forward(self, batch, compute_forces=True, training=False):
        pos = batch.positions.requires_grad_(True) if compute_forces else batch.positions
        vec = batch.edge_vectors(pos)
        r = vec.norm(dim=-1)
        s, t = batch.edge_index[0], batch.edge_index[1]
        bonded = self.bonded[s, t]
        spring = 0.5 * self.k * (r - self.r0[s, t].to(r.dtype)) ** 2  # 0.5: each pair appears twice
        e_edge = torch.where(bonded, spring, super().edge_energy(vec, r))
        energy = torch.zeros(batch.num_graphs, dtype=pos.dtype, device=pos.device).index_add(0, batch.batch[t], e_edge)
        out = {"energy": energy}
        if compute_forces:
            (g,) = torch.autograd.grad(energy.sum(), pos, create_graph=training)
            out["forces"] = -g
        return out
