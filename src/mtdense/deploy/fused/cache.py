"""The fused runtime's exported graph, cached so that a second start takes a second, not ten.

Exporting the ONNX part of :class:`~mtdense.deploy.fused.net.FusedNet` (``torch.onnx.export``)
is most of its start-up. The graph is kept beside the compiled kernel (:mod:`.build`) under
``<cache>/graphs/<key>/``, with ``key`` a digest of everything the graph depends on: the
network's weights and settings, the input size, the exporter (torch version, graph format) and
the CPU (the kernel the graph feeds is built for it). ``mtdense export --format fused`` fills the
cache ahead of time.

An entry is trusted only when its manifest's SHA-256 digests match its files (checked at every
load); a stale or damaged entry is rebuilt, never used. Builds happen in a private folder that
is renamed into place under a lock, so two processes starting at once export once and neither
sees a partial entry.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from mtdense.deploy.fused.build import cache_dir, cpu_signature, locked, writable_dir
from mtdense.io import file_sha256

__all__ = ["GRAPH_FORMAT", "graph_key", "cached_graph", "graph_cache_dir"]

GRAPH_FORMAT = 1
"""Version of what an entry holds; raise it when the exported graph changes form."""
_GRAPH = "coarse.onnx"
_MANIFEST = "manifest.json"


def graph_cache_dir() -> Path:
    """Folder of the cached graphs (a private temporary folder if the cache is not writable)."""
    return writable_dir(cache_dir()) / "graphs"


def graph_key(model: nn.Module, size: tuple[int, int] | None) -> str:
    """Digest of what the fused runtime's graph depends on: weights, settings, size, exporter, CPU."""
    h = hashlib.sha256()
    config = json.dumps(dict(getattr(model, "config", {})), sort_keys=True, default=str)
    for part in (f"format {GRAPH_FORMAT}", f"torch {torch.__version__}", f"size {size}", config, cpu_signature()):
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
