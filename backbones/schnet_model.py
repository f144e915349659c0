"""SchNet (torch-geometric 2.8.1, ``torch_geometric.nn.models.SchNet``) as an EnergyModel, MARA in every CFConv.

Energy: PyG's unmodified ``SchNet`` (embedding -> interaction blocks with ``CFConv`` -> atom-wise MLP -> sum per
structure) gives y [G]; E = force_rms * y + sum_i shift[Z_i] with shift = E0[Z] + mean per-atom energy, added in
float64 (as for the other backbones). Forces: -dE/dpositions by autograd.

Graph. SchNet's ``interaction_graph`` argument takes a callable ``(pos, batch) -> (edge_index, edge_weight)``;
:class:`BatchEdges` returns the batch's own neighbour list (sender, receiver = PyG's ``source_to_target`` flow) and
the distances |p_sender - p_receiver + shift| of the positions tensor forces differentiate, so no radius search
(``radius_graph`` would need torch-cluster) and periodic images are handled.

MARA seam. Every ``CFConv`` is a PyG ``MessagePassing`` layer whose ``message`` returns x_j * W_ij [E, num_filters]
for the edge list it was given; :func:`mara_bench.nn.pyg.attach_mara` gates those messages through PyG's message
forward hook before the sum over neighbours, with d_e = p_sender - p_receiver from the same :class:`MaraEdges`.
SchNet is invariant, so every message channel is invariant (``control`` gets all of them).
"""

from __future__ import annotations

from typing import Any

import torch

from mara_bench.backbone import check_model_keys
from mara_bench.errors import UserError
from mara_bench.model import EnergyModel
from mara_bench.nn.pyg import MaraEdges, attach_mara

MODEL_KEYS = {
    "r_max": "cutoff radius, Å (SchNet's cosine cutoff and the neighbour list)",
    "hidden_channels": "atom feature width F (the atom-wise head is F -> F/2 -> 1)",
    "num_filters": "continuous-filter width (the message width)",
    "num_interactions": "number of interaction blocks",
    "num_gaussians": "Gaussians of the distance expansion, evenly spaced on [0, r_max]",
}
DEFAULTS = {"hidden_channels": 128, "num_filters": 128, "num_interactions": 6, "num_gaussians": 50}
MAX_Z = 99  # PyG's SchNet embeds atomic numbers 0..99 (padding index 0)


class BatchEdges(torch.nn.Module):
    """SchNet's ``interaction_graph``: the current batch's edges and distances, from a :class:`MaraEdges`."""

    def __init__(self, edges: MaraEdges):
        super().__init__()
        self.edges = edges

    def forward(self, pos: torch.Tensor, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.edges
        if e.vectors is None:
            raise RuntimeError("SchNet's interaction graph has no edges for this forward (use SchNetEnergyModel)")
        return e.edge_index, torch.linalg.vector_norm(e.vectors, dim=-1)


class SchNetEnergyModel(EnergyModel):
    def __init__(self, schnet, elements, shifts, scale: float, r_max: float, edges: MaraEdges):
        super().__init__()
        self.schnet = schnet
        self.r_max = float(r_max)
        self.edges = edges
        self.scale = float(scale)
        self.set_elements(elements, shifts)  # shift_of_z stays float64 under .to(float32) (EnergyModel._apply)

    def forward(self, batch, compute_forces: bool = True, training: bool = False) -> dict[str, torch.Tensor]:
        numbers = batch.numbers
        self.element_index(numbers)
        pos = self.positions_for_forces(batch.positions, compute_forces)
        vectors = -batch.edge_vectors(pos)  # p_sender - p_receiver (+ shift)
        with self.edges(vectors, batch.edge_index):
            y = self.schnet(numbers, pos, batch.batch).squeeze(-1)  # [G], the sum of the atom-wise outputs
        shift = torch.zeros(batch.num_graphs, dtype=torch.float64, device=y.device)
        shift = shift.index_add(0, batch.batch, self.atom_shift(numbers))
        energy = self.scale * y.to(torch.float64) + shift
        return self.with_forces(energy, pos, compute_forces, training)


def build_schnet(model_options: dict[str, Any], stats, mara_opts, dtype: torch.dtype | None) -> SchNetEnergyModel:
    from torch_geometric.nn.models import SchNet
    from torch_geometric.nn.models.schnet import CFConv

    opts = {**DEFAULTS, **model_options}
    check_model_keys(opts, MODEL_KEYS, "SchNet")
    r_max = opts["r_max"]
    if isinstance(r_max, bool) or not isinstance(r_max, (int, float)) or r_max <= 0:
        raise UserError(f"SchNet option r_max={r_max!r}: must be a positive number of Å")
    for key in ("hidden_channels", "num_filters", "num_interactions", "num_gaussians"):
        v = opts[key]
        if isinstance(v, bool) or not isinstance(v, int) or v < (2 if key in ("hidden_channels", "num_gaussians")
                                                                 else 1):
            raise UserError(f"SchNet option {key}={v!r}: must be a positive integer"
                            + (" >= 2" if key in ("hidden_channels", "num_gaussians") else ""))
    dtype = dtype or torch.get_default_dtype()
    elements = sorted(int(z) for z in stats.elements)
    if elements and (elements[0] < 1 or elements[-1] > MAX_Z):
        raise UserError(f"SchNet embeds atomic numbers 1..{MAX_Z}; the dataset has {elements}")
    missing = [z for z in elements if z not in stats.e0s]
    if missing:
        raise UserError(f"dataset stats have no E0 for elements {missing}; give e0s for every element")
    mean = float(getattr(stats, "energy_per_atom_mean", 0.0) or 0.0)
    scale = float(getattr(stats, "force_rms", 1.0) or 1.0)

    edges = MaraEdges()
    schnet = SchNet(hidden_channels=opts["hidden_channels"], num_filters=opts["num_filters"],
                    num_interactions=opts["num_interactions"], num_gaussians=opts["num_gaussians"],
                    cutoff=float(r_max), interaction_graph=BatchEdges(edges), readout="add").to(dtype)
    if mara_opts is not None and mara_opts.enabled:
        attach_mara(schnet, CFConv, message_dim=lambda conv: conv.lin1.out_features, variant=mara_opts.variant,
                    hidden=mara_opts.hidden, grid=tuple(mara_opts.grid), heads=mara_opts.heads, scalar_slice=None,
                    r_max=float(r_max), edges=edges, dtype=dtype)
    shifts = [float(stats.e0s[z]) + mean for z in elements]
    return SchNetEnergyModel(schnet, elements, shifts, scale, float(r_max), edges)
