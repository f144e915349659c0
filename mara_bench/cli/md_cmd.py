"""``mara_bench md``: molecular dynamics with a trained model, from test-set starting frames.

Per replica: steps completed before failure, NVE energy drift, interatomic-distance W1 vs the test data, and
the energy jump when the system is rotated mid-trajectory. Writes ``<run>/md/md.json`` and extxyz trajectories.
"""

from __future__ import annotations

import argparse


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
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: $MARA_BENCH_THREADS, else torch's choice; small molecules run "
                        "fastest with 1, and several jobs on few cores must use 1 each)")
    p.add_argument("--write-every", type=int, default=10, help="write every N-th frame to the trajectory")
    p.add_argument("--bond-stretch", type=float, default=1.5,
                   help="failure when a starting bond exceeds this factor of its initial length (default 1.5)")
    p.add_argument("--min-distance", type=float, default=0.5, help="failure below this pair distance, Å (0.5)")
    p.add_argument("--output-dir", default="results", help="results folder holding the run (default results/)")
    p.add_argument("--allow-partial", action="store_true",
                   help="run MD on an unfinished run (no metrics.json: training stopped before its last epoch)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(args: argparse.Namespace) -> int:
    from ..md.run import MDSettings, md_for_run, parse_temperatures, summary_lines

    s = MDSettings(temperatures=parse_temperatures(args.temperature), steps=args.steps, timestep_fs=args.timestep,
                   ensemble=args.ensemble, replicas=args.replicas, seed=args.seed, dtype=args.dtype,
                   device=args.device, threads=args.threads, write_every=args.write_every, friction_per_fs=args.friction,
                   bond_stretch=args.bond_stretch, min_distance=args.min_distance).validate()
    from ..run.layout import is_complete, md_json, resolve_run_dir

    run_dir = resolve_run_dir(args.run, args.output_dir)
    if not is_complete(run_dir) and not args.allow_partial:
        from ..errors import UserError

        raise UserError(f"run '{run_dir}' is unfinished (no metrics.json: its training did not complete); finish it "
                        "by re-running its 'mara_bench run' command, or pass --allow-partial to use its last "
                        "checkpoint anyway")
    sec = md_for_run(run_dir, s, progress=not args.quiet)
    print(f"md ({args.ensemble}) for {run_dir.name}: {md_json(run_dir)}")
    print("\n".join(summary_lines(sec)))
    return 0
