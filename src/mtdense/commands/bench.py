"""``mtdense bench``: latency of each deploy path, side by side with the write-up's network."""

from __future__ import annotations

import argparse
import shlex
import sys

from mtdense.deploy.bench import BACKENDS, CPU_BACKENDS, GPU_BACKENDS
from mtdense.deploy.machine import IDLE_LOAD
from mtdense.deploy.runtime import RUNTIMES

DESCRIPTION = f"""\
Time the model on several backends at batch 1 and print one row per backend: mean +- std and
median latency, FPS, speed-up over the reference network under ONNX Runtime fp32, achieved
GFLOP/s, peak memory, and how closely the outputs match eager fp32 PyTorch on the same input
(segmentation argmax agreement, mean relative depth difference).

Every run also times the write-up's network (mtdense.deploy.reference: same weights, its Chained
Residual Pooling adds every pooled map as well) in eager fp32 and under ONNX Runtime fp32,
so speed-ups are measured in the same process on the same input.

Neighbours cannot skew it: PyTorch rows are timed apart from the others, PyTorch keeps one
thread while ONNX Runtime or the fused kernel runs, and ONNX Runtime parks its threads after
each run. The whole comparison is repeated (--repeats, default 3): speed-ups are the median
over the repeats with their range, printed with the load average before and after, the CPU
model and flags, and the thread counts. On a shared machine trust the ratios, not the
milliseconds; --require-idle waits for a quiet machine or refuses to run.

Backends (the runtimes of mtdense.deploy; ort_int8 is calibrated on --images, else on the
random input: timing only):
{chr(10).join(f"  {name:<14} {cls.description} ({', '.join(cls.devices)})" for name, cls in RUNTIMES.items())}
Defaults: {','.join(CPU_BACKENDS)} on a CPU, {','.join(GPU_BACKENDS)} on CUDA; 3 warm-up +
20 timed runs on a CPU, 10 + 300 on CUDA (CUDA events, cudnn.benchmark).
Without CKPT a randomly initialised default model is timed (speed does not depend on the
weights; agreement figures of an untrained model mean little).

With --video FILE it times what 'mtdense predict' gets on a video instead: frames per second end
to end (decoding, pre-processing, the network, post-processing, panels, encoding and writing
the annotated video into a temporary folder, overlapped as predict runs them) next to the same
runtime alone on the same frames (pre-decoded and pre-processed, run back to back), and their
ratio; the two alternate --repeats times (the median and range are printed) after 3 warm-up
runs. One backend (--backend; default fused where a C compiler is, else ort) at --size."""

EPILOG = """\
examples:
  mtdense bench --size 400 1024 --require-idle
  mtdense bench runs/demo/model.pth --backends eager,ort,ort_int8 --images data/val_images --markdown docs/benchmarks.md
  mtdense bench --device cuda --backends eager,fp16,cuda_graph --runs 300 --warmup 10
  mtdense bench runs/demo/model.pth --video drive.mp4 --backend fused --size 400 1024"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="latency per backend (PyTorch, ONNX Runtime fp32/int8) vs the write-up's network",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", nargs="?", help="model checkpoint (default: random default model)")
    p.add_argument("--encoder", default="mobilenet_v3_small", help="encoder of the random model without CKPT (default: %(default)s)")
    p.add_argument("--size", nargs=2, type=int, default=[400, 1024], metavar=("H", "W"), help="input size (default: 400 1024)")
    p.add_argument("--backends", help=f"comma-separated subset of {','.join(BACKENDS)}")
    p.add_argument("--backend", metavar="NAME", help="one backend: the same as --backends NAME (for --video)")
    p.add_argument("--video", metavar="FILE", help="time a video end to end (as 'mtdense predict' runs it) next to the network alone")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default: %(default)s)")
    p.add_argument("--runs", type=int, help="timed runs (default: 20 on CPU, 300 on CUDA)")
    p.add_argument("--warmup", type=int, help="untimed warm-up runs (default: 3 on CPU, 10 on CUDA)")
    p.add_argument("--threads", type=int, help="intra-op threads for PyTorch and ONNX Runtime (default: library defaults)")
    p.add_argument("--images", help="folder of real images: the first is the input, up to 32 calibrate ort_int8")
    p.add_argument("--no-reference", action="store_true", help="skip the two reference rows")
    p.add_argument("--repeats", type=int, default=3,
                   help="times the whole interleaved comparison is run; speed-ups are given as their median and range (default: 3)")
    p.add_argument("--require-idle", nargs="?", type=float, const=300.0, metavar="SECONDS",
                   help=f"wait up to SECONDS (default 300) for a 1-minute load average <= {IDLE_LOAD}, else refuse to run")
    p.add_argument("--markdown", metavar="FILE", help="also write the table (with the machine) into FILE, e.g. docs/benchmarks.md")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mtdense.deploy.bench import benchmark, format_table, write_markdown
    from mtdense.deploy.int8 import calibration_images
    from mtdense.deploy.machine import wait_for_idle
    from mtdense.models import create_model, load_model

    if args.backend:
        if args.backends and args.backends.strip() != args.backend:
            raise ValueError(f"--backend {args.backend} and --backends {args.backends}: give one of them")
        args.backends = args.backend
    if args.video:
        return _video(args)
    cuda = args.device == "cuda"
    backends = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else list(GPU_BACKENDS if cuda else CPU_BACKENDS)
    runs = args.runs if args.runs is not None else (300 if cuda else 20)
    warmup = args.warmup if args.warmup is not None else (10 if cuda else 3)
    if runs < 1 or warmup < 0:
        raise ValueError(f"--runs must be >= 1 and --warmup >= 0, got {runs} and {warmup}")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if args.require_idle is not None:
        wait_for_idle(timeout_s=args.require_idle, log=lambda s: print(s, file=sys.stderr))
    model = load_model(args.checkpoint) if args.checkpoint else create_model(args.encoder)
    images = calibration_images(args.images, 32) if args.images else None
    result = benchmark(
        model, size=tuple(args.size), backends=backends, device=args.device, warmup=warmup, runs=runs,
        reference=not args.no_reference, images=images, threads=args.threads, log=lambda s: print(s, file=sys.stderr),
        repeats=args.repeats,
    )
    print(format_table(result))
    if args.markdown:
        command = "mtdense " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else ""
        print(f"wrote {write_markdown(result, args.markdown, command)}")
    return 0 if any(r.ok for r in result.rows) else 1


def _video(args: argparse.Namespace) -> int:
    """``--video``: end-to-end FPS of the pipeline next to the network alone, as a table."""
    import statistics
    from pathlib import Path

    from mtdense.deploy.machine import load_average, wait_for_idle
    from mtdense.deploy.runtime import RuntimeOptions, runtime_class
    from mtdense.inference import Predictor
    from mtdense.models import create_model, load_model
    from mtdense.pipeline import time_video

    video = Path(args.video)
    if not video.is_file():
        raise FileNotFoundError(f"{video}: no such video; give a video file to --video")
    names = [b.strip() for b in args.backends.split(",") if b.strip()] if args.backends else []
    if len(names) > 1:
        raise ValueError(f"--video times one backend, got {', '.join(names)}; pass --backend NAME")
    backend = names[0] if names else ("ort" if runtime_class("fused").unavailable(RuntimeOptions()) else "fused")
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    warmup = 3 if args.warmup is None else args.warmup
    if args.require_idle is not None:
        wait_for_idle(timeout_s=args.require_idle, log=lambda s: print(s, file=sys.stderr))
    model = load_model(args.checkpoint) if args.checkpoint else create_model(args.encoder)
    size = (int(args.size[0]), int(args.size[1]))
    predictor = Predictor(model, device=args.device, size=size, backend=backend, threads=args.threads)
    load_before = load_average()
    timing = time_video(predictor, video, repeats=args.repeats, warmup=warmup, log=lambda s: print(s, file=sys.stderr))
    load_after = load_average()

    def cell(values: list[float], digits: int = 2) -> str:
        rng = f" ({min(values):.{digits}f}-{max(values):.{digits}f})" if len(values) > 1 else ""
        return f"{statistics.median(values):.{digits}f}{rng}"

    def ms(values: list[float]) -> str:
        return f"{1000 / statistics.median(values):.1f}"

    load = " / ".join("n/a" if x is None else f"{x:.2f}" for x in (load_before, load_after))
    runtime = predictor.runtime
    print(f"video {video}: {timing.frames} frames end to end, {timing.network_frames} for the network alone; "
          f"network input {size[0]} x {size[1]}; backend {runtime.name} ({runtime.engine}); {args.repeats} repeat(s), "
          f"median (range)")
    print(f"load average before / after: {load}; threads: runtime {args.threads or 'default'}, PyTorch "
          f"{'1 during the run' if runtime.engine != 'PyTorch' else 'default'}")
    print()
    print("| measurement | frames/s | ms/frame |")
    print("|---|---|---|")
    print(f"| network alone | {cell(timing.network)} | {ms(timing.network)} |")
    print(f"| end to end | {cell(timing.end_to_end)} | {ms(timing.end_to_end)} |")
    print(f"| end to end / network | {cell(timing.ratios)} | |")
    stages = {k: statistics.median(run[k] for run in timing.stage_ms) for k in timing.stage_ms[0]}
    print()
    print("inside the pipeline, each stage's working time (queue waits excluded), ms/frame, median: "
          + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
          + "; the stages share the cores, so where they add up to more than the cores give, the CPU sets the pace")
    return 0
