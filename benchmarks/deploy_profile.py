"""Where ONNX Runtime spends its time: per-operator profile of the reference network, the
training graph as exported, and the mtdense inference rewrite, side by side.

    python benchmarks/deploy_profile.py [CKPT] --size 400 1024 --runs 10

Prints kernel milliseconds per run (ORT's own profiler) for each graph:

* by operator type, with the ratio reference / rewrite;
* by the resolution of each node's output (1/1 is the input size, 1/4 the finest decoder
  level), which separates the full-resolution upsampling, the memory-bound work on the large
  1/4 maps and the dense convolutions at 1/8;
* the ten most expensive nodes of the rewrite with their shapes.

Every graph is exported with a fixed 1x3xHxW input, as ``mtdense bench`` does. Each graph is
profiled on its own, so a change of machine load between them moves the columns a little;
``mtdense bench`` gives the side-by-side latencies.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from mtdense.deploy.profile import NodeTime, ort_node_profile
from mtdense.deploy.onnx import export_onnx
from mtdense.models import create_model, load_model
from mtdense.deploy.reference import to_reference


def _totals(nodes: list[NodeTime], key) -> dict[str, float]:
    out: dict[str, float] = {}
    for n in nodes:
        out[key(n)] = out.get(key(n), 0.0) + n.ms
    return out


def _table(title: str, columns: dict[str, dict[str, float]], rows: list[str]) -> None:
    names = list(columns)
    print(f"\n{title}")
    print(f"{'':<16}" + "".join(f"{k:>12}" for k in names) + f"{'ref/rewrite':>13}")
    for r in rows + ["total"]:
        vals = [sum(c.values()) if r == "total" else c.get(r, 0.0) for c in columns.values()]
        if r != "total" and max(vals) < 0.05:
            continue
        ratio = f"{vals[0] / vals[-1]:.2f}" if vals[-1] > 0.05 else "-"
        print(f"{r:<16}" + "".join(f"{v:>12.2f}" for v in vals) + f"{ratio:>13}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="model checkpoint (default: random default model)")
    parser.add_argument("--size", nargs=2, type=int, default=[400, 1024], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=10, help="profiled runs per graph (default: %(default)s)")
    args = parser.parse_args()

    model = load_model(args.checkpoint) if args.checkpoint else create_model()
    size = (args.size[0], args.size[1])
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).numpy()
    with tempfile.TemporaryDirectory(prefix="mtdense-profile-") as tmp:
        graphs = {
            "reference": export_onnx(to_reference(model), Path(tmp) / "reference.onnx", size, deploy=False, dynamic=False),
            "plain": export_onnx(model, Path(tmp) / "plain.onnx", size, deploy=False, dynamic=False),
            "rewrite": export_onnx(model, Path(tmp) / "rewrite.onnx", size, deploy=True, dynamic=False),
        }
        profiles = {k: ort_node_profile(p, x, args.runs) for k, p in graphs.items()}
    nodes = {k: p.nodes for k, p in profiles.items()}
    print(f"ONNX Runtime fp32, {size[0]}x{size[1]}, batch 1: median kernel ms per node over {args.runs} runs after 2 warm-up runs, summed")
    print("wall ms per profiled run (median): " + ", ".join(f"{k} {statistics.median(p.run_ms):.1f}" for k, p in profiles.items()))
    by_op = {k: _totals(v, lambda n: n.op) for k, v in nodes.items()}
    _table("by operator type", by_op, sorted(by_op["reference"], key=lambda op: -by_op["reference"][op])
           + sorted(set(by_op["rewrite"]) - set(by_op["reference"])))
    by_res = {k: _totals(v, lambda n: n.resolution(size)) for k, v in nodes.items()}
    res = sorted({r for c in by_res.values() for r in c}, key=lambda r: (r == "other", int(r[2:]) if r != "other" else 0))
    _table("by output resolution (1/1 = input size)", by_res, res)
    print("\nmost expensive nodes of the rewrite:")
    for n in sorted(nodes["rewrite"], key=lambda n: -n.ms)[:10]:
        print(f"  {n.ms:7.2f} ms  {n.op:<14} {n.name[:40]:<40} -> {list(n.shape)}")


if __name__ == "__main__":
    main()
