"""Base class of dataset families (the ``mara_bench.datasets`` entry-point group) and shared split helpers.

Plugin contract: an entry point names a class with ``name``; ``cls().load(member, split, data_dir, test,
options) -> Dataset``; optional ``listing(data_dir) -> list[str]`` and ``required_files(member, split)``.
Built-in families read their manifest ``datasets/<name>.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError, unknown
from .frames import Dataset, Frames, check_frames
from .locate import download_allowed, find_file, load_manifest, search_dirs, where_is


def val_split(n: int, n_val: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: ``n_val`` frames drawn by ``numpy.random.default_rng(seed).choice(n, n_val,
    replace=False)``; both returned sorted (file order kept)."""
    if n_val >= n:
        raise UserError(f"cannot take {n_val} validation frames from {n}; the training file is too small")
    val = np.sort(np.random.default_rng(seed).choice(n, n_val, replace=False))
    train = np.setdiff1d(np.arange(n), val)
    return train, val


def fraction_split(n: int, seed: int, fractions=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """Deterministic train/val(/test) split of ``n`` frames by ``default_rng(seed).permutation(n)``; each part
    sorted (file order kept); every part gets at least one frame."""
    parts = len(fractions)
    if n < parts:
        raise UserError(f"need at least {parts} frames to split into {'/'.join(['train', 'val', 'test'][:parts])}, "
                        f"found {n}")
    perm = np.random.default_rng(seed).permutation(n)
    sizes = [max(1, int(round(f * n))) for f in fractions[1:]]
    n_train = n - sum(sizes)
    if n_train < 1:
        raise UserError(f"too few frames ({n}) to split {fractions}")
    bounds = np.cumsum([0, n_train] + sizes)
    names = ["train", "val", "test"][:parts]
    return {name: np.sort(perm[bounds[k]:bounds[k + 1]]) for k, name in enumerate(names)}


class DatasetFamily:
    """A family of datasets described by a manifest. Subclasses implement :meth:`load_member`."""

    name: str = ""

    def __init__(self):
        self.manifest: dict[str, Any] = load_manifest(self.name)

    # ------------------------------------------------------------------ names
    def members(self) -> list[str]:
        return list(self.manifest.get("members", {}))

    def resolve_member(self, member: str | None) -> str:
        members = self.members()
        if not member:
            default = self.manifest.get("default_member")
            if default:
                return default
            raise UserError(f"dataset '{self.name}' needs a member: '{self.name}:<name>' with <name> one of "
                            f"{', '.join(members)}")
        if member in members:
            return member
        aliases = self.manifest.get("aliases", {})
        if member in aliases:
            return aliases[member]
        lower = {m.lower(): m for m in members}
        if member.lower() in lower:
            return lower[member.lower()]
        raise unknown(f"{self.name} member", member, members)

    def check_split(self, split: int) -> int:
        allowed = self.manifest.get("splits")
        if isinstance(split, bool) or not isinstance(split, (int, np.integer)) or split < 1:
            raise UserError(f"split must be a positive integer, got {split!r}")
        if allowed and split not in allowed:
            raise UserError(f"dataset '{self.name}' has official splits {allowed[0]}..{allowed[-1]}, got {split}")
        return int(split)

    # ------------------------------------------------------------------ files
    def required_files(self, member: str | None, split: int | None = None, data_dir=None) -> list[str]:
        """Relative paths (data-dir layout) of the files needed by ``member`` (``split`` None: all splits)."""
        raise NotImplementedError

    def file(self, relpath: str, data_dir=None) -> Path:
        """Local path of a dataset file; downloads it when allowed; else a UserError saying how to get it."""
        entry = self.manifest.get("files", {}).get(relpath, {})
        found = find_file(relpath, data_dir)
        if found is not None:
            from .hashes import verify_manifest_file

            # the manifest pins the file's content (an archive's sha256 is not its member's: not checked here)
            verify_manifest_file(found, None if entry.get("extract") else entry.get("sha256"), self.name, relpath)
            return found
        if download_allowed() and entry.get("url"):
            from .download import ensure_file

            return ensure_file(self.name, relpath, data_dir)
        where = ", ".join(str(d) for d in search_dirs(data_dir))
        how = (f"download it with 'python -m mara_bench.data.download {self.name}:<member>' or set "
               "MARA_BENCH_DOWNLOAD=1" if entry.get("url") else "no public download location is known")
        raise UserError(f"dataset file {relpath} not found (looked in {where}); set MARA_BENCH_DATA to a folder "
                        f"laid out like shared/datasets, or {how}")

    def download_files(self, member: str | None, split: int | None = None, data_dir=None) -> list[str]:
        """Files ``python -m mara_bench.data.download`` fetches for ``member`` (default: the required ones)."""
        return self.required_files(member, split, data_dir)

    def check_available(self, member: str, split: int, data_dir=None) -> None:
        """UserError listing every missing file of ``member`` and how to get them (unless downloads are on)."""
        missing = [f for f in self.required_files(member, split, data_dir) if not self.present(f, data_dir)]
        if not missing or download_allowed():
            return
        urls = all(self.manifest.get("files", {}).get(f, {}).get("url") for f in missing)
        how = (f"download with 'python -m mara_bench.data.download {self.name}:{member}' or set MARA_BENCH_DOWNLOAD=1"
               if urls else "no public download location is known")
        where = ", ".join(str(d) for d in search_dirs(data_dir))
        raise UserError(f"dataset {self.name}:{member}: {len(missing)} file(s) not found ({', '.join(missing)}; looked "
                        f"in {where}); set MARA_BENCH_DATA to a folder laid out like shared/datasets, or {how}")

    def present(self, relpath: str, data_dir=None) -> bool:
        return find_file(relpath, data_dir) is not None

    def read(self, relpath: str, data_dir=None, require_forces=True, **kw) -> Frames:
        from .readers import read_extxyz, read_npz

        path = self.file(relpath, data_dir)
        if path.suffix == ".npz":
            frames, _ = read_npz(path, require_forces=require_forces, **kw)
        else:
            frames, _ = read_extxyz(path, require_forces=require_forces, **kw)
        if self.manifest.get("non_periodic"):
            frames.pbc[:] = False
        return check_frames(frames, str(path), require_forces=require_forces)

    def isolated_atoms(self, data_dir=None) -> dict[int, float] | None:
        rel = self.manifest.get("isolated_atoms")
        if not rel:
            return None
        from .readers import read_isolated_atoms

        return read_isolated_atoms(self.file(rel, data_dir))

    # ------------------------------------------------------------------ loading
    def base_meta(self, member: str) -> dict[str, Any]:
        m = self.manifest
        mem = m.get("members", {}).get(member, {})
        return {"family": self.name, "member": member, "title": m.get("title"),
                "level_of_theory": mem.get("level_of_theory", m.get("level_of_theory")),
                "source_units": m.get("source_units"), "conversion": m.get("conversion"),
                "citation": m.get("citation"), "licence": m.get("licence"), "homepage": m.get("homepage"),
                "split_rule": m.get("split_rule"), "isolated_atom_energies": None, "energy_only_test_sets": []}

    def load(self, member: str | None, split: int = 1, data_dir=None, test=None, options=None) -> Dataset:
        if options:
            raise UserError(f"dataset '{self.name}' takes no '?key=value' options (those are for user files)")
        member = self.resolve_member(member)
        split = self.check_split(split)
        self.check_available(member, split, data_dir)
        ds = self.load_member(member, split, data_dir)
        if test is not None:
            from .userfile import read_user_file

            ds.splits["test"], _ = read_user_file(test)
            ds.meta["test_file"] = str(test)
        return ds

    def load_member(self, member: str, split: int, data_dir) -> Dataset:
        raise NotImplementedError

    def with_val(self, frames: Frames, n_val: int, split: int, meta: dict) -> dict[str, Frames]:
        train, val = val_split(len(frames), n_val, split)
        meta["val_seed"] = split
        meta["val_indices"] = val.tolist()
        return {"train": frames.subset(train), "val": frames.subset(val)}

    # ------------------------------------------------------------------ listing
    def listing(self, data_dir=None) -> list[str]:
        """One line per member: frames per split, elements, units, availability (manifest + file stats only)."""
        from ase.data import chemical_symbols

        m = self.manifest
        units = m.get("source_units", {}).get("energy", "?")
        lines = [f"{self.name}: {m.get('title', '')} [{m.get('level_of_theory', '')}; source energy unit {units}]"]
        for member, info in m.get("members", {}).items():
            files = self.required_files(member, None, data_dir)
            states = [where_is(f, data_dir) for f in files]
            if all(s != "missing" for s in states):
                state = "offline" if all(s == "data dir" for s in states) else "offline (cache)"
            else:
                urls = all(m["files"].get(f, {}).get("url") for f, s in zip(files, states, strict=True) if s == "missing")
                state = "downloadable" if urls else "missing"
                n_missing = sum(s == "missing" for s in states)
                state += f" ({n_missing}/{len(files)} files not local)"
            state = self.partial_state(member, data_dir, state) or state
            frames = ", ".join(f"{k} {v}" for k, v in info.get("frames", {}).items() if v is not None)
            els = "".join(chemical_symbols[z] for z in info.get("elements", []))
            name = f"{self.name}:{member}" + (" (default)" if member == m.get("default_member") else "")
            lines.append(f"  {name:<34} {info.get('atoms', '?'):>4} atoms  {els:<6} {frames}  -> {state}")
        return lines

    def partial_state(self, member: str, data_dir, state: str) -> str | None:
        """Override: a better status string (e.g. a member that loads from a sample, optional files missing)."""
        return None
