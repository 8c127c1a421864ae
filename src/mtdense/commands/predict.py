"""``mtdense predict``: segmentation and depth for images, folders and videos."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mtdense.commands import limit
from mtdense.data.image import IMAGE_SUFFIXES, VIDEO_SUFFIXES

DESCRIPTION = f"""\
Predict semantic segmentation and depth with a trained model.

INPUT can be image files, folders (searched recursively for images {' '.join(IMAGE_SUFFIXES)}
and videos {' '.join(VIDEO_SUFFIXES)}) and video files. For each image NAME, --out gets:
  NAME_panel.png     image | segmentation overlay | depth colour map with a scale bar in
                     metres (log scale over --depth-range); the overlay uses the colours of
                     the dataset the model was trained on (a folder dataset's dataset.yaml
                     colors or the default palette; Cityscapes colours for a Cityscapes model)
  NAME_trainIds.png  uint8 class indices 0..K-1 in the order of the model's classes (the
                     Cityscapes train ids 0..18 for a Cityscapes model; the checkpoint
                     carries the class names); the name is the same for every dataset
  NAME_labelIds.png  uint8 Cityscapes label ids (for the official evaluation scripts); only
                     for a model of the 19 Cityscapes classes
  NAME_depth.png     uint16 depth: value = round(depth_m * 256), 0 = invalid
For each video NAME: NAME_annotated.mp4, the panels of every frame with the measured speed
of the network (FPS) written on them.

Decoding and pre-processing, the network, and post-processing and writing run at the same time
(three threads, at most 4 frames waiting between two of them), frames and images in their order.
While the network runs on ONNX Runtime or the fused kernel, PyTorch (which pre- and
post-processes) keeps one thread, so it never competes with the network's threads.

An input that fails (corrupt, truncated, not an image, over --max-pixels, out of memory) is
reported in one line, 'skipped FILE: what; what to do', and the rest are processed; so is a
video frame that cannot be used ('skipped FILE frame N: ...'; the video is written without it).
A summary line ends the run. Every file is written whole (beside its target, then renamed): a
killed run leaves no partial file. Exit status: 0 all inputs written; 1 some inputs or video
frames failed (the others were written); 2 refused before any work (bad arguments, unreadable
checkpoint, no inputs found, --out not writable); 130 interrupted.

CHECKPOINT may also be a file written by 'mtdense export': an .onnx file (fp32 or int8) runs
under ONNX Runtime, an OpenVINO .xml under OpenVINO; a --static export runs at the size it was
made for. A checkpoint runs on the runtime --backend names (the runtimes 'mtdense bench' times):
  eager (default), channels_last, compile: PyTorch;  ort: ONNX Runtime of the inference
  rewrite, exported at start;  ov: OpenVINO;  ort_int8 needs calibration and is not offered here;
  fused: ONNX Runtime + a kernel compiled here for the finest level and the heads (fastest CPU
  path; fixed shapes with --size);  fp16, cuda_graph: CUDA."""

EPILOG = """\
examples:
  mtdense predict runs/demo/model.pth street.png --out predictions/
  mtdense predict runs/demo/model.pth data/leftImg8bit/val/frankfurt --out pred/ --size 512 1024
  mtdense predict runs/demo/model.pth drive.mp4 --out pred/ --device cuda
  mtdense predict model.onnx drive.mp4 --out pred/                 # ONNX Runtime (mtdense export)
  mtdense predict runs/demo/model.pth drive.mp4 --out pred/ --size 400 1024 --backend fused   # fastest on a CPU"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict", help="segmentation + depth for images, folders and videos (panels, raw PNGs, annotated video)",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="model checkpoint (.pth / .ckpt / .safetensors), or an .onnx file from 'mtdense export' (run by ONNX Runtime)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders and video files")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                   help="network input size; images are resized to it and outputs resized back (default: each image's own size)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: %(default)s)")
    p.add_argument("--depth-range", nargs=2, type=float, default=[1.0, 100.0], metavar=("NEAR", "FAR"),
                   help="depth colour map range in metres (default: 1 100)")
    p.add_argument("--alpha", type=float, default=0.5, help="segmentation overlay opacity 0..1 (default: %(default)s)")
    p.add_argument("--no-panels", action="store_true", help="write only the raw PNGs for images")
    p.add_argument("--backend", metavar="NAME", choices=_backends(),
                   help=f"runtime for a checkpoint: {', '.join(_backends())} (default: eager; see above)")
    p.add_argument("--fused", action="store_true", help="the same as --backend fused")
    p.add_argument("--max-pixels", type=limit, metavar="N",
                   help="refuse images and video frames of more than N pixels (H x W), before decoding them where "
                        "the header tells the size; 0: no limit (default: 50000000, 50 MP)")
    p.set_defaults(func=run)


def _check_writable(out: Path) -> None:
    import tempfile

    from mtdense.io import WriteError

    try:
        tempfile.TemporaryFile(dir=out).close()
    except OSError as exc:
        raise WriteError(exc.errno, f"{out}: cannot write files here ({exc.strerror or exc}); "
                                    "choose an output folder you can write to") from exc


def _backends() -> list[str]:
    from mtdense.deploy.runtime import RUNTIMES, runtime_class

    runtime_class("eager")  # fills the registry
    return [name for name in RUNTIMES if name != "ort_int8"]  # int8 needs calibration images: 'mtdense export --int8'


def _runs(items: list[tuple[Path, str]]) -> list[tuple[str, list[Path]]]:
    """Consecutive images as one run (one pipeline), each video and each missing path alone."""
    runs: list[tuple[str, list[Path]]] = []
    for path, kind in items:
        if kind == "image" and runs and runs[-1][0] == "image":
            runs[-1][1].append(path)
        else:
            runs.append((kind, [path]))
    return runs


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mtdense.inference import DEFAULT_MAX_PIXELS, Predictor
    from mtdense.io import prepare_dir
    from mtdense.outputs import UniqueStems, expand_inputs
    from mtdense.pipeline import describe_fault, is_input_fault, predict_images, predict_video

    backend = args.backend
    if args.fused:
        if backend not in (None, "fused"):
            print(f"mtdense predict: error: --fused is --backend fused; it cannot be combined with --backend {backend}", file=sys.stderr)
            return 2
        backend = "fused"
    items = list(expand_inputs(args.inputs))
    if not items:
        raise ValueError(f"{', '.join(args.inputs)}: no images ({' '.join(IMAGE_SUFFIXES)}) or videos found; "
                         "give image or video files, or folders that hold some")
    size = tuple(args.size) if args.size else None
    max_pixels = DEFAULT_MAX_PIXELS if args.max_pixels is None else args.max_pixels
    predictor = Predictor(args.checkpoint, device=args.device, size=size, backend=backend, max_pixels=max_pixels)
    out = prepare_dir(args.out)  # after the checkpoint is accepted: a refused run creates nothing
    _check_writable(out)
    names = UniqueStems()
    done, failed, frames_skipped = 0, [], 0

    def report(line: str) -> None:
        tqdm.write(line, file=sys.stderr)

    with tqdm(total=len(items), desc="predict", unit="file", disable=len(items) < 2) as files_bar:
        for kind, paths in _runs(items):
            if kind == "image":
                summary = predict_images(predictor, [(p, names(p)) for p in paths], out, not args.no_panels, args.depth_range,
                                         args.alpha, report=report, progress=files_bar.update)
                done += summary.written
                failed += summary.skipped_names
                continue
            path = paths[0]
            try:
                if kind == "missing":
                    raise FileNotFoundError(f"{path}: no such file or folder; check the path")
                target = out / f"{names(path)}_annotated.mp4"
                with tqdm(desc=path.name, unit="frame", leave=False) as bar:
                    summary = predict_video(predictor, path, target, args.depth_range, args.alpha, report=report, progress=bar.update)
                skipped = f" ({summary.skipped} of {summary.read} frames skipped)" if summary.skipped else ""
                tqdm.write(f"{path}: {summary.written} frames written{skipped}, model {summary.model_fps:.1f} FPS, "
                           f"end to end {summary.fps:.1f} FPS -> {target}")
                frames_skipped += summary.skipped
                done += 1
            except (ValueError, OSError, MemoryError, RuntimeError) as exc:
                if not is_input_fault(exc):
                    raise  # not a fault of this input: the CLI reports it
                failed.append(str(path))
                report(f"skipped {describe_fault(path, exc)}")
            files_bar.update(1)
    frames = f"; {frames_skipped} video frame(s) skipped" if frames_skipped else ""
    print(f"{done} input(s) written to {out}; {len(failed)} skipped" + (f": {', '.join(failed)}" if failed else "") + frames)
    return 1 if failed or frames_skipped else 0
