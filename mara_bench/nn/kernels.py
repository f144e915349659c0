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

Grid.  The W points of each pole row are one direction, so all of this runs on the K' = (H − 2)·W + 2 distinct
directions (18 for 4x8) with the copies' quadrature weights added, and the readout weights of the copies are added
(``s2grid.distinct_directions``): the same function, with K'² instead of K² scores per edge.

The only tensors with K² entries per edge are the scores and the softmax, inside the attention core
(:func:`attention`: P saved once, every other K² temporary blockwise); everything else is [E, ≤ 14, K] or
[E, C, ≤ 8]. Exactness: equal to the readable path up to rounding (tests/nn/test_mara_kernels.py: ≤ 1e-10 in
float64 for values, gradients and second derivatives). In float32 the variances come from Gram expansions, which
lose relative precision only when a LayerNorm input is nearly constant over channels (variance ≪ its parts).
All ops outside the attention core are plain differentiable torch ops; the core's first and second derivatives
are hand-derived autograd Functions (checked by gradcheck and gradgradcheck), so force training's double backward
works. On the CPU, with one head, everything after the per-edge scalars (distances, forms, grid pass, readout) runs
in a C++ kernel instead (:mod:`mara_bench.nn.native`, ``nn/csrc/folded_gate.cpp``: forward, VJP and the VJP's
derivatives), with this torch code as its reference and fallback.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import native
from .functions import attention
from .s2grid import RHO_EPS


def _cen(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return x - x.mean(dim, keepdim=True)


def _gram(rows: torch.Tensor) -> torch.Tensor:
    """rows [E, r, C] -> [E, r, r] channel dot products."""
    return torch.bmm(rows, rows.transpose(1, 2))


def folded_gates(M, m: torch.Tensor, d: torch.Tensor, native_pass: bool = True) -> torch.Tensor:
    """α [E, 1] of a ``paper`` :class:`~mara_bench.nn.mara.MARA` ``M``, computed without token tensors.

    Two steps: the per-edge matrices (Grams, attention form; :func:`_edge_forms_one_head` from per-edge scalars
    for one head, :func:`_edge_forms_bases` from explicit C-vectors for any number of heads), then the per-grid-point
    pass :func:`_grid_pass` on coefficient-major tensors ([E, r, K]). With one head on the CPU (``native_pass``, and
    :func:`mara_bench.nn.native.usable`), everything after the per-edge scalars runs in the native kernel
    (:func:`mara_bench.nn.native.gate`); ``native_pass=False`` is ``--mara-impl folded-torch``."""
    u, log_w = M.distinct_u, M.distinct_log_w  # [K', 3], [K']: the W copies of each pole merged (K' = (H-2)W + 2)
    h = M.w_h(m)  # [E, C]
    consts = (u, log_w, float(M.hidden), M.norm_tokens.eps, M.norm_attn.eps, M.norm_out.eps)
    if M.heads == 1:
        z, cv, scale = _edge_scalars_one_head(M, h)
        if native_pass and native.usable(d):  # ρ, the forms, the grid pass and the readout per edge in C++
            return native.gate((*consts, scale, RHO_EPS), d, z, _gate_constants(M, cv)).unsqueeze(1)
        forms = _assemble_forms(z, cv, scale)
    else:
        forms = _edge_forms_bases(M, h)
    ybar = _grid_pass(consts, M.heads, M.distances(d, u), *forms)  # [E, K']: ȳ at each distinct direction
    w = M.readout.weight @ M.distinct_merge  # [1, K']: the readout on the distinct directions
    return torch.sigmoid(F.linear(ybar + M.norm_out.bias.mean(), w, M.readout.bias))


def _gate_constants(M, cv: torch.Tensor) -> torch.Tensor:
    """cw = [cv, the readout weights on the distinct directions, c0]: the constants of the native gate, whose
    readout σ(Σ_k w_k (ȳ_k + mean β_out) + b) is σ(Σ_k w_k ȳ_k + c0)."""
    w = (M.readout.weight @ M.distinct_merge).reshape(-1)
    return torch.cat([cv, w, (M.norm_out.bias.mean() * w.sum() + M.readout.bias).reshape(1)])


def _grid_pass(consts, nh, rho, GV, BT, b, Ga, Go, g):
    """ȳ [E, K] (without the readout bias) at directions u [K, 3] with log quadrature weights log_w [K], from the
    per-edge forms; consts = (u, log_w, C, eps of the token, attention and output LayerNorms), nh heads.
    GV [E, 5, 5]: Gram of the centred token basis [n, f̃, W̃_p]; BT [E·nh, 5, 5] and b [E·nh, 5, 1]: scores
    S_kj = X_kᵀ B X_j + bᵀX_j + log ω_j; Ga [E, m, m]: Gram of the centred attention-output basis (m = 5·nh + 1,
    the last row the constant o₀); Go [E, m + 1, m + 1] and g [E, m + 1]: Gram of the centred readout basis
    [cen(h + β_a), cen(γ_a ⊙ output basis)] and its dot products with γ_out."""
    u, log_w, C, eps_t, eps_a, eps_o = consts
    E, K = rho.shape
    ut = u.t()  # [3, K]
    ones = rho.new_ones(E, 1, K)
    # token variance c_kᵀ GV c_k / C with c_k = [1, ρ_k, u_k]: u_k is the same for every edge, so its terms are
    # per-edge coefficients times constant grid functions, two GEMMs instead of a per-edge [5, 5] x [5, K] product
    phi = torch.cat([ut.new_ones(1, K), ut, (ut.unsqueeze(1) * ut).reshape(9, K)], 0)  # [13, K]: 1, u_a, u_a u_b
    coef_u = torch.cat([GV[:, 0, :1], 2 * GV[:, 0, 2:], GV[:, 2:, 2:].reshape(E, 9)], 1)  # [E, 13]
    coef_rho = 2 * torch.cat([GV[:, 1, :1], GV[:, 1, 2:]], 1)  # [E, 4]: times ρ_k [1, u_k]
    var_t = coef_u @ phi + rho * (coef_rho @ phi[:4] + rho * GV[:, 1, 1:2])  # [E, K]
    s = torch.rsqrt(var_t / C + eps_t)
    XT = torch.cat([ones, rho.unsqueeze(1), ut.expand(E, 3, K)], 1) * s.unsqueeze(1)  # [E, 5, K]: X_k = s_k c_k
    XTh = XT if nh == 1 else XT.unsqueeze(1).expand(E, nh, 5, K).reshape(E * nh, 5, K)
    # L_k = Bᵀ X_k + b, augmented with a 1 that meets log ω in the key coefficients: S = [L; 1]ᵀ [X; log ω]
    LT = torch.cat([torch.baddbmm(b, BT, XTh), ones if nh == 1 else ones.repeat_interleave(nh, 0)], 1)
    XwT = torch.cat([XTh, log_w.view(1, 1, K).expand(E * nh, 1, K)], 1)  # [E·nh, 6, K]
    YT = attention(LT, XwT, XTh).view(E, nh * 5, K)  # Y_k = Σ_j P_kj X_j, P = softmax(S); rows (head, r)
    YhT = torch.cat([YT, ones], 1)  # [E, m, K]: attention output o_k = Zh_e Ŷ_k (centred)
    # readout basis ζ_k = [1, sa_k Ŷ_k] (cen(h + LayerNorm(o_k)) = Wbᵀ ζ_k): its quadratic form with Go and its dot
    # product with g expand into forms of Ŷ_k alone, all from one per-edge product [2m + 2, m] x [m, K]
    m = YhT.shape[1]
    W = torch.cat([Ga, Go[:, 1:, 1:], Go[:, :1, 1:], g[:, 1:].unsqueeze(1)], 1)  # [E, 2m + 2, m]
    WYq, WYo, WYg = torch.bmm(W, YhT).split([2 * m, 1, 1], 1)  # split, not slices: one cat in the backward
    # both quadratic forms in one product and one sum (half the nodes in each autograd pass; training 0.92-0.95x)
    qa, qo = (WYq.view(E, 2, m, K) * YhT.unsqueeze(1)).sum(2).unbind(1)  # [E, K]: Ŷᵀ Ga Ŷ, Ŷᵀ Go' Ŷ
    sa = torch.rsqrt(qa / C + eps_a)  # [E, K]
    so = torch.rsqrt((Go[:, 0, :1] + sa * (2 * WYo.squeeze(1) + sa * qo)) / C + eps_o)  # [E, K]
    return so * (g[:, :1] + sa * WYg.squeeze(1)) / C  # [E, K]


def _edge_forms_bases(M, h):
    """Per-edge forms for any number of heads, from the explicit C-vector bases (rows [E, r, C])."""
    C, nh = M.hidden, M.heads
    ch = C // nh
    E = h.shape[0]
    lt, la, lo = M.norm_tokens, M.norm_attn, M.norm_out
    n = _cen(h + (M.w_f.bias + M.w_p.bias))  # [E, C]
    fc = _cen(torch.cat([M.w_f.weight, M.w_p.weight], 1).t())  # [4, C]: f̃, W̃_p rows
    GV = _gram(torch.cat([n.unsqueeze(1), fc.expand(E, 4, C)], 1))  # [E, 5, 5]
    # Q, K and the value-output map Z = W_O W_V on the token basis γ_t ⊙ [n, f̃, W̃_p]; only row 0 is per edge
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
    Qb = basis(0).view(E, 5, nh, ch).transpose(1, 2).reshape(E * nh, 5, ch) * scale
    Kb = basis(1).view(E, 5, nh, ch).transpose(1, 2).reshape(E * nh, 5, ch)
    BT = torch.bmm(Kb, Qb.transpose(1, 2))  # [E·nh, 5, 5]: Bᵀ, B_rs = Q_r·K_s/√c
    b = torch.bmm(Kb, (q0.view(nh, ch, 1) * scale).repeat(E, 1, 1))  # [E·nh, 5, 1]: K_sᵀ q₀/√c
    Z = torch.cat([basis(2 + i) for i in range(nh)], 1)  # [E, 5·nh, C]
    ZhT = torch.cat([_cen(Z), _cen(o0).view(1, 1, C).expand(E, 1, C)], 1)  # [E, 5·nh + 1, C], centred
    WbT = torch.cat([_cen(h + la.bias).unsqueeze(1), _cen(ZhT * la.weight)], 1)  # [E, 5·nh + 2, C]
    return GV, BT, b, _gram(ZhT), _gram(WbT), torch.matmul(WbT, lo.weight)


def _bordered(corner: torch.Tensor, edge: torch.Tensor, const: torch.Tensor) -> torch.Tensor:
    """[[corner, edge], [edgeᵀ, const]] per edge: corner [E, p, p], edge [E, p, q], const [q, q] -> [E, p+q, p+q]."""
    E = corner.shape[0]
    top = torch.cat([corner, edge], 2)
    bottom = torch.cat([edge.transpose(1, 2), const.expand(E, *const.shape)], 2)
    return torch.cat([top, bottom], 1)


def _edge_forms_one_head(M, h):
    """Per-edge forms (GV, BT, b, Ga, Go, g) for one head: :func:`_assemble_forms` of :func:`_edge_scalars_one_head`."""
    return _assemble_forms(*_edge_scalars_one_head(M, h))


def _edge_scalars_one_head(M, h):
    """(z [E, 37], cv [98], scale): the per-edge scalars and the constants the forms of one head are assembled from.

    Every per-edge C-vector of the bases is a fixed linear map of n_e = cen(h_e + b_f + b_p), so each Gram entry is a
    constant, a linear form ⟨a, n_e⟩ or a quadratic form n_eᵀ A n_e. One [E, C] x [C, 4C + 32] product gives all of
    them; no [E, r, C] basis is built. z = [|n|², nᵀA_i n (4), the 32 linear forms]; cv = [CF (4 x 4), CB (4 x 4),
    cb (4), CA (5 x 5), cw·cw, CZ (5 x 5), cw_zc (5), cw·γ_out, zc γ_out (5)] (layout of nn/csrc/folded_gate.cpp)."""
    C = M.hidden
    E = h.shape[0]
    lt, la, lo = M.norm_tokens, M.norm_attn, M.norm_out
    eye = torch.eye(C, dtype=h.dtype, device=h.device)
    cen_mat = eye - 1.0 / C  # P: centring over channels (symmetric)
    b0 = M.w_f.bias + M.w_p.bias
    n = _cen(h + b0)  # [E, C]
    fc = _cen(torch.cat([M.w_f.weight, M.w_p.weight], 1).t())  # [4, C]: f̃, W̃_p rows (centred)
    wq, wk, wv = M.qkv.weight.split(C, 0)
    bq, _, bv = M.qkv.bias.split(C, 0)
    wo = M.out_proj.weight
    aq, ak, mz = wq * lt.weight, wk * lt.weight, (wo @ wv) * lt.weight  # γ_t folded in: q_e = aq n_e, ...
    scale = 1.0 / math.sqrt(C)
    qc, kc = fc @ aq.t(), fc @ ak.t()  # [4, C]: Q_r, K_r of the constant token rows
    q0 = F.linear(lt.bias, wq, bq)  # W_q β_t + b_q
    o0 = F.linear(F.linear(lt.bias, wv, bv), wo, M.out_proj.bias)  # [C]
    zhc = _cen(torch.cat([fc @ mz.t(), o0.unsqueeze(0)], 0))  # [5, C]: centred constant output rows
    n2 = cen_mat @ (la.weight.unsqueeze(1) * (cen_mat @ mz))  # Ž_0 = n2 n_e = cen(γ_a ⊙ cen(mz n_e))
    zc = _cen(zhc * la.weight)  # [5, C]: Ž_r of the constant rows
    cw = _cen(la.bias - b0)  # cen(h + β_a) = n_e + cw
    quad_mats = torch.cat([ak.t() @ aq, mz.t() @ cen_mat @ mz, n2, n2.t() @ n2], 1)  # [C, 4C]
    lin = torch.cat([fc.t(), (aq.t() @ kc.t()) * scale, (ak.t() @ qc.t()) * scale, (ak.t() @ q0).unsqueeze(1) * scale,
                     mz.t() @ zhc.t(), cw.unsqueeze(1), n2.t() @ cw.unsqueeze(1), zc.t(), n2.t() @ zc.t(),
                     lo.weight.unsqueeze(1), n2.t() @ lo.weight.unsqueeze(1)], 1)  # [C, 32]
    feats = n @ torch.cat([quad_mats, lin], 1)  # [E, 4C + 32]
    quad, li = feats.split([4 * C, 32], 1)  # split, not slices: one cat in each backward, not one zeros + copy each
    qd = (quad.view(E, 4, C) * n.unsqueeze(1)).sum(-1)  # [E, 4]: nᵀ A n
    nn_ = (n * n).sum(-1, keepdim=True)  # [E, 1]
    z = torch.cat([nn_, qd, li], 1)  # [E, 37]
    cv = torch.cat([(fc @ fc.t()).reshape(16), ((qc @ kc.t()) * scale).reshape(16), (kc @ q0) * scale,
                    (zhc @ zhc.t()).reshape(25), (cw @ cw).reshape(1), (zc @ zc.t()).reshape(25), zc @ cw,
                    (cw @ lo.weight).reshape(1), zc @ lo.weight])  # [98]
    return z, cv, scale


def _assemble_forms(z, cv, scale):
    """The per-edge forms from :func:`_edge_scalars_one_head`'s (z, cv, scale): GV [E, 5, 5], BT [E, 5, 5], b [E, 5, 1],
    Ga [E, 6, 6], Go [E, 7, 7], g [E, 7] (the native kernel assembles the same in its lanes)."""
    E = z.shape[0]
    nn_, qd, nf, b0s, br0, bb0, ga0, ncw, n2cw, nzc, n2zc, ngo, n2go = z.split([1, 4, 4, 4, 4, 1, 5, 1, 1, 5, 5, 1, 1], 1)
    CF, CB, cb, CA, cwcw, CZ, cw_zc, cwgo, zgo = cv.split([16, 16, 4, 25, 1, 25, 5, 1, 5])
    GV = _bordered(nn_.unsqueeze(-1), nf.unsqueeze(1), CF.view(4, 4))
    # B with rows r (query coefficient) and columns s (key coefficient); BT = Bᵀ
    B = _bordered_general(qd[:, 0:1].unsqueeze(-1) * scale, b0s.unsqueeze(1), br0.unsqueeze(2), CB.view(4, 4))
    b = torch.cat([bb0, cb.expand(E, 4)], 1).unsqueeze(-1)  # [E, 5, 1]
    Ga = _bordered(qd[:, 1:2].unsqueeze(-1), ga0.unsqueeze(1), CA.view(5, 5))  # [E, 6, 6]
    go_ww = nn_ + 2 * ncw + cwcw
    go_w0 = qd[:, 2:3] + n2cw
    corner = torch.cat([torch.cat([go_ww, go_w0], 1).unsqueeze(1), torch.cat([go_w0, qd[:, 3:4]], 1).unsqueeze(1)], 1)
    edge = torch.cat([(nzc + cw_zc).unsqueeze(1), n2zc.unsqueeze(1)], 1)  # [E, 2, 5]
    Go = _bordered(corner, edge, CZ.view(5, 5))  # [E, 7, 7]
    g = torch.cat([ngo + cwgo, n2go, zgo.expand(E, 5)], 1)  # [E, 7]
    return GV, B.transpose(1, 2), b, Ga, Go, g


def _bordered_general(corner, row, col, const):
    """[[corner, row], [col, const]]: corner [E, 1, 1], row [E, 1, q], col [E, q, 1], const [q, q]."""
    E = corner.shape[0]
    return torch.cat([torch.cat([corner, row], 2), torch.cat([col, const.expand(E, *const.shape)], 2)], 1)
