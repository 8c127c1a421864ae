"""Sub-commands of the ``mtdense`` CLI, one module each (see :mod:`mtdense.cli`), and the
argument types they share."""

from __future__ import annotations

import argparse


def limit(text: str) -> int:
    """An ``argparse`` type for a limit such as ``--max-pixels``: a whole number >= 0 (0: no
    limit), also in the ``25e6`` form."""
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)  # 25e6 reads as 25000000
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"expected a whole number (0: no limit), got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 (0: no limit), got {text!r}")
    return value
