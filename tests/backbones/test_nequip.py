"""NequIP backbone: the backbone test kit (all MARA variants) plus NequIP-specific checks."""

from __future__ import annotations

import copy
import importlib.util
import os
import random

import numpy as np
import pytest
import torch
from mara_bench_backbones.nequip import NequIPBackbone
from mara_bench_backbones.nequip_mara import MaraTensorProduct, scalar_slice
from smoke_models import preset_parameter_counts, smoke_tools

from mara_bench.backbone import MaraOptions
from mara_bench.errors import UserError
from mara_bench.testing import BackboneTestKit, KitStats

pytestmark = pytest.mark.skipif(importlib.util.find_spec("nequip") is None, reason="nequip is not installed")


class TestNequIPKit(BackboneTestKit):
    backbone = "nequip"


SMOKE, build, batch = smoke_tools(NequIPBackbone, batch_seed=3)


def test_global_state_is_isolated():
    """nequip's set_global_state() would make float64 the default and reseed every RNG; none of it leaks."""
    import e3nn

    assert torch.get_default_dtype() == torch.float32
    e3nn_before = e3nn.get_optimization_defaults()
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    py_state, np_state = random.getstate(), np.random.get_state()[1].copy()
    env_before = os.environ.get("PL_GLOBAL_SEED")
    build("off", torch.float32, seed=5)
    after = torch.rand(3)
    assert torch.get_default_dtype() == torch.float32
    assert torch.zeros(1).dtype == torch.float32  # e.g. a MACE/PaiNN model built next gets float32 parameters
    assert random.getstate() == py_state and np.array_equal(np.random.get_state()[1], np_state)
    assert e3nn.get_optimization_defaults() == e3nn_before
    assert os.environ.get("PL_GLOBAL_SEED") == env_before
    # the torch RNG advanced by exactly the one draw that seeds nequip's builder (not reseeded to 123)
    torch.manual_seed(5)
    torch.randint(0, 2**31 - 1, (1,))
    assert torch.equal(after, torch.rand(3))


def test_init_follows_torch_seed():
    a, b, c = build(seed=1), build(seed=1), build(seed=2)
    sa, sb, sc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(sa, sb) and not torch.equal(sa, sc)


@pytest.mark.parametrize("variant", ["paper", "control"])
def test_one_mara_per_convolution_on_tp_messages(variant):
    m = build(variant, num_layers=3)
    wrapped = [mod for mod in m.modules() if isinstance(mod, MaraTensorProduct)]
    assert len(wrapped) == 3 and len(m.mara_modules()) == 3
    for w in wrapped:  # MARA sees the whole tensor-product output (the per-edge message)
        assert w.mara.message_dim == w.tp.irreps_out.dim


def test_identity_gate_reproduces_stock_nequip():
    """With MARA's output replaced by the message itself, the wrapped model is the stock model, exactly."""
    off, paper = build("off"), build("paper")
    paper.load_state_dict(off.state_dict(), strict=False)
    for w in (mod for mod in paper.modules() if isinstance(mod, MaraTensorProduct)):
        w.mara.forward = lambda msg, vec: (msg, torch.zeros_like(msg[:, :1]))
    b = batch()
    o1, o2 = off(b), paper(b)
    assert torch.allclose(o1["energy"], o2["energy"], rtol=0, atol=1e-10)
    assert torch.allclose(o1["forces"], o2["forces"], rtol=0, atol=1e-10)
    doubled = copy.deepcopy(paper)  # and the gate really reaches the messages: m' = 2m changes the prediction
    for w in (mod for mod in doubled.modules() if isinstance(mod, MaraTensorProduct)):
        w.mara.forward = lambda msg, vec: (2 * msg, torch.ones_like(msg[:, :1]))
    assert not torch.allclose(doubled(b)["energy"], o1["energy"], rtol=0, atol=1e-6)


def test_mara_receives_sender_minus_receiver_vectors():
    m = build("control")
    seen = []
    w = next(mod for mod in m.modules() if isinstance(mod, MaraTensorProduct))
    inner = w.mara.forward
    w.mara.forward = lambda msg, vec: (seen.append(vec.detach().clone()), inner(msg, vec))[1]
    b = batch()
    m(b)
    send, recv = b.edge_index
    assert torch.allclose(seen[0], b.positions[send] - b.positions[recv])


def test_scalar_slice_picks_even_scalars():
    from e3nn import o3

    irreps, _, _ = o3.Irreps("8x1o+4x0o+8x0e+8x0e+2x2e").sort()
    sl = scalar_slice(irreps)
    assert sl == slice(4, 20)


def test_bad_options_and_elements_are_user_errors():
    with pytest.raises(UserError, match="num_layer"):
        NequIPBackbone().build({**SMOKE, "num_layer": 2}, KitStats(), MaraOptions(), torch.float64)
    m = build()
    b = batch()
    b.numbers[0] = 9  # fluorine: not in the stats
    with pytest.raises(UserError, match=r"\[9\]"):
        m(b)


def _counts(presets):
    return preset_parameter_counts(NequIPBackbone, presets)


def test_presets_build_and_count_parameters():
    """smoke and quick build for every MARA variant; control matches paper's added parameters within 10 %."""
    counts = _counts(("smoke", "quick"))
    assert counts["smoke", "off"] < counts["quick", "off"]


@pytest.mark.slow
def test_paper_preset_builds():
    counts = _counts(("paper",))
    assert counts["paper", "off"] > 1_000_000
