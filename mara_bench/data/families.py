"""The built-in dataset families (entry points of the ``mara_bench.datasets`` group).

Each reads its manifest ``datasets/<family>.json`` (files, URLs, sha256, units, split rule, members, level of
theory, citation, licence). See docs/datasets.md for the names and split rules.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import UserError
from .base import DatasetFamily, fraction_split
from .frames import Dataset, Frames
from .locate import MANIFEST_DIR


class RMD17Family(DatasetFamily):
    """``rmd17:<molecule>``; split k = official split k: train file 1000 -> 950 train + 50 val; test file 1000.

    Reads the per-split npz files (andersx/rmd17-npz mirror, the layout of shared/datasets) or, when those are
    absent, the extracted figshare archive: ``rmd17/npz_data/rmd17_<m>.npz`` + ``rmd17/splits/index_*_0k.csv``.
    """

    name = "rmd17"
    n_val = 50

    def _split_files(self, member, splits):
        return [f"rmd17/rmd17_{member}_{kind}_{k:02d}.npz" for k in splits for kind in ("train", "test")]

    def _archive_files(self, member, splits):
        return [f"rmd17/npz_data/rmd17_{member}.npz"] + [f"rmd17/splits/index_{kind}_{k:02d}.csv"
                                                          for k in splits for kind in ("train", "test")]

    def _use_archive(self, member, splits, data_dir) -> bool:
        per_split = self._split_files(member, splits)
        return (not all(self.present(f, data_dir) for f in per_split)
                and all(self.present(f, data_dir) for f in self._archive_files(member, splits)))

    def required_files(self, member, split=None, data_dir=None):
        member = self.resolve_member(member)
        splits = [split] if split else self.manifest["splits"]
        if self._use_archive(member, splits, data_dir):
            return self._archive_files(member, splits)
        return self._split_files(member, splits)

    def load_member(self, member, split, data_dir):
        meta = self.base_meta(member)
        if self._use_archive(member, [split], data_dir):
            full_rel, train_csv, test_csv = self._archive_files(member, [split])
            full = self.read(full_rel, data_dir)
            rows = {kind: _read_index_csv(self.file(rel, data_dir), len(full))
                    for kind, rel in (("train", train_csv), ("test", test_csv))}
            train, test = full.subset(rows["train"]), full.subset(rows["test"])
            meta["files"] = [full_rel, train_csv, test_csv]
        else:
            train_rel, test_rel = self._split_files(member, [split])
            train, test = self.read(train_rel, data_dir), self.read(test_rel, data_dir)
            meta["files"] = [train_rel, test_rel]
        splits = self.with_val(train, self.n_val, split, meta)
        splits["test"] = test
        return Dataset(f"rmd17:{member}", splits, meta)


def _read_index_csv(path: Path, n_rows: int) -> np.ndarray:
    """0-based row indices from an rMD17 split CSV (one integer per line; commas tolerated)."""
    try:
        idx = np.array(path.read_text().replace(",", " ").split(), dtype=np.int64)
    except ValueError:
        raise UserError(f"{path}: not a list of integer row indices; restore the file from the rMD17 archive") \
            from None
    if len(idx) == 0 or idx.min() < 0 or idx.max() >= n_rows:
        raise UserError(f"{path}: row indices must lie in 0..{n_rows - 1}; the file does not match its npz")
    return idx


class _ExtxyzFamily(DatasetFamily):
    """Families made of a training file + named test sets (3BPA, AcAc, BOTNet ethanol)."""

    n_val = 50

    def _test_sets(self, member) -> dict[str, list[str]]:
        return self.manifest["members"][member].get("test_sets") or self.manifest["test_sets"]

    def _pick(self, candidates: list[str], data_dir) -> str | None:
        """The first candidate present locally, else the one with a published sha256 (for download)."""
        for rel in candidates:
            if self.present(rel, data_dir):
                return rel
        return None

    def _download_choice(self, candidates):
        files = self.manifest["files"]
        with_sha = [c for c in candidates if files.get(c, {}).get("sha256")]
        return (with_sha or candidates)[0]

    def required_files(self, member, split=None, data_dir=None):
        member = self.resolve_member(member)
        rels = [self.manifest["members"][member]["train_file"]]
        if self.manifest.get("isolated_atoms"):
            rels.append(self.manifest["isolated_atoms"])
        for name, cands in self._test_sets(member).items():
            if name in self.manifest.get("required_test_sets", ["test"]):
                rels.append(self._pick(cands, data_dir) or self._download_choice(cands))
        return rels

    def download_files(self, member, split=None, data_dir=None):
        """Required files plus every optional test set (e.g. 3BPA test_1200K, test_dih)."""
        member = self.resolve_member(member)
        rels = self.required_files(member, split, data_dir)
        for cands in self._test_sets(member).values():
            if not any(c in rels for c in cands):
                rels.append(self._pick(cands, data_dir) or self._download_choice(cands))
        return rels

    def partial_state(self, member, data_dir, state):
        required = self.manifest.get("required_test_sets", ["test"])
        absent = [n for n, c in self._test_sets(member).items() if n not in required and not self._pick(c, data_dir)]
        return f"{state}; {', '.join(absent)} not local (downloadable)" if absent and "offline" in state else None

    def load_member(self, member, split, data_dir):
        meta = self.base_meta(member)
        info = self.manifest["members"][member]
        energy_only = set(self.manifest.get("energy_only", []))
        meta["isolated_atom_energies"] = self.isolated_atoms(data_dir)
        splits = self.with_val(self.read(info["train_file"], data_dir), self.n_val, split, meta)
        files, missing = {"train": info["train_file"]}, []
        required = self.manifest.get("required_test_sets", ["test"])
        for name, cands in self._test_sets(member).items():
            rel = self._pick(cands, data_dir)
            if rel is None:
                if name not in required:
                    missing.append(name)
                    continue
                rel = self._download_choice(cands)
            splits[name] = self.read(rel, data_dir, require_forces=name not in energy_only)
            files[name] = rel
        meta["files"] = files
        meta["missing_test_sets"] = missing
        meta["energy_only_test_sets"] = [n for n in splits if n in energy_only]
        member_name = "" if member == self.manifest.get("default_member") else f":{member}"
        return Dataset(f"{self.name}{member_name}", splits, meta)


class ThreeBPAFamily(_ExtxyzFamily):
    """``3bpa`` (train_300K) or ``3bpa:mixedT``; tests 300 K, 600 K (+ 1200 K, dihedral when present)."""

    name = "3bpa"


class AcAcFamily(_ExtxyzFamily):
    """``acac`` (train 300 K) or ``acac:600K``; tests MD 300/600 K + energy-only H-transfer and dihedral scan."""

    name = "acac"


class EthanolBotnetFamily(_ExtxyzFamily):
    """``ethanol_botnet`` (= rMD17 ethanol split 04 in eV) or ``ethanol_botnet:eth_meth``; energy-only extras."""

    name = "ethanol_botnet"


class MD17Family(DatasetFamily):
    """``md17:<molecule>``: EGraFFBench 950/50/1000 split files when present, else a seeded split of the full
    sGDML npz; ``md17:ethanol_ccsd_t``: sGDML CCSD(T) train/test files."""

    name = "md17"
    n_pool, n_val, n_test = 1000, 50, 1000

    def required_files(self, member, split=None, data_dir=None):
        member = self.resolve_member(member)
        info = self.manifest["members"][member]
        if "ccsd_files" in info:
            return list(info["ccsd_files"].values())
        split_files = list(info.get("split_files", {}).values())
        if split_files and (all(self.present(f, data_dir) for f in split_files)
                            or not self.present(info["full_file"], data_dir)):
            return split_files
        return [info["full_file"]]

    def load_member(self, member, split, data_dir):
        info = self.manifest["members"][member]
        meta = self.base_meta(member)
        rels = self.required_files(member, data_dir=data_dir)
        meta["files"] = rels
        if "ccsd_files" in info:
            splits = self.with_val(self.read(info["ccsd_files"]["train"], data_dir), self.n_val, split, meta)
            splits["test"] = self.read(info["ccsd_files"]["test"], data_dir)
        elif rels == list(info.get("split_files", {}).values()):
            splits = {k: self.read(rel, data_dir) for k, rel in info["split_files"].items()}
            meta["split_rule"] = "EGraFFBench's own 950/50/1000 split files (not an official split; split ignored)"
        else:
            full = self.read(rels[0], data_dir)
            perm = np.random.default_rng(split).permutation(len(full))
            pool, test = perm[: self.n_pool], np.sort(perm[self.n_pool: self.n_pool + self.n_test])
            splits = self.with_val(full.subset(np.sort(pool)), self.n_val, split, meta)
            splits["test"] = full.subset(test)
            meta["split_rule"] = (f"default_rng({split}).permutation({len(full)}): first {self.n_pool} -> "
                                  f"{self.n_pool - self.n_val} train + {self.n_val} val, next {self.n_test} test")
        return Dataset(f"md17:{member}", splits, meta)


class MD22Family(DatasetFamily):
    """``md22:<molecule>``: seeded split with the MD22 paper's training-set sizes (95% train / 5% val, rest test).
    Offline only the 5-frame Ac-Ala3-NHMe sample exists: it loads as 3/1/1 frames (smoke tests only)."""

    name = "md22"

    def _use_sample(self, member, data_dir) -> bool:
        info = self.manifest["members"][member]
        return ("sample_file" in info and not self.present(info["file"], data_dir)
                and self.present(info["sample_file"], data_dir))

    def required_files(self, member, split=None, data_dir=None):
        member = self.resolve_member(member)
        info = self.manifest["members"][member]
        return [info["sample_file"] if self._use_sample(member, data_dir) else info["file"]]

    def download_files(self, member, split=None, data_dir=None):
        return [self.manifest["members"][self.resolve_member(member)]["file"]]

    def partial_state(self, member, data_dir, state):
        if self._use_sample(member, data_dir):
            return "offline 5-frame sample only (full file downloadable)"
        return None

    def load_member(self, member, split, data_dir):
        info = self.manifest["members"][member]
        meta = self.base_meta(member)
        if self._use_sample(member, data_dir):
            frames = self.read(info["sample_file"], data_dir, energy_key="Energy", energy_unit="kcal/mol")
            splits = {"train": frames.subset([0, 1, 2]), "val": frames.subset([3]), "test": frames.subset([4])}
            meta.update(files=[info["sample_file"]], sample=True,
                        split_rule="5-frame sample (smoke tests only): frames 0-2 train, 3 val, 4 test")
            return Dataset(f"md22:{member}", splits, meta)
        full = self.read(info["file"], data_dir)
        n_train = int(info["train_size"])
        if len(full) <= n_train:
            raise UserError(f"{info['file']}: {len(full)} frames, fewer than the training size {n_train}")
        perm = np.random.default_rng(split).permutation(len(full))
        splits = self.with_val(full.subset(np.sort(perm[:n_train])), n_train // 20, split, meta)
        splits["test"] = full.subset(np.sort(perm[n_train:]))
        meta.update(files=[info["file"]], sample=False)
        return Dataset(f"md22:{member}", splits, meta)


class DefaultFamily(DatasetFamily):
    """``default``: the embedded demo dataset ``datasets/default/{train,val,test}.xyz`` + ``meta.json``."""

    name = "default"
    folder = MANIFEST_DIR / "default"
    split_names = ("train", "val", "test")

    def __init__(self):
        meta_path = self.folder / "meta.json"
        self.meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        self.manifest = {"title": "embedded demo dataset", "members": {}}

    def members(self):
        return []

    def resolve_member(self, member):
        if member:
            raise UserError(f"dataset 'default' has no members; use 'default', not 'default:{member}'")
        return ""

    def check_split(self, split):
        return int(split)

    def required_files(self, member=None, split=None, data_dir=None):
        return [f"{s}.xyz" for s in self.split_names]

    def check_available(self, member, split, data_dir=None):
        self._paths()

    def _paths(self) -> dict[str, Path]:
        paths = {s: self.folder / f"{s}.xyz" for s in self.split_names}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise UserError(f"the embedded demo dataset is incomplete: {', '.join(missing)} missing; "
                            "restore datasets/default/ from the repository (git checkout -- datasets/default)")
        return paths

    def load_member(self, member, split, data_dir):
        from .frames import check_frames
        from .readers import read_extxyz

        splits: dict[str, Frames] = {}
        for s, p in self._paths().items():
            splits[s] = check_frames(read_extxyz(p)[0], str(p), require_forces=True)
        meta = {"family": "default", "member": "", "split_rule": "fixed files train/val/test.xyz (split ignored)",
                "isolated_atom_energies": None, "energy_only_test_sets": [], "source_units":
                {"positions": "Å", "energy": "eV", "forces": "eV/Å"}}
        meta.update({k: v for k, v in self.meta.items() if k not in ("isolated_atom_energies",)})
        iso = self.meta.get("isolated_atom_energies")
        meta["isolated_atom_energies"] = {int(k): float(v) for k, v in iso.items()} if iso else None
        return Dataset("default", splits, meta)

    def listing(self, data_dir=None):
        paths = {s: self.folder / f"{s}.xyz" for s in self.split_names}
        if not all(p.is_file() for p in paths.values()):
            return ["default: embedded demo dataset -> missing (datasets/default/*.xyz not generated)"]
        counts = self.meta.get("n_frames") or {s: _count_xyz_frames(p) for s, p in paths.items()}
        desc = ", ".join(str(self.meta[k]) for k in ("molecule", "level_of_theory") if self.meta.get(k))
        frames = ", ".join(f"{k} {v}" for k, v in counts.items())
        return [f"default: embedded demo dataset [{desc}; eV]", f"  {'default':<34} {frames}  -> offline (in repo)"]


def _count_xyz_frames(path: Path) -> int:
    """Frames of an xyz file by skipping atom blocks (no parsing of the numbers)."""
    n = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.readlines()
    i = 0
    while i < len(lines) and lines[i].strip():
        i += int(lines[i].split()[0]) + 2
        n += 1
    return n


__all__ = ["DefaultFamily", "RMD17Family", "MD17Family", "MD22Family", "ThreeBPAFamily", "AcAcFamily",
           "EthanolBotnetFamily", "fraction_split"]
