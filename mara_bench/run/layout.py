"""Run folders: the file names of ``<output_dir>/<run_id>/`` and the readers of finished and unfinished runs.

Files per run (written by :mod:`mara_bench.run.pipeline`, :mod:`mara_bench.run.train`, :mod:`mara_bench.run.evaluate` and
:mod:`mara_bench.md.run`): ``config.json``, ``run_info.json``, ``train_log.csv``, ``checkpoint.pt``,
``metrics.json`` (written last: a folder without it is unfinished), ``predictions.npz``, ``gates.npz`` (MARA runs)
and ``md/md.json`` (MD results). Importing this module is cheap (no torch).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..atomic import read_json
from ..errors import UserError

if TYPE_CHECKING:
    import torch

# the files of a run folder (one place for their names)
CONFIG = "config.json"          # RunConfig.resolved() + run_id, config_hash (results.write_config)
RUN_INFO = "run_info.json"      # versions, device, wall time (pipeline)
TRAIN_LOG = "train_log.csv"     # one row per epoch (train)
CHECKPOINT = "checkpoint.pt"    # resumable training state (checkpoint)
METRICS = "metrics.json"        # written last: its presence marks a finished run (pipeline)
PREDICTIONS = "predictions.npz"  # test-set predictions (evaluate)
GATES = "gates.npz"             # MARA gates vs edge length (evaluate, MARA runs)
STATS = "stats.json"            # the training statistics the model was built with (pipeline)
SPLIT_INDICES = "split_indices.json"  # the exact train/validation frame indices trained on (pipeline)
MD_DIR = "md"                   # MD trajectories and md.json (md.run)
MD_JSON = "md.json"
RESTARTED_BY_FORCE = (METRICS, CHECKPOINT, TRAIN_LOG, PREDICTIONS, GATES, RUN_INFO)  # deleted by --force


def md_json(run_dir: str | os.PathLike) -> Path:
    """``<run_dir>/md/md.json``."""
    return Path(run_dir) / MD_DIR / MD_JSON


def is_complete(run_dir: str | os.PathLike) -> bool:
    """A run folder is finished when its metrics.json exists."""
    return (Path(run_dir) / METRICS).is_file()


@dataclass
class RunData:
    path: Path
    metrics: dict[str, Any]

    @property
    def group(self) -> str:
        m = self.metrics
        return f"{m.get('backbone')}/{m.get('mara')}"

    @cached_property
    def predictions(self):
        f = self.path / PREDICTIONS
        return dict(np.load(f)) if f.exists() else None

    @cached_property
    def gates(self):
        f = self.path / GATES
        return np.load(f) if f.exists() else None


def find_runs(paths: list[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """(finished run folders, unfinished run folders) under ``paths``."""
    done, unfinished = [], []
    for p in map(Path, paths):
        if not p.exists():
            raise UserError(f"'{p}' does not exist; pass run folders or a results folder")
        cands = [p] if (p / CONFIG).exists() else sorted(
            c.parent for depth in ("*/", "*/*/", "*/*/*/") for c in p.glob(depth + CONFIG))
        for c in cands:
            (done if (c / METRICS).exists() else unfinished).append(c)
    seen, out = set(), []
    for c in done:
        if c.resolve() not in seen:
            seen.add(c.resolve())
            out.append(c)
    return [r.path for r in load_runs(out)], unfinished


def _read_metrics(d: Path) -> dict | None:
    """metrics.json of a run folder, or None (with one line on stderr naming it) when it is damaged."""
    import json
    import sys

    f = d / METRICS
    try:
        m = read_json(f)
    except (OSError, ValueError) as e:
        why = f"not valid JSON ({e.msg}, line {e.lineno})" if isinstance(e, json.JSONDecodeError) else e.strerror
        print(f"warning: skipping run folder '{d}': {f.name} is {why}, truncated or damaged; re-run it with "
              "--force or delete the folder", file=sys.stderr)
        return None
    if not isinstance(m, dict) or not isinstance(m.get("test_sets"), dict) or not m.get("run_id"):
        print(f"warning: skipping run folder '{d}': {f.name} is not a mara_bench metrics file (no run_id/test_sets); "
              "re-run it with --force or delete the folder", file=sys.stderr)
        return None
    return m


def load_runs(run_dirs: list[Path]) -> list[RunData]:
    """The finished runs of ``run_dirs``: damaged folders are skipped with one line each; a run found in two
    folders (a copied folder: same run id and config hash) is counted once."""
    import sys

    out, first = [], {}
    for d in map(Path, run_dirs):
        m = _read_metrics(d)
        if m is None:
            continue
        key = (m.get("run_id"), m.get("config_hash"))
        if key in first:
            print(f"note: '{d}' holds the same run as '{first[key]}' ({m.get('run_id')}): counted once",
                  file=sys.stderr)
            continue
        first[key] = d
        out.append(RunData(d, m))
    return out


def read_run_config(run_dir: str | os.PathLike):
    """The :class:`RunConfig` saved in ``run_dir/config.json`` (UserError when missing/unreadable)."""
    from ..config import RunConfig

    f = Path(run_dir) / CONFIG
    if not f.is_file():
        raise UserError(f"'{run_dir}' is not a run folder (no config.json); pass a folder under results/ or a run id")
    saved = read_json(f)
    return RunConfig.from_dict({k: v for k, v in saved.items() if k not in ("run_id", "config_hash")})


def pick_state_dict(ckpt: Any, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """The weights to use from a training checkpoint (mara_bench.run.checkpoint format).

    With ``use_ema`` (default): ``best_state`` (the best-validation EMA weights, what the pipeline evaluates), else
    the last EMA weights, else the raw model. Without: the raw model weights of the last epoch.
    """
    import torch

    if not isinstance(ckpt, dict):
        raise UserError("checkpoint.pt does not hold a dict of state dicts; re-run the training with --force")
    cands = []
    if use_ema:
        cands.append(ckpt.get("best_state"))
        ema = ckpt.get("ema")
        cands.append(ema.get("model") if isinstance(ema, dict) else None)
    cands.append(ckpt.get("model"))
    for sd in cands:
        if isinstance(sd, dict) and sd and all(isinstance(v, torch.Tensor) for v in sd.values()):
            return sd
    raise UserError(f"checkpoint.pt has no model weights (keys: {', '.join(map(str, ckpt))}); re-run with --force")


def load_run_model(run_dir: str | os.PathLike, device: str = "cpu", use_ema: bool = True):
    """Rebuild the trained model of a run folder: ``(EnergyModel, RunConfig)``.

    Reads config.json and the statistics the run saved (stats.json: E0s, avg_num_neighbors, ... exactly as trained),
    builds the model as training did and loads the checkpoint weights (:func:`pick_state_dict`). Only a run folder
    older than stats.json re-runs the pipeline's ``prepare`` (dataset and neighbour lists of every split).
    """
    run_dir = Path(run_dir)
    cfg = read_run_config(run_dir)
    ckpt_path = run_dir / CHECKPOINT
    if not ckpt_path.is_file():
        raise UserError(f"run folder '{run_dir}' has no checkpoint.pt; train it first with 'mara_bench run'")
    from ..config import torch_dtype
    from . import checkpoint, pipeline
    from .pipeline import resolve_device

    cfg.output_dir = str(run_dir.parent)  # the folder may have moved since training
    if not (run_dir / STATS).is_file():  # run folders written before stats.json re-derive them
        prepared = pipeline.prepare(cfg)
        prepared.device = resolve_device(device)
        model = pipeline.build_model(prepared, torch_dtype(cfg.dtype))
    else:  # the saved statistics: no dataset read, no neighbour lists
        from ..backbone import MaraOptions
        from ..data.stats import DatasetStats

        cls, model_opts, _ = pipeline.check_config(cfg)
        stats = DatasetStats.from_dict(read_json(run_dir / STATS))
        model = pipeline.build_backbone_model(cls, model_opts, stats, MaraOptions.from_config(cfg),
                                              torch_dtype(cfg.dtype), resolve_device(device), cfg.seed)
    sd = pick_state_dict(checkpoint.load(ckpt_path), use_ema)
    try:
        model.load_state_dict(sd)
    except RuntimeError as e:
        raise UserError(f"checkpoint.pt in '{run_dir}' does not match the rebuilt model "
                        f"({str(e).splitlines()[0][:160]}); was the backbone code changed?") from None
    model.eval()
    return model, cfg


def resolve_run_dir(run: str, output_dir: str | os.PathLike = "results") -> Path:
    """A run folder from a path or a run id (unique prefix allowed) under ``output_dir``."""
    p = Path(run)
    if p.is_dir():
        return p
    base = Path(output_dir)
    if (base / run).is_dir():
        return base / run
    matches = sorted(d for d in base.glob(f"{run}*") if d.is_dir()) if base.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UserError(f"run id '{run}' is ambiguous under '{base}': {', '.join(m.name for m in matches[:5])}")
    raise UserError(f"no run folder '{run}' (looked for a path and under '{base}/'); see 'ls {base}'")
