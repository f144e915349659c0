"""Forward + forces and one training step per backbone × MARA variant × system size (CPU, float32).

Smoke preset, copies of the default dataset's molecule (ethanol, 9 atoms) batched to ~20 and ~200 atoms.
"""

from __future__ import annotations

from ._common import SIZES, VARIANTS, backbones, model_and_batch


class _Step:
    """One step per call of a model as a run builds and trains it; subclasses pick ``mode`` and name the benchmarks
    (asv finds them by attribute name, so both names of a subclass point to :meth:`_run`)."""

    params = [backbones(), VARIANTS, SIZES]
    param_names = ["backbone", "mara", "atoms"]
    timeout = 300
    number = 1
    repeat = (3, 10, 30.0)  # (min, max, seconds) repeats; --quick runs once
    mode = ""

    def setup(self, backbone, mara, atoms):
        from mara_bench.timing.sweep import inference_step, train_step

        model, batch, opt, train_opts = model_and_batch(backbone, mara, atoms)
        if self.mode == "inference":
            self.step = lambda: inference_step(model, batch)
        else:
            self.step = lambda: train_step(model, batch, opt, train_opts)
        self.step()  # warm-up (lazy initialisation, allocator)

    def _run(self, backbone, mara, atoms):
        self.step()


class ForwardForces(_Step):
    """Energy + forces (one MD step's model work)."""

    mode = "inference"
    time_forward_forces = peakmem_forward_forces = _Step._run


class TrainStep(_Step):
    """Loss (energy + forces) + backward + optimizer step, as run.train takes it."""

    mode = "train"
    time_train_step = peakmem_train_step = _Step._run
