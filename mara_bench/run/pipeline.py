"""The run pipeline: dataset -> graph batches -> backbone (+ MARA) -> trainer -> evaluator -> results.

Everything that can be wrong with the input (backbone, preset, overrides, dataset, output folder) is checked in
:func:`prepare` before ``results/<run_id>/`` is created, so a UserError never leaves a run folder behind.
``metrics.json`` is written last: a folder without it is an unfinished run that the next call resumes.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from . import allocator
from . import layout as rf


@dataclass
class Prepared:
    cfg: Any
    backbone_cls: type
    model_opts: dict[str, Any]
    train_opts: dict[str, Any]
    dataset: Any
    stats: Any
    train_graphs: list
    val_graphs: list
    test_graphs: dict[str, list]
    device: str
    run_dir: Path
    train_index: list[int] = field(default_factory=list)  # frames of the train/val splits trained on (seeded subsets)
    val_index: list[int] = field(default_factory=list)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device '{device}' requested but CUDA is not available here; use --device cpu or auto")
    return str(device)


def apply_thread_env(device: str = "cpu", threads: int | None = None) -> int | None:
    """Set torch's CPU threads from ``threads`` or else ``$MARA_BENCH_THREADS`` (no-op off the CPU or when neither
    is set). Several jobs sharing a few cores should each run 1 thread: oversubscribed intra-op threads wait at
    barriers for cores other jobs hold and run many times slower. Returns the value set, or None."""
    import torch

    if threads is None and os.environ.get("MARA_BENCH_THREADS"):
        try:
            threads = int(os.environ["MARA_BENCH_THREADS"])
        except ValueError:
            raise UserError(f"MARA_BENCH_THREADS='{os.environ['MARA_BENCH_THREADS']}' is not an integer; "
                            "set it to the number of CPU threads, e.g. 1") from None
    if threads is None or not str(device).startswith("cpu"):
        return None
    if threads < 1:
        raise UserError(f"thread count must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    return threads


def _subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UserError(f"train.max_train_frames / max_val_frames must be a positive integer or null, got {limit!r}")
    return np.sort(np.random.default_rng(seed).permutation(n)[:limit])


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def training_stats(ds, train_opts: dict[str, Any], seed: int, r_max: float):
    """(statistics, training-frame indices) of a run: ``compute_stats`` of the training frames it trains on (the
    seeded ``train.max_train_frames`` subset). Runs and timing (``mara_bench.timing.systems.stats_for``) use it."""
    from ..data import compute_stats

    idx = _subset(len(ds.splits["train"]), train_opts.get("max_train_frames"), seed)
    stats = compute_stats(ds.splits["train"].subset(idx), r_max, (ds.meta or {}).get("isolated_atom_energies"))
    return stats, idx


def check_config(cfg) -> tuple[type, dict[str, Any], dict[str, Any]]:
    """The cheap checks of a run (no data read, nothing written): backbone and its packages, preset, override
    keys, train and model option values, dataset name or user files. Returns (backbone class, model options,
    train options). Sweeps run it for every planned run before submitting any."""
    from .. import registry
    from ..config import apply_overrides, check_names
    from .train import check_options

    cfg.validate()
    check_names(cfg)
    cls = registry.get_backbone(cfg.backbone)
    missing = [m for m in getattr(cls, "requires", ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"backbone '{cfg.backbone}' needs the package(s) {', '.join(missing)}, which are not "
                        "installed; see README, Install")
    preset = cls.preset(cfg.preset)
    where = f"backbone '{cfg.backbone}' preset '{cfg.preset}'"
    model_opts = apply_overrides(preset["model"], cfg.overrides, "model", where)
    train_opts = apply_overrides(preset["train"], cfg.overrides, "train", where)
    check_options(train_opts, where)
    cls().check_options(model_opts, where)  # option values (types, ranges, irreps) before anything is written
    if "r_max" not in model_opts:
        raise UserError(f"{where} has no model.r_max; the backbone's presets must define it")
    return cls, model_opts, train_opts


def prepare(cfg) -> Prepared:
    """Resolve backbone, preset, overrides, dataset, statistics and the output folder. Writes nothing."""
    from .results import check_output_dir, run_dir

    cls, model_opts, train_opts = check_config(cfg)
    r_max = float(model_opts["r_max"])
    device = resolve_device(cfg.device)
    check_output_dir(cfg.output_dir)

    from ..data import graphs_for, load_dataset

    ds = load_dataset(cfg.dataset, cfg.split, cfg.data_dir, cfg.test)
    for name in ("train", "val"):
        if name not in ds.splits or len(ds.splits[name]) == 0:
            raise UserError(f"dataset '{cfg.dataset}' has no '{name}' frames; it cannot be used for training")
    stats, tr_idx = training_stats(ds, train_opts, cfg.seed, r_max)
    va_idx = _subset(len(ds.splits["val"]), train_opts.get("max_val_frames"), cfg.seed + 1)
    all_train = graphs_for(ds, "train", r_max)
    all_val = graphs_for(ds, "val", r_max)
    test_graphs = {name: graphs_for(ds, name, r_max) for name in ds.test_sets()}
    return Prepared(cfg, cls, model_opts, train_opts, ds, stats, [all_train[i] for i in tr_idx],
                    [all_val[i] for i in va_idx], test_graphs, device, run_dir(cfg),
                    [int(i) for i in tr_idx], [int(i) for i in va_idx])


def build_backbone_model(backbone_cls: type, model_opts: dict[str, Any], stats, mara, dtype, device: str, seed: int):
    """The model a run trains: ``backbone_cls().build`` under ``dtype`` as torch's default dtype, right after
    :func:`seed_everything` (``seed``), then moved to ``device`` and ``dtype``. ``mara`` is a ``MaraOptions``.
    Training (:func:`build_model`) and timing (``mara_bench.timing.sweep.build_model``) both build through it."""
    import torch

    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        seed_everything(seed)
        model = backbone_cls().build(dict(model_opts), stats, mara, dtype)
    finally:
        torch.set_default_dtype(old)
    return model.to(device=device, dtype=dtype)


def build_model(p: Prepared, dtype):
    from ..backbone import MaraOptions

    return build_backbone_model(p.backbone_cls, p.model_opts, p.stats, MaraOptions.from_config(p.cfg), dtype,
                                p.device, p.cfg.seed)


def count_parameters(model) -> dict[str, int]:
    total = sum(q.numel() for q in model.parameters())
    mara = sum(q.numel() for m in model.mara_modules() for q in m.parameters())
    return {"total": int(total), "mara": int(mara)}


def summary_table(metrics: dict[str, Any]) -> str:
    rows = [("set", "E MAE meV", "E RMSE meV", "F MAE meV/Å", "F RMSE meV/Å", "F err P99", "F err max")]
    for name, m in metrics["test_sets"].items():
        def f(k, m=m):
            v = m.get(k)
            return "-" if v is None else f"{v:.2f}"

        rows.append((name, f("energy_mae_mev"), f("energy_rmse_mev"), f("force_mae_mev_A"), f("force_rmse_mev_A"),
                     f("force_err_p99_mev_A"), f("force_err_max_mev_A")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    tr = metrics["train"]
    lines.append(f"MARA: {metrics['mara']}   parameters: {metrics['parameters']['total']:,} "
                 f"(MARA {metrics['parameters']['mara']:,})   train time: {tr['train_time_s']:.1f} s, "
                 f"{tr['epochs']} epochs ({tr['stopped']})")
    if metrics.get("force_continuity"):
        from ..nn.continuity import summary_line

        lines.append(summary_line(metrics["force_continuity"]))
    sym = metrics.get("symmetry") or {}
    if "energy_max_abs" in sym:
        lines.append(f"equivariance (float64, rotations + reflections): max |dE| {sym['energy_max_abs']:.2e} eV, "
                     f"max |dF| {sym.get('forces_max_abs', float('nan')):.2e} eV/Å")
    return "\n".join(lines)


def run_config(cfg, force: bool = False, progress: bool = True, on_start=None) -> Path:
    """Train and evaluate one configuration; return its run folder. Reuses a finished run unless ``force``.

    The run folder is locked for the whole run (one trainer per folder; a second process stops with RunLocked
    naming the holder). ``on_start(run_dir)`` is called once the folder is locked and its config written."""
    from .lock import RunLock

    with RunLock() as lock:
        return _run_config(cfg, force, progress, on_start, lock)


def _run_config(cfg, force: bool, progress: bool, on_start, lock) -> Path:
    import torch

    from ..atomic import atomic_write_json, nonfinite_to_null
    from . import checkpoint as ckpt
    from . import ddp
    from .evaluate import evaluate_run
    from .layout import is_complete
    from .results import check_same_config, run_info, write_config
    from .train import stage_of, train

    p = prepare(cfg)
    p.device = ddp.init(p.device)  # torchrun: join the process group (no-op in a single process)
    rd = p.run_dir
    if is_complete(rd) and not force:
        print(f"already done: {rd} (use --force to re-run)")
        return rd
    resuming = (rd / ckpt.NAME).exists() and not force
    if resuming:
        check_same_config(rd, cfg)
    from ..config import torch_dtype

    dtype = torch_dtype(cfg.dtype)
    torch.use_deterministic_algorithms(True, warn_only=True)
    apply_thread_env(p.device)
    allocator.configure()  # large tensors from the heap, not fresh mmaps ($MARA_BENCH_MALLOC)
    t_start = time.perf_counter()
    model = build_model(p, dtype)  # before the folder exists: a model that cannot be built leaves nothing behind
    params = count_parameters(model)
    if ddp.is_main():  # only rank 0 writes
        lock.acquire(rd)  # one trainer per run folder (creates it); RunLocked names the live holder
        if is_complete(rd) and not force:  # another process finished it while we prepared
            print(f"already done: {rd} (use --force to re-run)")
            return rd
        if resuming:
            check_same_config(rd, cfg)
        if force and rd.exists():
            for name in rf.RESTARTED_BY_FORCE:
                (rd / name).unlink(missing_ok=True)
        rd.mkdir(parents=True, exist_ok=True)
        write_config(rd, cfg)
        atomic_write_json(rd / rf.STATS, p.stats.to_dict())  # rebuilding the model needs no dataset (layout)
        atomic_write_json(rd / rf.SPLIT_INDICES, {"train": p.train_index, "val": p.val_index})
        if on_start is not None:
            on_start(rd)
    ddp.barrier()

    res = train(model, p.train_graphs, p.val_graphs, p.train_opts, seed=cfg.seed, dtype=dtype, device=p.device,
                run_dir=rd, progress=progress)
    if not ddp.is_main():  # DDP: rank 0 evaluates and writes the results
        ddp.shutdown()
        return rd
    if res.best_state is not None:
        model.load_state_dict(res.best_state)
    ev = evaluate_run(model, p.test_graphs, rd, dtype=dtype, device=p.device,
                      batch_size=int(p.train_opts["eval_batch_size"]), seed=cfg.seed, mara=cfg.mara != "off",
                      progress=progress)
    if "inference" in ev:  # deterministic inference cost beside the measured one (mara_bench.run.cost)
        from .cost import inference_flops

        ref = p.test_graphs.get(ev["inference"]["test_set"]) or next(iter(p.test_graphs.values()))
        inf = inference_flops(model, ref, int(p.train_opts["eval_batch_size"]), dtype, p.device)
        ev["inference"].update(flops_per_structure=inf["flops_per_structure"], flops_reference_batch=inf["reference"])
    wall = time.perf_counter() - t_start
    metrics = {
        "run_id": cfg.run_id(), "config_hash": cfg.config_hash(), "backbone": cfg.backbone, "mara": cfg.mara,
        "dataset": cfg.dataset, "split": cfg.split, "preset": cfg.preset, "seed": cfg.seed, "dtype": cfg.dtype,
        "parameters": params,
        "n_frames": {"train": len(p.train_graphs), "val": len(p.val_graphs),
                     **{k: len(v) for k, v in p.test_graphs.items()}},
        "train": {"epochs": res.epochs, "best_epoch": res.best_epoch, "best_val_loss": res.best_val_loss,
                  "train_time_s": res.train_time_s, "stopped": res.stopped, "final_lr": res.final_lr,
                  "resumed_from_epoch": res.resumed_from_epoch,
                  "best_stage": stage_of({**p.train_opts, "max_epochs": res.cost["max_epochs"]}, res.best_epoch - 1)
                  if res.best_epoch >= 1 else None, **res.cost,
                  "selection": "lowest validation loss within the last loss stage (stage two when it ran)"},
        **ev,
    }
    from ..registry import BACKBONE_GROUP, DATASET_GROUP, dataset_entries, provider

    family = str(cfg.dataset).split(":", 1)[0]  # a user file is no registered family: no provider
    providers = {"backbone": provider(BACKBONE_GROUP, cfg.backbone),
                 "dataset_family": provider(DATASET_GROUP, family) if family in dataset_entries() else None}
    atomic_write_json(rd / rf.RUN_INFO, run_info(p.device, wall_time_s=wall, extra={
        "providers": providers,
        "resumed_from_epoch": res.resumed_from_epoch, "model_options": p.model_opts, "train_options": p.train_opts}),
        strict=True)
    metrics, invalid = nonfinite_to_null(metrics)
    if invalid:  # never written as if it were a result: null, with the reason
        metrics["invalid_metrics"] = {k: f"{v}: not a result (non-finite predictions, labels or an empty set); "
                                         "written as null" for k, v in invalid.items()}
        print(f"warning: {len(invalid)} metric(s) of {cfg.run_id()} are not finite (e.g. {next(iter(invalid))}) "
              "and are written as null; see metrics.json 'invalid_metrics'", file=sys.stderr)
    atomic_write_json(rd / rf.METRICS, metrics, strict=True)
    ddp.shutdown()
    print(f"run {cfg.run_id()} -> {rd}")
    print(summary_table(metrics))
    return rd
