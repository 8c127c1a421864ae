"""``mtdense predict``: segmentation and depth for images, folders and videos."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from mtdense.export import IMAGE_SUFFIXES

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")

DESCRIPTION = f"""\
Predict semantic segmentation and depth with a trained model.

INPUT can be image files, folders (searched recursively for images {' '.join(IMAGE_SUFFIXES)}
and videos {' '.join(VIDEO_SUFFIXES)}) and video files. For each image NAME, --out gets:
  NAME_panel.png     image | segmentation overlay (Cityscapes palette) | depth colour map
                     with a scale bar in metres (log scale over --depth-range)
  NAME_trainIds.png  uint8 Cityscapes train ids 0..18
  NAME_labelIds.png  uint8 Cityscapes label ids (for the official evaluation scripts)
  NAME_depth.png     uint16 depth: value = round(depth_m * 256), 0 = invalid
For each video NAME: NAME_annotated.mp4, the panels of every frame with the measured model
speed (FPS, preprocessing + forward + decoding) written on them.

An image or video that cannot be read (corrupt, truncated, not an image) is reported and
skipped; the rest are processed. The exit status is non-zero only if nothing succeeded.

CHECKPOINT may also be an .onnx file written by 'mtdense export' (fp32 or int8): ONNX Runtime
then runs the network, the deploy path whose speed 'mtdense bench' reports. A --static export
runs at the size it was made for."""

EPILOG = """\
examples:
  mtdense predict runs/demo/model.pth street.png --out predictions/
  mtdense predict runs/demo/model.pth data/leftImg8bit/val/frankfurt --out pred/ --size 512 1024
  mtdense predict runs/demo/model.pth drive.mp4 --out pred/ --device cuda
  mtdense predict model.onnx drive.mp4 --out pred/                 # ONNX Runtime (mtdense export)
  mtdense predict runs/demo/model.pth drive.mp4 --out pred/ --size 400 1024 --fused   # fastest on a CPU"""


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
    p.add_argument("--fused", action="store_true",
                   help="CPU: run the checkpoint on the fused path (mtdense.fused: ONNX Runtime, then a kernel compiled "
                        "here with the system's C compiler for the finest decoder level and the heads); the fastest CPU path")
    p.set_defaults(func=run)


def _expand(inputs: list[str]) -> Iterator[tuple[Path, str]]:
    """Yield ``(path, kind)`` with kind ``image``, ``video`` or ``missing``."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for f in sorted(path.rglob("*")):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    yield f, "image"
                elif f.is_file() and f.suffix.lower() in VIDEO_SUFFIXES:
                    yield f, "video"
        elif path.is_file():
            yield path, "video" if path.suffix.lower() in VIDEO_SUFFIXES else "image"
        else:
            yield path, "missing"


class _Names:
    """Output stems, unique within one run (two inputs named a.png get a and a_2)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, path: Path) -> str:
        stem, i = path.stem, 1
        while stem in self.used:
            i += 1
            stem = f"{path.stem}_{i}"
        self.used.add(stem)
        return stem


def _write_png(path: Path, array) -> None:
    import cv2

    if not cv2.imwrite(str(path), array):
        raise OSError(f"could not write {path}")


def predict_image(predictor, path: Path, out: Path, stem: str, panels: bool, depth_range, alpha: float) -> None:
    """Predict one image file and write its panel and raw PNGs into ``out``."""
    import cv2

    from mtdense.inference import read_image
    from mtdense.viz import make_panel

    rgb = read_image(path)
    pred = predictor.predict(rgb)
    _write_png(out / f"{stem}_trainIds.png", pred.seg)
    _write_png(out / f"{stem}_labelIds.png", pred.label_ids())
    _write_png(out / f"{stem}_depth.png", pred.depth_png16())
    if panels:
        panel = make_panel(rgb, pred.seg, pred.depth, tuple(depth_range), alpha)
        _write_png(out / f"{stem}_panel.png", cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))


def predict_video(predictor, path: Path, out_file: Path, depth_range, alpha: float) -> tuple[int, float]:
    """Annotate every frame of a video with its panel and the measured model FPS.

    Returns:
        ``(frames, mean model FPS)``.

    Raises:
        ValueError: OpenCV cannot open or decode the video, or cannot write ``out_file``.
    """
    import cv2
    from tqdm import tqdm

    from mtdense.viz import make_panel

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"{path}: OpenCV cannot open this video (corrupt, or a codec this OpenCV build lacks)")
    fps_in = cap.get(cv2.CAP_PROP_FPS) or 0.0
    fps_in = fps_in if 0 < fps_in < 1000 else 25.0  # containers without a frame rate: write at 25 Hz
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    writer = None
    frames, spent = 0, 0.0
    try:
        with tqdm(total=total, desc=path.name, unit="frame", leave=False) as bar:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                t0 = time.perf_counter()
                pred = predictor.predict(rgb)
                spent += time.perf_counter() - t0
                frames += 1
                title = f"model {frames / spent:.1f} FPS ({predictor.device.type})"
                panel = cv2.cvtColor(make_panel(rgb, pred.seg, pred.depth, tuple(depth_range), alpha, title=title), cv2.COLOR_RGB2BGR)
                if writer is None:
                    writer = cv2.VideoWriter(str(out_file), cv2.VideoWriter_fourcc(*"mp4v"), fps_in, (panel.shape[1], panel.shape[0]))
                    if not writer.isOpened():
                        raise ValueError(f"{out_file}: OpenCV cannot write an mp4v video here")
                writer.write(panel)
                bar.update(1)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if frames == 0:
        out_file.unlink(missing_ok=True)
        raise ValueError(f"{path}: no frame could be decoded")
    return frames, frames / spent


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mtdense.inference import Predictor

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(args.size) if args.size else None
    model = args.checkpoint
    if args.fused:
        if args.device != "cpu" or Path(args.checkpoint).suffix.lower() == ".onnx":
            print("error: --fused runs a checkpoint (.pth/.ckpt/.safetensors) on the CPU; drop --device or use the checkpoint", file=sys.stderr)
            return 2
        from mtdense.fused import FusedNet
        from mtdense.models import load_model

        model = FusedNet(load_model(args.checkpoint), size=size)  # fixed shapes when --size is given: faster
    predictor = Predictor(model, device=args.device, size=size)
    items = list(_expand(args.inputs))
    names = _Names()
    done, failed = 0, []
    for path, kind in tqdm(items, desc="predict", unit="file", disable=len(items) < 2):
        try:
            if kind == "missing":
                raise FileNotFoundError(f"{path}: no such file or folder")
            stem = names(path)
            if kind == "video":
                target = out / f"{stem}_annotated.mp4"
                frames, fps = predict_video(predictor, path, target, args.depth_range, args.alpha)
                tqdm.write(f"{path}: {frames} frames, model {fps:.1f} FPS -> {target}")
            else:
                predict_image(predictor, path, out, stem, not args.no_panels, args.depth_range, args.alpha)
            done += 1
        except (ValueError, FileNotFoundError, OSError) as exc:
            failed.append(path)
            tqdm.write(f"skipped {path}: {exc}", file=sys.stderr)
    print(f"{done} input(s) written to {out}; {len(failed)} skipped" + (f": {', '.join(map(str, failed))}" if failed else ""))
    if done == 0:
        print("error: nothing could be processed", file=sys.stderr)
        return 1
    return 0
