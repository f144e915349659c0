"""PaiNN backbone (schnetpack 2.1.1, ``schnetpack.representation.PaiNN``), with MARA on its edge messages.

Cheap to import: schnetpack is imported by :meth:`PaiNNBackbone.build` (see :mod:`.painn_mara` and the tiny
import shim :mod:`._schnetpack_compat`). Where each preset value comes from is documented in docs/backbones.md.
"""

from __future__ import annotations

from mara_bench.backbone import Backbone

from ._schnetpack_compat import SCHNETPACK_MD17_TRAIN


class PaiNNBackbone(Backbone):
    """PaiNN (Schütt et al. 2021) from schnetpack, equivariant scalar+vector messages.

    MARA: every PaiNNInteraction: gates the per-edge scalar and vector messages (phi_s, phi_vs, phi_vv terms)
    before the neighbour sum, via the message filter W_ij (messages are linear in it).
    """

    name = "painn"
    requires = ("schnetpack",)
    option_rules = {
        "r_max": "float>0", "n_atom_basis": "int>=1", "n_interactions": "int>=1", "n_rbf": "int>=1",
        "radial_basis": "'bessel' | 'gaussian'", "shared_interactions": "bool", "shared_filters": "bool",
        "head_layers": "int>=1",
    }
    presets = {
        "smoke": {
            "model": {"r_max": 4.0, "n_atom_basis": 16, "n_interactions": 2, "n_rbf": 8},
            "train": {"max_epochs": 2, "max_train_frames": 20, "max_val_frames": 10, "batch_size": 5},
        },
        "quick": {
            "model": {"r_max": 5.0, "n_atom_basis": 64, "n_interactions": 3, "n_rbf": 20},
            "train": {"max_epochs": 15, "batch_size": 10, "optimizer": "adam", "lr": 0.002,
                      "scheduler_patience": 5, "max_val_frames": 50},
        },
        # Schütt et al., ICML 2021 (architecture) + schnetpack 2.1.1 configs/experiment/rmd17.yaml (training);
        # see docs/backbones.md for each value
        "paper": {
            "model": {"r_max": 5.0, "n_atom_basis": 128, "n_interactions": 3, "n_rbf": 20, "radial_basis": "bessel"},
            "train": dict(SCHNETPACK_MD17_TRAIN),
        },
    }

    def build(self, model_options, stats, mara, dtype=None):
        from .painn_mara import build_painn

        return build_painn(model_options, stats, mara, dtype)
