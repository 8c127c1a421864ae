"""Building the fused kernel (``csrc/finest.c``) at first use, safely.

The library is compiled with the system's C compiler (``cc -O3 -march=native``, retried without
``-march=native``) and cached under ``~/.cache/mtdense`` (``$MTDENSE_CACHE``, ``$XDG_CACHE_HOME``),
keyed by the source, the compiler and its version, the flags and the CPU. The build is safe:

- two processes building at once: a lock file lets one build while the other waits, and each
  build happens in a private folder whose result is renamed into the cache, so nobody ever
  sees a partial library;
- a compiler that fails half-way leaves nothing in the cache;
- a cached library whose bytes differ from what was built (checked against the SHA-256 written
  beside it, before it is loaded: a truncated library could crash the loader) is rebuilt, never used;
- an unwritable cache (a read-only home) falls back to a private folder under the system's
  temporary directory, and where nothing can be written :class:`FusedUnavailable` says so.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from mtdense.deploy.cache import cache_dir, cpu_signature, locked, writable_dir
from mtdense.deploy.runtime import RuntimeUnavailable
from mtdense.io import file_sha256

__all__ = ["SOURCE", "FusedUnavailable", "build_library", "load_library", "fused_available"]

SOURCE = Path(__file__).with_name("csrc") / "finest.c"
_FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-pthread")
_SYMBOLS = ("mtd_finest", "mtd_head_size", "mtd_winograd", "mtd_upsample", "mtd_upsample_argmax")
_FP = ctypes.POINTER(ctypes.c_float)
_LIB: ctypes.CDLL | None = None


class FusedUnavailable(RuntimeUnavailable):
    """The fused kernel cannot be built or loaded here (no C compiler, or it failed)."""


def _compiler_version(exe: str) -> str:
    """The compiler's ``--version`` banner: an upgraded compiler gets a fresh build."""
    try:
        return subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""


def _intact(lib: Path) -> bool:
    """Whether the cached ``lib`` is the file that was built: its digest matches the one beside it."""
    stamp = lib.with_suffix(".sha256")
    try:
        return stamp.read_text().strip() == file_sha256(lib)
    except OSError:
        return False


def _loads(path: Path) -> bool:
    """Whether ``path`` is a library that loads and has every function of the kernel."""
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return False
    return all(hasattr(lib, name) for name in _SYMBOLS)


def build_library(cc: str | None = None, force: bool = False) -> Path:
    """Compile ``csrc/finest.c`` into a shared library (cached; rebuilt when the source, the
    compiler, its version or the CPU changes, or when the cached file is broken) and return its path.

    Args:
        cc: C compiler (default ``$CC``, else ``cc``).
        force: Rebuild even when a cached library exists.

    Raises:
        FusedUnavailable: No compiler, the compilation failed (the message has its output), or
            nowhere to write the library.
    """
    cc = cc or os.environ.get("CC", "cc")
    exe = shutil.which(cc)
    if exe is None:
        raise FusedUnavailable(f"no C compiler '{cc}' found to build {SOURCE.name}; install one (e.g. 'apt install gcc') "
                               "or set CC, or use the ONNX Runtime path ('mtdense export')")
    parts = [SOURCE.read_bytes(), cc.encode(), _compiler_version(exe).encode(), " ".join(_FLAGS).encode(), cpu_signature().encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    try:
        folder = writable_dir(cache_dir())
    except OSError as exc:
        raise FusedUnavailable(f"{exc}; or use the ONNX Runtime path ('--backend ort')") from None
    out = folder / f"libmtdense_finest-{key}.so"
    with locked(folder / f".libmtdense_finest-{key}.lock"):
        if out.exists() and not force:
            if _intact(out):
                return out
            out.unlink(missing_ok=True)  # damaged, or from a build that never finished: rebuild
        with tempfile.TemporaryDirectory(dir=folder, prefix=".build-") as tmp:
            target = Path(tmp) / out.name
            for flags in (_FLAGS, tuple(f for f in _FLAGS if f != "-march=native")):  # some compilers lack -march=native
                proc = subprocess.run([exe, *flags, "-o", str(target), str(SOURCE), "-lm"], capture_output=True, text=True)
                if proc.returncode == 0 and _loads(target):
                    break
            else:
                raise FusedUnavailable(f"compiling {SOURCE} with {cc} failed:\n{proc.stderr.strip()[-2000:]}")
            stamp = target.with_suffix(".sha256")
            stamp.write_text(file_sha256(target) + "\n")
            os.replace(stamp, out.with_suffix(".sha256"))
            os.replace(target, out)  # atomic, and last: a library is only ever there with its digest
    return out


def load_library() -> ctypes.CDLL:
    """The kernel, built if need be and loaded once per process, with its functions' signatures set."""
    global _LIB
    if _LIB is None:
        path = build_library()
        try:
            lib = ctypes.CDLL(str(path))
        except OSError as exc:
            raise FusedUnavailable(f"cannot load {path}: {exc}; delete it to rebuild") from exc
        i, p = ctypes.c_int, _FP
        lib.mtd_finest.argtypes = [p, i, p, i, i, i, i, i, p, p, i, i, i, p, ctypes.POINTER(_FP), i, p, p, p, i]
        lib.mtd_head_size.argtypes = [i, i, i]
        lib.mtd_head_size.restype = ctypes.c_size_t
        lib.mtd_winograd.argtypes = [p, i, i, i, p, i, p, p, i]
        lib.mtd_upsample.argtypes = [p, i, i, i, p, p, i, i, i]
        lib.mtd_upsample_argmax.argtypes = [p, i, i, i, ctypes.POINTER(ctypes.c_uint8), i, i, i]
        for fn in (lib.mtd_finest, lib.mtd_winograd, lib.mtd_upsample, lib.mtd_upsample_argmax):
            fn.restype = ctypes.c_int
        _LIB = lib
    return _LIB


def fused_available() -> bool:
    """Whether the fused kernel builds and loads on this machine."""
    try:
        load_library()
        return True
    except FusedUnavailable:
        return False
