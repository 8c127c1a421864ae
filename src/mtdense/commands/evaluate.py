"""``mtdense evaluate``: mIoU, depth and normals errors of a checkpoint over a whole split, and its
multi-task Delta_m against single-task models."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Evaluate a trained model on a dataset split in any format mtdense reads (Cityscapes layout,
folder, nyuv2, kitti; --format, detected from the layout by default). Segmentation: mIoU over the
classes the checkpoint was trained on (19 for Cityscapes; a folder dataset's dataset.yaml
classes) from one confusion matrix accumulated over the split, as the official Cityscapes script
computes it, per-class IoU by class name and pixel accuracy. Depth (metres, valid ground-truth
pixels only): AbsRel, SqRel, RMSE, RMSE log, delta < 1.25, 1.25^2, 1.25^3. Surface normals (a
model with a normals head, on data with normals: nyuv2, folder normals/, the synthetic city):
mean and median angular error in degrees and the shares of pixels within 11.25, 22.5 and 30
degrees. A dataset whose class names differ from the checkpoint's is refused (both lists are
named); frames without a label of a task count for the other tasks only.

KITTI: --garg-crop scores depth inside the Garg et al. crop only, --max-depth 80 caps it at 80 m
(the usual convention); metrics.json records which options were used ("evaluation").

--baseline FILE [FILE ...] compares the model with single-task models: the metrics.json of each
(or one file holding all their figures). It prints the multi-task Delta_m in percent (positive =
better): the mean over all shared figures of s (M_mt - M_st) / M_st, with s = +1 where higher is
better and -1 where lower is (as MTAN and the work after it report it), and the mean over tasks of
each task's mean (as LibMTL reports it); both go into metrics.json ("delta_m").

The network runs at --size (or each image's own size) and its outputs are resized back to the
label size before scoring. Prints a table and writes metrics.json to --out. With
--save-predictions, also writes, for a model of the 19 Cityscapes classes,
predictions/labelIds/{name}_pred_labelIds.png (label ids, for the official cityscapesscripts
evaluation: CITYSCAPES_RESULTS=<out>/predictions/labelIds); for a model of other classes,
predictions/trainIds/{name}_pred_trainIds.png (uint8 class indices 0..K-1, in the order of
its classes); and predictions/depth/{name}_pred_depth.png (16-bit, value = round(depth_m * 256)).

Scores are over the whole split: a frame that cannot be read (a corrupt image, a label of
the wrong size or with an unknown id, a bad camera file) stops the evaluation with one line
naming the file, so that no score is computed on part of a split. 'mtdense data check ROOT'
lists every such file at once."""

EPILOG = """\
examples:
  mtdense evaluate runs/demo/train/model.pth --data runs/demo/data
  mtdense evaluate run/stage2-full/checkpoints/best.ckpt --data /data/cityscapes --split val \\
      --size 512 1024 --out eval/ --save-predictions
  mtdense evaluate runs/robot/stage1/final.pth --data /data/robot --format folder --out eval/
  mtdense evaluate kitti/model.pth --data /data/kitti --split val --garg-crop --max-depth 80
  mtdense evaluate nyu/mtl.pth --data /data/nyuv2 --baseline nyu/seg/metrics.json nyu/depth/metrics.json nyu/normals/metrics.json"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="mIoU, pixel accuracy and depth errors of a checkpoint on a split",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", metavar="CKPT", help="checkpoint: .ckpt from mtdense train, .pth or .safetensors")
    p.add_argument("--data", required=True, metavar="ROOT",
                   help="dataset root (Cityscapes: leftImg8bit/, gtFine/, disparity/, camera/; folder: dataset.yaml, images/, masks/, depth/)")
    p.add_argument("--format", default="auto", choices=("auto", "cityscapes", "folder", "nyuv2", "kitti"),
                   help="dataset format; auto detects it from the layout (default: %(default)s)")
    p.add_argument("--split", default="val", help="split to evaluate (default: %(default)s)")
    p.add_argument("--out", metavar="DIR", help="folder for metrics.json and predictions (default: none written)")
    p.add_argument("--save-predictions", action="store_true",
                   help="write segmentation PNGs (Cityscapes label ids for a Cityscapes model, else class indices 0..K-1) "
                        "and 16-bit depth PNGs (needs --out)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"), help="network input size (default: each image's size)")
    p.add_argument("--depth-source", default="disparity",
                   help="cityscapes format: depth ground truth, disparity or a teacher name (default: %(default)s)")
    p.add_argument("--max-depth", type=float, metavar="M",
                   help="evaluate depth only up to this many metres, predictions clipped to it (KITTI: 80; default: no cap)")
    p.add_argument("--garg-crop", action="store_true",
                   help="kitti format: score depth inside the Garg et al. crop only (the usual KITTI evaluation)")
    p.add_argument("--baseline", nargs="+", metavar="FILE",
                   help="metrics.json of single-task models: print the multi-task Delta_m against them")
    p.add_argument("--batch-size", type=int, default=4, help="images per forward pass (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2, help="data loader processes (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.set_defaults(func=run)


def check_out_dir(out: str) -> None:
    """Create ``out`` and check that files can be written in it, before the evaluation runs."""
    import tempfile

    from mtdense.io import WriteError, prepare_dir

    folder = prepare_dir(out)
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as exc:
        raise WriteError(exc.errno, f"{folder}: cannot write files here ({exc.strerror or exc}); "
                                    "choose a folder you can write to") from exc


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mtdense.io import write_json_atomic
    from mtdense.metrics import evaluate_split, format_delta, format_metrics, multi_task_delta, read_baseline

    if args.save_predictions and not args.out:
        raise ValueError("--save-predictions needs --out DIR: the folder the PNGs are written to")
    if args.max_depth is not None and not args.max_depth > 0:
        raise ValueError(f"--max-depth {args.max_depth:g}: give a cap in metres > 0, e.g. --max-depth 80")
    baseline = read_baseline(args.baseline) if args.baseline else None  # a bad file fails before the evaluation
    if args.out:
        check_out_dir(args.out)
    metrics = evaluate_split(
        args.checkpoint,
        args.data,
        split=args.split,
        size=tuple(args.size) if args.size else None,
        out_dir=args.out,
        save_predictions=args.save_predictions,
        depth_source=args.depth_source,
        max_depth=args.max_depth,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        format=args.format,
        garg_crop=args.garg_crop,
    )
    print(f"{args.checkpoint} on {args.data} [{args.split}], {metrics['num_images']} images\n")
    print(format_metrics(metrics))
    if baseline is not None:
        delta = multi_task_delta(metrics, baseline)
        metrics["delta_m"] = {**delta, "baseline": [str(p) for p in args.baseline]}
        print(f"\nagainst the single-task baseline {', '.join(args.baseline)}:")
        print(format_delta(delta))
        if args.out:
            write_json_atomic(Path(args.out) / "metrics.json", metrics)
    if args.out:
        print(f"\nmetrics written to {args.out}/metrics.json")
    return 0
