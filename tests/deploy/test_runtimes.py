"""One tester for every registered runtime (the runtime contract of ``mtdense.deploy``).

Each runtime, built from the same tiny network, must: return every task at the input size,
match eager PyTorch fp32 (exactly up to float rounding, or within its precision for int8 /
fp16), take odd sizes and batch 2, and, where it is built for one size, refuse any other with
a message that says both. A runtime that cannot run here (CUDA, OpenVINO, a compiler) is
skipped with its own reason.
"""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

import mtdense
from mtdense.deploy.parity import runtime_parity
from mtdense.deploy.runtime import RUNTIMES, Runtime, RuntimeOptions, create_runtime, open_runtime, runtime_class

SIZE = (64, 96)
ODD = (70, 90)  # 1/4 map 18 x 23: no stride divides it evenly
# Runtimes that change precision: their outputs are checked for form and sanity, not equality.
LOW_PRECISION = {"ort_int8", "fp16", "cuda_graph"}
# Runtimes that capture or calibrate one input size and need it at construction.
NEEDS_SIZE = {"ort_int8", "cuda_graph"}


# torch.compile takes a minute or more per shape on a small CPU.
NAMES = [pytest.param(n, marks=pytest.mark.slow) if n == "compile" else n for n in RUNTIMES]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return mtdense.create_model(decoder_channels=16, tasks={"seg": 19, "depth": 1, "normals": 3}).eval()


_BUILT: dict[str, Runtime] = {}
_RAW: dict[int, torch.nn.Module] = {}


def model_for(name: str, model):
    """``model``, or for a runtime that computes the heads itself (fused) and so refuses a normals
    head, the same network without it."""
    if not runtime_class(name).refuses(model.tasks):
        return model
    if id(model) not in _RAW:
        import copy

        raw = copy.deepcopy(model)
        for task in [t for t in raw.tasks if runtime_class(name).refuses([t])]:
            del raw.heads[task]
            raw.tasks.pop(task)
        _RAW[id(model)] = raw
    return _RAW[id(model)]


def build(name: str, model, size=None) -> Runtime:
    if name == "compile" and name in _BUILT:  # it does not specialise to a size; compiling again costs a minute
        return _BUILT[name]
    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(2)]
    options = RuntimeOptions(size=size, calibration=calibration)
    reason = runtime_class(name).unavailable(options)
    if reason:
        pytest.skip(reason)
    rt = _BUILT[name] = create_runtime(name, model, options)
    return rt


def batch(size, n=2, seed=1):
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


def check_outputs(rt: Runtime, model, x: torch.Tensor) -> None:
    out = rt(x)
    with torch.no_grad():
        ref = model(x)
    assert set(out) == set(ref) == set(rt.tasks)
    for task, c in rt.tasks.items():
        assert out[task].shape == (len(x), c, *x.shape[-2:]) == ref[task].shape
        assert torch.isfinite(out[task]).all()
    if rt.name in LOW_PRECISION:
        return
    parity = runtime_parity(rt, model, x)
    assert parity.seg_agreement >= 0.999 and parity.depth_max_rel < 1e-4 and parity.logits_max_abs < 1e-3, parity
    for task in ref:
        torch.testing.assert_close(out[task].cpu(), ref[task], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_runtime_matches_the_network_at_odd_sizes_and_batch_2(name, model):
    model = model_for(name, model)
    rt = build(name, model, size=ODD if name in NEEDS_SIZE else None)
    assert rt.name == name and isinstance(rt.note, str) and rt.note
    if name == "ort_int8":  # quantized from the cached fp32 graph, into its own folder: never inside the cache
        assert Path(os.environ["MTDENSE_CACHE"]).resolve() not in rt.path.resolve().parents
    assert rt.tasks == model.tasks and set(rt.tasks) >= {"seg", "depth"}
    check_outputs(rt, model, batch(ODD))
    if rt.fixed_size is None:
        # Another size. compile keeps batch 2 here: its shape-generic code serves any size, but
        # PyTorch specialises a batch of one and would compile again (a minute on a small CPU).
        check_outputs(rt, model, batch(SIZE, n=2 if name == "compile" else 1, seed=2))


@pytest.mark.parametrize("name", NAMES)
def test_runtime_built_for_one_size_refuses_another(name, model):
    model = model_for(name, model)
    rt = build(name, model, size=SIZE)
    check_outputs(rt, model, batch(SIZE))
    if rt.fixed_size is None:  # it does not specialise: any size runs
        # compile keeps batch 2: a batch of one would be compiled again (PyTorch specialises sizes
        # of 1): 60 s beside the other test worker on a cold inductor cache.
        check_outputs(rt, model, batch(ODD, n=2 if name == "compile" else 1))
        return
    assert rt.fixed_size == SIZE
    with pytest.raises(ValueError, match=r"built for 64x96 inputs only, got 70x90"):
        rt(batch(ODD, n=1))


def test_runtime_refuses_a_malformed_batch(model):
    rt = create_runtime("eager", model)
    with pytest.raises(ValueError, match=r"B x 3 x H x W batch, got shape \(3, 64, 96\)"):
        rt(torch.zeros(3, 64, 96))


def test_registry_names_and_lookups(model, tmp_path):
    assert {"eager", "ort", "fused"} <= set(RUNTIMES)
    with pytest.raises(ValueError, match="unknown runtime 'nope'; valid: eager"):
        runtime_class("nope")
    rt = open_runtime(model)  # a module: eager
    assert rt.name == "eager" and open_runtime(rt) is rt
    ckpt = mtdense.save_checkpoint(model, tmp_path / "m.pth")
    assert open_runtime(ckpt, "ort", size=SIZE).fixed_size == SIZE  # a checkpoint on another runtime
    onnx_path = runtime_class("ort").export(model, tmp_path / "m.onnx", size=SIZE, dynamic=False)  # the quicker export
    assert open_runtime(onnx_path).name == "ort"  # a file: the runtime that reads it
    with pytest.raises(ValueError, match="m.onnx is an exported file that the ort runtime runs"):
        open_runtime(onnx_path, "eager")


def test_runtimes_from_the_same_weights_take_their_export_from_the_cache(model, tmp_path, monkeypatch):
    """A second start from the same checkpoint skips the export (most of the start-up); another
    form gets an entry of its own; a damaged entry is exported again, never used; files derived
    from a graph (an OpenVINO IR) stay in the runtime's own folder. (Other weights, another
    size: other keys, as for the fused runtime's graph in test_fused.py.)"""
    from mtdense.deploy import onnx as onnx_module

    monkeypatch.setenv("MTDENSE_CACHE", str(tmp_path / "cache"))
    exports = []
    real = onnx_module.export_onnx
    monkeypatch.setattr(onnx_module, "export_onnx", lambda *a, **k: exports.append(k["deploy"]) or real(*a, **k))
    first = create_runtime("ort", model, RuntimeOptions(size=SIZE))
    second = create_runtime("ort", model, RuntimeOptions(size=SIZE))
    assert exports == [True] and second.path == first.path
    assert first.path.parents[1] == tmp_path / "cache" / "graphs"
    check_outputs(second, model, batch(SIZE, n=1))
    create_runtime("ort_plain", model, RuntimeOptions(size=SIZE))  # the training graph: another form
    assert exports == [True, False]
    # a work folder keeps the export there (the bench's files), outside the cache
    kept = create_runtime("ort", model, RuntimeOptions(size=SIZE, work_dir=tmp_path / "work"))
    assert kept.path.parent == tmp_path / "work" and len(exports) == 3
    # damaged: exported again
    first.path.write_bytes(first.path.read_bytes()[:1000])
    again = create_runtime("ort", model, RuntimeOptions(size=SIZE))
    assert len(exports) == 4 and again.path == first.path
    check_outputs(again, model, batch(SIZE, n=1))
    if not runtime_class("ov").unavailable(RuntimeOptions()):
        create_runtime("ov", model, RuntimeOptions(size=SIZE))  # converts the cached export: no export of its own
        assert len(exports) == 4
    for entry in (tmp_path / "cache" / "graphs").iterdir():
        if entry.is_dir() and not entry.name.startswith("."):
            assert sorted(p.name for p in entry.iterdir()) == ["graph.onnx", "manifest.json"]


def test_a_runtime_without_any_writable_cache_exports_into_its_own_folder(model, tmp_path, monkeypatch):
    import os
    import tempfile

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MTDENSE_CACHE", str(blocker / "cache"))  # cannot be created: a file is in the way
    tmp = tmp_path / "tmp"
    (tmp / f"mtdense-cache-{os.getuid()}").parent.mkdir()
    (tmp / f"mtdense-cache-{os.getuid()}").write_text("nor the fallback under the temp dir")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    rt = create_runtime("ort", model, RuntimeOptions(size=SIZE, work_dir=None))
    assert rt.path.is_file() and rt.path.parent.parent == tmp and rt.path.parent.name.startswith("mtdense-runtime-")
    check_outputs(rt, model, batch(SIZE, n=1))
