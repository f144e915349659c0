"""asv benchmark suite of mara_bench (see docs/timing.md).

Modules: ``model_step`` (forward + forces and a training step, per backbone × MARA variant × size),
``accuracy`` (force MAE / P99 of smoke models trained once), ``mara_kernel_bench`` (MARA vs the torch-harmonics
AttentionS2 reference). Backbones come from env ``MARA_BENCH_ASV_BACKBONES`` (default ``mace,nequip,painn``);
a backbone that cannot be built here is skipped (``NotImplementedError`` in ``setup``).
"""
