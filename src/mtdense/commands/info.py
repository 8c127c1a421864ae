"""``mtdense info``: parameters and GFLOPs of a model configuration."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="parameters and GFLOPs per part (encoder, decoder, heads)",
        description=(
            "Print parameters and GFLOPs (one multiply-add = 2 FLOPs; convolutions and matrix "
            "products, counted on a real forward pass) for encoder, decoder and heads."
        ),
        epilog="Example: mtdense info --encoder mobilenet_v2 --size 480 640",
    )
    p.add_argument("--encoder", default="mobilenet_v3_small", help="encoder name (default: %(default)s)")
    p.add_argument("--size", nargs=2, type=int, default=[400, 1024], metavar=("H", "W"), help="input size (default: 400 1024)")
    p.add_argument("--decoder-channels", type=int, default=256, help="decoder width (default: %(default)s)")
    p.add_argument("--num-classes", type=int, default=19, help="segmentation classes (default: %(default)s)")
    p.add_argument("--checkpoint", help="read the configuration from a checkpoint instead")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mtdense.complexity import format_complexity, model_complexity
    from mtdense.models import create_model, load_model

    if args.checkpoint:
        model = load_model(args.checkpoint)
    else:
        model = create_model(args.encoder, tasks={"seg": args.num_classes, "depth": 1}, decoder_channels=args.decoder_channels)
    h, w = args.size
    title = f"encoder={model.config['encoder']} tasks={model.config['tasks']} decoder={model.config['decoder_channels']} input=1x3x{h}x{w}"
    print(format_complexity(model_complexity(model, (h, w)), title))
    return 0
