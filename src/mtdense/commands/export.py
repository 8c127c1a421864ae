"""``mtdense export``: ONNX (fp32 or int8), OpenVINO IR or safetensors, checked against PyTorch on export."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

DESCRIPTION = """\
Export a trained model for deployment.

--format onnx (default) writes one .onnx file (weights inside) with input 'image'
(B x 3 x H x W float32, RGB scaled to 0..1 then ImageNet-normalised; batch, height and width
dynamic) and one output per task at the input size: 'seg' (B x K x H x W logits over the
model's K classes; 19 Cityscapes train ids by default), 'depth' (B x 1 x H x W, log(depth_m)/5;
metres = exp(5 * depth)) and, for a model with a normals head, 'normals' (B x 3 x H x W unit
vectors). The file's metadata carries the model's dataset description (class names, colours,
tasks: mtdense.dataset_info), so 'mtdense predict model.onnx' names and colours its classes.
The graph is the inference rewrite of the network (BatchNorm folded, separable pooling,
cheaper head convolutions, layout-friendly ReLU6, the finest level in cache-sized channel
groups; same function). Right after export ONNX Runtime and
PyTorch run the same images and the differences are printed: segmentation argmax
agreement and the largest depth difference in metres. The export fails if they disagree
beyond --max-depth-diff or --min-agreement.

--int8 also writes FILE with .int8.onnx: static int8 quantization (QDQ, per-channel
weights, uint8 activations, calibrated on images from --calibration), and prints the
accuracy it costs against fp32 on those images. The heads' last convolutions stay fp32.

--format openvino writes OpenVINO IR: FILE.xml plus FILE.bin (fp32 weights), converted from
the same ONNX graph (same input, outputs and options, --plain and --static included), and
checks it against PyTorch the same way, running OpenVINO on the CPU in fp32. Needs
pip install "mtdense[openvino]".

--format safetensors writes the weights with the model config in the metadata
(mtdense.load_model reads it back).

--format fused prepares the fused CPU runtime ahead of time: it compiles the kernel and
exports the runtime's graph for --size into the cache ($MTDENSE_CACHE, else ~/.cache/mtdense),
keyed by the weights, the size and the CPU, then checks it against PyTorch (a model with a
normals head is refused: the kernel does not normalise them; use --format onnx). A later
'mtdense predict CKPT --backend fused --size H W' on this machine then starts in a second or
two instead of exporting first. No --out: the cache is the output.

Every file is written beside its target and renamed into place when complete: a killed export
leaves the earlier file or none, never a part. --out is checked before the (slow) export."""

EPILOG = """\
examples:
  mtdense export runs/demo/model.pth --out model.onnx
  mtdense export runs/demo/model.pth --int8 --calibration data/leftImg8bit/val/frankfurt --out model.onnx
  mtdense export runs/demo/model.pth --format openvino --out model.xml
  mtdense export runs/demo/model.pth --format safetensors --out model.safetensors
  mtdense export runs/demo/model.pth --format fused --size 400 1024   # then: predict --backend fused --size 400 1024"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="export to ONNX (fp32 / int8), OpenVINO IR or safetensors, with a parity check",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="model checkpoint (.pth / .ckpt / .safetensors)")
    p.add_argument("--format", choices=("onnx", "openvino", "safetensors", "fused"), default="onnx",
                   help="output format (default: %(default)s): onnx runs under the ort runtime, openvino under ov, "
                        "fused fills the fused runtime's cache")
    p.add_argument("--out", help="output file (.xml for --format openvino; the .bin goes next to it); "
                                 "not with --format fused")
    p.add_argument("--size", nargs=2, type=int, default=[400, 1024], metavar=("H", "W"),
                   help="example input size for tracing, checks and calibration (default: 400 1024)")
    p.add_argument("--plain", action="store_true", help="export the training graph as is instead of the inference rewrite")
    p.add_argument("--static", action="store_true",
                   help="fix the input to 1 x 3 x H x W (--size): ONNX Runtime then keeps more of the graph in its "
                        "blocked layout (faster on CPUs), but the file only accepts that size")
    p.add_argument("--int8", action="store_true", help="also write an int8 model (FILE.int8.onnx); needs --calibration")
    p.add_argument("--calibration", help="folder of images (searched recursively) for int8 calibration and the checks")
    p.add_argument("--calibration-images", type=int, default=32, help="calibration images to use, spread over the folder (default: %(default)s)")
    p.add_argument("--check-images", type=int, default=4, help="images for the parity check (default: %(default)s)")
    p.add_argument("--max-depth-diff", type=float, default=1e-2, help="largest allowed fp32 depth difference in metres (default: %(default)s)")
    p.add_argument("--min-agreement", type=float, default=0.999, help="smallest allowed fp32 argmax agreement (default: %(default)s)")
    p.set_defaults(func=run)


def check_out_file(out: Path) -> None:
    """Fail early, naming ``out``, where a file cannot be written there (a folder, a path under a
    regular file, a read-only folder)."""
    import errno

    from mtdense.io import WriteError, prepare_dir

    if out.is_dir():
        raise WriteError(errno.EISDIR, f"{out}: is a folder; give a file path, e.g. {out / ('model' + (out.suffix or '.onnx'))}")
    prepare_dir(out.parent)
    try:
        tempfile.TemporaryFile(dir=out.parent).close()
    except OSError as exc:
        raise WriteError(exc.errno, f"{out}: cannot write files in {out.parent} ({exc.strerror or exc}); "
                                    "choose a folder you can write to") from exc


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from mtdense.deploy.int8 import calibration_images, preprocess_images, quantize_onnx
    from mtdense.deploy.onnx import OnnxModel, deploy_groups, export_onnx
    from mtdense.deploy.parity import compare_outputs, runtime_parity
    from mtdense.deploy.runtime import RuntimeOptions, runtime_for_format
    from mtdense.models import export_safetensors, load_model

    if args.format == "fused":
        return _prepare_fused(args)
    if not args.out:
        raise ValueError(f"--format {args.format} needs --out FILE")
    out = Path(args.out)
    check_out_file(out)
    model = load_model(args.checkpoint)
    if args.format == "safetensors":
        if args.int8 or args.calibration:
            raise ValueError("--int8/--calibration apply to --format onnx only")
        export_safetensors(model, out)
        print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB)")
        return 0
    runtime = runtime_for_format(args.format)
    if args.int8 and args.format != "onnx":
        raise ValueError("--int8 applies to --format onnx only")
    if runtime.suffixes and out.suffix != runtime.suffixes[0]:
        raise ValueError(f"--format {args.format} writes a {runtime.suffixes[0]} file: give --out NAME{runtime.suffixes[0]}, got {out}")
    reason = runtime.unavailable(RuntimeOptions())
    if reason:  # fail before the slow export
        raise ValueError(f"--format {args.format}: {reason}")
    if args.int8 and not args.calibration:
        raise ValueError("--int8 needs --calibration DIR: a folder of real images (e.g. a few dozen validation images)")
    size = tuple(args.size)
    files = calibration_images(args.calibration, args.calibration_images) if args.calibration else []

    shape = f"fixed 1x3x{size[0]}x{size[1]}" if args.static else "dynamic batch/H/W"
    print(f"exporting {args.checkpoint} -> {out} ({'training graph' if args.plain else 'inference rewrite'}, {shape})")
    runtime.export(model, out, size=size, deploy=not args.plain, dynamic=not args.static)
    weights = out.with_suffix(".bin") if out.with_suffix(".bin").is_file() and out.suffix == ".xml" else out
    print(f"wrote {out}" + (f" + {weights.name}" if weights != out else "") + f" ({weights.stat().st_size / 2**20:.1f} MiB)")

    if files:
        x = torch.from_numpy(preprocess_images(files[: args.check_images], size))
        what = f"{min(len(files), args.check_images)} image(s) from {args.calibration}"
    else:
        x = torch.randn(args.check_images, 3, *size, generator=torch.Generator().manual_seed(0))
        what = f"{args.check_images} random input(s)"
    parity = runtime_parity(runtime.from_file(out, RuntimeOptions()), model, x)
    print(f"{runtime.engine} fp32 vs PyTorch fp32 on {what} at {size[0]}x{size[1]}: {parity}")
    if parity.depth_max_abs_m > args.max_depth_diff or parity.seg_agreement < args.min_agreement:
        print(f"error: the export does not reproduce PyTorch (limits: depth {args.max_depth_diff} m, agreement "
              f"{args.min_agreement}); report this with the versions of torch and {runtime.engine}")
        return 1

    if args.int8:
        q_path = out.with_suffix(".int8.onnx")
        print(f"quantizing to int8 with {len(files)} calibration image(s) ...")
        with tempfile.TemporaryDirectory(prefix="mtdense-export-") as tmp:
            # The int8 graph starts from the ungrouped rewrite: its fp32 exclusions go by module path.
            grouped = deploy_groups(out) > 1
            base = export_onnx(model, Path(tmp) / "whole.onnx", size=size, dynamic=not args.static, groups=1) if grouped else out
            quantize_onnx(base, q_path, files, size=size)
        print(f"wrote {q_path} ({q_path.stat().st_size / 2**20:.1f} MiB)")
        fp32, int8 = OnnxModel(out), OnnxModel(q_path)
        outs, refs = [], []
        for f in files:
            xi = torch.from_numpy(preprocess_images([f], size))
            refs.append(fp32(xi))
            outs.append(int8(xi))
        cat = lambda rs: {k: np.concatenate([r[k].numpy() for r in rs]) for k in rs[0]}  # noqa: E731
        print(f"int8 vs fp32 on the {len(files)} calibration image(s): {compare_outputs(cat(outs), cat(refs))}")
    return 0


def _prepare_fused(args: argparse.Namespace) -> int:
    """``--format fused``: the kernel built and the graph for ``--size`` cached, then checked."""
    import time

    import torch

    from mtdense.deploy.fused import FusedNet
    from mtdense.deploy.cache import graph_cache_dir
    from mtdense.deploy.parity import runtime_parity
    from mtdense.deploy.runtime import RuntimeOptions
    from mtdense.models import load_model

    if args.out or args.int8 or args.plain or args.static:
        raise ValueError("--format fused fills the cache for --size: it takes no --out, --int8, --plain or --static")
    reason = FusedNet.unavailable(RuntimeOptions())
    if reason:
        raise ValueError(f"--format fused: {reason}")
    model = load_model(args.checkpoint)
    refused = FusedNet.refuses(model.tasks)
    if refused:
        raise ValueError(f"--format fused: {args.checkpoint}: {refused}")
    size = (int(args.size[0]), int(args.size[1]))
    start = time.perf_counter()
    net = FusedNet(model, size=size)
    took = time.perf_counter() - start
    state = "already in the cache" if net.graph_reused else "exported"
    print(f"fused runtime for {args.checkpoint} at {size[0]}x{size[1]}: graph {state} ({net.onnx_path}), ready in {took:.1f} s")
    x = torch.randn(args.check_images, 3, *size, generator=torch.Generator().manual_seed(0))
    parity = runtime_parity(net, model, x)
    print(f"fused vs PyTorch fp32 on {args.check_images} random input(s): {parity}")
    if parity.depth_max_abs_m > args.max_depth_diff or parity.seg_agreement < args.min_agreement:
        print("error: the fused runtime does not reproduce PyTorch; report this with the versions of torch and onnxruntime")
        return 1
    print(f"cache: {graph_cache_dir()}; 'mtdense predict {args.checkpoint} ... --backend fused --size {size[0]} {size[1]}' starts from it")
    return 0
