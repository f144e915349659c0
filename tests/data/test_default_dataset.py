"""The embedded demo dataset datasets/default/: files, checksums, counts, shapes, physics sanity, split hygiene.

Needs only ASE (not tblite, which only the generator script uses).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

DEFAULT = Path(__file__).resolve().parents[2] / "datasets" / "default"
SPLITS = ("train", "val", "test")
MAX_BYTES = 3_000_000


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((DEFAULT / "meta.json").read_text())


@pytest.fixture(scope="module")
def frames() -> dict:
    from ase.io import read

    return {s: read(DEFAULT / f"{s}.xyz", ":") for s in SPLITS}


def test_files_exist_and_total_size():
    for name in [f"{s}.xyz" for s in SPLITS] + ["meta.json", "README.md"]:
        assert (DEFAULT / name).is_file(), f"missing datasets/default/{name}"
    total = sum(p.stat().st_size for p in DEFAULT.iterdir() if p.is_file())
    assert total <= MAX_BYTES, f"datasets/default is {total} bytes, limit {MAX_BYTES}"


def test_sha256_match_meta(meta):
    assert set(meta["sha256"]) == {f"{s}.xyz" for s in SPLITS}
    for name, digest in meta["sha256"].items():
        assert hashlib.sha256((DEFAULT / name).read_bytes()).hexdigest() == digest, f"{name} changed"


def test_meta_fields(meta):
    for key in ("name", "molecule", "formula", "level_of_theory", "temperature_K", "timestep_fs", "sample_every",
                "n_frames", "units", "isolated_atom_energies", "generator", "seed", "sha256", "note"):
        assert key in meta, key
    assert meta["name"] == "default"
    assert meta["level_of_theory"].startswith("GFN2-xTB (tblite ")
    assert meta["units"] == {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"}
    assert (Path(__file__).resolve().parents[2] / meta["generator"]).is_file()


def test_frame_counts_shapes_and_finite(meta, frames):
    formula = meta["formula"]
    for s in SPLITS:
        assert len(frames[s]) == meta["n_frames"][s] > 0, s
        for i, atoms in enumerate(frames[s]):
            assert atoms.get_chemical_formula(mode="hill") == formula, (s, i)
            e = atoms.get_potential_energy()
            f = atoms.get_forces()
            assert np.isfinite(e), (s, i)
            assert f.shape == (len(atoms), 3) and np.isfinite(f).all(), (s, i)
            assert np.isfinite(atoms.positions).all() and not atoms.pbc.any(), (s, i)


def test_isolated_atom_energies_cover_elements(meta, frames):
    zs = {int(z) for z in frames["train"][0].numbers}
    e0 = {int(k): v for k, v in meta["isolated_atom_energies"].items()}
    assert set(e0) == zs
    assert all(np.isfinite(v) and v < 0 for v in e0.values())


def test_physical_sanity(frames):
    # thermal energy spread (not a single geometry, not exploded); an isolated molecule's total force vanishes
    # (translation invariance of the xTB energy); force RMS of a 500 K trajectory
    energies = np.array([a.get_potential_energy() for a in frames["train"]])
    assert 0.01 < energies.std() < 2.0, energies.std()
    for s in SPLITS:
        net = np.array([a.get_forces().sum(axis=0) for a in frames[s]])
        assert np.abs(net).max() < 1e-3, (s, np.abs(net).max())
        rms = np.sqrt(np.mean(np.concatenate([a.get_forces() for a in frames[s]]) ** 2))
        assert 0.1 < rms < 5.0, (s, rms)


def test_no_duplicate_frames_and_separate_trajectories(frames):
    seen: dict[bytes, str] = {}
    for s in SPLITS:
        for i, atoms in enumerate(frames[s]):
            key = np.round(atoms.positions, 5).tobytes()
            assert key not in seen, f"{s}[{i}] duplicates a frame of {seen[key]}"
            seen[key] = f"{s}[{i}]"
    seeds = {s: {a.info["md_seed"] for a in frames[s]} for s in SPLITS}
    assert all(len(v) == 1 for v in seeds.values()), seeds
    assert len({next(iter(v)) for v in seeds.values()}) == len(SPLITS), "splits share a trajectory"
