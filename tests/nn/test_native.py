"""mara_bench.nn.native: the C++ kernel of the folded gate (nn/csrc/folded_gate.cpp: distances, forms, grid pass,
readout) against its readable torch reference (MARA.distances, kernels._assemble_forms, kernels._grid_pass, the
readout) and torch-harmonics AttentionS2: values, the vector-Jacobian product and its derivatives (force training's
double backward) entry by entry, second derivatives through the gate in train and eval mode, gradcheck and
gradgradcheck; when it is used and when not; the fallback."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_mara import F64, edges, mara, randomize_
from test_mara_kernels import _derivatives, _max_rel

from mara_bench.nn import kernels, native
from mara_bench.nn.mara import ReferenceMARA

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


@pytest.fixture(scope="module")
def lib():
    if native._compiler() is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++) on PATH: the gate runs in torch ops (tested elsewhere)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a compiler is there, so the build must work: a warning fails the test
        assert native.library() is not None
    return native.library()


def _inputs(M, E, dtype, seed=0):
    """(consts, scale, (d, z, cw)) for E random edges of M: the kernel's inputs."""
    m, d = edges(E=E, D=M.message_dim, dtype=dtype, seed=seed)
    consts = (M.distinct_u, M.distinct_log_w, float(M.hidden), M.norm_tokens.eps, M.norm_attn.eps, M.norm_out.eps)
    with torch.no_grad():
        z, cv, scale = kernels._edge_scalars_one_head(M, M.w_h(m))
        xs = [x.contiguous() for x in (d, z, kernels._gate_constants(M, cv))]
    return consts, scale, xs


@pytest.mark.parametrize("dtype,tol", [(F64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("grid,E", [((4, 8), 37), ((3, 5), 16), ((4, 8), 1), ((5, 6), 0)])
def test_forward_vjp_and_its_derivatives_equal_the_torch_gate(lib, dtype, tol, grid, E):
    """Every lane count (a partial block, exactly one, a single edge, none), two grids, both dtypes; each gradient
    entry by entry: ∂/∂d and ∂/∂z per edge, ∂/∂cw summed over the edges; then the VJP's own derivatives for random
    cotangents (J v for gα, H v for the inputs) against autograd's double backward of the torch ops."""
    from mara_bench.nn.mara import RHO_EPS

    M = mara("paper", D=12, hidden=16, grid=grid, dtype=dtype, seed=1)
    randomize_(M, seed=2, scale=1.0)
    consts, scale, xs = _inputs(M, E, dtype, seed=3)
    nc = native._native_consts((*consts, scale, RHO_EPS), xs[0])
    xr = [x.clone().requires_grad_(True) for x in xs]
    K = M.distinct_u.shape[0]

    def torch_gate(d, z, cw):
        cv, w, c0 = cw.split([98, K, 1])
        ybar = kernels._grid_pass(consts, 1, M.distances(d, M.distinct_u), *kernels._assemble_forms(z, cv, scale))
        return torch.sigmoid(ybar @ w + c0)

    y = torch_gate(*xr)
    y_native = native.gate_forward(nc, *xs)
    assert y_native.shape == y.shape == (E,)
    if E == 0:
        return
    assert float(y.std() if E > 1 else (y - 0.5).abs()) > 1e-3  # not a comparison of constants
    assert _max_rel(y_native, y.detach()) <= tol
    gy = torch.randn(y.shape, dtype=dtype, generator=torch.Generator().manual_seed(4))
    want = torch.autograd.grad(y, xr, gy)
    got = native.gate_vjp(nc, *xs, gy)
    for name, a, b in zip(("d", "z", "cw"), got, want, strict=True):
        assert a.shape == b.shape
        assert _max_rel(a, b) <= tol, name
    gy.requires_grad_(True)
    first = torch.autograd.grad(torch_gate(*xr), xr, gy, create_graph=True)
    vs = [torch.randn(x.shape, dtype=dtype, generator=torch.Generator().manual_seed(5 + i)) for i, x in enumerate(xs)]
    want2 = torch.autograd.grad(first, [gy, *xr], vs)
    jv, hv = native.gate_vjp_tangent(nc, xs, vs, gy.detach())
    for name, a, b in zip(("gα", "d", "z", "cw"), [jv, *hv], want2, strict=True):
        assert a.shape == b.shape
        assert _max_rel(a, b) <= 5 * tol, name


def test_assembled_forms_are_the_forms():
    """_assemble_forms(_edge_scalars_one_head) is the per-edge forms' definition the kernel assembles in its lanes."""
    M = mara("paper", D=12, hidden=16, grid=(4, 8), seed=1)
    randomize_(M, seed=2, scale=1.0)
    m, _ = edges(E=9, D=12, seed=3)
    h = M.w_h(m)
    GV, BT, b, Ga, Go, g = kernels._edge_forms_one_head(M, h)
    for t in (GV, Ga, Go):  # Grams are symmetric
        assert torch.allclose(t, t.transpose(1, 2), atol=1e-12)
    n = h + (M.w_f.bias + M.w_p.bias)
    n = n - n.mean(-1, keepdim=True)
    assert torch.allclose(GV[:, 0, 0], (n * n).sum(-1), atol=1e-12)  # |n|²
    assert b.shape == (9, 5, 1) and g.shape == (9, 7) and BT.shape == (9, 5, 5)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("grid_hidden", [((4, 8), 32), ((3, 5), 8)])
def test_native_gate_equals_torch_harmonics_reference_to_second_derivatives(lib, grid_hidden, train):
    """With the native pass, gates, first derivatives and the second derivatives that force training takes stay
    within 1e-10 of AttentionS2 in float64, in train and in eval mode."""
    grid, hidden = grid_hidden
    M = mara("paper", D=12, hidden=hidden, grid=grid, seed=2).train(train)
    randomize_(M, seed=4, scale=1.2)
    m, d = edges(E=30, D=12, seed=3)
    calls = []
    orig = native.gate_forward
    try:
        native.gate_forward = lambda *a: calls.append(1) or orig(*a)
        a_f, g_f, gg_f = _derivatives(M.gates, M, m, d)
    finally:
        native.gate_forward = orig
    assert calls  # the native path ran
    ref = ReferenceMARA(M)
    a_r, g_r, gg_r = _derivatives(ref, M, m, d, att=ref.att)
    assert _max_rel(a_f, a_r) <= 1e-10
    worst = {k: max(_max_rel(g_f[k], g_r[k]), _max_rel(gg_f[k], gg_r[k])) for k in g_f}
    assert max(worst.values()) <= 1e-10, worst


def test_gradcheck_and_gradgradcheck_through_the_native_pass(lib):
    M = mara("paper", D=6, hidden=8, grid=(3, 4), seed=5)
    m, d = edges(E=19, D=6, seed=6)
    m.requires_grad_(True)
    d.requires_grad_(True)
    f = lambda m, d: kernels.folded_gates(M, m, d)  # noqa: E731
    assert torch.autograd.gradcheck(f, (m, d))
    assert torch.autograd.gradgradcheck(f, (m, d))


def test_which_path_runs(lib, monkeypatch):
    """Native: one head, CPU, ``folded`` (train and eval mode). Torch ops: several heads, ``folded-torch``,
    MARA_BENCH_NATIVE=0, under a dispatch mode (FLOP counting sees the torch ops)."""
    from torch.utils.flop_counter import FlopCounterMode

    calls = []
    orig = native.gate_forward
    monkeypatch.setattr(native, "gate_forward", lambda *a: calls.append(1) or orig(*a))
    m, d = edges(E=9, D=8, seed=1)

    def runs_native(M):
        calls.clear()
        M.gates(m, d)
        return bool(calls)

    M = mara("paper", D=8, hidden=8, grid=(3, 4))
    assert runs_native(M) and runs_native(M.eval())
    assert not runs_native(mara("paper", D=8, hidden=8, grid=(3, 4), heads=2).eval())
    assert not runs_native(M.set_impl("folded-torch"))
    assert runs_native(M.set_impl("folded"))
    with FlopCounterMode(display=False):
        assert not runs_native(M)
    monkeypatch.setenv("MARA_BENCH_NATIVE", "0")
    assert not native.usable(m) and not runs_native(M)


def test_a_failed_build_warns_once_and_falls_back_to_torch_ops(monkeypatch, tmp_path):
    monkeypatch.setattr(native, "_lib", None)
    monkeypatch.setattr(native, "_tried", False)
    monkeypatch.setenv("MARA_BENCH_CACHE", str(tmp_path))
    monkeypatch.setenv("CXX", "false")  # a "compiler" that always fails
    with pytest.warns(UserWarning, match="native gate kernel is unavailable.*MARA_BENCH_NATIVE=0"):
        assert native.library() is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert native.library() is None  # once
    M = mara("paper", D=8, hidden=8, grid=(3, 4)).eval()
    m, d = edges(E=5, D=8, seed=1)
    assert torch.isfinite(M.gates(m, d)).all()
    assert not list(tmp_path.glob("*.so*"))  # no half-written library left behind


def test_the_library_is_built_once_per_source_and_reused(lib, monkeypatch, tmp_path):
    monkeypatch.setenv("MARA_BENCH_CACHE", str(tmp_path))
    cc = native._compiler()
    first = native._build(cc)
    stamp = first.stat().st_mtime_ns
    assert native._build(cc) == first and first.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]  # no temporary files left


def test_an_edge_pointing_at_the_antipode_of_a_grid_direction(lib):
    """d̂ = −u_k for a pole direction: |u_k + d̂|² is clamped at RHO_EPS in both paths (the same values and finite,
    equal first derivatives; the clamp's derivative is zero in both)."""
    M = mara("paper", D=8, hidden=8, grid=(4, 8), seed=3)
    m, d = edges(E=20, D=8, seed=4)
    pole = M.distinct_u[0] if abs(float(M.distinct_u[0, 2])) > 0.99 else M.distinct_u[-1]
    d[3] = -2.0 * pole  # exactly antipodal to a pole point
    d.requires_grad_(True)
    out = {}
    for impl in ("folded", "folded-torch"):
        M.set_impl(impl)
        a = M.gates(m, d)
        (gd,) = torch.autograd.grad(a.sum(), [d])
        out[impl] = (a.detach(), gd)
    assert torch.isfinite(out["folded"][0]).all() and torch.isfinite(out["folded"][1]).all()
    assert _max_rel(out["folded"][0], out["folded-torch"][0]) <= 1e-12
    assert _max_rel(out["folded"][1], out["folded-torch"][1]) <= 1e-10
