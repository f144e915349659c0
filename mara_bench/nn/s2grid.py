"""The equiangular latitude-longitude grid on S² used by MARA, with its quadrature weights.

Conventions (spec step 2, torch-harmonics' ``"equiangular"`` grid):

* ``H`` colatitudes θ_i = π·i/(H−1), i = 0..H−1 (both poles included), weights from Clenshaw–Curtis
  quadrature in cos θ on [−1, 1] (so the sin θ Jacobian is built in);
* ``W`` longitudes φ_j = 2π·j/W, j = 0..W−1 (no repeated 0/2π meridian), uniform weight 2π/W;
* flattened point index k = i·W + j (row-major over (H, W), the layout of a ``[.., H, W]`` image);
* ω_k = w_i·2π/W, Σ_k ω_k = 4π (exact up to rounding).

Everything is computed in float64 with numpy/torch and cached; callers cast to their dtype.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

__all__ = ["clenshaw_curtis", "colatitudes", "longitudes", "grid_points", "grid_weights", "distinct_directions", "S2Grid"]

RHO_EPS = 1e-12  # clamp of |u + d̂|² inside the sqrt of ρ (an angle of 1e-6 rad around the antipode)


@lru_cache(maxsize=64)
def clenshaw_curtis(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Clenshaw–Curtis nodes x_i = −cos(π i/(n−1)) (ascending in [−1, 1]) and weights for ∫_{−1}^{1} f dx.

    Direct cosine-sum formula (Trefethen, "Spectral methods in MATLAB", ``clencurt``); exact for polynomials of
    degree n−1. Returns float64 arrays of length n (read-only).
    """
    if n < 2:
        raise ValueError(f"Clenshaw-Curtis needs at least 2 nodes, got {n}")
    N = n - 1
    theta = np.pi * np.arange(n) / N
    w = np.zeros(n)
    v = np.ones(n - 2)
    interior = theta[1:-1]
    if N % 2 == 0:
        w[0] = w[N] = 1.0 / (N * N - 1)
        for k in range(1, N // 2):
            v -= 2.0 * np.cos(2 * k * interior) / (4 * k * k - 1)
        v -= np.cos(N * interior) / (N * N - 1)
    else:
        w[0] = w[N] = 1.0 / (N * N)
        for k in range(1, (N - 1) // 2 + 1):
            v -= 2.0 * np.cos(2 * k * interior) / (4 * k * k - 1)
    w[1:-1] = 2.0 * v / N
    x = -np.cos(theta)  # ascending
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def colatitudes(nlat: int) -> tuple[np.ndarray, np.ndarray]:
    """Colatitudes θ (ascending from the north pole 0 to the south pole π) and their weights (Σ = 2)."""
    x, w = clenshaw_curtis(nlat)
    # node x = cos θ; ascending x means descending θ, so flip to get θ ascending (torch-harmonics convention)
    theta = np.arccos(np.clip(x[::-1], -1.0, 1.0))
    theta[0], theta[-1] = 0.0, math.pi
    return theta, w[::-1].copy()


def longitudes(nlon: int) -> np.ndarray:
    """φ_j = 2π j / W, j = 0..W−1."""
    if nlon < 1:
        raise ValueError(f"need at least 1 longitude, got {nlon}")
    return 2.0 * math.pi * np.arange(nlon) / nlon


@lru_cache(maxsize=64)
def _grid(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray]:
    theta, wlat = colatitudes(nlat)
    phi = longitudes(nlon)
    st, ct = np.sin(theta), np.cos(theta)
    # poles: sin θ is exactly 0 there; the W copies of a pole coincide (torch-harmonics keeps them too)
    st[0] = st[-1] = 0.0
    pts = np.stack(
        [st[:, None] * np.cos(phi)[None, :], st[:, None] * np.sin(phi)[None, :], np.broadcast_to(ct[:, None], (nlat, nlon))],
        axis=-1,
    ).reshape(nlat * nlon, 3)
    weights = np.repeat(wlat * (2.0 * math.pi / nlon), nlon)
    pts.setflags(write=False)
    weights.setflags(write=False)
    return pts, weights


@lru_cache(maxsize=64)
def _distinct(nlat: int, nlon: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pts, weights = _grid(nlat, nlon)
    _, first, inverse = np.unique(pts, axis=0, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first)] = np.arange(len(first))  # distinct points in order of first occurrence
    group = rank[inverse.reshape(-1)]
    out = pts[np.sort(first)], np.bincount(group, weights=weights, minlength=len(first)), group
    for a in out:
        a.setflags(write=False)
    return out


def distinct_directions(nlat: int, nlon: int, dtype: torch.dtype = torch.float64, device=None):
    """(points [K', 3], weights [K'], merge [K, K']) for the *distinct* directions of the grid.

    The W points of each pole row are one direction, so the grid has K' = (H−2)·W + 2 distinct directions (W > 1).
    Anything that depends on a grid point only through its direction u_k is the same for all copies: a sum
    Σ_k ω_k f(u_k) equals Σ_k' ω'_k' f(u'_k') with the copies' weights added (ω' = ω merge), and a per-point readout
    Σ_k w_k g(u_k) equals Σ_k' (w merge)_k' g(u'_k'). ``merge[k, k'] = 1`` where point k is direction k'."""
    pts, weights, group = _distinct(nlat, nlon)
    merge = torch.zeros(len(group), len(weights), dtype=dtype, device=device)
    merge[torch.arange(len(group)), torch.tensor(group)] = 1.0
    return torch.tensor(pts, dtype=dtype, device=device), torch.tensor(weights, dtype=dtype, device=device), merge


def grid_points(nlat: int, nlon: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Unit vectors u_k, shape [H·W, 3], k = i·W + j."""
    return torch.tensor(_grid(nlat, nlon)[0], dtype=dtype, device=device)


def grid_weights(nlat: int, nlon: int, dtype: torch.dtype = torch.float64, device=None) -> torch.Tensor:
    """Quadrature weights ω_k, shape [H·W], Σ ω = 4π."""
    return torch.tensor(_grid(nlat, nlon)[1], dtype=dtype, device=device)


class S2Grid:
    """Small value object: ``points`` [K, 3], ``weights`` [K], ``log_weights`` [K] (float64, CPU)."""

    def __init__(self, nlat: int, nlon: int):
        if nlat < 2 or nlon < 1:
            raise ValueError(f"grid must be at least 2x1 (lat x lon), got {nlat}x{nlon}")
        self.nlat, self.nlon = int(nlat), int(nlon)
        self.points = grid_points(nlat, nlon)
        self.weights = grid_weights(nlat, nlon)
        self.log_weights = torch.log(self.weights)

    @property
    def shape(self) -> tuple[int, int]:
        return self.nlat, self.nlon

    def __len__(self) -> int:
        return self.nlat * self.nlon

    def integrate(self, values: torch.Tensor) -> torch.Tensor:
        """Σ_k ω_k f_k over the last dimension (length K)."""
        return values @ self.weights.to(values)

    def __repr__(self) -> str:
        return f"S2Grid({self.nlat}x{self.nlon}, K={len(self)})"
