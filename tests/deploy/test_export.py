"""Export: the inference rewrite is exact, ONNX Runtime reproduces PyTorch, int8 runs, safetensors."""

import re

import numpy as np
import pytest
import torch
from torch import nn

import mtdense
from mtdense.cli import main
from mtdense.deploy.int8 import preprocess_images, quantize_onnx
from mtdense.deploy.onnx import OnnxModel, deploy_groups, export_onnx, ort_session, run_onnx
from mtdense.deploy.parity import Parity, compare_outputs, runtime_parity
from mtdense.deploy.rewrite import DeployNet, SeparableMaxPool2d, SplitConv3x3, TapConv3x3, deploy_head_conv, fold_batchnorm


def onnx_parity(path, model, images):
    return runtime_parity(OnnxModel(path), model, images)

# Parity tolerance for fp32 ONNX Runtime vs fp32 PyTorch: float rounding only (different
# convolution algorithms and summation orders), so logits within 1e-4 and depth within 1e-4
# relative; argmax agreement may differ only at exact ties, i.e. >= 99.9% of pixels.
LOGIT_TOL = 1e-4
DEPTH_REL_TOL = 1e-4


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = mtdense.create_model(decoder_channels=16)
    # non-trivial BatchNorm statistics, so folding them is actually tested
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.5, 0.5)
            mod.running_var.uniform_(0.5, 2.0)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.2, 0.2)
    return m.eval()


@pytest.fixture(scope="module")
def onnx_path(model, tmp_path_factory):
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "tiny.onnx", size=(64, 128))


def images(n=2, h=96, w=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_tap_conv_is_a_3x3_conv():
    conv = nn.Conv2d(8, 3, 3, padding=1, bias=True)
    x = torch.randn(2, 8, 13, 17)
    torch.testing.assert_close(TapConv3x3(conv)(x), conv(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="3x3"):
        TapConv3x3(nn.Conv2d(8, 3, 3, padding=0))


def test_head_conv_rewrites_are_3x3_convs():
    x = torch.randn(1, 8, 11, 9)
    seg = nn.Conv2d(8, 19, 3, padding=1)
    split = deploy_head_conv(seg)
    assert isinstance(split, SplitConv3x3)  # 16 direct + 3 by taps
    assert split.direct.out_channels == 16 and split.taps.proj.out_channels == 27
    torch.testing.assert_close(split(x), seg(x), rtol=1e-5, atol=1e-5)
    assert isinstance(deploy_head_conv(nn.Conv2d(8, 1, 3, padding=1)), TapConv3x3)
    for keep in (nn.Conv2d(8, 32, 3, padding=1), nn.Conv2d(8, 19, 1), nn.Conv2d(8, 19, 3, padding=1, stride=2)):
        assert deploy_head_conv(keep) is keep


def test_fold_batchnorm_is_exact(model):
    x = torch.randn(1, 3, 64, 96)
    folded = fold_batchnorm(__import__("copy").deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        a, b = model(x), folded(x)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="eval"):
        fold_batchnorm(mtdense.create_model(decoder_channels=16).train())


def test_deploy_net_equals_the_model(model):
    net = DeployNet(model)
    assert net.task_names == ["seg", "depth"]
    assert isinstance(net.heads["depth"][-1], TapConv3x3)  # 1 output channel: taps pay off
    assert isinstance(net.heads["seg"][-1], SplitConv3x3)  # 19 = 16 + 3
    x = torch.randn(2, 3, 75, 111)  # odd size on purpose
    with torch.no_grad():
        ref, out = model(x), net(x)
    for name, o in zip(net.task_names, out):
        torch.testing.assert_close(o, ref[name], rtol=1e-4, atol=1e-5)


def test_separable_max_pool_is_bit_exact():
    x = torch.randn(2, 8, 13, 21)
    x[0, 0, :3] = -torch.inf  # padding must never win, even against -inf
    assert torch.equal(SeparableMaxPool2d(5)(x), nn.MaxPool2d(5, stride=1, padding=2)(x))
    assert torch.equal(SeparableMaxPool2d(3)(x), nn.MaxPool2d(3, stride=1, padding=1)(x))
    assert isinstance(SeparableMaxPool2d.replacing(nn.MaxPool2d(5, 1, 2)), SeparableMaxPool2d)
    for keep in (nn.MaxPool2d(5, 2, 2), nn.MaxPool2d(4, 1, 2), nn.MaxPool2d(5, 1, 0), nn.AvgPool2d(5, 1, 2)):
        assert SeparableMaxPool2d.replacing(keep) is keep


def test_grouped_finest_level_equals_the_model(model):
    """Channel groups at the finest level only reorder the heads' sums: same outputs."""
    wide = mtdense.create_model(decoder_channels=64).eval()
    auto = DeployNet(wide)
    assert auto.groups == 2  # 32-channel groups
    assert DeployNet(model).groups == 1  # 16 channels: too narrow to split
    assert all(isinstance(c.pool, SeparableMaxPool2d) for c in auto.decoder.crp)
    x = torch.randn(2, 3, 75, 111)
    for m, net in ((wide, auto), (model, DeployNet(model, groups=4)), (model, DeployNet(model, groups=16))):
        with torch.no_grad():
            ref, out = m(x), net(x)
        for name, o in zip(net.task_names, out):
            torch.testing.assert_close(o, ref[name], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="divide"):
        DeployNet(model, groups=3)
    odd = mtdense.create_model(decoder_channels=16).eval()
    odd.heads["depth"] = nn.Sequential(nn.Conv2d(16, 1, 1))
    assert DeployNet(odd).groups == 1
    with pytest.raises(ValueError, match="depthwise 1x1 -> ReLU6 -> 3x3"):
        DeployNet(odd, groups=2)


def test_grouped_export_parity_and_int8_needs_the_whole_graph(model, onnx_path, tmp_path):
    path = export_onnx(model, tmp_path / "grouped.onnx", size=(64, 128), groups=2)  # dynamic batch, H, W
    assert deploy_groups(path) == 2 and deploy_groups(onnx_path) == 1  # 16 channels: whole
    parity = onnx_parity(path, model, torch.randn(2, 3, 96, 160))  # dynamic size and batch
    assert parity.logits_max_abs < LOGIT_TOL and parity.depth_max_rel < DEPTH_REL_TOL
    with pytest.raises(ValueError, match="groups=1"):
        quantize_onnx(path, tmp_path / "q.onnx", list(images(1, 64, 128)), size=(64, 128))


def test_onnx_parity_at_another_size_and_batch(model, onnx_path):
    """The export traced at 64x128, batch 1 must reproduce PyTorch at 96x160, batch 2."""
    x = preprocess_images(list(images()), (96, 160))
    parity = onnx_parity(onnx_path, model, x)
    assert isinstance(parity, Parity) and parity.pixels == 2 * 96 * 160
    assert parity.logits_max_abs < LOGIT_TOL
    assert parity.depth_max_rel < DEPTH_REL_TOL
    assert parity.seg_agreement >= 0.999
    sess = ort_session(onnx_path)
    assert [o.name for o in sess.get_outputs()] == ["seg", "depth"]
    out = run_onnx(sess, x)
    assert out["seg"].shape == (2, 19, 96, 160) and out["depth"].shape == (2, 1, 96, 160)


def test_plain_export_also_matches(model, tmp_path):
    path = export_onnx(model, tmp_path / "plain.onnx", size=(64, 128), deploy=False, dynamic=False)
    parity = onnx_parity(path, model, torch.randn(1, 3, 64, 128))
    assert parity.logits_max_abs < LOGIT_TOL and parity.depth_max_rel < DEPTH_REL_TOL


def test_int8_export_runs_and_reports_agreement(model, onnx_path, tmp_path):
    calib = list(images(3, 64, 128, seed=1))
    q = quantize_onnx(onnx_path, tmp_path / "tiny.int8.onnx", calib, size=(64, 128))
    import onnx

    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    x = preprocess_images(calib, (64, 128))
    ref = run_onnx(ort_session(onnx_path), x)
    parity = compare_outputs(run_onnx(ort_session(q), x), ref)
    assert 0.0 <= parity.seg_agreement <= 1.0
    assert np.isfinite(parity.depth_mean_rel) and parity.depth_mean_rel >= 0
    assert "agreement" in str(parity)


def test_compare_outputs_counts_disagreement():
    seg = np.zeros((1, 3, 2, 2))
    seg[0, 0] = 1.0
    other = seg.copy()
    other[0, 1, 0, 0] = 2.0  # one of 4 pixels changes class
    depth = np.zeros((1, 1, 2, 2))  # exp(0) = 1 m
    p = compare_outputs({"seg": other, "depth": depth + np.log(1.1) / 5}, {"seg": seg, "depth": depth})
    assert p.seg_agreement == pytest.approx(0.75)
    assert p.depth_mean_rel == pytest.approx(0.1)
    assert p.depth_max_abs_m == pytest.approx(0.1)


def test_export_cli_safetensors_round_trip(model, tmp_path, capsys):
    ckpt = mtdense.save_checkpoint(model, tmp_path / "m.pth")
    out = tmp_path / "m.safetensors"
    assert main(["export", str(ckpt), "--format", "safetensors", "--out", str(out)]) == 0
    back = mtdense.load_model(out)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(back(x)["depth"], model(x)["depth"])


def test_export_cli_needs_calibration_for_int8(model, tmp_path):
    ckpt = mtdense.save_checkpoint(model, tmp_path / "m.pth")
    assert main(["export", str(ckpt), "--int8", "--out", str(tmp_path / "m.onnx")]) == 2


@pytest.mark.slow
def test_export_cli_onnx_int8(model, tmp_path, capsys):
    import cv2

    ckpt = mtdense.save_checkpoint(model, tmp_path / "m.pth")
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, im in enumerate(images(3, 64, 128)):
        cv2.imwrite(str(calib / f"{i}.png"), im)
    out = tmp_path / "m.onnx"
    argv = ["export", str(ckpt), "--out", str(out), "--size", "64", "128", "--static", "--int8", "--calibration", str(calib)]
    assert main(argv) == 0  # --static: the quicker export
    text = capsys.readouterr().out
    assert "ONNX Runtime fp32 vs PyTorch fp32" in text and "int8 vs fp32" in text and "agreement" in text
    assert out.is_file() and (tmp_path / "m.int8.onnx").is_file()


# -- OpenVINO ---------------------------------------------------------------------------------
# OpenVINO fp32 (f32 inference precision, fp32 weights) vs PyTorch fp32: float rounding only, as
# for ONNX Runtime, so the same logit / relative depth tolerances, and the encoded depth output
# (log(depth_m) / 5) within 1e-5 absolute, i.e. metres within 5e-5 relative.
DEPTH_ENC_ABS_TOL = 1e-5


def test_openvino_ir_reproduces_pytorch(model, onnx_path, tmp_path):
    """IR converted from the dynamic export (traced at 64x128, batch 1), run at 96x160, batch 2."""
    ov = pytest.importorskip("openvino")
    from mtdense.deploy.openvino import OpenVINORunner, export_openvino

    xml = export_openvino(onnx_path, tmp_path / "tiny.xml")
    assert xml == tmp_path / "tiny.xml" and xml.is_file() and (tmp_path / "tiny.bin").is_file()
    ir = ov.Core().read_model(xml)
    # fp32 weights: save_model would compress them to fp16 by default
    consts = [op for op in ir.get_ops() if op.get_type_name() == "Constant"]
    assert consts and not [op for op in consts if op.get_element_type() in (ov.Type.f16, ov.Type.bf16)]
    assert ir.get_rt_info(["mtdense", "graph"]).astype(str) == "DeployNet"  # the ONNX metadata carried over

    x = preprocess_images(list(images()), (96, 160))
    runner = OpenVINORunner(xml, threads=1)
    assert runner.output_names == ["seg", "depth"]
    assert runner.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    out = {k: v.numpy() for k, v in runner(torch.from_numpy(x)).items()}
    assert out["seg"].shape == (2, 19, 96, 160) and out["depth"].shape == (2, 1, 96, 160)
    with torch.no_grad():
        ref = {k: v.numpy() for k, v in model(torch.from_numpy(x)).items()}
    parity = compare_outputs(out, ref)
    assert parity.seg_agreement >= 0.999
    assert parity.logits_max_abs < LOGIT_TOL
    assert parity.depth_max_rel < DEPTH_REL_TOL
    assert float(np.abs(out["depth"] - ref["depth"]).max()) < DEPTH_ENC_ABS_TOL
    # the parity helper (one image per run) agrees, and the request is reused across calls
    per_image = runtime_parity(runner, model, x)
    assert per_image.pixels == 2 * 96 * 160 and per_image.seg_agreement >= 0.999 and per_image.depth_max_rel < DEPTH_REL_TOL
    again = {k: v.numpy() for k, v in runner(torch.from_numpy(x)).items()}
    np.testing.assert_array_equal(again["depth"], out["depth"])


def test_openvino_missing_says_how_to_install(tmp_path, monkeypatch):
    import sys

    from mtdense.deploy.openvino import OpenVINORunner, export_openvino, openvino_available

    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    assert not openvino_available()
    with pytest.raises(ImportError, match=r'pip install "mtdense\[openvino\]"'):
        export_openvino(tmp_path / "m.onnx", tmp_path / "m.xml")  # the import fails first, before the file check
    with pytest.raises(ImportError, match=r'pip install "mtdense\[openvino\]"'):
        OpenVINORunner(tmp_path / "m.xml")
    assert not (tmp_path / "m.xml").exists()


def test_export_cli_openvino_rejects_bad_options(model, tmp_path, monkeypatch, capsys):
    ckpt = mtdense.save_checkpoint(model, tmp_path / "m.pth")
    assert main(["export", str(ckpt), "--format", "openvino", "--out", str(tmp_path / "m.onnx")]) == 2
    assert ".xml" in capsys.readouterr().err
    assert main(["export", str(ckpt), "--format", "openvino", "--int8", "--out", str(tmp_path / "m.xml")]) == 2
    assert "--format onnx only" in capsys.readouterr().err
    monkeypatch.setattr("mtdense.deploy.openvino.openvino_available", lambda: False)
    assert main(["export", str(ckpt), "--format", "openvino", "--out", str(tmp_path / "m.xml")]) == 2
    assert 'pip install "mtdense[openvino]"' in capsys.readouterr().err
    assert not (tmp_path / "m.xml").exists()


@pytest.mark.slow  # a full ONNX export (torch.export tracing) inside, like test_export_cli_onnx_int8
def test_export_cli_openvino(model, tmp_path, capsys):
    pytest.importorskip("openvino")
    from mtdense.deploy.openvino import OpenVINORunner

    ckpt = mtdense.save_checkpoint(model, tmp_path / "m.pth")
    out = tmp_path / "ir" / "m.xml"
    assert main(["export", str(ckpt), "--format", "openvino", "--out", str(out), "--size", "64", "96", "--static", "--check-images", "2"]) == 0
    text = capsys.readouterr().out
    assert "OpenVINO fp32 vs PyTorch fp32 on 2 random input(s) at 64x96" in text
    agreement = float(re.search(r"seg argmax agreement ([\d.]+)%", text).group(1))
    assert agreement >= 99.9
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.bin", "m.xml"]  # no intermediate ONNX left behind
    res = OpenVINORunner(out, threads=1)(torch.zeros(1, 3, 64, 96))
    assert res["seg"].shape == (1, 19, 64, 96) and res["depth"].shape == (1, 1, 64, 96)


# -- Predictor on an export -------------------------------------------------------------------
def test_predictor_runs_an_onnx_export(model, onnx_path, tmp_path):
    """``Predictor("model.onnx")`` (ONNX Runtime) gives what ``Predictor(model)`` gives, any size and batch."""
    from mtdense.inference import Predictor

    via_ort, via_torch = Predictor(onnx_path), Predictor(model)
    assert isinstance(via_ort.model, OnnxModel) and via_ort.size is None
    batch = [*images(2, 70, 90), images(1, 96, 128, seed=3)[0]]  # two sizes: two ORT runs, one of batch 2
    for a, b in zip(via_ort.predict(batch), via_torch.predict(batch)):
        assert a.seg.shape == b.seg.shape and a.seg.dtype == np.uint8
        assert (a.seg == b.seg).mean() >= 0.999
        np.testing.assert_allclose(a.depth, b.depth, rtol=1e-3)
    import cv2

    cv2.imwrite(str(tmp_path / "street.png"), images(1, 64, 96)[0])
    assert main(["predict", str(onnx_path), str(tmp_path / "street.png"), "--out", str(tmp_path / "pred")]) == 0
    assert (tmp_path / "pred" / "street_panel.png").is_file() and (tmp_path / "pred" / "street_depth.png").is_file()


def test_predictor_keeps_a_static_export_at_its_size(model, tmp_path):
    from mtdense.inference import Predictor

    path = export_onnx(model, tmp_path / "static.onnx", size=(64, 128), dynamic=False)
    pred = Predictor(path)
    assert pred.size == (64, 128)
    out = pred.predict(list(images(2, 100, 150)))  # resized to 64 x 128 and back; batch run one by one
    assert [o.seg.shape for o in out] == [(100, 150), (100, 150)]
    torch_out = Predictor(model, size=(64, 128)).predict(list(images(2, 100, 150)))
    for a, b in zip(out, torch_out):
        assert (a.seg == b.seg).mean() >= 0.999
    with pytest.raises(ValueError, match="fixed-size export for 64x128"):
        Predictor(path, size=(96, 128))


def test_onnx_model_rejects_a_foreign_file(tmp_path):
    import onnx
    from onnx import TensorProto, helper


    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 3, "h", "w"])],
    )
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(ValueError, match=r"other.onnx: no output named \['depth', 'seg'\]"):
        OnnxModel(path)
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="broken.onnx"):
        OnnxModel(tmp_path / "broken.onnx")


@pytest.fixture(scope="module")
def three_task_model():
    """A 5-class seg + depth + normals model with the description of its (folder) data."""
    torch.manual_seed(1)
    m = mtdense.create_model(tasks={"seg": 5, "depth": 1, "normals": 3}, decoder_channels=16).eval()
    m.dataset_info = {"classes": ["floor", "wall", "person", "chair", "table"],
                      "colors": [[200, 30, 30], [30, 200, 30], [30, 30, 200], [220, 220, 40], [40, 220, 220]],
                      "ignore_index": 255, "depth_scale": 256.0, "tasks": ["seg", "depth", "normals"], "format": "folder"}
    return m


@pytest.fixture(scope="module")
def three_task_onnx(three_task_model, tmp_path_factory):
    # groups=1 is what a 16-channel decoder gets anyway, and what int8 quantization needs; every
    # test of it runs at 64 x 96, so the quicker static export (batches of 2 run one image at a time)
    return export_onnx(three_task_model, tmp_path_factory.mktemp("three") / "three.onnx", size=(64, 96), groups=1,
                       dynamic=False)


def _edit_metadata(src, dst, key, value):
    """A copy of an ONNX file with one metadata entry set (``None``: removed)."""
    import onnx

    graph = onnx.load(str(src))
    kept = [(p.key, p.value) for p in graph.metadata_props if p.key != key]
    del graph.metadata_props[:]
    for k, v in kept + ([(key, value)] if value is not None else []):
        graph.metadata_props.add(key=k, value=v)
    onnx.save(graph, str(dst))
    return dst


def test_onnx_export_carries_the_dataset_and_the_normals(three_task_model, three_task_onnx, tmp_path):
    """A 5-class model exported to ONNX predicts and names its 5 classes, and its normals output
    reproduces PyTorch's unit vectors; the int8 file keeps the description."""
    import json

    from mtdense.data.description import DatasetInfo
    from mtdense.deploy.onnx import onnx_metadata
    from mtdense.inference import Predictor

    model, path = three_task_model, three_task_onnx
    meta = onnx_metadata(path)
    assert DatasetInfo.from_dict(json.loads(meta["mtdense.dataset_info"])).to_dict() == model.dataset_info
    assert "unit surface normals" in json.loads(meta["mtdense.outputs"])["normals"]
    rt = OnnxModel(path)
    assert rt.dataset_info == model.dataset_info and rt.tasks == {"seg": 5, "depth": 1, "normals": 3}
    x = torch.from_numpy(preprocess_images(list(images(2, 64, 96)), (64, 96)))
    with torch.no_grad():
        ref = model(x)
    out = rt(x)
    torch.testing.assert_close(out["normals"], ref["normals"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out["normals"].norm(dim=1), torch.ones(2, 64, 96), rtol=1e-5, atol=1e-5)
    predictor = Predictor(path)
    assert predictor.info.classes == ("floor", "wall", "person", "chair", "table")
    assert predictor.info.palette.tolist() == model.dataset_info["colors"]
    preds = predictor.predict(list(images(2, 64, 96)))
    torch_preds = Predictor(model).predict(list(images(2, 64, 96)))
    for a, b in zip(preds, torch_preds):
        assert a.seg.max() < 5 and (a.seg == b.seg).mean() >= 0.999
        assert a.normals.shape == (64, 96, 3)
        np.testing.assert_allclose(a.normals, b.normals, atol=1e-3)
    q = quantize_onnx(path, tmp_path / "three.int8.onnx", list(images(2, 64, 96, seed=4)), size=(64, 96))
    assert OnnxModel(q).dataset_info == model.dataset_info
    # a file without the description (exported before it was written) still runs, with numbered classes
    bare = _edit_metadata(path, tmp_path / "bare.onnx", "mtdense.dataset_info", None)
    assert OnnxModel(bare).dataset_info is None
    assert Predictor(bare).info.classes == tuple(f"class {i}" for i in range(5))


def test_openvino_ir_carries_the_dataset(three_task_model, three_task_onnx, tmp_path):
    """The IR keeps the 5-class description (rt_info), and a Predictor on it names and colours the
    model's classes and predicts what PyTorch predicts; an IR without it gets numbered classes."""
    pytest.importorskip("openvino")
    from mtdense.deploy.openvino import OpenVINORunner, export_openvino
    from mtdense.inference import Predictor

    model = three_task_model
    xml = export_openvino(three_task_onnx, tmp_path / "three.xml")
    assert OpenVINORunner(xml).dataset_info == model.dataset_info
    assert OpenVINORunner(three_task_onnx).dataset_info == model.dataset_info  # an .onnx file under OpenVINO too
    predictor = Predictor(xml)
    assert predictor.info.classes == ("floor", "wall", "person", "chair", "table")
    assert predictor.info.palette.tolist() == model.dataset_info["colors"]
    preds = predictor.predict(list(images(2, 64, 96)))
    for a, b in zip(preds, Predictor(model).predict(list(images(2, 64, 96)))):
        assert a.seg.max() < 5 and (a.seg == b.seg).mean() >= 0.999
        np.testing.assert_allclose(a.normals, b.normals, atol=1e-3)
    bare = export_openvino(_edit_metadata(three_task_onnx, tmp_path / "bare.onnx", "mtdense.dataset_info", None),
                           tmp_path / "bare.xml")
    assert OpenVINORunner(bare).dataset_info is None
    assert Predictor(bare).info.classes == tuple(f"class {i}" for i in range(5))
    broken = export_openvino(_edit_metadata(three_task_onnx, tmp_path / "broken.onnx", "mtdense.dataset_info", "{classes"),
                             tmp_path / "broken.xml")
    with pytest.raises(ValueError, match=r"broken.xml: its mtdense.dataset_info metadata is not JSON"):
        OpenVINORunner(broken)


def test_broken_dataset_description_in_an_onnx_file_is_refused(three_task_onnx, tmp_path):
    path = _edit_metadata(three_task_onnx, tmp_path / "broken.onnx", "mtdense.dataset_info", '{"classes": ["a", "a"]}')
    with pytest.raises(ValueError, match=r"broken.onnx \(mtdense.dataset_info metadata\): 'classes' name 'a' appears twice"):
        OnnxModel(path)
    path = _edit_metadata(three_task_onnx, tmp_path / "broken.onnx", "mtdense.dataset_info", "{classes")
    with pytest.raises(ValueError, match=r"broken.onnx: its mtdense.dataset_info metadata is not JSON .*export it again"):
        OnnxModel(path)


def test_the_fused_runtime_refuses_normals_naming_the_fix(three_task_model, tmp_path, capsys):
    from mtdense.deploy.runtime import RuntimeUnavailable, create_runtime

    with pytest.raises(RuntimeUnavailable, match=r"the fused runtime computes the heads itself and cannot normalise this "
                                                 r"model's normals head to unit vectors; use the ONNX backend \(--backend ort"):
        create_runtime("fused", three_task_model)
    ckpt = mtdense.save_checkpoint(three_task_model, tmp_path / "three.pth")
    import cv2

    cv2.imwrite(str(tmp_path / "x.png"), images(1, 64, 96)[0])
    assert main(["predict", str(ckpt), str(tmp_path / "x.png"), "--out", str(tmp_path / "p"), "--backend", "fused"]) == 2
    assert "use the ONNX backend" in capsys.readouterr().err and not (tmp_path / "p").exists()
    assert main(["predict", str(ckpt), str(tmp_path / "x.png"), "--out", str(tmp_path / "p"), "--backend", "eager"]) == 0
    from mtdense.deploy.fused import fused_available

    if fused_available():  # without a compiler --format fused is refused for that first
        assert main(["export", str(ckpt), "--format", "fused", "--size", "64", "96"]) == 2
        assert "--format fused: " in capsys.readouterr().err


def test_int8_weights_are_7_bit_where_the_cpu_has_no_vnni(three_task_onnx, tmp_path, monkeypatch):
    """Without VNNI, x86 int8 products add in pairs with 16-bit saturation: ONNX Runtime's advice is
    7-bit weights (reduce_range), chosen by the CPU unless given."""
    import onnx
    from onnx import numpy_helper

    from mtdense.deploy import int8, machine

    def weight_range(path):
        graph = onnx.load(str(path)).graph
        weights = [numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
        assert weights
        return max(int(np.abs(w.astype(np.int32)).max()) for w in weights)

    calib = list(images(2, 64, 96, seed=4))
    full = quantize_onnx(three_task_onnx, tmp_path / "full.onnx", calib, size=(64, 96), reduce_range=False)
    seven = quantize_onnx(three_task_onnx, tmp_path / "seven.onnx", calib, size=(64, 96), reduce_range=True)
    assert weight_range(full) == 127 and weight_range(seven) <= 64
    for flags, saturates in ((["sse4_2", "avx", "avx2", "fma"], True), (["sse4_2", "avx", "avx2", "avx512f", "avx512_vnni"], False),
                             (["avx2", "avx_vnni"], False), ([], False)):
        monkeypatch.setattr(machine, "cpu_flags", lambda flags=flags: flags)
        assert machine.int8_saturates() is saturates
    monkeypatch.setattr(int8, "int8_saturates", lambda: True)
    assert weight_range(quantize_onnx(three_task_onnx, tmp_path / "auto.onnx", calib, size=(64, 96))) <= 64
