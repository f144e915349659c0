"""The force-continuity probe (mara_bench.nn.continuity): it puts bonds exactly on MARA's cone points, passes smooth
models, flags a kinked one with the analytic jump, sees the `paper` gate's kink, and is in every run's metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_backbone import TinyPairModel

from mara_bench.graph import collate
from mara_bench.nn.continuity import (
    EPS,
    ROUNDOFF,
    align_rotation,
    cone_aligned,
    default_directions,
    force_continuity,
    model_grid,
    probe_edges,
    summary_line,
)
from mara_bench.nn.mara import MARA
from mara_bench.nn.s2grid import grid_points
from mara_bench.testing import random_molecule

F64 = torch.float64
R_MAX = 4.0


def molecules(n=2, seed=5):
    rng = np.random.default_rng(seed)
    return [random_molecule(k, rng, R_MAX) for k in (5, 6)[:n]]


def pair_energy(batch, pos, cone=0.0, cone_dir=None):
    """Morse-like pair energy with a smooth cosine cutoff; plus ``cone`` · Σ_e r_e·|u + d̂_e| (= MARA's ρ for grid
    direction u, d = p_sender − p_receiver), which has a cone point where d̂_e = −u."""
    vec = batch.edge_vectors(pos)
    r = vec.norm(dim=-1)
    x = torch.exp(-(r - 1.2))
    e = 0.5 * 0.5 * (x * x - 2 * x) * 0.5 * (torch.cos(math.pi * r / R_MAX) + 1)
    if cone:
        u = torch.as_tensor(cone_dir, dtype=pos.dtype)
        d_hat = -vec / r[:, None]
        e = e + cone * r * (u + d_hat).norm(dim=-1)
    return torch.zeros(batch.num_graphs, dtype=pos.dtype).index_add(0, batch.batch[batch.edge_index[1]], e)


def pair_fn(cone=0.0, cone_dir=None):
    def fn(batch):
        pos = batch.positions.detach().requires_grad_(True)
        energy = pair_energy(batch, pos, cone, cone_dir)
        return {"energy": energy.detach(), "forces": -torch.autograd.grad(energy.sum(), pos)[0]}

    return fn


def test_rotation_aligns_vectors():
    rng = np.random.default_rng(0)
    for _ in range(20):
        v, u = rng.normal(size=3), rng.normal(size=3)
        u /= np.linalg.norm(u)
        R = align_rotation(v, u)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-14) and np.isclose(np.linalg.det(R), 1.0)
        assert np.allclose(R @ (v / np.linalg.norm(v)), u, atol=1e-14)
    for u in (np.array([0.0, 0.0, 1.0]), np.array([0.6, 0.0, -0.8])):  # parallel and antiparallel inputs
        for v in (u, -u):
            R = align_rotation(3 * v, u)
            assert np.allclose(R @ v, u, atol=1e-14) and np.isclose(np.linalg.det(R), 1.0)


@pytest.mark.parametrize("k", [0, 9, 20, 31])
def test_aligned_edge_sits_on_the_cone_point_of_mara(k):
    """After cone_aligned, MARA's own ρ_ek (d = −edge_vectors, the adapters' convention) is 0 for that edge and
    direction — the apex — while the structure is only rigidly rotated."""
    g = molecules(1)[0]
    e = probe_edges(g, 1)[0]
    u = grid_points(4, 8)[k].numpy()
    ga = cone_aligned(g, e, u)
    dist = lambda p: np.linalg.norm(p[:, None] - p[None], axis=-1)  # noqa: E731
    assert np.allclose(dist(ga.positions), dist(g.positions), atol=1e-12)
    b = collate([ga], F64)
    d = -b.edge_vectors()
    mara = MARA(8, "paper", hidden=8, grid=(4, 8)).double()
    rho = mara.distances(d)
    assert float(rho[e, k]) <= 1e-5 * float(d[e].norm())  # at the RHO_EPS clamp: r·1e-6
    assert float(torch.cat([rho[:e], rho[e + 1:]])[:, k].min()) > 1e-3  # no other edge is at that apex
    assert np.allclose(ga.positions[ga.edge_index[1, e]] - ga.positions[ga.edge_index[0, e]],
                       np.linalg.norm(d[e].numpy()) * u, atol=1e-14)


def test_probe_edges_shortest_distinct_pairs():
    g = molecules(1)[0]
    edges = probe_edges(g, 3)
    pairs = {tuple(sorted(g.edge_index[:, e])) for e in edges}
    r = np.linalg.norm(g.positions[g.edge_index[1]] - g.positions[g.edge_index[0]], axis=-1)
    assert len(pairs) == 3 and float(r[edges[0]]) == float(r.min())
    assert default_directions((4, 8)) == [0, 9] and default_directions((2, 4)) == [0, 5]


def test_smooth_model_is_continuous_and_jumps_shrink_linearly():
    res = force_continuity(pair_fn(), molecules())
    assert res["continuous"] and res["jump_limit_eV_A"] < 1e-10, res
    j = res["jump_max_eV_A"]
    assert res["eps_A"] == list(EPS) and len(j) == len(EPS) and j[0] > 0
    for a, b in zip(j, j[1:], strict=False):
        assert 0.09 < b / a < 0.11  # linear in ε (ε steps of 10)
    assert res["shrink"] == pytest.approx(EPS[-1] / EPS[0], rel=0.05)
    assert res["n_probes"] == 2 * 2 * 2 and len(res["probes"]) == 8 and res["grid"] == [4, 8]
    assert "continuous" in summary_line(res)


def test_verdict_is_scale_free():
    """The floor follows the model's own ε³ residual: a very stiff smooth model (10⁴ × the pair energy, limit ~4e-9,
    far above round-off) is continuous; a kink 100× below the floor is not resolved, one 50× above it is; on the
    soft model (floor = ROUNDOFF) a kink of 1e-10 eV/Å is already found."""
    u = grid_points(4, 8)[9].numpy()

    def model(scale, cone):
        def fn(batch):
            pos = batch.positions.detach().requires_grad_(True)
            e = scale * pair_energy(batch, pos) + pair_energy(batch, pos, cone, u) - pair_energy(batch, pos)
            return {"energy": e.detach(), "forces": -torch.autograd.grad(e.sum(), pos)[0]}

        return fn

    stiff = force_continuity(model(1e4, 0.0), molecules())
    assert stiff["continuous"] and stiff["jump_limit_eV_A"] > 1e-9 and stiff["floor_eV_A"] > 1e-8
    assert force_continuity(model(1e4, 1e-12), molecules())["continuous"]
    kinked = force_continuity(model(1e4, 1e-6), molecules())
    assert not kinked["continuous"] and kinked["n_discontinuous"] == 4  # the 4 probes at direction 9
    soft = force_continuity(model(1.0, 1e-10), molecules())
    assert not soft["continuous"] and soft["floor_eV_A"] == ROUNDOFF


def test_kinked_model_is_flagged_with_the_analytic_jump():
    """E += c·ρ_k for one grid direction: moving the receiver by s perpendicular to the aligned edge gives
    ρ ≈ |s|, so the force on it jumps by 2c along the displacement (and by −2c on the sender)."""
    c, k = 0.01, 9
    u = grid_points(4, 8)[k].numpy()
    res = force_continuity(pair_fn(c, u), molecules(), directions=[k])
    assert not res["continuous"]
    from mara_bench.nn.continuity import _perpendicular

    expected = 2 * c * float(np.abs(_perpendicular(u)).max())
    assert res["jump_limit_eV_A"] == pytest.approx(expected, rel=1e-4)
    assert res["jump_eV_A"] == pytest.approx(expected, rel=1e-2)  # does not shrink with ε
    assert res["shrink"] > 0.3
    assert "DISCONTINUOUS" in summary_line(res)
    # the same kink is found with the default directions (it is at k = 9, which is one of them) ...
    assert not force_continuity(pair_fn(c, u), molecules())["continuous"]
    # ... but not where there is no cone: a kink at another direction is not crossed by these probes
    assert force_continuity(pair_fn(c, u), molecules(), directions=[0])["continuous"]


def test_mara_paper_gate_is_discontinuous_and_control_is_not():
    torch.manual_seed(0)
    fns = {}
    for variant in ("control", "paper"):
        mara = MARA(4, variant, hidden=8, grid=(4, 8), r_max=R_MAX).double()
        with torch.no_grad():
            for p in mara.parameters():
                p.add_(0.3 * torch.randn_like(p))

        def fn(batch, mara=mara):
            pos = batch.positions.detach().requires_grad_(True)
            vec = batch.edge_vectors(pos)
            r = vec.norm(dim=-1)
            x = torch.exp(-(r - 1.2))
            pair = (x * x - 2 * x) * 0.5 * (torch.cos(math.pi * r / R_MAX) + 1)
            m, _ = mara(torch.stack([pair, pair * r, pair * x, pair * x * x], -1), -vec)
            e = torch.zeros(batch.num_graphs, dtype=F64).index_add(0, batch.batch[batch.edge_index[1]], m[:, 0])
            return {"energy": e.detach(), "forces": -torch.autograd.grad(e.sum(), pos)[0]}

        fns[variant] = fn
    control = force_continuity(fns["control"], molecules())
    assert control["continuous"] and control["jump_limit_eV_A"] < 1e-9
    paper = force_continuity(fns["paper"], molecules())
    assert paper["jump_limit_eV_A"] > 1e-5 and not paper["continuous"] and paper["n_discontinuous"] >= 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="decreasing"):
        force_continuity(pair_fn(), molecules(1), eps=(1e-5, 1e-4))
    with pytest.raises(ValueError, match="decreasing"):
        force_continuity(pair_fn(), molecules(1), eps=(1e-4, 1e-5))
    with pytest.raises(ValueError, match="outside"):
        force_continuity(pair_fn(), molecules(1), directions=[32])


def test_model_grid_and_evaluate_run_block(tmp_path):
    """evaluate_run puts a force_continuity block into the metrics (probing the default grid for a model whose gate
    is not a MARA module)."""
    from mara_bench.run.evaluate import CONTINUITY_FRAMES, evaluate_run

    torch.manual_seed(0)
    m = TinyPairModel({1: -1.0, 6: -2.0, 8: -3.0}, r_max=R_MAX, hidden=8).double()
    assert model_grid(m) == (4, 8) and model_grid(TinyPairModel({}, mara="paper")) == (4, 8)
    mara_model = torch.nn.Module()
    mara_model.mara_modules = lambda: [MARA(4, "paper", hidden=8, grid=(6, 12))]
    assert model_grid(mara_model) == (6, 12)
    rng = np.random.default_rng(1)
    test = [random_molecule(5, rng, R_MAX) for _ in range(4)]
    for k, g in enumerate(test):
        g.energy, g.forces, g.index = 0.0, np.zeros_like(g.positions), k
    out = evaluate_run(m, {"test": test}, tmp_path, dtype=F64, device="cpu", batch_size=4, seed=0)
    fc = out["force_continuity"]
    assert fc["continuous"] and fc["jump_limit_eV_A"] < 1e-9 and fc["frames"] == list(range(CONTINUITY_FRAMES))
    assert fc["dtype"] == "float64" and len(fc["jump_max_eV_A"]) == len(EPS)
