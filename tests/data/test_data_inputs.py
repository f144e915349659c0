"""User files, bad inputs (one-line UserErrors naming the file) and statistics; no real data needed."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from mara_bench.data import KCAL_PER_MOL_IN_EV, Frames, compute_stats, graphs_for, load_dataset
from mara_bench.data.loader import clear_memory_cache, graph_cache_key
from mara_bench.errors import UserError


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MARA_BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MARA_BENCH_DOWNLOAD", raising=False)
    clear_memory_cache()


def molecules(symbols="SiCl4", n=20, seed=0, calc=True):
    """Jittered SiCl4-like molecules with Lennard-Jones energies/forces (a real calculator, any element)."""
    rng = np.random.default_rng(seed)
    base = np.array([[0, 0, 0], [1.2, 1.2, 1.2], [-1.2, -1.2, 1.2], [-1.2, 1.2, -1.2], [1.2, -1.2, -1.2]], float)
    out = []
    for _ in range(n):
        at = Atoms(symbols, positions=base[: len(Atoms(symbols))] + rng.normal(0, 0.05, (len(Atoms(symbols)), 3)))
        if calc:
            at.calc = LennardJones(sigma=1.8, epsilon=0.1, rc=6.0)
            e, f = at.get_potential_energy(), at.get_forces()
            at.calc = SinglePointCalculator(at, energy=e, forces=f)
        out.append(at)
    return out


def test_user_extxyz_new_element_loads_and_splits(tmp_path):
    path = tmp_path / "sicl4.xyz"
    write(path, molecules(n=50), format="extxyz")
    ds = load_dataset(str(path))
    assert [len(ds["train"]), len(ds["val"]), len(ds["test"])] == [40, 5, 5]
    assert ds["train"].elements() == [14, 17]
    assert "80/10/10" in ds.meta["split_rule"] and ds.meta["split_seed"] == 1
    idx = np.concatenate([ds[s].info["source_index"] for s in ("train", "val", "test")])
    assert sorted(idx.tolist()) == list(range(50))
    again = load_dataset(str(path))
    np.testing.assert_array_equal(again["test"].info["source_index"], ds["test"].info["source_index"])
    assert load_dataset(str(path), split=2)["test"].info["source_index"].tolist() != \
        ds["test"].info["source_index"].tolist()
    stats = compute_stats(ds["train"], 5.0)
    assert stats.elements == [14, 17] and stats.element_counts == {14: 40, 17: 160}
    g = graphs_for(ds, "train", 5.0)
    assert len(g) == 40 and g[0].numbers.tolist() == [14, 17, 17, 17, 17]


def test_user_file_with_separate_test_and_custom_keys(tmp_path):
    train, test = molecules("SiCl4", 20, 1), molecules("SiCl4", 6, 2)
    for at in train + test:  # store labels under custom names, as REF_energy/REF_forces
        at.info["REF_energy"] = at.get_potential_energy()
        at.arrays["REF_forces"] = at.get_forces()
        at.calc = None
    write(tmp_path / "train.extxyz", train, format="extxyz")
    write(tmp_path / "test.extxyz", test, format="extxyz")
    opts = "?energy_key=REF_energy&forces_key=REF_forces"
    with pytest.raises(UserError, match=r"train\.extxyz.*energy_key"):
        load_dataset(str(tmp_path / "train.extxyz"))
    ds = load_dataset(str(tmp_path / "train.extxyz") + opts, test=str(tmp_path / "test.extxyz") + opts)
    assert [len(ds["train"]), len(ds["val"]), len(ds["test"])] == [18, 2, 6]
    assert ds["test"].energy[0] == pytest.approx(test[0].info["REF_energy"])
    with pytest.raises(UserError, match="did you mean 'energy_key'"):
        load_dataset(str(tmp_path / "train.extxyz") + "?enrgy_key=REF_energy")


def test_extxyz_without_forces_refused(tmp_path):
    path = tmp_path / "noforces.xyz"
    ats = molecules(n=5)
    for at in ats:
        at.calc = SinglePointCalculator(at, energy=at.get_potential_energy())
    write(path, ats, format="extxyz")
    with pytest.raises(UserError, match=r"noforces\.xyz.*no forces.*forces_key"):
        load_dataset(str(path))


def test_nan_in_forces_and_energy_refused(tmp_path):
    ats = molecules(n=5)
    f = ats[3].get_forces().copy()
    f[2, 1] = np.nan
    ats[3].calc = SinglePointCalculator(ats[3], energy=ats[3].get_potential_energy(), forces=f)
    write(tmp_path / "nan.xyz", ats, format="extxyz")
    with pytest.raises(UserError, match=r"nan\.xyz: non-finite value .* forces of frame 3"):
        load_dataset(str(tmp_path / "nan.xyz"))
    z = np.array([6, 1, 1, 1, 1])
    pos = np.random.default_rng(0).normal(size=(4, 5, 3))
    np.savez(tmp_path / "inf.npz", z=z, R=pos, E=np.array([1.0, np.inf, 2.0, 3.0]), F=np.zeros((4, 5, 3)))
    with pytest.raises(UserError, match=r"inf\.npz: non-finite value .* energy of frame 1"):
        load_dataset(str(tmp_path / "inf.npz"))


def test_missing_file(tmp_path):
    with pytest.raises(UserError, match=r"dataset file not found: .*nothere\.xyz"):
        load_dataset(str(tmp_path / "nothere.xyz"))


def test_truncated_npz(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, z=np.array([1, 1]), R=np.zeros((3, 2, 3)), E=np.zeros(3), F=np.zeros((3, 2, 3)))
    data = good.read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.npz: truncated or corrupt npz"):
        load_dataset(str(tmp_path / "cut.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file at all")
    with pytest.raises(UserError, match=r"junk\.npz: truncated or corrupt npz"):
        load_dataset(str(tmp_path / "junk.npz"))


def test_npz_key_conventions(tmp_path):
    rng = np.random.default_rng(1)
    pos, z = rng.normal(size=(10, 3, 3)), np.array([8, 1, 1])
    e, f = rng.normal(size=10), rng.normal(size=(10, 3, 3))
    np.savez(tmp_path / "sgdml.npz", z=z, R=pos, E=e[:, None], F=f)
    np.savez(tmp_path / "rmd17.npz", nuclear_charges=z, coords=pos, energies=e, forces=f, old_indices=np.arange(10))
    np.savez(tmp_path / "nequip.npz", atomic_numbers=z, pos=pos, energy=e[:, None], forces=f)
    ds = {k: load_dataset(str(tmp_path / f"{k}.npz")) for k in ("sgdml", "rmd17", "nequip")}
    all_e = {k: np.sort(np.concatenate([d[s].energy for s in ("train", "val", "test")])) for k, d in ds.items()}
    np.testing.assert_allclose(all_e["sgdml"], np.sort(e) * KCAL_PER_MOL_IN_EV)  # kcal/mol by convention
    np.testing.assert_allclose(all_e["rmd17"], np.sort(e) * KCAL_PER_MOL_IN_EV)
    np.testing.assert_allclose(all_e["nequip"], np.sort(e))  # eV by convention
    assert "old_indices" in ds["rmd17"]["train"].info
    ev = load_dataset(str(tmp_path / "sgdml.npz") + "?units=eV")
    assert ev.meta["source_units"]["energy"] == "eV"
    np.savez(tmp_path / "odd.npz", coordinates=pos, charges=z)
    with pytest.raises(UserError, match=r"odd\.npz: unrecognised npz keys \['charges', 'coordinates'\]"):
        load_dataset(str(tmp_path / "odd.npz"))
    np.savez(tmp_path / "nof.npz", z=z, R=pos, E=e)
    with pytest.raises(UserError, match=r"nof\.npz: npz key 'F' missing"):
        load_dataset(str(tmp_path / "nof.npz"))


def test_npz_mismatched_atom_counts(tmp_path):
    pos = np.zeros((4, 5, 3))
    np.savez(tmp_path / "bad_z.npz", z=np.array([6, 1, 1, 1]), R=pos, E=np.zeros(4), F=np.zeros((4, 5, 3)))
    with pytest.raises(UserError, match=r"bad_z\.npz: atom counts disagree"):
        load_dataset(str(tmp_path / "bad_z.npz"))
    np.savez(tmp_path / "bad_f.npz", z=np.array([6, 1, 1, 1, 1]), R=pos, E=np.zeros(4), F=np.zeros((4, 4, 3)))
    with pytest.raises(UserError, match=r"bad_f\.npz: atom counts disagree: 'F'"):
        load_dataset(str(tmp_path / "bad_f.npz"))


def test_missing_builtin_data_says_how_to_get_it(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match=r"rmd17:aspirin: 2 file\(s\) not found \(rmd17/rmd17_aspirin_train_01\.npz, .*MARA_BENCH_DATA.*download"):
        load_dataset("rmd17:aspirin", data_dir=str(empty))
    with pytest.raises(UserError, match="data directory not found"):
        load_dataset("rmd17:aspirin", data_dir=str(tmp_path / "nope"))


def test_compute_stats_least_squares_and_isolated_atoms():
    rng = np.random.default_rng(0)
    e0 = {1: -13.6, 6: -1029.5, 8: -2042.0}
    parts = []
    for formula in ("CH4", "H2O", "CO2", "C2H6O", "CH2O"):  # varied compositions -> E0s identifiable
        ats = Atoms(formula)
        n = len(ats)
        pos = rng.normal(0, 1.0, (6, n, 3))
        energy = sum(e0[z] for z in ats.numbers) + rng.normal(0, 1e-3, 6) * n
        parts.append(Frames.from_arrays(ats.numbers, pos, energy, rng.normal(0, 0.5, (6, n, 3))))
    frames = Frames.concatenate(parts)
    st = compute_stats(frames, 3.0)
    assert st.e0s_source == "least_squares" and st.elements == [1, 6, 8]
    for z, v in e0.items():
        assert st.e0s[z] == pytest.approx(v, abs=0.02)
    assert abs(st.energy_per_atom_mean) < 1e-3 and st.energy_per_atom_std < 3e-3
    assert st.force_rms == pytest.approx(np.sqrt(np.mean(frames.forces**2)))
    iso = compute_stats(frames, 3.0, isolated_atom_energies={1: -13.0, 8: -2040.0})  # C fitted by least squares
    assert iso.e0s[1] == -13.0 and iso.e0s[8] == -2040.0 and iso.e0s_source == "isolated_atoms+least_squares"
    graphs = frames.to_graphs(3.0)
    assert st.avg_num_neighbors == pytest.approx(sum(g.edge_index.shape[1] for g in graphs) / len(frames.numbers))


def test_graph_cache_key_changes_with_data_and_r_max(tmp_path):
    path = tmp_path / "m.xyz"
    write(path, molecules(n=10), format="extxyz")
    ds = load_dataset(str(path))
    k = graph_cache_key(ds["train"], "train", 5.0)
    assert k == graph_cache_key(ds["train"], "train", 5.0)
    assert k != graph_cache_key(ds["train"], "train", 5.5)
    assert k != graph_cache_key(ds["train"], "val", 5.0)
    moved = ds["train"].subset(range(len(ds["train"])))
    moved.positions[0, 0] += 1e-6
    assert k != graph_cache_key(moved, "train", 5.0)
    files = list((tmp_path / "cache" / "graphs").glob("*.npz"))
    graphs_for(ds, "train", 5.0)
    graphs_for(ds, "train", 3.0)
    assert len(list((tmp_path / "cache" / "graphs").glob("*.npz"))) == len(files) + 2


def test_periodic_user_file_uses_build_graph(tmp_path):
    from ase.build import bulk

    ats = []
    for k in range(4):
        at = bulk("Si", "diamond", a=5.43).repeat((2, 1, 1))
        at.rattle(0.01, seed=k)
        at.calc = LennardJones(sigma=2.0, epsilon=0.1, rc=5.0)
        at.calc = SinglePointCalculator(at, energy=at.get_potential_energy(), forces=at.get_forces())
        ats.append(at)
    write(tmp_path / "si.xyz", ats, format="extxyz")
    ds = load_dataset(str(tmp_path / "si.xyz"))
    assert ds["train"].pbc.all()
    g = graphs_for(ds, "train", 4.0)
    assert np.abs(g[0].unit_shifts).sum() > 0  # periodic images present
