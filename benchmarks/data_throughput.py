"""How many Cityscapes samples per second one data-loading process delivers, with and without the cache.

Builds (or reads, ``--root``) a tree at the full Cityscapes size 2048 x 1024, writes its 0.5-scale
cache with ``mtdense.data.cache.cache_dataset``, then times ``CityscapesDataset[i]`` per sample for:

- full size, decode only (image, labelIds, disparity, camera -> seg train ids and depth in metres);
- full size, decode + ``TrainTransform`` to 512 x 1024 and to 256 x 512;
- the 0.5 cache (1024 x 512), decode only, and decode + ``TrainTransform`` to 512 x 1024 and 256 x 512;
- the cache + ``TrainTransform`` to 512 x 1024 without the hue jitter (the costliest single op);
- the same from memory (``cache_in_memory=True``, after a first pass has decoded every frame):
  what later epochs cost once decoding is out of the way.

One process, one thread for OpenCV and PyTorch (what a DataLoader worker gets). Each row is the
median over ``--repeats`` passes of all frames of the per-sample time; "vs full" divides the
full-size row with the same output by this row's median. A generated frame is smooth shapes plus
noise (disparity with SGBM-like noise and holes), so its PNGs are not trivially compressible;
their mean sizes are printed next to the table (PNG decoding time grows with the file size).

    python benchmarks/data_throughput.py                       # 8 generated frames, 3 passes
    python benchmarks/data_throughput.py --root /data/cityscapes --split val --frames 50
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from mtdense.data.cache import cache_dataset
from mtdense.data.cityscapes import CityscapesDataset
from mtdense.data.depth import encode_cityscapes_disparity
from mtdense.data.transforms import TrainTransform

FULL = (1024, 2048)


def make_tree(root: Path, frames: int, seed: int = 0) -> None:
    """Write ``frames`` full-size train frames with random-ish content in the Cityscapes layout."""
    rng = np.random.default_rng(seed)
    h, w = FULL
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(frames):
        name, city = f"bench_{i:06d}_000019", "bench"
        base = np.stack([x / w * 200, y / h * 200, (x + y) / (w + h) * 255], axis=-1)
        ids = np.full((h, w), 23, np.uint8)  # sky
        ids[h // 2 :] = 7  # road
        for _ in range(30):  # boxes of random classes and colours
            y0, x0 = int(rng.integers(0, h - 100)), int(rng.integers(0, w - 100))
            bh, bw = int(rng.integers(40, 300)), int(rng.integers(40, 400))
            ids[y0 : y0 + bh, x0 : x0 + bw] = rng.choice([11, 13, 17, 20, 21, 24, 26])
            base[y0 : y0 + bh, x0 : x0 + bw] = rng.uniform(0, 255, 3)
        rgb = np.clip(base + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)
        disp = np.where(y > h * 0.45, (y - h * 0.45) / 5 + 1, 0).astype(np.float32)  # ground plane, sky invalid
        disp[ids == 26] += 5
        disp = np.where(disp > 0, disp + rng.normal(0, 0.3, (h, w)).astype(np.float32), 0)  # SGBM-like noise
        disp[rng.random((h, w)) < 0.1] = 0  # and speckle holes
        files = {
            "leftImg8bit": (f"{name}_leftImg8bit.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
            "gtFine": (f"{name}_gtFine_labelIds.png", ids),
            "disparity": (f"{name}_disparity.png", encode_cityscapes_disparity(disp)),
        }
        for folder, (fname, array) in files.items():
            d = root / folder / "train" / city
            d.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / fname), array)
        d = root / "camera" / "train" / city
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{name}_camera.json").write_text(json.dumps({
            "extrinsic": {"baseline": 0.209313, "pitch": 0.038, "roll": 0.0, "yaw": 0.0, "x": 1.7, "y": 0.1, "z": 1.18},
            "intrinsic": {"fx": 2262.52, "fy": 2265.30, "u0": 1096.98, "v0": 513.137},
        }))


def link_subset(root: Path, split: str, frames: int, dst: Path) -> Path:
    """A tree under ``dst`` of symbolic links to ``frames`` evenly spaced frames of ``root``'s ``split``."""
    listed = CityscapesDataset(root, split).frames
    for i in np.linspace(0, len(listed) - 1, min(frames, len(listed))).round().astype(int):
        for src in listed[int(i)].paths().values():
            rel = Path(src).relative_to(root)
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            (dst / rel).symlink_to(Path(src).resolve())
    return dst


def time_dataset(ds: CityscapesDataset, repeats: int, warm_all: bool = False) -> float:
    """Median seconds per sample over ``repeats`` passes (after one warm-up sample, or a warm-up pass)."""
    for i in range(len(ds) if warm_all else 1):
        ds[i]
    times = []
    for r in range(repeats):
        torch.manual_seed(r)
        for i in range(len(ds)):
            t0 = time.perf_counter()
            ds[i]
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def mean_size_mb(folder: Path, pattern: str) -> float:
    sizes = [p.stat().st_size for p in folder.rglob(pattern)]
    return float(np.mean(sizes)) / 1e6 if sizes else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=None, help="a Cityscapes root to read (default: generate one)")
    p.add_argument("--split", default="train", help="split of --root to time (default: %(default)s)")
    p.add_argument("--frames", type=int, default=8, help="frames to generate or to take from --root (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="passes over the frames (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="OpenCV and PyTorch threads (default: %(default)s)")
    args = p.parse_args()
    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)

    print(f"{os.cpu_count()} CPUs, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="mtdense-data-") as tmp:
        tmp = Path(tmp)
        if args.root is None:
            root, split = tmp / "full", "train"
            t0 = time.perf_counter()
            make_tree(root, args.frames)
            print(f"generated {args.frames} frames at {FULL[1]}x{FULL[0]} in {time.perf_counter() - t0:.1f} s")
        else:
            split = args.split
            root = link_subset(args.root, split, args.frames, tmp / "full")
        cache = tmp / "half"
        t0 = time.perf_counter()
        summary = cache_dataset(root, cache, scale=0.5, splits=[split], right=False, workers=1, progress=False)
        cache_s = time.perf_counter() - t0
        print(f"cache 0.5: {summary.frames[split]} frames in {cache_s:.1f} s ({cache_s / summary.frames[split]:.2f} s/frame, 1 thread)")
        print(f"PNG sizes (MB, mean): image {mean_size_mb(root / 'leftImg8bit' / split, '*.png'):.2f} full, "
              f"{mean_size_mb(cache / 'leftImg8bit' / split, '*.png'):.2f} cached; "
              f"disparity {mean_size_mb(root / 'disparity' / split, '*.png'):.2f} full")

        jitter, no_hue = (0.3, 0.3, 0.3, 0.05), (0.3, 0.3, 0.3, 0.0)
        rows = [
            ("full 2048x1024", "decode only", root, None, jitter, None),
            ("full 2048x1024", "+ train 512x1024", root, (512, 1024), jitter, None),
            ("full 2048x1024", "+ train 256x512", root, (256, 512), jitter, None),
            ("cache 1024x512", "decode only", cache, None, jitter, "decode only"),
            ("cache 1024x512", "+ train 512x1024", cache, (512, 1024), jitter, "+ train 512x1024"),
            ("cache 1024x512", "+ train 256x512", cache, (256, 512), jitter, "+ train 256x512"),
            ("cache 1024x512", "+ train 512x1024 *", cache, (512, 1024), no_hue, "+ train 512x1024"),
            ("cache in memory", "+ train 512x1024 *", cache, (512, 1024), no_hue, "+ train 512x1024"),
        ]
        results: dict[str, float] = {}
        print(f"\nper sample, median of {args.repeats} passes over {summary.frames[split]} frames")
        print(f"{'source':<16}{'pipeline':<21}{'ms':>9}{'samples/s':>11}{'vs full':>9}")
        for source, pipeline, r, size, color_jitter, compare in rows:
            transform = TrainTransform(size=size, color_jitter=color_jitter) if size else None
            in_memory = source.endswith("in memory")
            ds = CityscapesDataset(r, split, transform=transform, cache_in_memory=in_memory)
            med = time_dataset(ds, args.repeats, warm_all=in_memory)
            if source.startswith("full"):
                results[pipeline] = med
            ratio = f"{results[compare] / med:8.2f}x" if compare else f"{'':>9}"
            print(f"{source:<16}{pipeline:<21}{med * 1e3:9.1f}{1 / med:11.2f}{ratio}")
    print("* colour jitter without hue (hue=0): torchvision's hue shift converts to HSV and back, the costliest op")
    print(f"\nload average {os.getloadavg()[0]:.2f} at end (the machine may be shared)")


if __name__ == "__main__":
    main()
