"""``mara_bench compare``: not yet available (see the project's issues)."""

from __future__ import annotations

import argparse

from ..errors import UserError


def add_parser(sub) -> argparse.ArgumentParser:
    return sub.add_parser("compare", help="(not yet available)", description=__doc__)


def main(args: argparse.Namespace) -> int:
    raise UserError("'compare' is not yet available in this version")
