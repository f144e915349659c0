"""``mara_bench sweep``: run a YAML grid of runs as independent jobs (local processes or a SLURM job array).

Finished runs are skipped; killed runs resume from their checkpoint when the sweep is submitted again.
``--status`` reads the results folders only; ``--dry-run`` lists the runs and prints the sbatch script.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UserError


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("sweep", help="run a grid of runs (local or SLURM) / show its status", description=__doc__)
    p.add_argument("file", help="sweep YAML file (keys: backbones, variants, datasets, splits, seeds, presets, "
                                "overrides; see docs/scale.md)")
    p.add_argument("--executor", default="local", help="local (submitit LocalExecutor) or slurm (default local)")
    p.add_argument("--jobs", type=int, default=1,
                   help="local: runs at once; slurm: array parallelism (default 1 local, 64 slurm)")
    p.add_argument("--partition", default=None, help="SLURM partition")
    p.add_argument("--time", type=int, default=240, help="SLURM time limit per job in minutes (default 240); "
                                                         "jobs that hit it are requeued and resume")
    p.add_argument("--account", default=None, help="SLURM account")
    p.add_argument("--gpus-per-job", type=int, default=1, help="SLURM GPUs per job (default 1; 0 for CPU jobs)")
    p.add_argument("--cpus-per-job", type=int, default=None, help="SLURM CPUs per job")
    p.add_argument("--output-dir", default=None, help="results folder (default: the file's output_dir or results/)")
    p.add_argument("--dry-run", action="store_true", help="list the runs and print the sbatch script; submit nothing")
    p.add_argument("--status", action="store_true", help="show done/running/failed/pending from the results folders")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(args: argparse.Namespace) -> int:
    if args.executor not in ("local", "slurm"):
        from ..errors import unknown

        raise unknown("--executor", args.executor, ("local", "slurm"))
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1, got {args.jobs}")
    from ..run import sweep as sw

    doc = sw.load_sweep(args.file)
    cfgs = sw.expand(doc, where=f"sweep file '{args.file}'", output_dir=args.output_dir)
    if not cfgs:
        raise UserError(f"sweep file '{args.file}' defines no runs")
    setup = doc.get("setup") or []
    name = Path(args.file).stem
    st = sw.status(cfgs)
    if args.status:
        print(f"sweep '{name}': {len(cfgs)} runs in {cfgs[0].output_dir}/")
        for state in ("done", "running", "failed", "pending"):
            print(f"  {state:<8} {len(st[state])}")
        for state in ("running", "failed"):
            for rid in st[state]:
                print(f"    {state}: {rid}")
        return 0
    todo = [c for c in cfgs if c.run_id() not in st["done"] and c.run_id() not in st["running"]]
    sw.check_runs(todo, where=f"sweep file '{args.file}'")  # every planned run, before anything is submitted
    folder = sw.sweep_folder(cfgs, name)
    print(f"sweep '{name}': {len(cfgs)} runs, {len(st['done'])} done, {len(st['running'])} running, "
          f"{len(todo)} to {'run' if not args.dry_run else 'submit'}")
    if args.dry_run:
        for c in todo:
            print(f"  {c.run_id()}")
        params = sw.slurm_parameters(args.partition, args.time, args.account, args.gpus_per_job,
                                     args.jobs if args.executor == "slurm" and args.jobs > 1 else 64,
                                     args.cpus_per_job)
        print(f"\n# sbatch script submitit generates for a job array of {max(len(todo), 1)} runs:")
        print(sw.sbatch_script(folder.resolve(), max(len(todo), 1), params))
        return 0
    if not todo:
        print("nothing to do")
        return 0
    if args.executor == "slurm":
        params = sw.slurm_parameters(args.partition, args.time, args.account, args.gpus_per_job,
                                     args.jobs if args.jobs > 1 else 64, args.cpus_per_job)
        try:
            jobs = sw.submit_slurm(todo, folder, params, setup)
        except RuntimeError as e:
            raise UserError(f"cannot submit to SLURM ({str(e).splitlines()[0]}); use --executor local") from None
        print(f"submitted job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} runs); logs in {folder}; "
              f"check with: mara_bench sweep {args.file} --status")
        return 0
    res = sw.run_local(todo, folder, jobs=args.jobs, setup=setup, progress=not args.quiet)
    failed = {k: v for k, v in res.items() if v != "done"}
    print(f"done: {len(res) - len(failed)}/{len(res)} runs; logs in {folder}")
    for rid, why in failed.items():
        print(f"  {rid}: {why}", file=sys.stderr)
    return 1 if failed else 0
