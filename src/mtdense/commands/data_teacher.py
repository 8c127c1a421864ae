"""``mtdense data teacher``: label a split with a teacher, beside the real labels.

Stereo teachers (``sgbm``, ``onnx``) on a Cityscapes tree write disparity as before; on a
``folder`` dataset they, and the monocular-depth (``mono-onnx``), segmentation (``seg-onnx``) and
mtdense-model (``model``) teachers, write label sources ``ROOT/OUT/SPLIT/NAME.png`` in the
encodings of ``masks/``, ``depth/`` and ``normals/`` (:mod:`mtdense.teachers.folder`).
"""

from __future__ import annotations

import argparse

METHODS = ("sgbm", "onnx", "mono-onnx", "seg-onnx", "model")
STEREO_METHODS = ("sgbm", "onnx")

# Options that belong to some methods only: dest -> (methods, value meaning "not given"). --model,
# --lr-check and --fill have their own messages in build_teacher.
_ONLY = {
    "max_disparity": (("sgbm",), None), "block_size": (("sgbm",), None), "mode": (("sgbm",), "sgbm_3way"),
    "lr_max_diff": (("sgbm",), 1.0),
    "input_size": (("onnx", "mono-onnx", "seg-onnx", "model"), None),
    "scale": (("onnx",), None), "bgr": (("onnx",), False), "output_channel": (("onnx",), 0),
    "output_scale": (("onnx",), 1.0), "providers": (("onnx",), None),
    "mean": (("onnx", "mono-onnx", "seg-onnx"), None), "std": (("onnx", "mono-onnx", "seg-onnx"), None),
    "device": (("mono-onnx", "seg-onnx", "model"), None),
    "output": (("mono-onnx",), None), "metric": (("mono-onnx",), False), "anchors": (("mono-onnx",), None),
    "align": (("mono-onnx",), None), "max_residual": (("mono-onnx",), None), "min_anchors": (("mono-onnx",), None),
    "max_depth": (("mono-onnx",), None),
    "class_map": (("seg-onnx", "model"), None), "threshold": (("seg-onnx", "model"), None),
    "tasks": (("model",), None), "class_share": (("model",), None),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "teacher",
        help="label a split with a teacher: stereo (sgbm, onnx), monocular depth, segmentation or an mtdense model",
        description=(
            "Run a teacher over every frame of a split and write what it predicts beside the real labels, never "
            "over them.\n\n"
            "Folder datasets (dataset.yaml + images/SPLIT/NAME.png): each teacher writes ROOT/OUT/SPLIT/NAME.png "
            "in the encoding of the real labels (masks like masks/: 8-bit class indices, the dataset's "
            "ignore_index where the teacher is unsure; depth like depth/: 16-bit, depth_m * depth_scale, 0 = no "
            "value; normals like normals/) and ROOT/OUT/SPLIT_summary.json (settings, frames done / kept / "
            "skipped and why, coverage, per-class shares, per-frame figures). ONNX teachers run with ONNX "
            "Runtime in batches (--batch) and get RGB scaled to [0, 1], normalised by --mean / --std (ImageNet's "
            "by default), at --input-size or the file's own size (else each frame's); their output is resized "
            "back to the frame.\n"
            "  mono-onnx  a monocular depth network (Depth Anything V2, MiDaS, any with one image in and one map "
            "out; --output depth|inverse-depth|disparity). --metric: it predicts metres. Otherwise each frame is "
            "turned into metres by a robust fit of scale and shift in inverse depth against the metric points "
            "it has (--anchors FOLDER: depth/ from LiDAR or a depth camera, or a stereo teacher's output), or "
            "by one fit over all frames that have them (--align global). A frame with no way to metres is "
            "skipped and named; frames whose fit residual (median relative error at their anchors) is above "
            "--max-residual are dropped and listed. Default --out: depth_mono.\n"
            "  seg-onnx   a segmentation network with its own classes (--class-map FILE: teacher class name or "
            "index -> dataset class name, unmapped -> ignored), kept where its softmax probability is at least "
            "--threshold. Default --out: masks_teacher.\n"
            "  model      a trained mtdense model (a bigger one teaching a smaller one): --tasks seg depth "
            "normals, or a subset; --out SUFFIX writes masks_SUFFIX/, depth_SUFFIX/, normals_SUFFIX/ (default: "
            "model). Its classes must be the dataset's, or be mapped by --class-map.\n"
            "  sgbm, onnx stereo teachers on right/SPLIT/NAME.png views, with 'stereo: {baseline: B, fx: F}' "
            "(metres, px at the size of images/) in dataset.yaml: depth in metres. Default --out: depth_METHOD.\n\n"
            "Cityscapes trees (sgbm and onnx only): disparity of every left/right pair (leftImg8bit + "
            "rightImg8bit) as 16-bit PNGs in the Cityscapes encoding (p = round(d * 256) + 1, 0 = no value) in "
            "ROOT/OUT/SPLIT/CITY/NAME_disparity.png, read with the recipe option data.depth_source: OUT. "
            "'sgbm' is OpenCV semi-global matching sized for the Cityscapes geometry (--lr-check keeps only "
            "disparities both views agree on, --fill fills the holes); 'onnx' is any stereo network exported to "
            "ONNX (e.g. CREStereo). Default --out: disparity_METHOD.\n\n"
            "Every run resumes: outputs that exist are kept unless --overwrite; files are written atomically; an "
            "output folder written with other settings, or holding files no teacher wrote, is refused. A frame "
            "that cannot be labelled is reported in one line ('skipped FILE: what; what to do') and the others "
            "go on; the exit status is then 1."
        ),
        epilog=(
            "Examples:\n"
            "  mtdense data teacher data/mine --method mono-onnx --model depth_anything_v2_vits.onnx --input-size 518 518 \\\n"
            "      --output inverse-depth --anchors depth --split train\n"
            "  mtdense data teacher data/mine --method mono-onnx --model metric_depth.onnx --output depth --metric\n"
            "  mtdense data teacher data/mine --method seg-onnx --model segformer_ade.onnx --class-map ade_to_mine.yaml \\\n"
            "      --threshold 0.8 --out masks_teacher\n"
            "  mtdense data teacher data/mine --method model --model runs/big/model.pth --tasks seg depth --out big\n"
            "  mtdense data teacher data/mine --method sgbm --lr-check --split train          # right/ + stereo: in dataset.yaml\n"
            "  mtdense data teacher data/cityscapes --method sgbm --split train --out disparity_sgbm --lr-check --fill background\n"
            "  mtdense data teacher data/cityscapes --method onnx --model crestereo_init_iter10_480x640.onnx \\\n"
            "      --output-channel 0 --split train --out disparity_crestereo\n"
            "  mtdense train configs/seed.yaml --set data.depth_source=disparity_sgbm"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("root", help="a folder dataset root (dataset.yaml, images/), or a Cityscapes root (sgbm, onnx)")
    p.add_argument("--method", choices=METHODS, default="sgbm", help="teacher (default: %(default)s)")
    p.add_argument("--split", default="train", help="split to label (default: %(default)s)")
    p.add_argument("--out", default=None,
                   help="output folder under ROOT (for --method model: the suffix of masks_OUT/, depth_OUT/, normals_OUT/)")
    p.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N frames (sorted by name)")
    p.add_argument("--batch", type=int, default=4, metavar="N", help="frames per network run, folder datasets (default: %(default)s)")
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
    g = p.add_argument_group("networks (onnx, mono-onnx, seg-onnx, model)")
    g.add_argument("--model", help="the teacher: an .onnx file, or an mtdense checkpoint for --method model")
    g.add_argument("--input-size", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="network input size (default: the file's own, or each frame's size)")
    g.add_argument("--mean", nargs=3, type=float, default=None,
                   help="per-channel mean (default: ImageNet's on 0..1 RGB for mono-onnx / seg-onnx; 0 for onnx, after --scale)")
    g.add_argument("--std", nargs=3, type=float, default=None,
                   help="per-channel std (default: ImageNet's for mono-onnx / seg-onnx; 1 for onnx)")
    g.add_argument("--device", default=None, help="cpu or cuda, for mono-onnx, seg-onnx and model (default: cpu)")
    g = p.add_argument_group("onnx (stereo)")
    g.add_argument("--scale", type=float, default=None, help="factor on 0..255 pixels, e.g. 0.00392 for 0..1 inputs (default: 1)")
    g.add_argument("--bgr", action="store_true", help="the network takes BGR channel order")
    g.add_argument("--output-channel", type=int, default=0, help="channel of a N x C x H x W output holding disparity (default: 0)")
    g.add_argument("--output-scale", type=float, default=1.0, help="factor on the output, e.g. -1 for negative flow (default: 1)")
    g.add_argument("--providers", nargs="+", default=None,
                   help="ONNX Runtime providers in order, e.g. CUDAExecutionProvider CPUExecutionProvider (default: CPU)")
    g = p.add_argument_group("mono-onnx")
    g.add_argument("--output", choices=["depth", "inverse-depth", "disparity"], default=None,
                   help="what the network's map holds (default: inverse-depth, as Depth Anything V2 and MiDaS)")
    g.add_argument("--metric", action="store_true", help="the network predicts metres (or 1/m): no alignment")
    g.add_argument("--anchors", default=None, metavar="FOLDER",
                   help="folder of metric depth to align to: depth (LiDAR, depth camera) or a stereo teacher's output (default: depth)")
    g.add_argument("--align", choices=["per-frame", "global"], default=None,
                   help="one fit per frame, or one over every frame with anchors (default: per-frame)")
    g.add_argument("--max-residual", type=float, default=None, metavar="R",
                   help="drop frames whose median relative error at their anchors is above R (default: 0.2)")
    g.add_argument("--min-anchors", type=int, default=None, metavar="N", help="fewest anchor points of a per-frame fit (default: 20)")
    g.add_argument("--max-depth", type=float, default=None, metavar="M",
                   help="write depths beyond M metres as no value (default: what 16 bits hold at depth_scale)")
    g = p.add_argument_group("seg-onnx, model")
    g.add_argument("--class-map", default=None, metavar="FILE",
                   help="YAML: teacher_classes: [...] and map: {teacher class name or index: dataset class}")
    g.add_argument("--threshold", type=float, default=None,
                   help="least softmax probability to keep a pixel, 0..1 (default: 0.9)")
    g.add_argument("--tasks", nargs="+", choices=["seg", "depth", "normals"], default=None,
                   help="what a model teacher labels (default: all it predicts)")
    g.add_argument("--class-share", type=float, default=None, metavar="S",
                   help="model: keep at least this share (0..1) of each class's predicted pixels, lowering the "
                        "threshold for classes the model is rarely sure of (thin ones); counted over the whole split "
                        "first (default: one --threshold for all classes)")
    p.set_defaults(func=run)


def _check_options(args: argparse.Namespace) -> None:
    """Refuse an option given to a method it does not belong to (it would be silently ignored)."""
    for dest, (methods, unset) in _ONLY.items():
        if args.method not in methods and getattr(args, dest) != unset:
            flag = "--" + dest.replace("_", "-")
            raise ValueError(f"{flag} is an option of --method {' / '.join(methods)}, not {args.method}")


def build_teacher(args: argparse.Namespace):
    """The stereo teacher the command-line options describe (``sgbm`` or ``onnx``)."""
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
        mean=args.mean if args.mean is not None else [0.0, 0.0, 0.0],
        std=args.std if args.std is not None else [1.0, 1.0, 1.0],
        scale=1.0 if args.scale is None else args.scale, channel_order="bgr" if args.bgr else "rgb",
        output_channel=args.output_channel, output_scale=args.output_scale,
        providers=args.providers or ["CPUExecutionProvider"],
    )


def _onnx_net(args: argparse.Namespace, what: str):
    from mtdense.data.image import IMAGENET_MEAN, IMAGENET_STD
    from mtdense.teachers.onnx_image import OnnxImageNet

    if not args.model:
        raise ValueError(f"--method {args.method} needs --model FILE: the {what} exported to ONNX")
    return OnnxImageNet(args.model, what=what, input_size=tuple(args.input_size) if args.input_size else None,
                        mean=args.mean if args.mean is not None else IMAGENET_MEAN,
                        std=args.std if args.std is not None else IMAGENET_STD,
                        device=args.device or "cpu", batch=args.batch)


def build_folder_teacher(args: argparse.Namespace):
    """``(teacher, outputs)`` for a folder dataset: the teacher and task -> output folder."""
    from mtdense.data.folder import LABEL_FOLDERS
    from mtdense.teachers.folder import RESERVED_FOLDERS, StereoDepthTeacher

    if args.method in STEREO_METHODS:
        return StereoDepthTeacher(build_teacher(args)), {"depth": args.out or f"depth_{args.method}"}
    if args.method == "mono-onnx":
        from mtdense.teachers.mono import MonoDepthTeacher

        out = args.out or "depth_mono"
        anchors = args.anchors or "depth"
        if args.metric and args.align is not None:
            raise ValueError("--align aligns a relative network; a --metric one gives metres as they are")
        if anchors == out and out not in RESERVED_FOLDERS:  # a real data folder is refused with its own message
            raise ValueError(f"--anchors {anchors} is the output folder; align to another depth source (depth, depth_sgbm)")
        teacher = MonoDepthTeacher(
            _onnx_net(args, "monocular depth network"), output=args.output or "inverse-depth", metric=args.metric,
            anchors=anchors, align=args.align or "per-frame",
            max_residual=0.2 if args.max_residual is None else args.max_residual,
            min_anchors=20 if args.min_anchors is None else args.min_anchors, max_depth=args.max_depth,
        )
        return teacher, {"depth": out}
    threshold = 0.9 if args.threshold is None else args.threshold
    if args.method == "seg-onnx":
        from mtdense.teachers.seg import OnnxSegTeacher

        if not args.class_map:
            raise ValueError("--method seg-onnx needs --class-map FILE: which teacher class is which dataset class "
                             "(teacher_classes: [...], map: {teacher class: dataset class})")
        teacher = OnnxSegTeacher(_onnx_net(args, "segmentation network"), args.class_map, threshold=threshold)
        return teacher, {"seg": args.out or "masks_teacher"}
    from mtdense.teachers.model_folder import ModelTeacher

    if not args.model:
        raise ValueError("--method model needs --model FILE: a trained mtdense model (.pth, .safetensors, .ckpt)")
    teacher = ModelTeacher(args.model, tasks=args.tasks, threshold=threshold,
                           size=tuple(args.input_size) if args.input_size else None, device=args.device or "cpu",
                           class_map=args.class_map, class_share=args.class_share)
    suffix = args.out or "model"
    return teacher, {t: f"{LABEL_FOLDERS[t]}_{suffix}" for t in teacher.tasks}


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mtdense.data.check import tree_format
    from mtdense.items import report_skipped

    _check_options(args)
    root = Path(args.root)
    if root.is_dir() and tree_format(root) == "folder":
        return _run_folder(args, root)
    if args.method not in STEREO_METHODS:
        raise ValueError(f"{root}: --method {args.method} labels a folder dataset (dataset.yaml beside images/SPLIT/), and "
                         "this is none; for Cityscapes segmentation pseudo-labels use 'mtdense data pseudo-label'")
    if args.batch != 4:
        raise ValueError("--batch is for folder datasets; the Cityscapes stereo teachers run one pair at a time")
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


def _run_folder(args: argparse.Namespace, root) -> int:
    from mtdense.items import report_skipped
    from mtdense.teachers.folder import label_folder_split, summary_path

    teacher, outputs = build_folder_teacher(args)
    summary = label_folder_split(root, teacher, args.method, outputs, split=args.split, overwrite=args.overwrite,
                                 limit=args.limit, batch_size=args.batch, progress=not args.quiet,
                                 on_failure=report_skipped)
    if not args.quiet:
        print(summary.format())
        for out in outputs.values():
            print(f"summary: {summary_path(root, out, args.split)}")
    return 1 if summary.failed else 0
