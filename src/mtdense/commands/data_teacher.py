"""``mtdense data teacher``: run a stereo teacher over a Cityscapes split and save its disparity."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "teacher",
        help="compute teacher disparity from the left/right pairs (SGBM or an ONNX stereo network)",
        description=(
            "Run a stereo teacher on every left/right pair (leftImg8bit + rightImg8bit) of a split and "
            "write its disparity as 16-bit PNGs in the Cityscapes encoding (p = round(d * 256) + 1, "
            "0 = no value) to ROOT/OUT/SPLIT/CITY/NAME_disparity.png. Train on it with the recipe "
            "option data.depth_source: OUT (the dataset reads it like the shipped disparity/ maps and "
            "converts it to depth with each image's camera file).\n\n"
            "Methods: 'sgbm' (OpenCV semi-global matching, sized from the image width for the "
            "Cityscapes geometry; --lr-check keeps only disparities both views agree on, --fill "
            "fills the holes) and 'onnx' (any stereo network exported to ONNX, e.g. CREStereo, run "
            "with ONNX Runtime). The run is resumable: existing PNGs are kept unless --overwrite, and "
            "every file is written atomically. A coverage summary is printed and saved to "
            "ROOT/OUT/SPLIT_summary.json. A pair that cannot be read is reported in one line "
            "('skipped FILE: what; what to do') and the others go on; the exit status is then 1."
        ),
        epilog=(
            "Examples:\n"
            "  mtdense data teacher data/cityscapes --method sgbm --split train --out disparity_sgbm --lr-check --fill background\n"
            "  mtdense data teacher data/cityscapes --method onnx --model crestereo_init_iter10_480x640.onnx \\\n"
            "      --output-channel 0 --split train --out disparity_crestereo\n"
            "  mtdense train configs/seed.yaml --set data.depth_source=disparity_sgbm"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", help="Cityscapes root holding leftImg8bit/ and rightImg8bit/")
    p.add_argument("--method", choices=["sgbm", "onnx"], default="sgbm", help="teacher (default: %(default)s)")
    p.add_argument("--split", default="train", help="split to label: train, val, test, train_extra (default: %(default)s)")
    p.add_argument("--out", default=None, help="output folder name under ROOT (default: disparity_METHOD)")
    p.add_argument("--overwrite", action="store_true", help="recompute PNGs that already exist")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N pairs (sorted by name)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    g = p.add_argument_group("sgbm")
    g.add_argument("--max-disparity", type=float, default=None, metavar="PX",
                   help="disparity search range in px at the image width (default: a point 2 m away, 237 px at 2048 wide)")
    g.add_argument("--block-size", type=int, default=None, help="odd matching window (default: 2 * (width // 512) + 1, at least 3)")
    g.add_argument("--mode", choices=["sgbm_3way", "sgbm", "hh4", "hh"], default="sgbm_3way",
                   help="SGBM variant (default: %(default)s; hh is best on weak texture but needs much memory)")
    g.add_argument("--lr-check", action="store_true", help="keep only disparities the right view confirms")
    g.add_argument("--lr-max-diff", type=float, default=1.0, metavar="PX", help="left-right tolerance (default: %(default)s)")
    g.add_argument("--fill", choices=["none", "background", "telea"], default="none",
                   help="fill holes: background (occlusion-aware, row-wise) or telea inpainting (default: %(default)s)")
    g = p.add_argument_group("onnx")
    g.add_argument("--model", help="the .onnx stereo network (with --method onnx)")
    g.add_argument("--input-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="network input size (default: the model's own, or each image's size)")
    g.add_argument("--scale", type=float, default=1.0, help="factor on 0..255 pixels, e.g. 0.00392 for 0..1 inputs (default: 1)")
    g.add_argument("--mean", nargs=3, type=float, default=[0.0, 0.0, 0.0], help="per-channel mean after --scale")
    g.add_argument("--std", nargs=3, type=float, default=[1.0, 1.0, 1.0], help="per-channel std after --scale")
    g.add_argument("--bgr", action="store_true", help="the network takes BGR channel order")
    g.add_argument("--output-channel", type=int, default=0, help="channel of a N x C x H x W output holding disparity (default: 0)")
    g.add_argument("--output-scale", type=float, default=1.0, help="factor on the output, e.g. -1 for negative flow (default: 1)")
    g.add_argument("--providers", nargs="+", default=["CPUExecutionProvider"],
                   help="ONNX Runtime providers in order, e.g. CUDAExecutionProvider CPUExecutionProvider")
    p.set_defaults(func=run)


def build_teacher(args: argparse.Namespace):
    """The teacher the command-line options describe."""
    from mtdense.teachers.stereo import create_teacher

    if args.method == "sgbm":
        if args.model:
            raise ValueError("--model is for --method onnx; SGBM needs no model file")
        return create_teacher(
            "sgbm", max_disparity=args.max_disparity, block_size=args.block_size, mode=args.mode,
            lr_check=args.lr_check, lr_max_diff=args.lr_max_diff, fill=args.fill,
        )
    if not args.model:
        raise ValueError("--method onnx needs --model FILE: a stereo network exported to ONNX")
    if args.lr_check or args.fill != "none":
        raise ValueError("--lr-check and --fill are SGBM options; a stereo network returns a dense map")
    return create_teacher(
        "onnx", model_path=args.model, input_size=tuple(args.input_size) if args.input_size else None,
        mean=args.mean, std=args.std, scale=args.scale, channel_order="bgr" if args.bgr else "rgb",
        output_channel=args.output_channel, output_scale=args.output_scale, providers=args.providers,
    )


def run(args: argparse.Namespace) -> int:
    from mtdense.items import report_skipped
    from mtdense.teachers.disparity import generate_teacher_disparity

    teacher = build_teacher(args)
    out = args.out or f"disparity_{args.method}"
    summary = generate_teacher_disparity(
        args.root, teacher, split=args.split, out=out, overwrite=args.overwrite, limit=args.limit, progress=not args.quiet,
        on_failure=report_skipped,
    )
    if not args.quiet:
        print(summary.format())
        print(f"summary: {summary.out_dir.parent / f'{args.split}_summary.json'}")
        if summary.stats["mean_px"] is not None:
            print(f"train on it: --set data.depth_source={out}")
    return 1 if summary.failed else 0
