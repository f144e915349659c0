"""EnergyModel: the torch module every backbone's build() returns (see mara_bench.backbone for the contract)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # pragma: no cover
    from .graph import GraphBatch


MAX_Z = 118  # element tables cover atomic numbers 0..MAX_Z


def _symbol(z: int) -> str:
    try:
        from ase.data import chemical_symbols

        return chemical_symbols[z]
    except (ImportError, IndexError):
        return "?"


class EnergyModel(torch.nn.Module):
    """Base class of what :meth:`Backbone.build` returns.

    Plumbing every backbone needs, in one place:

    * :meth:`set_elements` — the element table (``index_of_z``: Z -> index in ``elements``, -1 when unknown) and,
      with ``shifts``, the per-element energy shift ``shift_of_z`` [119], kept in float64 by ``.to(dtype)`` (eV
      totals of ~1e4 would lose ~1 meV per atom in float32);
    * :meth:`element_index` — indices of atomic numbers, a UserError naming any element the model was not built
      for; :meth:`atom_shift` — the float64 shift of each atom;
    * :meth:`positions_for_forces` and :meth:`with_forces` — forces = −∂E/∂positions by autograd
      (``create_graph=training``).
    """

    r_max: float = 5.0
    elements: list[int]

    def forward(self, batch: GraphBatch, compute_forces: bool = True, training: bool = False) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ elements
    def set_elements(self, elements, shifts=None) -> None:
        """Register the element table of ``elements`` (atomic numbers) and, when given, their energy shifts (eV):
        buffers ``index_of_z`` (not saved) and ``shift_of_z`` (float64, saved in the state dict)."""
        self.elements = [int(z) for z in elements]
        index = torch.full((MAX_Z + 1,), -1, dtype=torch.long)
        index[torch.as_tensor(self.elements, dtype=torch.long)] = torch.arange(len(self.elements))
        self.register_buffer("index_of_z", index, persistent=False)
        if shifts is not None:
            shift_of_z = torch.zeros(MAX_Z + 1, dtype=torch.float64)
            for z, s in zip(self.elements, shifts, strict=True):
                shift_of_z[z] = s
            self.register_buffer("shift_of_z", shift_of_z)

    def element_index(self, numbers: torch.Tensor) -> torch.Tensor:
        """The index in ``elements`` of every atomic number; UserError naming those the model was not built for."""
        table = self.index_of_z
        inside = (numbers >= 0) & (numbers < table.numel())
        idx = torch.where(inside, table[numbers.clamp(0, table.numel() - 1)], torch.full_like(numbers, -1))
        if bool((idx < 0).any()):
            from .errors import UserError

            bad = sorted(set(numbers[idx < 0].tolist()))
            names = ", ".join(f"Z={z} ({_symbol(z)})" for z in bad)
            raise UserError(f"atomic numbers {bad} ({names}) are not among the model's elements {self.elements} "
                            "(taken from the training set); compute the dataset stats on data that contains them")
        return idx

    def atom_shift(self, numbers: torch.Tensor) -> torch.Tensor:
        """The float64 energy shift [N] of each atom (after :meth:`element_index` has checked ``numbers``)."""
        return self.shift_of_z[numbers]

    def _apply(self, fn, recurse=True):
        """``.to(float32)`` etc. move the per-element shifts but keep them float64."""
        shifts = self._buffers.get("shift_of_z")
        out = super()._apply(fn, recurse)
        if shifts is not None:
            self.shift_of_z = shifts.to(device=self.shift_of_z.device, dtype=torch.float64)
        return out

    # ------------------------------------------------------------------------------------------ forces
    @staticmethod
    def positions_for_forces(positions: torch.Tensor, compute_forces: bool) -> torch.Tensor:
        """``positions`` as a leaf that requires grad when forces are wanted (the caller's tensor is not changed)."""
        if compute_forces and not positions.requires_grad:
            return positions.detach().requires_grad_(True)
        return positions

    @staticmethod
    def with_forces(energy: torch.Tensor, positions: torch.Tensor, compute_forces: bool,
                    training: bool) -> dict[str, torch.Tensor]:
        """``{"energy": energy}`` plus, when asked, ``"forces"`` = −∂(Σ energy)/∂positions (``create_graph`` while
        training so the force loss can be differentiated; zeros when the energy does not depend on positions)."""
        result = {"energy": energy}
        if compute_forces:
            (grad,) = torch.autograd.grad(energy.sum(), positions, create_graph=training, allow_unused=True)
            result["forces"] = -grad if grad is not None else torch.zeros_like(positions)
        return result

    # ------------------------------------------------------------------------------------------ MARA
    def mara_modules(self) -> list[torch.nn.Module]:
        from .nn.mara import MARA

        return [m for m in self.modules() if isinstance(m, MARA)]

    def last_gates(self) -> list[torch.Tensor]:
        """Per MARA module (one per interaction block), the gates [E, 1] of the last forward pass."""
        return [m.last_gates for m in self.mara_modules() if getattr(m, "last_gates", None) is not None]


class EdgeContext:
    """Per-forward edge vectors shared by a model's MARA wrappers (a plain object, not a Module, so deepcopy
    copies it once). Adapters store ``vectors`` [E, 3] = p_sender - p_receiver before the backbone's forward."""

    def __init__(self) -> None:
        self.vectors: torch.Tensor | None = None

    def require(self, n_edges: int, dtype: torch.dtype, model: str) -> torch.Tensor:
        """This forward's edge vectors as ``dtype``; RuntimeError when a wrapper runs outside ``model``'s forward."""
        v = self.vectors
        if v is None or v.shape[0] != n_edges:
            raise RuntimeError(f"MARA wrapper called without this forward's edge vectors (use {model})")
        return v.to(dtype)


class MaraSeam(torch.nn.Module):
    """Base of a backbone's MARA seam: wraps one submodule of the upstream model (registered under the attribute
    name ``attr``, so the wrapped part's state_dict keys are ``<attr>.*``), holds the MARA module and the model's
    :class:`EdgeContext`, and copies the attributes upstream code reads from the wrapped module (``keep``).
    Subclasses write ``forward``: call the wrapped module, gate with ``self.mara(m, self.edge_vectors(m))``."""

    owner = "its EnergyModel"  # named in the error when the seam runs outside the model's forward

    def __init__(self, attr: str, inner: torch.nn.Module, mara: torch.nn.Module, context: EdgeContext,
                 keep: tuple[str, ...] = ()) -> None:
        super().__init__()
        setattr(self, attr, inner)
        self.mara = mara
        self.context = context
        for name in keep:
            setattr(self, name, getattr(inner, name, None))

    def edge_vectors(self, like: torch.Tensor) -> torch.Tensor:
        """This forward's edge vectors d_e = p_sender - p_receiver [E, 3], in ``like``'s dtype (E = like.shape[0])."""
        return self.context.require(like.shape[0], like.dtype, self.owner)
