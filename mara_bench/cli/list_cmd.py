"""``mara_bench list``: backbones, datasets, presets and MARA variants. Imports no backbone package."""

from __future__ import annotations

import argparse

from ..config import MARA_ALIASES, MARA_VARIANTS, PRESETS
from ..errors import UserError

WHAT = ("all", "backbones", "datasets", "presets", "mara")


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("list", help="list backbones, datasets, presets and MARA variants", description=__doc__)
    p.add_argument("what", nargs="?", default="all", help=f"one of: {', '.join(WHAT)} (default all)")
    p.add_argument("--mara-details", action="store_true",
                   help="also print MARA parameter counts for the MACE paper message sizes")
    p.add_argument("--data-dir", default=None, help="offline data directory (default: $MARA_BENCH_DATA)")
    return p


def _backbones() -> list[str]:
    from ..registry import backbone_entries

    lines = ["Backbones (entry-point group mara_bench.backbones):"]
    for name, e in backbone_entries().items():
        try:
            cls = e.load()
            desc = getattr(cls, "description", "")
            presets = ", ".join(getattr(cls, "presets", {}) or {})
        except Exception as exc:  # a broken plugin must not break 'list'
            desc, presets = f"(failed to load: {type(exc).__name__}: {exc})", "-"
        origin = "built-in" if e.builtin else f"plugin from '{e.dist}'"
        lines.append(f"  {name:<12} {desc}  [presets: {presets}; {origin}]")
    return lines


def _datasets(args) -> list[str]:
    from ..data.listing import dataset_lines

    return dataset_lines(args.data_dir)


def _mara(details: bool) -> list[str]:
    lines = ["MARA variants: " + ", ".join(list(MARA_VARIANTS) + [f"{k} (= {v})" for k, v in MARA_ALIASES.items()])]
    if details:
        from ..nn.mara import parameter_table

        lines += parameter_table()
    return lines


def main(args: argparse.Namespace) -> int:
    if args.what not in WHAT:
        from ..errors import unknown

        raise unknown("list topic", args.what, WHAT)
    out: list[str] = []
    if args.what in ("all", "backbones"):
        out += _backbones() + [""]
    if args.what in ("all", "datasets"):
        out += _datasets(args) + [""]
    if args.what in ("all", "presets"):
        out += ["Presets: " + ", ".join(PRESETS) + "  (smoke: seconds, for tests; quick: default, minutes on a CPU; "
                "paper: published recipe)", ""]
    if args.what in ("all", "mara") or args.mara_details:
        out += _mara(args.mara_details)
    print("\n".join(out).rstrip())
    if not out:
        raise UserError("nothing to list")
    return 0
