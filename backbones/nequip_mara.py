"""NequIP (nequip 0.19.1) as a mara_bench :class:`~mara_bench.model.EnergyModel`, with MARA on its edge messages.

The model is nequip's own ``NequIPGNNModel``, built programmatically and left unmodified except for one seam
per convolution: in every ``InteractionBlock``, ``tp_scatter`` (a ``TensorProductScatter``) computes the
per-edge messages ``tp(x[edge_src], edge_attr, edge_weight)`` and then scatter-sums them to the receivers. We
replace its ``tp`` submodule (the e3nn ``TensorProduct``) by :class:`MaraTensorProduct`, which calls the original
``tp`` and passes its per-edge output through MARA before ``TensorProductScatter`` does the scatter. The edge
vectors MARA needs are the ones this model feeds nequip (``edge_vectors``), shared through an
:class:`EdgeContext` that the wrapper reads.

Conventions: nequip's ``edge_index[0]`` is the receiver (centre) and ``edge_index[1]`` the sender, and its
edge vector is ``pos[edge_index[1]] - pos[edge_index[0]]`` = p_sender - p_receiver, exactly MARA's d_e; ours
(mara_bench.graph) is the transpose, so we flip the rows and negate ``GraphBatch.edge_vectors``.

nequip's ``set_global_state()`` (required before building) changes the default dtype to float64, reseeds every
RNG and sets e3nn/JIT flags. :func:`isolated_nequip_state` runs it and restores all of that afterwards, so MACE or
PaiNN models built in the same process are unaffected.

This module imports nequip only inside functions (importing it costs seconds).
"""

from __future__ import annotations

import contextlib
import os
import random
from typing import Any

import numpy as np
import torch

from mara_bench.backbone import check_model_keys
from mara_bench.errors import UserError
from mara_bench.model import EdgeContext, EnergyModel, MaraSeam

# model options accepted by this adapter (passed to nequip.model.NequIPGNNModel unless noted)
MODEL_KEYS = {
    "r_max": "cutoff radius, Å",
    "num_layers": "number of interaction blocks",
    "l_max": "maximum rotation order of features and edge spherical harmonics",
    "parity": "keep odd-parity features (True) or only natural-parity ones (False)",
    "num_features": "multiplicity per l (int, or one per l)",
    "type_embed_num_features": "width of the type embedding (default num_features[0])",
    "radial_mlp_depth": "hidden layers of the radial MLP",
    "radial_mlp_width": "width of the radial MLP",
    "num_bessels": "Bessel radial basis functions",
    "polynomial_cutoff_p": "exponent of the polynomial cutoff envelope",
    "readout_mlp_hidden_layers_depth": "hidden layers of the per-atom energy readout",
    "readout_mlp_hidden_layers_width": "width of those hidden layers",
    "per_type_energy_scales_trainable": "learn the per-element energy scales",
    "per_type_energy_shifts_trainable": "learn the per-element energy shifts",
}


# ----------------------------------------------------------------------------- nequip's global state, isolated
@contextlib.contextmanager
def isolated_nequip_state():
    """Run ``nequip.utils.global_state.set_global_state()`` inside; restore what it changes on exit.

    Restored: torch default dtype, torch (CPU and CUDA), numpy and Python RNG states, e3nn optimisation defaults,
    the TorchScript fusion strategy, the tensor-sharing strategy, the dynamo flags and the environment variables
    nequip/lightning set. nequip's model builders need the "initialised" flag only, which stays set.
    """
    # RNG states first: importing nequip (it imports lightning) draws from Python's global RNG
    dtype = torch.get_default_dtype()
    cpu_rng = torch.random.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    np_rng, py_rng = np.random.get_state(), random.getstate()
    import e3nn
    from nequip.utils.global_state import set_global_state

    e3nn_defaults = e3nn.get_optimization_defaults()
    fusion = torch.jit.set_fusion_strategy([("STATIC", 2), ("DYNAMIC", 10)])
    torch.jit.set_fusion_strategy(fusion)
    sharing = torch.multiprocessing.get_sharing_strategy()
    dyn = torch._dynamo.config
    dyn_flags = {k: getattr(dyn, k) for k in ("capture_dynamic_output_shape_ops", "capture_scalar_outputs")}
    env_keys = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS", "PYTORCH_JIT_USE_NNC_NOT_NVFUSER")
    env = {k: os.environ.get(k) for k in env_keys}
    fp32 = getattr(torch.backends, "fp32_precision", None) if torch.cuda.is_available() else None
    try:
        set_global_state()
        yield
    finally:
        torch.set_default_dtype(dtype)
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        np.random.set_state(np_rng)
        random.setstate(py_rng)
        e3nn.set_optimization_defaults(**e3nn_defaults)
        torch.jit.set_fusion_strategy(fusion)
        torch.multiprocessing.set_sharing_strategy(sharing)
        for k, v in dyn_flags.items():
            setattr(dyn, k, v)
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if fp32 is not None:
            torch.backends.fp32_precision = fp32


# ----------------------------------------------------------------------------- the MARA seam

class MaraTensorProduct(MaraSeam):
    """Wraps a ``TensorProductScatter.tp``: ``m = tp(x_j, Y(r_ij), w(r_ij))``, then ``m' = MARA(m, d_e)``."""

    owner = "NequIPEnergyModel"

    def __init__(self, tp: torch.nn.Module, mara: torch.nn.Module, context: EdgeContext):
        super().__init__("tp", tp, mara, context, keep=("weight_numel",))

    def forward(self, x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        messages = self.tp(x, y, weight)
        gated, _ = self.mara(messages, self.edge_vectors(messages))
        return gated


def scalar_slice(irreps) -> slice:
    """The block of even scalars (0e) of a sorted ``Irreps``: the rotation- and reflection-invariant channels."""
    start = stop = None
    offset = 0
    for mul, ir in irreps:
        if ir.l == 0 and ir.p == 1:
            start = offset if start is None else start
            if stop is not None and stop != offset:
                raise ValueError(f"0e channels of {irreps} are not contiguous")
            stop = offset + mul
        offset += mul * ir.dim
    return slice(0, 0) if start is None else slice(start, stop)


def attach_mara(graph_model: torch.nn.Module, mara_opts, r_max: float, context: EdgeContext,
                dtype: torch.dtype) -> int:
    """Wrap ``tp`` of every ``TensorProductScatter`` in ``graph_model``; return how many were wrapped."""
    from nequip.nn._tp_scatter_base import TensorProductScatter

    from mara_bench.nn.mara import MARA

    n = 0
    for module in graph_model.modules():
        if isinstance(module, TensorProductScatter) and not isinstance(module.tp, MaraTensorProduct):
            irreps_mid = module.irreps_mid
            sl = scalar_slice(irreps_mid)
            mara = MARA(irreps_mid.dim, variant=mara_opts.variant, hidden=mara_opts.hidden, grid=tuple(mara_opts.grid),
                        heads=mara_opts.heads, scalar_slice=sl if sl.stop > 0 else None, r_max=r_max).to(dtype)
            module.tp = MaraTensorProduct(module.tp, mara, context)
            n += 1
    return n


# ----------------------------------------------------------------------------- the energy model
class NequIPEnergyModel(EnergyModel):
    """GraphBatch -> nequip AtomicDataDict -> total energy; forces = -dE/dpositions (MARA path included)."""

    def __init__(self, graph_model: torch.nn.Module, elements: list[int], r_max: float, context: EdgeContext):
        super().__init__()
        self.nequip = graph_model
        self.r_max = float(r_max)
        self.context = context
        self.set_elements(elements)

    def _apply(self, fn, recurse=True):
        """``.to(dtype)`` support: nequip modules cache their output dtype at build time; follow the parameters."""
        out = super()._apply(fn, recurse)
        dtype = next((p.dtype for p in self.nequip.parameters() if p.is_floating_point()), None)
        if dtype is not None:
            for m in self.nequip.modules():
                for attr in ("_output_dtype", "model_dtype"):
                    if isinstance(getattr(m, attr, None), torch.dtype):
                        setattr(m, attr, dtype)
        return out

    def forward(self, batch, compute_forces: bool = True, training: bool = False) -> dict[str, torch.Tensor]:
        from nequip.data import AtomicDataDict as K

        pos = self.positions_for_forces(batch.positions, compute_forces)
        sender, receiver = batch.edge_index[0], batch.edge_index[1]
        vectors = -batch.edge_vectors(pos)  # p_sender - p_receiver (+ shift) = nequip's and MARA's convention
        self.context.vectors = vectors
        data: dict[str, Any] = {
            K.POSITIONS_KEY: pos,
            K.EDGE_INDEX_KEY: torch.stack([receiver, sender]),
            K.EDGE_VECTORS_KEY: vectors,
            K.ATOM_TYPE_KEY: self.element_index(batch.numbers),
            K.BATCH_KEY: batch.batch,
            K.NUM_NODES_KEY: batch.num_atoms,
        }
        try:
            out = self.nequip(data)
        finally:
            self.context.vectors = None
        energy = out[K.TOTAL_ENERGY_KEY].reshape(-1)
        return self.with_forces(energy, pos, compute_forces, training)


def build_nequip(model_options: dict[str, Any], stats, mara_opts, dtype: torch.dtype | None) -> NequIPEnergyModel:
    """Build nequip's NequIPGNNModel from our options and dataset stats; attach MARA if asked."""
    from ase.data import chemical_symbols

    opts = dict(model_options)
    check_model_keys(opts, MODEL_KEYS, "NequIP")
    dtype = dtype or torch.get_default_dtype()
    if dtype not in (torch.float32, torch.float64):
        raise UserError(f"NequIP supports float32 and float64, not {dtype}")
    elements = sorted(int(z) for z in stats.elements)
    names = [chemical_symbols[z] for z in elements]
    missing = [z for z in elements if z not in stats.e0s]
    if missing:
        raise UserError(f"dataset stats have no E0 for elements {missing}; give e0s for every element")
    mean = float(getattr(stats, "energy_per_atom_mean", 0.0) or 0.0)
    scale = float(getattr(stats, "force_rms", 1.0) or 1.0)
    # the nequip model's initial weights follow the caller's torch seed (nequip seeds its own builder RNG)
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    kwargs = dict(
        seed=seed,
        model_dtype={torch.float32: "float32", torch.float64: "float64"}[dtype],
        type_names=names,
        avg_num_neighbors=float(stats.avg_num_neighbors),
        per_type_energy_scales={n: scale for n in names},
        per_type_energy_shifts={n: float(stats.e0s[z]) + mean for n, z in zip(names, elements, strict=True)},
        do_derivatives=False,
        **opts,
    )
    with isolated_nequip_state():
        from nequip.model import NequIPGNNModel

        graph_model = NequIPGNNModel(**kwargs)
    context = EdgeContext()
    if mara_opts is not None and mara_opts.enabled:
        n = attach_mara(graph_model, mara_opts, float(opts["r_max"]), context, dtype)
        if n != int(opts.get("num_layers", 4)):
            raise RuntimeError(f"MARA attached to {n} convolutions, expected one per layer")
    return NequIPEnergyModel(graph_model, elements, float(opts["r_max"]), context)
