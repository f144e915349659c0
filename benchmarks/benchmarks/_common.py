"""Shared helpers of the asv suite: which backbones, systems and models (built with mara_bench.timing_sweep).

Heavy packages are imported here, at import time, on purpose: asv (``launch_method: forkserver``) imports the
suite once and forks every benchmark from that process, so torch/e3nn/mace are loaded once per run.
"""

from __future__ import annotations

import importlib
import os

import torch  # noqa: F401  (preloaded for the forkserver)

import mara_bench.timing_sweep  # noqa: F401

for _pkg in ("e3nn.o3", "mace.modules", "nequip", "schnetpack"):  # preload what the backbones import in build()
    try:
        importlib.import_module(_pkg)
    except Exception:  # noqa: BLE001 (a missing or broken optional package only means that backbone is skipped)
        pass

VARIANTS = ["off", "paper", "control"]
SIZES = [20, 200]  # target atoms: copies of the benchmark molecule, batched
PRESET = os.environ.get("MARA_BENCH_ASV_PRESET", "smoke")
MOLECULE = os.environ.get("MARA_BENCH_ASV_MOLECULE", "default")


def backbones() -> list[str]:
    return [b.strip() for b in os.environ.get("MARA_BENCH_ASV_BACKBONES", "mace,nequip,painn").split(",") if b.strip()]


def threads() -> None:
    torch.set_num_threads(int(os.environ.get("MARA_BENCH_ASV_THREADS", "1")))


def model_and_batch(backbone: str, variant: str, size: int):
    """(model, batch, optimizer, train options) or NotImplementedError when the backbone is unavailable here."""
    from mara_bench.errors import UserError
    from mara_bench.registry import get_backbone
    from mara_bench.timing_sweep import build_model, load_molecule, make_batch, make_optimizer, stats_for

    threads()
    try:
        cls = get_backbone(backbone)
        preset = cls.preset(PRESET)
    except (UserError, ImportError) as e:
        raise NotImplementedError(f"backbone '{backbone}' unavailable: {e}") from None
    r_max = float(preset["model"].get("r_max", 5.0))
    mol = load_molecule(MOLECULE, os.environ.get("MARA_BENCH_DATA"))
    batch, graphs = make_batch(mol, size, r_max, torch.float32)
    stats, _ = stats_for(mol, graphs, r_max)
    try:
        model = build_model(backbone, PRESET, variant, stats, torch.float32, "cpu")
    except (ImportError, UserError) as e:
        raise NotImplementedError(f"backbone '{backbone}' cannot be built here: {e}") from None
    return model, batch, make_optimizer(model, preset["train"]), preset["train"]
