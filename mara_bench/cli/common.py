"""Arguments shared by run / compare / time, and their conversion to RunConfig."""

from __future__ import annotations

import argparse
import os

from ..config import MARA_ALIASES, MARA_VARIANTS, PRESETS, RunConfig, parse_override
from ..errors import UserError

MARA_CHOICES_HELP = ", ".join(list(MARA_VARIANTS) + [f"{k} (= {v})" for k, v in MARA_ALIASES.items()])


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="default",
                   help="dataset name (family:member, e.g. rmd17:aspirin), a path to an extxyz/npz file, "
                        "or 'default' (the embedded demo dataset)")
    p.add_argument("--split", type=int, default=1, help="official split number where the dataset has several (1..5)")
    p.add_argument("--test", default=None, help="user files: a separate test file")
    p.add_argument("--data-dir", default=None,
                   help="offline data directory laid out like shared/datasets (default: $MARA_BENCH_DATA)")


def add_model_args(p: argparse.ArgumentParser, multi: bool = False) -> None:
    p.add_argument("--backbone", default="mace", help="backbone name (see 'mara_bench list')")
    if multi:
        p.add_argument("--variants", "--mara", dest="variants", default="off,on,control",
                       help=f"comma-separated MARA variants: {MARA_CHOICES_HELP}")
    else:
        p.add_argument("--mara", default="off", help=f"MARA variant: {MARA_CHOICES_HELP}")
    p.add_argument("--mara-grid", default="4x8", help="MARA S2 grid HxW (default 4x8)")
    p.add_argument("--mara-hidden", type=int, default=32, help="MARA hidden width C (default 32)")
    p.add_argument("--mara-heads", type=int, default=1, help="MARA attention heads (default 1)")
    p.add_argument("--preset", default="quick", help=f"size preset: {', '.join(PRESETS)} (default quick)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--dtype", default="float32", help="float32 or float64 (default float32)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set train.max_epochs=5 --set model.num_channels=16")


def config_from_args(args: argparse.Namespace, mara: str | None = None, seed: int | None = None) -> RunConfig:
    overrides = dict(parse_override(o) for o in getattr(args, "overrides", []) or [])
    data_dir = getattr(args, "data_dir", None) or os.environ.get("MARA_BENCH_DATA") or None
    cfg = RunConfig(
        backbone=args.backbone,
        mara=mara if mara is not None else args.mara,
        mara_grid=args.mara_grid,
        mara_hidden=args.mara_hidden,
        mara_heads=args.mara_heads,
        dataset=args.dataset,
        split=args.split,
        test=getattr(args, "test", None),
        preset=args.preset,
        seed=seed if seed is not None else getattr(args, "seed", 0),
        device=args.device,
        dtype=args.dtype,
        overrides=overrides,
        data_dir=data_dir,
        output_dir=getattr(args, "output_dir", "results"),
    )
    cfg.validate()
    # names are checked here, before anything is written
    from ..registry import backbone_entries

    if cfg.backbone not in backbone_entries():
        from ..errors import unknown

        raise unknown("backbone", cfg.backbone, backbone_entries())
    return cfg


def parse_csv(text: str, what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise UserError(f"empty {what} list")
    return items
