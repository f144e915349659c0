"""``mara_bench md``: molecular dynamics with a trained model, from test-set starting frames.

Per replica: steps completed before failure, NVE energy drift, interatomic-distance W1 vs the test data, and
the energy jump when the system is rotated mid-trajectory. Writes ``<run>/md/md.json`` and extxyz trajectories.
"""

from __future__ import annotations

import argparse

from ..errors import UserError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("md", help="MD stability / energy conservation of a trained run", description=__doc__)
    p.add_argument("run", help="run id (or unique prefix) under --output-dir, or a run folder path")
    p.add_argument("--temperature", default="300", help="comma-separated temperatures in K (default 300)")
    p.add_argument("--steps", type=int, default=2000, help="MD steps per replica (default 2000)")
    p.add_argument("--timestep", type=float, default=0.5, help="time step in fs (default 0.5)")
    p.add_argument("--ensemble", default="nvt", help="nvt (Langevin, for stability) or nve (VelocityVerlet, "
                                                     "for conservation) (default nvt)")
    p.add_argument("--friction", type=float, default=0.01, help="Langevin friction in 1/fs (default 0.01)")
    p.add_argument("--replicas", type=int, default=3, help="replicas per temperature (default 3)")
    p.add_argument("--seed", type=int, default=0, help="seed for starting frames and velocities (default 0)")
    p.add_argument("--dtype", default=None, help="float32 or float64 (default: the run's dtype)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--write-every", type=int, default=10, help="write every N-th frame to the trajectory")
    p.add_argument("--bond-stretch", type=float, default=1.5,
                   help="failure when a starting bond exceeds this factor of its initial length (default 1.5)")
    p.add_argument("--min-distance", type=float, default=0.5, help="failure below this pair distance, Å (0.5)")
    p.add_argument("--output-dir", default="results", help="results folder holding the run (default results/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _temperatures(text: str) -> list[float]:
    out = []
    for t in str(text).split(","):
        try:
            v = float(t)
        except ValueError:
            raise UserError(f"bad --temperature '{text}': expected comma-separated numbers in K, e.g. 300,600") from None
        if not v > 0:
            raise UserError(f"bad --temperature '{t}': temperatures must be > 0 K")
        out.append(v)
    return out


def main(args: argparse.Namespace) -> int:
    temps = _temperatures(args.temperature)
    if args.ensemble not in ("nvt", "nve"):
        from ..errors import unknown

        raise unknown("--ensemble", args.ensemble, ("nvt", "nve"))
    for name in ("steps", "replicas", "write_every"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if not args.timestep > 0:
        raise UserError(f"--timestep must be > 0 fs, got {args.timestep}")
    from ..calculator import MaraBenchCalculator, load_run_model, resolve_run_dir

    run_dir = resolve_run_dir(args.run, args.output_dir)
    import numpy as np

    from ..md import run_md
    from ..md_failure import FailureCriteria

    model, cfg, prepared = load_run_model(run_dir, device="cpu", with_prepared=True)
    calc = MaraBenchCalculator(model, dtype=args.dtype or cfg.dtype, device=args.device)
    test = prepared.dataset.splits["test"] if "test" in prepared.dataset.splits else None
    if test is None or len(test) == 0:
        raise UserError(f"dataset '{cfg.dataset}' of run '{run_dir.name}' has no test frames to start MD from")
    rng = np.random.default_rng(args.seed)
    idx = rng.choice(len(test), size=min(args.replicas, len(test)), replace=False)
    starts = []
    for i in idx:
        a = test.subset([int(i)]).to_atoms()[0]
        a.calc = None
        a.info["frame_index"] = int(i)
        starts.append(a)
    ref_idx = rng.choice(len(test), size=min(200, len(test)), replace=False)
    refs = test.subset(np.sort(ref_idx)).to_atoms()
    criteria = FailureCriteria(bond_stretch=args.bond_stretch, min_distance=args.min_distance)
    sec = run_md(calc, starts, refs, temperatures=temps, steps=args.steps, timestep_fs=args.timestep,
                 ensemble=args.ensemble, replicas=args.replicas, seed=args.seed, out_dir=run_dir / "md",
                 criteria=criteria, progress=not args.quiet, write_every=args.write_every,
                 friction_per_fs=args.friction,
                 meta={"run_id": run_dir.name, "dtype": str(calc.dtype).replace("torch.", ""),
                       "reference": f"{cfg.dataset} test split"})
    print(f"md ({args.ensemble}) for {run_dir.name}: {run_dir / 'md' / 'md.json'}")
    for T, s in sec["summary"].items():
        drift = s["median_drift_mev_atom_ps"]
        w1 = s["median_distance_w1_a"]
        rot = s["max_rotation_jump_mev_atom"]
        print(f"  {T:>6} K: {s['survived']}/{s['replicas']} stable, mean {s['mean_time_ps']:.3f} ps"
              + ("" if drift is None else f", drift {drift:+.3f} meV/atom/ps")
              + ("" if w1 is None else f", distance W1 {w1:.4f} Å")
              + ("" if rot is None else f", rotation jump {rot:.3g} meV/atom"))
    return 0
