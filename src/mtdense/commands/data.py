"""``mtdense data ...``: dataset tools. Each tool lives in its own module under
:mod:`mtdense.commands` and exposes ``register(data_subparsers)``."""

from __future__ import annotations

import argparse
import importlib

DATA_COMMAND_MODULES: list[str] = [
    "mtdense.commands.data_synth",
    "mtdense.commands.data_check",
    "mtdense.commands.data_cache",
    "mtdense.commands.data_teacher",
    "mtdense.commands.data_pseudo_label",
    "mtdense.commands.data_frames",
]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "data",
        help="dataset tools: generate a synthetic city, check a dataset, frames from videos, teachers, pseudo-labels",
        description="Dataset tools. Run 'mtdense data TOOL --help' for each tool.",
    )
    data_sub = p.add_subparsers(dest="data_command", metavar="TOOL", required=True)
    for name in DATA_COMMAND_MODULES:
        importlib.import_module(name).register(data_sub)
