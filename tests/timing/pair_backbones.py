"""The test-only pair-network backbones ("pairtest", "pairfail") and the small sweep of the timing tests (registered
for every test of tests/timing by conftest.py)."""

from __future__ import annotations

import torch

from mara_bench.backbone import Backbone
from mara_bench.model import EnergyModel


class PairModel(EnergyModel):
    """A small real pair-potential network (test-only backbone), optionally with a per-edge gate."""

    def __init__(self, variant: str, dtype, r_max=4.0, width=8, fail_above=None):
        super().__init__()
        self.r_max, self.fail_above = r_max, fail_above
        self.embed = torch.nn.Embedding(119, width)
        self.radial = torch.nn.Linear(8, width)
        self.gate = torch.nn.Linear(width, 1) if variant != "off" else None
        self.out = torch.nn.Linear(width, 1)
        self.to(dtype)

    def forward(self, batch, compute_forces=True, training=False):
        if self.fail_above and batch.positions.shape[0] > self.fail_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB (test)")
        pos = batch.positions.detach().requires_grad_(True)
        vec = batch.edge_vectors(pos)
        r = vec.norm(dim=-1, keepdim=True)
        k = torch.arange(1, 9, device=r.device, dtype=r.dtype)
        m = self.radial(torch.sin(k * torch.pi * r / self.r_max) / r) * self.embed(batch.numbers)[batch.edge_index[0]]
        if self.gate is not None:
            m = m + torch.sigmoid(self.gate(m)) * m
        h = torch.zeros(pos.shape[0], m.shape[1], dtype=m.dtype, device=m.device).index_add(0, batch.edge_index[1], m)
        e_at = self.out(torch.tanh(h)).squeeze(-1)
        energy = torch.zeros(batch.num_graphs, dtype=e_at.dtype, device=e_at.device).index_add(0, batch.batch, e_at)
        (g,) = torch.autograd.grad(energy.sum(), pos, create_graph=training)
        return {"energy": energy, "forces": -g}


class PairBackbone(Backbone):
    name = "pairtest"
    description = "test-only pair network"
    presets = {p: {"model": {"r_max": 4.0, "width": w}, "train": {}} for p, w in (("smoke", 4), ("quick", 8),
                                                                                 ("paper", 16))}

    def build(self, model_options, stats, mara, dtype=torch.float32):
        assert stats.elements == [1, 6] and stats.avg_num_neighbors > 0
        return PairModel(mara.variant, dtype, **model_options)


class FailingBackbone(PairBackbone):
    name = "pairfail"

    def build(self, model_options, stats, mara, dtype=torch.float32):
        return PairModel(mara.variant, dtype, fail_above=50, **model_options)


def small_sweep(**kw):
    from mara_bench.timing.sweep import SweepSettings, run_sweep

    s = SweepSettings(**{"backbone": "pairtest", "sizes": (12, 60), "repeats": 3, "warmup": 1,
                         "molecule": "ase:C6H6", **kw})
    return run_sweep(s, command="test", progress=False)
