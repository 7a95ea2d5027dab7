"""The ``mrf-monai`` command line: thin sub-commands over the package's modules.

Each sub-command lives in ``mrf_monai/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking the
parsed arguments and returning an exit status.

Only the module of the sub-command being run is imported (and so PyTorch and MONAI only when a
command needs them): ``mrf-monai --help`` lists the commands from :data:`COMMANDS` alone and
starts in well under a second.

Exit status: what the sub-command returns (0 success, 1 a subject or item failed, 2 a wrong
setting), 130 after Ctrl-C (SIGINT) and 143 after SIGTERM (129 after SIGHUP). Both signals
unwind the command as exceptions (:class:`Terminated` for SIGTERM/SIGHUP), so its clean-up
runs: no unfinished output is left behind. Warnings are printed as one line each.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import warnings
from collections.abc import Collection, Iterator
from contextlib import contextmanager

from . import __version__

#: Sub-commands in the order of the pipeline, with their one-line help.
COMMANDS: dict[str, str] = {
    "dictionary": "simulate an MRF dictionary (EPG) and its SVD subspace",
    "simulate": "simulate MRF subjects (ISMRMRD raw data and ground-truth maps)",
    "reconstruct": "reconstruct T1/T2/PD maps from ISMRMRD raw data",
    "evaluate": "metrics of reconstructed maps against reference maps",
    "demo": "simulate held-out subjects, run every method, write maps, metrics and a figure",
}


def _requested_command(argv: list[str]) -> str | None:
    """The sub-command named in ``argv`` (its first non-option word), if it is one of ours."""
    for word in argv:
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(full: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The parser; the sub-commands in ``full`` get their own parsers (their modules are
    imported), the others are only listed by name. ``full=None``: every sub-command."""
    parser = argparse.ArgumentParser(
        prog="mrf-monai",
        description="Diffusion-model (MRF-IDDPM) reconstruction for MR Fingerprinting.",
    )
    parser.add_argument("--version", action="version", version=f"mrf_monai {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if full is None or name in full:
            importlib.import_module(f"mrf_monai.commands.{name}").register(sub)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``mrf-monai`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _requested_command(argv)
    parser = build_parser(() if command is None else (command,))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    prog = f"mrf-monai {command}"
    try:
        with _terminate_raises(), _one_line_warnings(prog):
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (SIGINT)", file=sys.stderr)
        return 128 + signal.SIGINT
    except Terminated as err:
        print(f"{prog}: terminated ({err.name})", file=sys.stderr)
        return 128 + err.signum


class Terminated(BaseException):
    """Raised in the main thread when ``mrf-monai`` receives SIGTERM (or SIGHUP).

    Like ``KeyboardInterrupt`` for Ctrl-C, it unwinds the command, so that ``finally`` and
    ``except BaseException`` blocks remove unfinished outputs; the exit status is then
    ``128 + signum`` (143 for SIGTERM), as if the signal had killed the process.
    """

    def __init__(self, signum: int) -> None:
        self.signum = int(signum)
        self.name = signal.Signals(signum).name
        super().__init__(f"received {self.name}")


#: Signals that end a run with :class:`Terminated` (those that exist on this platform).
_TERMINATING = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextmanager
def _terminate_raises() -> Iterator[None]:
    """While the command runs, SIGTERM/SIGHUP raise :class:`Terminated` instead of killing the
    process outright. Only signals left at their default action are taken over (``nohup`` keeps
    SIGHUP ignored); a second signal during the clean-up is ignored. Restored on exit."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)
        raise Terminated(signum)

    previous = {}
    for sig in _TERMINATING:
        if signal.getsignal(sig) is signal.SIG_DFL:
            previous[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _one_line_warnings(prog: str) -> Iterator[None]:
    """Print each warning as one line ``<prog>: warning: <message>`` (no source line)."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        kind = "" if issubclass(category, UserWarning) else f"{category.__name__}: "
        text = " ".join(str(message).split())
        print(f"{prog}: warning: {kind}{text}", file=file or sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


if __name__ == "__main__":
    sys.exit(main())
