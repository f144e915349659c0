"""Registry of backbones and dataset families, discovered through Python entry points.

Groups: ``mara_bench.backbones`` and ``mara_bench.datasets``. Entries are loaded lazily: listing names reads
only package metadata; a backbone's module is imported when it is asked for by name. Built-ins (entries whose
distribution is ``mara_bench``) win a name clash, with a warning naming the plugin's distribution.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cache
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
    entry_point: EntryPoint | None
    obj: object = None  # set for in-process registrations (register())

    @property
    def builtin(self) -> bool:
        return self.dist == BUILTIN_DIST

    def load(self):
        return self.obj if self.entry_point is None else self.entry_point.load()


def provider(group: str, name: str) -> dict[str, str | None]:
    """The distribution (name, version) that registered ``name`` in ``group`` — for run provenance. In-process
    registrations report their ``dist`` label and no version; an unknown name gives None values."""
    e = _all(group).get(name)
    if e is None:
        return {"distribution": None, "version": None, "entry_point": None}
    d = getattr(e.entry_point, "dist", None) if e.entry_point is not None else None
    return {"distribution": e.dist, "version": d.version if d is not None else None, "entry_point": e.value}


def _dist_name(ep: EntryPoint) -> str:
    d = getattr(ep, "dist", None)
    return (d.metadata["Name"] if d is not None else "?").replace("-", "_")


@cache
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


_registered: dict[str, dict[str, Entry]] = {BACKBONE_GROUP: {}, DATASET_GROUP: {}}


def refresh() -> None:
    """Forget cached entry points (after installing or removing a plugin in-process)."""
    _entries.cache_clear()


def register(group: str, name: str, obj: object, dist: str = "__main__") -> None:
    """Register an object in-process (tests, notebooks). Entry points still win a clash with a built-in."""
    _registered[group][name] = Entry(name, f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__name__', '?')}",
                                     dist, None, obj)


def unregister(group: str, name: str) -> None:
    _registered[group].pop(name, None)


def _all(group: str) -> dict[str, Entry]:
    out = dict(_entries(group))
    for name, e in _registered[group].items():
        if name in out and out[name].builtin:
            warnings.warn(f"{group}: '{name}' from '{e.dist}' clashes with a built-in; the built-in wins", stacklevel=3)
            continue
        out[name] = e
    return out


def backbone_entries() -> dict[str, Entry]:
    return dict(sorted(_all(BACKBONE_GROUP).items()))


def dataset_entries() -> dict[str, Entry]:
    return dict(sorted(_all(DATASET_GROUP).items()))


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
