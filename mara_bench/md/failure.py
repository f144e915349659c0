"""When has an MD trajectory failed? Geometric and numerical criteria, checked frame by frame.

A replica fails at the first frame where any of these holds (see docs/md.md):

* ``nonfinite``: the potential energy or a force is NaN/inf;
* ``bond_stretch``: a bond of the *starting* bond graph is longer than ``bond_stretch`` × its initial length
  (bonds: pairs closer than ``bond_factor`` × the sum of covalent radii in the starting frame);
* ``close_contact``: two atoms closer than ``min_distance`` Å (new close contacts, i.e. collapse);
* ``flying_apart`` (non-periodic systems): an atom farther than ``max_com_shift`` Å beyond the starting
  frame's largest distance from the centre of mass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class FailureCriteria:
    bond_factor: float = 1.2  # bond if d < bond_factor * (r_cov_i + r_cov_j) in the starting frame
    bond_stretch: float = 1.5  # failure if a starting bond exceeds this factor of its initial length
    min_distance: float = 0.5  # Å; failure if any pair gets closer
    max_com_shift: float = 5.0  # Å beyond the initial max distance from the centre of mass

    def as_dict(self) -> dict:
        return asdict(self)


def _pair_vectors(positions: np.ndarray, i: np.ndarray, j: np.ndarray, cell: np.ndarray, pbc: np.ndarray):
    d = positions[j] - positions[i]
    if np.any(pbc):
        from ase.geometry import find_mic

        d, _ = find_mic(d, cell, pbc)
    return d


def _all_distances(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    n = len(positions)
    i, j = np.triu_indices(n, k=1)
    return np.linalg.norm(_pair_vectors(positions, i, j, cell, pbc), axis=1)


class FailureDetector:
    """Built on the starting frame (ASE Atoms); :meth:`check` returns None or the failure reason."""

    def __init__(self, atoms, criteria: FailureCriteria | None = None):
        from ase.data import covalent_radii

        self.criteria = criteria or FailureCriteria()
        self.cell = np.asarray(atoms.cell.array, dtype=np.float64)
        self.pbc = np.asarray(atoms.pbc, dtype=bool)
        pos = np.asarray(atoms.positions, dtype=np.float64)
        n = len(pos)
        i, j = np.triu_indices(n, k=1)
        d = np.linalg.norm(_pair_vectors(pos, i, j, self.cell, self.pbc), axis=1)
        rc = covalent_radii[np.asarray(atoms.numbers)]
        bonded = d < self.criteria.bond_factor * (rc[i] + rc[j])
        self.bond_i, self.bond_j, self.bond_len = i[bonded], j[bonded], d[bonded]
        self.periodic = bool(np.any(self.pbc))
        masses = np.asarray(atoms.get_masses(), dtype=np.float64)
        self.masses = masses
        com = masses @ pos / masses.sum()
        self.max_radius = float(np.linalg.norm(pos - com, axis=1).max()) if n else 0.0

    @property
    def n_bonds(self) -> int:
        return int(len(self.bond_len))

    def check(self, positions: np.ndarray, energy: float | None = None, forces: np.ndarray | None = None) -> str | None:
        c = self.criteria
        if energy is not None and not np.isfinite(energy):
            return "nonfinite: potential energy is not finite"
        if forces is not None and not np.all(np.isfinite(forces)):
            return "nonfinite: a force is not finite"
        pos = np.asarray(positions, dtype=np.float64)
        if not np.all(np.isfinite(pos)):
            return "nonfinite: a position is not finite"
        if self.n_bonds:
            d = np.linalg.norm(_pair_vectors(pos, self.bond_i, self.bond_j, self.cell, self.pbc), axis=1)
            ratio = d / self.bond_len
            k = int(np.argmax(ratio))
            if ratio[k] > c.bond_stretch:
                return (f"bond_stretch: bond {self.bond_i[k]}-{self.bond_j[k]} at {d[k]:.2f} Å "
                        f"= {ratio[k]:.2f}x its initial {self.bond_len[k]:.2f} Å")
        if len(pos) > 1:
            dmin = float(_all_distances(pos, self.cell, self.pbc).min())
            if dmin < c.min_distance:
                return f"close_contact: two atoms {dmin:.2f} Å apart (< {c.min_distance} Å)"
        if not self.periodic and len(pos) > 1:
            com = self.masses @ pos / self.masses.sum()
            r = float(np.linalg.norm(pos - com, axis=1).max())
            if r > self.max_radius + c.max_com_shift:
                return f"flying_apart: an atom {r:.1f} Å from the centre of mass (start: {self.max_radius:.1f} Å)"
        return None


def first_failure(frames, criteria: FailureCriteria | None = None) -> tuple[int, str | None]:
    """Scan a trajectory (list of ASE Atoms, frame 0 = start): (number of good frames after the start, reason).

    A trajectory without failure returns ``(len(frames) - 1, None)``.
    """
    det = FailureDetector(frames[0], criteria)
    for k, a in enumerate(frames[1:], start=1):
        energy = forces = None
        if a.calc is not None:
            try:
                energy = a.get_potential_energy()
                forces = a.get_forces()
            except Exception:  # frames read from files may carry partial results
                energy = forces = None
        reason = det.check(a.positions, energy, forces)
        if reason:
            return k - 1, reason
    return len(frames) - 1, None
