"""MiniSchNet: embedding -> [continuous-filter convolution + MARA + residual update] x T -> atom-wise MLP -> E."""

from __future__ import annotations

import math

import torch
from torch import nn

from mara_bench.errors import UserError
from mara_bench.model import EnergyModel

OPTIONS = ("r_max", "features", "interactions", "num_rbf")


def cosine_cutoff(r: torch.Tensor, r_max: float) -> torch.Tensor:
    return 0.5 * (torch.cos(math.pi * r / r_max) + 1.0) * (r < r_max)


class Interaction(nn.Module):
    """m_ij = W(r_ij) * lin(h_j) (per edge) -> optional MARA gate -> sum over j -> residual MLP update of h_i."""

    def __init__(self, features: int, num_rbf: int, mara: nn.Module | None):
        super().__init__()
        self.filter = nn.Sequential(nn.Linear(num_rbf, features), nn.SiLU(), nn.Linear(features, features))
        self.lin_in = nn.Linear(features, features, bias=False)
        self.update = nn.Sequential(nn.Linear(features, features), nn.SiLU(), nn.Linear(features, features))
        self.mara = mara

    def forward(self, h, rbf, fcut, vectors, sender, receiver):
        messages = self.filter(rbf) * fcut[:, None] * self.lin_in(h)[sender]  # [E, F]
        if self.mara is not None:  # the MARA seam: per-edge messages, before the neighbour sum
            messages, _ = self.mara(messages, vectors)
        agg = torch.zeros_like(h).index_add(0, receiver, messages)
        return h + self.update(agg)


class MiniSchNet(EnergyModel):
    def __init__(self, elements, shifts, scale, r_max, features, interactions, num_rbf, mara_opts):
        super().__init__()
        self.r_max, self.num_rbf, self.elements = float(r_max), int(num_rbf), list(elements)
        index = torch.full((119,), -1, dtype=torch.long)
        index[torch.as_tensor(self.elements)] = torch.arange(len(self.elements))
        self.register_buffer("index_of_z", index, persistent=False)
        self.register_buffer("shifts", torch.as_tensor(shifts, dtype=torch.float64))
        self.scale = float(scale)
        self.embedding = nn.Embedding(len(self.elements), features)
        blocks = []
        for _ in range(int(interactions)):
            mara = None
            if mara_opts is not None and mara_opts.enabled:
                from mara_bench.nn.mara import MARA

                mara = MARA(features, variant=mara_opts.variant, hidden=mara_opts.hidden, grid=tuple(mara_opts.grid),
                            heads=mara_opts.heads, scalar_slice=None, r_max=self.r_max)  # all channels invariant
            blocks.append(Interaction(features, num_rbf, mara))
        self.blocks = nn.ModuleList(blocks)
        self.readout = nn.Sequential(nn.Linear(features, features // 2), nn.SiLU(), nn.Linear(features // 2, 1))

    def forward(self, batch, compute_forces: bool = True, training: bool = False):
        types = self.index_of_z[batch.numbers]
        if bool((types < 0).any()):
            raise UserError(f"atomic numbers {sorted(set(batch.numbers[types < 0].tolist()))} are not among the "
                            f"model's elements {self.elements}")
        pos = batch.positions
        if compute_forces and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        sender, receiver = batch.edge_index
        vectors = -batch.edge_vectors(pos)  # p_sender - p_receiver, MARA's convention
        r = vectors.norm(dim=-1)
        n = torch.arange(1, self.num_rbf + 1, dtype=r.dtype, device=r.device)
        rbf = torch.sin(n * math.pi * r[:, None] / self.r_max) / r[:, None]
        fcut = cosine_cutoff(r, self.r_max)
        h = self.embedding(types)
        for block in self.blocks:
            h = block(h, rbf, fcut, vectors, sender, receiver)
        per_atom = self.scale * self.readout(h).squeeze(-1).double() + self.shifts[types]
        energy = torch.zeros(batch.num_graphs, dtype=per_atom.dtype, device=per_atom.device)
        energy = energy.index_add(0, batch.batch, per_atom)
        out = {"energy": energy}
        if compute_forces:
            (grad,) = torch.autograd.grad(energy.sum(), pos, create_graph=training)
            out["forces"] = -grad
        return out


def build_minischnet(options, stats, mara_opts, dtype):
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UserError(f"unknown minischnet model option '{unknown[0]}'; valid: {', '.join(OPTIONS)}")
    elements = sorted(int(z) for z in stats.elements)
    mean = float(getattr(stats, "energy_per_atom_mean", 0.0) or 0.0)
    shifts = [float(stats.e0s[z]) + mean for z in elements]
    model = MiniSchNet(elements, shifts, getattr(stats, "force_rms", 1.0) or 1.0, options["r_max"],
                       options.get("features", 64), options.get("interactions", 3), options.get("num_rbf", 20),
                       mara_opts)
    model.embedding.to(dtype or torch.get_default_dtype())
    model.blocks.to(dtype or torch.get_default_dtype())
    model.readout.to(dtype or torch.get_default_dtype())
    return model
