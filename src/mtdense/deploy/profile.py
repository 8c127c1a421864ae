"""Where ONNX Runtime spends its time, node by node (its built-in profiler, warm-up runs left out)."""

from __future__ import annotations

import json
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mtdense.deploy.onnx import ort_session

__all__ = ["NodeTime", "OrtProfile", "ort_node_profile", "ort_profile"]


@dataclass
class NodeTime:
    """One node of an ONNX Runtime profile: kernel milliseconds per run and its first output's shape."""

    op: str
    name: str
    ms: float
    shape: tuple[int, ...]

    def resolution(self, input_hw: tuple[int, int]) -> str:
        """``"1/4"`` for an output a quarter of the input's height and width, ``"1/1"`` at the
        input size, ``"other"`` for anything that is not a feature map of the input."""
        if len(self.shape) != 4 or not self.shape[2] or not self.shape[3]:
            return "other"
        fh, fw = input_hw[0] / self.shape[2], input_hw[1] / self.shape[3]
        f = round(max(fh, fw))
        # stride-2 steps round odd sizes up (400 rows -> 13 at 1/32), so allow 10%
        if f < 1 or abs(fh - f) > 0.1 * f or abs(fw - f) > 0.1 * f:
            return "other"
        return f"1/{f}"


@dataclass
class OrtProfile:
    """An ONNX Runtime profile: per-node kernel time (:class:`NodeTime`, execution order, median
    over the profiled runs) and each profiled run's wall time (``run_ms``)."""

    nodes: list[NodeTime]
    run_ms: list[float]


def ort_node_profile(path: str | Path, x: np.ndarray, runs: int = 5, threads: int | None = None, warmup: int = 2) -> OrtProfile:
    """Where ONNX Runtime spends its time, node by node: each node's median kernel time over the
    profiled runs (robust to a run slowed by another process on a shared machine).

    Uses ORT's built-in profiler (``SessionOptions.enable_profiling``). The first runs of a
    session are much slower (its memory arena grows, pages are touched for the first time), so
    ``warmup`` runs are left out: only node events inside the last ``runs`` runs count.
    """
    with tempfile.TemporaryDirectory(prefix="mtdense-prof-") as tmp:
        sess = ort_session(path, threads=threads, profile_prefix=str(Path(tmp) / "ort"))
        name = sess.get_inputs()[0].name
        for _ in range(warmup + runs):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    windows = sorted((ev["ts"], ev["ts"] + ev["dur"]) for ev in events if ev.get("cat") == "Session" and ev["name"] == "model_run")[-runs:]
    nodes: dict[str, NodeTime] = {}
    times: dict[str, list[float]] = {}
    for ev in events:
        if ev.get("cat") != "Node" or not ev["name"].endswith("_kernel_time"):
            continue
        if not any(lo <= ev["ts"] <= hi for lo, hi in windows):
            continue
        if ev["name"] not in nodes:
            args = ev["args"]
            shapes = [list(o.values())[0] for o in args.get("output_type_shape", [])]
            nodes[ev["name"]] = NodeTime(args["op_name"], ev["name"].removesuffix("_kernel_time"), 0.0, tuple(shapes[0]) if shapes else ())
        times.setdefault(ev["name"], []).append(ev["dur"] / 1000.0)
    for key, node in nodes.items():
        node.ms = statistics.median(times[key])
    return OrtProfile(list(nodes.values()), [(hi - lo) / 1000.0 for lo, hi in windows])


def ort_profile(path: str | Path, x: np.ndarray, runs: int = 5, threads: int | None = None) -> list[tuple[str, float, int]]:
    """Where ONNX Runtime spends its time: ``[(op type, ms per run, kernel count)]``, largest first
    (:func:`ort_node_profile` summed by operator type)."""
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for node in ort_node_profile(path, x, runs, threads).nodes:
        totals[node.op] = totals.get(node.op, 0.0) + node.ms
        counts[node.op] = counts.get(node.op, 0) + 1
    return sorted(((op, t, counts[op]) for op, t in totals.items()), key=lambda r: -r[1])
