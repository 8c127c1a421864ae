"""Where the start of ``mtdense predict`` goes: a first start (empty cache) against second starts.

Each start is a fresh Python process, as a user's command is. A probe process times its own
phases (interpreter start, importing torch, torchvision, OpenCV + ONNX Runtime and mtdense,
building the :class:`~mtdense.inference.Predictor` from the checkpoint, predicting one image)
and the parent adds the interpreter's exit (from the probe's last line to the process's end; the
probe freezes the garbage collector first, as the ``mtdense`` command does).
The whole ``mtdense predict CKPT IMAGE --out DIR`` command is timed beside it, first with an
empty cache (the export happens) and then as a second start (the graph comes from the cache).

Prints medians with their range over ``--repeats`` and the load average before and after.

    python benchmarks/start_time.py                                 # random weights, fused, 400 x 1024
    python benchmarks/start_time.py runs/demo/model.pth --backend ort --repeats 7
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROBE = r"""
import json, sys, time
t0 = time.time()
import torch
t1 = time.time()
import torchvision
t2 = time.time()
import cv2, onnxruntime
t3 = time.time()
import mtdense.cli, mtdense.deploy, mtdense.inference, mtdense.pipeline
t4 = time.time()
from mtdense.inference import Predictor
ckpt, image, backend, h, w = sys.argv[1:6]
predictor = Predictor(ckpt, size=(int(h), int(w)), backend=backend)
t5 = time.time()
predictor.predict(image)
t6 = time.time()
print(json.dumps([t0, t1, t2, t3, t4, t5, t6]), flush=True)
import gc
gc.freeze()  # as the mtdense command does before it exits (mtdense.cli.entry)
"""

PHASES = ["interpreter start", "import torch", "import torchvision", "import cv2 + onnxruntime", "import mtdense",
          "Predictor (checkpoint -> runtime)", "predict one image", "interpreter exit", "whole process"]


def probe(ckpt: Path, image: Path, backend: str, size: tuple[int, int], env: dict[str, str]) -> list[float]:
    """One fresh process's phases in seconds, in :data:`PHASES` order."""
    start = time.time()
    out = subprocess.run([sys.executable, "-c", PROBE, str(ckpt), str(image), backend, str(size[0]), str(size[1])],
                         capture_output=True, text=True, env=env, check=True)
    end = time.time()
    t = json.loads(out.stdout.strip().splitlines()[-1])
    return [t[0] - start, *(b - a for a, b in zip(t, t[1:])), end - t[-1], end - start]


def command(ckpt: Path, image: Path, backend: str, size: tuple[int, int], out: Path, env: dict[str, str]) -> float:
    """Wall seconds of ``mtdense predict CKPT IMAGE --out OUT --size H W --backend NAME``."""
    start = time.time()
    subprocess.run([sys.executable, "-m", "mtdense.cli", "predict", str(ckpt), str(image), "--out", str(out),
                    "--size", str(size[0]), str(size[1]), "--backend", backend], capture_output=True, env=env, check=True)
    return time.time() - start


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):6.2f} s ({min(values):.2f}-{max(values):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", nargs="?", help="model checkpoint (default: a random-weight default network)")
    ap.add_argument("--backend", default="fused", help="runtime (default: %(default)s)")
    ap.add_argument("--size", nargs=2, type=int, default=[400, 1024], metavar=("H", "W"))
    ap.add_argument("--repeats", type=int, default=5, help="second starts timed (default: %(default)s)")
    args = ap.parse_args()
    size = (args.size[0], args.size[1])

    import cv2
    import numpy as np

    from mtdense.deploy.machine import load_average, machine_info

    with tempfile.TemporaryDirectory(prefix="mtdense-start-") as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "MTDENSE_CACHE": str(tmp / "cache")}  # empty: the first start exports
        ckpt = Path(args.checkpoint) if args.checkpoint else None
        if ckpt is None:
            import mtdense

            ckpt = mtdense.save_checkpoint(mtdense.create_model().eval(), tmp / "model.pth")
        image = tmp / "frame.png"
        cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8))
        info = machine_info()
        load_before = load_average()
        first = command(ckpt, image, args.backend, size, tmp / "out", env)
        seconds, probes = [], []
        for _ in range(args.repeats):  # alternated: the same neighbours for both
            seconds.append(command(ckpt, image, args.backend, size, tmp / "out", env))
            probes.append(probe(ckpt, image, args.backend, size, env))
        load_after = load_average()

    print(f"# mtdense predict start-up, --backend {args.backend}, {size[0]} x {size[1]}, one image")
    loads = " -> ".join("?" if v is None else f"{v:.2f}" for v in (load_before, load_after))
    print(f"CPU: {info.get('cpu', '?')}, {info['cores']} cores; load average {loads}; {args.repeats} repeats\n")
    print("| | median (range) |\n|---|---|")
    print(f"| `mtdense predict`, first start (empty cache: exports) | {first:6.2f} s |")
    print(f"| `mtdense predict`, second start (graph from the cache) | {fmt(seconds)} |")
    print("\nA second start, phase by phase (a probe process):\n")
    print("| phase | median (range) |\n|---|---|")
    for k, name in enumerate(PHASES):
        print(f"| {name} | {fmt([p[k] for p in probes])} |")


if __name__ == "__main__":
    main()
