"""The ``mrf-monai`` command line: thin sub-commands over the package's modules.

Each sub-command lives in ``mrf_monai/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit status.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__

#: Sub-command modules, in the order of the pipeline.
COMMANDS = ("dictionary", "simulate", "reconstruct", "evaluate", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mrf-monai",
        description="Diffusion-model (MRF-IDDPM) reconstruction for MR Fingerprinting.",
    )
    parser.add_argument("--version", action="version", version=f"mrf_monai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mrf_monai.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
