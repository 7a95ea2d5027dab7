"""``mrf-monai demo``: the one-command demonstration on the shipped weights (see
:mod:`mrf_monai.demo`)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``demo`` sub-command to ``subparsers``."""
    from .. import demo

    p = subparsers.add_parser(
        "demo",
        help="simulate held-out subjects, run every method, write maps, metrics and a figure",
        description=demo.__doc__.split("\n\n")[0],
    )
    demo.add_arguments(p)
    p.set_defaults(func=lambda args: demo.run_from_args(args, p))
    return p
