"""NequIP backbone (nequip 0.19.1, ``nequip.model.NequIPGNNModel``), with MARA on every convolution's messages.

Cheap to import: nequip is imported by :meth:`NequIPBackbone.build` (see :mod:`.nequip_mara`). Where each preset
value comes from is documented in docs/backbones.md.
"""

from __future__ import annotations

from mara_bench.backbone import Backbone


class NequIPBackbone(Backbone):
    """NequIP (Batzner et al. 2022) from the nequip package, E(3)-equivariant convolutions.

    MARA: every InteractionBlock: on the per-edge tensor-product messages (tp_scatter.tp output), before the
    scatter-sum to receivers.
    """

    name = "nequip"
    requires = ("nequip", "e3nn")
    option_rules = {
        "r_max": "float>0", "num_layers": "int>=1", "l_max": "int>=0", "parity": "bool",
        "num_features": "int>=1 | list[int>=1]", "type_embed_num_features": "int>=1", "radial_mlp_depth": "int>=1",
        "radial_mlp_width": "int>=1", "num_bessels": "int>=1", "polynomial_cutoff_p": "float>0",
        "readout_mlp_hidden_layers_depth": "int>=0", "readout_mlp_hidden_layers_width": "int>=1",
        "per_type_energy_scales_trainable": "bool", "per_type_energy_shifts_trainable": "bool",
    }
    presets = {
        # seconds on a CPU: for tests and the backbone test kit
        "smoke": {
            "model": {"r_max": 4.0, "num_layers": 2, "l_max": 1, "parity": False, "num_features": 8,
                      "radial_mlp_depth": 1, "radial_mlp_width": 16, "num_bessels": 8, "polynomial_cutoff_p": 6},
            "train": {"max_epochs": 2, "max_train_frames": 20, "max_val_frames": 10, "batch_size": 5},
        },
        # minutes on a 2-core CPU (default dataset, ~400 train frames of a 9-atom molecule)
        "quick": {
            "model": {"r_max": 4.0, "num_layers": 3, "l_max": 1, "parity": False, "num_features": 16,
                      "radial_mlp_depth": 1, "radial_mlp_width": 32, "num_bessels": 8, "polynomial_cutoff_p": 6,
                      "per_type_energy_shifts_trainable": True},
            "train": {"max_epochs": 15, "batch_size": 10, "lr": 0.01, "scheduler_patience": 5,
                      "max_val_frames": 50},
        },
        # Batzner et al., Nat. Commun. 13, 2453 (2022), rMD17 models (see docs/backbones.md for each value)
        "paper": {
            "model": {"r_max": 4.0, "num_layers": 5, "l_max": 3, "parity": True, "num_features": 64,
                      "radial_mlp_depth": 2, "radial_mlp_width": 64, "num_bessels": 8, "polynomial_cutoff_p": 6},
            "train": {"batch_size": 5, "max_train_frames": 950, "max_val_frames": 50, "max_epochs": 1000,
                      "optimizer": "amsgrad", "lr": 0.01, "energy_weight": 1.0, "forces_weight": 1000.0,
                      "scheduler": "plateau", "scheduler_patience": 50, "scheduler_factor": 0.8,
                      "ema_decay": 0.99},
        },
    }

    def build(self, model_options, stats, mara, dtype=None):
        from .nequip_mara import build_nequip

        return build_nequip(model_options, stats, mara, dtype)
