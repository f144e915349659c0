"""mara_bench.nn.s2grid: grid layout and quadrature, cross-checked against torch-harmonics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mara_bench.nn.s2grid import (
    S2Grid,
    clenshaw_curtis,
    colatitudes,
    distinct_directions,
    grid_points,
    grid_weights,
    longitudes,
)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 9, 16, 17, 32])
def test_colatitudes_and_weights_match_torch_harmonics(n):
    from torch_harmonics.quadrature import precompute_latitudes

    theta, w = colatitudes(n)
    th_theta, th_w = precompute_latitudes(n, grid="equiangular")
    np.testing.assert_allclose(theta, th_theta.numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(w, th_w.numpy(), rtol=0, atol=1e-14)
    np.testing.assert_allclose(theta, np.pi * np.arange(n) / (n - 1), atol=1e-14)  # equiangular, poles included


@pytest.mark.parametrize("n", [4, 8, 16, 32])
def test_longitudes_match_torch_harmonics(n):
    from torch_harmonics.quadrature import precompute_longitudes

    np.testing.assert_allclose(longitudes(n), precompute_longitudes(n).numpy(), atol=1e-15)
    assert longitudes(n)[-1] < 2 * math.pi - 1e-9  # no repeated 0/2π meridian


@pytest.mark.parametrize("grid", [(2, 1), (4, 8), (8, 16), (16, 32), (5, 7)])
def test_weights_sum_to_4pi(grid):
    w = grid_weights(*grid)
    assert w.shape == (grid[0] * grid[1],)
    assert abs(float(w.sum()) - 4 * math.pi) <= 1e-13
    assert bool((w > 0).all())


@pytest.mark.parametrize("n", [3, 4, 7, 8, 16])
def test_clenshaw_curtis_is_exact_on_polynomials(n):
    x, w = clenshaw_curtis(n)
    for k in range(n):
        exact = (1 - (-1) ** (k + 1)) / (k + 1)
        assert abs(float(w @ x**k) - exact) <= 1e-13, k


def test_points_layout_and_norm():
    H, W = 4, 8
    u = grid_points(H, W)
    assert u.shape == (H * W, 3)
    assert torch.allclose(u.norm(dim=-1), torch.ones(H * W, dtype=torch.float64), atol=1e-15)
    theta, _ = colatitudes(H)
    phi = longitudes(W)
    k = 2 * W + 3  # row-major (lat, lon)
    expected = [math.sin(theta[2]) * math.cos(phi[3]), math.sin(theta[2]) * math.sin(phi[3]), math.cos(theta[2])]
    assert torch.allclose(u[k], torch.tensor(expected, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(u[:W], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(W, 3))  # north pole row
    assert torch.allclose(u[-W:], torch.tensor([0.0, 0.0, -1.0], dtype=torch.float64).expand(W, 3))


def test_quadrature_integrates_low_degree_harmonics():
    g = S2Grid(8, 16)
    x, y, z = g.points.unbind(-1)
    four_pi = 4 * math.pi
    for f, exact in [(torch.ones_like(x), four_pi), (z, 0.0), (x, 0.0), (x * y, 0.0), (z**2, four_pi / 3),
                     (x**2, four_pi / 3), (x**2 * z**2, four_pi / 15)]:
        assert abs(float(g.integrate(f)) - exact) <= 1e-12


def test_quadrature_matches_torch_harmonics_quadrature_module():
    from torch_harmonics.quadrature import QuadratureS2

    H, W = 8, 16
    f = torch.randn(2, H, W, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    ours = S2Grid(H, W).integrate(f.reshape(2, H * W))
    theirs = QuadratureS2((H, W), grid="equiangular", normalize=False).double()(f)
    # QuadratureS2 builds its weight buffer in float32 (then .double() only widens it): float32-level agreement
    assert torch.allclose(ours, theirs.reshape(-1), rtol=1e-6, atol=1e-6)


def test_dtype_device_and_bad_sizes():
    assert grid_points(4, 8, dtype=torch.float32).dtype == torch.float32
    assert grid_weights(4, 8, dtype=torch.float32).dtype == torch.float32
    with pytest.raises(ValueError):
        S2Grid(1, 8)
    with pytest.raises(ValueError):
        clenshaw_curtis(1)
    assert repr(S2Grid(4, 8)) == "S2Grid(4x8, K=32)" and len(S2Grid(4, 8)) == 32


@pytest.mark.parametrize("grid,distinct", [((4, 8), 18), ((3, 5), 7), ((2, 1), 2), ((2, 6), 2), ((8, 16), 98)])
def test_distinct_directions_merge_the_pole_copies(grid, distinct):
    H, W = grid
    pts, w, merge = distinct_directions(H, W)
    full, wfull = grid_points(H, W), grid_weights(H, W)
    assert pts.shape == (distinct, 3) and w.shape == (distinct,) and merge.shape == (H * W, distinct)
    assert torch.equal(merge.sum(1), torch.ones(H * W, dtype=merge.dtype))  # each point is exactly one direction
    assert torch.equal(merge @ pts, full)  # every grid point is its direction, exactly
    assert torch.allclose(wfull @ merge, w, rtol=0, atol=1e-15)  # the copies' weights are added
    assert len({tuple(p) for p in pts.tolist()}) == distinct  # and the directions are distinct
    # a quadrature sum over the grid equals the weighted sum over the distinct directions
    f = torch.sin(3 * full[:, 0]) + full[:, 2] ** 3
    assert abs(float(wfull @ f - w @ (torch.sin(3 * pts[:, 0]) + pts[:, 2] ** 3))) < 1e-13
