"""mara_bench.nn.mara: symmetry, smoothness, gradients, parameter counts and equality with torch-harmonics AttentionS2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mara_bench.errors import UserError
from mara_bench.nn.mara import (
    MARA,
    ReferenceMARA,
    control_param_count,
    paper_param_count,
    parameter_table,
    reference_attention,
)
from mara_bench.nn.s2grid import grid_points, grid_weights
from mara_bench.nn.symmetry import random_rotations

F64 = torch.float64
pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


def randomize_(module, seed=0, scale=0.5):
    """Random values for every parameter (default init makes the paper gate constant: mean_c LayerNorm(z) = 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=F64).to(p) * scale)
    return module


def edges(E=40, D=16, dtype=F64, seed=1):
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(E, D, generator=g, dtype=F64).to(dtype)
    d = torch.randn(E, 3, generator=g, dtype=F64)
    d = d / d.norm(dim=-1, keepdim=True) * (0.8 + 3.5 * torch.rand(E, 1, generator=g, dtype=F64))
    return m, d.to(dtype)


def mara(variant="paper", D=16, dtype=F64, seed=0, **kw):
    return randomize_(MARA(D, variant, **kw).to(dtype), seed)


# --------------------------------------------------------------------------- interface
@pytest.mark.parametrize("variant", ["paper", "control"])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_forward_contract_cpu(variant, dtype):
    M = mara(variant, dtype=dtype, scalar_slice=slice(0, 4))
    m, d = edges(dtype=dtype)
    out, gates = M(m, d)
    assert out.shape == m.shape and gates.shape == (m.shape[0], 1)
    assert out.dtype == dtype and gates.dtype == dtype
    assert bool(((gates > 0) & (gates < 1)).all())
    assert torch.allclose(out, m + gates * m)
    assert M.last_gates is not None and not M.last_gates.requires_grad
    assert torch.equal(M.last_gates, gates.detach())
    assert float(gates.detach().std()) > 1e-4  # the gate depends on the edge


# --------------------------------------------------------------------------- scale (the ablation ladder's constant gate)
def test_scale_is_one_learned_constant_per_module():
    M = mara("scale", D=12, seed=3)
    assert sum(p.numel() for p in M.parameters()) == 1
    m, d = edges(E=40, D=12)
    out, gates = M(m, d)
    assert gates.shape == (40, 1) and bool((gates == gates[0]).all())  # the same α for every edge
    assert torch.allclose(gates, torch.sigmoid(M.gate_logit).expand(40, 1))
    assert torch.allclose(out, m * (1 + gates))
    out.square().sum().backward()
    assert M.gate_logit.grad is not None and float(M.gate_logit.grad.abs()) > 0  # it learns


def test_scale_starts_where_paper_starts():
    """paper's gate at initialisation is exactly sigmoid(readout bias) (a constant); scale draws its logit from the
    same distribution, U(-1/sqrt(K), 1/sqrt(K))."""
    m, d = edges(E=30, D=16)
    K = 32
    logits = []
    for s in range(200):
        torch.manual_seed(s)
        P = MARA(16, "paper").to(F64)
        _, g = P(m, d)
        assert torch.allclose(g, torch.sigmoid(P.readout.bias).expand(30, 1), atol=1e-12)
        torch.manual_seed(s)
        logits.append(float(MARA(16, "scale").gate_logit))
    bound = 1 / K**0.5
    assert max(abs(x) for x in logits) <= bound and np.std(logits) > 0.5 * bound / 3**0.5


def test_bad_inputs():
    with pytest.raises(UserError, match="did you mean"):
        MARA(8, "papr")
    with pytest.raises(UserError, match="heads"):
        MARA(8, hidden=32, heads=3)
    with pytest.raises(UserError, match="grid"):
        MARA(8, grid=(1, 8))
    M = MARA(8)
    with pytest.raises(ValueError, match=r"\[E, 8\]"):
        M(torch.zeros(3, 9), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="to\\(dtype\\)"):
        M(torch.zeros(3, 8, dtype=F64), torch.ones(3, 3, dtype=F64))
    assert MARA(8, "on").variant == "paper"


def test_grid_buffers_follow_to_and_stay_exact():
    M = MARA(8).float().double()  # a float32 round trip must not leave float32-rounded grid constants
    assert M.grid_u.dtype == F64 and torch.equal(M.grid_u, grid_points(4, 8))
    assert torch.equal(M.log_w, torch.log(grid_weights(4, 8)))
    assert M.float().grid_u.dtype == torch.float32
    assert "grid_u" not in M.state_dict()


# --------------------------------------------------------------------------- parameter counts
def test_paper_parameter_counts_match_the_issue():
    assert n_params(MARA(4096, "paper")) == paper_param_count(4096) == 135_745
    assert n_params(MARA(10240, "paper")) == paper_param_count(10240) == 332_353
    for D, C, grid in [(16, 8, (2, 4)), (100, 16, (8, 16))]:
        assert n_params(MARA(D, "paper", hidden=C, grid=grid)) == paper_param_count(D, C, grid)
    assert n_params(MARA(64, heads=4)) == n_params(MARA(64, heads=1))


@pytest.mark.parametrize("D,scalars,hidden,grid", [(4096, 256, 32, (4, 8)), (10240, 512, 32, (4, 8)), (16, None, 32, (4, 8)),
                                                   (128, 32, 32, (8, 16)), (48, 8, 16, (4, 8)), (4096, None, 32, (4, 8))])
def test_control_parameter_count_matches_paper_within_10_percent(D, scalars, hidden, grid):
    sl = None if scalars is None else slice(0, scalars)
    c = MARA(D, "control", hidden=hidden, grid=grid, scalar_slice=sl)
    p = paper_param_count(D, hidden, grid)
    assert n_params(c) == control_param_count((scalars or D) + 8, c.mlp_width)
    assert abs(n_params(c) - p) / p <= 0.10, (n_params(c), p)


def test_parameter_table_lines():
    lines = parameter_table()
    text = "\n".join(lines)
    print(text)
    assert "135,745" in text and "332,353" in text and "468,098" in text
    assert text.count("control") >= 2


# --------------------------------------------------------------------------- symmetry
@pytest.mark.parametrize("variant", ["paper", "control"])
def test_translation_invariance_of_gates(variant):
    M = mara(variant)
    g = torch.Generator().manual_seed(3)
    pos = torch.randn(6, 3, generator=g, dtype=F64) * 2
    s, r = torch.tensor([0, 1, 2, 3, 4, 5, 0, 2]), torch.tensor([1, 2, 3, 4, 5, 0, 3, 5])
    m, _ = edges(E=len(s))
    a0 = M.gates(m, pos[s] - pos[r])
    t = torch.tensor([3.7, -12.25, 5.0], dtype=F64)
    a1 = M.gates(m, (pos + t)[s] - (pos + t)[r])
    assert float((a1 - a0).abs().max()) <= 1e-12


@pytest.mark.parametrize("variant", ["paper", "control"])
def test_edge_permutation_equivariance(variant):
    M = mara(variant)
    m, d = edges(E=50)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    out0, a0 = M(m, d)
    out1, a1 = M(m[perm], d[perm])
    assert float((a1 - a0[perm]).abs().max()) <= 1e-12
    assert float((out1 - out0[perm]).abs().max()) <= 1e-12


def _message_with_vectors(E, n_scalar, n_vec, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(E, n_scalar, generator=g, dtype=F64), torch.randn(E, n_vec, 3, generator=g, dtype=F64)


def test_control_gates_are_rotation_invariant():
    E, ns, nv = 60, 4, 4
    M = mara("control", D=ns + 3 * nv, scalar_slice=slice(0, ns))
    s, v = _message_with_vectors(E, ns, nv)
    _, d = edges(E=E)
    a0 = M.gates(torch.cat([s, v.reshape(E, -1)], 1), d)
    for R in random_rotations(4, seed=1):
        for Q in (R, -R):
            a1 = M.gates(torch.cat([s, (v @ Q.t()).reshape(E, -1)], 1), d @ Q.t())
            assert float((a1 - a0).abs().max()) <= 1e-12


def test_paper_gates_rotation_error_is_measured():
    E, ns, nv = 200, 4, 4
    M = mara("paper", D=ns + 3 * nv)
    s, v = _message_with_vectors(E, ns, nv)
    _, d = edges(E=E)
    a0 = M.gates(torch.cat([s, v.reshape(E, -1)], 1), d)
    errs = [float((M.gates(torch.cat([s, (v @ R.t()).reshape(E, -1)], 1), d @ R.t()) - a0).abs().max())
            for R in random_rotations(4, seed=1)]
    print(f"paper gate rotation error (random weights, 4x8): max {max(errs):.3e}, gate std {float(a0.std()):.3e}")
    assert max(errs) > 1e-8  # not invariant: the grid and readout are fixed in the lab frame (spec)


def test_continuous_limit_rotation_error_falls_with_grid():
    """W_p = 0, readout w ∝ ω, invariant-only features in W_h: the gate approximates a rotation-invariant double
    integral over S², so its rotation error must shrink as the grid is refined."""
    D, E = 8, 40
    base = randomize_(MARA(D, "paper").double(), seed=1)
    shared = {k: v for k, v in base.state_dict().items() if not k.startswith("readout")}
    m, d = edges(E=E, D=D, seed=2)  # m plays the role of l = 0 features: unchanged by the rotation
    errors = []
    for H, W in [(4, 8), (8, 16), (16, 32)]:
        M = MARA(D, "paper", grid=(H, W)).double()
        M.load_state_dict(shared, strict=False)
        with torch.no_grad():
            M.w_p.weight.zero_()
            M.readout.weight.copy_(grid_weights(H, W)[None] * (2.0 / (4 * math.pi)))
            M.readout.bias.fill_(0.1)
        a0 = M.gates(m, d)
        errors.append(max(float((M.gates(m, d @ R.t()) - a0).abs().max()) for R in random_rotations(3, seed=2)))
    print("continuous-limit rotation error 4x8, 8x16, 16x32:", ", ".join(f"{e:.3e}" for e in errors))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.5 * errors[0]


# --------------------------------------------------------------------------- gradients and smoothness
@pytest.mark.parametrize("variant", ["paper", "control"])
def test_gradcheck_and_gradgradcheck(variant):
    M = mara(variant, D=4, hidden=4, grid=(3, 4), scalar_slice=slice(0, 2))
    m, d = edges(E=2, D=4)
    m.requires_grad_(True)
    d.requires_grad_(True)
    w = torch.randn(4, dtype=F64, generator=torch.Generator().manual_seed(5))

    def f(m, d):  # a scalar per edge keeps the (numerical) second-derivative check fast
        return M(m, d)[0] @ w

    assert torch.autograd.gradcheck(f, (m, d), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(f, (m, d), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("impl", ["folded", "fused", "matmul"])
def test_force_training_double_backward(impl):
    """Energy from gated messages, forces = -dE/dx with create_graph, loss on forces -> finite parameter grads."""
    M = mara("paper", D=8).set_impl(impl)
    pos = torch.randn(5, 3, dtype=F64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    s, r = torch.tensor([0, 1, 2, 3, 4, 1]), torch.tensor([1, 2, 3, 4, 0, 3])
    d = pos[s] - pos[r]
    m = torch.cat([d.norm(dim=-1, keepdim=True) ** k for k in range(8)], 1) * 0.3
    energy = M(m, d)[0].sum()
    (forces,) = torch.autograd.grad(-energy, pos, create_graph=True)
    (forces**2).sum().backward()
    grads = [p.grad for p in M.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(M.w_h.weight.grad.abs().sum()) > 0 and float(M.w_f.weight.grad.abs().sum()) > 0


def test_distance_is_finite_at_the_antipode():
    """d along -z points straight at the south-pole grid points: ρ = 0 there, gradients must stay finite."""
    M = mara("paper", D=4)
    d = torch.tensor([[0.0, 0.0, 1.5], [0.0, 0.0, -2.0]], dtype=F64, requires_grad=True)
    rho = M.distances(d)
    assert float(rho.min()) < 1e-5 and float(rho.max()) <= 2 * 2.0 + 1e-12
    m = torch.randn(2, 4, dtype=F64)
    (g,) = torch.autograd.grad(M(m, d)[0].sum(), d, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), d)
    assert torch.isfinite(g).all() and torch.isfinite(gg).all()


def poly_envelope(x, p=6):
    return 1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1) - p * (p + 1) / 2 * x ** (p + 2)


@pytest.mark.parametrize("variant", ["paper", "control"])
def test_energy_is_continuous_when_an_edge_crosses_r_max(variant):
    r_max = 5.0
    M = mara(variant, D=8, r_max=r_max)
    m, d = edges(E=6, D=8)
    u = torch.tensor([[0.3, -0.5, 0.81]], dtype=F64)
    u = u / u.norm()

    def energy(r):
        dd = torch.cat([d, u * r])
        rr = dd.norm(dim=-1, keepdim=True)
        env = torch.where(rr < r_max, poly_envelope(rr / r_max), torch.zeros_like(rr))
        mm = torch.cat([m, torch.full((1, 8), 0.7, dtype=F64)])
        keep = (rr < r_max).squeeze(1)  # an edge beyond r_max is not in the graph at all
        return float((env * M(mm, dd)[0])[keep].sum())

    inside, outside = energy(r_max - 1e-6), energy(r_max + 1e-6)
    assert abs(inside - outside) <= 1e-9
    assert abs(energy(r_max - 0.5) - outside) > 1e-6  # the probe edge does contribute when well inside


# --------------------------------------------------------------------------- equality with torch-harmonics
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (F64, 1e-10)])
@pytest.mark.parametrize("heads", [1, 2])
@pytest.mark.parametrize("impl", ["fused", "matmul", "sdpa"])
def test_attention_equals_torch_harmonics_attention_s2(dtype, tol, heads, impl):
    M = mara("paper", dtype=dtype, heads=heads)
    M.attention_impl = impl
    m, d = edges(E=64, dtype=dtype)
    assert M.impl == "folded"  # gates() below: the default folded path
    h, t = M.tokens(m, d)
    E, K, C = t.shape
    att = reference_attention(M)
    theirs = att(t.transpose(1, 2).reshape(E, C, 4, 8)).reshape(E, C, K).transpose(1, 2)
    ours = M.attend(t)
    rel = float((ours - theirs).abs().max() / theirs.abs().max())
    assert rel <= tol, rel
    gates_ref = ReferenceMARA(M)(m, d)
    assert float((M.gates(m, d) - gates_ref).abs().max()) <= tol


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available: MARA CUDA checks skipped")
@pytest.mark.parametrize("variant", ["paper", "control"])
def test_cuda_matches_cpu(variant):
    M = mara(variant, dtype=F64)
    m, d = edges(dtype=F64)
    a_cpu = M.gates(m, d)
    Mc = M.to("cuda")
    assert Mc.grid_u.is_cuda
    out, a = Mc(m.cuda(), d.cuda())
    assert torch.allclose(a.cpu(), a_cpu, atol=1e-10)
    if variant == "paper":
        assert float((ReferenceMARA(Mc)(m.cuda(), d.cuda()) - a).abs().max()) <= 1e-10
