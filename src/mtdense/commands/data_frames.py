"""``mtdense data frames``: frames of videos as a ``folder`` dataset split."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "frames",
        help="extract video frames into a folder dataset (images/SPLIT/VIDEO_FRAME.png), resumable",
        description=(
            "Decode a video, or every video directly in a folder, and write the frames picked as lossless PNGs "
            "ROOT/images/SPLIT/VIDEO_FRAME.png: the video's file stem and the frame's index in it (from 0, "
            "zero-padded), so several recordings share one split without a clash (two videos of one stem get "
            "VIDEO and VIDEO-2). Pick every N-th frame (--every) or F frames per second (--fps), at most M per "
            "video (--max), resized (--size) and without near-duplicates (--min-change: a frame whose mean "
            "absolute grey difference from the last one kept is under that many grey levels, 0..255, is left "
            "out; 2 to 5 drops a parked car's frames).\n\n"
            "The run resumes: frames already written are kept. Which video has which name, and the settings, "
            "are kept in ROOT/images/SPLIT_frames.json; a video extracted before with other settings is "
            "refused. A frame that cannot be decoded (a damaged or truncated file) is reported in one line "
            "('skipped VIDEO frame N: what; what to do') and the others go on; the exit status is then 1. "
            "Without ROOT/dataset.yaml, one is written from --classes or from a teacher's class list "
            "(--classes-from: an mtdense checkpoint, a dataset.yaml, or a seg-onnx class map's "
            "teacher_classes). Label the frames next with 'mtdense data teacher ROOT --method ...'."
        ),
        epilog=(
            "Examples:\n"
            "  mtdense data frames drive.mp4 --out data/mine --split train --fps 2 --classes road car person sky\n"
            "  mtdense data frames recordings/ --out data/mine --split train --every 10 --max 500 --min-change 3\n"
            "  mtdense data frames test_drive.mp4 --out data/mine --split val --fps 1 --size 384 640\n"
            "  mtdense data frames recordings/ --out data/mine --classes-from runs/big/model.pth\n"
            "  mtdense data teacher data/mine --method mono-onnx --model depth_anything_v2_vits.onnx --split train"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("source", metavar="VIDEO_OR_FOLDER", help="a video file, or a folder whose videos are all extracted")
    p.add_argument("--out", required=True, metavar="ROOT", help="the folder dataset root to write into")
    p.add_argument("--split", default="train", help="split folder under ROOT/images (default: %(default)s)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--every", type=int, default=1, metavar="N", help="every N-th frame, from frame 0 (default: every frame)")
    g.add_argument("--fps", type=float, default=None, metavar="F", help="F frames per second of video instead of --every")
    p.add_argument("--max", type=int, default=None, metavar="M", dest="max_frames", help="at most M frames per video")
    p.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"), help="resize the frames to H x W")
    p.add_argument("--min-change", type=float, default=None, metavar="D",
                   help="leave out frames that differ from the last one kept by under D grey levels (mean, 0..255)")
    c = p.add_mutually_exclusive_group()
    c.add_argument("--classes", nargs="+", default=None, metavar="NAME",
                   help="class names for the dataset.yaml written when ROOT has none")
    c.add_argument("--classes-from", default=None, metavar="FILE",
                   help="take them from a teacher: an mtdense checkpoint, a dataset.yaml or a class map")
    p.add_argument("--depth-scale", type=float, default=256.0,
                   help="depth_scale of the dataset.yaml written (depth_m = png / scale; default: %(default)s)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mtdense.data.description import DESCRIPTION_FILE, read_dataset_yaml
    from mtdense.data.video import FrameSampling, classes_from, extract_frames, write_dataset_yaml
    from mtdense.items import report_skipped

    sampling = FrameSampling(every=args.every, fps=args.fps, max_frames=args.max_frames,
                             size=tuple(args.size) if args.size else None, min_change=args.min_change)
    root = Path(args.out)
    yaml_path = root / DESCRIPTION_FILE
    classes = list(args.classes) if args.classes else classes_from(args.classes_from) if args.classes_from else None
    if yaml_path.is_file() and classes is not None:
        have = list(read_dataset_yaml(yaml_path).classes)
        if have != classes:
            raise ValueError(f"{yaml_path}: exists with classes {have}, not {classes}; drop --classes / --classes-from "
                             "(the file is kept), or edit the file")
    summary = extract_frames(args.source, root, split=args.split, sampling=sampling, progress=not args.quiet,
                             on_failure=report_skipped)
    if not yaml_path.exists():
        if classes is not None:
            summary.dataset_yaml = write_dataset_yaml(root, classes, depth_scale=args.depth_scale)
        elif not args.quiet:
            print(f"note: {yaml_path} does not exist; write one ('classes: [name, ...]') or rerun with --classes "
                  "before training or running a teacher")
    if not args.quiet:
        print(summary.format())
        if summary.dataset_yaml is not None:
            print(f"wrote {summary.dataset_yaml}")
    return 1 if summary.failed else 0
