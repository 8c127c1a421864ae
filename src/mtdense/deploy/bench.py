"""Speed of the deploy paths, measured side by side with the write-up's network.

One run times every requested backend on the same input, batch 1: warm-up runs, then timed
runs (CUDA events and ``cudnn.benchmark`` on a GPU, ``time.perf_counter`` on a CPU), taken
round-robin over the backends so that a change of machine load falls on all rows alike.

No row is timed while another runtime's threads spin on its cores: the PyTorch rows are timed
apart from the others, and while ONNX Runtime, OpenVINO or the fused kernel run, PyTorch keeps
one thread (its idle OpenMP workers never wake, so they cannot spin); ONNX Runtime sessions
park their threads after each run. The whole comparison is repeated (``repeats``, default 3)
and every ratio is reported as its median over the repeats with the range, next to the load
average before and after (:mod:`mtdense.deploy.machine`). Each row reports mean +- std and median latency, FPS, parameters, GFLOPs
(:func:`mtdense.complexity.model_complexity`), achieved GFLOP/s, peak memory, and how far its
outputs are from eager fp32 PyTorch on the same input (segmentation argmax agreement, depth
difference in metres). Two ``reference`` rows time the write-up's network
(:mod:`mtdense.deploy.reference`) in eager fp32 and under ONNX Runtime fp32, so every speed-up is a
ratio measured in the same process on the same input.

Backends:

=============== ======================================================================
``eager``        PyTorch fp32, NCHW.
``channels_last`` PyTorch fp32, NHWC memory format.
``compile``      ``torch.compile`` (inductor) of the fp32 model; a failure becomes a row note.
``ort``          ONNX Runtime fp32 of :class:`~mtdense.deploy.rewrite.DeployNet` (the mtdense export).
``ort_plain``    ONNX Runtime fp32 of the training graph as is (shows what DeployNet buys).
``ort_int8``     ONNX Runtime, static int8 QDQ of the DeployNet export.
``ov``           OpenVINO fp32 (CPU, latency hint) of the DeployNet export converted to IR;
                 needs ``pip install "mtdense[openvino]"`` (a default CPU backend when installed).
``fused``        :class:`mtdense.deploy.fused.FusedNet`: ONNX Runtime fp32 up to the finest decoder
                 level, then a compiled kernel for that level and the heads (CPU; needs a C
                 compiler, else the row says so).
``fp16``         PyTorch fp16, channels-last (CUDA only).
``cuda_graph``   fp16 channels-last replayed from a captured CUDA graph (CUDA only).
=============== ======================================================================

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` (tensors only); on a CPU the growth
of the process's peak resident set (``VmHWM`` in ``/proc/self/status``, reset before each
backend through ``/proc/self/clear_refs``) over the resident set before it, which counts
memory allocated by any library (PyTorch, ONNX Runtime, OpenVINO), unlike ``tracemalloc``.
"""

from __future__ import annotations

import copy
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from mtdense.complexity import model_complexity
from mtdense.data.image import normalize_images, read_image
from mtdense.deploy.machine import load_average, machine_info
from mtdense.io import write_text_atomic
from mtdense.deploy.openvino import openvino_available
from mtdense.deploy.parity import Parity, compare_outputs
from mtdense.deploy.reference import to_reference
from mtdense.deploy.runtime import RUNTIMES, RuntimeOptions, create_runtime

__all__ = [
    "BACKENDS", "CPU_BACKENDS", "GPU_BACKENDS", "BenchRow", "BenchResult", "benchmark", "format_table",
    "format_markdown", "write_markdown", "machine_info", "MARK_BEGIN", "MARK_END",
]

BACKENDS = tuple(RUNTIMES)
"""Every registered runtime (:data:`mtdense.deploy.runtime.RUNTIMES`) is a backend."""
# ``ov`` is a default only where OpenVINO is installed; asked for without it, its row says how to install it.
CPU_BACKENDS = ("eager", "channels_last", "compile", "ort", *(("ov",) if openvino_available() else ()), "ort_int8", "fused")
GPU_BACKENDS = ("eager", "channels_last", "compile", "fp16", "cuda_graph", "ort")
MARK_BEGIN = "<!-- mtdense bench: begin -->"
MARK_END = "<!-- mtdense bench: end -->"


@dataclass
class BenchRow:
    """One timed configuration.

    Attributes:
        model: ``"mtdense"`` or ``"reference"``.
        backend: One of :data:`BACKENDS`.
        times_ms: Latency of each timed run in milliseconds (empty if it could not run).
        params: Parameters.
        gflops: GFLOPs of one forward pass (multiply-add = 2).
        peak_mem_mb: Peak memory in MiB (see the module docstring for the method), or None.
        parity: Outputs compared with eager fp32 of the same network on the same input.
        note: Why a row has no timings, or what it ran exactly.
        engine: What ran it (``PyTorch`` rows are timed apart from the others).
        repeat_medians: Median latency of each repeat of the comparison.
    """

    model: str
    backend: str
    times_ms: list[float] = field(default_factory=list)
    params: int = 0
    gflops: float = 0.0
    peak_mem_mb: float | None = None
    parity: Parity | None = None
    note: str = ""
    engine: str = ""
    repeat_medians: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.model} {self.backend}"

    @property
    def ok(self) -> bool:
        return bool(self.times_ms)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms) if self.times_ms else float("nan")

    @property
    def mean_ms(self) -> float:
        return statistics.fmean(self.times_ms) if self.times_ms else float("nan")

    @property
    def std_ms(self) -> float:
        return statistics.stdev(self.times_ms) if len(self.times_ms) > 1 else 0.0

    @property
    def fps(self) -> float:
        return 1000.0 / self.median_ms if self.times_ms else float("nan")

    @property
    def gflops_per_s(self) -> float:
        return self.gflops / (self.median_ms / 1000.0) if self.times_ms else float("nan")


@dataclass
class BenchResult:
    """All rows of one run plus what it ran on."""

    rows: list[BenchRow]
    size: tuple[int, int]
    device: str
    warmup: int
    runs: int
    machine: dict[str, str]
    input_desc: str
    repeats: int = 1
    load_before: float | None = None
    load_after: float | None = None
    threads: str = ""

    def row(self, model: str, backend: str) -> BenchRow | None:
        return next((r for r in self.rows if r.model == model and r.backend == backend), None)

    @property
    def baseline(self) -> BenchRow | None:
        """The reference network under ONNX Runtime fp32 (the ratio column's denominator)."""
        ref = self.row("reference", "ort")
        return ref if ref is not None and ref.ok else None

    def ratios(self, row: BenchRow) -> list[float]:
        """Speed-up of ``row`` over the reference under ONNX Runtime, one per repeat (same repeat, same phase of load)."""
        base = self.baseline
        if base is None or not row.ok:
            return []
        return [b / r for b, r in zip(base.repeat_medians, row.repeat_medians) if r > 0]

    def ratio_text(self, row: BenchRow) -> str:
        """``2.05x (1.98-2.11)``: the median speed-up over the repeats and its range; ``-`` without a baseline."""
        ratios = self.ratios(row)
        if not ratios:
            return "-"
        text = f"{statistics.median(ratios):.2f}x"
        return text if len(ratios) == 1 else f"{text} ({min(ratios):.2f}-{max(ratios):.2f})"

    def fastest_accurate(self, min_agreement: float = 0.99, max_mean_rel: float = 0.01) -> BenchRow | None:
        """Fastest mtdense row whose outputs match eager fp32 (agreement and depth thresholds)."""
        ok = [r for r in self.rows if r.model == "mtdense" and r.ok and r.parity is not None and r.parity.ok(min_agreement, max_mean_rel)]
        return min(ok, key=lambda r: r.median_ms) if ok else None


# -- memory ----------------------------------------------------------------------------------
def _rss_kib(field_name: str) -> int | None:
    try:
        found = re.search(rf"{field_name}:\s+(\d+) kB", Path("/proc/self/status").read_text())
    except OSError:
        return None
    return int(found.group(1)) if found else None


class _PeakMemory:
    """Peak memory of a block: CUDA allocator peak, or CPU peak-RSS growth (Linux)."""

    def __init__(self, device: str):
        self.device = device
        self.peak_mb: float | None = None

    def __enter__(self) -> "_PeakMemory":
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
                self._base = _rss_kib("VmRSS")
            except OSError:
                self._base = None
        return self

    def __exit__(self, *exc) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self._base) / 2**20
        elif self._base is not None:
            hwm = _rss_kib("VmHWM")
            self.peak_mb = None if hwm is None else max(0, hwm - self._base) / 1024


# -- timing ----------------------------------------------------------------------------------
def _time_once(fn: Callable[[], object], device: str) -> float:
    """Milliseconds of one call: CUDA events on a GPU, ``perf_counter`` on a CPU."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end)
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000.0


# -- the benchmark ---------------------------------------------------------------------------
def benchmark(
    model: nn.Module,
    size: tuple[int, int] = (400, 1024),
    backends: Sequence[str] = CPU_BACKENDS,
    device: str = "cpu",
    warmup: int = 3,
    runs: int = 20,
    reference: bool = True,
    images: Sequence[str | Path | np.ndarray] | None = None,
    threads: int | None = None,
    workdir: str | Path | None = None,
    log: Callable[[str], None] = print,
    repeats: int = 3,
) -> BenchResult:
    """Time ``model`` (and the write-up's reference network) on each backend, batch 1.

    Args:
        model: A :class:`~mtdense.models.MultiTaskNet` with ``seg`` and ``depth`` heads.
        size: Input ``(H, W)``.
        backends: Subset of :data:`BACKENDS`, in the order to run.
        device: ``"cpu"`` or ``"cuda"``.
        warmup, runs: Untimed runs per backend, then timed rounds (one run of every backend each)
            per repeat.
        reference: Add the ``reference eager`` and ``reference ort`` rows.
        images: Real images: the first is the timed input (resized to ``size``), all of them
            calibrate ``ort_int8``. ``None``: a fixed random RGB image (timing only; int8 is
            then calibrated on it, which says nothing about int8 accuracy).
        threads: Intra-op threads for PyTorch and ONNX Runtime (``None``: library defaults).
        workdir: Where ONNX files are written (a temporary folder by default).
        log: Progress messages.
        repeats: Times the whole interleaved comparison is run; ratios are reported as their
            median over the repeats with the range.

    Returns:
        A :class:`BenchResult`; rows that could not run carry a ``note`` and no timings.
    """
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; valid: {', '.join(BACKENDS)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available here")
    if repeats < 1 or runs < 1 or warmup < 0:
        raise ValueError(f"repeats and runs must be >= 1 and warmup >= 0, got {repeats}, {runs} and {warmup}")
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    load_before = load_average()
    if threads is not None:
        torch.set_num_threads(threads)
    model = copy.deepcopy(model).cpu().eval()
    h, w = size
    if images:
        input_desc = f"image {images[0] if isinstance(images[0], (str, Path)) else 'array'} resized to {h}x{w}"
    else:
        images = [np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)]
        input_desc = f"uniform random RGB image {h}x{w} (seed 0): timing only, int8 calibrated on it"
    first = images[0]
    x_cpu = normalize_images([read_image(first) if isinstance(first, (str, Path)) else first], size)
    x_dev = x_cpu.to(device)

    nets = {"mtdense": model}
    if reference:
        nets["reference"] = to_reference(model)
    stats = {name: model_complexity(net, size)[-1] for name, net in nets.items()}

    tmp = tempfile.TemporaryDirectory(prefix="mtdense-bench-") if workdir is None else None
    work = Path(tmp.name if tmp else workdir)
    work.mkdir(parents=True, exist_ok=True)
    # (network, row label, runtime): the reference network runs under ONNX Runtime as its own
    # code exports it, the training graph as is.
    plan = [("mtdense", b, b) for b in backends]
    if reference:
        plan += [("reference", "eager", "eager"), ("reference", "ort", "ort_plain")]
    rows: list[BenchRow] = []
    truth: dict[str, dict[str, torch.Tensor]] = {}
    try:
        for name in nets:  # eager fp32 outputs on the same input: what every row is compared with
            with torch.inference_mode():
                truth[name] = {k: v.float().cpu() for k, v in nets[name].to(device)(x_dev).items()}
            nets[name].cpu()
        runners: dict[int, Callable[[], object]] = {}
        for name, backend, runtime_name in plan:
            net = nets[name]
            row = BenchRow(name, backend, params=stats[name].params, gflops=stats[name].gflops)
            rows.append(row)
            log(f"[bench] preparing {row.name} ...")
            try:
                # Fixed shapes where a runtime can specialise (faster ONNX Runtime plans); each
                # runtime's threads stop spinning after a run, so rows do not slow each other.
                options = RuntimeOptions(device=device, threads=threads, size=size, work_dir=work / name, calibration=images)
                runtime = create_runtime(runtime_name, net, options)
                inp = x_dev if device == "cuda" else x_cpu

                def run(runtime=runtime, inp=inp) -> dict[str, torch.Tensor]:
                    return runtime(inp)

                row.note, row.engine = runtime.note, runtime.engine
                with _PeakMemory(device) as mem:  # first run + warm-up: where the peak is reached
                    out = run()
                    for _ in range(warmup):
                        run()
                row.peak_mem_mb = mem.peak_mb
            except Exception as exc:  # report, keep benchmarking the other backends
                row.note = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
                log(f"[bench] {row.name}: {row.note}")
                continue
            row.parity = compare_outputs({k: torch.as_tensor(v).float().cpu() for k, v in out.items()}, truth[name])
            log(f"[bench] {row.name}: vs eager fp32 {row.parity}")
            runners[len(rows) - 1] = run
        torch_threads = _time_rows(rows, runners, device, runs, repeats)
        for r in rows:
            if r.ok:
                log(f"[bench] {r.name}: median {r.median_ms:.1f} ms")
    finally:
        if tmp is not None:
            tmp.cleanup()
    others = "ONNX Runtime " + (f"{threads} threads" if threads else "default threads (one per core)")
    thread_note = f"PyTorch {torch_threads} threads" + (" (1 while the other rows run)" if device == "cpu" else "") + f"; {others}"
    return BenchResult(rows, size, device, warmup, runs, machine_info(device), input_desc, repeats=repeats,
                       load_before=load_before, load_after=load_average(), threads=thread_note)


def _time_rows(rows: list[BenchRow], runners: dict[int, Callable[[], object]], device: str, runs: int, repeats: int) -> int:
    """Timed runs of every ready row, ``repeats`` times over; returns PyTorch's thread count.

    Each repeat times the PyTorch rows, then the others, each group round-robin with the first
    row rotating, so a change of load on a shared machine, or thermal drift, falls on every row
    of a group alike. While the other rows run, PyTorch keeps one thread: its idle OpenMP
    workers are then never woken, and cannot spin on the cores that another runtime is using.
    """
    torch_threads = torch.get_num_threads()
    groups = [[j for j in runners if rows[j].engine == "PyTorch"], [j for j in runners if rows[j].engine != "PyTorch"]]
    bar = tqdm(total=repeats * runs * sum(1 for g in groups if g), desc="timed rounds", unit="round")
    for _ in range(repeats):
        for g, group in enumerate(groups):
            if not group:
                continue
            quiet = g == 1 and device == "cpu"
            if quiet:
                torch.set_num_threads(1)
                time.sleep(0.2)  # PyTorch's workers finish spinning after its last parallel region
            times: dict[int, list[float]] = {j: [] for j in group}
            try:
                for i in range(runs):
                    for j in group[i % len(group):] + group[: i % len(group)]:
                        times[j].append(_time_once(runners[j], device))
                    bar.update(1)
            finally:
                if quiet:
                    torch.set_num_threads(torch_threads)
            for j, t in times.items():
                rows[j].times_ms += t
                rows[j].repeat_medians.append(statistics.median(t))
    bar.close()
    return torch_threads


# -- tables ----------------------------------------------------------------------------------
def _fmt_parity(row: BenchRow) -> tuple[str, str]:
    if row.parity is None:
        return "-", "-"
    return f"{100 * row.parity.seg_agreement:.2f}", f"{100 * row.parity.depth_mean_rel:.3f}"


def format_table(result: BenchResult) -> str:
    """A plain-text table of the rows (what ``mtdense bench`` prints)."""
    base = result.baseline
    head = f"{'model':<10}{'backend':<14}{'mean+-std ms':>16}{'median':>9}{'FPS':>7}{'vs ref ORT (range)':>20}{'GFLOP/s':>9}{'peak MiB':>9}{'agree %':>9}{'d rel %':>9}  note"
    lines = [head, "-" * len(head)]
    for r in result.rows:
        agree, rel = _fmt_parity(r)
        if r.ok:
            lines.append(
                f"{r.model:<10}{r.backend:<14}{f'{r.mean_ms:.1f} +- {r.std_ms:.1f}':>16}{r.median_ms:>9.1f}{r.fps:>7.1f}"
                f"{result.ratio_text(r):>20}{r.gflops_per_s:>9.1f}{(f'{r.peak_mem_mb:.0f}' if r.peak_mem_mb is not None else '-'):>9}"
                f"{agree:>9}{rel:>9}  {r.note}"
            )
        else:
            lines.append(f"{r.model:<10}{r.backend:<14}{'-':>16}{'-':>9}{'-':>7}{'-':>20}{'-':>9}{'-':>9}{'-':>9}{'-':>9}  {r.note}")
    rows = [r for r in result.rows if r.ok]
    if rows:
        r0 = rows[0]
        lines.append(f"params {r0.params:,}  GFLOPs {r0.gflops:.2f} at {result.size[0]}x{result.size[1]}, batch 1; "
                     f"{result.warmup} warm-up + {result.runs} timed runs x {result.repeats} repeats; input: {result.input_desc}")
    lines.append(f"{_load_text(result)}; {result.threads}; CPU {result.machine['cpu']} ({result.machine['cpu flags']})")
    best = result.fastest_accurate()
    if best is not None and base is not None:
        lines.append(f"fastest path with agreement >= 99% and depth mean rel <= 1%: {best.name} {best.median_ms:.1f} ms = "
                     f"{result.ratio_text(best)} the reference under ORT fp32 ({base.median_ms:.1f} ms)")
    return "\n".join(lines)


def _load_text(result: BenchResult) -> str:
    def fmt(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}"

    return f"load average {fmt(result.load_before)} before, {fmt(result.load_after)} after"


def format_markdown(result: BenchResult, command: str = "") -> str:
    """The rows as a markdown section: machine, settings, table, method notes."""
    base = result.baseline
    m = result.machine
    out = [MARK_BEGIN, ""]
    out.append(f"Machine: {m['cpu']} ({m['cpu flags']}), {m['cores']} cores"
               + (f", GPU {m['gpu']} (CUDA {m['cuda']})" if "gpu" in m else "")
               + f"; torch {m['torch']}, onnxruntime {m['onnxruntime']}"
               + (f", openvino {m['openvino']}" if "openvino" in m else "")
               + f", Python {m['python']}; {m['date']}; {_load_text(result)} (other processes share the CPU); "
               + f"{result.threads}.")
    out.append("")
    out.append(f"Input {result.size[0]}x{result.size[1]}, batch 1, device `{result.device}`: {result.warmup} warm-up then "
               f"{result.runs} timed runs per row and repeat, taken round-robin over the rows ({result.input_desc}); the "
               f"whole comparison repeated {result.repeats} times, speed-ups given as their median over the repeats with "
               "the range. No row is timed while another runtime's threads spin: PyTorch rows are timed apart, PyTorch "
               "keeps one thread while the others run, and ONNX Runtime sessions park their threads after each run.")
    if command:
        out.append(f"Command: `{command}`")
    out.append("")
    out.append("| model | backend | mean +- std [ms] | median [ms] | FPS | speed-up vs reference ORT (range over repeats) | params | GFLOPs | GFLOP/s | peak mem [MiB] | seg agreement [%] | depth mean rel diff [%] | note |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in result.rows:
        agree, rel = _fmt_parity(r)
        if r.ok:
            mem = f"{r.peak_mem_mb:.0f}" if r.peak_mem_mb is not None else "-"
            out.append(f"| {r.model} | {r.backend} | {r.mean_ms:.1f} +- {r.std_ms:.1f} | {r.median_ms:.1f} | {r.fps:.1f} | "
                       f"{result.ratio_text(r)} | {r.params / 1e6:.2f} M | {r.gflops:.2f} | {r.gflops_per_s:.1f} | {mem} | {agree} | {rel} | {r.note} |")
        else:
            out.append(f"| {r.model} | {r.backend} | - | - | - | - | {r.params / 1e6:.2f} M | {r.gflops:.2f} | - | - | - | - | {r.note} |")
    out.append("")
    best = result.fastest_accurate()
    if best is not None and base is not None:
        out.append(f"Fastest mtdense path whose outputs match eager fp32 PyTorch (agreement >= 99%, depth mean relative "
                   f"difference <= 1%): **{best.backend}**, {best.median_ms:.1f} ms, **{result.ratio_text(best)}** "
                   f"the reference network under ONNX Runtime fp32 ({base.median_ms:.1f} ms).")
        out.append("")
    out.append("Agreement and depth difference compare each row with eager fp32 PyTorch of the same network on the same "
               "input (reference rows with the reference network). Peak memory: "
               + ("CUDA `max_memory_allocated` (PyTorch's allocator; ONNX Runtime's own CUDA arena is not in it) over "
                  "the first run and the warm-up." if result.device == "cuda" else
                  "growth of the process's peak resident set (`VmHWM`, reset through `/proc/self/clear_refs`) over the first "
                  "run and the warm-up."))
    out += ["", MARK_END]
    return "\n".join(out)


def write_markdown(result: BenchResult, path: str | Path, command: str = "") -> Path:
    """Write the markdown table into ``path``: in place of the section between the bench markers
    if the file has them (the prose around it is kept), appended to the file if it has none,
    or as a new file."""
    path = Path(path)
    section = format_markdown(result, command)
    if path.is_file():
        text = path.read_text()
        if MARK_BEGIN in text and MARK_END in text:
            start, end = text.index(MARK_BEGIN), text.index(MARK_END) + len(MARK_END)
            write_text_atomic(path, text[:start] + section + text[end:])
        else:
            write_text_atomic(path, text.rstrip("\n") + "\n\n" + section + "\n")
        return path
    write_text_atomic(path, "# Benchmarks\n\n" + section + "\n")
    return path
