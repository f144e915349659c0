"""Command-line interface: ``python -m mara_bench <command>`` (also the ``mara-bench`` script).

One module per subcommand; each exposes ``add_parser(subparsers)`` and ``main(args) -> int``. Heavy imports
happen inside ``main`` so that ``--help`` and ``list`` stay fast. User mistakes (:class:`UserError`) print one
line and exit 2; ``--traceback`` shows the full trace.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import UserError

COMMANDS = ("run", "compare", "list", "report", "time", "md", "sweep")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad argument (``--seed abc``) prints one line naming it and where help is, exit 2
    (argparse's default prints the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="mara_bench",
        description="Benchmark harness for ML force fields with and without the MARA adapter.",
        epilog="Run 'python -m mara_bench <command> --help' for a command's options.",
    )
    p.add_argument("--version", action="version", version=f"mara_bench {__version__}")
    p.add_argument("--traceback", action="store_true", help="show the full Python traceback on errors")
    sub = p.add_subparsers(dest="command", metavar="command")
    for name in COMMANDS:
        mod = importlib.import_module(f".{name}_cmd", __name__)
        sp = mod.add_parser(sub)
        sp.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="show the full Python traceback on errors")
        sp.set_defaults(_module=mod)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 0
    try:
        return int(args._module.main(args) or 0)
    except UserError as e:
        if getattr(args, "traceback", False):
            raise
        print(f"mara_bench {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"mara_bench {args.command}: interrupted (completed work and checkpoints are kept; re-run to resume)",
              file=sys.stderr)
        return 130
