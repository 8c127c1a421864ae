"""What each deploy path costs in accuracy, on a labelled split.

    python benchmarks/deploy_accuracy.py CKPT --data ROOT --split val --size 400 1024

For eager fp32 PyTorch, ONNX Runtime fp32 (the inference rewrite) and ONNX Runtime int8
(calibrated on the first --calibration samples of the *train* split, never on the evaluated
ones), prints per path: segmentation argmax agreement and depth difference against eager fp32
on every evaluated image, and mIoU / pixel accuracy / AbsRel / delta1 against the ground truth
(:mod:`mtdense.metrics`, over the whole split). Images are resized to --size; labels and depth
are compared at that size (nearest-neighbour).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from mtdense.data.cityscapes import CityscapesDataset
from mtdense.deploy.int8 import preprocess_images, quantize_onnx
from mtdense.deploy.onnx import export_onnx, ort_session, run_onnx
from mtdense.deploy.parity import compare_outputs
from mtdense.metrics import DepthMetrics, SegMetrics
from mtdense.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    parser.add_argument("--data", required=True, help="dataset root (Cityscapes layout)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--size", nargs=2, type=int, default=[400, 1024], metavar=("H", "W"))
    parser.add_argument("--max-samples", type=int, default=50)
    parser.add_argument("--calibration", type=int, default=32, help="train-split images that calibrate int8")
    args = parser.parse_args()
    size = tuple(args.size)

    model = load_model(args.checkpoint)
    evaluated = CityscapesDataset(args.data, args.split)
    train = CityscapesDataset(args.data, "train")
    calib = [train[i]["image"] for i in np.linspace(0, len(train) - 1, min(args.calibration, len(train))).astype(int)]
    n = min(args.max_samples, len(evaluated))

    with tempfile.TemporaryDirectory(prefix="mtdense-acc-") as tmp:
        fp32_path = export_onnx(model, Path(tmp) / "fp32.onnx", size=size, dynamic=False)
        whole = export_onnx(model, Path(tmp) / "fp32_whole.onnx", size=size, dynamic=False, groups=1)  # what int8 quantizes
        int8_path = quantize_onnx(whole, Path(tmp) / "int8.onnx", calib, size=size)
        sessions = {"ort fp32": ort_session(fp32_path), "ort int8": ort_session(int8_path)}
        paths = ["eager fp32", *sessions]
        seg_m = {p: SegMetrics() for p in paths}
        depth_m = {p: DepthMetrics(max_depth=250.0) for p in paths}
        outs: dict[str, list] = {p: [] for p in paths}
        for i in tqdm(range(n), desc="evaluate", unit="image"):
            sample = evaluated[i]
            x = preprocess_images([sample["image"]], size)
            gt_seg = cv2.resize(sample["seg"], size[::-1], interpolation=cv2.INTER_NEAREST)
            gt_depth = cv2.resize(sample["depth"], size[::-1], interpolation=cv2.INTER_NEAREST)
            with torch.inference_mode():
                results = {"eager fp32": {k: v.numpy() for k, v in model(torch.from_numpy(x)).items()}}
            results.update({p: run_onnx(s, x) for p, s in sessions.items()})
            for p, r in results.items():
                outs[p].append(r)
                seg_m[p].update(torch.from_numpy(r["seg"]).argmax(1), torch.from_numpy(gt_seg)[None].long())
                depth_m[p].update(torch.exp(5 * torch.from_numpy(r["depth"][:, 0])), torch.from_numpy(gt_depth)[None])
    cat = lambda rs: {k: np.concatenate([r[k] for r in rs]) for k in rs[0]}  # noqa: E731
    ref = cat(outs["eager fp32"])
    print(f"{n} {args.split} images at {size[0]}x{size[1]}; int8 calibrated on {len(calib)} train images")
    print(f"{'path':<12}{'agree %':>9}{'d mean rel %':>14}{'d max |diff| m':>16}{'mIoU %':>9}{'pix acc %':>11}{'AbsRel':>9}{'delta1 %':>10}")
    for p in paths:
        par = compare_outputs(cat(outs[p]), ref)
        s, d = seg_m[p].compute(), depth_m[p].compute()
        print(f"{p:<12}{100 * par.seg_agreement:>9.2f}{100 * par.depth_mean_rel:>14.3f}{par.depth_max_abs_m:>16.3f}"
              f"{100 * float(s['miou']):>9.2f}{100 * float(s['pixel_acc']):>11.2f}{float(d['abs_rel']):>9.4f}{100 * float(d['delta1']):>10.2f}")


if __name__ == "__main__":
    main()
