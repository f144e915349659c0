"""In-memory datasets: :class:`Frames` (the concatenated frames of one split) and :class:`Dataset`.

Units are eV, Å, eV/Å; conversion happens in the readers, never here.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import UserError


@dataclass
class Frames:
    """Concatenated frames. ``ptr[k]:ptr[k+1]`` are the atoms of frame ``k``.

    ``energy`` / ``forces`` are None when the split has no such labels (e.g. energy-only test sets).
    ``info`` holds optional per-frame arrays (``source_index``: row in the source file; ``old_indices`` for rMD17).
    """

    numbers: np.ndarray  # [A] int64
    positions: np.ndarray  # [A, 3] Å
    ptr: np.ndarray  # [F + 1] int64
    cell: np.ndarray  # [F, 3, 3] Å
    pbc: np.ndarray  # [F, 3] bool
    energy: np.ndarray | None = None  # [F] eV
    forces: np.ndarray | None = None  # [A, 3] eV/Å
    info: dict[str, np.ndarray] = field(default_factory=dict)  # per-frame extras, each [F]

    def __post_init__(self):
        self.numbers = np.asarray(self.numbers, dtype=np.int64)
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, 3)
        self.ptr = np.asarray(self.ptr, dtype=np.int64)
        n_frames = len(self.ptr) - 1
        self.cell = np.asarray(self.cell, dtype=np.float64).reshape(n_frames, 3, 3)
        self.pbc = np.asarray(self.pbc, dtype=bool).reshape(n_frames, 3)
        if self.energy is not None:
            self.energy = np.asarray(self.energy, dtype=np.float64).reshape(n_frames)
        if self.forces is not None:
            self.forces = np.asarray(self.forces, dtype=np.float64).reshape(-1, 3)
        if len(self.numbers) != len(self.positions) or self.ptr[-1] != len(self.numbers):
            raise ValueError("Frames: numbers, positions and ptr disagree on the number of atoms")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(cls, numbers, positions, energy=None, forces=None, cell=None, pbc=None, info=None) -> Frames:
        """Frames of equal size: ``numbers`` [n] or [F, n], ``positions`` [F, n, 3], ``energy`` [F], ``forces`` [F, n, 3]."""
        positions = np.asarray(positions, dtype=np.float64)
        n_frames, n_atoms = positions.shape[:2]
        numbers = np.asarray(numbers, dtype=np.int64)
        numbers = np.broadcast_to(numbers, (n_frames, n_atoms)).reshape(-1)
        cell = np.zeros((n_frames, 3, 3)) if cell is None else np.broadcast_to(np.asarray(cell, float), (n_frames, 3, 3))
        pbc = np.zeros((n_frames, 3), bool) if pbc is None else np.broadcast_to(np.asarray(pbc, bool), (n_frames, 3))
        return cls(numbers=numbers, positions=positions.reshape(-1, 3), ptr=np.arange(n_frames + 1) * n_atoms,
                   cell=np.array(cell), pbc=np.array(pbc),
                   energy=None if energy is None else np.asarray(energy, dtype=np.float64).reshape(n_frames),
                   forces=None if forces is None else np.asarray(forces, dtype=np.float64).reshape(-1, 3),
                   info=dict(info or {}))

    @classmethod
    def concatenate(cls, parts: list[Frames]) -> Frames:
        if not parts:
            raise ValueError("Frames.concatenate needs at least one part")
        sizes = [p.ptr[-1] for p in parts]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        ptr = np.concatenate([parts[0].ptr[:1]] + [p.ptr[1:] + offsets[k] for k, p in enumerate(parts)])
        has_e = all(p.energy is not None for p in parts)
        has_f = all(p.forces is not None for p in parts)
        keys = set.intersection(*(set(p.info) for p in parts))
        return cls(numbers=np.concatenate([p.numbers for p in parts]),
                   positions=np.concatenate([p.positions for p in parts]), ptr=ptr,
                   cell=np.concatenate([p.cell for p in parts]), pbc=np.concatenate([p.pbc for p in parts]),
                   energy=np.concatenate([p.energy for p in parts]) if has_e else None,
                   forces=np.concatenate([p.forces for p in parts]) if has_f else None,
                   info={k: np.concatenate([p.info[k] for p in parts]) for k in sorted(keys)})

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.ptr) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.ptr)

    @property
    def has_forces(self) -> bool:
        return self.forces is not None

    @property
    def has_energy(self) -> bool:
        return self.energy is not None

    def elements(self) -> list[int]:
        return sorted(int(z) for z in np.unique(self.numbers))

    def subset(self, idx) -> Frames:
        """The frames ``idx`` (in the given order) as a new Frames."""
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"frame index out of range for {len(self)} frames")
        idx = np.where(idx < 0, idx + len(self), idx)
        counts = self.n_atoms[idx]
        ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        atom_idx = (np.concatenate([np.arange(self.ptr[i], self.ptr[i + 1]) for i in idx]) if len(idx)
                    else np.zeros(0, np.int64))
        return Frames(numbers=self.numbers[atom_idx], positions=self.positions[atom_idx], ptr=ptr,
                      cell=self.cell[idx], pbc=self.pbc[idx],
                      energy=None if self.energy is None else self.energy[idx],
                      forces=None if self.forces is None else self.forces[atom_idx],
                      info={k: np.asarray(v)[idx] for k, v in self.info.items()})

    def frame(self, i: int) -> dict[str, Any]:
        a, b = int(self.ptr[i]), int(self.ptr[i + 1])
        return {"numbers": self.numbers[a:b], "positions": self.positions[a:b], "cell": self.cell[i],
                "pbc": self.pbc[i], "energy": None if self.energy is None else float(self.energy[i]),
                "forces": None if self.forces is None else self.forces[a:b], "index": int(i)}

    def to_graphs(self, r_max: float) -> list:
        """Neighbour lists of every frame (not cached; use :func:`mara_bench.data.graphs_for` for the cache)."""
        from ..graph import build_graph

        return [build_graph(**self.frame(i), r_max=r_max) for i in range(len(self))]

    def content_hash(self) -> str:
        """sha256 of all arrays (changes whenever the data change)."""
        h = hashlib.sha256()
        for name in ("numbers", "positions", "ptr", "cell", "pbc", "energy", "forces"):
            v = getattr(self, name)
            h.update(name.encode())
            if v is not None:
                h.update(np.ascontiguousarray(v).tobytes())
        return h.hexdigest()

    def to_atoms(self) -> list:
        """ASE Atoms with SinglePointCalculator energy/forces (eV, eV/Å)."""
        from ase import Atoms
        from ase.calculators.singlepoint import SinglePointCalculator

        out = []
        for i in range(len(self)):
            f = self.frame(i)
            at = Atoms(numbers=f["numbers"], positions=f["positions"], cell=f["cell"], pbc=f["pbc"])
            results = {k: f[k] for k in ("energy", "forces") if f[k] is not None}
            if results:
                at.calc = SinglePointCalculator(at, **results)
            out.append(at)
        return out


def check_frames(frames: Frames, where: str, require_forces: bool = False, require_energy: bool = True) -> Frames:
    """Validate labels: present where required and finite. Raises a one-line UserError naming ``where``."""
    if len(frames) == 0:
        raise UserError(f"{where}: no frames found; check that the file is a non-empty extxyz/npz dataset")
    if require_energy and frames.energy is None:
        raise UserError(f"{where}: no energies found; set energy_key=<name> (e.g. '{where}?energy_key=REF_energy')")
    if require_forces and frames.forces is None:
        raise UserError(f"{where}: no forces found but this split needs forces; "
                        f"set forces_key=<name> (e.g. '{where}?forces_key=REF_forces') or use a file with forces")
    for name in ("positions", "energy", "forces"):
        v = getattr(frames, name)
        if v is not None and not np.all(np.isfinite(v)):
            bad = np.argwhere(~np.isfinite(v.reshape(len(v), -1)).all(axis=1))[0, 0]
            frame = int(bad) if name == "energy" else int(np.searchsorted(frames.ptr, bad, side="right") - 1)
            raise UserError(f"{where}: non-finite value (NaN or inf) in {name} of frame {frame}; "
                            "remove or fix that frame")
    if np.any(frames.numbers < 1) or np.any(frames.numbers > 118):
        raise UserError(f"{where}: atomic numbers must be in 1..118; found {sorted(set(frames.numbers.tolist()))[:5]}")
    check_geometry(frames, where)
    return frames


# geometry limits (Å): closer than MIN_DISTANCE = two atoms on one site; beyond MAX_COORD = not a coordinate in Å;
# a molecule (non-periodic frame) spans at most max(MIN_SPAN_LIMIT, SPAN_PER_ATOM * atoms)
MIN_DISTANCE = 0.1
MAX_COORD = 1.0e4
MIN_SPAN_LIMIT = 100.0
SPAN_PER_ATOM = 10.0
_VALIDATED: set[str] = set()


def _frame_of_atom(frames: Frames, atom: int) -> int:
    return int(np.searchsorted(frames.ptr, atom, side="right") - 1)


def _closest_pair(pos: np.ndarray) -> tuple[float, int, int]:
    """(distance, i, j) of the closest pair of one frame's atoms (i < j); (inf, -1, -1) below two atoms."""
    n = len(pos)
    if n < 2:
        return math.inf, -1, -1
    if n > 64:
        from scipy.spatial import cKDTree

        pairs = cKDTree(pos).query_pairs(MIN_DISTANCE, output_type="ndarray")
        if len(pairs) == 0:
            return math.inf, -1, -1
        d = np.linalg.norm(pos[pairs[:, 0]] - pos[pairs[:, 1]], axis=1)
        k = int(np.argmin(d))
        return float(d[k]), int(pairs[k, 0]), int(pairs[k, 1])
    d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.diag(np.full(n, np.inf))
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    return float(d[i, j]), int(min(i, j)), int(max(i, j))


def check_geometry(frames: Frames, where: str) -> None:
    """Refuse frames whose geometry cannot be a structure: coordinates beyond 1e4 Å, two atoms closer than 0.1 Å
    (coincident), or a molecule (non-periodic frame) spread wider than max(100 Å, 10 Å per atom). One-line
    UserError naming ``where``, the frame (0-based, in file order) and the atoms. A checked content hash is
    remembered for the process, so reloading the same data costs nothing."""
    if len(frames) == 0:
        return
    key = frames.content_hash()
    if key in _VALIDATED:
        return
    pos = frames.positions
    big = np.abs(pos).max(axis=1) > MAX_COORD
    if big.any():
        a = int(np.argmax(big))
        f = _frame_of_atom(frames, a)
        raise UserError(f"{where}: frame {f}: atom {a - int(frames.ptr[f])} has an absurd coordinate "
                        f"({np.abs(pos[a]).max():.3g} Å, limit {MAX_COORD:g} Å); the frame is corrupt or not in Å; "
                        "remove or fix that frame")
    counts = frames.n_atoms
    molecular = ~frames.pbc.any(axis=1)
    # closest pair per frame: equal-size small frames at once (chunked), larger ones one by one
    small = counts <= 64
    for n in np.unique(counts[small]):
        if n < 2:
            continue
        idx = np.nonzero(small & (counts == n))[0]
        for chunk in np.array_split(idx, len(idx) * int(n) * int(n) // 2_000_000 + 1):
            if not len(chunk):
                continue
            p = np.stack([pos[frames.ptr[i]:frames.ptr[i + 1]] for i in chunk])
            d = np.linalg.norm(p[:, :, None, :] - p[:, None, :, :], axis=-1)
            d[:, np.arange(n), np.arange(n)] = np.inf
            dmin = d.reshape(len(chunk), -1).min(axis=1)
            bad = np.nonzero(dmin < MIN_DISTANCE)[0]
            if len(bad):
                _coincident(frames, where, int(chunk[bad[0]]))
            span = np.linalg.norm(p.max(axis=1) - p.min(axis=1), axis=-1)
            limit = max(MIN_SPAN_LIMIT, SPAN_PER_ATOM * int(n))
            far = np.nonzero((span > limit) & molecular[chunk])[0]
            if len(far):
                _too_wide(frames, where, int(chunk[far[0]]), float(span[far[0]]), limit)
    for i in np.nonzero(~small)[0]:
        p = pos[frames.ptr[i]:frames.ptr[i + 1]]
        if _closest_pair(p)[0] < MIN_DISTANCE:
            _coincident(frames, where, int(i))
        span = float(np.linalg.norm(p.max(axis=0) - p.min(axis=0)))
        limit = max(MIN_SPAN_LIMIT, SPAN_PER_ATOM * int(counts[i]))
        if molecular[i] and span > limit:
            _too_wide(frames, where, int(i), span, limit)
    _VALIDATED.add(key)


def _coincident(frames: Frames, where: str, f: int) -> None:
    p = frames.positions[frames.ptr[f]:frames.ptr[f + 1]]
    d, i, j = _closest_pair(p)
    z = frames.numbers[frames.ptr[f]:frames.ptr[f + 1]]
    raise UserError(f"{where}: frame {f}: atoms {i} and {j} (Z={z[i]}, Z={z[j]}) are {d:.3g} Å apart (coincident "
                    f"atoms; minimum {MIN_DISTANCE} Å); remove or fix that frame")


def _too_wide(frames: Frames, where: str, f: int, span: float, limit: float) -> None:
    raise UserError(f"{where}: frame {f}: its {int(frames.n_atoms[f])} atoms span {span:.4g} Å, more than a "
                    f"molecule of that size can (limit {limit:g} Å; an atom is far from the others); remove or fix "
                    "that frame, or give it a cell with pbc if it is periodic")


@dataclass
class Dataset:
    """A named dataset: splits ``train``, ``val``, ``test`` and extra test sets (``test_600K``, ...)."""

    name: str
    splits: dict[str, Frames]
    meta: dict[str, Any] = field(default_factory=dict)

    def test_sets(self) -> list[str]:
        """``test`` first, then the extra test sets in the order they were added."""
        names = [n for n in self.splits if n.startswith("test")]
        return sorted(names, key=lambda n: (n != "test",))

    def __getitem__(self, split: str) -> Frames:
        if split not in self.splits:
            from ..errors import unknown

            raise unknown(f"split of dataset '{self.name}'", split, self.splits)
        return self.splits[split]

    def content_hash(self) -> str:
        h = hashlib.sha256(self.name.encode())
        for k in sorted(self.splits):
            h.update(k.encode() + self.splits[k].content_hash().encode())
        return h.hexdigest()

    def summary(self) -> str:
        parts = [f"{k} {len(v)}" + ("" if v.has_forces else " (energy only)") for k, v in self.splits.items()]
        return f"{self.name}: " + ", ".join(parts)
