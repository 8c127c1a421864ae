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
an older version has no normals: delete DIR/data (or give another --out) to generate it again.

--asymmetric runs the experiment of learning from asymmetric annotations instead (default DIR:
runs/demo_asymmetric): the city is written as a folder dataset whose training frames keep their
segmentation labels on --share of them (20%; depth on all), then (a) the demo model trains on
those alone; (b) a larger teacher (--teacher-encoder, MobileNetV3-Large) trains on the labelled
frames, labels the others (data teacher --method model, --threshold, --class-share) and the demo
model trains on real + teacher labels (data.sources); (c) the demo model trains on all real
labels, the ceiling.
It prints the three rows (val mIoU, AbsRel, training minutes) and the share of the mIoU gap
between (a) and (c) that (b) closes, and writes DIR/asymmetric.json and DIR/asymmetric.md.
--frames, --val-frames, --size, --epochs and --teacher-epochs size it (the defaults took 16
minutes on two CPU cores with OMP_NUM_THREADS=1, and (b) closed 65% of the gap); --set applies
to every run."""

EPILOG = """\
examples:
  mtdense demo
  mtdense demo --out /tmp/demo --set stages.0.epochs=4
  mtdense demo --tasks seg,depth,normals --out runs/demo3
  mtdense demo --asymmetric
  mtdense demo --asymmetric --out /tmp/asym --frames 150 --epochs 6 --teacher-epochs 20
  tensorboard --logdir runs/demo/train"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="generate a synthetic city, train on it and evaluate (CPU, minutes)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default=None, metavar="DIR",
                   help="demo folder (default: runs/demo; with --asymmetric runs/demo_asymmetric)")
    p.add_argument("--config", default="synthetic_demo", help="recipe (default: the packaged %(default)s)")
    p.add_argument(
        "--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="override recipe keys (e.g. stages.0.epochs=4)",
    )
    p.add_argument("--pictures", type=int, default=4, help="val frames drawn as pictures (default: %(default)s)")
    p.add_argument("--tasks", type=_tasks, metavar="T,T",
                   help="tasks to train, comma-separated, of seg, depth, normals (default: the recipe's, seg,depth)")
    from mtdense.demo import AsymmetricSettings

    d = AsymmetricSettings()
    g = p.add_argument_group("--asymmetric: learning from asymmetric annotations")
    g.add_argument("--asymmetric", action="store_true",
                   help="run the three-row experiment (a) 20%% seg labels alone, (b) + a teacher's labels, (c) all labels")
    g.add_argument("--share", type=float, default=d.share,
                   help="share of training frames that keep segmentation labels (default: %(default)s)")
    g.add_argument("--frames", type=int, default=d.n_train, help="training frames of the city (default: %(default)s)")
    g.add_argument("--val-frames", type=int, default=d.n_val, help="val frames of the city (default: %(default)s)")
    g.add_argument("--size", nargs=2, type=int, default=list(d.size), metavar=("H", "W"),
                   help="frame and training size (default: %(default)s)")
    g.add_argument("--epochs", type=int, default=d.epochs, help="epochs of each small-model run (default: %(default)s)")
    g.add_argument("--teacher-epochs", type=int, default=d.teacher_epochs,
                   help="epochs of the teacher on the labelled frames (default: %(default)s)")
    g.add_argument("--teacher-encoder", default=d.teacher_encoder, help="the teacher's encoder (default: %(default)s)")
    g.add_argument("--threshold", type=float, default=d.threshold,
                   help="least teacher probability of a kept pixel (default: %(default)s)")
    g.add_argument("--teacher-weight", type=float, default=d.teacher_weight,
                   help="loss weight of the teacher's labels in (b) (default: %(default)s)")
    g.add_argument("--class-share", type=float, default=d.class_share, metavar="S",
                   help="keep at least this share of each class's teacher pixels, lowering the threshold for "
                        "classes the teacher is rarely sure of (data teacher --class-share; default: %(default)s)")
    p.set_defaults(func=run)


_ASYMMETRIC_ONLY = ("share", "frames", "val_frames", "size", "epochs", "teacher_epochs", "teacher_encoder", "threshold",
                    "teacher_weight", "class_share")


def run_asymmetric(args: argparse.Namespace) -> int:
    from mtdense.demo import AsymmetricSettings, format_asymmetric, run_asymmetric

    if args.tasks is not None:
        raise ValueError("--tasks and --asymmetric do not go together: the experiment trains segmentation and depth")
    settings = AsymmetricSettings(
        n_train=args.frames, n_val=args.val_frames, size=(args.size[0], args.size[1]), share=args.share,
        epochs=args.epochs, teacher_epochs=args.teacher_epochs, teacher_encoder=args.teacher_encoder,
        threshold=args.threshold, teacher_weight=args.teacher_weight, class_share=args.class_share,
    )
    result = run_asymmetric(args.out or "runs/demo_asymmetric", settings, config=args.config, overrides=args.overrides)
    print("\n" + format_asymmetric(result))
    print(f"\nreport: {result.report}   figures: {result.out_dir / 'asymmetric.json'}")
    return 0


def _tasks(text: str) -> list[str]:
    from mtdense.demo import DEMO_TASKS

    tasks = [t.strip() for t in text.split(",") if t.strip()]
    wrong = [t for t in tasks if t not in DEMO_TASKS]
    if not tasks or wrong or len(set(tasks)) != len(tasks):
        raise argparse.ArgumentTypeError(f"{text!r}: give one or more of {', '.join(DEMO_TASKS)}, comma-separated, each once"
                                         + (f" (unknown: {', '.join(wrong)})" if wrong else ""))
    return tasks


def run(args: argparse.Namespace) -> int:
    from mtdense.demo import AsymmetricSettings, run_demo
    from mtdense.metrics import format_metrics

    if args.asymmetric:
        return run_asymmetric(args)
    d = AsymmetricSettings()
    defaults = {"share": d.share, "frames": d.n_train, "val_frames": d.n_val, "size": list(d.size), "epochs": d.epochs,
                "teacher_epochs": d.teacher_epochs, "teacher_encoder": d.teacher_encoder, "threshold": d.threshold,
                "teacher_weight": d.teacher_weight, "class_share": d.class_share}
    given = [k for k in _ASYMMETRIC_ONLY if getattr(args, k) != defaults[k]]
    if given:
        raise ValueError(f"--{given[0].replace('_', '-')} sizes the --asymmetric experiment; add --asymmetric, or leave "
                         f"it out (the demo's sizes are recipe keys: --set stages.0.epochs=...)")
    result = run_demo(args.out or "runs/demo", config=args.config, overrides=args.overrides, num_pictures=args.pictures, tasks=args.tasks)
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
