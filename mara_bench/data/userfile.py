"""User files: ``path.xyz|.extxyz|.npz`` with optional ``?key=value&...`` options.

Options: ``energy_key`` (extxyz, default ``energy``), ``forces_key`` (extxyz, default ``forces``),
``units`` (energy unit of the file: eV, meV, kcal/mol, kJ/mol, hartree; forces per Å in the same unit;
npz default from the key convention), ``npz_keys`` (force a convention: rmd17, sgdml, nequip, ase, ...).
Example: ``data/my.xyz?energy_key=REF_energy&forces_key=REF_forces``.

Without a separate test file the frames are split 80/10/10 (train/val/test) by
``numpy.random.default_rng(split).permutation``; with ``test=`` the file is split 90/10 (train/val).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

from ..errors import UserError, unknown
from .frames import Dataset, Frames, check_frames

USER_SUFFIXES = (".xyz", ".extxyz", ".npz")
OPTIONS = ("energy_key", "forces_key", "units", "npz_keys")


def split_options(name: str) -> tuple[str, dict[str, str]]:
    """'file.xyz?energy_key=E' -> ('file.xyz', {'energy_key': 'E'}); unknown options are refused."""
    name = str(name)
    if "?" not in name:
        return name, {}
    base, query = name.split("?", 1)
    opts = dict(parse_qsl(query, keep_blank_values=True))
    for k, v in opts.items():
        if k not in OPTIONS:
            raise unknown(f"dataset option in '{name}'", k, OPTIONS)
        if not v:
            raise UserError(f"dataset option '{k}' in '{name}' has no value; write {k}=<value>")
    if "npz_keys" in opts:
        from .readers import NPZ_CONVENTIONS

        if opts["npz_keys"] not in NPZ_CONVENTIONS:
            raise unknown("npz_keys convention", opts["npz_keys"], NPZ_CONVENTIONS)
    return base, opts


def looks_like_path(name: str) -> bool:
    base = str(name).split("?", 1)[0]
    return base.lower().endswith(USER_SUFFIXES) or "/" in base or "\\" in base or Path(base).is_file()


def read_user_file(name, require_forces: bool = True) -> tuple[Frames, dict]:
    from .readers import read_file

    base, opts = split_options(str(name))
    path = Path(base).expanduser()
    frames, details = read_file(path, opts, require_forces=require_forces)
    check_frames(frames, str(path), require_forces=require_forces)
    details.update({"path": str(path.resolve()), "options": opts})
    return frames, details


def load_user_dataset(name: str, split: int = 1, test=None) -> Dataset:
    if isinstance(split, bool) or not isinstance(split, int) or split < 1:
        raise UserError(f"split must be a positive integer (it seeds the split of user files), got {split!r}")
    frames, details = read_user_file(name)
    need = 3 if test is None else 2
    if len(frames) < need:
        parts = "train/val/test" if test is None else "train/val (the test set is --test)"
        fix = ("add frames, or give a separate test file with --test FILE (then 2 frames suffice)" if test is None
               else "add frames")
        raise UserError(f"{details['path']}: {len(frames)} frame(s), but a user file needs at least {need} to be split "
                        f"into {parts}; {fix}")
    meta = {"family": "file", "member": details["path"], "source": details, "level_of_theory": "unknown (user file)",
            "source_units": {"positions": "Å", "energy": details.get("source_energy_unit", "eV"),
                             "forces": f"{details.get('source_energy_unit', 'eV')}/Å"},
            "citation": None, "licence": None, "isolated_atom_energies": None, "energy_only_test_sets": []}
    if test is None:
        idx = _split(len(frames), split, (0.8, 0.1, 0.1))
        meta["split_rule"] = (f"80/10/10 train/val/test by numpy default_rng({split}).permutation({len(frames)}); "
                              "each part kept in file order")
        splits = {k: frames.subset(v) for k, v in idx.items()}
    else:
        idx = _split(len(frames), split, (0.9, 0.1))
        test_frames, test_details = read_user_file(test)
        meta["split_rule"] = (f"90/10 train/val by numpy default_rng({split}).permutation({len(frames)}); "
                              f"test = {test_details['path']}")
        meta["test_file"] = test_details["path"]
        splits = {"train": frames.subset(idx["train"]), "val": frames.subset(idx["val"]), "test": test_frames}
    meta["split_seed"] = split
    meta["split_sizes"] = {k: len(v) for k, v in splits.items()}
    return Dataset(name=str(name), splits=splits, meta=meta)


def _split(n: int, seed: int, fractions):
    from .base import fraction_split

    return fraction_split(n, seed, fractions)
