"""Atomic file writing: every user-visible file mtdense writes goes through here; and the
strict reading of the small YAML / JSON files a user hands in (:func:`read_yaml`, :func:`read_json`).

A file is written beside its target under a hidden temporary name, flushed to disk, then
renamed over the target (``os.replace``, atomic on POSIX within one folder). A process
killed at any moment therefore leaves the old file or the new one, never a part, and a
resumable job that skips existing files never skips a truncated one. A failed write
(a full disk, a read-only folder, a path under a regular file) removes its temporary file
and raises :class:`WriteError`, which names the target path and what to do.

    >>> write_json_atomic("runs/x/metrics.json", {"miou": 0.5})
    >>> with atomic_path("model.onnx") as tmp:          # for writers that take a path
    ...     onnx.save(model, tmp)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "WriteError", "atomic_path", "atomic_open", "write_bytes_atomic", "write_text_atomic", "write_json_atomic",
    "write_yaml_atomic", "write_png_atomic", "write_image_atomic", "encode_image", "prepare_dir", "read_yaml", "read_json",
    "file_sha256",
]


class WriteError(OSError):
    """A file could not be written; the message names the path and what to do."""


def _explain(path: Path, exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return f"{path}: no space left on the device; free some space or write elsewhere"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{path}: permission denied (read-only folder or file system); choose a folder you can write to"
    if exc.errno == errno.ENOTDIR:
        return f"{path}: a parent of this path is a regular file, not a folder; choose another path"
    if exc.errno == errno.EISDIR:
        return f"{path}: is a folder; give a file path"
    return f"{path}: cannot write ({exc.strerror or exc}); check the path and the free space"


def prepare_dir(path: str | Path) -> Path:
    """Create folder ``path`` (and its parents), raising :class:`WriteError` that names it on failure."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise WriteError(exc.errno, f"{path}: exists and is not a folder; choose another output folder") from exc
    except OSError as exc:
        raise WriteError(exc.errno, _explain(path, exc)) from exc
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix); on success it replaces ``path``.

    For writers that take a file name (``torch.save``, ``onnx.save``, OpenCV's ``VideoWriter``,
    safetensors). On any exception the temporary file is removed and ``path`` is untouched;
    an ``OSError`` is re-raised as :class:`WriteError` naming ``path``.
    """
    path = Path(path)
    if path.is_dir():
        raise WriteError(errno.EISDIR, f"{path}: is a folder; give a file path")
    prepare_dir(path.parent)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".part{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise WriteError(exc.errno, _explain(path, exc)) from exc
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, WriteError):
            raise
        raise WriteError(exc.errno, _explain(path, exc)) from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``"wb"`` or ``"w"``); it replaces
    ``path`` when the block ends without an exception."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'wb' or 'w', got {mode!r}")
    with atomic_path(path) as tmp:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any, indent: int = 2) -> Path:
    """Write ``data`` as indented JSON (with a final newline) atomically; returns ``path``."""
    return write_text_atomic(path, json.dumps(data, indent=indent) + "\n")


def write_yaml_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` as YAML (keys in their given order) atomically; returns ``path``."""
    import yaml

    return write_text_atomic(path, yaml.safe_dump(data, sort_keys=False))


def encode_image(path: str | Path, image: np.ndarray, params: list[int] | None = None) -> bytes:
    """Encode an OpenCV-ordered (BGR) uint8/uint16 array in the format ``path``'s suffix names.

    Raises:
        ValueError: OpenCV cannot encode that array in that format; the message names ``path``.
    """
    import cv2

    path = Path(path)
    ok, buf = cv2.imencode(path.suffix or ".png", image, params or [])
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode a {image.dtype} array of shape {image.shape} as {path.suffix or '.png'}")
    return buf.tobytes()


def write_image_atomic(path: str | Path, image: np.ndarray, params: list[int] | None = None) -> Path:
    """Encode ``image`` (BGR order, as OpenCV) by ``path``'s suffix and write it atomically."""
    return write_bytes_atomic(path, encode_image(path, image, params))


def write_png_atomic(path: str | Path, image: np.ndarray) -> Path:
    """Write a PNG atomically.

    Args:
        path: Target ``.png``; parent folders are created.
        image: uint8 or uint16, H x W or H x W x 3 (BGR, OpenCV's order).
    """
    path = Path(path)
    return write_bytes_atomic(path, encode_image(path.with_suffix(".png"), image))




def _read_parsed(path: str | Path, what: str, missing: str, fix: str, kind: str,
                 parse: Callable[[str], Any], errors: tuple[type[BaseException], ...]) -> Any:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such {what}; {missing}")
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, *errors) as exc:
        raise ValueError(f"{path}: not readable {kind} ({' '.join(str(exc).split())}); {fix}") from exc


def read_yaml(path: str | Path, what: str = "YAML file", missing: str = "check the path",
              fix: str = "fix the syntax") -> Any:
    """The parsed content of a YAML file a user gave (``None`` when empty).

    Raises:
        FileNotFoundError: No such file: ``PATH: no such WHAT; MISSING``.
        ValueError: Not UTF-8 text or not YAML: ``PATH: not readable YAML (detail); FIX``.
    """
    import yaml

    return _read_parsed(path, what, missing, fix, "YAML", yaml.safe_load, (yaml.YAMLError,))


def read_json(path: str | Path, what: str = "JSON file", missing: str = "check the path",
              fix: str = "fix the syntax") -> Any:
    """The parsed content of a JSON file a user gave; errors as :func:`read_yaml`."""
    return _read_parsed(path, what, missing, fix, "JSON", json.loads, (json.JSONDecodeError,))


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
