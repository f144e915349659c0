"""Registry of backbones and dataset families, discovered through Python entry points.

Groups: ``mara_bench.backbones`` and ``mara_bench.datasets``. Entries are loaded lazily: listing names reads
only package metadata; a backbone's module is imported when it is asked for by name. Built-ins (entries whose
distribution is ``mara_bench``) win a name clash, with a warning naming the plugin's distribution.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points

from .errors import unknown

BACKBONE_GROUP = "mara_bench.backbones"
DATASET_GROUP = "mara_bench.datasets"
BUILTIN_DIST = "mara_bench"


@dataclass(frozen=True)
class Entry:
    name: str
    value: str  # "module:Class"
    dist: str  # distribution that registered it
    entry_point: EntryPoint

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST

    def load(self):
        return self.entry_point.load()


def _dist_name(ep: EntryPoint) -> str:
    d = getattr(ep, "dist", None)
    return (d.metadata["Name"] if d is not None else "?").replace("-", "_")


@lru_cache(maxsize=None)
def _entries(group: str) -> dict[str, Entry]:
    found: dict[str, Entry] = {}
    for ep in entry_points(group=group):
        e = Entry(ep.name, ep.value, _dist_name(ep), ep)
        old = found.get(e.name)
        if old is None:
            found[e.name] = e
        elif old.builtin and not e.builtin:
            warnings.warn(f"{group}: '{e.name}' from distribution '{e.dist}' clashes with a built-in; the built-in wins",
                          stacklevel=2)
        elif e.builtin and not old.builtin:
            warnings.warn(f"{group}: '{e.name}' from distribution '{old.dist}' clashes with a built-in; the built-in wins",
                          stacklevel=2)
            found[e.name] = e
        elif old.value != e.value:
            warnings.warn(f"{group}: '{e.name}' registered by both '{old.dist}' and '{e.dist}'; using '{old.dist}'",
                          stacklevel=2)
    return found


def refresh() -> None:
    """Forget cached entry points (after installing or removing a plugin in-process)."""
    _entries.cache_clear()


def backbone_entries() -> dict[str, Entry]:
    return dict(sorted(_entries(BACKBONE_GROUP).items()))


def dataset_entries() -> dict[str, Entry]:
    return dict(sorted(_entries(DATASET_GROUP).items()))


def get_backbone(name: str):
    """The Backbone *class* registered under ``name`` (imports only its adapter module)."""
    entries = backbone_entries()
    if name not in entries:
        raise unknown("backbone", name, entries)
    return entries[name].load()


def get_dataset_family(name: str):
    """The dataset family class registered under ``name`` (the part before ':' of a dataset name)."""
    entries = dataset_entries()
    if name not in entries:
        raise unknown("dataset", name, entries)
    return entries[name].load()
