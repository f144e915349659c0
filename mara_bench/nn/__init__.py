"""The method under test: the MARA module (:mod:`.mara`, folded kernels in :mod:`.kernels`), its S² grid
(:mod:`.s2grid`), symmetry measurements and the one rotation sampler (:mod:`.symmetry`), the force-continuity probe
(:mod:`.continuity`) and the torch-geometric adapter (:mod:`.pyg`). Importing this package does not import torch."""
