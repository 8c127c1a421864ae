"""The ``mtdense`` command line. Every sub-command is a thin wrapper over library functions."""

from __future__ import annotations

import argparse
import importlib
import sys

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
    "mtdense.commands.analyze",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mtdense",
        description=(
            "Lightweight real-time multi-task dense prediction: one small network "
            "(MobileNetV3 + Light-Weight RefineNet) predicts semantic segmentation and depth."
        ),
        epilog="Run 'mtdense COMMAND --help' for the options of each command. Start with 'mtdense demo'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from mtdense.deploy.runtime import RuntimeUnavailable
    from mtdense.io import WriteError

    try:
        rc = args.func(args)
    except (FileNotFoundError, ValueError, WriteError, RuntimeUnavailable) as exc:
        print(f"mtdense {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
