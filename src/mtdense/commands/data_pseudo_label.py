"""``mtdense data pseudo-label``: label unannotated images with a trained model's confident pixels."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pseudo-label",
        help="segmentation pseudo-labels for images without fine annotation, from a trained model",
        description=(
            "Run a trained model over the left images of a split and write, for every image without "
            "a fine annotation, ROOT/OUT/SPLIT/CITY/NAME_gtFine_labelIds.png in the Cityscapes format. "
            "Pixels whose winning-class softmax probability is under --threshold get label id 0 "
            "('unlabeled', train id 255), so training ignores them. Images that already have "
            "gtFine/SPLIT/CITY/NAME_gtFine_labelIds.png are skipped, as are those labelled by an earlier "
            "run (the command resumes); --overwrite relabels them, but never replaces a real annotation. "
            "Write into a separate folder (--out gtPseudo) to keep real and pseudo labels apart. "
            "The names labelled and a summary (kept-pixel share, class shares) are saved to "
            "ROOT/OUT/SPLIT_pseudo_labels.json. An image that cannot be read is reported in one line "
            "('skipped FILE: what; what to do') and the others go on; the exit status is then 1.\n\n"
            "A KITTI root (--format kitti, or found by its folders): every frame of --split without a semantic "
            "label (the depth frames) gets ROOT/OUT/PART/NAME.png (Cityscapes label ids, 0 where unsure; default "
            "--out semantic_pseudo, --split train), recorded in ROOT/OUT/pseudo_labels.json. Train on them with "
            "--set 'data.sources={seg: [semantic, semantic_pseudo]}' (the real label wins where a frame has one)."
        ),
        epilog=(
            "Examples:\n"
            "  mtdense data pseudo-label runs/seed/model.pth data/cityscapes --split train_extra --threshold 0.9\n"
            "  mtdense data pseudo-label runs/seed/model.pth data/cityscapes --split train --out gtPseudo --overwrite \\\n"
            "      --size 512 1024 --device cuda\n"
            "  mtdense data pseudo-label runs/kitti-seed/model.pth data/kitti --split train --threshold 0.9"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="trained model (.pth, .safetensors or a Lightning .ckpt from mtdense train)")
    p.add_argument("root", help="Cityscapes root holding leftImg8bit/, or a KITTI root")
    p.add_argument("--format", choices=("auto", "cityscapes", "kitti"), default="auto",
                   help="the root's layout (default: %(default)s, found from its folders)")
    p.add_argument("--split", default=None,
                   help="split to label (default: train_extra for Cityscapes, train for KITTI)")
    p.add_argument("--threshold", type=float, default=0.9,
                   help="least softmax probability to keep a pixel, 0..1 (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="label folder under ROOT, e.g. gtPseudo (default: gtFine for Cityscapes, semantic_pseudo for KITTI)")
    p.add_argument("--size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="network input size; logits are resized back (default: each image's own size)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--overwrite", action="store_true", help="relabel existing pseudo-labels and annotated images")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images (sorted by name)")
    p.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mtdense.data.open import detect_format
    from mtdense.items import report_skipped
    from mtdense.teachers.model import PseudoLabeler, pseudo_label_kitti, pseudo_label_split

    labeler = PseudoLabeler(args.checkpoint, threshold=args.threshold, size=tuple(args.size) if args.size else None, device=args.device)
    fmt = detect_format(args.root) if args.format == "auto" else args.format
    if fmt not in ("cityscapes", "kitti"):
        raise ValueError(f"{args.root}: a {fmt} dataset; pseudo-label writes Cityscapes and KITTI layouts. For a folder "
                         f"dataset use 'mtdense data teacher {args.root} --method model --model {args.checkpoint} --out masks_teacher'")
    label = pseudo_label_kitti if fmt == "kitti" else pseudo_label_split
    defaults = ("train", "semantic_pseudo") if fmt == "kitti" else ("train_extra", "gtFine")
    summary = label(
        args.root, labeler, split=args.split or defaults[0], out=args.out or defaults[1], overwrite=args.overwrite,
        limit=args.limit, progress=not args.quiet, on_failure=report_skipped,
    )
    if not args.quiet:
        print(summary.format())
    return 1 if summary.failed else 0
