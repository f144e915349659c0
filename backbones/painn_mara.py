"""PaiNN (schnetpack 2.1.1, ``schnetpack.representation.PaiNN``) as an EnergyModel, with MARA on its edge messages.

Energy: schnetpack's PaiNN representation -> atom-wise MLP (``schnetpack.nn.build_mlp``, 2 layers) ->
``scale * y_i + shift[Z_i]`` (shift = E0[Z] + mean per-atom energy, added in float64) -> sum per structure.
Forces: -dE/dpositions by autograd.

MARA seam. schnetpack's ``PaiNNInteraction.forward`` forms the per-edge messages
``x_ij = W_ij * phi(s_j)`` split into (dq_ij, dmuR_ij, dmumu_ij), and sums them over neighbours inside the same
function, so there is no per-edge submodule output to wrap. Both message terms are linear in the filter W_ij:
    scalar  dq_ij  = W^s_ij * phi_s(s_j)
    vector  dmu_ij = (W^vs_ij * phi_vs(s_j)) r_ij/|r_ij| + (W^vv_ij * phi_vv(s_j)) v_j
so calling the unmodified interaction with W_ij * (1 + a_ij) yields exactly sum_j (1 + a_ij) m_ij, i.e. MARA's
m' = m + a*m on both the scalar and the vector messages before the neighbour sum. :class:`MaraPaiNNInteraction`
forms m_ij = [dq_ij, dmu_ij] (scalar channels first, then the 3F vector components) with the interaction's own
``interatomic_context_net`` to feed MARA (which computes a_ij), then calls the original interaction with the gated
filter. The context net (atom-wise, N x F x 3F) is evaluated twice per block; the edge work is not duplicated
beyond forming m_ij once for MARA's input.
"""

from __future__ import annotations

from typing import Any

import torch

from mara_bench.backbone import check_model_keys
from mara_bench.errors import UserError
from mara_bench.model import EdgeContext, EnergyModel, MaraSeam

MODEL_KEYS = {
    "r_max": "cutoff radius, Å (cosine cutoff)",
    "n_atom_basis": "feature width F",
    "n_interactions": "number of interaction + mixing blocks",
    "n_rbf": "radial basis functions",
    "radial_basis": "'bessel' (sin(n pi r/rc)/r, the paper's) or 'gaussian'",
    "shared_interactions": "share weights across blocks",
    "shared_filters": "share the filter network across blocks",
    "head_layers": "layers of the atom-wise energy MLP (pyramidal, as schnetpack's Atomwise)",
}
DEFAULTS = {"n_atom_basis": 128, "n_interactions": 3, "n_rbf": 20, "radial_basis": "bessel",
            "shared_interactions": False, "shared_filters": False, "head_layers": 2}



class MaraPaiNNInteraction(MaraSeam):
    """Gate PaiNN's per-edge scalar and vector messages with MARA, then run the original interaction."""

    owner = "PaiNNEnergyModel"

    def __init__(self, interaction: torch.nn.Module, mara: torch.nn.Module, context: EdgeContext):
        super().__init__("interaction", interaction, mara, context, keep=("n_atom_basis",))

    def messages(self, q, mu, Wij, dir_ij, idx_j) -> torch.Tensor:
        """m_ij = [dq_ij (F) | dmu_ij (3F, xyz-major)] — the terms PaiNNInteraction sums over j."""
        x = Wij * self.interaction.interatomic_context_net(q)[idx_j]  # [E, 1, 3F]
        dq, dmu_r, dmu_mu = torch.split(x, self.n_atom_basis, dim=-1)
        dmu = dmu_r * dir_ij[..., None] + dmu_mu * mu[idx_j]  # [E, 3, F]
        return torch.cat([dq.squeeze(1), dmu.reshape(dmu.shape[0], -1)], dim=-1)

    def forward(self, q, mu, Wij, dir_ij, idx_i, idx_j, n_atoms):
        m = self.messages(q, mu, Wij, dir_ij, idx_j)
        _, gates = self.mara(m, self.edge_vectors(m))  # gates [E, 1]
        return self.interaction(q, mu, Wij * (1.0 + gates)[:, :, None], dir_ij, idx_i, idx_j, n_atoms)


class PaiNNEnergyModel(EnergyModel):
    def __init__(self, representation, head, elements, shifts, scale: float, r_max: float, context: EdgeContext):
        super().__init__()
        self.representation = representation
        self.head = head
        self.r_max = float(r_max)
        self.context = context
        self.scale = float(scale)
        self.set_elements(elements, shifts)

    def forward(self, batch, compute_forces: bool = True, training: bool = False) -> dict[str, torch.Tensor]:
        from schnetpack import properties as P

        self.element_index(batch.numbers)
        pos = self.positions_for_forces(batch.positions, compute_forces)
        r_ij = -batch.edge_vectors(pos)  # p_j - p_i (+ shift), j = sender, i = receiver
        self.context.vectors = r_ij
        inputs = {P.Z: batch.numbers, P.Rij: r_ij, P.idx_i: batch.edge_index[1], P.idx_j: batch.edge_index[0]}
        try:
            q = self.representation(inputs)["scalar_representation"]
        finally:
            self.context.vectors = None
        per_atom = self.scale * self.head(q).squeeze(-1).to(torch.float64) + self.atom_shift(batch.numbers)
        energy = torch.zeros(batch.num_graphs, dtype=per_atom.dtype, device=per_atom.device)
        energy = energy.index_add(0, batch.batch, per_atom)
        return self.with_forces(energy, pos, compute_forces, training)


def build_painn(model_options: dict[str, Any], stats, mara_opts, dtype: torch.dtype | None) -> PaiNNEnergyModel:
    import torch.nn.functional as F

    from ._schnetpack_compat import import_schnetpack

    spk = import_schnetpack()
    opts = {**DEFAULTS, **model_options}
    check_model_keys(opts, MODEL_KEYS, "PaiNN")
    r_max, n_rbf, width = float(opts["r_max"]), int(opts["n_rbf"]), int(opts["n_atom_basis"])
    rbf = {"bessel": spk.nn.BesselRBF, "gaussian": spk.nn.GaussianRBF}.get(opts["radial_basis"])
    if rbf is None:
        raise UserError(f"PaiNN option radial_basis='{opts['radial_basis']}': choose 'bessel' or 'gaussian'")
    dtype = dtype or torch.get_default_dtype()
    elements = sorted(int(z) for z in stats.elements)
    missing = [z for z in elements if z not in stats.e0s]
    if missing:
        raise UserError(f"dataset stats have no E0 for elements {missing}; give e0s for every element")
    mean = float(getattr(stats, "energy_per_atom_mean", 0.0) or 0.0)
    scale = float(getattr(stats, "force_rms", 1.0) or 1.0)

    representation = spk.representation.PaiNN(
        n_atom_basis=width, n_interactions=int(opts["n_interactions"]),
        radial_basis=rbf(n_rbf=n_rbf, cutoff=r_max), cutoff_fn=spk.nn.CosineCutoff(r_max), activation=F.silu,
        shared_interactions=bool(opts["shared_interactions"]), shared_filters=bool(opts["shared_filters"]))
    head = spk.nn.build_mlp(n_in=width, n_out=1, n_layers=int(opts["head_layers"]), activation=F.silu)
    context = EdgeContext()
    if mara_opts is not None and mara_opts.enabled:
        from mara_bench.nn.mara import MARA

        if opts["shared_interactions"]:
            raise UserError("MARA with shared_interactions=True is not supported (one MARA per block)")
        for k, block in enumerate(representation.interactions):
            mara = MARA(4 * width, variant=mara_opts.variant, hidden=mara_opts.hidden, grid=tuple(mara_opts.grid),
                        heads=mara_opts.heads, scalar_slice=slice(0, width), r_max=r_max)
            representation.interactions[k] = MaraPaiNNInteraction(block, mara, context)
    representation.to(dtype)
    head.to(dtype)
    shifts = [float(stats.e0s[z]) + mean for z in elements]
    return PaiNNEnergyModel(representation, head, elements, shifts, scale, r_max, context)
