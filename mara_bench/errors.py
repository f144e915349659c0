"""User-facing errors: one line, exit code 2, with a "did you mean" where a name was mistyped."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A mistake the user can fix (bad name, bad file, bad value). The CLI prints it on one line, exit 2."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """Return ' (did you mean 'x'?)' for the closest choice, or '' when none is close."""
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def unknown(kind: str, name: str, choices: Iterable[str]) -> UserError:
    """UserError for an unknown name of some kind, listing the valid choices."""
    choices = sorted(choices)
    return UserError(f"unknown {kind} '{name}'{did_you_mean(name, choices)}; choose from: {', '.join(choices)}")


class DiskFull(UserError, OSError):
    """A write failed because the disk (or quota) is full. Also an OSError, so code that tolerates a failed
    optional write (e.g. a cache) keeps doing so; the CLI prints it on one line, exit 2."""


class RunLocked(UserError):
    """Another live process holds the run folder's lock (it is training into it)."""


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024.0
    return f"{n:.1f} TiB"


def yaml_error_line(e) -> str:
    """'line 3, column 7: mapping values are not allowed here' from a yaml.YAMLError."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    what = getattr(e, "problem", None) or str(e).splitlines()[0]
    if mark is None:
        return str(what)
    return f"line {mark.line + 1}, column {mark.column + 1}: {what}"
