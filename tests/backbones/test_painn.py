"""PaiNN backbone: the backbone test kit (all MARA variants) plus PaiNN-specific checks."""

from __future__ import annotations

import copy
import importlib.util
import random

import numpy as np
import pytest
import torch
from mara_bench_backbones.painn import PaiNNBackbone
from mara_bench_backbones.painn_mara import MaraPaiNNInteraction
from smoke_models import preset_parameter_counts, smoke_tools

from mara_bench.backbone import MaraOptions
from mara_bench.errors import UserError
from mara_bench.testing import BackboneTestKit, KitStats

pytestmark = pytest.mark.skipif(importlib.util.find_spec("schnetpack") is None, reason="schnetpack is not installed")


class TestPaiNNKit(BackboneTestKit):
    backbone = "painn"


SMOKE, build, batch = smoke_tools(PaiNNBackbone)


def test_schnetpack_shim_is_small_and_harmless():
    """schnetpack 2.1.1 imports on this torch through the shim, without touching the RNGs or the dtype."""
    import torch.utils.data.dataloader as dl
    from mara_bench_backbones._schnetpack_compat import import_schnetpack

    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    states = random.getstate(), np.random.get_state()[1].copy(), torch.random.get_rng_state()
    spk = import_schnetpack()
    assert spk.__version__ == "2.1.1" and hasattr(dl, "T_co")
    assert spk.representation.PaiNN.__module__ == "schnetpack.representation.painn"
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    assert torch.equal(torch.random.get_rng_state(), states[2])
    assert torch.get_default_dtype() == torch.float32


def test_gated_filter_equals_gated_messages():
    """The seam: running schnetpack's interaction with W_ij (1 + a_ij) gives sum_j (1 + a_ij) m_ij exactly."""
    m = build("paper")
    block = m.representation.interactions[0]
    assert isinstance(block, MaraPaiNNInteraction)
    b = batch()
    n, F = b.num_atoms.sum().item(), block.n_atom_basis
    gen = torch.Generator().manual_seed(0)
    E = b.edge_index.shape[1]
    q, mu = torch.randn(n, 1, F, generator=gen, dtype=torch.float64), torch.randn(n, 3, F, generator=gen,
                                                                                     dtype=torch.float64)
    Wij = torch.randn(E, 1, 3 * F, generator=gen, dtype=torch.float64)
    r = -b.edge_vectors()
    dir_ij = r / r.norm(dim=1, keepdim=True)
    idx_i, idx_j = b.edge_index[1], b.edge_index[0]
    gates = torch.rand(E, 1, generator=gen, dtype=torch.float64)
    block.context.vectors = r
    block.mara.forward = lambda msg, vec: (msg + gates * msg, gates)
    q2, mu2 = block(q, mu, Wij, dir_ij, idx_i, idx_j, n)
    msgs = (1 + gates) * block.messages(q, mu, Wij, dir_ij, idx_j)  # [E, 4F]
    summed = torch.zeros(n, 4 * F, dtype=torch.float64).index_add(0, idx_i, msgs)
    assert torch.allclose(q2.squeeze(1) - q.squeeze(1), summed[:, :F], atol=1e-12)
    assert torch.allclose((mu2 - mu).reshape(n, -1), summed[:, F:], atol=1e-12)


def test_identity_gate_reproduces_stock_painn():
    off, paper = build("off"), build("paper")
    paper.load_state_dict(off.state_dict(), strict=False)
    for blk in paper.representation.interactions:
        blk.mara.forward = lambda msg, vec: (msg, torch.zeros_like(msg[:, :1]))
    b = batch()
    o1, o2 = off(b), paper(b)
    assert torch.allclose(o1["energy"], o2["energy"], rtol=0, atol=1e-10)
    assert torch.allclose(o1["forces"], o2["forces"], rtol=0, atol=1e-10)
    doubled = copy.deepcopy(paper)
    for blk in doubled.representation.interactions:
        blk.mara.forward = lambda msg, vec: (2 * msg, torch.ones_like(msg[:, :1]))
    assert not torch.allclose(doubled(b)["energy"], o1["energy"], rtol=0, atol=1e-6)


def test_mara_receives_sender_minus_receiver_vectors_and_messages():
    m = build("control")
    seen = []
    blk = m.representation.interactions[0]
    inner = blk.mara.forward
    blk.mara.forward = lambda msg, vec: (seen.append((msg.shape, vec.detach().clone())), inner(msg, vec))[1]
    b = batch()
    m(b)
    send, recv = b.edge_index
    assert seen[0][0] == (b.edge_index.shape[1], 4 * SMOKE["n_atom_basis"])
    assert torch.allclose(seen[0][1], b.positions[send] - b.positions[recv])
    assert len(m.mara_modules()) == SMOKE["n_interactions"]


def test_bad_options_and_elements_are_user_errors():
    with pytest.raises(UserError, match="n_atom_basis"):
        PaiNNBackbone().build({**SMOKE, "n_atom_basi": 8}, KitStats(), MaraOptions(), torch.float64)
    with pytest.raises(UserError, match="radial_basis"):
        PaiNNBackbone().build({**SMOKE, "radial_basis": "cheb"}, KitStats(), MaraOptions(), torch.float64)
    b = batch()
    b.numbers[0] = 9
    with pytest.raises(UserError, match=r"\[9\]"):
        build()(b)


def test_presets_build_and_count_parameters():
    counts = preset_parameter_counts(PaiNNBackbone)
    # PaiNN as published (F = 128, 3 blocks, 20 radial functions; Schütt et al. 2021): representation
    # = embedding 100F + filter net (20 + 1) 9F + per block [F^2 + F + 3F^2 + 3F] + [2F^2 + F + 3F^2 + 3F + 2F^2]
    F, n_rbf = 128, 20
    rep = 100 * F + (n_rbf + 1) * 9 * F + 3 * ((F * F + F) + (F * 3 * F + 3 * F) + (2 * F * F + F)
                                               + (F * 3 * F + 3 * F) + 2 * F * F)
    head = (F * F // 2 + F // 2) + (F // 2 + 1)
    assert counts["paper", "off"] == rep + head
