"""A tiny but real backbone for the pipeline / training / compare tests, and tiny labelled data.

* :class:`TinyPairModel` — E = Σ_atoms E0(Z) + ½ Σ_edges readout(φ(r_ij, Z_i, Z_j)) · fc(r_ij); an exactly
  E(3)-invariant learnable pair potential (forces by autograd). With a MARA variant it gates each edge message:
  ``paper`` uses the edge direction (not rotation invariant, like real MARA), ``control`` only r (invariant),
  ``scale`` a learned constant.
* :func:`make_lj_frames` — random small clusters labelled by ASE's Lennard-Jones calculator (real energies and
  forces of that potential, in eV and eV/Å), written as extxyz so that they go through the real data layer.

* :class:`MorsePair` — a Morse pair potential with a smooth cosine cutoff; exactly E(3)-invariant, periodic-safe.
  ``anisotropy != 0`` adds ``c * sum_e fc(r) (v_z / r)^2``, which depends on the laboratory frame (a stand-in for
  a model that is not rotation invariant, like MARA's ``paper`` variant).
* :class:`ElasticNetwork` — harmonic springs between the bonded pairs of a reference geometry (plus Morse
  repulsion); an exactly invariant, stable molecule for NVE/NVT tests.

The one module of toy potentials of the tests (``tests/`` is on ``sys.path``, see conftest.py).
``python tests/tiny_backbone.py run ...`` runs the CLI with the tiny backbone registered (used by subprocess tests).
"""

from __future__ import annotations

import math
import sys

import numpy as np
import torch

from mara_bench.backbone import Backbone
from mara_bench.model import EnergyModel

NAME = "tiny"


def _cutoff(r, r_max):
    return 0.5 * (torch.cos(math.pi * r / r_max) + 1.0) * (r < r_max)


class TinyGate(torch.nn.Module):
    """Edge gate; keeps ``last_gates`` like MARA. paper: depends on direction, through a wide hidden layer (so it
    costs several times the backbone's FLOPs, like real MARA); control: on r only; scale: one learned constant."""

    def __init__(self, hidden: int, variant: str):
        super().__init__()
        self.variant = variant
        self.wide = torch.nn.Linear(hidden + 3, 8 * hidden) if variant == "paper" else None
        self.lin = torch.nn.Linear(8 * hidden if variant == "paper" else hidden, 1)
        if variant == "scale":
            self.lin.weight.requires_grad_(False).zero_()
        self.last_gates = None

    def forward(self, m, unit):
        x = torch.nn.functional.silu(self.wide(torch.cat([m, unit], dim=-1))) if self.variant == "paper" else m
        g = torch.sigmoid(self.lin(x))
        self.last_gates = g.detach()
        return m + g * m


class TinyPairModel(EnergyModel):
    def __init__(self, e0s: dict[int, float], r_max: float = 4.0, hidden: int = 16, num_radial: int = 6,
                 mara: str = "off"):
        super().__init__()
        self.r_max, self.num_radial = float(r_max), num_radial
        e0 = torch.zeros(119)
        for z, v in (e0s or {}).items():
            e0[int(z)] = float(v)
        self.register_buffer("e0", e0)
        self.embed = torch.nn.Embedding(119, 4)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(num_radial + 8, hidden), torch.nn.SiLU(),
                                       torch.nn.Linear(hidden, hidden), torch.nn.SiLU())
        self.gate = TinyGate(hidden, mara) if mara != "off" else None
        self.readout = torch.nn.Linear(hidden, 1)

    def mara_modules(self):
        return [self.gate] if self.gate is not None else []

    def forward(self, batch, compute_forces=True, training=False):
        pos = batch.positions
        if compute_forces:
            pos = pos.detach().requires_grad_(True)
        vec = batch.edge_vectors(pos)
        r = vec.norm(dim=-1)
        n = torch.arange(1, self.num_radial + 1, dtype=pos.dtype, device=pos.device)
        rbf = torch.sin(n * math.pi * r[:, None] / self.r_max) / r[:, None]
        z = batch.numbers
        s, t = batch.edge_index
        zz = self.embed(z[s]) + self.embed(z[t])
        m = self.mlp(torch.cat([rbf, zz, self.embed(z[s]) * self.embed(z[t])], dim=-1))
        if self.gate is not None:
            m = self.gate(m, -vec / r[:, None])
        e_edge = 0.5 * self.readout(m).squeeze(-1) * _cutoff(r, self.r_max)
        energy = torch.zeros(batch.num_graphs, dtype=pos.dtype, device=pos.device)
        energy = energy.index_add(0, batch.batch, self.e0[z].to(pos.dtype))
        energy = energy.index_add(0, batch.batch[t], e_edge)
        return self.with_forces(energy, pos, compute_forces, training)


class TinyBackbone(Backbone):
    name = NAME
    description = "tiny learnable pair potential (tests only)"
    presets = {
        "smoke": {"model": {"r_max": 4.0, "hidden": 8},
                  "train": {"max_epochs": 3, "batch_size": 4, "lr": 0.005, "ema_decay": 0.9}},
        "quick": {"model": {"r_max": 4.0, "hidden": 16},
                  "train": {"max_epochs": 6, "batch_size": 4, "lr": 0.005, "ema_decay": 0.9}},
        "paper": {"model": {"r_max": 4.0, "hidden": 32}, "train": {"max_epochs": 20}},
    }
    mara_placement = "on each edge message before the pair readout"

    def build(self, model_options, stats, mara, dtype=torch.float32):
        e0s = getattr(stats, "e0s", None) or {}
        return TinyPairModel(e0s, r_max=model_options["r_max"], hidden=model_options["hidden"],
                             mara=mara.variant).to(dtype)


def register() -> None:
    from mara_bench import registry

    registry.register(registry.BACKBONE_GROUP, NAME, TinyBackbone)


def make_lj_frames(n_frames: int, seed: int = 0, n_atoms=(4, 7)):
    """Random clusters of H/C/O (min distance 1.1 Å), labelled by ASE's smooth Lennard-Jones potential."""
    from ase import Atoms
    from ase.calculators.lj import LennardJones

    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n_frames:
        n = int(rng.integers(n_atoms[0], n_atoms[1] + 1))
        pos = rng.uniform(0, 2.6, size=(n, 3))
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(n) * 9
        if d.min() < 1.1:
            continue
        atoms = Atoms(numbers=rng.choice([1, 6, 8], size=n), positions=pos)
        atoms.calc = LennardJones(sigma=1.2, epsilon=0.05, rc=4.0, smooth=True)
        e, f = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = None
        atoms.info["energy"] = float(e)
        atoms.arrays["forces"] = np.array(f)
        out.append(atoms)
    return out


def write_lj_extxyz(path, n_frames: int, seed: int = 0):
    from ase.io import write

    write(str(path), make_lj_frames(n_frames, seed), format="extxyz")
    return path


# ------------------------------------------------------------------ analytic potentials (calculator, MD tests)
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
        return self.with_forces(energy, pos, compute_forces, training)


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
        return self.with_forces(energy, pos, compute_forces, training)


if __name__ == "__main__":  # python tests/tiny_backbone.py <mara_bench CLI args>
    register()
    from mara_bench.cli import main

    sys.exit(main(sys.argv[1:]))
