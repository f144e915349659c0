"""MACE (mace-torch 0.3.16) as a mara_bench backbone.

Importing this module is cheap: mace, e3nn and torch are imported inside :meth:`MACEBackbone.build`.
The model is an unmodified ``mace.modules.ScaleShiftMACE`` (what mace's own ``--model MACE`` builds); MARA is
attached by wrapping its modules (see :mod:`mara_bench_backbones.mace_mara`). Every preset value and its source
is listed in docs/backbone_mace.md.
"""

from __future__ import annotations

from typing import Any

from mara_bench.backbone import Backbone, MaraOptions
from mara_bench.errors import UserError, unknown

# Model options and their defaults = mace-torch 0.3.16 `mace_run_train --model MACE` defaults
# (mace/tools/arg_parser.py, mace/tools/model_script_utils.py::_build_model), except where a preset overrides.
MODEL_DEFAULTS: dict[str, Any] = {
    "r_max": 5.0,  # --r_max 5.0
    "num_bessel": 8,  # --num_radial_basis 8
    "num_polynomial_cutoff": 5,  # --num_cutoff_basis 5 (polynomial envelope p)
    "max_ell": 3,  # --max_ell 3
    "num_interactions": 2,  # --num_interactions 2
    "hidden_irreps": "128x0e+128x1o",  # --num_channels 128 --max_L 1
    "correlation": 3,  # --correlation 3
    "MLP_irreps": "16x0e",  # --MLP_irreps 16x0e (hidden width of the last, non-linear readout)
    "radial_MLP": [64, 64, 64],  # --radial_MLP [64, 64, 64]
    "gate": "silu",  # --gate silu
    # --model MACE forces the first block to a non-residual one (model_script_utils._build_model)
    "interaction_first": "RealAgnosticInteractionBlock",
    "interaction": "RealAgnosticResidualInteractionBlock",  # --interaction
    "use_reduced_cg": False,  # --use_reduced_cg False
    "inter_scale": "rms_forces",  # --scaling rms_forces_scaling: scale = RMS of force components (train set)
    "inter_shift": "none",  # --model MACE: shift 0 ; "mean" = mean per-atom energy after E0s (MACE paper A.5.1)
}


class MACEBackbone(Backbone):
    """MACE (mace-torch 0.3.16, ScaleShiftMACE), higher-order equivariant message passing.

    MARA: every interaction block: MARA gates the per-edge conv_tp messages [E, D] before the scatter-sum over
    receivers (conv_tp wrapped; edge vectors tapped from MACE's spherical_harmonics input).
    """

    name = "mace"
    requires = ("mace", "e3nn")
    option_rules = {
        "r_max": "float>0", "num_bessel": "int>=1", "num_polynomial_cutoff": "int>=1", "max_ell": "int>=0",
        "num_interactions": "int>=1", "hidden_irreps": "irreps", "correlation": "int>=1", "MLP_irreps": "irreps",
        "radial_MLP": "list[int>=1]", "gate": "str", "interaction_first": "str", "interaction": "str",
        "use_reduced_cg": "bool", "inter_scale": "'rms_forces' | float>0", "inter_shift": "'none' | 'mean' | float",
    }
    presets = {
        # tiny: the whole smoke training takes seconds on one CPU core
        "smoke": {
            "model": {
                "r_max": 4.0, "num_bessel": 8, "num_polynomial_cutoff": 5, "max_ell": 1, "num_interactions": 2,
                "hidden_irreps": "8x0e+8x1o", "correlation": 2, "MLP_irreps": "8x0e", "radial_MLP": [16, 16],
                "inter_shift": "mean",
            },
            "train": {"batch_size": 5, "max_epochs": 2, "max_train_frames": 20, "max_val_frames": 10,
                      "eval_batch_size": 20, "scheduler": "none", "ema_decay": None},
        },
        # default: small MACE that learns the default ~400-frame, 9-atom molecule in <= 5 min on 2 CPU cores
        "quick": {
            "model": {
                "r_max": 5.0, "num_bessel": 8, "num_polynomial_cutoff": 5, "max_ell": 2, "num_interactions": 2,
                "hidden_irreps": "16x0e+16x1o", "correlation": 2, "MLP_irreps": "16x0e", "radial_MLP": [32, 32],
                "inter_shift": "mean",  # start at the mean atomisation energy per atom: few epochs suffice
            },
            "train": {"batch_size": 10, "max_epochs": 15, "lr": 0.01, "optimizer": "amsgrad",
                      "energy_weight": 1.0, "forces_weight": 100.0, "ema_decay": 0.99,
                      "scheduler": "plateau", "scheduler_patience": 5, "scheduler_factor": 0.8,
                      # mace-torch's stage two (energy 1000, forces 100) for the last 30 %: fixes the energy offset
                      "stage2_start": 0.7, "stage2_energy_weight": 1000.0, "stage2_forces_weight": 100.0,
                      # a fixed epoch budget (no wall-time limit: results must not depend on machine load),
                      # sized so the slowest variant (paper MARA, ~8x off per training step) fits in 5 min
                      "max_val_frames": 50},
        },
        # MACE paper (Batatia et al., NeurIPS 2022, arXiv 2206.07697) App. A.5.1, rMD17 recipe
        "paper": {
            "model": {
                "r_max": 5.0,  # "We used a 5 Å cutoff for all molecules"
                "num_bessel": 8,  # "8 Bessel basis functions"
                "num_polynomial_cutoff": 5,  # "polynomial envelope for the cutoff with p=5"
                "max_ell": 3,  # "l_max = 3"
                "num_interactions": 2,  # "two layers"
                "hidden_irreps": "256x0e+256x1o",  # "256 uncoupled feature channels"; L=1 (see docs)
                "correlation": 3,  # body order 4 (correlation order 3), paper Sec. 5
                "MLP_irreps": "16x0e",  # "single-layer MLP with 16 hidden dimensions" (second readout)
                "radial_MLP": [64, 64],  # "MLP of size [64, 64, 1024]" (last = conv_tp weights), SiLU
                "inter_scale": "rms_forces",  # "per-atom scale as the RMS of the components of the forces"
                "inter_shift": "mean",  # "per-atom shift via the average per-atom energy"
            },
            "train": {
                "batch_size": 5, "optimizer": "amsgrad", "lr": 0.01,  # AMSGrad, lr 0.01, batch 5
                "energy_weight": 1.0, "forces_weight": 1000.0,  # lambda_E = 1, lambda_F = 1000
                "scheduler": "plateau", "scheduler_patience": 50, "scheduler_factor": 0.8,  # on-plateau 50, 0.8
                "ema_decay": 0.99,  # EMA 0.99 for validation and the final model
                "weight_decay": 5e-7,  # paper: 5e-7 on the weights of eqs. 10-11 only; here on all weights
                "max_epochs": 2048,  # mace-torch --max_num_epochs default (paper: budget not stated)
                # stage two (mace-torch --stage_two/--swa defaults, not in the paper text): last quarter,
                # energy weight 1000, forces weight 100
                "stage2_start": 0.75, "stage2_energy_weight": 1000.0, "stage2_forces_weight": 100.0,
                "max_val_frames": 50,  # 950 train + 50 validation
            },
        },
    }

    def build(self, model_options: dict[str, Any], stats, mara: MaraOptions | None = None, dtype=None):
        import contextlib
        import io

        import torch

        with contextlib.redirect_stdout(io.StringIO()):  # mace prints a cuequivariance banner on import
            import mace.tools.cg  # noqa: F401
        from mara_bench_backbones.mace_mara import MACEEnergyModel, attach_mara

        mara = mara or MaraOptions()
        dtype = dtype or torch.get_default_dtype()
        opts = resolve_options(model_options)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # MACE/e3nn create their buffers in the default dtype
        try:
            mace_model = build_mace_model(opts, stats)
            if mara.enabled:
                attach_mara(mace_model, _mara_factory(mara, opts))
        finally:
            torch.set_default_dtype(previous)
        elements = [int(z) for z in mace_model.atomic_numbers]  # MACE's z_table order (sorted)
        return MACEEnergyModel(mace_model, elements, opts["r_max"]).to(dtype)


def resolve_options(model_options: dict[str, Any]) -> dict[str, Any]:
    """Defaults + the given options; UserError for an unknown key or a bad value."""
    bad = [k for k in model_options if k not in MODEL_DEFAULTS]
    if bad:
        raise unknown("MACE model option (model.<key>)", bad[0], MODEL_DEFAULTS)
    opts = {**MODEL_DEFAULTS, **model_options}
    if float(opts["r_max"]) <= 0:
        raise UserError(f"MACE model option 'r_max'={opts['r_max']}: must be > 0 (Å)")
    for key in ("num_bessel", "num_polynomial_cutoff", "num_interactions", "correlation"):
        if int(opts[key]) < 1:
            raise UserError(f"MACE model option '{key}'={opts[key]}: must be an integer >= 1")
    if int(opts["max_ell"]) < 0:
        raise UserError(f"MACE model option 'max_ell'={opts['max_ell']}: must be >= 0")
    if opts["inter_scale"] != "rms_forces" and not isinstance(opts["inter_scale"], (int, float)):
        raise UserError(f"MACE model option 'inter_scale'={opts['inter_scale']!r}: use 'rms_forces' or a number")
    if opts["inter_shift"] not in ("none", "mean") and not isinstance(opts["inter_shift"], (int, float)):
        raise UserError(f"MACE model option 'inter_shift'={opts['inter_shift']!r}: use 'none', 'mean' or a number")
    return opts


def build_mace_model(opts: dict[str, Any], stats):
    """An unmodified ``mace.modules.ScaleShiftMACE`` for the dataset statistics ``stats``.

    ``stats`` needs ``elements`` (list of Z), ``e0s`` ({Z: eV}) and ``avg_num_neighbors``; ``force_rms`` and
    ``energy_per_atom_mean`` are used when present (scale 1 / shift 0 otherwise).
    """
    import numpy as np
    import torch
    from e3nn import o3
    from mace import modules

    elements = sorted(int(z) for z in stats.elements)
    if not elements:
        raise UserError("dataset statistics list no elements: cannot build a MACE model")
    e0s = {int(z): float(e) for z, e in stats.e0s.items()}
    missing = [z for z in elements if z not in e0s]
    if missing:
        raise UserError(f"no isolated-atom energy (E0) for element Z={missing[0]} in the dataset statistics")
    avg = float(stats.avg_num_neighbors)
    if not avg > 0:
        raise UserError(f"dataset statistics: avg_num_neighbors={avg} must be > 0 (is r_max too small?)")
    for key in ("interaction", "interaction_first"):
        if opts[key] not in modules.interaction_classes:
            raise unknown(f"MACE model option '{key}'", opts[key], modules.interaction_classes)
    if opts["gate"] not in modules.gate_dict:
        raise unknown("MACE model option 'gate'", opts["gate"], [k for k in modules.gate_dict if k != "None"])
    try:
        hidden = o3.Irreps(opts["hidden_irreps"])
        mlp = o3.Irreps(opts["MLP_irreps"])
    except (ValueError, AssertionError) as e:
        raise UserError(f"MACE model options 'hidden_irreps'/'MLP_irreps': not e3nn irreps ({e})") from None

    scale = opts["inter_scale"]
    if scale == "rms_forces":
        scale = getattr(stats, "force_rms", None) or 1.0
    shift = opts["inter_shift"]
    if shift == "none":
        shift = 0.0
    elif shift == "mean":
        shift = getattr(stats, "energy_per_atom_mean", None) or 0.0

    return modules.ScaleShiftMACE(
        r_max=float(opts["r_max"]),
        num_bessel=int(opts["num_bessel"]),
        num_polynomial_cutoff=int(opts["num_polynomial_cutoff"]),
        max_ell=int(opts["max_ell"]),
        interaction_cls=modules.interaction_classes[opts["interaction"]],
        interaction_cls_first=modules.interaction_classes[opts["interaction_first"]],
        num_interactions=int(opts["num_interactions"]),
        num_elements=len(elements),
        hidden_irreps=hidden,
        MLP_irreps=mlp,
        atomic_energies=np.array([e0s[z] for z in elements], dtype=np.float64),
        avg_num_neighbors=avg,
        atomic_numbers=elements,
        correlation=int(opts["correlation"]),
        gate=modules.gate_dict[opts["gate"]],
        radial_MLP=[int(x) for x in opts["radial_MLP"]],
        use_reduced_cg=bool(opts["use_reduced_cg"]),
        atomic_inter_scale=float(scale),
        atomic_inter_shift=float(shift),
    ).to(torch.get_default_dtype())


def _mara_factory(mara: MaraOptions, opts: dict[str, Any]):
    from mara_bench.nn.mara import MARA

    def make(message_dim: int, scalar_slice):
        return MARA(message_dim=message_dim, variant=mara.variant, hidden=mara.hidden, grid=tuple(mara.grid),
                    heads=mara.heads, scalar_slice=scalar_slice, num_radial=int(opts["num_bessel"]),
                    r_max=float(opts["r_max"]))

    return make
