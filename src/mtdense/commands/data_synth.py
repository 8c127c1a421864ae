"""``mtdense data synth``: generate a synthetic stereo city in the Cityscapes layout."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate a synthetic stereo street dataset in the Cityscapes layout",
        description=(
            "Render random 3-D streets (road, sidewalks, buildings, cars, people, poles, signs, trees) "
            "from a left and a right camera with the Cityscapes calibration scaled to --size, and write "
            "them as a Cityscapes tree: leftImg8bit/, rightImg8bit/, gtFine/ (labelIds, color, "
            "instanceIds, polygons), disparity/ (uint16, d = (p - 1) / 256 px, 0 = sky) and camera/. "
            "Disparity is exact (fx * baseline / depth) and the right view is a true stereo partner. "
            "The same --seed gives the same bytes; any Cityscapes reader (mtdense, torchvision) reads it."
        ),
        epilog=(
            "Example:\n"
            "  mtdense data synth data/synth --n-train 500 --n-val 100 --size 256 512 --seed 0 --preview 4\n"
            "  then look at data/synth/preview.png (left | right | labels | disparity)"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("out", help="dataset root to create")
    p.add_argument("--n-train", type=int, default=500, help="training frames (default: %(default)s)")
    p.add_argument("--n-val", type=int, default=100, help="validation frames (default: %(default)s)")
    p.add_argument("--n-test", type=int, default=0, help="test frames, labelled too (default: %(default)s)")
    p.add_argument("--size", nargs=2, type=int, default=[256, 512], metavar=("H", "W"),
                   help="image size in pixels (default: 256 512)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: min(2, CPU count))")
    p.add_argument("--preview", type=int, default=0, metavar="N",
                   help="also save OUT/preview.png showing the first N training frames (default: none)")
    p.add_argument("--overwrite", action="store_true", help="replace the generated folders if OUT already has them")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mtdense.data.synthetic import generate_city, save_preview

    try:
        summary = generate_city(
            args.out, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test, size=tuple(args.size),
            seed=args.seed, progress=not args.quiet, workers=args.workers, overwrite=args.overwrite,
        )
    except FileExistsError as exc:
        print(f"mtdense data synth: error: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        frames = ", ".join(f"{k} {v}" for k, v in summary.frames.items() if v)
        print(f"wrote {frames} frames to {summary.root}")
        print("class pixel share: " + ", ".join(f"{k} {v:.1%}" for k, v in summary.class_frequencies().items()))
    if args.preview > 0:
        split = "train" if args.n_train > 0 else ("val" if args.n_val > 0 else "test")
        path = save_preview(summary.root, summary.root / "preview.png", n=args.preview, split=split)
        if not args.quiet:
            print(f"preview: {path}")
    return 0
