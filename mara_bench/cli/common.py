"""Arguments shared by run / compare / time, and their conversion to RunConfig."""

from __future__ import annotations

import argparse
import os

from ..config import MARA_ALIASES, MARA_VARIANTS, PRESETS, RunConfig, check_names, parse_override
from ..errors import UserError, yaml_error_line

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
        p.add_argument("--variants", "--mara", dest="variants", default=",".join(MARA_VARIANTS),
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
    if getattr(args, "config", None):
        return config_with_file(args, mara, seed)
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
    check_names(cfg)
    return cfg


def load_config_file(path: str) -> dict:
    """Read a run configuration (YAML or JSON mapping of RunConfig keys)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as e:
        raise UserError(f"cannot read config file '{path}': {e.strerror}") from None
    except yaml.YAMLError as e:
        raise UserError(f"config file '{path}' is not valid YAML/JSON ({yaml_error_line(e)})") from None
    if not isinstance(data, dict):
        raise UserError(f"config file '{path}' must hold a mapping of config keys (e.g. backbone: mace)")
    data.pop("run_id", None)
    data.pop("config_hash", None)
    return data


def parse_csv(text: str, what: str) -> list[str]:
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise UserError(f"empty {what} list")
    return items


_ARG_TO_KEY = {"mara_grid": "mara_grid", "mara_hidden": "mara_hidden", "mara_heads": "mara_heads"}


def config_with_file(args: argparse.Namespace, mara: str | None, seed: int | None) -> RunConfig:
    """--config FILE is the base; command-line flags that differ from their defaults override it."""
    base = load_config_file(args.config)
    defaults = vars(args.parser_defaults) if hasattr(args, "parser_defaults") else {}
    cfg_fields = set(RunConfig.__dataclass_fields__)
    for k, v in vars(args).items():
        if k in cfg_fields and k in defaults and v != defaults[k]:
            base[k] = v
    if getattr(args, "overrides", None):
        base.setdefault("overrides", {}).update(dict(parse_override(o) for o in args.overrides))
    if mara is not None:
        base["mara"] = mara
    if seed is not None:
        base["seed"] = seed
    if base.get("data_dir") is None and os.environ.get("MARA_BENCH_DATA"):
        base["data_dir"] = os.environ["MARA_BENCH_DATA"]
    recorded = base.pop("data_sha256", None)
    cfg = RunConfig.from_dict(base)
    check_names(cfg)
    if recorded is not None:  # a run's config.json: the run was made from files with these hashes
        from ..data.hashes import changed_files

        changed = changed_files(cfg, recorded)
        if changed:
            raise UserError(f"config file '{args.config}' is of a run made from other data: {'; '.join(changed)} "
                            "changed since; restore the file to resume that run, or remove 'data_sha256' from the "
                            "config to train on the new data")
    return cfg
