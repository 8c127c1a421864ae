"""How good is each stereo teacher's disparity? End-point error and bad-2px rate vs ground truth.

    python benchmarks/stereo_teachers.py [--frames 4] [--size 256 512] [--repeats 3]

Two pairs of ground truth:

- Middlebury 2014 "motorcycle" (``skimage.data.stereo_motorcycle()``): a real indoor pair,
  741 x 500 (the benchmark images downscaled 4x), ground-truth disparity 7..60 px, non-finite
  where there is none (7% of the pixels). SGBM searches 64 disparities.
- The synthetic stereo city (:func:`mtdense.data.synthetic.generate_city`, ``--frames``
  frames at ``--size``) with exact disparity (no value in the sky). SGBM is sized by the
  Cityscapes geometry (:class:`mtdense.teachers.stereo.SGBMTeacher` defaults).

For each teacher variant, over the pixels that have ground truth: ``coverage`` (share where
the teacher gives a value), ``EPE`` (mean absolute disparity error over those, px), ``bad2``
(share of those with an error above 2 px) and the median time per pair. The pooled rows add
up every pixel of every frame. ``clean (shipped)`` is :func:`mtdense.data.depth.clean_disparity`
(the cleaning pipeline for the shipped SGBM maps: border crops, resize back, median, Telea
inpainting) applied to the raw SGBM map.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from mtdense.teachers.stereo import SGBMTeacher

Variant = Callable[[np.ndarray, np.ndarray], np.ndarray]


def variants(max_disparity: float | None) -> dict[str, Variant]:
    """The teacher variants compared, by row label."""

    def sgbm(**kw) -> SGBMTeacher:
        return SGBMTeacher(max_disparity=max_disparity, **kw)

    raw = sgbm()
    rows: dict[str, Variant] = {
        "sgbm": raw,
        "sgbm no border pad": sgbm(pad_border=False),
        "sgbm + fill bg": sgbm(fill="background"),
        "sgbm + lr": sgbm(lr_check=True),
        "sgbm + lr + fill bg": sgbm(lr_check=True, fill="background"),
        "sgbm + lr + fill telea": sgbm(lr_check=True, fill="telea"),
        "sgbm hh + lr": sgbm(mode="hh", lr_check=True),
    }
    clean = shipped_cleaning()
    if clean is not None:
        rows["clean (shipped) of sgbm"] = lambda left, right: clean(raw(left, right))
    return rows


@functools.cache
def shipped_cleaning() -> Callable[[np.ndarray], np.ndarray] | None:
    """``mtdense.data.depth.clean_disparity``, or None (with a note) where this checkout lacks it."""
    try:
        from mtdense.data.depth import clean_disparity
    except ImportError as exc:
        print(f"note: no 'clean (shipped)' row: {exc}", file=sys.stderr)
        return None
    return clean_disparity


class Pooled:
    """Error sums over many frames."""

    def __init__(self) -> None:
        self.gt = self.covered = self.bad = 0
        self.abs_err = 0.0
        self.times: list[float] = []

    def add(self, pred: np.ndarray, gt: np.ndarray, seconds: float) -> None:
        has_gt = np.isfinite(gt) & (gt > 0)
        both = has_gt & (pred > 0)
        err = np.abs(pred[both].astype(np.float64) - gt[both])
        self.gt += int(has_gt.sum())
        self.covered += int(both.sum())
        self.abs_err += float(err.sum())
        self.bad += int((err > 2.0).sum())
        self.times.append(seconds)

    def cells(self) -> list[str]:
        if not self.covered:
            return ["0.0%", "-", "-", f"{1000 * statistics.median(self.times):.0f}"]
        return [
            f"{100 * self.covered / self.gt:.1f}%", f"{self.abs_err / self.covered:.3f}",
            f"{100 * self.bad / self.covered:.1f}%", f"{1000 * statistics.median(self.times):.0f}",
        ]


def evaluate(fn: Variant, pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]], repeats: int) -> Pooled:
    pooled = Pooled()
    for left, right, gt in pairs:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            pred = fn(left, right)
            times.append(time.perf_counter() - start)
        pooled.add(pred, gt, statistics.median(times))
    return pooled


def middlebury() -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    from skimage.data import stereo_motorcycle

    left, right, disp = stereo_motorcycle()
    return [(left, right, np.where(np.isfinite(disp), disp, 0).astype(np.float32))]


def synthetic(root: Path, frames: int, size: tuple[int, int], seed: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    from mtdense.data.cityscapes import list_frames, read_disparity_png
    from mtdense.data.image import read_image
    from mtdense.data.depth import decode_cityscapes_disparity
    from mtdense.data.synthetic import generate_city

    generate_city(root, n_train=frames, n_val=0, size=size, seed=seed, progress=False)
    return [
        (read_image(f.image, colour_only=True), read_image(f.right, colour_only=True), decode_cityscapes_disparity(read_disparity_png(f.disparity)))
        for f in list_frames(root, "train", require_labels=False, load_right=True)
    ]


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=4, help="synthetic frames (default: %(default)s)")
    parser.add_argument("--size", nargs=2, type=int, default=[256, 512], metavar=("H", "W"), help="synthetic size (default: 256 512)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per pair; the median is reported (default: %(default)s)")
    args = parser.parse_args()
    cv2.setNumThreads(2)

    mb = middlebury()
    with tempfile.TemporaryDirectory(prefix="mtdense-teachers-") as tmp:
        synth = synthetic(Path(tmp) / "city", args.frames, tuple(args.size), args.seed)
    mb_variants, synth_variants = variants(64.0), variants(None)
    header = ["variant", "MB cover", "MB EPE px", "MB bad2", "MB ms", "synth cover", "synth EPE px", "synth bad2", "synth ms", "synth EPE / sgbm"]
    rows, base = [], None
    for name in mb_variants:
        a = evaluate(mb_variants[name], mb, args.repeats)
        b = evaluate(synth_variants[name], synth, args.repeats)
        epe = b.abs_err / b.covered if b.covered else float("nan")
        base = epe if base is None else base
        rows.append([name, *a.cells(), *b.cells(), f"{epe / base:.2f}x"])
    h, w = args.size
    print(f"Middlebury motorcycle 741x500 (GT 7..60 px, SGBM 64 disparities) | synthetic city: {len(synth)} frames {h}x{w}, "
          f"SGBM sized for Cityscapes ({SGBMTeacher().settings(w)['numDisparities']} disparities, block "
          f"{SGBMTeacher().settings(w)['blockSize']})")
    print("cover: share of GT pixels with a value; EPE, bad2 (error > 2 px): over those pixels; ms: median per pair")
    print(table(header, rows))


if __name__ == "__main__":
    sys.exit(main())
