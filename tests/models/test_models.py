"""One shared tester for every encoder, plus the default model's published figures."""

import importlib.util

import pytest
import torch
import torchvision

import mtdense
from mtdense.complexity import model_complexity
from mtdense.models import CRPBlock, create_encoder, load_model, save_checkpoint

ENCODERS = ["mobilenet_v3_small", "mobilenet_v3_large", "mobilenet_v2"]
if importlib.util.find_spec("timm") is not None:
    ENCODERS.append("timm:mobilenetv3_small_100")

SIZES = [(64, 128), (75, 111), (33, 47)]  # odd sizes included
TASKS = {"seg": 19, "depth": 1, "normals": 3}


def tiny(encoder: str) -> mtdense.MultiTaskNet:
    return mtdense.create_model(encoder, tasks=TASKS, decoder_channels=16)


@pytest.mark.parametrize("encoder", ENCODERS)
class TestEveryEncoder:
    def test_feature_contract(self, encoder):
        enc = create_encoder(encoder)
        feats = enc(torch.randn(1, 3, 64, 128))
        assert len(feats) == len(enc.out_channels) == len(enc.strides)
        assert sorted(set(enc.strides)) == [4, 8, 16, 32]
        for f, c, s in zip(feats, enc.out_channels, enc.strides):
            assert f.shape[1] == c
            assert f.shape[-2:] == (64 // s, 128 // s)

    @pytest.mark.parametrize("size", SIZES)
    def test_output_shapes(self, encoder, size):
        model = tiny(encoder).eval()
        with torch.no_grad():
            out = model(torch.randn(2, 3, *size))
        assert set(out) == set(TASKS)
        for task, c in TASKS.items():
            assert out[task].shape == (2, c, *size)
            assert torch.isfinite(out[task]).all()

    def test_gradients_reach_every_trainable_parameter(self, encoder):
        model = tiny(encoder).train()
        out = model(torch.randn(2, 3, 64, 96))
        sum(o.square().mean() for o in out.values()).backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
        assert not missing, f"no gradient for {missing[:5]}"
        zero = [n for n, p in model.named_parameters() if p.requires_grad and p.grad.abs().sum() == 0]
        assert len(zero) <= len(list(model.parameters())) // 20, f"zero gradients: {zero}"

    def test_eval_is_deterministic(self, encoder):
        model = tiny(encoder).eval()
        x = torch.randn(1, 3, 64, 128)
        with torch.no_grad():
            a, b = model(x), model(x)
        for k in a:
            assert torch.equal(a[k], b[k])

    @pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
    def test_save_load_round_trip(self, encoder, suffix, tmp_path):
        model = tiny(encoder).eval()
        path = save_checkpoint(model, tmp_path / f"m{suffix}")
        loaded = load_model(path)
        assert loaded.config == model.config
        x = torch.randn(1, 3, 64, 128)
        with torch.no_grad():
            a, b = model(x), loaded(x)
        for k in a:
            assert torch.equal(a[k], b[k])

    def test_bad_inputs_raise_clear_errors(self, encoder):
        model = tiny(encoder).eval()
        with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
            model(torch.randn(1, 4, 64, 64))
        with pytest.raises(ValueError, match="4-D input"):
            model(torch.randn(3, 64, 64))
        with pytest.raises(ValueError, match="too small"):
            model(torch.randn(1, 3, 16, 64))
        with pytest.raises(TypeError, match="float"):
            model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_wrong_encoder_name_lists_valid_ones():
    with pytest.raises(ValueError, match="mobilenet_v3_small.*") as e:
        mtdense.create_model("resnet9000")
    assert "mobilenet_v2" in str(e.value) and "resnet9000" in str(e.value)


def test_default_model_matches_the_recipe():
    model = mtdense.create_model().eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 400, 1024))
    assert out["seg"].shape == (1, 19, 400, 1024)
    assert out["depth"].shape == (1, 1, 400, 1024)
    rows = {r.name: r for r in model_complexity(model, (400, 1024))}
    assert rows["total"].params == sum(p.numel() for p in model.parameters())
    assert 1.9e6 < rows["total"].params < 2.1e6  # "about 2.0 M"
    assert 8.5 < rows["total"].gflops < 10.0  # "about 9 GFLOPs"
    assert abs(rows["encoder"].gflops + rows["decoder"].gflops + rows["heads"].gflops - rows["total"].gflops) < 1e-6


def test_normals_head_gives_unit_vectors_and_round_trips(tmp_path):
    model = mtdense.create_model(tasks={"seg": 13, "depth": 1, "normals": 3}, decoder_channels=16).eval()
    assert set(model.heads) == {"seg", "depth", "normals"}
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96))
    assert out["seg"].shape == (2, 13, 64, 96) and out["normals"].shape == (2, 3, 64, 96)
    torch.testing.assert_close(out["normals"].norm(dim=1), torch.ones(2, 64, 96))
    loaded = mtdense.load_model(mtdense.save_checkpoint(model, tmp_path / "m.pth"))
    assert loaded.tasks == {"seg": 13, "depth": 1, "normals": 3}
    with pytest.raises(ValueError, match=r"task 'normals' has 3 output channels, got 2; set tasks\['normals'\] = 3"):
        mtdense.create_model(tasks={"seg": 19, "normals": 2})


def test_kitti_size():
    model = mtdense.create_model(decoder_channels=32).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 375, 1242))
    assert out["depth"].shape == (1, 1, 375, 1242)


def test_decoder_follows_the_recipe():
    model = mtdense.create_model()
    dec = model.decoder
    assert [c.in_channels for c in dec.proj] == [16, 24, 48, 48, 96, 96]
    assert all(c.out_channels == 256 and c.bias is None and c.kernel_size == (1, 1) for c in dec.proj)
    assert len(dec.crp) == 4 and len(dec.adapt) == 3
    assert all(conv.groups == 256 for conv in dec.crp[0].convs)  # finest CRP is depthwise
    assert all(conv.groups == 1 for crp in dec.crp[1:] for conv in crp.convs)
    head = model.heads["seg"]
    assert head[0].groups == 256 and head[0].bias is None and head[2].kernel_size == (3, 3) and head[2].bias is not None


def test_crp_computes_the_recipe_formula():
    crp = CRPBlock(8, n_stages=4)
    x = torch.randn(1, 8, 9, 11)
    top, expected = x, x
    for conv in crp.convs:
        top = conv(torch.nn.functional.max_pool2d(top, 5, 1, 2))
        expected = expected + top
    assert torch.allclose(crp(x), expected)


def test_freeze_encoder():
    model = mtdense.create_model(decoder_channels=16, freeze_encoder=True).train()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert not model.encoder.training  # BatchNorm statistics stay fixed
    assert load_model(save_checkpoint(model, "/tmp/mtdense_frozen.pth")).config["freeze_encoder"]


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_pretrained_from_local_state_dict(tmp_path, suffix):
    ref = torchvision.models.mobilenet_v3_small()
    path = tmp_path / f"enc{suffix}"
    if suffix == ".pth":
        torch.save(ref.state_dict(), path)
    else:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    model = mtdense.create_model(pretrained=str(path))
    for name, value in model.encoder.features.state_dict().items():
        assert torch.equal(value, ref.features.state_dict()[name]), name


def test_pretrained_from_wrong_file_raises(tmp_path):
    path = tmp_path / "v2.pth"
    torch.save(torchvision.models.mobilenet_v2().state_dict(), path)
    with pytest.raises(ValueError, match="not a state dict of torchvision mobilenet_v3_small"):
        mtdense.create_model(pretrained=str(path))


def test_pretrained_true_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RuntimeError, match="pretrained='enc.pth'"):
        mtdense.create_model(pretrained=True)


def test_truncated_checkpoint_raises(tmp_path):
    path = save_checkpoint(mtdense.create_model(decoder_channels=16), tmp_path / "m.pth")
    data = path.read_bytes()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="bad.pth"):
        load_model(bad)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.pth")


def test_checkpoint_never_unpickles_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"format": "mtdense-model-v1", "config": Evil(), "state_dict": {}}, path)
    with pytest.raises(ValueError, match="holds Python objects that could run code") as err:
        load_model(path)
    assert "weights_only=False" not in str(err.value)


def test_weights_that_do_not_fit_name_the_file_keys_and_cause(tmp_path):
    from mtdense.models.weights import load_state_dict_checked

    path = tmp_path / "other.pth"
    small = mtdense.create_model(decoder_channels=16, tasks={"seg": 19, "depth": 1})
    payload = {"format": "mtdense-model-v1", "config": small.config, "state_dict": {k: v for k, v in small.state_dict().items() if not k.startswith("heads.depth")}}
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"other.pth: its weights do not fit this model \(missing \d+ key\(s\): heads.depth") as err:
        load_model(path)
    assert "another encoder, decoder width or task set" in str(err.value)
    wide = mtdense.create_model(decoder_channels=32, tasks={"seg": 19, "depth": 1})
    with pytest.raises(ValueError, match=r"other shapes: .*\(16, .*vs \(32, "):
        load_state_dict_checked(wide, small.state_dict(), path)
