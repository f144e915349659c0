"""``mara_bench run``: train one backbone (+ MARA variant) on one dataset, evaluate, write results/<run_id>/."""

from __future__ import annotations

import argparse

from .common import add_data_args, add_model_args, config_from_args


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="train and evaluate one model", description=__doc__)
    add_model_args(p)
    add_data_args(p)
    p.add_argument("--seed", type=int, default=0, help="seed for data order and initialisation (default 0)")
    p.add_argument("--output-dir", default="results", help="results folder (default results/)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="YAML/JSON run configuration (e.g. a run's config.json); flags given on the command line override it")
    p.add_argument("--force", action="store_true", help="re-run even if a finished run with this config exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(_parser=p)
    return p


def main(args: argparse.Namespace) -> int:
    if args.config:
        args.parser_defaults = argparse.Namespace(**{a.dest: a.default for a in args._parser._actions})
    cfg = config_from_args(args)
    from ..run.results import check_output_dir

    check_output_dir(cfg.output_dir)
    from ..run.pipeline import run_config

    run_config(cfg, force=args.force, progress=not args.quiet)
    return 0
