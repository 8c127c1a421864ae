"""``mtdense demo``: synthetic city -> training -> evaluation, on a CPU, in minutes."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Run the whole pipeline end to end without any download: generate a synthetic stereo city in
the Cityscapes layout (skipped if DIR/data already holds one made with the same settings),
train the multi-task network on it from random weights with the packaged synthetic_demo
recipe, evaluate on the generated val split (never used in training), and write DIR/metrics.json,
DIR/pictures/*.png (image | segmentation | ground truth | depth | ground-truth depth) and
DIR/report.md. Prints mIoU, AbsRel and the wall time.

The city also holds the exact surface normals of what it renders: --tasks seg,depth,normals
trains the three-task model (any subset of the three works) and adds the normals figures (mean
and median angular error, shares within 11.25 / 22.5 / 30 degrees) and pictures. A city made by
an older version has no normals: delete DIR/data (or give another --out) to generate it again."""

EPILOG = """\
examples:
  mtdense demo
  mtdense demo --out /tmp/demo --set stages.0.epochs=4
  mtdense demo --tasks seg,depth,normals --out runs/demo3
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
    p.add_argument("--tasks", type=_tasks, metavar="T,T",
                   help="tasks to train, comma-separated, of seg, depth, normals (default: the recipe's, seg,depth)")
    p.set_defaults(func=run)


def _tasks(text: str) -> list[str]:
    from mtdense.demo import DEMO_TASKS

    tasks = [t.strip() for t in text.split(",") if t.strip()]
    wrong = [t for t in tasks if t not in DEMO_TASKS]
    if not tasks or wrong or len(set(tasks)) != len(tasks):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more of {', '.join(DEMO_TASKS)}, comma-separated, each once"
                                         + (f" (unknown: {', '.join(wrong)})" if wrong else ""))
    return tasks


def run(args: argparse.Namespace) -> int:
    from mtdense.demo import run_demo
    from mtdense.metrics import format_metrics

    result = run_demo(args.out, config=args.config, overrides=args.overrides, num_pictures=args.pictures, tasks=args.tasks)
    m = result.metrics
    print("\n" + format_metrics(m))
    figures = []
    if m.get("miou") is not None:
        figures.append(f"val mIoU {100 * m['miou']:.1f}%")
    if m.get("abs_rel") is not None:
        figures.append(f"AbsRel {m['abs_rel']:.3f}")
    if m.get("normal_mean") is not None:
        figures.append(f"normals {m['normal_mean']:.1f} deg mean")
    print(
        f"\n{'  '.join(figures)}  wall time {result.wall_s / 60:.1f} min\n"
        f"report: {result.report}   metrics: {result.out_dir / 'metrics.json'}   pictures: {result.out_dir / 'pictures'}"
    )
    return 0
