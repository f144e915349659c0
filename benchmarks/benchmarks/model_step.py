"""Forward + forces and one training step per backbone × MARA variant × system size (CPU, float32)."""

from __future__ import annotations

from ._common import SIZES, VARIANTS, backbones, model_and_batch


class ModelStep:
    params = [backbones(), VARIANTS, SIZES]
    param_names = ["backbone", "mara", "atoms"]
    timeout = 300
    number = 1
    repeat = (3, 10, 60.0)  # (min, max, seconds) repeats; --quick runs once

    def setup(self, backbone, mara, atoms):
        from mara_bench.timing_sweep import inference_step, train_step

        self.model, self.batch, self.opt, self.train_opts = model_and_batch(backbone, mara, atoms)
        self._inf = lambda: inference_step(self.model, self.batch)
        fw = float(self.train_opts.get("forces_weight", 1000.0))
        self._train = lambda: train_step(self.model, self.batch, self.opt, 1.0, fw, self.train_opts.get("grad_clip"))
        self._inf()  # warm-up (lazy initialisation, allocator)
        self._train()

    def time_forward_forces(self, backbone, mara, atoms):
        self._inf()

    def time_train_step(self, backbone, mara, atoms):
        self._train()

    def peakmem_forward_forces(self, backbone, mara, atoms):
        self._inf()

    def peakmem_train_step(self, backbone, mara, atoms):
        self._train()
