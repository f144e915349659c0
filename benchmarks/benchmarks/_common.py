"""Shared helpers of the asv suite: which backbones, systems and models (built with mara_bench.timing.sweep).

With ``launch_method: forkserver`` asv imports the suite once in a server process (``benchmark.py run_server``)
and forks every benchmark from it; there the heavy packages are preloaded so that torch/e3nn/mace load once per
run. ``asv check`` / discovery import nothing heavy (fast).
"""

from __future__ import annotations

import importlib
import os
import sys

if sys.argv[1:2] == ["run_server"]:
    for _pkg in ("torch", "mara_bench.timing.sweep", "e3nn.o3", "mace.modules", "nequip", "schnetpack"):
        try:
            importlib.import_module(_pkg)
        except Exception:  # a missing or broken optional package only means that backbone is skipped
            pass

VARIANTS = ["off", "paper", "control"]
SIZES = [20, 200]  # target atoms: copies of the benchmark molecule, batched
PRESET = os.environ.get("MARA_BENCH_ASV_PRESET", "smoke")
MOLECULE = os.environ.get("MARA_BENCH_ASV_MOLECULE", "default")


def backbones() -> list[str]:
    return [b.strip() for b in os.environ.get("MARA_BENCH_ASV_BACKBONES", "mace,nequip,painn").split(",") if b.strip()]


def threads() -> None:
    """Threads (``MARA_BENCH_ASV_THREADS``, default 1) and the C library's allocator, as ``mara_bench time`` sets them."""
    from mara_bench.run import allocator
    from mara_bench.run.pipeline import apply_thread_env

    apply_thread_env("cpu", int(os.environ.get("MARA_BENCH_ASV_THREADS", "1")))
    allocator.configure()


def model_and_batch(backbone: str, variant: str, size: int):
    """(model, batch, optimizer, train options) as a run of this preset builds and trains them (through
    ``mara_bench.timing.sweep``), or NotImplementedError when the backbone is unavailable here."""
    import torch

    from mara_bench.errors import UserError
    from mara_bench.run.pipeline import check_config
    from mara_bench.run.train import make_optimizer
    from mara_bench.timing.sweep import build_model, run_config_for
    from mara_bench.timing.systems import load_molecule, make_batch, stats_for

    threads()
    try:
        _, model_opts, train_opts = check_config(run_config_for(backbone, PRESET, variant))
    except (UserError, ImportError) as e:
        raise NotImplementedError(f"backbone '{backbone}' unavailable: {e}") from None
    r_max = float(model_opts["r_max"])
    mol = load_molecule(MOLECULE, os.environ.get("MARA_BENCH_DATA"))
    batch, graphs = make_batch(mol, size, r_max, torch.float32)
    stats, _ = stats_for(mol, graphs, r_max, train_opts)
    try:
        model = build_model(backbone, PRESET, variant, stats, torch.float32, "cpu")
    except (ImportError, UserError) as e:
        raise NotImplementedError(f"backbone '{backbone}' cannot be built here: {e}") from None
    return model, batch, make_optimizer(model, train_opts), train_opts
