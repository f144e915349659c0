"""Readers: extxyz (ASE conventions) and npz (rMD17, sGDML, NequIP and ASE-style keys) -> :class:`Frames` in eV/Å.

Every problem with a file becomes a one-line :class:`UserError` naming the file and the fix.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import UserError
from .frames import Frames
from .units import energy_factor

# npz key conventions: name -> (numbers, positions, energy, forces, default energy unit)
NPZ_CONVENTIONS = {
    "rmd17": ("nuclear_charges", "coords", "energies", "forces", "kcal/mol"),
    "sgdml": ("z", "R", "E", "F", "kcal/mol"),
    "nequip": ("atomic_numbers", "pos", "energy", "forces", "eV"),
    "nequip_total_energy": ("atomic_numbers", "pos", "total_energy", "forces", "eV"),
    "ase": ("numbers", "positions", "energy", "forces", "eV"),
    "ase_energies": ("numbers", "positions", "energies", "forces", "eV"),
}
NPZ_HELP = "; ".join(f"{k}: {'/'.join(v[:4])} ({v[4]})" for k, v in NPZ_CONVENTIONS.items())


def _missing(path: Path) -> UserError:
    if path.is_dir():
        return UserError(f"dataset path {path} is a directory, not a file; give an .xyz/.extxyz/.npz file")
    return UserError(f"dataset file not found: {path}; check the path, or set MARA_BENCH_DATA to the data folder")


# ---------------------------------------------------------------------------------------------- npz
def _open_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise _missing(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as exc:
        raise UserError(f"{path}: truncated or corrupt npz ({type(exc).__name__}: {str(exc)[:80]}); "
                        "download it again (delete it first) or restore the original file") from None


def detect_npz_convention(keys, path) -> str:
    for name, (zk, rk, _ek, _fk, _u) in NPZ_CONVENTIONS.items():
        if zk in keys and rk in keys:
            return name
    raise UserError(f"{path}: unrecognised npz keys {sorted(keys)}; expected one of the conventions "
                    f"[{NPZ_HELP}]")


def read_npz(path, energy_unit: str | None = None, require_forces: bool = True, require_energy: bool = True,
             convention: str | None = None) -> tuple[Frames, dict]:
    """Read an npz of equal-size frames. Returns (frames in eV/Å, details: convention, source unit, extra keys)."""
    path = Path(path)
    data = _open_npz(path)
    conv = convention or detect_npz_convention(data.keys(), path)
    zk, rk, ek, fk, unit = NPZ_CONVENTIONS[conv]
    if energy_unit is None and "e_unit" in data:  # sGDML files may state their unit
        energy_unit = str(data["e_unit"])
    unit = energy_unit or unit
    factor = energy_factor(unit, str(path))
    for key, needed in ((ek, require_energy), (fk, require_forces)):
        if needed and key not in data:
            raise UserError(f"{path}: npz key '{key}' missing ({conv} convention); keys found: {sorted(data)}")
    pos = np.asarray(data[rk], dtype=np.float64)
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise UserError(f"{path}: key '{rk}' must have shape (frames, atoms, 3), got {pos.shape}")
    n_frames, n_atoms = pos.shape[:2]
    z = np.asarray(data[zk]).astype(np.int64)
    if z.shape not in ((n_atoms,), (n_frames, n_atoms)):
        raise UserError(f"{path}: atom counts disagree: '{zk}' has shape {z.shape} but '{rk}' has {pos.shape} "
                        f"(expected ({n_atoms},) or ({n_frames}, {n_atoms})); the file is inconsistent")
    energy = forces = None
    if ek in data:
        energy = np.asarray(data[ek], dtype=np.float64)
        if energy.size != n_frames:
            raise UserError(f"{path}: '{ek}' has {energy.size} values for {n_frames} frames of '{rk}'")
        energy = energy.reshape(n_frames) * factor
    if fk in data:
        forces = np.asarray(data[fk], dtype=np.float64)
        if forces.shape != pos.shape:
            raise UserError(f"{path}: atom counts disagree: '{fk}' has shape {forces.shape} but '{rk}' has "
                            f"{pos.shape}; the file is inconsistent")
        forces = forces * factor
    cell = pbc = None
    if "cell" in data and np.asarray(data["cell"]).size in (9, 9 * n_frames):
        cell = np.asarray(data["cell"], dtype=np.float64).reshape(-1, 3, 3)
    if "pbc" in data and np.asarray(data["pbc"]).size in (3, 3 * n_frames):
        pbc = np.asarray(data["pbc"], dtype=bool).reshape(-1, 3)
    info = {"source_index": np.arange(n_frames)}
    for k, v in data.items():  # keep per-frame integer extras such as rMD17's old_indices
        if k not in (zk, rk, ek, fk) and v.shape == (n_frames,) and v.dtype.kind in "iu":
            info[k] = v.astype(np.int64)
    frames = Frames.from_arrays(z, pos, energy, forces, cell, pbc, info)
    return frames, {"convention": conv, "source_energy_unit": unit, "keys": sorted(data)}


# ---------------------------------------------------------------------------------------------- extxyz
def _get_label(atoms, key: str, per_atom: bool):
    calc = atoms.calc
    if calc is not None and key in getattr(calc, "results", {}):
        return calc.results[key]
    if per_atom:
        return atoms.arrays.get(key)
    return atoms.info.get(key)


def read_extxyz(path, energy_key: str = "energy", forces_key: str = "forces", energy_unit: str = "eV",
                require_forces: bool = True, require_energy: bool = True) -> tuple[Frames, dict]:
    """Read an (ext)xyz file with ASE. Energies from ``atoms.info[energy_key]`` or the SinglePointCalculator,
    forces from ``atoms.arrays[forces_key]`` or the calculator. Converted from ``energy_unit`` to eV."""
    path = Path(path)
    if not path.is_file():
        raise _missing(path)
    from ase.io import read

    try:
        images = read(str(path), index=":", format="extxyz")
    except Exception as exc:  # ASE raises many types on malformed text
        where = _locate_xyz_problem(path)
        if where:
            raise UserError(f"{path}: {where}; fix that frame (extxyz: a line with the atom count, a comment "
                            "line, then one line per atom)") from None
        msg = " ".join(str(exc).split())
        raise UserError(f"{path}: cannot parse as extxyz ({type(exc).__name__}: {msg[:300]}); "
                        "check the file (ASE extxyz conventions)") from None
    if not images:
        raise UserError(f"{path}: no frames found; check that the file is a non-empty extxyz file")
    factor = energy_factor(energy_unit, str(path))
    energies, forces, missing_e, missing_f = [], [], [], []
    for i, at in enumerate(images):
        e = _get_label(at, energy_key, per_atom=False)
        f = _get_label(at, forces_key, per_atom=True)
        (missing_e if e is None else energies).append(i if e is None else float(np.asarray(e).reshape(())))
        if f is None:
            missing_f.append(i)
        else:
            f = np.asarray(f, dtype=np.float64)
            if f.shape != (len(at), 3):
                raise UserError(f"{path}: frame {i}: '{forces_key}' has shape {f.shape}, expected ({len(at)}, 3)")
            forces.append(f)
    def keys_of(at) -> str:
        keys = set(at.info) | set(getattr(at.calc, "results", {}) or {}) | set(at.arrays)
        return ", ".join(sorted(keys - {"numbers", "positions"})) or "none besides numbers, positions"

    if missing_e and (require_energy or len(missing_e) < len(images)):
        k = missing_e[0]
        if len(missing_e) < len(images):  # the key is right (other frames have it): this frame lacks it
            raise UserError(f"{path}: frame {k} has no energy '{energy_key}' although {len(images) - len(missing_e)} "
                            f"other frames have one (keys of frame {k}: {keys_of(images[k])}); add the energy to "
                            f"that frame or remove it")
        raise UserError(f"{path}: frame {k} has no energy '{energy_key}' (keys of frame {k}: {keys_of(images[k])}); "
                        f"name the right key with energy_key=<name>, e.g. '{path.name}?energy_key=REF_energy'")
    if missing_f and (require_forces or len(missing_f) < len(images)):
        k = missing_f[0]
        if len(missing_f) < len(images):
            raise UserError(f"{path}: frame {k} has no forces '{forces_key}' although {len(images) - len(missing_f)} "
                            f"other frames have them (keys of frame {k}: {keys_of(images[k])}); add forces to that "
                            "frame or remove it")
        raise UserError(f"{path}: frame {k} has no forces '{forces_key}' (keys of frame {k}: {keys_of(images[k])}) "
                        f"but forces are required; name the right key with forces_key=<name>, e.g. "
                        f"'{path.name}?forces_key=REF_forces'")
    counts = np.array([len(a) for a in images], dtype=np.int64)
    frames = Frames(
        numbers=np.concatenate([a.numbers for a in images]),
        positions=np.concatenate([a.positions for a in images]),
        ptr=np.concatenate([[0], np.cumsum(counts)]),
        cell=np.stack([np.asarray(a.cell[:], dtype=np.float64) for a in images]),
        pbc=np.stack([a.pbc for a in images]),
        energy=np.asarray(energies) * factor if not missing_e else None,
        forces=np.concatenate(forces) * factor if not missing_f else None,
        info={"source_index": np.arange(len(images))},
    )
    return frames, {"source_energy_unit": energy_unit, "energy_key": energy_key, "forces_key": forces_key}


def _locate_xyz_problem(path: Path) -> str | None:
    """Walk an xyz file frame by frame (count line, comment, atom lines) and describe the first frame whose
    structure is broken, e.g. 'frame 2 (line 13): the count line says 7 atoms but line 20 is not an atom line'."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    i, frame = 0, 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            return (f"frame {frame} (line {i + 1}): expected an atom-count line, got '{lines[i].strip()[:40]}' "
                    f"(the previous frame has more atom lines than its count line says)")
        for k in range(n):
            ln = i + 2 + k
            if ln >= len(lines):
                return (f"frame {frame} (line {i + 1}): the count line says {n} atoms but the file ends after "
                        f"{max(0, len(lines) - i - 2)} atom lines")
            parts = lines[ln].split()
            if len(parts) < 4 or not parts[0][:1].isalpha():
                return (f"frame {frame} (line {i + 1}): the count line says {n} atoms but line {ln + 1} is not an "
                        f"atom line ('{lines[ln].strip()[:40]}'); the frame has {k} atoms")
        i += n + 2
        frame += 1
    return None


def read_isolated_atoms(path, energy_key: str = "energy", energy_unit: str = "eV") -> dict[int, float]:
    """Isolated-atom energies {Z: eV} from an extxyz of single-atom frames."""
    frames, _ = read_extxyz(path, energy_key=energy_key, energy_unit=energy_unit, require_forces=False)
    out = {}
    for i in range(len(frames)):
        if frames.n_atoms[i] != 1:
            raise UserError(f"{path}: frame {i} has {frames.n_atoms[i]} atoms; isolated-atom files need 1 atom per frame")
        out[int(frames.numbers[frames.ptr[i]])] = float(frames.energy[i])
    return dict(sorted(out.items()))


def read_file(path, options: dict | None = None, require_forces: bool = True, require_energy: bool = True):
    """Dispatch on the suffix: .npz or .xyz/.extxyz. ``options``: energy_key, forces_key, units, npz_keys."""
    options = dict(options or {})
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return read_npz(path, energy_unit=options.get("units"), require_forces=require_forces,
                        require_energy=require_energy, convention=options.get("npz_keys"))
    if suffix in (".xyz", ".extxyz"):
        return read_extxyz(path, energy_key=options.get("energy_key", "energy"),
                           forces_key=options.get("forces_key", "forces"), energy_unit=options.get("units", "eV"),
                           require_forces=require_forces, require_energy=require_energy)
    raise UserError(f"{path}: unsupported file type '{suffix}'; use .xyz/.extxyz (ASE extxyz) or .npz")
