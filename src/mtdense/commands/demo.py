"""``mtdense demo``: synthetic city -> training -> evaluation, on a CPU, in minutes."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Run the whole pipeline end to end without any download: generate a synthetic stereo city in
the Cityscapes layout (skipped if DIR/data already holds one made with the same settings),
train the multi-task network on it from random weights with the packaged synthetic_demo
recipe, evaluate on the generated val split (never used in training), and write DIR/metrics.json,
DIR/pictures/*.png (image | segmentation | ground truth | depth | ground-truth depth) and
DIR/report.md. Prints mIoU, AbsRel and the wall time."""

EPILOG = """\
examples:
  mtdense demo
  mtdense demo --out /tmp/demo --set stages.0.epochs=4
  tensorboard --logdir runs/demo/train"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate a synthetic city, train on it and evaluate (CPU, minutes)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="runs/demo", metavar="DIR", help="demo folder (default: %(default)s)")
    p.add_argument("--config", default="synthetic_demo", help="recipe (default: the packaged %(default)s)")
    p.add_argument(
        "--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="override recipe keys (e.g. stages.0.epochs=4)",
    )
    p.add_argument("--pictures", type=int, default=4, help="val frames drawn as pictures (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mtdense.demo import run_demo
    from mtdense.metrics import format_metrics

    result = run_demo(args.out, config=args.config, overrides=args.overrides, num_pictures=args.pictures)
    m = result.metrics
    print("\n" + format_metrics(m))
    print(
        f"\nval mIoU {100 * m['miou']:.1f}%  AbsRel {m['abs_rel']:.3f}  wall time {result.wall_s / 60:.1f} min\n"
        f"report: {result.report}   metrics: {result.out_dir / 'metrics.json'}   pictures: {result.out_dir / 'pictures'}"
    )
    return 0
