"""Molecular dynamics with a trained model: stability, energy conservation, structure, rotation jumps.

Per replica (one starting frame from the test set, one temperature, one seed):

* ``steps_completed`` before the first failure (criteria in :mod:`mara_bench.md.failure`);
* NVE: drift of the total energy (linear fit, meV/atom/ps) and its ratio to the kinetic-energy fluctuation
  (``|drift| * duration / std(E_kin)``, and ``std(E_tot) / std(E_kin)``);
* 1-Wasserstein distance between the interatomic-distance distribution of the trajectory and of the
  reference frames (``scipy.stats.wasserstein_distance``, Å);
* the potential-energy jump when the whole system is rotated mid-trajectory (:func:`rotation_jump`).

Trajectories go to ``<run>/md/<ensemble>_T<K>_r<k>.extxyz``; results to ``<run>/md/md.json`` (atomic). Each
finished replica is also saved as ``<ensemble>_T<K>_r<k>.json`` with the settings it ran with, so an interrupted
``run_md`` resumes: a replica whose settings (and model fingerprint, when given in ``meta``) match is loaded, not
re-run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..run.layout import MD_JSON, md_json
from .failure import FailureCriteria, FailureDetector

MAX_TRACE_POINTS = 400


# ------------------------------------------------------------------------------------------- measurements
def pair_distances(atoms, r_cut: float = 6.0) -> np.ndarray:
    """All interatomic distances (molecules) or those below ``r_cut`` Å (periodic systems, minimum image)."""
    if np.any(atoms.pbc):
        from ase.neighborlist import neighbor_list

        i, j, d = neighbor_list("ijd", atoms, r_cut)
        return d[i < j]
    from scipy.spatial.distance import pdist

    return pdist(np.asarray(atoms.positions))


def distance_w1(frames, ref_frames, r_cut: float = 6.0) -> float:
    """1-Wasserstein distance (Å) between interatomic-distance distributions of two sets of frames."""
    from scipy.stats import wasserstein_distance

    a = np.concatenate([pair_distances(f, r_cut) for f in frames])
    b = np.concatenate([pair_distances(f, r_cut) for f in ref_frames])
    if not len(a) or not len(b):
        return float("nan")
    return float(wasserstein_distance(a, b))


def energy_drift(time_ps: np.ndarray, etot: np.ndarray, ekin: np.ndarray, n_atoms: int) -> dict[str, float]:
    """Linear-fit drift of the total energy (meV/atom/ps) and its size relative to kinetic fluctuations."""
    out = {"drift_mev_atom_ps": float("nan"), "etot_std_mev_atom": float("nan"), "ekin_std_mev_atom": float("nan"),
           "drift_over_ekin_std": float("nan"), "etot_std_over_ekin_std": float("nan")}
    if len(time_ps) < 3 or time_ps[-1] <= time_ps[0]:
        return out
    e = 1000.0 * np.asarray(etot) / n_atoms
    k = 1000.0 * np.asarray(ekin) / n_atoms
    slope = float(np.polyfit(time_ps, e, 1)[0])
    sk = float(np.std(k))
    duration = float(time_ps[-1] - time_ps[0])
    out.update(drift_mev_atom_ps=slope, etot_std_mev_atom=float(np.std(e)), ekin_std_mev_atom=sk)
    if sk > 0:
        out.update(drift_over_ekin_std=abs(slope) * duration / sk, etot_std_over_ekin_std=float(np.std(e)) / sk)
    return out


def rotation_jump(calc, atoms, seed: int = 0) -> dict[str, float]:
    """Rotate the whole system (positions about the centre of mass, and the cell) by a random rotation.

    Returns the jump of the potential energy (eV and meV/atom) and the largest force-equivariance error
    max|F(Rx) - R F(x)| (eV/Å). Both are ~0 (round-off) for an exactly invariant model; MARA's ``paper``
    variant is not exactly invariant, so its jump measures the symmetry breaking seen by a trajectory.
    """
    a0 = atoms.copy()
    del a0.constraints
    a0.calc = calc
    e0 = float(a0.get_potential_energy())
    f0 = np.array(a0.get_forces())
    from ..nn.symmetry import random_rotations

    R = random_rotations(1, seed)[0].numpy()
    a1 = a0.copy()
    com = a1.get_center_of_mass()
    a1.positions = (a1.positions - com) @ R.T + com
    if np.any(a1.pbc):
        a1.set_cell(a1.cell.array @ R.T, scale_atoms=False)
    a1.calc = calc
    e1 = float(a1.get_potential_energy())
    f1 = np.array(a1.get_forces())
    de = e1 - e0
    return {"energy_jump_ev": de, "energy_jump_mev_atom": 1000.0 * de / len(atoms),
            "force_error_ev_a": float(np.abs(f1 - f0 @ R.T).max())}


# ---------------------------------------------------------------------------------------------------- MD
def _downsample(n: int, k: int = MAX_TRACE_POINTS) -> np.ndarray:
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(int)) if n else np.zeros(0, int)


def run_replica(calc, start, temperature: float, steps: int, timestep_fs: float = 0.5, ensemble: str = "nvt",
                seed: int = 0, friction_per_fs: float = 0.01, traj_path: str | os.PathLike | None = None,
                write_every: int = 10, ref_frames=None, criteria: FailureCriteria | None = None,
                progress: bool = False, desc: str = "md") -> dict[str, Any]:
    """One MD replica from ``start`` (ASE Atoms). Stops at the first failure. Returns a JSON-ready dict."""
    from ase import units
    from ase.io import write
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary, ZeroRotation
    from ase.md.verlet import VelocityVerlet
    from tqdm import tqdm

    rng = np.random.default_rng(seed)
    atoms = start.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    Stationary(atoms)
    if not np.any(atoms.pbc):
        ZeroRotation(atoms)
    if ensemble == "nvt":
        from ase.constraints import FixCom
        from ase.md.langevin import Langevin

        atoms.set_constraint(FixCom())  # ASE's recommended way to keep the centre of mass fixed under Langevin
        dyn = Langevin(atoms, timestep_fs * units.fs, temperature_K=temperature,
                       friction=friction_per_fs / units.fs, fixcm=False, rng=rng)
    elif ensemble == "nve":
        dyn = VelocityVerlet(atoms, timestep_fs * units.fs)
    else:
        raise ValueError(f"unknown ensemble {ensemble!r}")
    det = FailureDetector(start, criteria)
    n = len(atoms)
    epot, ekin, frames_kept = [], [], []
    reason, rot = None, None
    if traj_path is not None:
        Path(traj_path).parent.mkdir(parents=True, exist_ok=True)
        tmp_traj = Path(traj_path).with_suffix(".extxyz.partial")
        if tmp_traj.exists():
            tmp_traj.unlink()
    t0 = time.perf_counter()
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False, unit="step")
    done = 0
    for step in range(steps + 1):
        if step > 0:
            dyn.run(1)
        e = float(atoms.get_potential_energy())
        f = atoms.get_forces()
        reason = det.check(atoms.positions, e, f)
        if reason is not None:
            break
        done = step
        epot.append(e)
        ekin.append(float(atoms.get_kinetic_energy()))
        if step % write_every == 0:
            snap = atoms.copy()
            del snap.constraints
            snap.info.update(step=step, time_fs=step * timestep_fs, energy=e)
            frames_kept.append(snap)
            if traj_path is not None:
                write(tmp_traj, snap, format="extxyz", append=True)
        if step == steps // 2 and rot is None:
            rot = rotation_jump(calc, atoms, seed + 7919)
        if step > 0:
            bar.update(1)
    bar.close()
    wall = time.perf_counter() - t0
    if traj_path is not None and tmp_traj.exists():
        os.replace(tmp_traj, traj_path)
    epot_a, ekin_a = np.array(epot), np.array(ekin)
    t_ps = np.arange(len(epot_a)) * timestep_fs / 1000.0
    etot = epot_a + ekin_a
    res: dict[str, Any] = {
        "temperature": temperature, "ensemble": ensemble, "seed": seed, "n_atoms": n,
        "steps_requested": steps, "steps_completed": done, "time_ps": done * timestep_fs / 1000.0,
        "failed": reason is not None, "failure_reason": reason,
        "wall_s": wall, "steps_per_s": (done / wall) if wall > 0 else None,
        "mean_temperature_k": float(np.mean(ekin_a) / (1.5 * n * units.kB)) if len(ekin_a) else None,
        "rotation": rot,
        "trajectory": None if traj_path is None else Path(traj_path).name,
    }
    res.update(energy_drift(t_ps, etot, ekin_a, n) if ensemble == "nve" else {})
    res["distance_w1_a"] = distance_w1(frames_kept, ref_frames) if ref_frames and frames_kept else None
    idx = _downsample(len(epot_a))
    res["trace"] = {"time_ps": t_ps[idx].tolist(), "epot_ev": epot_a[idx].tolist(), "ekin_ev": ekin_a[idx].tolist()}
    return res


def replica_seed(seed: int, temperature: float, k: int) -> int:
    return int(seed) * 1_000_003 + int(round(temperature)) * 1009 + int(k)


def run_md(calc, start_frames, ref_frames, temperatures=(300.0,), steps: int = 1000, timestep_fs: float = 0.5,
           ensemble: str = "nvt", replicas: int = 1, seed: int = 0, out_dir: str | os.PathLike | None = None,
           criteria: FailureCriteria | None = None, progress: bool = True, write_every: int = 10,
           friction_per_fs: float = 0.01, meta: dict | None = None) -> dict[str, Any]:
    """All replicas at all temperatures; replica k starts from ``start_frames[k % len]``.

    When ``out_dir`` is given, trajectories and ``md.json`` are written there. ``md.json`` keeps one section per
    ensemble (``{"nvt": {...}, "nve": {...}}``); a new run of an ensemble replaces its section.
    """
    from ..atomic import atomic_write_json, read_json

    criteria = criteria or FailureCriteria()
    reps = []
    for T in temperatures:
        for k in range(replicas):
            start = start_frames[k % len(start_frames)]
            s = replica_seed(seed, T, k)
            start_index = int(start.info.get("frame_index", k % len(start_frames)))
            stem = None if out_dir is None else Path(out_dir) / f"{ensemble}_T{int(round(T))}_r{k}"
            key = {"temperature": float(T), "steps": steps, "timestep_fs": timestep_fs, "ensemble": ensemble,
                   "seed": s, "friction_per_fs": friction_per_fs, "write_every": write_every,
                   "criteria": criteria.as_dict(), "start_frame": start_index, "n_ref_frames": len(ref_frames or []),
                   "dtype": str(getattr(calc, "dtype", "")).replace("torch.", ""), **(meta or {})}
            r = _finished_replica(stem, key)
            if r is None:
                r = run_replica(calc, start, float(T), steps, timestep_fs, ensemble, s, friction_per_fs,
                                traj_path=None if stem is None else stem.with_suffix(".extxyz"),
                                write_every=write_every, ref_frames=ref_frames, criteria=criteria,
                                progress=progress, desc=f"{ensemble} {T:g} K replica {k}")
                r["replica"] = k
                r["start_frame"] = start_index
                if stem is not None:  # replica-level resume: an interrupted run_md keeps its finished replicas
                    from ..atomic import atomic_write_json

                    atomic_write_json(stem.with_suffix(".json"), {"key": key, "result": r})
            reps.append(r)
    section = {"settings": {"temperatures": [float(t) for t in temperatures], "steps": steps,
                            "timestep_fs": timestep_fs, "replicas": replicas, "seed": seed,
                            "write_every": write_every, "friction_per_fs": friction_per_fs, **(meta or {})},
               "criteria": criteria.as_dict(), "summary": summarize(reps), "replicas": reps}
    if out_dir is not None:
        f = Path(out_dir) / MD_JSON
        doc = read_json(f) if f.is_file() else {}
        doc[ensemble] = section
        atomic_write_json(f, doc)
    return section


def _finished_replica(stem: Path | None, key: dict) -> dict | None:
    """The saved result of a replica run with exactly ``key`` (and whose trajectory exists), else None."""
    from ..atomic import read_json

    if stem is None or not stem.with_suffix(".json").is_file() or not stem.with_suffix(".extxyz").is_file():
        return None
    try:
        saved = read_json(stem.with_suffix(".json"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != as_json(key):
        return None
    return {**saved["result"], "resumed": True}


def as_json(obj):
    """``obj`` as it reads back from JSON (tuples become lists, ...), for comparing with saved settings."""
    import json

    return json.loads(json.dumps(obj))


def summarize(reps: list[dict]) -> dict[str, dict]:
    """Per temperature: survival fraction, mean/median time to failure (ps), drift and W1 medians."""
    out = {}
    for T in sorted({r["temperature"] for r in reps}):
        rs = [r for r in reps if r["temperature"] == T]

        def med(key, rs=rs):
            v = [r[key] for r in rs if r.get(key) is not None and np.isfinite(r[key])]
            return float(np.median(v)) if v else None

        out[f"{T:g}"] = {
            "replicas": len(rs), "survived": sum(not r["failed"] for r in rs),
            "survival_fraction": float(np.mean([not r["failed"] for r in rs])),
            "mean_time_ps": float(np.mean([r["time_ps"] for r in rs])),
            "median_time_ps": float(np.median([r["time_ps"] for r in rs])),
            "median_drift_mev_atom_ps": med("drift_mev_atom_ps"),
            "median_drift_over_ekin_std": med("drift_over_ekin_std"),
            "median_distance_w1_a": med("distance_w1_a"),
            "max_rotation_jump_mev_atom": max((abs(r["rotation"]["energy_jump_mev_atom"]) for r in rs
                                               if r.get("rotation")), default=None),
        }
    return out


def md_summary(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The compare/report hook: ``{ensemble: {temperature: summary}}`` from ``<run>/md/md.json`` or None."""
    from ..atomic import read_json

    f = md_json(run_dir)
    if not f.is_file():
        return None
    return {ens: sec["summary"] for ens, sec in read_json(f).items()}


def plot_md(run_dirs, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``md_survival.png`` (fraction of replicas stable vs time, a panel per temperature, a line per variant)
    and, when NVE results exist, ``md_nve_energy.png`` into ``out_dir`` (see :mod:`mara_bench.md.tables`)."""
    from .tables import write_md_figures

    return write_md_figures(run_dirs, out_dir)
