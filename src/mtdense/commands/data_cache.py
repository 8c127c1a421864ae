"""``mtdense data cache``: write a pre-resized copy of a Cityscapes tree for faster loading."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cache",
        help="write a pre-resized copy of a Cityscapes tree (same layout) so loading keeps up with training",
        description=(
            "Decoding full 2048 x 1024 PNGs is the bottleneck of training at 1/4 or 1/2 resolution. This writes "
            "a copy of ROOT in the same Cityscapes layout at --scale (or --size): images with area (shrink) or "
            "linear (enlarge) interpolation; labelIds and disparity with nearest neighbour; disparity values and "
            "the camera intrinsics (fx, fy, u0, v0) scaled by the same factors, so depth = baseline * fx / d is "
            "unchanged. Train on it by pointing the dataset root at OUT. An interrupted run continues where it "
            "stopped when started again with the same settings. A frame with an unreadable file is reported in "
            "one line ('skipped FILE: what; what to do'), none of its files is written, and the others go on; the "
            "exit status is then 1."
        ),
        epilog=(
            "Examples:\n"
            "  mtdense data cache data/cityscapes data/cityscapes_half --scale 0.5\n"
            "  mtdense data cache data/cityscapes data/cs_512 --size 512 1024 --splits train val\n"
            "  then: mtdense train cityscapes_mobilenet_v3_small --set data.root=data/cityscapes_half"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", help="source dataset root (the folder that holds leftImg8bit/)")
    p.add_argument("out", help="cache root to write (must differ from ROOT)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--scale", type=float, help="resize factor for both axes, e.g. 0.5 (2048x1024 -> 1024x512)")
    size.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="fixed output size for every frame")
    p.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                   help="splits to copy (default: every folder under leftImg8bit/)")
    p.add_argument("--depth-folders", nargs="*", default=None, metavar="FOLDER",
                   help="disparity folders to copy (default: every folder holding *_disparity.png: the shipped "
                        "'disparity' and stereo teachers' outputs); give none to copy no depth")
    p.add_argument("--no-right", action="store_true", help="do not copy the right views (rightImg8bit/)")
    p.add_argument("--workers", type=int, default=2, help="threads (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="rewrite files that already exist in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mtdense.data.cache import cache_dataset
    from mtdense.items import report_skipped

    summary = cache_dataset(
        args.root, args.out, scale=args.scale, size=tuple(args.size) if args.size else None, splits=args.splits,
        depth_folders=args.depth_folders, right=not args.no_right, workers=args.workers, overwrite=args.overwrite,
        progress=not args.quiet, on_failure=report_skipped,
    )
    if not args.quiet:
        frames = ", ".join(f"{k} {v}" for k, v in summary.frames.items())
        sizes = ", ".join(f"{a[1]}x{a[0]} -> {b[1]}x{b[0]}" for a, b in summary.sizes.items())
        print(f"cached {frames} frames into {summary.out} ({sizes}; W x H) in {summary.seconds:.1f} s")
        print(f"files written {summary.written}, already there {summary.skipped}; "
              f"depth folders: {', '.join(summary.depth_folders) or 'none'}")
        if summary.failed:
            print(f"{len(summary.failed)} failed (not cached; fix or remove their files, then run again to add them)")
    return 1 if summary.failed else 0
