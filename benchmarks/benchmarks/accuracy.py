"""Accuracy tracking: force MAE and P99 per-atom force error (meV/Å) of smoke models, trained once.

``setup_cache`` trains every (backbone, variant) once with ``mara_bench.run.pipeline.run_config`` (preset smoke, the
default dataset, seed 0) into a temporary folder and keeps the test-set metrics of its ``metrics.json``
(``mara_bench.run.layout.METRICS``).
"""

from __future__ import annotations

import os

from ._common import VARIANTS, threads

ACC_BACKBONES = [b for b in os.environ.get("MARA_BENCH_ASV_ACC_BACKBONES", "mace").split(",") if b]


def _train_all() -> dict:
    import tempfile

    from mara_bench.atomic import read_json
    from mara_bench.config import RunConfig
    from mara_bench.errors import UserError
    from mara_bench.run.layout import METRICS
    from mara_bench.run.pipeline import run_config

    threads()
    out = {}
    with tempfile.TemporaryDirectory(prefix="mara_bench_asv_") as tmp:
        for bb in ACC_BACKBONES:
            for v in VARIANTS:
                cfg = RunConfig(backbone=bb, mara=v, dataset="default", preset="smoke", seed=0, output_dir=tmp,
                                data_dir=os.environ.get("MARA_BENCH_DATA"))
                try:
                    rd = run_config(cfg, force=True, progress=False)
                except (UserError, ImportError) as e:
                    out[(bb, v)] = f"unavailable: {e}"
                    continue
                test = read_json(rd / METRICS)["test_sets"]["test"]
                out[(bb, v)] = {"mae": test["force_mae_mev_A"], "p99": test["force_err_p99_mev_A"]}
    return out


class SmokeAccuracy:
    params = [ACC_BACKBONES, VARIANTS]
    param_names = ["backbone", "mara"]
    timeout = 900
    unit = "meV/Å"

    def setup_cache(self):
        return _train_all()

    def setup(self, cache, backbone, mara):
        if not isinstance(cache.get((backbone, mara)), dict):
            raise NotImplementedError(str(cache.get((backbone, mara))))

    def track_force_mae(self, cache, backbone, mara):
        return cache[(backbone, mara)]["mae"]

    def track_force_p99(self, cache, backbone, mara):
        return cache[(backbone, mara)]["p99"]

    track_force_mae.unit = "meV/Å"
    track_force_p99.unit = "meV/Å"
