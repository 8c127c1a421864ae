"""``mtdense data check``: read every file of a Cityscapes tree and report what is wrong and how to fix it."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="check a Cityscapes tree: missing/unreadable files, label ids, sizes, disparity, camera",
        description=(
            "Read every frame of a Cityscapes tree (leftImg8bit/, gtFine/, disparity/, camera/, rightImg8bit/) "
            "and report: files per split; counterparts missing or without an image; unreadable (corrupt) PNGs; "
            "label ids outside the official table; maps whose size differs from their image; the share of "
            "valid disparity and its range; baselines and focal lengths that are not positive or not plausible. "
            "Each problem names the file and the fix. Exits with 1 when there are errors, 0 otherwise "
            "(warnings alone do not fail)."
        ),
        epilog=(
            "Examples:\n"
            "  mtdense data check data/cityscapes\n"
            "  mtdense data check data/cityscapes --splits train val --limit 200\n"
            "  mtdense data check data/cityscapes --depth-source disparity_sgbm   # a stereo teacher's output"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", help="dataset root (the folder that holds leftImg8bit/)")
    p.add_argument("--splits", nargs="+", default=None, metavar="SPLIT",
                   help="splits to check (default: every folder under leftImg8bit/)")
    p.add_argument("--depth-source", default="disparity", metavar="FOLDER",
                   help="disparity folder to check: 'disparity' (shipped) or a teacher's folder (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="read at most N evenly spaced frames per split; counts and missing files still cover all")
    p.add_argument("--max-problems", type=int, default=20, metavar="N",
                   help="problems listed per severity; the rest are counted (default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mtdense.data.check import check_dataset

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be at least 1, got {args.limit}")
    report = check_dataset(args.root, args.splits, depth_source=args.depth_source, limit=args.limit,
                           progress=not args.quiet)
    print(report.summary(max_problems=args.max_problems))
    return 0 if report.ok else 1
