"""End-to-end cost of the MARA ``paper`` gate inside a backbone: paired ratios of one force-training step.

One interleaved sweep (``mara_bench.timing.sweep.time_size``, the engine of ``mara_bench time``) per backbone
times ``off``, ``paper`` (folded, the default path) and ``paper`` through the torch-harmonics ``AttentionS2``
reference, on the same batch; the tracked numbers are medians of per-repeat ratios of process CPU time, which a
loaded machine disturbs far less than wall time:

* ``track_train_paper_over_off``: paper / off (the issue-16 target at MACE ``quick`` size is ≤ 3);
* ``track_train_reference_over_paper``: reference / paper, the end-to-end speed-up of our path (target ≥ 2);
* ``track_infer_paper_over_off``: the same for energy + forces (target ≤ 2).

Preset ``quick`` (env ``MARA_BENCH_ASV_RATIO_PRESET``), ~105 atoms of the default molecule (env
``MARA_BENCH_ASV_MOLECULE``), backbones from env ``MARA_BENCH_ASV_RATIO_BACKBONES`` (default ``mace``).
"""

from __future__ import annotations

import os

from ._common import MOLECULE, threads

RATIO_BACKBONES = [b for b in os.environ.get("MARA_BENCH_ASV_RATIO_BACKBONES", "mace").split(",") if b]
RATIO_PRESET = os.environ.get("MARA_BENCH_ASV_RATIO_PRESET", "quick")
ATOMS = 105
REPEATS = 5


def _sweep_all() -> dict:
    from mara_bench.errors import UserError
    from mara_bench.timing.sweep import SweepSettings, time_size
    from mara_bench.timing.systems import load_molecule

    threads()
    out: dict = {}
    for bb in RATIO_BACKBONES:
        s = SweepSettings(backbone=bb, variants=("off", "paper"), preset=RATIO_PRESET, sizes=(ATOMS,),
                          repeats=REPEATS, warmup=1, molecule=MOLECULE, data_dir=os.environ.get("MARA_BENCH_DATA"),
                          mara_impls=("folded", "reference"), flops=False)
        try:
            rows, _ = time_size(s, load_molecule(s.molecule, s.data_dir), ATOMS)
        except (UserError, ImportError) as e:
            out[bb] = f"unavailable: {e}"
            continue
        get = {(r["variant"], r["mara_impl"], r["mode"]): r for r in rows}
        out[bb] = {mode: {"paper_over_off": get[("paper", "folded", mode)]["cpu_overhead_vs_off"],
                          "reference_over_paper": get[("paper", "folded", mode)]["cpu_speedup_vs_reference"]}
                   for mode in ("train", "inference")}
    return out


class MaraEndToEnd:
    params = [RATIO_BACKBONES]
    param_names = ["backbone"]
    timeout = 900
    unit = "ratio"

    def setup_cache(self):
        return _sweep_all()

    def setup(self, cache, backbone):
        if not isinstance(cache.get(backbone), dict):
            raise NotImplementedError(str(cache.get(backbone)))

    def track_train_paper_over_off(self, cache, backbone):
        return cache[backbone]["train"]["paper_over_off"]

    def track_train_reference_over_paper(self, cache, backbone):
        return cache[backbone]["train"]["reference_over_paper"]

    def track_infer_paper_over_off(self, cache, backbone):
        return cache[backbone]["inference"]["paper_over_off"]

    track_train_paper_over_off.unit = "ratio"
    track_train_reference_over_paper.unit = "ratio"
    track_infer_paper_over_off.unit = "ratio"
