"""``mtdense analyze``: per-class IoU, confusion, depth distributions and error against distance."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Evaluate a trained model over a dataset split (Cityscapes layout, the real dataset or one
written by 'mtdense data synth'; folder; nyuv2; kitti: --format, detected by default) and draw where it
is right and wrong. Classes are the checkpoint's (a dataset of other class names is refused),
named in the plots and metrics.json. Writes into --out:
  depth_histogram.png    ground-truth vs predicted depth, 1000 bins over 0..--max-depth m, over the
                         pixels with valid ground truth of the first --hist-samples samples
  class_iou.png          IoU per class (over the whole split, one confusion matrix)
  confusion_matrix.png   confusion matrix, each ground-truth row normalised to 1
  error_vs_distance.png  depth AbsRel per ground-truth distance bin, with pixel shares
  normals_error.png      (a model with a normals head, on data with normals) the angular error
                         histogram in 1-degree bins, with its mean and median
  normals_examples.png   image | predicted normals | ground-truth normals | angular error, for
                         the first samples with normals
  metrics.json           all numbers: mIoU, per-class IoU, pixel accuracy, AbsRel, SqRel,
                         RMSE, RMSE log, delta < 1.25^k, per-bin AbsRel, confusion matrix, and the
                         normals' mean / median error and shares within 11.25, 22.5, 30 degrees
Predictions are made at each image's own size unless --size is given (then resized back)."""

EPILOG = """\
examples:
  mtdense analyze runs/demo/model.pth --data data/synth --split val --out runs/demo/analysis
  mtdense analyze model.pth --data /datasets/cityscapes --split val --size 512 1024 --max-samples 100 --out analysis/
  mtdense analyze runs/robot/stage1/final.pth --data /data/robot --format folder --out analysis/
  mtdense analyze kitti/model.pth --data /data/kitti --split val --garg-crop --max-depth 80 --out analysis/"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze", help="per-class IoU, confusion matrix, depth histograms, error vs distance",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="model checkpoint (.pth / .ckpt / .safetensors)")
    p.add_argument("--data", required=True,
                   help="dataset root (Cityscapes: leftImg8bit/, gtFine/, disparity/, camera/; folder: dataset.yaml, images/, masks/, depth/)")
    p.add_argument("--format", default="auto", choices=("auto", "cityscapes", "folder", "nyuv2", "kitti"),
                   help="dataset format; auto detects it from the layout (default: %(default)s)")
    p.add_argument("--split", default="val", help="split to evaluate (default: %(default)s)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--max-samples", type=int, help="evaluate only the first N samples (default: all)")
    p.add_argument("--hist-samples", type=int, default=100, help="samples in the depth histograms (default: %(default)s)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="network input size (default: each image's own size)")
    p.add_argument("--max-depth", type=float, default=250.0, metavar="M",
                   help="depth evaluation cap and histogram range in metres (KITTI: 80; default: %(default)s)")
    p.add_argument("--garg-crop", action="store_true",
                   help="kitti format: score depth inside the Garg et al. crop only (the usual KITTI evaluation)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mtdense.analyze import analyze, write_report
    from mtdense.data.open import detect_format, open_dataset
    from mtdense.inference import Predictor
    from mtdense.metrics import check_same_classes, dataset_options

    predictor = Predictor(args.checkpoint, device=args.device, size=tuple(args.size) if args.size else None)
    if not args.max_depth > 0:
        raise ValueError(f"--max-depth {args.max_depth:g}: give a cap in metres > 0, e.g. --max-depth 80")
    fmt = detect_format(args.data) if args.format == "auto" else args.format
    if args.garg_crop and fmt != "kitti":
        raise ValueError(f"--garg-crop: the Garg et al. crop is defined on KITTI frames, and {args.data} is a {fmt} "
                         f"dataset; leave --garg-crop out")
    dataset = open_dataset(args.data, args.split, format=fmt,
                           **dataset_options(args.data, fmt, args.split, predictor.runtime.tasks))
    check_same_classes(args.data, dataset.classes, predictor.info.classes)
    result = analyze(predictor, dataset, max_samples=args.max_samples, hist_samples=args.hist_samples,
                     max_depth=args.max_depth, garg_crop=args.garg_crop)
    print(result.summary())
    for path in write_report(result, args.out):
        print(f"wrote {path}")
    return 0
