"""mtdense's cache: exported graphs, kept so that a second start takes a second, not ten.

Exporting a network (``torch.onnx.export``) is most of the start-up of every runtime built from
a checkpoint: the fused one (:class:`~mtdense.deploy.fused.net.FusedNet`, the ONNX part) and
the ONNX Runtime, OpenVINO and int8 ones (``--backend ort|ov|ort_int8``: the graph they convert
or quantize). The graph is kept beside the fused runtime's compiled kernel
(:mod:`mtdense.deploy.fused.build`) under ``<cache>/graphs/<key>/``, with ``key`` a digest of
everything the graph depends on: the network's weights and settings, the graph's form (the
fused runtime's part, the deploy graph, the plain one), the input size, the exporter (torch
version, graph format) and the CPU. ``mtdense export --format fused`` fills the cache ahead of
time. The folder is ``$MTDENSE_CACHE``, else ``$XDG_CACHE_HOME/mtdense``, else
``~/.cache/mtdense`` (:func:`cache_dir`); where it cannot be written, a private folder under the
system's temporary directory.

An entry is trusted only when its manifest's SHA-256 digests match its files (checked at every
load); a stale or damaged entry is rebuilt, never used. Builds happen in a private folder that
is renamed into place under a lock, so two processes starting at once export once and neither
sees a partial entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from mtdense.io import file_sha256

__all__ = ["GRAPH_FORMAT", "graph_key", "cached_graph", "graph_cache_dir", "cache_dir", "writable_dir", "locked",
           "cpu_signature"]

GRAPH_FORMAT = 2
"""Version of what an entry holds; raise it when the exported graph changes form."""
_GRAPH = "graph.onnx"
_MANIFEST = "manifest.json"


def cache_dir() -> Path:
    """Where mtdense keeps what it builds: ``$MTDENSE_CACHE``, else ``$XDG_CACHE_HOME/mtdense``, else ``~/.cache/mtdense``."""
    if os.environ.get("MTDENSE_CACHE"):
        return Path(os.environ["MTDENSE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mtdense"


def cpu_signature() -> str:
    """What ``-march=native`` depends on: the CPU's model and feature flags."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("flags", "model name", "Features", "CPU part"))]
        return "\n".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def writable_dir(preferred: Path) -> Path:
    """``preferred`` if it can be created and written, else a private folder under the temp dir.

    Raises:
        OSError: Neither can be written; the message names both and the fix.
    """
    for folder in (preferred, Path(tempfile.gettempdir()) / f"mtdense-cache-{os.getuid()}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
                pass
            return folder
        except OSError:
            continue
    raise OSError(f"cannot write mtdense's cache to {preferred} nor to {tempfile.gettempdir()}; "
                  "set MTDENSE_CACHE to a writable folder")


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created), held for the block: one build at a time."""
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def graph_cache_dir() -> Path:
    """Folder of the cached graphs (a private temporary folder if the cache is not writable)."""
    return writable_dir(cache_dir()) / "graphs"


def graph_key(model: nn.Module, size: tuple[int, int] | None, form: str = "fused") -> str:
    """Digest of what a graph depends on: weights, settings, ``form`` (which graph of the network:
    ``fused``, the fused runtime's part; ``deploy``, ``deploy1``, ``plain``: the ONNX Runtime
    runtimes' exports), size (``None``: any), exporter and CPU."""
    h = hashlib.sha256()
    config = json.dumps(dict(getattr(model, "config", {})), sort_keys=True, default=str)
    for part in (f"format {GRAPH_FORMAT}", f"form {form}", f"torch {torch.__version__}", f"size {size}", config, cpu_signature()):
        h.update(part.encode() + b"\0")
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name} {t.dtype} {tuple(t.shape)}".encode() + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:24]


def _intact(entry: Path) -> bool:
    """Whether ``entry`` holds its graph as written: the manifest's digest matches the file."""
    try:
        manifest = json.loads((entry / _MANIFEST).read_text())
        return manifest.get("format") == GRAPH_FORMAT and manifest["sha256"] == file_sha256(entry / _GRAPH)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cached_graph(key: str, export: Callable[[Path], None], root: Path | None = None) -> tuple[Path, bool]:
    """The graph of ``key``: from the cache, or written by ``export(path)`` and cached.

    Args:
        key: :func:`graph_key` of the network and size.
        export: Writes the ONNX graph to the path it is given.
        root: The cache folder (default :func:`graph_cache_dir`).

    Returns:
        ``(path, reused)``: the cached graph, and whether it was there already.
    """
    root = Path(root) if root is not None else graph_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    entry = root / key
    if _intact(entry):
        return entry / _GRAPH, True
    with locked(root / f".{key}.lock"):
        if _intact(entry):  # another process built it while this one waited
            return entry / _GRAPH, True
        work = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            export(work / _GRAPH)
            manifest = {"format": GRAPH_FORMAT, "key": key, "sha256": file_sha256(work / _GRAPH), "torch": torch.__version__}
            (work / _MANIFEST).write_text(json.dumps(manifest, indent=1))
            if entry.exists():  # stale or damaged: replaced, never used
                shutil.rmtree(entry)
            work.rename(entry)
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
    return entry / _GRAPH, False
