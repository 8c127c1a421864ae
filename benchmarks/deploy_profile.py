"""Where ONNX Runtime spends its time: per-operator profile of the reference network, the
training graph as exported, and the mtdense inference rewrite, side by side.

    python benchmarks/deploy_profile.py [CKPT] --size 400 1024 --runs 10

Prints, per operator type, milliseconds per run (ORT's own profiler, kernel time only) for
each graph and the ratio reference / rewrite, then the ten most expensive nodes of the
rewrite with their shapes. Every graph is exported with a fixed 1x3xHxW input, as
``mtdense bench`` does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from mtdense.bench import ort_profile
from mtdense.export import export_onnx, ort_session
from mtdense.models import create_model, load_model
from mtdense.reference import to_reference


def top_nodes(path: Path, x: np.ndarray, runs: int, n: int = 10) -> list[tuple[str, str, float, str]]:
    """The ``n`` most expensive nodes: ``(op type, node name, ms per run, output shape)``."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = ort_session(path, profile_prefix=str(Path(tmp) / "p"))
        name = sess.get_inputs()[0].name
        for _ in range(runs + 1):
            sess.run(None, {name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    per: dict[str, list] = {}
    for ev in events:
        if ev.get("cat") == "Node" and ev["name"].endswith("_kernel_time"):
            args = ev["args"]
            shape = [list(o.values())[0] for o in args.get("output_type_shape", [])]
            entry = per.setdefault(ev["name"], [args["op_name"], 0.0, str(shape[0]) if shape else ""])
            entry[1] += ev["dur"] / 1000.0
    rows = [(op, name.removesuffix("_kernel_time"), t / (runs + 1), shape) for name, (op, t, shape) in per.items()]
    return sorted(rows, key=lambda r: -r[2])[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="model checkpoint (default: random default model)")
    parser.add_argument("--size", nargs=2, type=int, default=[400, 1024], metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=10, help="profiled runs per graph (default: %(default)s)")
    args = parser.parse_args()

    model = load_model(args.checkpoint) if args.checkpoint else create_model()
    size = tuple(args.size)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).numpy()
    with tempfile.TemporaryDirectory(prefix="mtdense-profile-") as tmp:
        graphs = {
            "reference": export_onnx(to_reference(model), Path(tmp) / "reference.onnx", size, deploy=False, dynamic=False),
            "plain": export_onnx(model, Path(tmp) / "plain.onnx", size, deploy=False, dynamic=False),
            "rewrite": export_onnx(model, Path(tmp) / "rewrite.onnx", size, deploy=True, dynamic=False),
        }
        profiles = {k: {op: (ms, n) for op, ms, n in ort_profile(p, x, args.runs)} for k, p in graphs.items()}
        nodes = top_nodes(graphs["rewrite"], x, args.runs)
    ops = sorted(set().union(*profiles.values()), key=lambda op: -profiles["reference"].get(op, (0.0, 0))[0])
    print(f"ONNX Runtime fp32, {size[0]}x{size[1]}, batch 1: kernel ms per run by operator type ({args.runs} runs)")
    print(f"{'operator':<16}{'reference':>12}{'plain':>12}{'rewrite':>12}{'ref/rewrite':>13}")
    totals = {k: sum(ms for ms, _ in p.values()) for k, p in profiles.items()}
    for op in ops:
        vals = [profiles[k].get(op, (0.0, 0))[0] for k in graphs]
        ratio = f"{vals[0] / vals[2]:.2f}" if vals[2] > 0.05 else "-"
        if max(vals) >= 0.05:
            print(f"{op:<16}" + "".join(f"{v:>12.2f}" for v in vals) + f"{ratio:>13}")
    print(f"{'total':<16}" + "".join(f"{totals[k]:>12.2f}" for k in graphs) + f"{totals['reference'] / totals['rewrite']:>13.2f}")
    print("\nmost expensive nodes of the rewrite:")
    for op, name, ms, shape in nodes:
        print(f"  {ms:7.2f} ms  {op:<14} {name[:40]:<40} -> {shape}")


if __name__ == "__main__":
    main()
