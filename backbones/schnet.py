"""SchNet backbone (torch-geometric 2.8.1, ``torch_geometric.nn.models.SchNet``), MARA in every CFConv.

Cheap to import: torch-geometric is imported by :meth:`SchNetBackbone.build` (see :mod:`.schnet_model`). Where each
preset value comes from is documented in docs/backbones.md.
"""

from __future__ import annotations

from mara_bench.backbone import Backbone

from ._schnetpack_compat import SCHNETPACK_MD17_TRAIN


class SchNetBackbone(Backbone):
    """SchNet (Schütt et al. 2017) from torch-geometric, invariant continuous-filter convolutions.

    MARA: every interaction's CFConv (a PyG MessagePassing layer): gates the per-edge messages x_j * W_ij before
    the neighbour sum, through PyG's message forward hook (mara_bench.nn.pyg.attach_mara).
    """

    name = "schnet"
    requires = ("torch_geometric",)
    option_rules = {
        "r_max": "float>0", "hidden_channels": "int>=2", "num_filters": "int>=1", "num_interactions": "int>=1",
        "num_gaussians": "int>=2",
    }
    presets = {
        "smoke": {
            "model": {"r_max": 4.0, "hidden_channels": 16, "num_filters": 16, "num_interactions": 2,
                      "num_gaussians": 10},
            "train": {"max_epochs": 2, "max_train_frames": 20, "max_val_frames": 10, "batch_size": 5},
        },
        "quick": {
            "model": {"r_max": 5.0, "hidden_channels": 64, "num_filters": 64, "num_interactions": 3,
                      "num_gaussians": 25},
            "train": {"max_epochs": 15, "batch_size": 10, "optimizer": "adam", "lr": 0.002,
                      "scheduler_patience": 5, "max_val_frames": 50},
        },
        # Schütt et al., NeurIPS 2017 (architecture) + schnetpack 2.1.1 configs/experiment/md17.yaml (training);
        # see docs/backbones.md for each value
        "paper": {
            "model": {"r_max": 5.0, "hidden_channels": 64, "num_filters": 64, "num_interactions": 3,
                      "num_gaussians": 51},
            "train": dict(SCHNETPACK_MD17_TRAIN),
        },
    }

    def build(self, model_options, stats, mara, dtype=None):
        from .schnet_model import build_schnet

        return build_schnet(model_options, stats, mara, dtype)
