"""The backbone plugin API.

A backbone is a class registered in the entry-point group ``mara_bench.backbones`` (built-ins are registered in
our pyproject exactly like a third-party plugin). Importing the class must be cheap: import the heavy package
(mace, nequip, schnetpack, ...) inside :meth:`Backbone.build`, never at module level, so that
``mara_bench list`` stays fast.

Contract
--------
* ``presets``: ``{"smoke"|"quick"|"paper": {"model": {...}, "train": {...}}}``. ``model`` must contain
  ``r_max`` (Å). ``train`` holds keys of :data:`TRAIN_DEFAULTS` that differ from the defaults.
* ``build(model_options, stats, mara, dtype)`` returns an :class:`EnergyModel`.
* The model's ``forward(batch, compute_forces=True, training=False)`` returns ``{"energy": [G], "forces": [N, 3]}``
  in eV and eV/Å; forces are ``-dE/dpositions`` by autograd (``create_graph=training``), so MARA's contribution
  is included. MARA modules live inside the model (:meth:`EnergyModel.mara_modules`) and keep their last gates.

This module is deliberately light (no torch import): ``mara_bench list`` reads backbone classes without
importing torch. :class:`EnergyModel` lives in :mod:`mara_bench.model` and is re-exported here lazily.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .data.stats import DatasetStats
    from .model import EnergyModel

# Shared training hyper-parameters (one training loop for every backbone). Presets override a subset.
TRAIN_DEFAULTS: dict[str, Any] = {
    "batch_size": 5,
    "max_epochs": 100,
    "max_train_frames": None,  # use only the first N (seeded-shuffled) train frames; None = all
    "max_val_frames": None,
    "optimizer": "amsgrad",  # adam | amsgrad | adamw
    "lr": 0.01,
    "weight_decay": 0.0,
    "energy_weight": 1.0,  # energy MSE weight
    "energy_loss": "per_atom",  # energy MSE of: per_atom = (ΔE / n_atoms)² | total = ΔE² (per structure)
    "forces_weight": 1000.0,  # per-component force MSE weight
    "stage2_start": None,  # fraction of max_epochs after which stage-two loss weights apply (None = no stage two)
    "stage2_energy_weight": 1000.0,
    "stage2_forces_weight": 100.0,
    "ema_decay": 0.99,  # None or 0 disables EMA
    "scheduler": "plateau",  # plateau | none
    "scheduler_patience": 50,
    "scheduler_factor": 0.8,
    "early_stopping_patience": None,  # epochs without val improvement; None = off
    "grad_clip": 10.0,
    "time_limit_s": None,  # stop training after this wall time (checked per epoch); None = off
    # train for the epochs that spend this many training FLOPs (mara_bench.run.cost; replaces max_epochs, scales the
    # epoch-based schedules); None = off. compare --budget flops sets it to the costliest variant's FLOPs
    "budget_flops": None,
    "eval_batch_size": 32,
}


@dataclass(frozen=True)
class MaraOptions:
    """What MARA variant to attach and with which options (from RunConfig)."""

    variant: str = "off"  # off | paper | control
    grid: tuple[int, int] = (4, 8)
    hidden: int = 32
    heads: int = 1

    @property
    def enabled(self) -> bool:
        return self.variant != "off"

    @classmethod
    def from_config(cls, cfg) -> MaraOptions:
        from .config import parse_grid

        return cls(variant=cfg.mara, grid=parse_grid(cfg.mara_grid), hidden=cfg.mara_hidden, heads=cfg.mara_heads)


class Backbone:
    """Base class for backbone plugins. Subclass, fill the class attributes and implement ``build``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()  # import names of the packages build() needs
    presets: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}
    mara_placement: ClassVar[str] = ""  # one line: where MARA attaches in this backbone
    # model option -> rule for its value (see check_values), e.g. {"num_layers": "int>=1", "r_max": "float>0",
    # "hidden_irreps": "irreps", "gate": "'silu' | 'tanh'"}; options without a rule must have the type their
    # presets give them
    option_rules: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass may document itself instead of setting the two text attributes: ``description`` defaults to
        the first line of its docstring, ``mara_placement`` to the docstring paragraph that starts with "MARA:"."""
        super().__init_subclass__(**kwargs)
        doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
        paragraphs = [" ".join(line.strip() for line in par.splitlines()).strip() for par in doc.split("\n\n")]
        if "description" not in cls.__dict__ and doc:
            cls.description = doc.splitlines()[0].strip().rstrip(".")
        placement = next((par[len("MARA:"):].strip() for par in paragraphs if par.startswith("MARA:")), None)
        if "mara_placement" not in cls.__dict__ and placement:
            cls.mara_placement = placement.rstrip(".")

    def build(self, model_options: dict[str, Any], stats: DatasetStats, mara: MaraOptions,
              dtype: torch.dtype | None = None) -> EnergyModel:
        raise NotImplementedError

    def check_options(self, model_options: dict[str, Any], where: str = "") -> None:
        """Validate the values of ``model_options`` (the preset's model dict after ``--set`` overrides) before
        anything is built or written. Raises a one-line UserError naming the option. The default checks
        :attr:`option_rules` (and, for options without a rule, the type the presets give them); override it for
        more (call ``super().check_options(...)`` first)."""
        rules = {**inferred_rules(self.presets), **self.option_rules}
        check_values(model_options, rules, where or f"backbone '{self.name}'")

    # helpers shared by all backbones ------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> dict[str, dict[str, Any]]:
        from .errors import unknown

        if name not in cls.presets:
            raise unknown(f"preset for backbone '{cls.name}'", name, cls.presets)
        p = cls.presets[name]
        return {"model": dict(p["model"]), "train": {**TRAIN_DEFAULTS, **p.get("train", {})}}


# ------------------------------------------------------------------------------------------- option values
_RULE_TEXT = {"int": "an integer", "float": "a number", "number": "a number", "bool": "true or false",
              "str": "a string", "irreps": "e3nn irreps such as 16x0e+16x1o"}


def inferred_rules(presets: dict[str, dict[str, dict[str, Any]]]) -> dict[str, str]:
    """A type rule per model option from the values the presets give it (int, number, bool, str, list)."""
    kinds: dict[str, set[str]] = {}
    for p in presets.values():
        for k, v in (p.get("model") or {}).items():
            kind = ("bool" if isinstance(v, bool) else "int" if isinstance(v, int) else "float"
                    if isinstance(v, float) else "str" if isinstance(v, str) else "list" if isinstance(v, list)
                    else None)
            if kind is not None:
                kinds.setdefault(k, set()).add(kind)
    out = {}
    for k, ks in kinds.items():
        if ks <= {"int", "float"} and "float" in ks:
            ks = {"float"}
        out[k] = " | ".join(sorted(ks))
    return out


def _check_atom(value: Any, rule: str) -> bool:
    import re

    rule = rule.strip()
    if len(rule) >= 2 and rule[0] == rule[-1] == "'":
        return value == rule[1:-1]
    if rule.startswith("list[") and rule.endswith("]"):
        return isinstance(value, (list, tuple)) and len(value) > 0 and all(_check_atom(v, rule[5:-1]) for v in value)
    if rule == "list":
        return isinstance(value, (list, tuple))
    if rule == "bool":
        return isinstance(value, bool)
    if rule == "str":
        return isinstance(value, str)
    if rule == "irreps":
        if not isinstance(value, str) or not value.strip():
            return False
        try:
            from e3nn import o3
        except ImportError:  # cannot check without e3nn; the backbone's build will
            return True
        try:
            return len(o3.Irreps(value)) > 0
        except (ValueError, AssertionError):
            return False
    m = re.match(r"^(int|float|number)\s*(>=|>|<=|<)?\s*([-+0-9.eE]+)?$", rule)
    if not m:
        raise ValueError(f"bad option rule '{rule}'")
    kind, op, bound = m.groups()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if kind == "int" and not isinstance(value, int):
        return False
    import math

    if not math.isfinite(float(value)):
        return False
    if op:
        b = float(bound)
        return {">=": value >= b, ">": value > b, "<=": value <= b, "<": value < b}[op]
    return True


def describe_rule(rule: str) -> str:
    parts = []
    for atom in rule.split("|"):
        atom = atom.strip()
        if atom.startswith("list[") and atom.endswith("]"):
            parts.append(f"a non-empty list of {describe_rule(atom[5:-1])}")
            continue
        head = atom.split(">")[0].split("<")[0].strip()
        text = _RULE_TEXT.get(head, atom)
        if head != atom and not atom.startswith("'"):
            bound = atom[len(head):].strip()
            op = bound.rstrip("-+0123456789.eE")
            text += f" {op} {bound[len(op):].strip()}"
        parts.append(text)
    return " or ".join(parts)


def check_values(options: dict[str, Any], rules: dict[str, str], where: str, prefix: str = "model") -> None:
    """Check each option that has a rule. A rule is alternatives separated by '|', each one of: ``int``,
    ``float``/``number`` (optionally with a bound: ``int>=1``, ``float>0``), ``bool``, ``str``, ``irreps`` (a
    non-empty e3nn irreps string), ``list``, ``list[<rule>]`` or a quoted literal (``'rms_forces'``). One-line
    UserError: '<where>: model.<name>=<value> is not valid: expected <...>'."""
    from .errors import UserError

    for name, rule in rules.items():
        if name not in options:
            continue
        value = options[name]
        if not any(_check_atom(value, atom) for atom in rule.split("|")):
            raise UserError(f"{where}: {prefix}.{name}={value!r} is not valid: expected {describe_rule(rule)}; "
                            f"fix it with --set {prefix}.{name}=<value>")


def check_model_keys(options: dict[str, Any], keys, backbone: str) -> None:
    """The checks every ``build()`` starts with: a one-line UserError for a model option not in ``keys`` (with
    "did you mean") and for a missing ``r_max``. ``backbone`` names it in the message (e.g. "PaiNN")."""
    from .errors import UserError, did_you_mean

    unknown_keys = sorted(set(options) - set(keys))
    if unknown_keys:
        raise UserError(f"unknown {backbone} model option '{unknown_keys[0]}'{did_you_mean(unknown_keys[0], keys)}; "
                        f"valid: {', '.join(sorted(keys))}")
    if "r_max" not in options:
        raise UserError(f"{backbone} model options need 'r_max' (Å)")


def __getattr__(name: str):  # PEP 562: lazy re-export, keeps this module torch-free
    if name == "EnergyModel":
        from .model import EnergyModel

        return EnergyModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
