"""mara_bench: a benchmark harness for machine-learning force fields with and without the MARA adapter.

Public surface (kept small, :data:`__all__`): :class:`RunConfig`, :class:`GraphBatch`, the plugin base classes
:class:`Backbone`/:class:`EnergyModel`, and :class:`MARA`. They are imported lazily on first access
(``mara_bench.MARA`` imports torch then; ``import mara_bench`` alone does not), so ``from mara_bench import MARA``
and ``from mara_bench.nn.mara import MARA`` are the same class.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "RunConfig": "mara_bench.config",
    "GraphBatch": "mara_bench.graph",
    "Backbone": "mara_bench.backbone",
    "EnergyModel": "mara_bench.model",
    "MARA": "mara_bench.nn.mara",
}

__all__ = ["__version__", "RunConfig", "GraphBatch", "Backbone", "EnergyModel", "MARA"]  # = _EXPORTS

if TYPE_CHECKING:  # pragma: no cover
    from .backbone import Backbone
    from .config import RunConfig
    from .graph import GraphBatch
    from .model import EnergyModel
    from .nn.mara import MARA


def __getattr__(name: str) -> Any:  # PEP 562: lazy re-exports keep 'import mara_bench' (and 'mara_bench list') cheap
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
