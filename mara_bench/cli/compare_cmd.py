"""``mara_bench compare``: run (or reuse) backbone × MARA variant × seed, then a paired comparison.

The default ladder is off, scale, control, paper. The unit of replication is a trained model (runs paired by split
and seed): per metric, Δ vs off (and paper vs scale / control) with a 95 % interval holding the between-model and
the test-set variability, P(improvement) and a verdict (Holm across the metrics of one comparison; none with fewer
than 3 paired models; rule in docs/protocol.md). Prints the verdict table; writes compare.csv, compare.md (verdict
first), cost.csv, summary.csv, report.md and report.html (verdict and forest plot first) into the compare folder. ``--md`` also runs molecular dynamics with every
trained model (``--md-*`` options, as in ``mara_bench md``) and adds an MD stability table and survival plots.
"""

from __future__ import annotations

import argparse

from .common import add_data_args, add_model_args, config_from_args, parse_csv


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("compare", help="paired comparison of MARA variants over seeds (runs what is missing)",
                       description=__doc__)
    add_model_args(p, multi=True)
    p.add_argument("--backbones", default=None, help="comma-separated backbones (overrides --backbone)")
    add_data_args(p)
    p.add_argument("--seeds", type=int, default=3,
                   help="number of seeds 0..N-1 (default 3; verdicts need >= 3 paired models, 5 give power)")
    p.add_argument("--output-dir", default="results", help="results folder (default results/)")
    p.add_argument("--out", default=None, help="compare folder (default <output-dir>/compare-<backbones>-<dataset>-...)")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--budget", default="auto",
                   help="epochs (every variant trains the preset's epochs), flops (every variant spends the training "
                        "FLOPs the costliest variant spends in those epochs: cheaper ones get more epochs), both, or "
                        "auto (default: both when the equal-compute runs cost at most 3x the equal-epoch training, "
                        "else epochs with a note)")
    p.add_argument("--force", action="store_true", help="re-run finished runs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    g = p.add_argument_group("MD stability (with --md; see 'mara_bench md --help' and docs/md.md)")
    g.add_argument("--md", action="store_true",
                   help="also run MD with every trained model and add an MD stability table (reuses MD results "
                        "with the same settings)")
    g.add_argument("--md-temperature", default="300", help="comma-separated temperatures in K (default 300)")
    g.add_argument("--md-steps", type=int, default=2000, help="MD steps per replica (default 2000)")
    g.add_argument("--md-timestep", type=float, default=0.5, help="time step in fs (default 0.5)")
    g.add_argument("--md-replicas", type=int, default=3, help="replicas per temperature and run (default 3)")
    g.add_argument("--md-ensembles", default="nvt", help="nvt (stability), nve (conservation) or nvt,nve")
    g.add_argument("--md-dtype", default=None, help="float32 or float64 for MD (default: each run's dtype)")
    return p


def md_settings(args: argparse.Namespace) -> list:
    """MDSettings per requested ensemble, validated (before anything runs)."""
    from ..md.run import MDSettings, parse_temperatures

    if not args.md:
        return []
    temps = parse_temperatures(args.md_temperature)
    return [MDSettings(temperatures=temps, steps=args.md_steps, timestep_fs=args.md_timestep, ensemble=e,
                       replicas=args.md_replicas, dtype=args.md_dtype, device=args.device).validate()
            for e in parse_csv(args.md_ensembles, "MD ensemble")]


def main(args: argparse.Namespace) -> int:
    from ..errors import UserError

    backbones = parse_csv(args.backbones, "backbone") if args.backbones else [args.backbone]
    variants = parse_csv(args.variants, "variant")
    if args.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {args.seeds}")
    if args.bootstrap < 100:
        raise UserError(f"--bootstrap must be >= 100, got {args.bootstrap}")
    from ..analysis.compare import BUDGETS

    if args.budget not in BUDGETS:
        from ..errors import unknown

        raise unknown("--budget", args.budget, BUDGETS)
    md = md_settings(args)
    cfgs = []
    for b in backbones:
        args.backbone = b
        cfgs.append(config_from_args(args, mara="off", seed=0))
    from ..analysis.compare import (
        AFFORDABLE,
        budget_configs,
        default_out_dir,
        flop_budget,
        plan,
        run_all,
        write_compare,
    )

    per_backbone = [plan(base, [b], variants, list(range(args.seeds))) for b, base in zip(backbones, cfgs, strict=True)]
    out = args.out or default_out_dir(cfgs[0], backbones)
    from ..run.results import check_output_dir

    check_output_dir(out)
    groups: dict[str, list] = {}
    notes: list[str] = []
    if args.budget != "flops":
        groups["equal epochs"] = [c for cs in per_backbone for c in cs]
    if args.budget != "epochs":
        flop_cfgs = []
        for cs in per_backbone:
            fb = flop_budget(cs)
            if args.budget == "auto" and fb.cost_ratio() > AFFORDABLE:
                notes.append(f"{fb.backbone}: no equal-compute comparison by default — it would cost "
                             f"{fb.cost_ratio():.1f}x the equal-epoch training ({fb.describe()}); run with "
                             "--budget both (or flops) to make it")
                continue
            print(fb.describe())
            flop_cfgs += budget_configs(cs, fb)
        if flop_cfgs:
            groups["equal FLOPs"] = flop_cfgs
    for n in notes:
        print(f"note: {n}")
    todo = list({c.run_id(): c for cs in groups.values() for c in cs}.values())  # a shared run is run once
    dirs = dict(zip((c.run_id() for c in todo), run_all(todo, progress=not args.quiet, force=args.force),
                    strict=True))
    run_dirs = {name: [dirs[c.run_id()] for c in cs] for name, cs in groups.items()}
    if md:
        from ..analysis.compare import run_md_all

        run_md_all(list(dirs.values()), md, progress=not args.quiet, force=args.force)
    paths = write_compare(run_dirs, out, n_boot=args.bootstrap, notes=notes)
    print()
    print(paths["verdict"])
    print(f"\ncompare table: {paths['csv']}\nreport: {paths['html']}")
    return 0
