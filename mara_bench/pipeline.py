"""The run pipeline: dataset -> graph batches -> backbone (+ MARA) -> trainer -> evaluator -> results."""

from __future__ import annotations

from .errors import UserError


def run_config(cfg, force: bool = False, progress: bool = True):
    raise UserError("'run' is not yet available in this version")
