"""``mara_bench report``: summary.csv, report.md and a self-contained report.html from finished runs.

Pass run folders or folders containing run folders (e.g. results/). Figures: per-atom force-error CDFs (log
axis, variants overlaid), parity plots, tail bars (P99, CVaR-1 %, max), MARA gate histograms vs distance and
equivariance errors.
"""

from __future__ import annotations

import argparse


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="aggregate finished runs into summary.csv + Markdown/HTML report",
                       description=__doc__)
    p.add_argument("paths", nargs="+", help="run folders or results folders")
    p.add_argument("-o", "--out", default=None, help="output folder (default <first path>/report)")
    p.add_argument("--title", default="mara_bench report", help="report title")
    return p


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..analysis.report import write_report
    from ..run.layout import find_runs

    done, unfinished = find_runs(args.paths)
    out = Path(args.out) if args.out else Path(args.paths[0]) / "report"
    paths = write_report(done, out, title=args.title, unfinished=unfinished)
    print(f"{len(done)} runs -> {paths['summary']}, {paths['markdown']}, {paths['html']}")
    return 0
