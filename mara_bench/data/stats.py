"""Training-set statistics that backbones need: elements, E0s, energy scale, force RMS, average neighbours."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..errors import UserError
from .frames import Frames


@dataclass
class DatasetStats:
    elements: list[int]  # sorted atomic numbers present
    e0s: dict[int, float]  # eV per atom of each element
    avg_num_neighbors: float  # mean number of neighbours within r_max per atom
    energy_per_atom_mean: float  # eV/atom, after subtracting E0s
    energy_per_atom_std: float  # eV/atom, after subtracting E0s
    force_rms: float  # eV/Å, root mean square of all force components
    n_frames: int
    n_atoms: int = 0
    r_max: float = 0.0
    element_counts: dict[int, int] = field(default_factory=dict)
    e0s_source: str = "least_squares"  # or "isolated_atoms" / "isolated_atoms+least_squares"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["e0s"] = {str(k): v for k, v in self.e0s.items()}
        d["element_counts"] = {str(k): v for k, v in self.element_counts.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DatasetStats:
        """The inverse of :meth:`to_dict` (JSON keys back to integer atomic numbers)."""
        d = dict(d)
        d["elements"] = [int(z) for z in d["elements"]]
        d["e0s"] = {int(k): float(v) for k, v in d["e0s"].items()}
        d["element_counts"] = {int(k): int(v) for k, v in (d.get("element_counts") or {}).items()}
        return cls(**d)


def composition(frames: Frames, elements: list[int]) -> np.ndarray:
    """[F, n_elements] count of each element in each frame."""
    col = np.searchsorted(elements, frames.numbers)
    frame_of_atom = np.repeat(np.arange(len(frames)), frames.n_atoms)
    comp = np.zeros((len(frames), len(elements)), dtype=np.float64)
    np.add.at(comp, (frame_of_atom, col), 1.0)
    return comp


def least_squares_e0s(comp: np.ndarray, energy: np.ndarray, elements: list[int]) -> dict[int, float]:
    """E0 per element minimising ||comp @ e0 - energy||² (minimum-norm solution when under-determined)."""
    sol, *_ = np.linalg.lstsq(comp, energy, rcond=None)
    return {int(z): float(v) for z, v in zip(elements, sol, strict=True)}


def avg_neighbors(frames: Frames, r_max: float) -> float:
    """Mean number of neighbours within r_max per atom. Frames of equal size without pbc are vectorised."""
    if len(frames) == 0:
        return 0.0
    total = 0
    counts = frames.n_atoms
    nonperiodic = ~frames.pbc.any(axis=1)
    for n in np.unique(counts[nonperiodic]):
        idx = np.nonzero(nonperiodic & (counts == n))[0]
        for chunk in np.array_split(idx, max(1, len(idx) * n * n // 2_000_000 + 1)):
            if not len(chunk):
                continue
            pos = np.stack([frames.positions[frames.ptr[i]:frames.ptr[i + 1]] for i in chunk])
            d2 = ((pos[:, :, None, :] - pos[:, None, :, :]) ** 2).sum(-1)
            total += int((d2 < r_max * r_max).sum()) - len(chunk) * int(n)  # drop self-pairs
    from ..graph import neighbor_list

    for i in np.nonzero(~nonperiodic)[0]:
        a, b = frames.ptr[i], frames.ptr[i + 1]
        ei, _, _ = neighbor_list(frames.positions[a:b], r_max, frames.cell[i], frames.pbc[i])
        total += ei.shape[1]
    return total / float(counts.sum())


def compute_stats(frames: Frames, r_max: float, isolated_atom_energies: dict | None = None) -> DatasetStats:
    """Statistics of (training) frames. E0s: the isolated-atom energies when given (elements they lack get
    least-squares E0s fitted to the remainder), else element-wise least squares on the frame energies."""
    if len(frames) == 0:
        raise UserError("cannot compute dataset statistics of an empty split")
    elements = frames.elements()
    uniq, cnt = np.unique(frames.numbers, return_counts=True)
    element_counts = {int(z): int(c) for z, c in zip(uniq, cnt, strict=True)}
    comp = composition(frames, elements)
    e0s: dict[int, float] = {}
    source = "least_squares"
    iso = {int(k): float(v) for k, v in (isolated_atom_energies or {}).items()}
    if iso:
        given = [z for z in elements if z in iso]
        e0s.update({z: iso[z] for z in given})
        source = "isolated_atoms"
        rest = [z for z in elements if z not in iso]
        if rest and frames.energy is not None:
            cols = [elements.index(z) for z in rest]
            resid = frames.energy - comp[:, [elements.index(z) for z in given]] @ np.array([iso[z] for z in given])
            e0s.update(least_squares_e0s(comp[:, cols], resid, rest))
            source = "isolated_atoms+least_squares"
        elif rest:
            e0s.update({z: 0.0 for z in rest})
    elif frames.energy is not None:
        e0s = least_squares_e0s(comp, frames.energy, elements)
    else:
        e0s = {z: 0.0 for z in elements}
        source = "none (no energies)"
    e0s = {z: e0s[z] for z in elements}
    if frames.energy is not None:
        e0_vec = np.array([e0s[z] for z in elements])
        per_atom = (frames.energy - comp @ e0_vec) / frames.n_atoms
        mean, std = float(per_atom.mean()), float(per_atom.std())
    else:
        mean = std = float("nan")
    force_rms = float(np.sqrt(np.mean(frames.forces**2))) if frames.forces is not None else float("nan")
    return DatasetStats(elements=elements, e0s=e0s, avg_num_neighbors=float(avg_neighbors(frames, float(r_max))),
                        energy_per_atom_mean=mean, energy_per_atom_std=std, force_rms=force_rms,
                        n_frames=len(frames), n_atoms=int(frames.n_atoms.sum()), r_max=float(r_max),
                        element_counts=element_counts, e0s_source=source)
