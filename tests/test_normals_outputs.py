"""A three-task model (seg + depth + normals) on a small folder tree with normals: its predictions,
files and panels, ``evaluate`` (figures equal to a hand computation, a frame without normals left
out), ``analyze`` pictures, and the multi-task Delta_m of ``evaluate --baseline``."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import mtdense
from mtdense.cli import main
from mtdense.data.normals import decode_normals, encode_normals

CLASSES = ["floor", "wall", "person"]
H, W = 64, 96


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """``val``: three frames with masks and depth; normals for the first two (the second with an
    unlabelled band), none for the third."""
    root = tmp_path_factory.mktemp("normals_tree") / "data"
    rng = np.random.default_rng(0)
    (root).mkdir(parents=True)
    (root / "dataset.yaml").write_text(f"classes: {CLASSES}\n")
    for i in range(3):
        mask = rng.integers(0, 3, (H, W)).astype(np.uint8)
        image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        depth = rng.integers(256, 20 * 256, (H, W)).astype(np.uint16)
        files = {"images": cv2.cvtColor(image, cv2.COLOR_RGB2BGR), "masks": mask, "depth": depth}
        if i < 2:
            rgb = encode_normals(_unit(rng.normal(size=(H, W, 3))))
            if i == 1:
                rgb[:10] = 0  # no normal there
            files["normals"] = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        for folder, data in files.items():
            d = root / folder / "val"
            d.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(d / f"f{i}.png"), data)
    return root


@pytest.fixture(scope="module")
def ckpt(tree, tmp_path_factory) -> Path:
    from mtdense.data.folder import read_folder_info

    torch.manual_seed(0)
    model = mtdense.create_model(tasks={"seg": 3, "depth": 1, "normals": 3}, decoder_channels=16).eval()
    model.dataset_info = read_folder_info(tree).to_dict()
    return mtdense.save_checkpoint(model, tmp_path_factory.mktemp("normals_model") / "model.pth")


def _angles(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    valid = np.abs(gt).sum(-1) > 0
    p, g = pred[valid].astype(np.float64), gt[valid].astype(np.float64)
    cos = (p * g).sum(-1) / np.linalg.norm(p, axis=-1) / np.linalg.norm(g, axis=-1)
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def test_prediction_files_and_panel_hold_the_normals(tree, ckpt, tmp_path):
    from mtdense.inference import Predictor
    from mtdense.outputs import write_image_outputs

    predictor = Predictor(ckpt)
    image = tree / "images" / "val" / "f0.png"
    pred = predictor.predict(str(image))
    assert pred.normals.shape == (H, W, 3) and pred.normals.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(pred.normals, axis=-1), 1.0, rtol=1e-5)
    # at another network size the normals come back at the image's size, unit length again
    small = Predictor(ckpt, size=(32, 64)).predict(str(image))
    assert small.normals.shape == (H, W, 3)
    np.testing.assert_allclose(np.linalg.norm(small.normals, axis=-1), 1.0, rtol=1e-5)
    write_image_outputs(predictor, image, tmp_path, "f0")
    png = cv2.cvtColor(cv2.imread(str(tmp_path / "f0_normals.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(png, encode_normals(pred.normals))
    assert _angles(decode_normals(png), pred.normals).max() < 0.5  # the 8-bit quantisation
    panel = cv2.cvtColor(cv2.imread(str(tmp_path / "f0_panel.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(panel[:, -W:], encode_normals(pred.normals))  # the last tile
    assert panel.shape[1] > 4 * W
    # a two-task model's prediction has none and writes none
    two = mtdense.create_model(tasks={"seg": 3, "depth": 1}, decoder_channels=16).eval()
    two_pred = Predictor(two).predict(str(image))
    assert two_pred.normals is None
    with pytest.raises(ValueError, match="no normals head"):
        two_pred.normals_rgb()


def test_evaluate_scores_normals_by_hand_and_saves_them(tree, ckpt, tmp_path):
    from mtdense.data.folder import read_normals_png
    from mtdense.inference import Predictor

    out = tmp_path / "eval"
    assert main(["evaluate", str(ckpt), "--data", str(tree), "--out", str(out), "--workers", "0",
                 "--save-predictions"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    predictor = Predictor(ckpt)
    errors = []
    for i in range(2):  # f2 has no normals: it does not count
        pred = predictor.predict(str(tree / "images" / "val" / f"f{i}.png"))
        errors.append(_angles(pred.normals, read_normals_png(tree / "normals" / "val" / f"f{i}.png")))
    err = np.concatenate(errors)
    assert err.size == 2 * H * W - 10 * W
    assert metrics["normal_mean"] == pytest.approx(err.mean(), rel=1e-5)
    assert metrics["normal_median"] == pytest.approx(np.median(err), abs=0.011)
    for key, limit in (("normal_11_25", 11.25), ("normal_22_5", 22.5), ("normal_30", 30.0)):
        assert metrics[key] == pytest.approx((err < limit).mean(), abs=1 / err.size)
    assert metrics["num_images"] == 3 and metrics["miou"] is not None and metrics["abs_rel"] is not None
    settings = {k: metrics["evaluation"][k] for k in ("format", "split", "size", "garg_crop", "max_depth_m")}
    assert settings == {"format": "folder", "split": "val", "size": None, "garg_crop": False, "max_depth_m": None}
    saved = out / "predictions" / "normals" / "f0_pred_normals.png"
    pred0 = predictor.predict(str(tree / "images" / "val" / "f0.png"))
    assert _angles(read_normals_png(saved), pred0.normals).max() < 0.5


def test_analyze_draws_the_normals(tree, ckpt, tmp_path):
    out = tmp_path / "analysis"
    assert main(["analyze", str(ckpt), "--data", str(tree), "--out", str(out)]) == 0
    for name in ("normals_error.png", "normals_examples.png"):
        picture = cv2.imread(str(out / name))
        assert picture is not None and picture.shape[0] > 100, name
    data = json.loads((out / "metrics.json").read_text())
    evaluated = mtdense.metrics.evaluate_split(ckpt, tree, num_workers=0, progress=False)
    assert data["normals"]["normal_mean"] == pytest.approx(evaluated["normal_mean"], rel=1e-5)
    histogram = data["normals_error_histogram"]
    assert len(histogram["edges_deg"]) == 181 and sum(histogram["pixels"]) == 2 * H * W - 10 * W


def test_evaluate_baseline_prints_and_records_delta_m(tree, ckpt, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["evaluate", str(ckpt), "--data", str(tree), "--out", str(out), "--workers", "0"]) == 0
    mt = json.loads((out / "metrics.json").read_text())
    # single-task figures: seg better than the multi-task model, depth worse, normals one figure
    seg = tmp_path / "seg.json"
    seg.write_text(json.dumps({"miou": mt["miou"] * 1.25, "pixel_acc": mt["pixel_acc"], "per_class_iou": {}}))
    depth = tmp_path / "depth.json"
    depth.write_text(json.dumps({"abs_rel": mt["abs_rel"] * 2.0, "num_images": 3}))
    normals = tmp_path / "normals.json"
    normals.write_text(json.dumps({"normal_mean": mt["normal_mean"] / 2.0}))
    capsys.readouterr()
    assert main(["evaluate", str(ckpt), "--data", str(tree), "--out", str(out), "--workers", "0",
                 "--baseline", str(seg), str(depth), str(normals)]) == 0
    printed = capsys.readouterr().out
    # by hand: (+1) * (M - B) / B for higher-is-better, (-1) * (M - B) / B for lower-is-better
    figures = {"miou": (1 / 1.25 - 1) * 100, "pixel_acc": 0.0, "abs_rel": -(0.5 - 1) * 100, "normal_mean": -(2 - 1) * 100}
    mtan = np.mean(list(figures.values()))
    libmtl = np.mean([(figures["miou"] + figures["pixel_acc"]) / 2, figures["abs_rel"], figures["normal_mean"]])
    delta = json.loads((out / "metrics.json").read_text())["delta_m"]
    assert delta["delta_m_mtan"] == pytest.approx(mtan) and delta["delta_m_libmtl"] == pytest.approx(libmtl)
    assert delta["per_metric"] == pytest.approx(figures)
    assert delta["baseline"] == [str(seg), str(depth), str(normals)]
    assert f"{mtan:+.2f}%" in printed and f"{libmtl:+.2f}%" in printed and "MTAN" in printed and "LibMTL" in printed


@pytest.mark.parametrize("content, message", [
    (None, r"missing.json: no such baseline file"),
    ("{not json", r"bad.json: not readable JSON"),
    ("[1, 2]", r"bad.json: holds a JSON list, not an object of figures"),
    ('{"miou": "high"}', r"bad.json: 'miou' is 'high', not a finite number"),
    ('{"miou": null}', r"bad.json: 'miou' is None, not a finite number"),
    ('{"num_images": 3}', r"bad.json: no single-task figure in it"),
    ('{"miou": 0.0}', r"the baseline's 'miou' is 0: Delta_m divides by it"),
])
def test_bad_baselines_are_refused_naming_the_file(tree, ckpt, tmp_path, capsys, content, message):
    path = tmp_path / ("missing.json" if content is None else "bad.json")
    if content is not None:
        path.write_text(content)
    assert main(["evaluate", str(ckpt), "--data", str(tree), "--workers", "0", "--baseline", str(path)]) != 0
    assert __import__("re").search(message, capsys.readouterr().err)


def test_baseline_files_that_disagree_or_share_nothing(tmp_path):
    from mtdense.metrics import multi_task_delta, read_baseline

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text('{"miou": 0.4}')
    b.write_text('{"miou": 0.5}')
    with pytest.raises(ValueError, match=r"b.json: 'miou' is 0.5 here but 0.4 in .*a.json; give each single-task figure once"):
        read_baseline([a, b])
    with pytest.raises(ValueError, match="have none in common"):
        multi_task_delta({"abs_rel": 0.2}, read_baseline(a))
    with pytest.raises(ValueError, match="'miou' has no value for this model"):
        multi_task_delta({"miou": None}, read_baseline(a))


def test_video_panels_take_the_normals(tree, ckpt, tmp_path):
    from mtdense.inference import Predictor
    from mtdense.outputs import VideoSink

    pred = Predictor(ckpt).predict(str(tree / "images" / "val" / "f0.png"))
    rgb = cv2.cvtColor(cv2.imread(str(tree / "images" / "val" / "f0.png")), cv2.COLOR_BGR2RGB)
    widths = {}
    for name, normals in (("plain", None), ("normals", pred.normals)):
        sink = VideoSink(tmp_path / f"{name}.mp4", fps=5)
        sink.write(rgb, pred.seg, pred.depth, normals=normals)
        sink.close()
        video = cv2.VideoCapture(str(tmp_path / f"{name}.mp4"))
        widths[name] = int(video.get(cv2.CAP_PROP_FRAME_WIDTH))
        video.release()
    assert widths["normals"] == widths["plain"] + W


def test_predict_command_writes_normals_for_images_and_videos(tree, ckpt, tmp_path):
    """``mtdense predict`` (the overlapped pipeline) writes each image's normals PNG, equal to
    Predictor.predict's, and a video's panels carry the normals tile."""
    from mtdense.inference import Predictor

    out = tmp_path / "pred"
    assert main(["predict", str(ckpt), str(tree / "images" / "val"), "--out", str(out)]) == 0
    predictor = Predictor(ckpt)
    for i in range(3):
        pred = predictor.predict(str(tree / "images" / "val" / f"f{i}.png"))
        png = cv2.cvtColor(cv2.imread(str(out / f"f{i}_normals.png")), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(png, encode_normals(pred.normals))
    clip = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"mp4v"), 5, (W, H))
    for i in range(3):
        writer.write(cv2.imread(str(tree / "images" / "val" / f"f{i}.png")))
    writer.release()
    assert main(["predict", str(ckpt), str(clip), "--out", str(tmp_path / "video")]) == 0
    annotated = sorted((tmp_path / "video").glob("*.mp4"))
    assert len(annotated) == 1
    video = cv2.VideoCapture(str(annotated[0]))
    width, frames = int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_COUNT))
    video.release()
    assert frames == 3 and width > 4 * W  # image, overlay, depth, scale bar and the normals tile
