"""MACE as a mara_bench :class:`EnergyModel`, and MARA attached to an unmodified MACE by wrapping its modules.

Nothing of MACE's forward code is copied. MACE 0.3.16's interaction blocks
(``RealAgnosticInteractionBlock``, ``RealAgnosticResidualInteractionBlock``, ...) compute, per edge,
``mji = self.conv_tp(node_feats[edge_index[0]], edge_attrs, tp_weights)`` and then
``scatter_sum(mji, edge_index[1])``. MARA goes exactly between the two, in every block:

* :class:`EdgeVectorTap` replaces ``model.spherical_harmonics``. MACE calls it once per forward pass with
  ``vectors = positions[receiver] - positions[sender] + shifts``, the very tensor MACE built from
  ``data["positions"]`` after setting ``requires_grad`` (and, with stress, after its symmetric displacement).
  The tap records that tensor in a shared :class:`EdgeGeometry` and returns the stock spherical harmonics.
* :class:`MaraConvTP` replaces each block's ``conv_tp``: it calls the original ``conv_tp`` and passes its
  output ``m`` [E, D] through MARA with the spec's direction ``d = p_sender - p_receiver = -vectors``. The
  block then sums MARA's ``m + gate * m`` over receivers as usual.

Because the vectors are the ones MACE differentiates, MACE's own ``-dE/dpositions`` includes MARA's path
(tests/backbones/test_mace.py checks it with finite differences). The fused cuEquivariance / OpenEquivariance
convolution (blocks with a ``conv_fusion`` attribute) does the scatter inside the kernel: there is no seam,
so :func:`attach_mara` refuses it.
"""

from __future__ import annotations

from typing import Any

import torch

from mara_bench.errors import UserError
from mara_bench.model import EdgeContext as EdgeGeometry
from mara_bench.model import EnergyModel, MaraSeam


class EdgeVectorTap(torch.nn.Module):
    """Wraps MACE's ``spherical_harmonics``: records its input (MACE's edge vectors), returns its output."""

    def __init__(self, spherical_harmonics: torch.nn.Module, geometry: EdgeGeometry) -> None:
        super().__init__()
        self.sh = spherical_harmonics
        self.geometry = geometry

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        self.geometry.vectors = vectors
        return self.sh(vectors)


class MaraConvTP(MaraSeam):
    """Wraps one interaction block's ``conv_tp``: original tensor product, then MARA on its [E, D] output."""

    owner = "MACEEnergyModel (the EdgeVectorTap on model.spherical_harmonics records this forward's edges)"

    def __init__(self, conv_tp: torch.nn.Module, mara: torch.nn.Module, geometry: EdgeGeometry) -> None:
        # keep: the attributes MACE code may read from a conv_tp
        super().__init__("tp", conv_tp, mara, geometry,
                         keep=("irreps_in1", "irreps_in2", "irreps_out", "weight_numel"))

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        m = self.tp(*args, **kwargs)
        messages, _gates = self.mara(m, -self.edge_vectors(m))  # spec direction d = p_sender - p_receiver
        return messages


def scalar_slice(irreps) -> slice | None:
    """The l=0, even-parity channels of an e3nn ``Irreps`` layout, as one contiguous slice (None if absent).

    MACE sorts ``conv_tp.irreps_out`` (``tp_out_irreps_with_instructions``), so its 0e blocks are adjacent.
    For l=0 the 'mul_ir' and 'ir_mul' layouts coincide, so the slice is the same in both.
    """
    from e3nn import o3

    spans = [s for (_mul, ir), s in zip(irreps, irreps.slices(), strict=True) if ir == o3.Irrep(0, 1)]
    if not spans:
        return None
    for a, b in zip(spans, spans[1:], strict=False):
        if a.stop != b.start:
            raise ValueError(f"l=0 channels of {irreps} are not contiguous; cannot express them as one slice")
    return slice(spans[0].start, spans[-1].stop)


def attach_mara(mace_model: torch.nn.Module, make_mara) -> list[torch.nn.Module]:
    """Wrap, in place, ``spherical_harmonics`` and every interaction block's ``conv_tp`` of a MACE model.

    ``make_mara(message_dim, scalar_slice)`` returns one MARA module per block. Returns the MARA modules.
    """
    for i, block in enumerate(mace_model.interactions):
        if hasattr(block, "conv_fusion"):
            raise UserError(
                f"MARA cannot attach to MACE interaction block {i}: it uses the fused cuEquivariance/"
                "OpenEquivariance convolution (conv_fusion), which has no seam between conv_tp and the "
                "receiver sum; build the model without cueq/oeq conv_fusion, or use --mara off"
            )
        if not hasattr(block, "conv_tp"):
            raise UserError(f"MACE interaction block {i} ({type(block).__name__}) has no conv_tp to wrap; "
                            "MARA supports the RealAgnostic* interaction blocks")
    if isinstance(mace_model.spherical_harmonics, EdgeVectorTap):
        raise ValueError("MARA is already attached to this MACE model")
    geometry = EdgeGeometry()
    mace_model.spherical_harmonics = EdgeVectorTap(mace_model.spherical_harmonics, geometry)
    maras = []
    for block in mace_model.interactions:
        irreps = block.conv_tp.irreps_out
        mara = make_mara(irreps.dim, scalar_slice(irreps))
        block.conv_tp = MaraConvTP(block.conv_tp, mara, geometry)
        maras.append(mara)
    return maras


class MACEEnergyModel(EnergyModel):
    """A (possibly MARA-wrapped) ``mace.modules.MACE``/``ScaleShiftMACE`` behind mara_bench's GraphBatch API."""

    def __init__(self, mace_model: torch.nn.Module, elements: list[int], r_max: float) -> None:
        super().__init__()
        self.mace = mace_model
        self.r_max = float(r_max)
        self.set_elements(elements)

    def node_attrs(self, numbers: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """One-hot over the model's z_table; UserError naming any element the model was not built for."""
        idx = self.element_index(numbers)
        return torch.nn.functional.one_hot(idx, num_classes=len(self.elements)).to(dtype)

    def mace_inputs(self, batch, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """MACE's input dict (the keys of mace.data.AtomicData after batching) from a GraphBatch."""
        return {
            "positions": positions,
            "node_attrs": self.node_attrs(batch.numbers, positions.dtype),
            "edge_index": batch.edge_index,
            "shifts": batch.shifts.to(positions.dtype),
            "unit_shifts": batch.unit_shifts.to(positions.dtype),
            "cell": batch.cell.to(positions.dtype).reshape(-1, 3),
            "batch": batch.batch,
            "ptr": batch.ptr,
        }

    def forward(self, batch, compute_forces: bool = True, training: bool = False) -> dict[str, torch.Tensor]:
        pos = batch.positions
        if not pos.requires_grad:  # MACE sets requires_grad in place: keep the caller's tensor untouched
            pos = pos.detach().requires_grad_(True)
        data = self.mace_inputs(batch, pos)
        tap = self.mace.spherical_harmonics
        try:
            with torch.set_grad_enabled(compute_forces or training or torch.is_grad_enabled()):
                out = self.mace(data, training=training, compute_force=compute_forces)
        finally:
            if isinstance(tap, EdgeVectorTap):
                tap.geometry.vectors = None  # do not keep the autograd graph alive between calls
        result = {"energy": out["energy"]}
        if compute_forces:
            result["forces"] = out["forces"]
        return result
