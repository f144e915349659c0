"""mara_bench: a benchmark harness for machine-learning force fields with and without the MARA adapter.

Public surface (kept small): :class:`RunConfig`, :class:`GraphBatch`, the plugin base classes
:class:`Backbone`/:class:`EnergyModel`, and :class:`MARA` (imported lazily: ``from mara_bench.mara import MARA``).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
