"""mara_bench.nn.symmetry: rotations, equivariance and permutation errors measured on toy energy models."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mara_bench.graph import build_graph, collate
from mara_bench.nn.symmetry import (
    equivariance_error,
    permutation_error,
    permute_batch,
    random_rotations,
    transform_batch,
)


def _batch():
    rng = np.random.default_rng(0)
    mol = build_graph([1, 6, 8, 1, 7], rng.uniform(0, 2.5, (5, 3)), r_max=4.0)
    cell = np.diag([3.1, 3.3, 3.6]) + 0.2 * rng.standard_normal((3, 3))
    crystal = build_graph([14, 14, 8, 8], rng.uniform(0, 3, (4, 3)) @ np.eye(3), r_max=3.0, cell=cell,
                          pbc=[True, True, True])
    assert crystal.unit_shifts.any(), "the periodic test system should have edges across the cell"
    return collate([mol, crystal], dtype=torch.float64)


def _energy_forces(energy_of_positions):
    """Wrap E(batch, positions) -> [G] into fn(batch) -> {energy, forces} with forces = -dE/dx."""

    def fn(batch):
        pos = batch.positions.clone().requires_grad_(True)
        e = energy_of_positions(batch, pos)
        (g,) = torch.autograd.grad(e.sum(), pos)
        return {"energy": e.detach(), "forces": -g}

    return fn


def pair_energy(batch, pos):
    """A Morse-like pair potential: exactly E(3)- and permutation-invariant."""
    r = torch.linalg.vector_norm(batch.edge_vectors(pos), dim=-1)
    z = batch.numbers.to(pos.dtype)
    phi = (1 - torch.exp(-(r - 1.5))) ** 2 * (1 + 0.1 * z[batch.edge_index[0]] * z[batch.edge_index[1]] / 50)
    return torch.zeros(batch.num_graphs, dtype=pos.dtype).index_add(0, batch.batch[batch.edge_index[1]], phi)


def chiral_energy(batch, pos):
    """Rotation-invariant pseudo-scalar (determinant of three bond vectors): flips sign under reflection."""
    out = []
    for g in range(batch.num_graphs):
        p = pos[batch.ptr[g]:batch.ptr[g + 1]]
        out.append(torch.linalg.det(torch.stack([p[1] - p[0], p[2] - p[0], p[3] - p[0]])))
    return torch.stack(out) + pair_energy(batch, pos)


def lab_frame_energy(batch, pos):
    """Breaks rotation invariance: depends on the laboratory x axis."""
    return pair_energy(batch, pos) + 0.1 * torch.zeros(batch.num_graphs, dtype=pos.dtype).index_add(
        0, batch.batch, pos[:, 0] ** 2)


def test_random_rotations_are_proper_seeded_and_distinct():
    R = random_rotations(8, seed=3)
    assert R.shape == (8, 3, 3) and R.dtype == torch.float64
    eye = torch.eye(3, dtype=torch.float64)
    assert torch.allclose(R @ R.transpose(1, 2), eye.expand(8, 3, 3), atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(8, dtype=torch.float64), atol=1e-12)
    assert torch.equal(R, random_rotations(8, seed=3))
    assert not torch.allclose(R, random_rotations(8, seed=4))
    assert (R[0] - R[1]).abs().max() > 1e-3
    assert random_rotations(2, seed=0, dtype=torch.float32).dtype == torch.float32


def test_transform_batch_keeps_periodic_edges_consistent():
    b = _batch()
    R = random_rotations(1, seed=1)[0]
    rb = transform_batch(b, R)
    assert torch.allclose(rb.edge_vectors(), b.edge_vectors() @ R.t(), atol=1e-12)
    assert torch.equal(rb.unit_shifts, b.unit_shifts)
    # the rotated shifts are still lattice translations of the rotated cell
    for g in range(b.num_graphs):
        e_of_g = b.batch[b.edge_index[1]] == g
        assert torch.allclose(rb.unit_shifts[e_of_g].to(torch.float64) @ rb.cell[g], rb.shifts[e_of_g], atol=1e-12)


def test_invariant_model_has_zero_errors():
    res = equivariance_error(_energy_forces(pair_energy), _batch(), n_rotations=3, seed=0, reflection=True)
    print("pair potential:", res)
    for k in ("energy_max_abs", "forces_max_abs", "rotation_forces_max_abs", "reflection_forces_max_abs"):
        assert res[k] <= 1e-12, (k, res[k])
    assert res["n_rotations"] == 3 and res["reflection"] is True
    perm = permutation_error(_energy_forces(pair_energy), _batch(), seed=0)
    assert perm["energy_max_abs"] <= 1e-12 and perm["forces_max_abs"] <= 1e-12


def test_lab_frame_model_is_caught():
    res = equivariance_error(_energy_forces(lab_frame_energy), _batch(), n_rotations=2)
    print("lab-frame model:", res)
    assert res["energy_max_abs"] > 1e-2 and res["forces_max_abs"] > 1e-2
    assert res["energy_mean_abs"] <= res["energy_max_abs"]


def test_reflection_is_measured_separately():
    fn = _energy_forces(chiral_energy)
    rot_only = equivariance_error(fn, _batch(), n_rotations=2, reflection=False)
    both = equivariance_error(fn, _batch(), n_rotations=2, reflection=True)
    assert rot_only["energy_max_abs"] <= 1e-12 and "reflection_energy_max_abs" not in rot_only
    assert both["rotation_energy_max_abs"] <= 1e-12
    assert both["reflection_energy_max_abs"] > 1e-3 and both["energy_max_abs"] > 1e-3


def test_permutation_is_exact_for_pair_model_and_caught_for_ordered_model():
    b = _batch()
    pb, atom_perm, edge_perm = permute_batch(b, seed=5)
    assert not torch.equal(atom_perm, torch.arange(len(atom_perm)))
    assert torch.equal(pb.batch, b.batch)  # atoms stay in their graph
    assert torch.allclose(pb.edge_vectors(), b.edge_vectors()[edge_perm], atol=1e-14)
    res = permutation_error(_energy_forces(chiral_energy), b, seed=5)  # uses atoms 0..3 by index: not invariant
    assert res["energy_max_abs"] > 1e-3


def test_float32_batches_are_measured_in_float64():
    seen = []

    def fn(batch):
        seen.append(batch.positions.dtype)
        return _energy_forces(pair_energy)(batch)

    equivariance_error(fn, _batch().to(dtype=torch.float32), n_rotations=1, reflection=False)
    assert set(seen) == {torch.float64}


def test_bad_model_output_is_a_clear_error():
    with pytest.raises(ValueError, match="energy"):
        equivariance_error(lambda b: {"forces": b.positions}, _batch(), n_rotations=1)
