"""The backbone test kit catches what it claims to catch: each kit test fails on a backbone broken in that way.

The backbones here are small pure-torch pair potentials (Morse-like, smooth cosine cutoff) with an optional MARA
gate on the per-edge pair energies, so they are real EnergyModels; each "broken" variant adds one defect.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mara_bench.backbone import Backbone
from mara_bench.model import EnergyModel
from mara_bench.testing import VARIANTS, BackboneTestKit, KitStats


class PairModel(EnergyModel):
    def __init__(self, mara_opts, r_max, defect=None):
        super().__init__()
        self.r_max, self.defect = r_max, defect
        self.depth = nn.Parameter(torch.tensor(0.5))
        self.width = nn.Parameter(torch.tensor(1.0))
        self.mara = None
        if mara_opts.enabled:
            from mara_bench.nn.mara import MARA

            self.mara = MARA(4, variant=mara_opts.variant, hidden=8, grid=(2, 4), r_max=r_max)

    def forward(self, batch, compute_forces=True, training=False):
        pos = batch.positions
        if compute_forces and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        d = -batch.edge_vectors(pos)
        r = d.norm(dim=-1)
        cut = torch.ones_like(r) if self.defect == "hard_cutoff" else 0.5 * (torch.cos(math.pi * r / self.r_max) + 1)
        x = torch.exp(-self.width * (r - 1.2))
        pair = self.depth * (x * x - 2 * x) * cut  # [E]
        if self.defect == "kinked":  # MARA's ρ for the north-pole grid direction: a cone point where d̂ = −z
            pair = pair + 0.01 * (d + r[:, None] * torch.tensor([0.0, 0.0, 1.0], dtype=d.dtype)).norm(dim=-1)
        if self.mara is not None:
            m = torch.stack([pair, pair * r, pair * x, pair * cut], dim=-1)  # a 4-channel invariant "message"
            m, _ = self.mara(m, d)
            pair = m[:, 0]
        e_atom = torch.zeros(len(pos), dtype=pair.dtype).index_add(0, batch.edge_index[1], 0.5 * pair)
        if self.defect == "not_invariant":
            e_atom = e_atom + 0.01 * pos[:, 0]
        if self.defect == "order_dependent":
            local = torch.arange(len(pos), dtype=pos.dtype) - batch.ptr[batch.batch].to(pos.dtype)
            e_atom = e_atom + 1e-3 * local * (pos - pos.mean(0)).square().sum(-1)
        energy = torch.zeros(batch.num_graphs, dtype=pos.dtype).index_add(0, batch.batch, e_atom)
        if self.defect == "batch_dependent":
            energy = energy + 0.01 * batch.num_graphs
        out = {"energy": energy}
        if compute_forces:
            f = -torch.autograd.grad(energy.sum(), pos, create_graph=training)[0]
            out["forces"] = 1.01 * f if self.defect == "wrong_forces" else f
        return out


def make_backbone(defect=None):
    class Pair(Backbone):
        name = f"pair_{defect or 'ok'}"
        presets = {"smoke": {"model": {"r_max": 4.0}, "train": {}}}

        def build(self, model_options, stats, mara, dtype=None):
            return PairModel(mara, model_options["r_max"], defect).to(dtype or torch.get_default_dtype())

    return Pair


def kit(defect=None):
    return type(f"Kit_{defect}", (BackboneTestKit,), {"backbone": make_backbone(defect)})


class TestKitOnGoodPairModel(BackboneTestKit):
    """A correct backbone passes the whole kit (every MARA variant)."""

    backbone = make_backbone(None)


def _run(k, name: str, variant: str = "off"):
    inst = k()
    method = getattr(inst, name)
    kwargs = {}
    params = method.__code__.co_varnames[1:method.__code__.co_argcount]
    if "model64" in params:
        kwargs["model64"] = k.build(variant, torch.float64)
    if "variant" in params:
        kwargs["variant"] = variant
    if "record_property" in params:
        kwargs["record_property"] = lambda *a: None
    return method(**kwargs)


@pytest.mark.parametrize("defect, test, words", [
    ("wrong_forces", "test_forces_are_energy_gradient", "forces are not -dE/dx: atom"),
    ("not_invariant", "test_rotation_reflection", None),
    ("not_invariant", "test_translation", "energy is not translation invariant"),
    ("order_dependent", "test_permutation", None),
    ("batch_dependent", "test_batch_consistency", None),
    ("hard_cutoff", "test_cutoff_smoothness", "jumps by"),
    ("kinked", "test_force_continuity", None),
])
def test_kit_catches_defect(defect, test, words):
    _run(kit(None), test)  # the same test passes without the defect
    with pytest.raises(AssertionError, match=words):  # and says what failed, in words
        _run(kit(defect), test)


def test_cutoff_check_does_not_blame_the_cutoff_for_a_translation_bug():
    with pytest.raises(pytest.fail.Exception, match="not translation invariant") as e:
        _run(kit("not_invariant"), "test_cutoff_smoothness")
    assert "r_max" not in str(e.value)


def test_kit_catches_a_control_gate_that_is_not_invariant():
    """'control' must be exactly invariant: a backbone whose control gate sees orientation fails the kit."""

    class Leaky(PairModel):
        def forward(self, batch, compute_forces=True, training=False):
            if self.mara is not None and not getattr(self.mara, "_leak", False):
                inner = self.mara.forward
                self.mara.forward = lambda m, d: inner(m + 0.1 * d[:, :1], d)
                self.mara._leak = True
            return super().forward(batch, compute_forces, training)

    class LeakyBackbone(make_backbone(None)):
        def build(self, model_options, stats, mara, dtype=None):
            return Leaky(mara, model_options["r_max"]).to(dtype)

    k = type("LeakyKit", (BackboneTestKit,), {"backbone": LeakyBackbone})
    _run(k, "test_rotation_reflection", "paper")  # measured and printed only
    with pytest.raises(AssertionError):
        _run(k, "test_rotation_reflection", "control")


def test_kit_checks_gates_exist_for_mara_variants():
    class NoMara(make_backbone(None)):
        def build(self, model_options, stats, mara, dtype=None):
            from mara_bench.backbone import MaraOptions

            return PairModel(MaraOptions("off"), model_options["r_max"]).to(dtype)

    k = type("NoMaraKit", (BackboneTestKit,), {"backbone": NoMara})
    _run(k, "test_gates_recorded", "off")
    with pytest.raises(AssertionError):
        _run(k, "test_gates_recorded", "paper")


def test_kit_stats_and_missing_backbone():
    s = KitStats()
    assert set(s.e0s) == set(s.elements) and s.avg_num_neighbors > 0
    assert VARIANTS == ("off", "scale", "control", "paper")
    with pytest.raises(TypeError, match="backbone"):
        BackboneTestKit.backbone_class()


def test_kit_skips_when_the_backbone_package_is_missing():
    class Needs(make_backbone(None)):
        requires = ("a_package_that_is_not_installed_xyz",)

    k = type("NeedsKit", (BackboneTestKit,), {"backbone": Needs})
    with pytest.raises(pytest.skip.Exception, match="a_package_that_is_not_installed_xyz"):
        k.backbone_class()
