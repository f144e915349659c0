"""The ``paper`` MARA gate with the token algebra folded: no [E, K, C] tensor is ever built.

The readable path (``MARA.tokens`` → ``MARA.attend`` → ``MARA.gate_readout``, and ``ReferenceMARA`` with
torch-harmonics' ``AttentionS2``) materialises tokens, queries, keys, values and attention outputs as [E, K, C]
tensors. Every one of them lies in a span of a few vectors, so they can be carried as coefficients instead
(docs/mara.md, "Folded path"). Notation: E edges, K = H·W grid points, C channels, ``cen`` subtracts the mean
over channels, ⟨·,·⟩ is the channel dot product.

Tokens.  x_ek = h_e + ρ_ek f + W_p u_k + b₀ (f = W_f, b₀ = b_f + b_p). Centred over channels,
    x̃_ek = n_e + ρ_ek f̃ + W̃_p u_k = V_e c_ek,   V_e = [n_e, f̃, W̃_p] (C × 5),  c_ek = [1, ρ_ek, u_k],
with n_e = cen(h_e + b₀). Its variance is c_ekᵀ (V_eᵀV_e) c_ek / C (a 5 × 5 Gram per edge), so with
s_ek = (var_ek + ε)^-½ the token is t_ek = T_e X_ek + β_t, T_e = γ_t ⊙ V_e, X_ek = s_ek c_ek (5 numbers).

Attention (per head).  q_k = Q_e X_k + q₀, k_j = K_e X_j + k₀ with Q_e = W_q T_e (C × 5; only its first column
depends on the edge) and q₀ = W_q β_t + b_q. Terms of q_k·k_j that do not depend on j cancel in the softmax:
    S_kj = X_kᵀ B_e X_j + b_e·X_j + log ω_j,   B_e = Q_eᵀK_e/√c (5 × 5),  b_e = K_eᵀq₀/√c,
a rank-6 bilinear form: S = [X B + b, 1] [X, log ω]ᵀ. Since Σ_j P_kj = 1, the output projection of the
attention is o_k = Z_e Y_k + o₀ with Y_k = Σ_j P_kj X_j (5 numbers), Z_e = W_O W_V T_e, o₀ = W_O(W_V β_t + b_V) + b_O.

Readout.  LayerNorm(o_k) and LayerNorm(h_e + LayerNorm(o_k)) need only channel means, variances and, for the
channel-mean readout, one dot product with γ_out — all quadratic or linear forms in the coefficients, from
Gram matrices of a few C-vectors per edge.

The only tensors with K² entries per edge are the scores and the softmax; everything else is [E, K, ≤ 8] or
[E, C, ≤ 8]. Exactness: equal to the readable path up to rounding (tests/test_mara.py: ≤ 1e-10 in float64 for
values, gradients and second derivatives). In float32 the variances come from Gram expansions, which lose
relative precision only when a LayerNorm input is nearly constant over channels (variance ≪ its parts).
All ops are plain differentiable torch ops, so force training's double backward works through autograd.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _cen(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x - x.mean(dim, keepdim=True)


# ---------------------------------------------------------------------------------------------- wide batched products
# On the CPU a batched matmul whose output has a short last dimension ([E, K, 5] = [E, K, K] @ [E, K, 5]) runs at a
# fraction of the speed of the same product written with a long last dimension ([E, 5, K] = [E, 5, K] @ [E, K, K]ᵀ).
# The coefficient tensors are therefore kept "coefficient-major" ([E, r, K]), and the three products of the
# attention are autograd Functions whose backward passes are the same three products again (so first *and*
# second derivatives keep the fast layout; their backward is differentiable, which force training needs).


class _OuterT(torch.autograd.Function):
    """S = Aᵀ B: A, B [N, r, K] -> [N, K, K]."""

    @staticmethod
    def forward(ctx, a, b):
        a, b = a.contiguous(), b.contiguous()  # a sliced operand would take a slow batched-GEMM path
        ctx.save_for_backward(a, b)
        return torch.bmm(a.transpose(1, 2), b)

    @staticmethod
    def backward(ctx, ds):
        a, b = ctx.saved_tensors
        return (_RightT.apply(b, ds) if ctx.needs_input_grad[0] else None,
                _Right.apply(a, ds) if ctx.needs_input_grad[1] else None)


class _Right(torch.autograd.Function):
    """Y = A P: A [N, r, K], P [N, K, K] -> [N, r, K]."""

    @staticmethod
    def forward(ctx, a, p):
        ctx.save_for_backward(a, p)
        return torch.bmm(a, p)

    @staticmethod
    def backward(ctx, dy):
        a, p = ctx.saved_tensors
        return (_RightT.apply(dy, p) if ctx.needs_input_grad[0] else None,
                _OuterT.apply(a, dy) if ctx.needs_input_grad[1] else None)


class _RightT(torch.autograd.Function):
    """Y = A Pᵀ: A [N, r, K], P [N, K, K] -> [N, r, K]."""

    @staticmethod
    def forward(ctx, a, p):
        ctx.save_for_backward(a, p)
        return torch.bmm(a, p.transpose(1, 2))

    @staticmethod
    def backward(ctx, dy):
        a, p = ctx.saved_tensors
        return (_Right.apply(dy, p) if ctx.needs_input_grad[0] else None,
                _OuterT.apply(dy, a) if ctx.needs_input_grad[1] else None)


def outer_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Aᵀ B for coefficient-major A, B [N, r, K] -> [N, K, K] (wide-layout backward)."""
    return _OuterT.apply(a, b)


def right_t(a: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """A Pᵀ for A [N, r, K], P [N, K, K] -> [N, r, K] (wide-layout backward)."""
    return _RightT.apply(a, p)


def _quad(coef_t: torch.Tensor, gram: torch.Tensor) -> torch.Tensor:
    """c_kᵀ G c_k for every k: coef_t [E, r, K] (coefficient-major), gram [E, r, r] -> [E, K]."""
    return (torch.bmm(gram, coef_t) * coef_t).sum(1)


def _gram(rows: torch.Tensor) -> torch.Tensor:
    """rows [E, r, C] -> [E, r, r] channel dot products."""
    return torch.bmm(rows, rows.transpose(1, 2))


def folded_gates(M, m: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """α [E, 1] of a ``paper`` :class:`~mara_bench.mara.MARA` ``M``, computed without token tensors.

    Coefficient tensors are coefficient-major: ``XT`` [E, 5, K] holds X_ek for every k in its last dimension."""
    C, nh = M.hidden, M.heads
    ch = C // nh
    E = m.shape[0]
    u = M.grid_u  # [K, 3]
    K = u.shape[0]
    rho = M.distances(d)  # [E, K]
    h = M.w_h(m)  # [E, C]
    lt, la, lo = M.norm_tokens, M.norm_attn, M.norm_out
    ones = rho.new_ones(E, 1, K)

    # ---- token LayerNorm: statistics from a 5 x 5 Gram per edge
    n = _cen(h + (M.w_f.bias + M.w_p.bias))  # [E, C]
    fc = _cen(torch.cat([M.w_f.weight, M.w_p.weight], 1).t())  # [4, C]: f̃, W̃_p rows
    VT = torch.cat([n.unsqueeze(1), fc.expand(E, 4, C)], 1)  # [E, 5, C]
    c0 = torch.cat([ones, rho.unsqueeze(1), u.t().expand(E, 3, K)], 1)  # [E, 5, K]: [1, ρ_k, u_k]
    s = torch.rsqrt(_quad(c0, _gram(VT)) / C + lt.eps)  # [E, K]
    XT = c0 * s.unsqueeze(1)  # [E, 5, K]: token t_ek = (γ_t ⊙ V_e) X_ek + β_t

    # ---- Q, K and the value-output map Z = W_O W_V on the token basis; only row 0 depends on the edge
    wq, wk, wv = M.qkv.weight.split(C, 0)
    bq, _, bv = M.qkv.bias.split(C, 0)
    wo = M.out_proj.weight
    mz = torch.cat([wo[:, i * ch:(i + 1) * ch] @ wv[i * ch:(i + 1) * ch] for i in range(nh)], 0)  # [nh·C, C]
    big = torch.cat([wq, wk, mz], 0) * lt.weight  # [(2 + nh)·C, C], γ_t folded in
    per_edge = F.linear(n, big)  # [E, (2 + nh)·C]
    const = fc @ big.t()  # [4, (2 + nh)·C]
    q0 = F.linear(lt.bias, wq, bq)  # W_q β_t + b_q
    o0 = F.linear(F.linear(lt.bias, wv, bv), wo, M.out_proj.bias)  # [C]

    def basis(i: int) -> torch.Tensor:  # [E, 5, C] block i of (Q, K, Z_1 .. Z_nh), rows = token basis
        sl = slice(i * C, (i + 1) * C)
        return torch.cat([per_edge[:, sl].unsqueeze(1), const[:, sl].expand(E, 4, C)], 1)

    scale = 1.0 / math.sqrt(ch)
    Qb = basis(0).view(E, 5, nh, ch).transpose(1, 2) * scale  # [E, nh, 5, ch]
    Kb = basis(1).view(E, 5, nh, ch).transpose(1, 2)
    Qb, Kb = Qb.reshape(E * nh, 5, ch), Kb.reshape(E * nh, 5, ch)  # heads into the batch
    BT = torch.bmm(Kb, Qb.transpose(1, 2))  # [E·nh, 5, 5]: Bᵀ, B_rs = Q_r·K_s/√c
    b = torch.matmul(Kb, q0.view(nh, ch, 1).repeat(E, 1, 1) * scale) if nh > 1 else torch.matmul(Kb, q0 * scale)
    # L_k = Bᵀ X_k + b, augmented with a 1 that meets log ω in the key coefficients: S = [L; 1]ᵀ [X; log ω]
    XTh = XT if nh == 1 else XT.unsqueeze(1).expand(E, nh, 5, K).reshape(E * nh, 5, K)
    LT = torch.baddbmm(b.view(E * nh, 5, 1), BT, XTh)  # [E·nh, 5, K]
    LT = torch.cat([LT, ones.expand(E, 1, K).repeat_interleave(nh, 0) if nh > 1 else ones], 1)  # [E·nh, 6, K]
    XwT = torch.cat([XT, M.log_w.view(1, 1, K).expand(E, 1, K)], 1)  # [E, 6, K]
    if nh > 1:
        XwT = XwT.unsqueeze(1).expand(E, nh, 6, K).reshape(E * nh, 6, K)
    P = torch.softmax(outer_t(LT, XwT), dim=-1)  # [E·nh, K, K]
    YT = right_t(XwT[:, :5], P).view(E, nh * 5, K)  # Y_k = Σ_j P_kj X_j; rows (head, r)

    # ---- attention output o_k = Z_e Y_k + o₀ and LayerNorm(o_k)
    Z = torch.cat([basis(2 + i) for i in range(nh)], 1)  # [E, 5·nh, C]
    ZhT = torch.cat([_cen(Z), _cen(o0).view(1, 1, C).expand(E, 1, C)], 1)  # [E, 5·nh + 1, C], centred
    YhT = torch.cat([YT, ones], 1)  # [E, 5·nh + 1, K]
    sa = torch.rsqrt(_quad(YhT, _gram(ZhT)) / C + la.eps)  # [E, K]

    # ---- readout: mean_c LayerNorm(h + LayerNorm(o)) = σ_k ⟨γ_out, cen(z_k)⟩ / C + mean(β_out)
    WbT = torch.cat([_cen(h + la.bias).unsqueeze(1), _cen(ZhT * la.weight)], 1)  # [E, 5·nh + 2, C]
    zeta = torch.cat([ones, YhT * sa.unsqueeze(1)], 1)  # [E, 5·nh + 2, K]: cen(z_k) = WbTᵀ ζ_k
    so = torch.rsqrt(_quad(zeta, _gram(WbT)) / C + lo.eps)  # [E, K]
    g = torch.matmul(WbT, lo.weight)  # [E, 5·nh + 2]: ⟨row, γ_out⟩
    ybar = so * (zeta * g.unsqueeze(-1)).sum(1) / C + lo.bias.mean()  # [E, K]
    return torch.sigmoid(M.readout(ybar))
