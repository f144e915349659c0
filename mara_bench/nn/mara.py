"""MARA: a scalar gate α_e ∈ (0, 1) per edge message, from spherical attention over a grid (spec: shared/MARA.md).

``MARA(D, variant="paper")`` — the published module, restated from the spec (steps 1-8):

1. r = |d|, d̂ = d/r with d = p_sender − p_receiver.
2. K = H·W grid directions u_k with quadrature weights ω_k (:mod:`mara_bench.nn.s2grid`, Σω = 4π).
3. ρ_ek = |r·u_k + d| = r·sqrt(|u_k + d̂|²) = r·sqrt(2 + 2 u_k·d̂), computed from |u_k + d̂|² (no cancellation near
   the antipode) with the argument clamped at ``RHO_EPS`` so the gradient stays finite where ρ = 0.
4. t_ek = LayerNorm(h_e + W_f ρ_ek + W_p u_k) with h_e = W_h m_e (one C-vector per edge, broadcast over k).
5. Self-attention over the K tokens of each edge: softmax_k'(q_k·k_k'/sqrt(C/heads) + log ω_k') v_k', then an
   output projection (torch-harmonics ``AttentionS2`` semantics, batched over edges as [E, K, C]).
6. y_ek = LayerNorm(h_e + LayerNorm(attn_ek)); ȳ_ek = mean_c y_ekc; α_e = sigmoid(Σ_k w_k ȳ_ek + b).
   Decision: the h_e of the readout skip is the *same* W_h·m_e as in the tokens (spec step 6 writes W_h·m_e
   for both; the release's parameter counts, 135,745 for D = 4096, only fit one shared W_h).
7. m'_e = m_e + α_e·m_e.

How ``paper`` is computed (``MARA.set_impl``, all equal to ≤ 1e-10 in float64 for values and first and second
derivatives): ``"folded"`` (default, :mod:`mara_bench.nn.kernels`: the token algebra folded into a few coefficients
per grid point, no [E, K, C] tensor, on the grid's distinct directions: the W copies of each pole are one token),
the readable token path ``tokens`` → ``attend`` → ``gate_readout``
(``"fused"``, ``"matmul"``, ``"sdpa"``), and ``"reference"`` (:class:`ReferenceMARA`'s torch-harmonics
``AttentionS2`` computation on [E, C, H, W], the release-style path, for timing).

``MARA(D, variant="control")``: α_e = sigmoid(MLP([l=0 channels of m_e, Bessel radial basis of r_e])), exactly
rotation invariant; a 2-hidden-layer SiLU MLP whose width is chosen so its parameter count matches ``paper``.

``MARA(D, variant="scale")``: α = sigmoid(b), one learned scalar per module (so per interaction block), the same
for every edge: the messages are multiplied by a learned constant 1 + α. ``b`` is drawn like the ``paper``
readout's bias, U(−1/sqrt(K), 1/sqrt(K)); since the ``paper`` gate at initialisation is exactly sigmoid(readout bias)
(its readout averages a fresh LayerNorm, which is 0), ``scale`` starts where ``paper`` starts. It separates "messages
rescaled by ~1.5" from "attention": the spherical attention gets credit only when ``paper`` beats ``scale`` and
``control``.

Parameter count of ``paper`` (C = hidden, K = H·W): W_h D·C + C; W_f 2C; W_p 4C; three LayerNorms 6C; Q, K, V, O
4C² + 4C; readout K + 1; total D·C + 4C² + 17C + K + 1 (135,745 for D = 4096, 332,353 for D = 10240).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError, unknown
from .functions import gated_messages
from .kernels import folded_gates
from .s2grid import RHO_EPS, distinct_directions, grid_points, grid_weights

VARIANTS = ("scale", "control", "paper")  # the gated rungs of the ablation ladder (config.MARA_VARIANTS)
# how ``paper`` computes its gate (MARA.set_impl): "folded" (default, kernels.folded_gates: no [E, K, C] token
# tensor; on the CPU all after the per-edge scalars runs in the native kernel, nn/native.py), "folded-torch" (the
# same in torch ops only, the kernel's readable reference), "fused" / "matmul" / "sdpa" (the readable token path
# tokens -> attend -> gate_readout with that attention),
# "reference" (ReferenceMARA's computation: tokens [E, C, H, W] through torch-harmonics AttentionS2, release-style)
IMPLS = ("folded", "folded-torch", "fused", "matmul", "sdpa", "reference")


def paper_param_count(message_dim: int, hidden: int = 32, grid: tuple[int, int] = (4, 8)) -> int:
    """Trainable parameters of the ``paper`` variant: D·C + 4C² + 17C + K + 1."""
    C, K = hidden, grid[0] * grid[1]
    return message_dim * C + 4 * C * C + 17 * C + K + 1


def control_param_count(n_in: int, width: int) -> int:
    """Linear(n_in, h) + Linear(h, h) + Linear(h, 1), all with bias."""
    return (n_in + 1) * width + (width + 1) * width + width + 1


def control_width(n_in: int, target: int) -> int:
    """MLP width whose :func:`control_param_count` is closest to ``target``."""
    b = n_in + 3  # count(h) = h² + (n_in + 3) h + 1
    h0 = max(1, int((-b + math.sqrt(b * b + 4 * max(target - 1, 0))) / 2))
    cands = [h for h in (h0 - 1, h0, h0 + 1, h0 + 2) if h >= 1]
    return min(cands, key=lambda h: abs(control_param_count(n_in, h) - target))


def bessel_basis(r: torch.Tensor, num: int, r_max: float) -> torch.Tensor:
    """sqrt(2/r_max)·sin(nπ r/r_max)/r for n = 1..num; r [E, 1] -> [E, num]."""
    n = torch.arange(1, num + 1, dtype=r.dtype, device=r.device)
    return math.sqrt(2.0 / r_max) * torch.sin(n * (math.pi / r_max) * r) / r


def _grid_constants(H: int, W: int, dtype: torch.dtype, device) -> dict[str, torch.Tensor]:
    """The grid buffers of :class:`MARA`, computed in float64 and cast: points u_k and log quadrature weights, and
    the distinct directions (the W copies of a pole are one; what the folded path computes on) with their log
    weights and the [K, K'] merge matrix."""
    u, w, merge = distinct_directions(H, W, torch.float64, device)
    log_w = torch.log(grid_weights(H, W, torch.float64, device))
    return {"grid_u": grid_points(H, W, dtype, device), "log_w": log_w.to(dtype), "distinct_u": u.to(dtype),
            "distinct_log_w": torch.log(w).to(dtype), "distinct_merge": merge.to(dtype)}


def _scalar_index(scalar_slice, message_dim: int):
    if scalar_slice is None:
        return slice(0, message_dim), message_dim
    if isinstance(scalar_slice, slice):
        n = len(range(*scalar_slice.indices(message_dim)))
        if n == 0:
            raise ValueError(f"scalar_slice {scalar_slice} selects no channel of a {message_dim}-dim message")
        return scalar_slice, n
    idx = torch.as_tensor(list(scalar_slice) if isinstance(scalar_slice, Sequence) else scalar_slice, dtype=torch.long)
    if idx.ndim != 1 or idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= message_dim:
        raise ValueError(f"scalar_slice indices must be a non-empty 1-D list within [0, {message_dim})")
    return idx, int(idx.numel())


class MARA(nn.Module):
    """Edge-message gate. ``forward(m [E, D], d [E, 3]) -> (m + α·m [E, D], α [E, 1])``; ``last_gates`` detached."""

    def __init__(self, message_dim: int, variant: str = "paper", hidden: int = 32, grid: tuple[int, int] = (4, 8),
                 heads: int = 1, scalar_slice: slice | Sequence[int] | None = None, num_radial: int = 8,
                 r_max: float = 5.0):
        super().__init__()
        if variant == "on":
            variant = "paper"
        if variant not in VARIANTS:
            raise unknown("MARA variant", variant, VARIANTS)
        H, W = (int(g) for g in grid)
        if H < 2 or W < 1:
            raise UserError(f"MARA grid {H}x{W}: need at least 2 colatitudes and 1 longitude, e.g. 4x8")
        if hidden < 1 or heads < 1 or hidden % heads:
            raise UserError(f"MARA hidden={hidden}, heads={heads}: hidden must be a positive multiple of heads")
        if message_dim < 1:
            raise ValueError(f"message_dim must be positive, got {message_dim}")
        self.variant, self.message_dim, self.hidden, self.heads = variant, int(message_dim), int(hidden), int(heads)
        self.grid_shape, self.num_radial, self.r_max = (H, W), int(num_radial), float(r_max)
        self.last_gates: torch.Tensor | None = None
        # the path of gates() for "paper": "folded" (default) | "tokens" (tokens -> attend -> gate_readout) |
        # "reference" (torch-harmonics AttentionS2 on [E, C, H, W]); choose with set_impl
        self.impl = "folded"
        # attention of the token path: "fused" (one head, projections multiplied out) | "matmul" (explicit q, k, v) |
        # "sdpa" (torch's scaled_dot_product_attention; its CPU kernels may lack double backward: not for training)
        self.attention_impl = "fused"
        K, C = H * W, self.hidden
        # grid constants: exact float64 values re-derived in the module's dtype after every .to() (see _apply)
        for name, value in _grid_constants(H, W, torch.get_default_dtype(), None).items():
            self.register_buffer(name, value, persistent=False)
        if variant == "paper":
            self.w_h = nn.Linear(message_dim, C)
            self.w_f = nn.Linear(1, C)
            self.w_p = nn.Linear(3, C)
            self.norm_tokens = nn.LayerNorm(C)
            self.qkv = nn.Linear(C, 3 * C)
            self.out_proj = nn.Linear(C, C)
            self.norm_attn = nn.LayerNorm(C)
            self.norm_out = nn.LayerNorm(C)
            self.readout = nn.Linear(K, 1)
        elif variant == "scale":
            bound = 1.0 / math.sqrt(K)  # nn.Linear(K, 1)'s bias init: the paper gate's initial value
            self.gate_logit = nn.Parameter(torch.empty(1).uniform_(-bound, bound))
        else:
            idx, n_scalar = _scalar_index(scalar_slice, message_dim)
            if isinstance(idx, torch.Tensor):
                self.register_buffer("scalar_index", idx, persistent=False)
                self._scalar_slice = None
            else:
                self._scalar_slice = idx
            n_in = n_scalar + self.num_radial
            self.mlp_width = control_width(n_in, paper_param_count(message_dim, C, (H, W)))
            h = self.mlp_width
            self.mlp = nn.Sequential(nn.Linear(n_in, h), nn.SiLU(), nn.Linear(h, h), nn.SiLU(), nn.Linear(h, 1))

    def extra_repr(self) -> str:
        H, W = self.grid_shape
        s = f"variant={self.variant}, message_dim={self.message_dim}, hidden={self.hidden}, grid={H}x{W}"
        if self.variant == "scale":
            return f"variant=scale, message_dim={self.message_dim}"
        return s + (f", heads={self.heads}" if self.variant == "paper" else f", mlp_width={self.mlp_width}")

    def set_impl(self, impl: str) -> MARA:
        """Choose how ``paper`` computes its gate (one of :data:`IMPLS`); all give the same values and derivatives.

        ``"reference"`` adds a torch-harmonics ``AttentionS2`` submodule holding *copies* of the Q, K, V and output
        weights (made now): it is meant for timing the release-style computation, and training then updates the
        copies, not ``qkv`` / ``out_proj``. Other variants ignore the choice."""
        if impl not in IMPLS:
            raise unknown("MARA implementation", impl, IMPLS)
        if self.variant != "paper":
            return self
        if impl == "reference":
            self.reference_att = reference_attention(self)
            self.impl = "reference"
        else:
            if "reference_att" in self._modules:
                del self._modules["reference_att"]
            self.impl = impl if impl.startswith("folded") else "tokens"
            if not impl.startswith("folded"):
                self.attention_impl = impl
        return self

    def _apply(self, fn, recurse=True):
        out = super()._apply(fn, recurse)
        H, W = self.grid_shape
        for name, value in _grid_constants(H, W, self.grid_u.dtype, self.grid_u.device).items():
            setattr(self, name, value)
        return out

    # ------------------------------------------------------------------ forward
    def forward(self, edge_messages: torch.Tensor, edge_vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        m, d = edge_messages, edge_vectors
        if m.ndim != 2 or m.shape[1] != self.message_dim:
            raise ValueError(f"MARA expects edge messages [E, {self.message_dim}], got {tuple(m.shape)}")
        if d.shape != (m.shape[0], 3):
            raise ValueError(f"MARA expects edge vectors [{m.shape[0]}, 3], got {tuple(d.shape)}")
        pdt = self.grid_u.dtype
        if m.dtype != pdt or d.dtype != pdt:
            raise ValueError(f"MARA holds {pdt} but got messages {m.dtype} / vectors {d.dtype}; call .to(dtype) first")
        gates = self.gates(m, d)
        self.last_gates = gates.detach()
        return gated_messages(m, gates), gates  # m + α·m (spec step 7), few [E, D] tensors in (double) backward

    def gates(self, m: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        """α [E, 1] without touching ``last_gates``."""
        if self.variant == "control":
            return self._control_gates(m, d)
        if self.variant == "scale":
            return torch.sigmoid(self.gate_logit).expand(m.shape[0], 1)
        if self.impl in ("folded", "folded-torch"):
            return folded_gates(self, m, d, native_pass=self.impl == "folded")
        if self.impl == "reference":
            return reference_gates(self, self.reference_att, m, d)
        h, t = self.tokens(m, d)
        return self.gate_readout(h, self.attend(t))

    def _control_gates(self, m, d):
        r = torch.linalg.vector_norm(d, dim=-1, keepdim=True)
        s = m[:, self._scalar_slice] if self._scalar_slice is not None else m.index_select(1, self.scalar_index)
        return torch.sigmoid(self.mlp(torch.cat([s, bessel_basis(r, self.num_radial, self.r_max)], dim=-1)))

    # ------------------------------------------------------------------ paper pieces
    def distances(self, d: torch.Tensor, u: torch.Tensor | None = None) -> torch.Tensor:
        """ρ_ek [E, K]: distance from the grid point p_j + r u_k to the receiver (spec step 3); ``u`` [K, 3] other
        directions than the grid's (the folded path passes the distinct ones)."""
        r = torch.linalg.vector_norm(d, dim=-1, keepdim=True)
        # [E, 3, K] layout (sum over the middle axis): a last axis of 3 makes every pass of the (double) backward slow
        s = ((self.grid_u if u is None else u).t() + (d / r).unsqueeze(-1)).square().sum(1)
        return r * torch.sqrt(torch.clamp(s, min=RHO_EPS))

    def tokens(self, m: torch.Tensor, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(h = W_h m [E, C], tokens t [E, K, C]) (spec step 4)."""
        h = self.w_h(m)
        rho = self.distances(d)
        E, K = rho.shape
        # W_f ρ + W_p u + biases as one small matmul over [ρ, u, 1] (cheap backward); then + h broadcast over k
        x = torch.cat([rho.unsqueeze(-1), self.grid_u.expand(E, K, 3), torch.ones_like(rho).unsqueeze(-1)], dim=-1)
        w = torch.cat([self.w_f.weight, self.w_p.weight, (self.w_f.bias + self.w_p.bias).unsqueeze(1)], dim=1)
        pre = F.linear(x, w).add_(h.unsqueeze(1))
        return h, self.norm_tokens(pre)

    def attend(self, t: torch.Tensor) -> torch.Tensor:
        """Quadrature-weighted self-attention over the K tokens of each edge + output projection; [E, K, C]."""
        E, K, C = t.shape
        nh = self.heads
        ch = C // nh
        if nh == 1 and self.attention_impl == "fused":
            return self._attend_fused(t)
        # fold the 1/sqrt(ch) score scale into the query projection (a [C, C] op instead of an [E, K, K] one)
        scale = torch.ones(3 * C, dtype=t.dtype, device=t.device)
        scale[:C] = 1.0 / math.sqrt(ch)
        qkv = F.linear(t, self.qkv.weight * scale[:, None], self.qkv.bias * scale)
        if nh == 1:
            q, k, v = qkv.split(C, dim=-1)  # strided views, no copies
        else:
            q, k, v = qkv.view(E, K, 3, nh, ch).permute(2, 0, 3, 1, 4).unbind(0)  # [E, nh, K, ch]
        if self.attention_impl == "sdpa":
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.log_w.unsqueeze(0), scale=1.0)
        else:
            o = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(-1, -2)).add_(self.log_w), dim=-1), v)
        if nh > 1:
            o = o.transpose(1, 2).reshape(E, K, C)
        return self.out_proj(o)

    def _attend_fused(self, t: torch.Tensor) -> torch.Tensor:
        """One head, with the projections multiplied out (exact algebra, fewer [E, K, C] tensors):
        q_k·k_j = t_k A t_j + c·t_j + (terms constant in j, which cancel in the softmax), A = W_qᵀW_k, c = W_kᵀb_q;
        O(Σ_j P_kj v_j) + b_O = (P t)_k (W_O W_V)ᵀ + W_O b_V + b_O because Σ_j P_kj = 1."""
        C = t.shape[-1]
        wq, wk, wv = self.qkv.weight.split(C, 0)
        bq, _, bv = self.qkv.bias.split(C, 0)
        s = 1.0 / math.sqrt(C)
        p = torch.matmul(t, (wq.t() @ wk) * s)
        key_bias = torch.matmul(t, (wk.t() @ bq) * s).unsqueeze(1) + self.log_w  # [E, 1, K]
        probs = torch.softmax(torch.baddbmm(key_bias, p, t.transpose(1, 2)), dim=-1)
        wo = self.out_proj.weight
        return F.linear(torch.bmm(probs, t), wo @ wv, wo @ bv + self.out_proj.bias)

    def gate_readout(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """α = sigmoid(w · mean_c LayerNorm(h + LayerNorm(a)) + b), [E, 1] (spec step 6)."""
        z = self.norm_attn(a).add_(h.unsqueeze(1))
        C = z.shape[-1]
        # mean over channels of an affine LayerNorm = normalised z · γ / C + mean(β): skip the [E, K, C] affine
        zn = F.layer_norm(z, (C,), eps=self.norm_out.eps)
        ybar = torch.matmul(zn, self.norm_out.weight / C) + self.norm_out.bias.mean()
        return torch.sigmoid(self.readout(ybar))


class ReferenceMARA(nn.Module):
    """The ``paper`` gate computed the straightforward way: tokens laid out [E, C, H, W] (W_h·m repeated over the
    grid) through torch-harmonics' ``AttentionS2``, whose weights are copied from ``mara``. Used to check the batched
    path (tests) and as the speed baseline (benchmarks/mara_kernel.py). Token and readout layers are shared."""

    def __init__(self, mara: MARA):
        super().__init__()
        if mara.variant != "paper":
            raise ValueError("ReferenceMARA needs a 'paper' MARA")
        self.mara = mara
        self.att = reference_attention(mara)

    def forward(self, m: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
        return reference_gates(self.mara, self.att, m, d)


def reference_gates(mara: MARA, att: nn.Module, m: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The ``paper`` gate the straightforward way, with ``att`` a torch-harmonics ``AttentionS2``."""
    H, W = mara.grid_shape
    E, C = m.shape[0], mara.hidden
    h = mara.w_h(m)
    h_img = h[:, :, None, None].repeat(1, 1, H, W)  # [E, C, H, W]
    rho = mara.distances(d).view(E, 1, H, W)
    g = (mara.w_p(mara.grid_u) + mara.w_f.bias).t().reshape(1, C, H, W)
    pre = h_img + mara.w_f.weight.view(1, C, 1, 1) * rho + g
    t = mara.norm_tokens(pre.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # LayerNorm over channels
    a = att(t)  # [E, C, H, W]
    z = h_img + mara.norm_attn(a.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    y = mara.norm_out(z.permute(0, 2, 3, 1)).mean(-1).reshape(E, H * W)
    return torch.sigmoid(mara.readout(y))


def reference_attention(mara: MARA):
    """A torch-harmonics ``AttentionS2`` holding copies of ``mara``'s Q, K, V and output projections.

    Its ``log_quad_weights`` buffer is recomputed from torch-harmonics' own latitudes in float64 (it builds them in
    float32), so that float64 comparisons are not limited by float32 rounding of the constant.
    """
    from torch_harmonics import AttentionS2
    from torch_harmonics.quadrature import precompute_latitudes

    H, W = mara.grid_shape
    C = mara.hidden
    p = mara.qkv.weight
    att = AttentionS2(C, mara.heads, (H, W), (H, W), grid_in="equiangular", grid_out="equiangular", bias=True)
    att = att.to(device=p.device, dtype=p.dtype)
    with torch.no_grad():
        for i, name in enumerate(("q", "k", "v")):
            getattr(att, f"{name}_weights").copy_(p[i * C:(i + 1) * C].view(C, C, 1, 1))
            getattr(att, f"{name}_bias").copy_(mara.qkv.bias[i * C:(i + 1) * C])
        att.proj_weights.copy_(mara.out_proj.weight.view(C, C, 1, 1))
        att.proj_bias.copy_(mara.out_proj.bias)
    _, wlat = precompute_latitudes(H, grid="equiangular")
    logw = torch.log(2.0 * math.pi * wlat.to(torch.float64) / W).repeat_interleave(W).reshape(1, 1, -1)
    att.log_quad_weights = logw.to(device=p.device, dtype=p.dtype)
    return att


def parameter_table(hidden: int = 32, grid: tuple[int, int] = (4, 8)) -> list[str]:
    """Lines for ``mara_bench list --mara-details``: counts for the message sizes of the paper's 2-layer MACE."""
    H, W = grid
    rows = [(4096, 256, "MACE layer 1: 256x(0e+1o+2e+3o), 256 l=0 channels"),
            (10240, 512, "MACE layer 2: 256x40 channels, 512 l=0 channels")]
    lines = [f"MARA parameters (hidden C={hidden}, grid {H}x{W}, K={H * W}; paper = D*C + 4C^2 + 17C + K + 1):"]
    total = {"paper": 0, "control": 0}
    for D, n_scalar, what in rows:
        paper = MARA(D, "paper", hidden, grid)
        control = MARA(D, "control", hidden, grid, scalar_slice=slice(0, n_scalar))
        n_p = sum(p.numel() for p in paper.parameters())
        n_c = sum(p.numel() for p in control.parameters())
        total["paper"] += n_p
        total["control"] += n_c
        lines.append(f"  D={D:<6} paper {n_p:>9,}   control {n_c:>9,} (MLP width {control.mlp_width})   [{what}]")
    lines.append(f"  2-layer MACE total: paper {total['paper']:,}, control {total['control']:,}, scale 2 (one per block)")
    return lines
