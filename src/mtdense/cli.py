"""The ``mtdense`` command line. Every sub-command is a thin wrapper over library functions.

:func:`main` is the one error boundary: an expected failure (a file that is missing, unreadable,
corrupt or of the wrong kind, a bad setting, an output that cannot be written, too little
memory) ends as one line, ``mtdense COMMAND: error: FILE: what is wrong; what to do``, and exit
status 2; anything else is an internal error, also one line, exit status 3. The traceback is
printed only with ``mtdense --debug ...`` or ``MTDENSE_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback

# Modules that add sub-commands: each has ``register(subparsers)``; their parsers set ``func``.
COMMAND_MODULES = [
    "mtdense.commands.info",
    "mtdense.commands.data",
    "mtdense.commands.train",
    "mtdense.commands.evaluate",
    "mtdense.commands.demo",
    "mtdense.commands.predict",
    "mtdense.commands.export",
    "mtdense.commands.bench",
    "mtdense.commands.serve",
    "mtdense.commands.analyze",
]

EXIT_OK = 0
EXIT_ITEMS_FAILED = 1
EXIT_REFUSED = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130

EPILOG = """\
Run 'mtdense COMMAND --help' for the options of each command. Start with 'mtdense demo'.

exit status:
  0    success
  1    some items of a many-item command failed (predict, data teacher, data cache,
       data pseudo-label, data frames): each was reported in one line and the others were done
  2    bad input or usage, refused: one line names the file, what is wrong and what to do
  3    unexpected internal error: please report it with the command you ran
  130  interrupted (Ctrl-C)

Errors are one line, 'mtdense COMMAND: error: FILE: what is wrong; what to do'. For the
traceback, run 'mtdense --debug COMMAND ...' or set MTDENSE_DEBUG=1."""

_MAX_MESSAGE = 600  # characters of one message line; a longer one is cut

# What to do about an operating-system error, by its errno.
_OS_FIXES = {
    errno.ENOENT: "check the path",
    errno.EACCES: "choose a file or folder you may read and write",
    errno.EPERM: "choose a file or folder you may read and write",
    errno.EROFS: "choose a folder you can write to",
    errno.ENOTDIR: "a parent of this path is a regular file, not a folder; choose another path",
    errno.EISDIR: "give a file path",
    errno.EEXIST: "choose another path or remove it",
    errno.ENOSPC: "free some space or write elsewhere",
    errno.ENAMETOOLONG: "choose a shorter path",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtdense",
        description=(
            "Lightweight real-time multi-task dense prediction: one small network "
            "(MobileNetV3 + Light-Weight RefineNet) predicts semantic segmentation and depth."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error (as does the environment variable MTDENSE_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def one_line(text: str) -> str:
    """``text`` as one line: its lines joined, blank ones dropped, cut at a readable length."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    joined = ""
    for line in lines:
        joined += line if not joined else (" " if joined[-1] in ":;,(" else "; ") + line
    return joined if len(joined) <= _MAX_MESSAGE else joined[: _MAX_MESSAGE - 3] + "..."


def _os_message(exc: OSError) -> str:
    from mtdense.io import WriteError

    if isinstance(exc, WriteError):
        return exc.strerror or str(exc)  # its message names the path and the fix
    if exc.strerror is None:
        return str(exc)  # raised by mtdense with a whole message, e.g. FileNotFoundError("FILE: ...; fix")
    files = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f is not None)
    what = f"{exc.strerror[:1].lower()}{exc.strerror[1:]}; {_OS_FIXES.get(exc.errno, 'check the path')}"
    return f"{files}: {what}" if files else what


def explain(exc: BaseException) -> str | None:
    """The one-line message for an expected failure, or ``None`` for an unexpected one."""
    from mtdense.deploy.runtime import RuntimeUnavailable
    from mtdense.items import out_of_memory

    if out_of_memory(exc):
        detail = one_line(str(exc))
        return (f"out of memory{f' ({detail})' if detail else ''}; give a smaller --size or fewer pixels "
                "(predict --max-pixels), fewer images at once, or free memory")
    if isinstance(exc, OSError):
        return one_line(_os_message(exc))
    if isinstance(exc, (ValueError, RuntimeUnavailable)):  # ValueError includes recipe and pydantic errors
        return one_line(str(exc)) or type(exc).__name__
    return None


def command_name(args: argparse.Namespace) -> str:
    """The command as typed: ``predict``, ``data teacher``."""
    return " ".join(n for n in (getattr(args, "command", None), getattr(args, "data_command", None)) if n)


def main(argv: list[str] | None = None) -> int:
    """Run ``mtdense`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status (see ``EPILOG``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    name = command_name(args)
    debug = args.debug or os.environ.get("MTDENSE_DEBUG", "").strip() not in ("", "0")
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        sys.stdout.flush()
        print(f"mtdense {name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # the boundary: every failure ends here as one line
        if debug:
            traceback.print_exc()
        sys.stdout.flush()
        message = explain(exc)
        if message is not None:
            print(f"mtdense {name}: error: {message}", file=sys.stderr)
            return EXIT_REFUSED
        kind = type(exc).__name__ if type(exc).__module__ == "builtins" else f"{type(exc).__module__}.{type(exc).__name__}"
        print(f"mtdense {name}: internal error: {kind}: {one_line(str(exc))} (please report it at the mtdense issue "
              "tracker with the command you ran; rerun with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
    return int(rc or 0)


def entry() -> None:
    """The ``mtdense`` command: :func:`main` on ``sys.argv``, then exit with its status.

    Before exiting, the objects still alive (most of them made by importing torch, torchvision and
    sympy) are frozen out of the garbage collector (:func:`gc.freeze`), so the collections that
    the interpreter runs while it shuts down skip them: the exit after a ``predict`` takes about
    0.2 s instead of 1.0 s (``benchmarks/start_time.py``). Nothing is lost: every file mtdense
    writes is closed (and renamed into place) before :func:`main` returns, and the interpreter
    still flushes stdout and stderr and runs the ``atexit`` handlers. Only the command does this;
    :func:`main` called from Python leaves the collector alone.
    """
    status = main()
    import gc

    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    entry()
