"""Predictor (paths, arrays, batches; shapes and units) and ``mtdense predict`` (images, videos)."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import mtdense
from mtdense.cli import main
from mtdense.data.labels import train_ids_to_label_ids
from mtdense.data.depth import depth_to_png16
from mtdense.data.image import IMAGENET_MEAN, IMAGENET_STD, read_image
from mtdense.inference import Prediction, Predictor


def rgb(h=64, w=128, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_rgb(path: Path, image: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path


def test_single_array_shapes_and_units(model):
    pred = Predictor(model).predict(rgb())
    assert isinstance(pred, Prediction)
    assert pred.seg.shape == (64, 128) and pred.seg.dtype == np.uint8
    assert pred.seg.max() < 19
    assert pred.depth.shape == (64, 128) and pred.depth.dtype == np.float32
    assert (pred.depth > 0).all() and np.isfinite(pred.depth).all()


def test_outputs_are_argmax_and_metres_of_the_network(model):
    image = rgb()
    pred = Predictor(model).predict(image)
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    with torch.no_grad():
        out = model(x)
    np.testing.assert_array_equal(pred.seg, out["seg"].argmax(1)[0].numpy())
    np.testing.assert_allclose(pred.depth, torch.exp(5 * out["depth"][0, 0]).numpy(), rtol=1e-5)


def test_path_and_array_give_the_same(model, tmp_path):
    image = rgb()
    path = write_rgb(tmp_path / "a.png", image)
    p = Predictor(model)
    a, b = p.predict(path), p.predict(image)
    np.testing.assert_array_equal(a.seg, b.seg)
    np.testing.assert_array_equal(a.depth, b.depth)
    np.testing.assert_array_equal(read_image(path), image)


def test_batches_keep_order_and_sizes(model):
    p = Predictor(model)
    images = [rgb(64, 128, 1), rgb(96, 64, 2), rgb(64, 128, 3)]
    preds = p.predict(images)
    assert [q.seg.shape for q in preds] == [(64, 128), (96, 64), (64, 128)]
    for image, q in zip(images, preds):  # batching must not change any output
        single = p.predict(image)
        np.testing.assert_array_equal(single.seg, q.seg)
        np.testing.assert_allclose(single.depth, q.depth, rtol=1e-5)
    stacked = p.predict(np.stack([images[0], images[2]]))
    assert len(stacked) == 2 and stacked[1].seg.shape == (64, 128)
    np.testing.assert_array_equal(stacked[1].seg, preds[2].seg)


def test_size_resizes_in_and_back(model):
    pred = Predictor(model, size=(64, 96)).predict(rgb(100, 150))
    assert pred.seg.shape == (100, 150) and pred.depth.shape == (100, 150)


def test_argmax_labels_are_torch_argmax_ties_included():
    from mtdense.inference import argmax_labels

    logits = torch.randn(2, 19, 24, 40)
    logits[:, 7] = logits[:, 3]  # ties go to the lower class, as argmax gives them
    logits[0, :, 0, 0] = 1.0
    got = argmax_labels(logits)
    assert got.dtype == torch.uint8 and got.shape == (2, 24, 40)
    torch.testing.assert_close(got, logits.argmax(1).to(torch.uint8), rtol=0, atol=0)


def test_resized_labels_are_the_argmax_of_bilinear_logits(model):
    """Resizing one class at a time gives the labels of resizing all logits, then the argmax."""
    import torch.nn.functional as F

    p = Predictor(model, size=(64, 96))
    image = rgb(100, 150, seed=4)
    x = p.preprocess([image])
    with torch.no_grad():
        out = model(x)
    want_seg = F.interpolate(out["seg"], size=(100, 150), mode="bilinear", align_corners=False).argmax(1)[0].numpy()
    want_depth = torch.exp(5 * F.interpolate(out["depth"], size=(100, 150), mode="bilinear", align_corners=False))[0, 0]
    pred = p.predict(image)
    np.testing.assert_array_equal(pred.seg, want_seg)
    np.testing.assert_allclose(pred.depth, want_depth.numpy(), rtol=1e-5)


def test_max_pixels_refuses_arrays_and_files_by_name(model, tmp_path):
    p = Predictor(model, max_pixels=64 * 100)
    with pytest.raises(ValueError, match=r"128 x 64 = 0.00819 MP is over --max-pixels 0.0064 MP"):
        p.predict(rgb(64, 128))
    path = write_rgb(tmp_path / "wide.png", rgb(64, 128))
    with pytest.raises(mtdense.inference.ImageTooLarge, match="wide.png: 128 x 64"):
        p.predict(path)
    assert p.predict(rgb(64, 96)).seg.shape == (64, 96)
    assert Predictor(model, max_pixels=0).predict(path).seg.shape == (64, 128)
    assert Predictor(model).max_pixels == mtdense.inference.DEFAULT_MAX_PIXELS == 50_000_000
    with pytest.raises(ValueError, match="max_pixels"):
        Predictor(model, max_pixels=-1)


def test_channels_last_matches(model):
    image = rgb()
    a, b = Predictor(model).predict(image), Predictor(model, channels_last=True).predict(image)
    assert (a.seg == b.seg).mean() > 0.999
    np.testing.assert_allclose(a.depth, b.depth, rtol=1e-4)


def test_bad_inputs_raise_with_the_reason(model, tmp_path):
    p = Predictor(model)
    with pytest.raises(ValueError, match="uint8"):
        p.predict(rgb().astype(np.float32))
    with pytest.raises(ValueError, match="H x W x 3"):
        p.predict(np.zeros((64, 128), np.uint8))
    with pytest.raises(FileNotFoundError, match="nope.png"):
        p.predict(tmp_path / "nope.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(ValueError, match="bad.png"):
        p.predict(bad)
    with pytest.raises(ValueError, match="size"):
        Predictor(model, size=(16, 16))


def test_depth_png16_and_label_ids():
    depth = np.array([[0.0, 1.0], [10.5, 300.0]], np.float32)
    png = depth_to_png16(depth)
    assert png.dtype == np.uint16
    np.testing.assert_array_equal(png, [[0, 256], [2688, 65535]])
    seg = np.array([[0, 18], [5, 13]], np.uint8)
    np.testing.assert_array_equal(Prediction(seg, depth).label_ids(), train_ids_to_label_ids(seg))
    from mtdense.data.description import DatasetInfo

    other = Prediction(seg, depth, info=DatasetInfo(classes=("floor", "wall")))
    assert other.classes == ("floor", "wall")
    with pytest.raises(ValueError, match="only for the 19 Cityscapes classes; this model's classes are floor, wall"):
        other.label_ids()


def test_predictor_follows_the_checkpoints_dataset_info(tmp_path):
    from mtdense.data.description import DatasetInfo
    from mtdense.outputs import image_files

    info = DatasetInfo(classes=("floor", "wall", "person"), colors=[[200, 30, 30], [30, 200, 30], [30, 30, 200]],
                       tasks=("seg", "depth"))
    net = mtdense.create_model(tasks={"seg": 3, "depth": 1}, decoder_channels=16).eval()
    net.dataset_info = info.to_dict()
    path = mtdense.save_checkpoint(net, tmp_path / "three.pth")
    for source in (net, path):
        predictor = Predictor(source)
        assert predictor.info == info
        pred = predictor.predict(rgb())
        assert pred.info == info and pred.seg.max() < 3
    files = image_files(rgb(), pred)
    assert set(files) == {"trainIds", "depth", "panel"}  # no Cityscapes label ids
    assert Predictor(mtdense.create_model(decoder_channels=16).eval()).info.classes[0] == "road"  # no description: Cityscapes
    bare = mtdense.create_model(tasks={"seg": 4, "depth": 1}, decoder_channels=16).eval()
    assert Predictor(bare).info.classes == ("class 0", "class 1", "class 2", "class 3")


def test_predict_cli_images_folder_and_corrupt_file(ckpt, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    write_rgb(src / "one.png", rgb(64, 128, 1))
    write_rgb(src / "two.jpg", rgb(64, 96, 2))
    (src / "broken.png").write_bytes(b"not an image at all")
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(src), "--out", str(out)]) == 1  # one input failed, the others written
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "skipped" in captured.err
    assert "2 input(s) written" in captured.out and "1 skipped" in captured.out
    for stem, (h, w) in (("one", (64, 128)), ("two", (64, 96))):
        panel = cv2.imread(str(out / f"{stem}_panel.png"))
        assert panel.shape[0] == h and panel.shape[1] > 3 * w
        train = cv2.imread(str(out / f"{stem}_trainIds.png"), cv2.IMREAD_UNCHANGED)
        labels = cv2.imread(str(out / f"{stem}_labelIds.png"), cv2.IMREAD_UNCHANGED)
        depth = cv2.imread(str(out / f"{stem}_depth.png"), cv2.IMREAD_UNCHANGED)
        assert train.shape == labels.shape == depth.shape == (h, w)
        assert depth.dtype == np.uint16 and train.max() < 19
        np.testing.assert_array_equal(labels, train_ids_to_label_ids(train))
    # the raw PNGs hold exactly the Predictor's outputs
    pred = Predictor(ckpt).predict(src / "one.png")
    np.testing.assert_array_equal(cv2.imread(str(out / "one_trainIds.png"), cv2.IMREAD_UNCHANGED), pred.seg)
    np.testing.assert_array_equal(cv2.imread(str(out / "one_depth.png"), cv2.IMREAD_UNCHANGED), pred.depth_png16())


def test_predict_cli_exit_codes(ckpt, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    assert main(["predict", str(ckpt), str(bad), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert f"skipped {bad}:" in err and f"skipped {tmp_path / 'missing.png'}:" in err
    good = write_rgb(tmp_path / "good.png", rgb())
    assert main(["predict", str(ckpt), str(good), "--out", str(tmp_path / "o")]) == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", str(ckpt), str(empty), "--out", str(tmp_path / "o")]) == 2  # nothing to do: refused
    assert "no images" in capsys.readouterr().err


def test_predict_cli_video(ckpt, tmp_path, capsys):
    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 64))
    assert writer.isOpened()
    for i in range(5):
        writer.write(cv2.cvtColor(rgb(64, 128, i), cv2.COLOR_RGB2BGR))
    writer.release()
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(video), "--out", str(out)]) == 0
    assert "5 frames" in capsys.readouterr().out
    cap = cv2.VideoCapture(str(out / "drive_annotated.mp4"))
    assert cap.isOpened()
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames += 1
        assert frame.shape[0] == 64 and frame.shape[1] > 3 * 128
    cap.release()
    assert frames == 5


def test_predict_cli_backend_runs_the_checkpoint_on_that_runtime(model, ckpt, tmp_path):
    image = rgb(64, 128, seed=5)
    write_rgb(tmp_path / "street.png", image)
    out = tmp_path / "ort"
    assert main(["predict", str(ckpt), str(tmp_path / "street.png"), "--out", str(out), "--size", "64", "128", "--backend", "ort"]) == 0
    want = Predictor(model, size=(64, 128)).predict(image)
    got = cv2.imread(str(out / "street_trainIds.png"), cv2.IMREAD_UNCHANGED)
    assert (got == want.seg).mean() >= 0.999
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    with pytest.raises(SystemExit):  # argparse lists the valid names
        main(["predict", str(ckpt), str(tmp_path / "street.png"), "--out", str(out), "--backend", "nope"])
    assert Predictor(ckpt, backend="ort", size=(64, 128)).model.name == "ort"
