"""mara_bench.nn.functions: the attention core and the gated messages, whose first and second derivatives are derived
by hand, against autograd through plain torch ops."""

from __future__ import annotations

import pytest
import torch
from test_mara import F64
from test_mara_kernels import _max_rel

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


@pytest.mark.parametrize("block_bytes", [None, 1])  # one block, and blocks of 8 rows (the smallest)
def test_attention_core_has_exact_first_and_second_derivatives(monkeypatch, block_bytes):
    """functions.attention (blockwise, hand-derived double backward) against autograd through plain torch ops."""
    from mara_bench.nn import functions

    if block_bytes is not None:
        monkeypatch.setattr(functions, "CORE_BLOCK_BYTES", block_bytes)
    g = torch.Generator().manual_seed(0)
    N, a, r, K = 19, 4, 3, 6
    L, Xw = (torch.randn(N, a, K, dtype=F64, generator=g, requires_grad=True) for _ in range(2))
    X = torch.randn(N, r, K, dtype=F64, generator=g, requires_grad=True)

    def plain(L, Xw, X):
        return X @ torch.softmax(L.transpose(1, 2) @ Xw, -1).transpose(1, 2)

    assert _max_rel(functions.attention(L, Xw, X), plain(L, Xw, X)) <= 1e-14
    assert torch.autograd.gradcheck(functions.attention, (L, Xw, X))
    assert torch.autograd.gradgradcheck(functions.attention, (L, Xw, X))
    # only some outputs of the backward used (None cotangents), and only some inputs needing grad
    y = functions.attention(L, Xw.detach(), X)
    (gx,) = torch.autograd.grad((y**2).sum(), X, create_graph=True)
    gl = torch.autograd.grad((gx**3).sum(), L)[0]
    y = plain(L, Xw.detach(), X)
    (gx_ref,) = torch.autograd.grad((y**2).sum(), X, create_graph=True)
    assert _max_rel(gl, torch.autograd.grad((gx_ref**3).sum(), L)[0]) <= 1e-12


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_attention_core_softmax_is_exact_when_rows_of_an_edge_differ_by_far_more_than_the_exponent_range(dtype):
    """The core shifts each edge's scores by one maximum per edge; a row whose maximum is far below its edge's (here
    by 300 or 3,000, beyond float32's exponent range) must still get an exact softmax (per-row fallback)."""
    from mara_bench.nn import functions

    g = torch.Generator().manual_seed(1)
    N, K = 5, 7
    L = torch.randn(N, 3, K, dtype=F64, generator=g)
    Xw = torch.cat([torch.randn(N, 2, K, dtype=F64, generator=g), torch.ones(N, 1, K, dtype=F64)], 1)
    X = torch.randn(N, 4, K, dtype=F64, generator=g)
    L[1, 2, 3] = -300.0  # row 3 of edge 1: every score lowered by 300 (the ones row of Xw meets it)
    L[3, 2, :2] = 3000.0  # rows 0-1 of edge 3 far above the others

    def plain(L, Xw, X):
        return X @ torch.softmax(L.transpose(1, 2) @ Xw, -1).transpose(1, 2)

    exact = plain(L, Xw, X)
    y = functions.attention(*(t.to(dtype) for t in (L, Xw, X)))
    assert torch.isfinite(y).all()
    # float32: scores of size 3,000 carry rounding of ~1e-4 in the exponent; as accurate as torch.softmax's path
    tol = 1e-13 if dtype == F64 else 3 * _max_rel(plain(*(t.to(dtype) for t in (L, Xw, X))).double(), exact)
    assert _max_rel(y.double(), exact) <= tol
    # the cheap per-edge shift alone would have lost those rows: the check is not vacuous
    S = (L.transpose(1, 2) @ Xw * functions.LOG2E).to(dtype)
    assert not functions._softmax2_edges_(S)


@pytest.mark.parametrize("native_pass", ["1", "0"])  # the streaming passes in C++ and the torch ops
@pytest.mark.parametrize("D", [7, 1100])  # row dot products as a sum (narrow rows) and as a batched product (wide)
def test_gated_messages_first_and_second_derivatives_equal_autograd(D, native_pass, monkeypatch):
    """functions.gated_messages (MARA's m + α·m with a hand-written double backward) against m * (1 + α)."""
    from mara_bench.nn import native
    from mara_bench.nn.functions import gated_messages

    monkeypatch.setenv("MARA_BENCH_NATIVE", native_pass)
    calls = []
    orig = native.gated_pass
    monkeypatch.setattr(native, "gated_pass", lambda *a, **k: calls.append(1) or orig(*a, **k))
    g = torch.Generator().manual_seed(3)
    m = torch.randn(5, D, dtype=F64, generator=g, requires_grad=True)
    a = torch.rand(5, 1, dtype=F64, generator=g, requires_grad=True)
    if D < 100:
        assert torch.autograd.gradcheck(gated_messages, (m, a))
        assert torch.autograd.gradgradcheck(gated_messages, (m, a))
    w = torch.randn(5, D, dtype=F64, generator=g)
    results = []
    for fn in (gated_messages, lambda m, a: m * (1.0 + a)):
        out = fn(m, a)
        gm, ga = torch.autograd.grad((out * w).square().sum(), (m, a), create_graph=True)
        second = torch.autograd.grad((gm**2).sum() + (ga**3).sum(), (m, a), retain_graph=True)
        only_a = torch.autograd.grad(ga.sum(), (m, a), retain_graph=True)  # the ∂/∂m cotangent is None here
        only_m = torch.autograd.grad((gm * w).sum(), (m, a))  # and here the ∂/∂α one
        results.append((out, gm, ga, *second, *only_a, *only_m))
    for x, y in zip(*results, strict=True):
        assert _max_rel(x, y) <= 1e-13
    assert bool(calls) == (native_pass == "1" and native._compiler() is not None)  # the path asked for ran


def test_gated_messages_streaming_pass_float32_and_when_it_runs(monkeypatch):
    """The C++ pass in float32 against the torch ops (float64 above); the torch ops run for strided cotangents,
    with more than two torch threads and under a dispatch mode (FLOP counting)."""
    from torch.utils.flop_counter import FlopCounterMode

    from mara_bench.nn import native
    from mara_bench.nn.functions import gated_messages

    if native._compiler() is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++) on PATH: the torch ops run (tested above)")
    g = torch.Generator().manual_seed(5)
    m = torch.randn(40, 700, generator=g, requires_grad=True)
    a = torch.rand(40, 1, generator=g, requires_grad=True)
    w = torch.randn(40, 700, generator=g)
    calls = []
    orig = native.gated_pass
    monkeypatch.setattr(native, "gated_pass", lambda *a, **k: calls.append(1) or orig(*a, **k))

    def derivatives(flag, cot=lambda out: (out * w).square().sum()):
        monkeypatch.setenv("MARA_BENCH_NATIVE", flag)
        calls.clear()
        gm, ga = torch.autograd.grad(cot(gated_messages(m, a)), (m, a), create_graph=True)
        return (gm, ga, *torch.autograd.grad((gm**2).sum() + (ga**3).sum(), (m, a))), len(calls)

    (ours, n_ours), (ref, n_ref) = derivatives("1"), derivatives("0")
    # the backward, its backward, and the backward once more (the loss's second derivative flows through m' too)
    assert n_ours == 3 and n_ref == 0
    for x, y in zip(ours, ref, strict=True):
        assert _max_rel(x, y) <= 1e-5
    _, n = derivatives("1", cot=lambda out: out.sum())  # ∂/∂m' is an expanded (stride-0) tensor: torch ops
    assert n == 0  # (and so is the saved ∂/∂m' in the double backward)
    with FlopCounterMode(display=False):
        assert derivatives("1")[1] == 0
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(native.STREAM_MAX_THREADS + 1)
        assert derivatives("1")[1] == 0
    finally:
        torch.set_num_threads(threads)
