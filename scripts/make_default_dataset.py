"""Generate the embedded demo dataset ``datasets/default/`` (dev-only; needs ``tblite``, see requirements-dev.txt).

Ethanol (C2H6O, 9 atoms) built with ``ase.build.molecule``, optimised, then Langevin MD at 500 K with a 0.5 fs
timestep, every energy and force labelled with GFN2-xTB (``tblite.ase.TBLite``). The three splits come from three
*independent* trajectories (different seeds for the initial velocities and the thermostat noise), so test frames are
never interleaved with training frames. Each trajectory is equilibrated first, then a frame is kept every
``--sample-every`` steps.

Usage (about a minute on one core)::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/make_default_dataset.py --check

``--check`` also compares the xTB forces with central finite differences of the xTB energy on one frame.
This is a demo dataset for the offline default run, not a benchmark.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import io
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SPLITS = {"train": 400, "val": 50, "test": 150}  # frames per split; one independent trajectory per split
SPLIT_SEED_OFFSET = {"train": 0, "val": 1, "test": 2}
MOLECULE = "CH3CH2OH"  # ase.build.molecule name of ethanol


def tblite_version() -> str:
    return importlib.metadata.version("tblite")


def make_calc(accuracy: float, **kwargs):
    from tblite.ase import TBLite

    return TBLite(method="GFN2-xTB", accuracy=accuracy, verbosity=0, **kwargs)


def optimised_molecule(accuracy: float, fmax: float = 1e-3):
    from ase.build import molecule
    from ase.optimize import BFGS

    atoms = molecule(MOLECULE)
    atoms.calc = make_calc(accuracy)
    BFGS(atoms, logfile=None).run(fmax=fmax, steps=500)
    return atoms


def run_trajectory(start, n_frames: int, seed: int, args, label: str) -> list:
    """Langevin MD from ``start``; returns ``n_frames`` labelled frames (SinglePointCalculator attached)."""
    from ase import units
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.constraints import FixCom
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    atoms = start.copy()
    atoms.calc = make_calc(args.accuracy)
    thermalize = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution  # ASE >= 3.29 name
    thermalize(atoms, temperature_K=args.temperature, rng=rng)
    vd.Stationary(atoms)
    vd.ZeroRotation(atoms)
    atoms.set_constraint(FixCom())  # the molecule does not drift (ASE's recommended replacement for fixcm=True)
    dyn = Langevin(atoms, timestep=args.timestep * units.fs, temperature_K=args.temperature,
                   friction=args.friction / units.fs, fixcm=False, rng=rng)
    frames: list = []
    total = args.equilibration + n_frames * args.sample_every
    bar = tqdm(total=total, desc=f"MD {label} (seed {seed})", unit="step", file=sys.stdout, mininterval=2.0)
    dyn.run(args.equilibration)
    bar.update(args.equilibration)
    for k in range(n_frames):
        dyn.run(args.sample_every)
        bar.update(args.sample_every)
        frame = atoms.copy()
        frame.set_constraint()
        frame.set_momenta(None)  # only positions, energy and forces are stored
        # apply_constraint=False: the raw xTB forces (-dE/dx), not the FixCom-projected ones the MD uses
        forces = atoms.get_forces(apply_constraint=False).copy()
        net = np.abs(forces.sum(axis=0)).max()
        if net > 1e-4:
            raise RuntimeError(f"{label} step {k}: net xTB force {net:.2e} eV/A on an isolated molecule")
        frame.calc = SinglePointCalculator(frame, energy=float(atoms.get_potential_energy()), forces=forces)
        frame.info["md_step"] = args.equilibration + (k + 1) * args.sample_every
        frame.info["md_seed"] = seed
        frames.append(frame)
    bar.close()
    return frames


def isolated_atom_energies(numbers, accuracy: float) -> tuple[dict[str, float], dict[str, float]]:
    """Single-atom GFN2-xTB energies (eV): the dataset's own spin-restricted Hamiltonian, and spin-polarised ones."""
    from ase import Atoms

    ground_multiplicity = {1: 2, 6: 3, 7: 4, 8: 3, 9: 2}  # Hund's rule, for the spin-polarised reference
    plain, polarised = {}, {}
    for z in sorted(set(int(n) for n in numbers)):
        atom = Atoms(numbers=[z])
        atom.calc = make_calc(accuracy)
        plain[str(z)] = float(atom.get_potential_energy())
        atom = Atoms(numbers=[z])
        atom.calc = make_calc(accuracy, multiplicity=ground_multiplicity[z], spin_polarization=1.0)
        polarised[str(z)] = float(atom.get_potential_energy())
    return plain, polarised


def finite_difference_check(frame, accuracy: float, h: float = 1e-3) -> dict[str, float]:
    """Compare the *stored* forces of one labelled frame with central differences of a fresh xTB energy (eV/Å)."""
    stored_e, stored_f = frame.get_potential_energy(), frame.get_forces()
    atoms = frame.copy()
    atoms.calc = make_calc(accuracy)
    fresh_e, fresh_f = atoms.get_potential_energy(), atoms.get_forces().copy()
    fd = np.zeros_like(fresh_f)
    for i in range(len(atoms)):
        for c in range(3):
            energies = []
            for step in (h, -h):
                pos = frame.positions.copy()
                pos[i, c] += step
                atoms.positions = pos
                energies.append(atoms.get_potential_energy())
            fd[i, c] = -(energies[0] - energies[1]) / (2 * h)
    return {"max_abs_dev_eV_per_A": float(np.abs(stored_f - fd).max()),
            "max_abs_stored_vs_recomputed_eV_per_A": float(np.abs(stored_f - fresh_f).max()),
            "abs_energy_stored_vs_recomputed_eV": float(abs(stored_e - fresh_e))}


def extxyz_text(frames) -> str:
    from ase.io import write

    buf = io.StringIO()
    write(buf, frames, format="extxyz")
    return buf.getvalue()


def summary(splits: dict[str, list]) -> dict:
    out = {}
    for name, frames in splits.items():
        e = np.array([f.get_potential_energy() for f in frames])
        f = np.concatenate([fr.get_forces() for fr in frames])
        out[name] = {"energy_min_eV": float(e.min()), "energy_max_eV": float(e.max()),
                     "energy_std_eV": float(e.std()), "force_rms_eV_per_A": float(np.sqrt((f ** 2).mean())),
                     "zero_force_mae_eV_per_A": float(np.abs(f).mean())}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / "datasets" / "default", help="output folder")
    p.add_argument("--seed", type=int, default=20260101, help="base seed; split s uses seed + offset(s)")
    p.add_argument("--temperature", type=float, default=500.0, help="MD temperature in K")
    p.add_argument("--timestep", type=float, default=0.5, help="MD timestep in fs")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs")
    p.add_argument("--equilibration", type=int, default=2000, help="MD steps discarded at the start of each run")
    p.add_argument("--sample-every", type=int, default=20, help="MD steps between kept frames")
    p.add_argument("--accuracy", type=float, default=0.1, help="tblite numerical accuracy (lower is tighter)")
    p.add_argument("--check", action="store_true", help="finite-difference check of the forces on one frame")
    args = p.parse_args(argv)

    from mara_bench.atomic import atomic_write_json, atomic_write_text

    t0 = time.time()
    version = tblite_version()
    print(f"GFN2-xTB via tblite {version}; molecule {MOLECULE}; {args.temperature} K, {args.timestep} fs", flush=True)
    start = optimised_molecule(args.accuracy)
    print(f"optimised: E = {start.get_potential_energy():.6f} eV, "
          f"max|F| = {np.abs(start.get_forces()).max():.2e} eV/A", flush=True)

    splits = {name: run_trajectory(start, n, args.seed + SPLIT_SEED_OFFSET[name], args, name)
              for name, n in SPLITS.items()}
    plain, polarised = isolated_atom_energies(start.numbers, args.accuracy)

    args.out.mkdir(parents=True, exist_ok=True)
    sha = {}
    for name, frames in splits.items():
        text = extxyz_text(frames)
        atomic_write_text(args.out / f"{name}.xyz", text)
        sha[f"{name}.xyz"] = hashlib.sha256(text.encode()).hexdigest()

    stats = summary(splits)
    meta = {
        "name": "default",
        "molecule": "ethanol",
        "formula": start.get_chemical_formula(mode="hill"),
        "level_of_theory": f"GFN2-xTB (tblite {version})",
        "tblite_settings": {"accuracy": args.accuracy, "electronic_temperature_K": 300.0,
                            "spin_polarization": None, "charge": 0, "multiplicity": 1},
        "temperature_K": args.temperature,
        "timestep_fs": args.timestep,
        "friction_per_fs": args.friction,
        "thermostat": "ase.md.langevin.Langevin",
        "equilibration_steps": args.equilibration,
        "sample_every": args.sample_every,
        "n_frames": {name: len(frames) for name, frames in splits.items()},
        "split_rule": "one independent MD trajectory per split from the same optimised geometry, seeds "
                      + ", ".join(f"{n}={args.seed + o}" for n, o in SPLIT_SEED_OFFSET.items())
                      + "; no frame of one split is taken from another split's trajectory",
        "units": {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"},
        "isolated_atom_energies": plain,
        "isolated_atom_note": "single atoms with the same spin-restricted GFN2-xTB Hamiltonian as the frames "
                              "(tblite defaults: unpaired electrons from electron-count parity, Fermi smearing "
                              "at 300 K); spin-polarised values (Hund multiplicity, spin_polarization=1.0) are "
                              "in isolated_atom_energies_spin_polarized for reference only",
        "isolated_atom_energies_spin_polarized": polarised,
        "stats": stats,
        "generator": "scripts/make_default_dataset.py",
        "seed": args.seed,
        "sha256": sha,
        "note": "demo dataset, not a benchmark",
    }
    if args.check:
        check = finite_difference_check(splits["test"][0], args.accuracy)
        meta["finite_difference_check"] = {"frame": "test[0]", "step_A": 1e-3, **check}
        print(f"finite-difference check (stored forces of test[0], h=1e-3 A): max |F - (-dE/dx)| = "
              f"{check['max_abs_dev_eV_per_A'] * 1000:.4f} meV/A; stored vs recomputed: forces "
              f"{check['max_abs_stored_vs_recomputed_eV_per_A']:.1e} eV/A, "
              f"energy {check['abs_energy_stored_vs_recomputed_eV']:.1e} eV")
    atomic_write_json(args.out / "meta.json", meta)

    for name, s in stats.items():
        print(f"{name}: E in [{s['energy_min_eV']:.4f}, {s['energy_max_eV']:.4f}] eV (std {s['energy_std_eV']:.4f}),"
              f" force RMS {s['force_rms_eV_per_A']:.4f} eV/A, zero-force MAE "
              f"{s['zero_force_mae_eV_per_A'] * 1000:.1f} meV/A")
    size = sum((args.out / f).stat().st_size for f in sha)
    print(f"isolated atoms (eV): {plain}")
    print(f"wrote {args.out} ({size / 1e6:.3f} MB of extxyz) in {time.time() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
