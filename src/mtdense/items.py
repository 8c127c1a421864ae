"""Jobs over many items (frames, images, videos): which failures are one item's, and how they read.

A many-item job (a teacher over a split, a cache, pseudo-labels, predict) records an item that
fails and goes on with the rest; :func:`item_failure` says which exceptions are an item's own
fault, :func:`item_message` turns one into the line that reports it, and a command prints
that line with :func:`report_skipped`.

    >>> try:
    ...     label = read_label_ids(path)
    ... except Exception as exc:
    ...     if not item_failure(exc):
    ...         raise
    ...     failed[str(path)] = item_message(exc, path)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["item_failure", "item_message", "out_of_memory", "report_skipped"]


def out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: ``MemoryError``, torch's ``OutOfMemoryError``, or the ``RuntimeError``
    PyTorch's CPU allocator raises ("can't allocate memory")."""
    if isinstance(exc, MemoryError):
        return True
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return type(exc).__name__ == "OutOfMemoryError" or any(
        words in text for words in ("out of memory", "can't allocate memory", "cannot allocate memory"))


def item_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is one item's fault: a missing, unreadable, corrupt or odd input
    (``ValueError``, ``OSError``) or too little memory for it. A :class:`~mtdense.io.WriteError`
    is not: an output that cannot be written fails for every item, so the job stops."""
    from mtdense.io import WriteError

    if isinstance(exc, WriteError):
        return False
    return isinstance(exc, (ValueError, OSError)) or out_of_memory(exc)


def item_message(exc: BaseException, path: str | Path) -> str:
    """``FILE: what is wrong; what to do`` on one line. The message is kept as it is where it starts
    with a file (the item's own or one of its parts, e.g. its label); else ``path`` is put first."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if out_of_memory(exc):
        text = f"out of memory ({text}); use a smaller size or free memory"
    head, sep, _ = text.partition(": ")
    names_a_file = bool(sep) and (os.sep in head or bool(Path(head).suffix))
    return text if names_a_file or str(path) in text else f"{path}: {text}"


def report_skipped(message: str) -> None:
    """Print ``skipped MESSAGE`` on stderr, above any progress bar: a command's line for a failed item."""
    from tqdm import tqdm

    tqdm.write(f"skipped {message}", file=sys.stderr)
