"""The fused CPU path (``mtdense.deploy.fused``): same function as the network, clear errors."""

import os
import platform
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from torch import nn

import mtdense
from mtdense.deploy.bench import benchmark
from mtdense.deploy.fused import FusedNet, FusedUnavailable, build_library, fused_available

needs_compiler = pytest.mark.skipif(not fused_available(), reason="no C compiler to build the fused kernel")


def _model(decoder_channels=16, **kw):
    torch.manual_seed(0)
    return mtdense.create_model(decoder_channels=decoder_channels, **kw).eval()


def _assert_matches(net, model, size=(64, 96), seed=0):
    """``net`` gives the network's outputs (float rounding aside) on a random batch of one."""
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        ref = model(x)
    out = net(x)
    assert set(out) == set(ref)
    for task in ref:
        torch.testing.assert_close(out[task], ref[task], atol=2e-5, rtol=1e-4)


@needs_compiler
def test_fused_equals_the_network_at_odd_sizes_and_batch_2():
    model = _model()
    net = FusedNet(model, threads=2)
    # 70 x 90: the 1/4 map is 18 x 23, not a whole number of 16-pixel strips, and 1/8 -> 1/4 is not exactly 2x
    x = torch.randn(2, 3, 70, 90, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x)
    out = net(x)
    assert set(out) == {"seg", "depth"}
    for task in ref:
        assert out[task].shape == ref[task].shape
        torch.testing.assert_close(out[task], ref[task], atol=2e-5, rtol=1e-4)
    assert torch.equal(out["seg"].argmax(1), ref["seg"].argmax(1))


@needs_compiler
def test_fused_handles_any_number_of_heads_and_one_thread():
    model = _model(tasks={"seg": 19, "depth": 1, "albedo": 3, "edges": 1})
    net = FusedNet(model, threads=1, size=(64, 96))  # one size: the quicker export
    assert net.gemm_heads == ["seg", "albedo"] and net.direct_heads == ["depth", "edges"]
    _assert_matches(net, model, seed=2)


@needs_compiler
def test_fused_fixed_size_takes_only_its_size():
    model = _model()
    net = FusedNet(model, size=(64, 96))
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(net(x)["depth"], ref["depth"], atol=2e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="built for 64x96"):
        net(torch.zeros(1, 3, 96, 96))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        net(torch.zeros(3, 64, 96))


@needs_compiler
def test_fused_refuses_another_architecture():
    model = _model()
    model.heads["seg"] = nn.Sequential(nn.Conv2d(16, 19, 1))
    with pytest.raises(ValueError, match="head 'seg'"):
        FusedNet(model)
    model = _model()
    model.decoder.crp[0].pool = nn.MaxPool2d(3, stride=2, padding=1)
    with pytest.raises(ValueError, match="max-pool"):
        FusedNet(model)


def test_missing_compiler_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MTDENSE_CACHE", str(tmp_path))
    with pytest.raises(FusedUnavailable, match="no C compiler 'no-such-cc'"):
        build_library(cc="no-such-cc")


@needs_compiler
def test_library_is_cached_and_rebuilt_on_demand(monkeypatch, tmp_path):
    monkeypatch.setenv("MTDENSE_CACHE", str(tmp_path))
    path = build_library()
    assert path.parent == tmp_path and path.is_file()
    stamp = path.stat().st_mtime_ns
    assert build_library() == path and path.stat().st_mtime_ns == stamp
    assert build_library(force=True) == path


@needs_compiler
def test_bench_fused_row_matches_eager():
    result = benchmark(_model(), size=(64, 96), backends=["fused"], warmup=0, runs=1, reference=False, log=lambda s: None)
    (row,) = result.rows
    assert row.ok, row.note
    assert "compiled kernel" in row.note
    assert row.parity.seg_agreement >= 0.999 and row.parity.depth_mean_rel < 1e-4


@needs_compiler
def test_predict_cli_fused_writes_what_the_network_predicts(tmp_path):
    import cv2
    import numpy as np

    from mtdense.cli import main
    from mtdense.inference import Predictor

    model = _model()
    ckpt = mtdense.save_checkpoint(model, tmp_path / "model.pth")
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    assert cv2.imwrite(str(tmp_path / "street.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    assert main(["predict", str(ckpt), str(tmp_path / "street.png"), "--out", str(out), "--size", "64", "96", "--fused"]) == 0
    pred = Predictor(model, size=(64, 96)).predict(image)
    np.testing.assert_array_equal(cv2.imread(str(out / "street_trainIds.png"), cv2.IMREAD_UNCHANGED), pred.seg)
    depth = cv2.imread(str(out / "street_depth.png"), cv2.IMREAD_UNCHANGED).astype(np.int64)
    assert np.abs(depth - pred.depth_png16().astype(np.int64)).max() <= 1  # 1/256 m steps; float rounding may tip one
    assert main(["predict", str(ckpt), str(tmp_path / "street.png"), "--out", str(out), "--fused", "--device", "cuda"]) == 2


@needs_compiler
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="-mno-avx2 is an x86 flag")
def test_portable_build_without_cpu_specific_code_matches(monkeypatch, tmp_path):
    """The kernel built without -march=native (no AVX2/FMA paths: plain C the compiler vectorises
    for whatever CPU it targets) computes the same outputs."""
    import ctypes
    import shutil
    import subprocess

    import mtdense.deploy.fused.build as fused

    lib_path = tmp_path / "libportable.so"
    cc = shutil.which("cc") or shutil.which("gcc")
    subprocess.run([cc, "-O3", "-mno-avx2", "-mno-fma", "-shared", "-fPIC", "-pthread", "-o", str(lib_path), str(fused.SOURCE), "-lm"], check=True)
    monkeypatch.setattr(fused, "_LIB", None)
    monkeypatch.setattr(fused, "build_library", lambda: lib_path)  # load_library() builds through it
    model = _model()
    net = FusedNet(model, threads=2)
    assert net.lib._name == str(lib_path)
    _assert_matches(net, model, seed=4)
    x = torch.randn(1, 3, 70, 90, generator=torch.Generator().manual_seed(4))
    assert torch.equal(net.labels(x)["seg"], net(x)["seg"].argmax(1).to(torch.uint8))


@needs_compiler
def test_fused_winograd_covers_partial_tiles_blocks_and_panels():
    """The heads' Winograd convolution at sizes where every blocking has a remainder: 40 channels
    (two 16-channel blocks and 8), a 1/4 map of 18 x 83 (a partial 4 x 4 tile row and column, two
    16-tile blocks, the second partial), 5 tile rows over 3 threads, and 19, 3 and 7 outputs
    (row panels of 5, 3 and 4, the last with a padded row)."""
    model = _model(decoder_channels=40, tasks={"seg": 19, "depth": 1, "albedo": 3, "parts": 7})
    net = FusedNet(model, threads=3, size=(70, 330))  # one size: the quicker export
    assert net.gemm_heads == ["seg", "albedo", "parts"]
    _assert_matches(net, model, size=(70, 330), seed=5)


@needs_compiler
@pytest.mark.parametrize("size,threads", [((70, 90), 1), ((64, 96), 2), ((70, 330), 3), ((37, 53), 2)])
def test_kernel_labels_are_the_argmax_of_its_logits(size, threads):
    """``labels()`` decodes the segmentation inside the kernel (the full-resolution logits are never
    written): the same labels as the argmax of the logits it returns otherwise, ties to the lower
    class, at sizes whose 8-row bands and 4x upsampling leave remainders; the other outputs unchanged."""
    model = _model(tasks={"seg": 19, "depth": 1, "albedo": 3})
    net = FusedNet(model, threads=threads)
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(6))
    logits = net(x)
    out = net.labels(x)
    assert out["seg"].dtype == torch.uint8 and out["seg"].shape == (2, *size)
    assert torch.equal(out["seg"], logits["seg"].argmax(1).to(torch.uint8))
    assert torch.equal(out["depth"], logits["depth"]) and torch.equal(out["albedo"], logits["albedo"])


def test_every_runtime_gives_labels_through_the_contract():
    """The base contract: ``labels()`` is the argmax of the call's logits, for any runtime."""
    from mtdense.deploy.runtime import create_runtime

    model = _model()
    rt = create_runtime("eager", model)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(7))
    out, ref = rt.labels(x), rt(x)
    assert out["seg"].dtype == torch.uint8
    assert torch.equal(out["seg"], ref["seg"].argmax(1).to(torch.uint8)) and torch.equal(out["depth"], ref["depth"])


# -- building the kernel safely -----------------------------------------------------------------
@needs_compiler
def test_two_processes_building_at_once_share_one_whole_library(tmp_path):
    import subprocess
    import sys

    code = "from mtdense.deploy.fused.build import build_library, load_library; print(build_library()); load_library()"
    env = {**__import__("os").environ, "MTDENSE_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outs[0] == outs[1] and outs[0].startswith(str(tmp_path))
    assert [p.name for p in tmp_path.glob("*.so")] == [Path(outs[0]).name]  # one library, no build leftovers
    assert not list(tmp_path.glob(".build-*"))


@needs_compiler
def test_unwritable_cache_falls_back_to_a_private_folder(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MTDENSE_CACHE", str(blocker / "cache"))  # cannot be created: a file is in the way
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    path = build_library()
    assert path.is_file() and path.parent == tmp_path / "tmp" / f"mtdense-cache-{os.getuid()}"


@needs_compiler
def test_broken_cached_library_is_rebuilt_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("MTDENSE_CACHE", str(tmp_path))
    path = build_library()
    whole = path.read_bytes()
    broken = tmp_path / "broken.so"  # truncated, as by a full disk under an older version; a new file,
    broken.write_bytes(whole[: len(whole) // 3])  # since this process has the library mapped
    os.replace(broken, path)
    assert build_library() == path and path.read_bytes() == whole


def test_a_compiler_that_fails_half_way_leaves_nothing_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MTDENSE_CACHE", str(tmp_path / "cache"))
    cc = tmp_path / "badcc"  # writes half an output file, then fails
    cc.write_text('#!/bin/sh\nfor a; do case "$prev" in -o) echo half > "$a";; esac; prev="$a"; done\necho "internal compiler error" >&2\nexit 1\n')
    cc.chmod(0o755)
    with pytest.raises(FusedUnavailable, match="internal compiler error"):
        build_library(cc=str(cc))
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []


def test_the_compiler_version_is_part_of_the_cache_key(tmp_path, monkeypatch):
    import mtdense.deploy.fused.build as build

    monkeypatch.setenv("MTDENSE_CACHE", str(tmp_path))
    names = []
    for version in ("cc 12.2", "cc 13.1"):
        cc = tmp_path / "fakecc"  # reports a version, "compiles" by copying a real library
        real = build_library() if fused_available() else None
        cc.write_text(f'#!/bin/sh\n[ "$1" = --version ] && {{ echo "{version}"; exit 0; }}\n'
                      + (f'for a; do case "$prev" in -o) cp "{real}" "$a";; esac; prev="$a"; done\nexit 0\n' if real else "exit 1\n"))
        cc.chmod(0o755)
        try:
            names.append(build.build_library(cc=str(cc)).name)
        except FusedUnavailable:
            names.append(version)  # no real library to copy here: the key is still checked below
    assert names[0] != names[1]


# -- the cached graph: a second start skips the export ---------------------------------------------
def _count_exports(monkeypatch):
    calls = []
    real = FusedNet._export

    def counted(self, coarse, path):
        calls.append(path)
        real(self, coarse, path)

    monkeypatch.setattr(FusedNet, "_export", counted)
    return calls


@needs_compiler
def test_second_start_takes_the_graph_from_the_cache(tmp_path, monkeypatch):
    exports = _count_exports(monkeypatch)
    model = _model()
    first = FusedNet(model, size=(64, 96), cache=tmp_path)
    second = FusedNet(model, size=(64, 96), cache=tmp_path)
    assert len(exports) == 1 and not first.graph_reused and second.graph_reused
    assert second.onnx_path == first.onnx_path and first.onnx_path.parent.parent == tmp_path
    _assert_matches(second, model)
    # another size or other weights: another entry
    FusedNet(model, size=(64, 128), cache=tmp_path)
    other = _model()
    with torch.no_grad():
        other.decoder.proj[0].weight.mul_(1.5)
    FusedNet(other, size=(64, 96), cache=tmp_path)
    assert len(exports) == 3 and len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 3


@needs_compiler
@pytest.mark.parametrize("damage", ["truncated graph", "wrong digest", "no manifest"])
def test_damaged_cache_entry_is_rebuilt_never_used(tmp_path, monkeypatch, damage):
    model = _model()
    whole = FusedNet(model, size=(64, 96)).onnx_path.parent  # the session's entry: exported once for the three cases
    path = Path(shutil.copytree(whole, tmp_path / whole.name)) / "graph.onnx"
    manifest = path.with_name("manifest.json")
    if damage == "truncated graph":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "wrong digest":
        manifest.write_text(manifest.read_text().replace('"sha256": "', '"sha256": "0'))
    else:
        manifest.unlink()
    exports = _count_exports(monkeypatch)
    net = FusedNet(model, size=(64, 96), cache=tmp_path)
    assert len(exports) == 1 and not net.graph_reused
    _assert_matches(net, model)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.is_dir()]  # no build folder left


@needs_compiler
def test_two_processes_starting_at_once_export_once(tmp_path):
    import subprocess
    import sys

    ckpt = mtdense.save_checkpoint(_model(), tmp_path / "m.pth")
    code = ("import sys, mtdense; from mtdense.deploy.fused import FusedNet; "
            f"net = FusedNet(mtdense.load_model({str(ckpt)!r}), size=(64, 96), cache={str(tmp_path / 'graphs')!r}); "
            "print(net.graph_reused)")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = sorted(p.communicate(timeout=300)[0].strip() for p in procs)
    assert [p.returncode for p in procs] == [0, 0]
    assert outs == ["False", "True"]  # one exported, the other waited and took it
    entries = list((tmp_path / "graphs").iterdir())
    assert len([e for e in entries if e.is_dir()]) == 1


@needs_compiler
def test_export_format_fused_fills_the_cache_that_predict_starts_from(tmp_path, monkeypatch, capsys):
    from mtdense.cli import main
    from mtdense.deploy import cache

    monkeypatch.setattr(cache, "graph_cache_dir", lambda: tmp_path / "graphs")
    ckpt = mtdense.save_checkpoint(_model(), tmp_path / "m.pth")
    args = ["export", str(ckpt), "--format", "fused", "--size", "64", "96", "--check-images", "1"]
    assert main(args) == 0
    assert "graph exported" in capsys.readouterr().out
    assert main(args) == 0
    assert "graph already in the cache" in capsys.readouterr().out
    exports = _count_exports(monkeypatch)
    from mtdense.inference import Predictor

    predictor = Predictor(ckpt, size=(64, 96), backend="fused")
    assert predictor.model.graph_reused and not exports
    assert main(["export", str(ckpt), "--format", "fused", "--out", "x.onnx"]) == 2
