"""MD for a trained run folder: the body of ``mara_bench md``, also used by ``compare --md``.

:class:`MDSettings` holds what a user chooses; :func:`md_for_run` rebuilds the run's model, draws starting frames
and reference frames from its test split (seeded) and runs :func:`mara_bench.md.dynamics.run_md`, writing
``<run>/md/md.json``. :func:`finished_section` says whether ``md.json`` already holds this ensemble run with the
same settings, so that ``compare --md`` can reuse it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError, unknown
from ..run import layout as rf

ENSEMBLES = ("nvt", "nve")


def parse_temperatures(text: str | float) -> list[float]:
    """'300,1200' -> [300.0, 1200.0]; one-line UserError for anything else."""
    out = []
    for t in str(text).split(","):
        try:
            v = float(t)
        except ValueError:
            raise UserError(f"bad temperature list '{text}': expected comma-separated numbers in K, e.g. 300,600") \
                from None
        if not v > 0:
            raise UserError(f"bad temperature '{t}': temperatures must be > 0 K")
        out.append(v)
    return out


@dataclass
class MDSettings:
    temperatures: list[float] = field(default_factory=lambda: [300.0])
    steps: int = 2000
    timestep_fs: float = 0.5
    ensemble: str = "nvt"
    replicas: int = 3
    seed: int = 0
    dtype: str | None = None  # None: the run's dtype
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads; None: $MARA_BENCH_THREADS, else torch's default
    write_every: int = 10
    friction_per_fs: float = 0.01
    bond_stretch: float = 1.5
    min_distance: float = 0.5

    def validate(self) -> MDSettings:
        if self.ensemble not in ENSEMBLES:
            raise unknown("ensemble", self.ensemble, ENSEMBLES)
        for name in ("steps", "replicas", "write_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if not self.timestep_fs > 0:
            raise UserError(f"--timestep must be > 0 fs, got {self.timestep_fs}")
        if not self.temperatures or not all(t > 0 for t in self.temperatures):
            raise UserError(f"MD temperatures must be > 0 K, got {self.temperatures}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be >= 1, got {self.threads}")
        if self.dtype not in (None, "float32", "float64"):
            raise UserError(f"bad MD dtype '{self.dtype}': choose float32 or float64")
        return self

    def criteria(self):
        from .failure import FailureCriteria

        return FailureCriteria(bond_stretch=self.bond_stretch, min_distance=self.min_distance)


def finished_section(run_dir: str | os.PathLike, s: MDSettings) -> dict | None:
    """The ``md.json`` section of ``s.ensemble`` if it was run with exactly these settings, else None."""
    from ..atomic import read_json
    from ..run.layout import read_run_config

    f = rf.md_json(run_dir)
    if not f.is_file():
        return None
    try:
        sec = read_json(f).get(s.ensemble)
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(sec, dict) or "settings" not in sec:
        return None
    dtype = s.dtype or read_run_config(run_dir).dtype
    ckpt = Path(run_dir) / rf.CHECKPOINT
    want = {"checkpoint_sha256": checkpoint_fingerprint(ckpt) if ckpt.is_file() else None,"temperatures": [float(t) for t in s.temperatures], "steps": s.steps, "timestep_fs": s.timestep_fs,
            "replicas": s.replicas, "seed": s.seed, "write_every": s.write_every,
            "friction_per_fs": s.friction_per_fs, "dtype": dtype}
    from .dynamics import as_json

    got = sec["settings"]
    if {k: got.get(k) for k in want} != as_json(want) or sec.get("criteria") != as_json(s.criteria().as_dict()):
        return None
    return sec


def checkpoint_fingerprint(path: Path) -> str:
    """sha256 of a run's checkpoint.pt: MD results of a model that was since retrained are not reused."""
    from ..data.download import sha256_of

    return sha256_of(path)


def md_for_run(run_dir: str | os.PathLike, s: MDSettings, progress: bool = True) -> dict[str, Any]:
    """Run MD for the trained model of ``run_dir`` with settings ``s``; returns the md.json section."""
    import numpy as np

    from ..run import allocator
    from ..run.pipeline import apply_thread_env, resolve_device
    from .calculator import MaraBenchCalculator, load_run_model
    from .dynamics import run_md

    s.validate()
    apply_thread_env(resolve_device(s.device), s.threads)
    allocator.configure()
    run_dir = Path(run_dir)
    model, cfg = load_run_model(run_dir, device="cpu")
    calc = MaraBenchCalculator(model, dtype=s.dtype or cfg.dtype, device=s.device)
    from ..data import load_dataset

    test = load_dataset(cfg.dataset, cfg.split, cfg.data_dir, cfg.test).splits.get("test")  # frames only, no graphs
    if test is None or len(test) == 0:
        raise UserError(f"dataset '{cfg.dataset}' of run '{run_dir.name}' has no test frames to start MD from")
    rng = np.random.default_rng(s.seed)
    idx = rng.choice(len(test), size=min(s.replicas, len(test)), replace=False)
    starts = []
    for i in idx:
        a = test.subset([int(i)]).to_atoms()[0]
        a.calc = None
        a.info["frame_index"] = int(i)
        starts.append(a)
    ref_idx = rng.choice(len(test), size=min(200, len(test)), replace=False)
    refs = test.subset(np.sort(ref_idx)).to_atoms()
    return run_md(calc, starts, refs, temperatures=s.temperatures, steps=s.steps, timestep_fs=s.timestep_fs,
                  ensemble=s.ensemble, replicas=s.replicas, seed=s.seed, out_dir=run_dir / rf.MD_DIR,
                  criteria=s.criteria(), progress=progress, write_every=s.write_every,
                  friction_per_fs=s.friction_per_fs,
                  meta={"run_id": run_dir.name, "dtype": str(calc.dtype).replace("torch.", ""),
                        "reference": f"{cfg.dataset} test split",
                        "checkpoint_sha256": checkpoint_fingerprint(run_dir / rf.CHECKPOINT)})


def summary_lines(sec: dict[str, Any]) -> list[str]:
    """One printed line per temperature of an md.json section."""
    lines = []
    for T, s in sec["summary"].items():
        drift, w1, rot = s["median_drift_mev_atom_ps"], s["median_distance_w1_a"], s["max_rotation_jump_mev_atom"]
        lines.append(f"  {T:>6} K: {s['survived']}/{s['replicas']} stable, mean {s['mean_time_ps']:.3f} ps"
                     + ("" if drift is None else f", drift {drift:+.3f} meV/atom/ps")
                     + ("" if w1 is None else f", distance W1 {w1:.4f} Å")
                     + ("" if rot is None else f", rotation jump {rot:.3g} meV/atom"))
    return lines
