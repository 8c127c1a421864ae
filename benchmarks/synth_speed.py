"""How fast the synthetic stereo city is generated, and what it contains.

Prints three tables: median milliseconds per stage of one frame (one process), frames per
second of the whole ``generate_city`` for each worker count (with the ratio to the first),
and the share of pixels per class.

    python benchmarks/synth_speed.py                      # 500 frames at 256x512, 2 workers
    python benchmarks/synth_speed.py --frames 200 --workers 1 2 --size 128 256
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from mtdense.data import synthetic as syn


def stage_times(size: tuple[int, int], n: int, out: Path) -> dict[str, float]:
    """Median seconds per stage over ``n`` frames, one process."""
    cam = syn.StereoCamera.cityscapes(size)
    times: dict[str, list[float]] = {"sample scene": [], "render left": [], "render right": [], "write files": []}
    for i in range(n):
        t0 = time.perf_counter()
        scene = syn.sample_scene(syn.frame_rng(0, "train", i, 0))
        t1 = time.perf_counter()
        syn.render_view(scene, cam, size, "left", syn.frame_rng(0, "train", i, 1))
        t2 = time.perf_counter()
        syn.render_view(scene, cam, size, "right", syn.frame_rng(0, "train", i, 2))
        t3 = time.perf_counter()
        frame = syn.render_frame(0, "train", i, size)
        t4 = time.perf_counter()
        syn.write_frame(out, "train", i, frame)
        t5 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t5 - t4), strict=True):
            times[key].append(dt)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=500, help="frames per generation run (default: %(default)s)")
    p.add_argument("--size", nargs=2, type=int, default=[256, 512], metavar=("H", "W"))
    p.add_argument("--workers", nargs="+", type=int, default=[2], help="worker counts to compare (default: 2)")
    p.add_argument("--stage-frames", type=int, default=20, help="frames for the per-stage medians (default: %(default)s)")
    args = p.parse_args()
    size = (args.size[0], args.size[1])

    print(f"size {size[0]}x{size[1]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        stages = stage_times(size, args.stage_frames, Path(tmp) / "stages")
        total = sum(stages.values())
        print(f"\nper frame, one process (median of {args.stage_frames} frames)")
        print(f"{'stage':<14}{'ms':>9}{'share':>8}")
        for k, v in stages.items():
            print(f"{k:<14}{v * 1e3:9.1f}{v / total:8.0%}")
        print(f"{'total':<14}{total * 1e3:9.1f}")

        print(f"\ngenerate_city, {args.frames} frames")
        print(f"{'workers':>7}{'seconds':>10}{'frames/s':>10}{'vs first':>10}")
        first = None
        summary = None
        for w in args.workers:
            t0 = time.perf_counter()
            summary = syn.generate_city(Path(tmp) / f"w{w}", n_train=args.frames, n_val=0, size=size, seed=0,
                                        progress=False, workers=w)
            dt = time.perf_counter() - t0
            fps = args.frames / dt
            first = first or fps
            print(f"{w:7d}{dt:10.1f}{fps:10.2f}{fps / first:9.2f}x")

    print(f"\nclass pixel share over the {args.frames} frames (left views)")
    print(f"{'class':<14}{'share':>8}")
    for name, share in summary.class_frequencies().items():
        print(f"{name:<14}{share:8.2%}")
    print(f"\nload average {os.getloadavg()[0]:.2f} at end (the machine may be shared)")


if __name__ == "__main__":
    main()
