"""Typed, validated run configuration. Saved resolved with every run; the run id hashes it.

A run is fully described by a :class:`RunConfig`. ``resolved()`` gives the dict written to
``results/<run_id>/config.json``; ``run_id()`` is a readable prefix plus a short hash of the fields that
change the result (paths such as ``data_dir`` and ``output_dir`` are excluded from the hash).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError, did_you_mean, unknown

# The ablation ladder, in the one order used everywhere (tables, plots, test kit, CLI defaults):
# off (no gate) · scale (a learned constant gate per block) · control (invariant MLP gate) · paper (spherical attention)
MARA_VARIANTS = ("off", "scale", "control", "paper")
MARA_ALIASES = {"on": "paper"}
PRESETS = ("smoke", "quick", "paper")
DTYPES = ("float32", "float64")
DEVICES = ("cpu", "cuda", "auto")
_GRID_RE = re.compile(r"^(\d+)x(\d+)$")

# fields that say *where* things are, not *what* is computed: not part of the run id hash
_LOCATION_FIELDS = ("data_dir", "output_dir")
# keys a run's config.json records besides the RunConfig fields
RECORDED_KEYS = ("run_id", "config_hash", "data_sha256")


def variant_rank(variant: str) -> int:
    """Position of ``variant`` in :data:`MARA_VARIANTS` (unknown names last), for sorting."""
    return MARA_VARIANTS.index(variant) if variant in MARA_VARIANTS else len(MARA_VARIANTS)


def normalize_mara(value: str) -> str:
    v = str(value).strip().lower()
    v = MARA_ALIASES.get(v, v)
    if v not in MARA_VARIANTS:
        raise unknown("--mara value", value, list(MARA_VARIANTS) + list(MARA_ALIASES))
    return v


def parse_grid(grid: str) -> tuple[int, int]:
    m = _GRID_RE.match(str(grid).strip())
    if not m or int(m.group(1)) < 2 or int(m.group(2)) < 2:
        raise UserError(f"bad mara_grid '{grid}': expected HxW with H, W >= 2, e.g. 4x8, 8x16, 16x32")
    return int(m.group(1)), int(m.group(2))


@dataclass
class RunConfig:
    backbone: str = "mace"
    mara: str = "off"
    mara_grid: str = "4x8"
    mara_hidden: int = 32
    mara_heads: int = 1
    dataset: str = "default"
    split: int = 1
    test: str | None = None  # user files: path of a separate test file
    preset: str = "quick"
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float32"
    overrides: dict[str, Any] = field(default_factory=dict)  # "model.x" / "train.y" -> value
    data_dir: str | None = None
    output_dir: str = "results"

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """From a mapping of config keys; the keys a run's config.json records besides them (run_id,
        config_hash, data_sha256) are ignored (check data_sha256 with data.hashes.changed_files)."""
        names = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k not in RECORDED_KEYS}
        for k in d:
            if k not in names:
                raise UserError(f"unknown config key '{k}'{did_you_mean(k, names)}; valid keys: {', '.join(sorted(names))}")
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def validate(self) -> RunConfig:
        """Check every field; normalise aliases (``on`` -> ``paper``). Raises UserError naming the key."""
        self.mara = normalize_mara(self.mara)
        parse_grid(self.mara_grid)
        for key in ("mara_hidden", "mara_heads", "split", "seed"):
            val = getattr(self, key)
            if isinstance(val, bool) or not isinstance(val, int):
                raise UserError(f"config key '{key}' must be an integer, got {val!r}")
        if self.mara_hidden < 1 or self.mara_heads < 1 or self.mara_hidden % self.mara_heads:
            raise UserError(
                f"config keys 'mara_hidden'={self.mara_hidden} and 'mara_heads'={self.mara_heads}: "
                "need positive values with mara_hidden divisible by mara_heads"
            )
        if self.seed < 0:
            raise UserError(f"config key 'seed' must be >= 0, got {self.seed}")
        if self.preset not in PRESETS:
            raise unknown("preset", self.preset, PRESETS)
        if self.dtype not in DTYPES:
            raise unknown("dtype", self.dtype, DTYPES)
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise unknown("device", self.device, DEVICES)
        if not isinstance(self.overrides, dict):
            raise UserError("config key 'overrides' must be a mapping of 'model.x'/'train.y' to values")
        self.overrides = {k: coerce_number(v) for k, v in self.overrides.items()}
        for k in self.overrides:
            if not (isinstance(k, str) and k.split(".", 1)[0] in ("model", "train") and "." in k):
                raise UserError(f"override key '{k}' must look like 'model.<name>' or 'train.<name>'")
        return self

    # ------------------------------------------------------------------ identity
    def resolved(self) -> dict[str, Any]:
        self.validate()
        return dataclasses.asdict(self)

    def identity(self, data_sha256: dict[str, str] | None = None) -> dict[str, Any]:
        """What the result depends on. User files (``dataset``/``test`` paths) enter by their sha256 content
        hash (``data_sha256``; pass the recorded one to rebuild a saved run's identity); named datasets are pinned
        by their manifest, so their identity (and run id) holds no hash."""
        d = self.resolved()
        for k in _LOCATION_FIELDS:
            d.pop(k)
        if d["mara"] == "off":  # MARA options do not change an 'off' run
            for k in ("mara_grid", "mara_hidden", "mara_heads"):
                d.pop(k)
        if data_sha256 is None:
            from .data.hashes import data_hashes

            data_sha256 = data_hashes(self)
        if data_sha256:
            d["data_sha256"] = dict(sorted(data_sha256.items()))
        return d

    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:8]

    def run_id(self) -> str:
        ds = re.sub(r"[^A-Za-z0-9]+", "-", str(self.dataset)).strip("-")[:40] or "data"
        mara = self.mara if self.mara == "off" or self.mara_grid == "4x8" else f"{self.mara}{self.mara_grid}"
        return f"{self.backbone}-{mara}-{ds}-s{self.split}-{self.preset}-seed{self.seed}-{self.config_hash()}"


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``train.max_epochs=5`` into ("train.max_epochs", 5); values are read as YAML scalars."""
    if "=" not in text:
        raise UserError(f"bad --set '{text}': expected KEY=VALUE, e.g. --set train.max_epochs=5")
    key, raw = text.split("=", 1)
    import yaml

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    return key.strip(), coerce_number(value)


_FLOAT_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def coerce_number(value: Any) -> Any:
    """A string written as a number becomes one: YAML 1.1 reads ``1e-5`` (no dot) as a string; every float
    syntax (1e-5, 1E5, .5, +2.5e-3) is accepted here. Other values are returned unchanged."""
    if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        text = value.strip()
        if re.match(r"^[+-]?\d+$", text):
            return int(text)
        return float(text)
    return value


def apply_overrides(section: dict[str, Any], overrides: dict[str, Any], prefix: str, where: str) -> dict[str, Any]:
    """Return a copy of a preset section with ``prefix.key`` overrides applied; unknown keys are refused."""
    out = dict(section)
    for k, v in overrides.items():
        if not k.startswith(prefix + "."):
            continue
        name = k[len(prefix) + 1 :]
        if name not in out:
            raise UserError(f"unknown override '{k}' for {where}{did_you_mean(name, out)}; valid: "
                            + ", ".join(f"{prefix}.{n}" for n in sorted(out)))
        out[name] = v
    return out


def check_names(cfg: RunConfig) -> None:
    """Cheap checks of backbone and dataset names (no heavy import), before anything is written."""
    from .errors import unknown
    from .registry import backbone_entries, dataset_entries

    if cfg.backbone not in backbone_entries():
        raise unknown("backbone", cfg.backbone, backbone_entries())
    ds = str(cfg.dataset)
    if looks_like_path(ds):
        check_user_file(ds, "--dataset")
    elif (family := ds.split(":", 1)[0]) not in dataset_entries():
        from .errors import did_you_mean

        raise UserError(f"unknown dataset '{ds}'{did_you_mean(family, dataset_entries())}; dataset families: "
                        f"{', '.join(dataset_entries())} (or a path to an .xyz/.extxyz/.npz file)")
    if cfg.test:
        check_user_file(str(cfg.test), "--test")


def check_user_file(name: str, flag: str) -> None:
    """A user data file 'path[?key=value&...]': options valid, path an existing file (not a directory)."""
    from .data.userfile import split_options

    base, _ = split_options(name)  # checks the ?options (unknown key, empty value, bad npz_keys)
    if os.path.isdir(base):
        raise UserError(f"{flag} '{base}' is a directory, not a file; give an .xyz/.extxyz/.npz file")
    if not os.path.isfile(base):
        raise UserError(f"{flag} file '{base}' not found; give an existing .xyz/.extxyz/.npz file"
                        + (" or a dataset name" if flag == "--dataset" else ""))


def looks_like_path(name: str) -> bool:
    base = name.split("?", 1)[0]
    return os.sep in base or base.endswith((".xyz", ".extxyz", ".npz")) or os.path.exists(base)


def torch_dtype(dtype):
    """``'float32'``/``'float64'`` (or a ``torch.dtype``) as a ``torch.dtype``; one-line UserError otherwise."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise UserError(f"bad dtype '{dtype}': choose float32 or float64")
    return getattr(torch, dtype)
