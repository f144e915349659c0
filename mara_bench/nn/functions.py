"""Autograd Functions with hand-derived first and second derivatives (force training differentiates twice): the
folded gate's attention core and MARA's gated messages m + α·m. Each is checked against autograd on plain torch ops
(tests/nn/test_functions.py: values, gradcheck and gradgradcheck)."""

from __future__ import annotations

import math

import torch
from torch.autograd.function import once_differentiable

from . import native

# ------------------------------------------------------------------------------------------------ attention core
# The only tensors with K² entries per edge are the scores S = Lᵀ Xw and the softmax P. Through autograd's softmax
# the first and second derivatives touch many [E, K, K] tensors in main memory. Here the attention core Y = X Pᵀ is
# one autograd Function that saves P (computed block by block of edges) and nothing else of size K²; its backward is
# a second Function whose own backward (the double backward of force training) is derived by hand below. Every
# [n, K, K] temporary of the backward passes lives within one block, small enough to stay in the cache, and rowsums
# over P are taken from [n, r, K] coefficients instead (δ_k = dY_k·Y_k, v below). Same algebra, so values and
# derivatives equal autograd's up to rounding (tests/nn/test_functions.py). Recomputing P per block instead of
# saving it was measured too: it avoids the page faults of a fresh [E, K, K] buffer but repeats the softmax,
# and inside a backbone's step (where the allocator reuses memory) it was a few per cent slower.

LOG2E = 1.0 / math.log(2.0)  # softmax as 2^(log₂e·S − max): exp2 (Sleef) is several times cheaper than exp here
CORE_BLOCK_BYTES = 1 << 19  # bytes of one [n, K, K] temporary of the attention core's blocks (several are live)


def _blocks(N: int, K: int, itemsize: int):
    n = max(8, CORE_BLOCK_BYTES // (K * K * itemsize))
    return [slice(i, min(i + n, N)) for i in range(0, N, n)]


def _augmented(X, dY, Y):
    """([X; 1], [dY; −δ]) with δ_k = dY_k·Y_k = Σ_j P_kj (dY_k·X_j): then G = [dY; −δ]ᵀ [X; 1] has
    G_kj = dY_k·X_j − δ_k and ∂/∂S = P ⊙ G, one product per block without a K² reduction."""
    return _aug(X, 1.0), _aug(dY, (dY * Y).sum(1).neg())


def _aug(x, row):
    """[x; row], one more row: x [n, r, K], row [n, K] or a number -> [n, r + 1, K] (a rank-one term of a product
    as an extra row, instead of a broadcast bias that baddbmm would first copy into the [n, K, K] result)."""
    row = x.new_full((x.shape[0], 1, x.shape[2]), row) if isinstance(row, float) else row.unsqueeze(1)
    return torch.cat([x, row], 1)


def _softmax2_rows_(S: torch.Tensor) -> torch.Tensor:
    """In place: base-2 scores S [n, K, K] -> softmax over the last axis, each row shifted by its own maximum."""
    S.sub_(S.amax(-1, keepdim=True)).exp2_()
    return S.mul_(S.sum(-1, keepdim=True).reciprocal_())


def _softmax2_edges_(S: torch.Tensor) -> bool:
    """In place like :func:`_softmax2_rows_`, but every row of an edge shifted by the edge's maximum; False (S then
    holds garbage) where a row's sum came out so small that precision could suffer.

    Any shift c_k works in exact arithmetic; the edge's maximum is ≥ every row's maximum, so nothing overflows, and
    a row whose own maximum lies far below it (sum < 2^30 × the smallest normal number) is the only risk. On the CPU
    one maximum over K² contiguous numbers per edge is an order of magnitude cheaper than K row maxima (rows of
    K = 18 numbers reduce slowly)."""
    n = S.shape[0]
    S.sub_(S.view(n, -1).amax(-1).view(n, 1, 1)).exp2_()
    sums = S.sum(-1, keepdim=True)
    if float(sums.amin()) < torch.finfo(S.dtype).tiny * 2.0**30:
        return False
    S.mul_(sums.reciprocal_())
    return True


class _Attention(torch.autograd.Function):
    """Y = X Pᵀ with P = softmax_j(Lᵀ Xw): L, Xw [N, a, K], X [N, r, K] -> Y [N, r, K]."""

    @staticmethod
    def forward(ctx, L, Xw, X):
        L, Xw, X = L.contiguous(), Xw.contiguous(), X.contiguous()
        N, r, K = X.shape
        Y = torch.empty_like(X)
        P = X.new_empty(N, K, K)
        L2 = L * LOG2E  # scores in base 2: exp2 is ~3x cheaper than exp on the CPU (same values up to rounding)
        for b in _blocks(N, K, X.element_size()):  # P = softmax_j(Lᵀ Xw), written in place block by block
            Pb = torch.bmm(L2[b].transpose(1, 2), Xw[b], out=P[b])
            if Pb.is_cuda or not _softmax2_edges_(Pb):  # (a row far below its edge's maximum: per-row shifts)
                _softmax2_rows_(torch.bmm(L2[b].transpose(1, 2), Xw[b], out=Pb))
            torch.bmm(X[b], Pb.transpose(1, 2), out=Y[b])
        ctx.save_for_backward(L, Xw, X, P, Y)
        return Y

    @staticmethod
    def backward(ctx, dY):
        L, Xw, X, P, Y = ctx.saved_tensors
        return _AttentionBackward.apply(L, Xw, X, dY, P, Y.detach())


class _AttentionBackward(torch.autograd.Function):
    """(∂/∂L, ∂/∂Xw, ∂/∂X) of Σ dY ⊙ Y for :class:`_Attention` (P is passed in, not differentiated: its dependence
    on L and Xw is in the formulas). With dS = ∂/∂S = P ⊙ G (:func:`_augmented`): dL = Xw dSᵀ, dXw = L dS,
    dX = dY P. Its backward takes cotangents (a, b, c) of (dL, dXw, dX); with H' = aᵀXw + Lᵀb − rowsum(P ⊙ (aᵀXw
    + Lᵀb)) and U = P ⊙ H' it is ∂/∂X = dY U, ∂/∂dY = c Pᵀ + X Uᵀ, S̄ = P ⊙ (Q − rowsum(P ⊙ Q)) with
    Q = H' ⊙ G + dYᵀc, ∂/∂L = b dSᵀ + Xw S̄ᵀ, ∂/∂Xw = a dS + L S̄ (tests: gradcheck and gradgradcheck)."""

    @staticmethod
    def forward(ctx, L, Xw, X, dY, P, Y):
        dY = dY.contiguous()
        dL, dXw, dX = torch.empty_like(L), torch.empty_like(Xw), torch.empty_like(X)
        Xa, dYa = _augmented(X, dY, Y)
        for b in _blocks(*X.shape[::2], X.element_size()):
            Pb = P[b]
            dS = torch.bmm(dYa[b].transpose(1, 2), Xa[b]).mul_(Pb)
            torch.bmm(dY[b], Pb, out=dX[b])
            torch.bmm(Xw[b], dS.transpose(1, 2), out=dL[b])
            torch.bmm(L[b], dS, out=dXw[b])
        ctx.save_for_backward(L, Xw, X, dY, P, Y)
        return dL, dXw, dX

    @staticmethod
    @once_differentiable
    def backward(ctx, ga, gb, gc):
        L, Xw, X, dY, P_all, Y = ctx.saved_tensors
        ga = torch.zeros_like(L) if ga is None else ga.contiguous()
        gb = torch.zeros_like(Xw) if gb is None else gb.contiguous()
        gc = torch.zeros_like(X) if gc is None else gc.contiguous()
        gL, gXw, gX, gdY = torch.empty_like(L), torch.empty_like(Xw), torch.empty_like(X), torch.empty_like(dY)
        Xa, dYa = _augmented(X, dY, Y)
        A1, B1a = torch.cat([ga, L], 1), torch.cat([Xw, gb, L.new_ones(L.shape[0], 1, L.shape[2])], 1)
        for b in _blocks(*X.shape[::2], X.element_size()):
            l, xw, x, dy, a, bb, c = L[b], Xw[b], X[b], dY[b], ga[b], gb[b], gc[b]
            P = P_all[b]
            Pt = P.transpose(1, 2)
            G = torch.bmm(dYa[b].transpose(1, 2), Xa[b])
            # H = A1ᵀ B1 = aᵀXw + Lᵀb (B1 = [Xw; b], the rows of B1a but the last); v = rowsum(P ⊙ H) without a K²
            # reduction; H' = H − v 1ᵀ = [A1; −v]ᵀ [B1; 1]
            v = (A1[b] * torch.bmm(B1a[b, :-1], Pt)).sum(1)
            Hp = torch.bmm(_aug(A1[b], v.neg()).transpose(1, 2), B1a[b])
            U = Hp * P
            torch.bmm(dy, U, out=gX[b])
            torch.baddbmm(torch.bmm(c, Pt), x, U.transpose(1, 2), out=gdY[b])
            Sb = torch._softmax_backward_data(Hp.mul_(G).baddbmm_(dy.transpose(1, 2), c), P, -1, P.dtype)
            dS = G.mul_(P)
            torch.baddbmm(torch.bmm(bb, dS.transpose(1, 2)), xw, Sb.transpose(1, 2), out=gL[b])
            torch.baddbmm(torch.bmm(a, dS), l, Sb, out=gXw[b])
        need = ctx.needs_input_grad
        return tuple(g if n else None for g, n in zip((gL, gXw, gX, gdY, None, None), need, strict=True))


def attention(L: torch.Tensor, Xw: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Y = X softmax_j(Lᵀ Xw)ᵀ for coefficient-major L, Xw [N, a, K], X [N, r, K] -> [N, r, K], with first and
    second derivatives computed blockwise over N (P is the only [N, K, K] tensor kept)."""
    return _Attention.apply(L, Xw, X)


# ------------------------------------------------------------------------------------------------ gated messages
# m' = m + α·m for messages m [E, D] (spec step 7). Through autograd, force training (forward, backward with
# create_graph, double backward) makes about ten fresh [E, D] tensors here: the product, its two gradients, the
# [E, D] product that ∂/∂α sums, and those of the double backward. At MACE paper size (D = 10,240, 61 MB per tensor
# for 1,498 edges) each one is a few tens of ms of page faults and memory traffic on the CPU. These two Functions
# make four: the product, ∂/∂m, and two in the double backward; every ∂/∂α is a row-wise dot product without an
# [E, D] temporary. On the CPU (up to two threads), each backward is one streaming pass over the rows in C++
# (nn/csrc/gated_messages.cpp through nn/native.py: it reads every row once, where the torch ops below take two to
# four passes and a batched product for the dot products that runs far below memory speed).


def _rowdot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Σ_d x_ed y_ed -> [E, 1]; for wide rows as a batched product (no [E, D] temporary)."""
    if x.shape[1] >= 1024:
        return torch.bmm(x.unsqueeze(1), y.unsqueeze(2)).view(-1, 1)
    return (x * y).sum(1, keepdim=True)


class _GatedMessages(torch.autograd.Function):
    """m + α·m for m [E, D], α [E, 1]."""

    @staticmethod
    def forward(ctx, m, a):
        ctx.save_for_backward(m, a)
        return torch.addcmul(m, m, a)

    @staticmethod
    def backward(ctx, g):
        m, a = ctx.saved_tensors
        return _GatedMessagesBackward.apply(g, m, a)


class _GatedMessagesBackward(torch.autograd.Function):
    """(∂/∂m, ∂/∂α) = (g + α·g, Σ_d g·m); its backward with cotangents (p, q) of those two:
    ∂/∂g = p + α·p + q·m, ∂/∂m = q·g, ∂/∂α = Σ_d p·g (tests: gradcheck and gradgradcheck)."""

    @staticmethod
    def forward(ctx, g, m, a):
        ctx.save_for_backward(g, m, a)
        if native.streams(g, m, a):  # one pass over the rows (csrc/gated_messages.cpp)
            gm, _, da = native.gated_pass(g, m, a=a, dot=True)
            return gm, da
        return torch.addcmul(g, g, a), _rowdot(g, m)

    @staticmethod
    @once_differentiable
    def backward(ctx, p, q):
        g, m, a = ctx.saved_tensors
        if native.streams(p, q, g, m, a):  # the same in one pass
            z = m if q is not None else None
            dg, dm, da = native.gated_pass(p, g, z, a, q, out2=q is not None, dot=p is not None)
            return dg, dm, da
        dg = dm = da = None
        if p is not None:
            dg = torch.addcmul(p, p, a)
            da = _rowdot(p, g)
        if q is not None:
            dg = m * q if dg is None else dg.addcmul_(m, q)
            dm = g * q
        return dg, dm, da


def gated_messages(m: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """m + α·m (m [E, D], α [E, 1]) with first and second derivatives that make few [E, D] tensors."""
    return _GatedMessages.apply(m, a)
