"""The layering that docs/ARCHITECTURE.md promises, checked on the import statements of every module
(module-level and inside functions): cli → analysis → md, timing → run → nn, data, contract."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "mara_bench"
GROUPS = ("cli", "analysis", "md", "timing", "run", "nn", "data")


def group_of(parts: list[str]) -> str:
    """'contract' for the top-level modules, else the subpackage name."""
    return parts[0] if len(parts) > 1 and parts[0] in GROUPS else "contract"


def imports() -> list[tuple[str, str, str]]:
    """(module path, its group, imported mara_bench module) for every import of a mara_bench module."""
    out = []
    for f in PKG.rglob("*.py"):
        rel = list(f.relative_to(PKG).with_suffix("").parts)
        pkg = rel[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg[: len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                    mod = base + (node.module.split(".") if node.module else [])
                elif node.module and node.module.startswith("mara_bench"):
                    mod = node.module.split(".")[1:]
                else:
                    continue
                targets = [mod + [a.name] if not node.module or (node.level and mod == base) else mod
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name.split(".")[1:] for a in node.names if a.name.startswith("mara_bench.")]
            for t in targets:
                out.append(("/".join(rel), group_of(rel), ".".join(t)))
    return out


FORBIDDEN = {  # group -> groups it must not import
    "contract": {"cli", "analysis", "md", "timing", "run"},
    "nn": {"cli", "analysis", "md", "timing", "run"},
    "data": {"cli", "analysis", "md", "timing", "run"},
    "run": {"cli", "analysis", "md", "timing"},
    "md": {"cli", "timing"},
    "timing": {"cli", "md"},
    "analysis": {"cli", "timing"},
}
ALLOWED = {("contract", "cli"): {"__main__"},  # python -m mara_bench
           ("md", "analysis"): {"analysis.plots"}, ("timing", "analysis"): {"analysis.plots"}}  # one plot helper


def test_imports_point_down_the_layers():
    bad = []
    for path, grp, target in imports():
        tgrp = group_of(target.split("."))
        if tgrp in FORBIDDEN.get(grp, ()):
            allowed = ALLOWED.get((grp, tgrp), set())
            if path not in allowed and not any(target.startswith(a) for a in allowed):
                bad.append(f"{path} ({grp}) imports {target} ({tgrp})")
    assert not bad, "\n".join(sorted(set(bad)))


def test_the_checker_sees_imports():
    """A guard against a checker that passes because it sees nothing."""
    found = {(p, t) for p, _, t in imports()}
    assert ("run/pipeline", "config") in found or any(p == "run/pipeline" and t.startswith("config") for p, t in found)
    assert any(p == "analysis/report" and t.startswith("run.layout") for p, t in found)
