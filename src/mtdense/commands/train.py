"""``mtdense train``: run a YAML training recipe (stages, one-cycle schedules, checkpoints)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

DESCRIPTION = """\
Train the multi-task network with a recipe: a YAML file (or the name of a packaged one) that
names the data, the model, the loss, the optimiser and a list of stages. Each stage trains at
its own resolution with a one-cycle cosine learning rate and starts from the previous stage's
weights. The recipe is validated before anything starts; --set changes any key.

The run folder gets recipe.yaml (as given, with the --set overrides applied), config.yaml
(resolved), one folder per stage with checkpoints/best.ckpt (best val mIoU),
checkpoints/last.ckpt (the resume point, written atomically after every epoch and every
trainer.checkpoint_minutes, default 10), TensorBoard and CSV logs, and model.pth (final
weights) at the end. A run killed at any moment continues with 'mtdense train --resume RUN':
from its newest checkpoint, in whichever stage, to the same weights as a run left alone. Packaged recipes: cityscapes_mobilenet_v3_small,
synthetic_demo."""

EPILOG = """\
examples:
  mtdense train cityscapes_mobilenet_v3_small --set data.root=/data/cityscapes
  mtdense train configs/synthetic_demo.yaml --set stages.0.epochs=2 model.decoder_channels=64
  mtdense train cityscapes_mobilenet_v3_small --set data.root=/data/cs --devices 4 --precision 16-mixed
  mtdense train --resume runs/cityscapes_mobilenet_v3_small/20261206-101500   # after a kill
  tensorboard --logdir runs/"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train with a YAML recipe (stages, one-cycle lr, checkpoints)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", metavar="CONFIG", nargs="?",
                   help="recipe YAML file, or a packaged recipe name (with --resume RUN: default RUN/recipe.yaml)")
    p.add_argument(
        "--set", dest="overrides", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="override recipe keys, dotted, value parsed as YAML (e.g. stages.0.epochs=2 data.root=/x)",
    )
    p.add_argument("--resume", metavar="RUN",
                   help="continue a killed run: its run folder (the newest checkpoint is found) or one of its checkpoints")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<recipe name>/<time>, or the resumed run's)")
    p.add_argument("--devices", help="devices per node (overrides trainer.devices): an int or 'auto'")
    p.add_argument("--num-nodes", type=int, help="machines (overrides trainer.num_nodes)")
    p.add_argument("--precision", choices=["32", "16-mixed", "bf16-mixed"], help="numeric precision (overrides trainer.precision)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mtdense.train import load_recipe, train
    from mtdense.train.runner import resume_point

    if args.config is None:
        if not args.resume:
            raise ValueError("give a recipe (a YAML file or a packaged name), or --resume RUN to continue a run")
        run_dir = Path(args.resume) if Path(args.resume).is_dir() else Path(args.resume).resolve().parent.parent.parent
        args.config = str(run_dir / "recipe.yaml")
        if not Path(args.config).is_file():
            raise FileNotFoundError(f"{args.config}: no recipe in the run folder; give the recipe: mtdense train RECIPE --resume {args.resume}")
    overrides = list(args.overrides)
    if args.devices is not None:
        overrides.append(f"trainer.devices={args.devices}")
    if args.num_nodes is not None:
        overrides.append(f"trainer.num_nodes={args.num_nodes}")
    if args.precision is not None:
        overrides.append(f"trainer.precision='{args.precision}'")
    recipe, text = load_recipe(args.config, overrides)
    if args.out:
        out = Path(args.out)
    elif args.resume:
        resumed = Path(args.resume)  # a run folder, or <run>/stageN-name/checkpoints/x.ckpt
        out = resumed if resumed.is_dir() else resumed.resolve().parent.parent.parent
    else:
        out = Path("runs") / recipe.name / time.strftime("%Y%m%d-%H%M%S")
    resume = resume_point(recipe, args.resume)
    if args.resume:
        print(f"resuming {out} from {resume}" if resume else f"{args.resume}: no checkpoint yet; training the run from its start")
    start = time.perf_counter()
    result = train(recipe, out, resume=resume, recipe_text=text, overrides=overrides)
    minutes = (time.perf_counter() - start) / 60
    print(f"\ntrained {len(result.stages)} stage(s) in {minutes:.1f} min; run folder {result.out_dir}")
    for s in result.stages:
        best = f", best {s.best} (val score {s.best_score:.4f})" if s.best is not None and s.best_score is not None else ""
        print(f"  {s.name}: {s.global_step} steps, last {s.last}{best}")
    print(f"final model: {result.out_dir / 'model.pth'}  (evaluate: mtdense evaluate {result.final} --data {recipe.data.root})")
    return 0
