"""``mtdense bench`` end to end (correctness only, never timing) and the reference network."""

import copy

import numpy as np
import pytest
import torch

import mtdense
from mtdense.cli import main
from mtdense.deploy.bench import MARK_BEGIN, MARK_END, BenchResult, BenchRow, benchmark, format_markdown, format_table, write_markdown
from mtdense.deploy.onnx import export_onnx
from mtdense.deploy.parity import Parity
from mtdense.deploy.profile import NodeTime, ort_node_profile, ort_profile
from mtdense.deploy.reference import ReferenceCRPBlock, create_reference_model, to_reference
from mtdense.models import CRPBlock


def tiny():
    torch.manual_seed(0)
    return mtdense.create_model(decoder_channels=16).eval()


def test_reference_crp_adds_every_pooled_and_convolved_map():
    block = CRPBlock(4, n_stages=2)
    ref = copy.deepcopy(block)
    ref.__class__ = ReferenceCRPBlock
    x = torch.randn(1, 4, 9, 11)
    pool, (c1, c2) = block.pool, block.convs
    p1 = pool(x)
    t1 = c1(p1)
    p2 = pool(t1)
    t2 = c2(p2)
    torch.testing.assert_close(ref(x), x + p1 + t1 + p2 + t2)
    torch.testing.assert_close(block(x), x + t1 + c2(pool(t1)))


def test_reference_model_shares_shapes_and_weights_but_not_outputs():
    model = tiny()
    ref = to_reference(model)
    assert sum(isinstance(m, ReferenceCRPBlock) for m in ref.modules()) == len(model.decoder.crp)
    assert not any(isinstance(m, ReferenceCRPBlock) for m in model.modules())  # the original is untouched
    assert {k: v.shape for k, v in ref.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x), ref(x)
    for task in a:
        assert a[task].shape == b[task].shape
    assert not torch.allclose(a["seg"], b["seg"])
    fresh = create_reference_model(decoder_channels=16)
    fresh.load_state_dict(model.state_dict())  # any MultiTaskNet state dict loads into it
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x)["depth"], b["depth"])


def test_benchmark_rows_and_parity():
    result = benchmark(tiny(), size=(64, 96), backends=["eager", "ort"], warmup=0, runs=2, repeats=2, log=lambda s: None)
    names = [r.name for r in result.rows]
    assert names == ["mtdense eager", "mtdense ort", "reference eager", "reference ort"]
    for r in result.rows:
        assert r.ok, r.note
        assert len(r.times_ms) == 4 and all(t > 0 for t in r.times_ms)  # 2 runs x 2 repeats
        assert len(r.repeat_medians) == 2
        assert r.params > 0 and r.gflops > 0
        assert r.parity is not None
    # every fp32 path computes the same function as eager fp32
    for r in result.rows:
        assert r.parity.seg_agreement >= 0.999 and r.parity.depth_mean_rel < 1e-4, r.name
    assert result.baseline is result.row("reference", "ort")
    assert result.fastest_accurate().model == "mtdense"
    table = format_table(result)
    assert "reference ort" in table
    assert "1.00x" in table  # the baseline row against itself


def test_grouped_ort_row_and_int8_row_run_side_by_side():
    """A decoder wide enough for channel groups: the ort row runs the grouped rewrite, int8 the whole one."""
    wide = mtdense.create_model(decoder_channels=64).eval()
    result = benchmark(wide, size=(64, 96), backends=["ort", "ort_int8"], warmup=0, runs=1, repeats=1, reference=False, log=lambda s: None)
    ort_row, int8_row = result.rows
    assert ort_row.ok and "2 channel groups" in ort_row.note
    assert ort_row.parity.seg_agreement >= 0.999 and ort_row.parity.depth_mean_rel < 1e-4
    assert int8_row.ok and "int8" in int8_row.note and "groups" not in int8_row.note
    assert 0.0 <= int8_row.parity.seg_agreement <= 1.0


def test_failed_backend_is_a_row_note():
    result = benchmark(tiny(), size=(64, 96), backends=["fp16"], warmup=0, runs=1, repeats=1, reference=False, log=lambda s: None)
    (row,) = result.rows
    assert not row.ok and "CUDA" in row.note
    assert "CUDA" in format_table(result)
    with pytest.raises(ValueError, match="unknown backends"):
        benchmark(tiny(), backends=["tensorrt"])


def _fake_result() -> BenchResult:
    rows = [
        BenchRow("mtdense", "ort", [10.0, 12.0, 9.0, 15.0, 10.0, 10.0], 100, 1.0, 5.0, Parity(1.0, 0.0, 0.0, 0.0, 0.0, 10), "x",
                 repeat_medians=[11.0, 12.0, 10.0]),
        BenchRow("reference", "ort", [30.0, 30.0, 24.0, 24.0, 31.0, 31.0], 100, 1.0, 5.0, Parity(1.0, 0.0, 0.0, 0.0, 0.0, 10), "y",
                 repeat_medians=[30.0, 24.0, 31.0]),
    ]
    machine = {"cpu": "test cpu", "cpu flags": "avx2 fma", "cores": "2", "torch threads": "2", "torch": "t",
               "onnxruntime": "o", "python": "p", "date": "d"}
    return BenchResult(rows, (64, 96), "cpu", 0, 2, machine, "random", repeats=3, load_before=0.25, load_after=1.5,
                       threads="PyTorch 2 threads; ONNX Runtime 2 threads")


def test_speedup_is_the_median_over_repeats_with_its_range():
    result = _fake_result()
    fast = result.row("mtdense", "ort")
    assert result.ratios(fast) == pytest.approx([30 / 11, 24 / 12, 31 / 10])  # each repeat against its own baseline
    assert result.ratio_text(fast) == "2.73x (2.00-3.10)"
    assert result.ratio_text(result.baseline) == "1.00x (1.00-1.00)"
    table = format_table(result)
    assert "2.73x (2.00-3.10)" in table and "load average 0.25 before, 1.50 after" in table and "avx2 fma" in table


def test_markdown_replaces_only_the_marked_section(tmp_path):
    result = _fake_result()
    md = format_markdown(result, "mtdense bench")
    assert "test cpu" in md and "| mtdense | ort |" in md and "2.73x (2.00-3.10)" in md
    assert "load average 0.25 before, 1.50 after" in md and "repeated 3 times" in md
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Title\n\nprose before\n\n{MARK_BEGIN}\nold table\n{MARK_END}\n\nprose after\n")
    write_markdown(result, doc)
    text = doc.read_text()
    assert "old table" not in text and "prose before" in text and "prose after" in text and "| reference | ort |" in text
    new = write_markdown(result, tmp_path / "new.md")
    assert new.read_text().startswith("# Benchmarks")


def test_bench_cli_end_to_end(tmp_path, capsys):
    md = tmp_path / "bench.md"
    ckpt = mtdense.save_checkpoint(tiny(), tmp_path / "tiny.pth")
    rc = main(["bench", str(ckpt), "--size", "64", "128", "--runs", "1", "--warmup", "0", "--repeats", "2",
               "--backends", "eager,ort", "--markdown", str(md)])
    assert rc == 0
    out = capsys.readouterr().out
    for name in ("eager", "ort", "reference"):
        assert name in out
    assert "vs ref ORT" in out and md.is_file() and MARK_BEGIN in md.read_text()


def test_benchmark_openvino_row_and_parity():
    pytest.importorskip("openvino")
    from mtdense.deploy.bench import BACKENDS, CPU_BACKENDS

    assert "ov" in BACKENDS and "ov" in CPU_BACKENDS  # a default CPU backend once OpenVINO is installed
    result = benchmark(tiny(), size=(64, 96), backends=["eager", "ov"], warmup=0, runs=2, repeats=1, reference=False, threads=1, log=lambda s: None)
    assert [r.name for r in result.rows] == ["mtdense eager", "mtdense ov"]
    ov_row = result.row("mtdense", "ov")
    assert ov_row.ok, ov_row.note
    assert "OpenVINO" in ov_row.note and len(ov_row.times_ms) == 2 and all(t > 0 for t in ov_row.times_ms)
    # parity against eager fp32, computed as for the ort row: the same function up to float rounding
    p = ov_row.parity
    assert p is not None and p.pixels == 64 * 96
    assert p.seg_agreement >= 0.999 and p.depth_mean_rel < 1e-4 and p.depth_max_rel < 1e-4 and p.logits_max_abs < 1e-4
    assert "openvino" in result.machine
    assert "ov" in format_table(result) and "openvino" in format_markdown(result)


def test_openvino_backend_without_openvino_is_a_row_note(monkeypatch):
    monkeypatch.setattr("mtdense.deploy.openvino.openvino_available", lambda: False)
    result = benchmark(tiny(), size=(64, 96), backends=["ov"], warmup=0, runs=1, reference=False, log=lambda s: None)
    (row,) = result.rows
    assert not row.ok and 'pip install "mtdense[openvino]"' in row.note


def test_node_time_resolution_names_the_feature_map_stride():
    size = (400, 1024)
    assert NodeTime("Resize", "up", 1.0, (1, 19, 400, 1024)).resolution(size) == "1/1"
    assert NodeTime("Conv", "c", 1.0, (1, 256, 100, 256)).resolution(size) == "1/4"
    assert NodeTime("Conv", "c", 1.0, (1, 256, 13, 32)).resolution(size) == "1/32"  # 400 / 32 rounds up to 13
    assert NodeTime("ReduceMean", "se", 1.0, (1, 16, 1, 1)).resolution(size) == "other"
    assert NodeTime("Shape", "s", 1.0, (4,)).resolution(size) == "other"


def test_ort_node_profile_leaves_out_warm_up_and_sums_to_the_operator_profile(tmp_path):
    path = export_onnx(tiny(), tmp_path / "m.onnx", (64, 128), dynamic=False)
    x = np.zeros((1, 3, 64, 128), np.float32)
    prof = ort_node_profile(path, x, runs=3, warmup=1)
    assert len(prof.run_ms) == 3 and all(ms > 0 for ms in prof.run_ms)
    ops = {n.op for n in prof.nodes}
    assert {"Conv", "MaxPool"} <= ops
    assert all(n.ms >= 0 for n in prof.nodes)
    # the finest decoder level (1/4) and the upsampled outputs (1/1) are both found
    assert {"1/4", "1/1"} <= {n.resolution((64, 128)) for n in prof.nodes}
    # the per-operator profile counts every node once
    by_op = ort_profile(path, x, runs=3)
    assert sorted(op for op, _, _ in by_op) == sorted(ops)
    assert sum(count for _, _, count in by_op) == len(prof.nodes)


def test_pytorch_rows_are_timed_apart_and_keep_one_thread_while_the_others_run(monkeypatch):
    """While an ONNX Runtime row is timed, PyTorch has one thread (its idle workers cannot spin) and no PyTorch row runs."""
    from mtdense.deploy import bench

    calls = []
    real = bench._time_once

    def spy(fn, device):
        engine = "PyTorch" if getattr(fn, "__defaults__", None) and fn.__defaults__[0].engine == "PyTorch" else "other"
        calls.append((engine, torch.get_num_threads()))
        return real(fn, device)

    torch.set_num_threads(2)
    monkeypatch.setattr(bench, "_time_once", spy)
    result = benchmark(tiny(), size=(64, 96), backends=["eager", "ort"], warmup=0, runs=2, repeats=2, log=lambda s: None)
    assert torch.get_num_threads() == 2  # restored
    engines = [e for e, _ in calls]
    # per repeat: 2 rounds of the 2 PyTorch rows, then 2 rounds of the 2 ONNX Runtime rows
    assert engines == (["PyTorch"] * 4 + ["other"] * 4) * 2
    assert {t for e, t in calls if e == "other"} == {1} and {t for e, t in calls if e == "PyTorch"} == {2}
    assert "1 while the other rows run" in result.threads


def test_wait_for_idle_waits_for_a_quiet_machine_then_refuses_a_busy_one(monkeypatch):
    from mtdense.deploy import machine

    loads = iter([2.0, 1.2, 0.4])
    monkeypatch.setattr(machine, "load_average", lambda: next(loads))
    monkeypatch.setattr(machine.time, "sleep", lambda s: None)
    said = []
    assert machine.wait_for_idle(timeout_s=60, log=said.append) == 0.4
    assert len(said) == 1 and "2.00" in said[0]
    monkeypatch.setattr(machine, "load_average", lambda: 3.0)
    with pytest.raises(machine.MachineBusy, match=r"load average 3.00 > 0.5 after waiting 0 s"):
        machine.wait_for_idle(timeout_s=0, log=said.append)


def test_bench_cli_refuses_a_busy_machine_under_require_idle(monkeypatch, capsys):
    from mtdense.deploy import machine

    monkeypatch.setattr(machine, "load_average", lambda: 5.0)
    assert main(["bench", "--require-idle", "0", "--runs", "1", "--size", "64", "96"]) == 2
    err = capsys.readouterr().err
    assert "mtdense bench: error: load average 5.00 > 0.5" in err and "Traceback" not in err
