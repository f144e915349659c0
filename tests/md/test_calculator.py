"""The ASE calculator: forces are -dE/dx (finite differences), periodic systems, dtype, run-folder errors."""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from tiny_backbone import ElasticNetwork, MorsePair

from mara_bench.errors import UserError
from mara_bench.md.calculator import MaraBenchCalculator, load_run_model, resolve_run_dir


def fd_forces(atoms, h=1e-4):
    f = np.zeros((len(atoms), 3))
    for i in range(len(atoms)):
        for c in range(3):
            a = atoms.copy()
            a.calc = atoms.calc
            a.positions[i, c] += h
            ep = a.get_potential_energy()
            a.positions[i, c] -= 2 * h
            em = a.get_potential_energy()
            f[i, c] = -(ep - em) / (2 * h)
    return f


@pytest.mark.parametrize("system", ["molecule", "periodic"])
def test_forces_are_minus_energy_gradient(system):
    if system == "molecule":
        atoms = molecule("CH3CH2OH")
        atoms.rattle(0.05, seed=1)
        model = MorsePair(r_max=4.0)
    else:
        atoms = bulk("Si", "diamond", a=5.43).repeat((2, 1, 1))
        atoms.rattle(0.05, seed=2)
        model = MorsePair(r_max=4.0, r_eq=2.3)
    atoms.calc = MaraBenchCalculator(model, dtype="float64")
    f = atoms.get_forces()
    assert np.abs(f).max() > 1e-3  # a non-trivial test
    np.testing.assert_allclose(f, fd_forces(atoms), atol=1e-6)
    if system == "periodic":  # neighbours through the cell: translating an atom by a lattice vector changes nothing
        e0 = atoms.get_potential_energy()
        b = atoms.copy()
        b.calc = atoms.calc
        b.positions[0] += b.cell[0]
        assert abs(b.get_potential_energy() - e0) < 1e-10


def test_elastic_network_forces_and_float32():
    atoms = molecule("C6H6")
    model = ElasticNetwork(atoms.numbers, atoms.positions)
    atoms.rattle(0.03, seed=3)
    atoms.calc = MaraBenchCalculator(model, dtype="float64")
    np.testing.assert_allclose(atoms.get_forces(), fd_forces(atoms), atol=1e-6)
    e64 = atoms.get_potential_energy()
    b = atoms.copy()
    b.calc = MaraBenchCalculator(ElasticNetwork(atoms.numbers, molecule("C6H6").positions), dtype="float32")
    assert b.calc.model.r0.dtype.is_floating_point
    assert abs(b.get_potential_energy() - e64) < 1e-4 * max(1.0, abs(e64))
    assert b.get_forces().dtype == np.float64


def test_isolated_atom_and_recalculation_on_change():
    calc = MaraBenchCalculator(MorsePair(), dtype="float64")
    a = Atoms("H", positions=[[0, 0, 0]])
    a.calc = calc
    assert a.get_potential_energy() == 0.0
    b = Atoms("H2", positions=[[0, 0, 0], [0, 0, 1.0]])
    b.calc = calc
    e1 = b.get_potential_energy()
    b.positions[1, 2] = 1.2
    assert b.get_potential_energy() != e1
    assert calc.n_calls == 3


def test_run_folder_errors(tmp_path):
    with pytest.raises(UserError, match="no run folder"):
        resolve_run_dir("does-not-exist", tmp_path)
    (tmp_path / "mace-off-x").mkdir()
    (tmp_path / "mace-off-y").mkdir()
    with pytest.raises(UserError, match="ambiguous"):
        resolve_run_dir("mace-off", tmp_path)
    assert resolve_run_dir("mace-off-x", tmp_path) == tmp_path / "mace-off-x"
    with pytest.raises(UserError, match="config.json"):
        load_run_model(tmp_path / "mace-off-x")
    with pytest.raises(UserError, match="dtype"):
        MaraBenchCalculator(MorsePair(), dtype="float16")
