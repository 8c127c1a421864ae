"""Stereo teachers: SGBM on real and hand-built pairs, the ONNX teacher against its PyTorch
module, and ``mtdense data teacher`` on a small tree followed by training on its output."""

import contextlib
import csv
import io
import json
import math
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtdense.cli import main
from mtdense.data.cityscapes import CityscapesDataset, read_disparity_png
from mtdense.data.depth import decode_cityscapes_disparity, disparity_to_depth
from mtdense.teachers import (
    ONNXStereoTeacher,
    SGBMTeacher,
    create_teacher,
    fill_background,
    generate_teacher_disparity,
    left_right_check,
)

CITY = "bremen"
FX_2048, BASELINE = 2262.52, 0.209313


# -- a hand-built stereo scene ------------------------------------------------------------------
def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blurred colour noise: texture SGBM can match at every pixel."""
    noise = rng.integers(0, 256, (h, w, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(noise, (0, 0), 1.0) * 2.0 - 128.0, 0, 255).astype(np.uint8)


def stereo_scene(rng: np.random.Generator, h: int = 64, w: int = 128) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three fronto-parallel textured layers at integer disparities, rendered into both views.

    Returns ``(left, right, gt)``: uint8 RGB views and the exact disparity of the left view
    (the nearest layer at each pixel). The right view sees a left pixel ``x`` of a layer with
    disparity ``d`` at ``x - d``, nearer layers drawn over farther ones.
    """
    layers = [(2, np.ones((h, w), bool))]  # background plane
    for d, (hf, wf) in ((5, (0.5, 0.35)), (9, (0.35, 0.2))):
        y0, x0 = int(rng.integers(2, h - int(h * hf) - 2)), int(rng.integers(20, w - int(w * wf) - 2))
        mask = np.zeros((h, w), bool)
        mask[y0 : y0 + int(h * hf), x0 : x0 + int(w * wf)] = True
        layers.append((d, mask))
    left = np.zeros((h, w, 3), np.uint8)
    right = np.zeros((h, w, 3), np.uint8)
    gt = np.zeros((h, w), np.float32)
    pad = max(d for d, _ in layers)
    for d, mask in layers:  # far to near
        tex = _texture(rng, h, w + pad)  # texture in left coordinates, with margin for the right view
        left[mask] = tex[:, :w][mask]
        gt[mask] = d
        shifted_mask = np.zeros((h, w + pad), bool)
        shifted_mask[:, :w] = mask
        # Right pixel xr shows left pixel xr + d of this layer.
        m = shifted_mask[:, d : d + w]
        right[m] = tex[:, d : d + w][m]
    return left, right, gt


def errors(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """Coverage of the ground-truth pixels, end-point error and bad-2px share over the covered ones."""
    has_gt = gt > 0
    both = has_gt & np.isfinite(pred) & (pred > 0)
    err = np.abs(pred[both] - gt[both])
    return both.sum() / has_gt.sum(), float(err.mean()), float((err > 2).mean())


# -- SGBM ----------------------------------------------------------------------------------------
def test_sgbm_settings_are_sized_for_the_cityscapes_rig():
    t = SGBMTeacher()
    full, half, small = t.settings(2048), t.settings(1024), t.settings(512)
    # A point 2 m away: b * fx / 2 = 236.7 px at 2048 wide, rounded up to a multiple of 16.
    assert full["numDisparities"] == 16 * math.ceil(BASELINE * FX_2048 / 2 / 16) == 240
    assert half["numDisparities"] == 128 and small["numDisparities"] == 64
    assert (full["blockSize"], half["blockSize"], small["blockSize"]) == (9, 5, 3)
    for s in (full, half, small):
        bs = s["blockSize"]
        assert s["P1"] == 8 * 3 * bs**2 and s["P2"] == 32 * 3 * bs**2 and s["uniquenessRatio"] > 0
        assert s["speckleWindowSize"] > 0 and s["speckleRange"] > 0
    assert SGBMTeacher(max_disparity=64).settings(741)["numDisparities"] == 64
    assert SGBMTeacher(max_disparity=65).settings(741)["numDisparities"] == 80


def test_sgbm_recovers_a_hand_built_layered_scene():
    left, right, gt = stereo_scene(np.random.default_rng(1), 96, 192)
    cover, epe, bad2 = errors(SGBMTeacher()(left, right), gt)
    # Measured: coverage 97.9%, EPE 0.044 px, bad2 0.55% (with the left-right check: 96.9%, 0.030 px, 0.3%).
    assert cover > 0.95 and epe < 0.15 and bad2 < 0.02, (cover, epe, bad2)
    cover_lr, epe_lr, _ = errors(SGBMTeacher(lr_check=True)(left, right), gt)
    assert cover_lr <= cover and epe_lr <= epe + 1e-6


def test_sgbm_on_the_middlebury_motorcycle():
    from skimage.data import stereo_motorcycle

    left, right, disp = stereo_motorcycle()
    gt = np.where(np.isfinite(disp), disp, 0).astype(np.float32)
    raw = errors(SGBMTeacher(max_disparity=64)(left, right), gt)
    lr = errors(SGBMTeacher(max_disparity=64, lr_check=True)(left, right), gt)
    filled = errors(SGBMTeacher(max_disparity=64, lr_check=True, fill="background")(left, right), gt)
    unpadded = errors(SGBMTeacher(max_disparity=64, pad_border=False)(left, right), gt)
    # Measured: raw 91.4% / 0.94 px / 5.6%; lr 88.9% / 0.75 px / 4.4%; lr + fill 100% / 1.21 px / 7.0%;
    # without the border padding 86.6% / 0.96 px / 5.7%.
    assert raw[0] > 0.88 and raw[1] < 1.2 and raw[2] < 0.08, raw
    assert lr[0] < raw[0] and lr[1] < raw[1] and lr[2] < raw[2], (lr, raw)  # the check removes errors
    assert filled[0] > 0.999 and filled[1] < 1.6, filled
    assert unpadded[0] < raw[0] - 0.03 and raw[1] < unpadded[1] + 0.05  # padding adds values, not error


def test_left_right_check_and_background_fill():
    dl = np.array([[0, 0, 0, 2, 2, 5, 5, 0]], np.float32)
    dr = np.array([[5, 2, 3.5, 0, 0, 0, 0, 0]], np.float32)
    # x=3 (d 2) lands on 1: 2 agrees; x=4 on 2: 3.5 is 1.5 px off; x=5 (d 5) on 0: 5 agrees; x=6 on 1: 2 is 3 px off.
    kept = left_right_check(dl, dr, max_diff=1.0)
    np.testing.assert_array_equal(kept, [[0, 0, 0, 2, 0, 5, 0, 0]])
    assert left_right_check(dl, dr, max_diff=1.5)[0, 4] == 2
    # A hole between a near (6) and a far (2) surface takes the far one; end holes their neighbour.
    filled = fill_background(np.array([[0, 4, 0, 0, 6, np.nan, 2, 0], [0] * 8], np.float32))
    np.testing.assert_array_equal(filled, [[4, 4, 4, 4, 6, 2, 2, 2], [0] * 8])


def test_sgbm_rejects_bad_settings_and_inputs():
    with pytest.raises(ValueError, match="valid: .*sgbm_3way"):
        SGBMTeacher(mode="fast")
    with pytest.raises(ValueError, match="odd"):
        SGBMTeacher(block_size=4)
    with pytest.raises(ValueError, match="valid"):
        create_teacher("crestereo")
    left = np.zeros((32, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="differ in size"):
        SGBMTeacher()(left, np.zeros((32, 48, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        SGBMTeacher()(left.astype(np.float32), left)


# -- ONNX ----------------------------------------------------------------------------------------
class TinyCostVolume(nn.Module):
    """A cost-volume stereo network: random-init features, L1 costs over ``max_disp`` shifts,
    soft-argmin. Output ``N x 2 x H x W``: confidence, then disparity in input pixels."""

    def __init__(self, max_disp: int = 12, sharpness: float = 200.0):
        super().__init__()
        self.features = nn.Conv2d(3, 8, 3, padding=1)
        self.max_disp = max_disp
        self.sharpness = sharpness

    def forward(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        fl, fr = self.features(left), self.features(right)
        w = fr.shape[-1]
        # Right features moved d pixels to the right line up with the left ones at disparity d.
        cost = torch.stack([-(fl - F.pad(fr, (d, 0))[..., :w]).abs().mean(1) for d in range(self.max_disp)], 1)
        prob = torch.softmax(cost * self.sharpness, 1)
        disp = (prob * torch.arange(self.max_disp, dtype=prob.dtype).view(1, -1, 1, 1)).sum(1, keepdim=True)
        return torch.cat([prob.amax(1, keepdim=True), disp], 1)


class SixChannel(nn.Module):
    """The same network behind one ``N x 6 x H x W`` input (left and right stacked)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, pair: torch.Tensor) -> torch.Tensor:
        return self.net(pair[:, :3], pair[:, 3:])


def export(module: nn.Module, args: tuple, path: Path, names: list[str]) -> Path:
    with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
        program = torch.onnx.export(module.eval(), args, None, dynamo=True, input_names=names, output_names=["out"])
    program.save(str(path))
    return path


@pytest.fixture(scope="module")
def stereo_onnx(tmp_path_factory):
    """``(module, two-input .onnx, six-channel .onnx)``, exported at a fixed 48 x 96 input."""
    torch.manual_seed(0)
    net = TinyCostVolume().eval()
    d = tmp_path_factory.mktemp("onnx")
    # Two distinct example tensors: the exporter would merge one tensor passed twice into one input.
    two = export(net, (torch.zeros(1, 3, 48, 96), torch.ones(1, 3, 48, 96)), d / "two.onnx", ["left", "right"])
    six = export(SixChannel(net), (torch.zeros(1, 6, 48, 96),), d / "six.onnx", ["pair"])
    return net, two, six


@pytest.mark.parametrize("layout", ["two", "six"])
def test_onnx_teacher_equals_the_pytorch_module(stereo_onnx, layout):
    net, two, six = stereo_onnx
    left, right, _ = stereo_scene(np.random.default_rng(2), 96, 192)
    kw = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3], "scale": 1 / 255, "channel_order": "bgr", "output_channel": 1}
    teacher = ONNXStereoTeacher(two if layout == "two" else six, output_scale=2.0, **kw)
    assert teacher.input_size == (48, 96)  # the model's fixed size
    disp = teacher(left, right)
    assert disp.shape == (96, 192) and disp.dtype == np.float32
    # Reference: the PyTorch module on the same network input; output resized bilinearly to the
    # image and scaled by image width / input width (192 / 96). Tolerance 1e-4 px.
    with torch.no_grad():
        out = net(torch.from_numpy(teacher.preprocess(left, (48, 96))), torch.from_numpy(teacher.preprocess(right, (48, 96))))
    ref = cv2.resize(out[0, 1].numpy() * 2.0, (192, 96), interpolation=cv2.INTER_LINEAR) * (192 / 96)
    np.testing.assert_allclose(disp, ref, atol=1e-4, rtol=0)
    # The input really is BGR, scaled and normalised as configured.
    x = teacher.preprocess(left, (96, 192))
    np.testing.assert_allclose(x[0, 0], (left[..., 2] / 255 - 0.4) / 0.2, atol=1e-5)


def test_onnx_teacher_scales_disparity_to_the_image_width(stereo_onnx):
    _, two, _ = stereo_onnx
    tex = _texture(np.random.default_rng(4), 96, 192 + 8)
    left, right = tex[:, :192].copy(), tex[:, 8:200].copy()  # one plane 8 px away (4 px at the 96 px wide input)
    disp = ONNXStereoTeacher(two, output_channel=1, scale=1 / 255)(left, right)
    inner = disp[8:-8, 16:-8]  # away from the borders the network cannot match
    assert abs(float(np.median(inner)) - 8.0) < 0.25, np.median(inner)


def test_onnx_teacher_errors_name_the_model(stereo_onnx, tmp_path):
    net, two, _ = stereo_onnx
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        ONNXStereoTeacher(tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match="fixed input of 48 x 96"):
        ONNXStereoTeacher(two, input_size=(64, 128))
    with pytest.raises(ValueError, match="not available"):
        ONNXStereoTeacher(two, providers=["NoSuchExecutionProvider"])
    mono = export(nn.Conv2d(3, 1, 3, padding=1), (torch.zeros(1, 3, 16, 16),), tmp_path / "mono.onnx", ["image"])
    with pytest.raises(ValueError, match="two N x 3 x H x W inputs"):
        ONNXStereoTeacher(mono)
    with pytest.raises(ValueError, match="no disparity channel 5"):
        ONNXStereoTeacher(two, output_channel=5)(*stereo_scene(np.random.default_rng(5), 48, 96)[:2])
    (tmp_path / "broken.onnx").write_bytes(two.read_bytes()[:100])
    with pytest.raises(ValueError, match="broken.onnx"):
        ONNXStereoTeacher(tmp_path / "broken.onnx")


# -- the command on a tree, then training on its output -------------------------------------------
def make_stereo_tree(root: Path, splits: dict[str, int], size: tuple[int, int] = (64, 128), seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """A Cityscapes-layout tree of layered stereo scenes (left, right, labels, camera; no disparity).

    Returns the exact disparity of each frame: ``truth[split][name]``.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    fx = FX_2048 * w / 2048
    truth: dict[str, dict[str, np.ndarray]] = {}
    for split, n in splits.items():
        truth[split] = {}
        for i in range(n):
            name = f"{CITY}_{i:06d}_000019"
            left, right, gt = stereo_scene(rng, h, w)
            ids = np.select([gt == 9, gt == 5], [26, 11], 7).astype(np.uint8)  # car, building, road
            for folder, suffix, data in (
                ("leftImg8bit", "leftImg8bit.png", cv2.cvtColor(left, cv2.COLOR_RGB2BGR)),
                ("rightImg8bit", "rightImg8bit.png", cv2.cvtColor(right, cv2.COLOR_RGB2BGR)),
                ("gtFine", "gtFine_labelIds.png", ids),
            ):
                (root / folder / split / CITY).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / folder / split / CITY / f"{name}_{suffix}"), data)
            cam = root / "camera" / split / CITY / f"{name}_camera.json"
            cam.parent.mkdir(parents=True, exist_ok=True)
            cam.write_text(json.dumps({"extrinsic": {"baseline": BASELINE}, "intrinsic": {"fx": fx, "fy": fx, "u0": w / 2, "v0": h / 2}}))
            truth[split][name] = gt
    return truth


def test_teacher_command_writes_a_resumable_depth_source_that_trains(tmp_path, capsys):
    from mtdense.train import recipe_from_dict, train

    root = tmp_path / "city"
    truth = make_stereo_tree(root, {"train": 4, "val": 2})["train"]
    args = ["data", "teacher", str(root), "--method", "sgbm", "--out", "disparity_sgbm", "--lr-check", "--fill", "background"]
    assert main([*args, "--split", "train"]) == 0
    first = capsys.readouterr().out
    assert "4 computed, 0 kept" in first and "depth_source=disparity_sgbm" in first
    files = sorted((root / "disparity_sgbm" / "train" / CITY).glob("*_disparity.png"))
    assert [f.name.replace("_disparity.png", "") for f in files] == sorted(truth)
    for f in files:
        d = decode_cityscapes_disparity(read_disparity_png(f))
        cover, epe, _ = errors(d, truth[f.name.replace("_disparity.png", "")])
        assert cover > 0.9 and epe < 0.5, (f.name, cover, epe)
    summary = json.loads((root / "disparity_sgbm" / "train_summary.json").read_text())
    assert summary["written"] == 4 and summary["teacher"]["lr_check"] and 0.9 < summary["stats"]["coverage"] <= 1
    assert 2 <= summary["stats"]["mean_px"] <= 9

    # Resumable: a second run keeps the files and only reads them.
    stamps = [f.stat().st_mtime_ns for f in files]
    assert main([*args, "--split", "train"]) == 0
    assert "0 computed, 4 kept" in capsys.readouterr().out
    assert [f.stat().st_mtime_ns for f in files] == stamps
    again = json.loads((root / "disparity_sgbm" / "train_summary.json").read_text())
    assert again["stats"]["coverage"] == summary["stats"]["coverage"]
    assert main([*args, "--split", "val", "--quiet"]) == 0

    # The dataset reads the teacher's maps as depth, with each image's calibration.
    ds = CityscapesDataset(root, "train", depth_source="disparity_sgbm")
    sample = ds[0]
    disp = decode_cityscapes_disparity(read_disparity_png(files[0]))
    np.testing.assert_allclose(sample["depth"], disparity_to_depth(disp, BASELINE, FX_2048 * 128 / 2048), rtol=1e-5)

    recipe = recipe_from_dict({
        "name": "teacher-depth",
        "data": {"root": str(root), "depth_source": "disparity_sgbm", "num_workers": 0},
        "model": {"encoder": "mobilenet_v3_small", "decoder_channels": 16, "pretrained": False},
        "stages": [{"name": "s0", "size": [64, 128], "epochs": 1, "batch_size": 2, "lr": 2e-3}],
        "trainer": {"accelerator": "cpu", "devices": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                    "log_every_n_steps": 1, "progress_bar": False},
    })
    result = train(recipe, tmp_path / "run")
    assert result.stages[0].global_step == 2
    rows = list(csv.DictReader(next((result.stages[0].dir / "csv").rglob("metrics.csv")).open()))
    depth_losses = [float(r["train/raw_depth"]) for r in rows if r.get("train/raw_depth")]
    abs_rel = [float(r["val/abs_rel"]) for r in rows if r.get("val/abs_rel")]
    assert len(depth_losses) == 2 and all(math.isfinite(v) and v > 0 for v in depth_losses)
    assert abs_rel and math.isfinite(abs_rel[0])


def test_teacher_errors_name_the_file_and_the_fix(tmp_path, capsys):
    root = tmp_path / "city"
    make_stereo_tree(root, {"train": 2})
    right = next((root / "rightImg8bit" / "train" / CITY).glob("*.png"))
    right.unlink()
    with pytest.raises(FileNotFoundError, match=f"{right.name}.*rightImg8bit_trainvaltest.zip"):
        generate_teacher_disparity(root, SGBMTeacher(), split="train", out="disparity_sgbm", progress=False)
    with pytest.raises(ValueError, match="Cityscapes download"):
        generate_teacher_disparity(root, SGBMTeacher(), split="train", out="disparity", progress=False)
    assert main(["data", "teacher", str(root), "--method", "onnx"]) == 2
    assert "--method onnx needs --model FILE" in capsys.readouterr().err


def test_a_corrupt_earlier_output_is_reported_not_kept(tmp_path):
    root = tmp_path / "city"
    make_stereo_tree(root, {"train": 2})
    summary = generate_teacher_disparity(root, SGBMTeacher(), split="train", out="disparity_sgbm", progress=False)
    assert summary.out_dir == root / "disparity_sgbm" / "train" and summary.written == 2
    bad = sorted(summary.out_dir.rglob("*_disparity.png"))[0]
    bad.write_bytes(bad.read_bytes()[:50])
    again = generate_teacher_disparity(root, SGBMTeacher(), split="train", out="disparity_sgbm", progress=False)
    assert again.skipped == 1 and len(again.failed) == 1
    assert re.search(f"{bad.name}.*--overwrite", next(iter(again.failed.values())))
    redo = generate_teacher_disparity(root, SGBMTeacher(), split="train", out="disparity_sgbm", overwrite=True, progress=False)
    assert redo.written == 2 and redo.stats["coverage"] > 0.5
    assert "coverage" in redo.format() and not list(summary.out_dir.rglob(".*.part*"))


def test_teacher_command_runs_an_onnx_network(tmp_path, stereo_onnx, capsys):
    from mtdense.data.image import read_image

    _, two, _ = stereo_onnx
    root = tmp_path / "city"
    make_stereo_tree(root, {"train": 2})
    argv = ["data", "teacher", str(root), "--method", "onnx", "--model", str(two), "--output-channel", "1",
            "--scale", str(1 / 255), "--mean", "0.4", "0.5", "0.6", "--std", "0.2", "0.25", "0.3", "--split", "train"]
    assert main(argv) == 0
    assert "2 computed" in capsys.readouterr().out
    teacher = ONNXStereoTeacher(two, output_channel=1, scale=1 / 255, mean=[0.4, 0.5, 0.6], std=[0.2, 0.25, 0.3])
    for png in sorted((root / "disparity_onnx" / "train").rglob("*_disparity.png")):
        name = png.name.replace("_disparity.png", "")
        left = read_image(root / "leftImg8bit" / "train" / CITY / f"{name}_leftImg8bit.png", colour_only=True)
        right = read_image(root / "rightImg8bit" / "train" / CITY / f"{name}_rightImg8bit.png", colour_only=True)
        expected = teacher(left, right)
        written = decode_cityscapes_disparity(read_disparity_png(png))
        valid = expected > 0
        assert valid.mean() > 0.9
        np.testing.assert_allclose(written[valid], expected[valid], atol=0.5 / 256 + 1e-6)  # the PNG's 1/256 px step
    assert main([*argv, "--lr-check"]) == 2
    assert "SGBM options" in capsys.readouterr().err
