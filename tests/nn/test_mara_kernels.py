"""mara_bench.nn.kernels (the folded ``paper`` path, the default) against torch-harmonics AttentionS2 and the readable
token path: values, first and second derivatives in float64, the blockwise attention core, shapes, float32 accuracy."""

from __future__ import annotations

import pytest
import torch
from test_mara import F64, edges, mara, randomize_

from mara_bench.errors import UserError
from mara_bench.nn.mara import MARA, ReferenceMARA

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


# --------------------------------------------------------------------------- the folded path (nn.kernels) vs the references
def _att_params_like_ours(att):
    """torch-harmonics AttentionS2 parameters in the layout of MARA.qkv / MARA.out_proj (weights, biases)."""
    C = att.q_weights.shape[0]
    return {"qkv.weight": [getattr(att, f"{n}_weights") for n in "qkv"], "qkv.bias": [getattr(att, f"{n}_bias") for n in "qkv"],
            "out_proj.weight": [att.proj_weights], "out_proj.bias": [att.proj_bias], "C": C}


def _derivatives(gates_fn, M, m, d, att=None):
    """Gates, first derivatives of Σ w·α and second derivatives (the force-training loss |∂E/∂d|² + |∂E/∂m|²
    differentiated w.r.t. every parameter), all keyed by name in the layout of M's parameters."""
    m = m.detach().clone().requires_grad_(True)
    d = d.detach().clone().requires_grad_(True)
    names = [n for n, _ in M.named_parameters() if not n.startswith("reference_att")]
    params = dict(M.named_parameters())
    if att is not None:  # the reference keeps its own copies of Q, K, V and the output projection
        names = [n for n in names if not n.startswith(("qkv", "out_proj"))]
        ap = _att_params_like_ours(att)
        extra = [p for k in ("qkv.weight", "qkv.bias", "out_proj.weight", "out_proj.bias") for p in ap[k]]
    else:
        extra = []
    plist = [params[n] for n in names] + extra
    a = gates_fn(m, d)
    w = torch.linspace(-1.0, 2.0, a.shape[0], dtype=a.dtype).unsqueeze(1)
    energy = (w * a * (m**2).sum(-1, keepdim=True)).sum()
    g = torch.autograd.grad(energy, [m, d] + plist, create_graph=True)
    loss = (g[1] ** 2).sum() + (g[0] ** 2).sum()
    gg = torch.autograd.grad(loss, [m, d] + plist)

    def tidy(grads):
        out = {"m": grads[0], "d": grads[1]}
        out.update({n: t for n, t in zip(names, grads[2:2 + len(names)], strict=True)})
        if att is not None:
            rest = list(grads[2 + len(names):])
            w3, b3 = rest[0:3], rest[3:6]
            out["qkv.weight"] = torch.cat([x.reshape(x.shape[0], -1) for x in w3], 0)
            out["qkv.bias"] = torch.cat(b3, 0)
            out["out_proj.weight"] = rest[6].reshape(rest[6].shape[0], -1)
            out["out_proj.bias"] = rest[7]
        return out

    return a.detach(), tidy(g), tidy(gg)


def _max_rel(x, y):
    return float((x - y).abs().max() / max(1.0, float(y.abs().max())))


@pytest.mark.parametrize("heads,grid,hidden", [(1, (4, 8), 32), (2, (4, 8), 16), (1, (3, 5), 8)])
def test_folded_equals_torch_harmonics_reference_values_first_and_second_derivatives(heads, grid, hidden):
    """≤ 1e-10 in float64: gates, ∂/∂(m, d, every parameter) and the second derivatives force training takes."""
    M = mara("paper", D=12, hidden=hidden, grid=grid, heads=heads, seed=2)
    randomize_(M, seed=4, scale=1.2)  # sharper attention and a wider gate spread than the default draw
    m, d = edges(E=30, D=12, seed=3)
    assert M.impl == "folded"  # the default
    ref = ReferenceMARA(M)
    a_f, g_f, gg_f = _derivatives(M.gates, M, m, d)
    a_r, g_r, gg_r = _derivatives(ref, M, m, d, att=ref.att)
    assert float(a_r.std()) > 1e-3  # the comparison is not between constants
    assert _max_rel(a_f, a_r) <= 1e-10
    assert set(g_f) == set(g_r) and len(g_f) == len(list(M.parameters())) + 2
    worst = {k: max(_max_rel(g_f[k], g_r[k]), _max_rel(gg_f[k], gg_r[k])) for k in g_f}
    print("folded vs AttentionS2 reference, worst relative difference per input:", f"{max(worst.values()):.1e}")
    assert max(worst.values()) <= 1e-10, worst
    assert all(float(gg_f[k].abs().max()) > 0 for k in ("m", "d", "w_h.weight", "qkv.weight", "norm_tokens.weight"))


@pytest.mark.parametrize("impl", ["fused", "matmul", "reference"])
def test_every_impl_gives_the_same_gates_and_derivatives(impl):
    M = mara("paper", D=10, hidden=8, grid=(3, 4), seed=5)
    m, d = edges(E=12, D=10, seed=6)
    a_f, g_f, gg_f = _derivatives(M.gates, M, m, d)
    M.set_impl(impl)
    att = M.reference_att if impl == "reference" else None
    a_i, g_i, gg_i = _derivatives(M.gates, M, m, d, att=att)
    assert _max_rel(a_i, a_f) <= 1e-12
    assert max(max(_max_rel(g_i[k], g_f[k]), _max_rel(gg_i[k], gg_f[k])) for k in g_f) <= 1e-10
    M.set_impl("folded")
    assert M.impl == "folded" and "reference_att" not in dict(M.named_modules())


def test_set_impl_rejects_unknown_names_and_ignores_other_variants():
    with pytest.raises(UserError, match="did you mean"):
        MARA(8).set_impl("foldd")
    c = MARA(8, "control").set_impl("reference")
    assert not any(k.startswith("reference_att") for k in c.state_dict())


@pytest.mark.parametrize("heads", [1, 2])
def test_folded_gradgradcheck(heads):
    M = mara("paper", D=4, hidden=4, grid=(3, 4), heads=heads)
    m, d = edges(E=3, D=4)
    m.requires_grad_(True)
    d.requires_grad_(True)
    w = torch.randn(4, dtype=F64, generator=torch.Generator().manual_seed(5))

    def f(m, d):
        return M(m, d)[0] @ w

    assert torch.autograd.gradcheck(f, (m, d), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradgradcheck(f, (m, d), eps=1e-6, atol=1e-6)


def test_folded_path_never_builds_a_token_tensor():
    """No tensor of the folded forward, backward or double backward has both a grid axis (K points or K' distinct
    directions) and a C (channel) axis."""
    from torch.utils._python_dispatch import TorchDispatchMode

    E, K, K1, C = 9, 15, 7, 8  # distinct sizes, so shapes can be told apart (grid 3x5: 7 distinct directions)

    class Shapes(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(t, torch.Tensor):
                    self.shapes.add(tuple(t.shape))
            return out

    def run(M):
        m, d = edges(E=E, D=6, seed=1)
        m.requires_grad_(True)
        d.requires_grad_(True)
        with Shapes() as rec:
            energy = (M(m, d)[0] ** 2).sum()
            (gd,) = torch.autograd.grad(energy, d, create_graph=True)
            (gd**2).sum().backward()
        return rec.shapes

    M = mara("paper", D=6, hidden=C, grid=(3, 5))
    folded = run(M)
    tokens = run(M.set_impl("fused"))
    has_kc = [s for s in tokens if E in s and K in s and C in s]
    assert has_kc  # the readable path does build [E, K, C] tensors: the check can fail
    assert not [s for s in folded if E in s and (K in s or K1 in s) and C in s], sorted(folded)
    assert [s for s in folded if E in s and K1 in s]  # it does work on the distinct directions


def test_one_head_forms_from_per_edge_scalars_equal_the_explicit_bases():
    """The one-head path builds its per-edge Grams from linear and quadratic forms of n_e; the general path from
    explicit C-vector bases. Same numbers (float64)."""
    from mara_bench.nn.kernels import _edge_forms_bases, _edge_forms_one_head

    M = mara("paper", D=9, hidden=8, grid=(3, 4), seed=7)
    randomize_(M, seed=8, scale=1.0)
    m, _ = edges(E=11, D=9)
    h = M.w_h(m)
    for a, b in zip(_edge_forms_one_head(M, h), _edge_forms_bases(M, h), strict=True):
        assert a.shape == b.shape
        assert _max_rel(a, b) <= 1e-12


@pytest.mark.parametrize("scale,offset", [(1.0, 0.0), (100.0, 50.0), (1e3, 1e3)])
def test_folded_float32_is_as_accurate_as_the_float32_reference(scale, offset):
    """The folded LayerNorm variances come from Gram expansions; large, offset messages must not cost accuracy."""
    M = mara("paper", D=32, seed=1)
    randomize_(M, seed=2, scale=1.0)
    m, d = edges(E=300, D=32, seed=3)
    m = m * scale + offset
    exact = ReferenceMARA(M)(m, d)
    M32 = M.float()
    err_folded = float((M32.gates(m.float(), d.float()).double() - exact).abs().max())
    err_ref32 = float((ReferenceMARA(M32)(m.float(), d.float()).double() - exact).abs().max())
    assert err_folded <= max(3 * err_ref32, 1e-6), (err_folded, err_ref32)
