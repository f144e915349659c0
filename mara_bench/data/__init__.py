"""Datasets: one interface (name -> frames + splits + metadata), manifests, downloads, caches, statistics.

Public names are imported lazily (``from mara_bench.data import load_dataset``) so that the CLI stays fast.
"""

_EXPORTS = {
    "Frames": "frames", "Dataset": "frames", "load_dataset": "loader", "graphs_for": "loader",
    "DatasetStats": "stats", "compute_stats": "stats", "KCAL_PER_MOL_IN_EV": "units",
}
__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
