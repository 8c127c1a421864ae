"""Videos and folders of images end to end, with reading and writing overlapped with the network.

Three stages, each in its own thread, joined by bounded queues::

    reader     decode (OpenCV) + pre-process (resize, normalise)             -> queue of maxsize
    inference  the runtime (ONNX Runtime, the compiled kernel, PyTorch, ...) -> queue of maxsize
    writer     post-process (labels and metres at the input's size), panels, encode, write

OpenCV's decoder and encoder, NumPy, PyTorch's operators, ONNX Runtime and the compiled kernel
release the GIL, so while the network runs on frame ``i`` the reader decodes frame ``i + 1``
and the writer encodes frame ``i - 1``.

- Memory: at most ``maxsize`` items (4 by default) wait in each queue and one is in each stage,
  so the reader is never more than ``2 * maxsize + 2`` items ahead of the writer.
- Order: one thread per stage and first-in-first-out queues keep the input's order.
- Accounting: a fault of one input (:func:`is_input_fault`: a corrupt or truncated image or
  frame, one over the pixel limit, out of memory on it) travels with its item to the writer,
  which reports it in one line naming the file (and the frame index) and goes on. Frames a video
  announces but that cannot be decoded are reported too. At the end ``read == written +
  skipped`` (:class:`Summary`); nothing is dropped without a line.
- Stopping: any other exception in a stage (a bug, a video that cannot be written) sets a stop
  event; every thread leaves its next queue wait within 50 ms, and the exception is raised in
  the caller once all three are joined. Ctrl-C in the caller stops them the same way.
- Priorities: on Linux the reader and writer threads run at a nice value 10 higher than the
  caller's (:data:`HELPER_NICE`; Linux keeps one per thread). Where the cores are all taken the
  network's threads then come first and the other stages fill the gaps, instead of
  pre-empting a thread the network's next parallel step waits for: on 2 shared cores, 400 x
  1024, the fused path went from 9.4 to 10.4 frames/s end to end (median of 4).
- Library threads: pre- and post-processing are those of
  :meth:`~mtdense.inference.Predictor.predict` (the outputs are the same): resizing,
  normalising and decoding depth in PyTorch, the labels' argmax in NumPy, the panel in OpenCV
  (drawn straight in the writer's BGR order). A run holds PyTorch to one thread while the
  runtime is not PyTorch, and OpenCV to one while the network runs on the CPU
  (:meth:`Predictor.helper_threads <mtdense.inference.Predictor.helper_threads>`, restored
  after): the stage threads then do their work inline and never wake a pool that would compete
  with the network's threads. With a PyTorch runtime PyTorch's threads are the network's and
  are left as they are.

    >>> summary = predict_video(predictor, "drive.mp4", "out/drive_annotated.mp4")
    >>> summary.read, summary.written, summary.skipped, summary.fps, summary.model_fps
"""

from __future__ import annotations

import gc
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from mtdense.io import WriteError, atomic_path
from mtdense.outputs import VideoSink, image_files, write_image_files

__all__ = [
    "Item", "Summary", "run_pipeline", "VideoReader", "predict_video", "predict_images", "time_video",
    "is_input_fault", "out_of_memory", "describe_fault", "DEFAULT_QUEUE_SIZE", "HELPER_NICE",
    "lower_priority",
]

DEFAULT_QUEUE_SIZE = 4
"""Items each queue between two stages holds at most."""

HELPER_NICE = 10
"""How much lower the reader's and writer's scheduling priority is than the network's (Linux)."""

_POLL_S = 0.05  # how often a waiting stage looks at the stop event


# -- faults ----------------------------------------------------------------------------------------
def out_of_memory(exc: BaseException) -> bool:
    """A failed allocation: Python's MemoryError, torch's OutOfMemoryError, or the RuntimeError
    PyTorch raises when the CPU allocator fails ("can't allocate memory")."""
    if isinstance(exc, MemoryError):
        return True
    oom = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        words in text for words in ("out of memory", "can't allocate memory", "cannot allocate memory"))


def is_input_fault(exc: BaseException) -> bool:
    """Whether ``exc`` is a fault of one input (skip it, go on) rather than of the program:
    ``ValueError`` (corrupt, truncated, over the pixel limit), ``OSError`` (missing, unreadable,
    its file not writable) or running out of memory on it."""
    return isinstance(exc, (ValueError, OSError)) or out_of_memory(exc)


def _fault_not_write(exc: BaseException) -> bool:
    return is_input_fault(exc) and not isinstance(exc, WriteError)


def describe_fault(name: str | Path, exc: BaseException, path: str | Path | None = None) -> str:
    """``NAME: what; what to do`` on one line, naming the input whether or not the message did.

    Args:
        name: How to name the input (``clip.mp4 frame 12``, or the file).
        exc: What went wrong.
        path: The file, where ``name`` says more (a message that starts with it gets ``name``
            in its place).
    """
    name, path = str(name), str(path if path is not None else name)
    if out_of_memory(exc):
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        return (f"{name}: out of memory ({first}); pass a smaller --size, a lower --max-pixels, "
                "or free memory (fewer jobs at once)")
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith(name):
        return text
    if text.startswith(path):
        return name + text[len(path):]
    return f"{name}: {text}"


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


# -- the engine ------------------------------------------------------------------------------------
@dataclass
class Item:
    """One image or frame on its way through the stages.

    Attributes:
        index: Its place in the input (frame index, or image number), from 0.
        name: How a report names it: the file, or ``FILE frame N``.
        path: The file it comes from.
        stem: The output stem (images).
        rgb: The decoded input, ``H x W x 3`` uint8 RGB (until the writer is done with it).
        x: The network input (reader -> inference).
        out: The runtime's outputs (inference -> writer).
        seconds: Time the runtime took on it.
        model_fps: Items the runtime ran so far / the time it took.
        error: A fault of this input: the writer reports it and counts the item as skipped.
        count: Frames the item stands for (several for frames a video announces but that
            cannot be decoded, reported together).
    """

    index: int
    name: str
    path: Path
    stem: str = ""
    rgb: np.ndarray | None = None
    x: Any = None
    out: Any = None
    seconds: float = 0.0
    model_fps: float = 0.0
    error: BaseException | None = None
    count: int = 1


@dataclass
class Summary:
    """What a run did.

    Attributes:
        read: Frames or images the reader produced (faulty ones included).
        written: Those written.
        skipped: Those reported and skipped (``read == written + skipped`` after a whole run).
        skipped_names: The names of the skipped items, in order.
        inferred: Items the runtime ran; ``model_seconds``: the time it took on them.
        seconds: Wall time of the run, from the start of the threads to the last item written.
        max_queued: The deepest each of the two queues got (at most the queue size).
        busy: Seconds each stage worked (``reader``: decoding and pre-processing; ``inference``;
            ``writer``: post-processing, panels, encoding, writing), queue waits excluded: the
            largest is the stage that sets the pace where the cores are not all taken.
    """

    read: int = 0
    written: int = 0
    skipped: int = 0
    skipped_names: list[str] = field(default_factory=list)
    inferred: int = 0
    model_seconds: float = 0.0
    seconds: float = 0.0
    max_queued: list[int] = field(default_factory=lambda: [0, 0])
    busy: dict[str, float] = field(default_factory=lambda: {"reader": 0.0, "inference": 0.0, "writer": 0.0})

    @property
    def fps(self) -> float:
        """Items written per second of wall time, end to end."""
        return self.written / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        """Items per second of the runtime alone (inside the run)."""
        return self.inferred / self.model_seconds if self.model_seconds > 0 else 0.0


_DONE = object()  # the end of the input, passed down the stages
_STOPPED = object()  # what a wait returns once the stop event is set


def lower_priority(nice: int = HELPER_NICE) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux keeps one per thread; elsewhere,
    or where it is not allowed, nothing changes): what a thread that serves the network's thread
    (decoding, drawing, writing; here and in :mod:`mtdense.serve`) calls first."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def run_pipeline(
    source: Iterable[Item],
    prepare: Callable[[Item], None],
    infer: Callable[[Item], None],
    finish: Callable[[Item], None],
    *,
    maxsize: int = DEFAULT_QUEUE_SIZE,
    report: Callable[[str], None] = _stderr,
    progress: Callable[[int], None] | None = None,
    fault: Callable[[BaseException], bool] = is_input_fault,
    helper_nice: int = HELPER_NICE,
) -> Summary:
    """Run ``source -> prepare`` (reader thread), ``infer`` (inference thread) and ``finish``
    (writer thread), joined by queues of ``maxsize`` items; see the module docstring.

    Args:
        source: Yields the items in order (iterated in the reader thread; an item whose input
            is faulty carries its ``error`` instead of raising).
        prepare: Sets ``item.x`` from ``item.rgb``.
        infer: Sets ``item.out`` from ``item.x`` (timed into ``item.seconds``).
        finish: Writes the item.
        maxsize: Items each queue holds at most (>= 1).
        report: Called with ``skipped NAME: what; what to do`` for each faulty item.
        progress: Called with the number of frames each item stands for once it is done.
        fault: Which exceptions are an input's fault (skip the item) rather than a reason to stop.
        helper_nice: Added to the nice value of the reader and writer threads (Linux; 0: none).

    Returns:
        The :class:`Summary`.

    Raises:
        The first exception a stage raised that is not an input's fault, after every thread
        has ended.
    """
    if maxsize < 1:
        raise ValueError(f"maxsize must be >= 1, got {maxsize}")
    summary = Summary()
    stop = threading.Event()
    errors: list[BaseException] = []
    to_infer: queue.Queue = queue.Queue(maxsize)
    to_write: queue.Queue = queue.Queue(maxsize)

    def fail(exc: BaseException) -> None:
        errors.append(exc)
        stop.set()

    def put(q: queue.Queue, k: int, item: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
            except queue.Full:
                continue
            summary.max_queued[k] = max(summary.max_queued[k], q.qsize())
            return True
        return False

    def get(q: queue.Queue) -> Any:
        while not stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                continue
        return _STOPPED

    def apply(step: Callable[[Item], None], item: Item) -> None:
        if item.error is not None:
            return
        oom = False
        try:
            step(item)
        except Exception as exc:
            if not fault(exc):
                raise
            item.error = exc.with_traceback(None)  # its frames would keep their arrays alive
            item.rgb = item.x = item.out = None
            oom = out_of_memory(exc)
        if oom:  # outside the handler, once the traceback's frames are gone
            _free_memory()

    def reader() -> None:
        items = iter(source)
        lower_priority(helper_nice)
        busy = summary.busy
        try:
            with torch.inference_mode():
                t0 = time.perf_counter()
                for item in items:
                    summary.read += item.count
                    apply(prepare, item)
                    busy["reader"] += time.perf_counter() - t0
                    if not put(to_infer, 0, item):
                        return
                    t0 = time.perf_counter()
            put(to_infer, 0, _DONE)
        except BaseException as exc:
            fail(exc)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()  # a generator's cleanup (a video's capture) runs in the thread that used it

    def inference() -> None:
        try:
            with torch.inference_mode():
                while (item := get(to_infer)) is not _STOPPED:
                    if item is not _DONE and item.error is None:
                        t0 = time.perf_counter()
                        apply(infer, item)
                        if item.error is None:
                            item.seconds = time.perf_counter() - t0
                            summary.inferred += 1
                            summary.model_seconds += item.seconds
                            item.model_fps = summary.inferred / summary.model_seconds if summary.model_seconds > 0 else 0.0
                        summary.busy["inference"] += time.perf_counter() - t0
                    if item is not _DONE:
                        item.x = None
                    if not put(to_write, 1, item) or item is _DONE:
                        return
        except BaseException as exc:
            fail(exc)

    def writer() -> None:
        lower_priority(helper_nice)
        try:
            with torch.inference_mode():
                while (item := get(to_write)) is not _STOPPED and item is not _DONE:
                    t0 = time.perf_counter()
                    apply(finish, item)
                    summary.busy["writer"] += time.perf_counter() - t0
                    if item.error is not None:
                        report(f"skipped {describe_fault(item.name, item.error, item.path)}")
                        summary.skipped += item.count
                        summary.skipped_names.append(item.name)
                    else:
                        summary.written += item.count
                    item.rgb = item.out = item.error = None
                    if progress is not None:
                        progress(item.count)
        except BaseException as exc:
            fail(exc)

    threads = [threading.Thread(target=fn, name=f"mtdense-{fn.__name__}", daemon=True) for fn in (reader, inference, writer)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    try:
        for t in threads:
            while t.is_alive():
                t.join(0.1)
    except BaseException:  # Ctrl-C in the caller: stop the stages, then let it through
        stop.set()
        for t in threads:
            t.join(5.0)
        raise
    summary.seconds = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return summary


# -- videos ----------------------------------------------------------------------------------------
class VideoReader:
    """The frames of a video file, as pipeline :class:`Item` s.

    The file is opened here: one OpenCV cannot open, or whose frames are over the limit, is
    refused before any frame runs. A frame of another size than the first is reported and
    skipped; so are the frames the container announces beyond the last one that decodes (a
    truncated or damaged file), as one item naming their range.

    Args:
        path: The video.
        check_size: Called with ``(H, W)``; raises to refuse the video (``Predictor.check_size``).

    Raises:
        ValueError: OpenCV cannot open it, or ``check_size`` refuses it.
    """

    def __init__(self, path: str | Path, check_size: Callable[[tuple[int, int]], None] | None = None):
        self.path = Path(path)
        self.check_size = check_size
        self.cap = cv2.VideoCapture(str(self.path))
        if not self.cap.isOpened():
            self.cap.release()
            raise ValueError(f"{self.path}: OpenCV cannot open this video (corrupt, or a codec this OpenCV build lacks)")
        fps = self.cap.get(cv2.CAP_PROP_FPS) or 0.0
        self.fps = fps if 0 < fps < 1000 else 25.0  # containers without a frame rate: written at 25 Hz
        self.announced = max(0, int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        hw = (int(self.cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(self.cap.get(cv2.CAP_PROP_FRAME_WIDTH)))
        if check_size is not None and min(hw) > 0:
            try:
                check_size(hw)
            except BaseException:
                self.cap.release()
                raise

    def close(self) -> None:
        """Release the file (also done once the frames are all read)."""
        self.cap.release()

    def __iter__(self) -> Iterator[Item]:
        cap, shape, i = self.cap, None, 0
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    break
                item = Item(index=i, name=f"{self.path} frame {i}", path=self.path)
                if shape is None:
                    if self.check_size is not None:  # containers that do not tell the frame size
                        self.check_size(bgr.shape[:2])
                    shape = bgr.shape
                if bgr.shape != shape:
                    item.error = ValueError(f"{bgr.shape[1]} x {bgr.shape[0]}, not the video's {shape[1]} x {shape[0]}; "
                                            "re-encode the video at one frame size")
                else:
                    item.rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                yield item
                i += 1
            if 0 < i < self.announced:
                last = self.announced - 1
                yield Item(index=i, name=f"{self.path} frame{'s' if last > i else ''} {i}{f'-{last}' if last > i else ''}",
                           path=self.path, count=self.announced - i,
                           error=ValueError(f"could not be decoded, though the container announces {self.announced} frames "
                                            "(a truncated or damaged file); re-encode or replace it"))
        finally:
            cap.release()


def predict_video(predictor, path: str | Path, out_file: str | Path, depth_range: tuple[float, float] = (1.0, 100.0),
                  alpha: float = 0.5, *, maxsize: int = DEFAULT_QUEUE_SIZE, report: Callable[[str], None] = _stderr,
                  progress: Callable[[int], None] | None = None) -> Summary:
    """Annotate every frame of a video with its panel and the measured model FPS, written to
    ``out_file`` (mp4v, atomically) by the three-stage pipeline.

    Args:
        predictor: A :class:`~mtdense.inference.Predictor`.
        path: The video.
        out_file: The annotated video to write.
        depth_range, alpha: As :func:`mtdense.viz.make_panel`.
        maxsize, report, progress: As :func:`run_pipeline`.

    Returns:
        The :class:`Summary` (frames read, written, skipped; model and end-to-end FPS).

    Raises:
        ValueError: OpenCV cannot open or decode the video, or its frames are over the
            predictor's ``max_pixels`` (:class:`~mtdense.inference.ImageTooLarge`, before any frame runs).
        WriteError: ``out_file`` cannot be written.
    """
    path, out_file = Path(path), Path(out_file)
    frames = VideoReader(path, lambda hw: predictor.check_size(hw, path, what="video"))
    device = predictor.device.type

    def finish(item: Item) -> None:
        (pred,) = predictor.predictions(item.out, item.rgb.shape[:2])
        item.out = None
        sink.write(item.rgb, pred.seg, pred.depth, title=f"model {item.model_fps:.1f} FPS ({device})", normals=pred.normals)

    try:
        with predictor.helper_threads(), atomic_path(out_file) as tmp:
            sink = VideoSink(tmp, frames.fps, out_file, depth_range, alpha, palette=predictor.info.palette)
            try:
                summary = run_pipeline(frames, lambda item: _prepare(predictor, item), lambda item: _infer(predictor, item),
                                       finish, maxsize=maxsize, report=report, progress=progress, fault=_fault_not_write)
            finally:
                sink.close()  # the file is finished before it replaces the target
            if summary.written == 0:
                raise ValueError(f"{path}: no frame could be decoded")
    finally:
        frames.close()
    return summary


# -- images ----------------------------------------------------------------------------------------
def _prepare(predictor, item: Item) -> None:
    item.x = predictor.preprocess([item.rgb])


def _infer(predictor, item: Item) -> None:
    item.out = predictor.infer(item.x, item.rgb.shape[:2])


def _image_items(predictor, inputs: Sequence[tuple[Path, str]]) -> Iterator[Item]:
    for i, (path, stem) in enumerate(inputs):
        item = Item(index=i, name=str(path), path=Path(path), stem=stem)
        try:
            item.rgb = predictor.read_image(path)  # refused by its header when over the limit
        except Exception as exc:
            if not is_input_fault(exc):
                raise
            item.error = exc.with_traceback(None)
        yield item


def predict_images(predictor, inputs: Sequence[tuple[str | Path, str]], out: str | Path, panels: bool = True,
                   depth_range: tuple[float, float] = (1.0, 100.0), alpha: float = 0.5, *,
                   maxsize: int = DEFAULT_QUEUE_SIZE, report: Callable[[str], None] = _stderr,
                   progress: Callable[[int], None] | None = None) -> Summary:
    """Write each image's panel and raw PNGs (:func:`~mtdense.outputs.image_files`) into ``out``
    by the three-stage pipeline.

    Each image is computed whole before its first file is written, so one that fails (corrupt,
    over the pixel limit, out of memory) leaves none of its files; it is reported and skipped.

    Args:
        predictor: A :class:`~mtdense.inference.Predictor`.
        inputs: ``(image file, output stem)`` pairs, in the order to run them.
        out: The output folder (existing).
        panels: Also write ``STEM_panel.png``.
        depth_range, alpha: As :func:`mtdense.viz.make_panel`.
        maxsize, report, progress: As :func:`run_pipeline`.

    Returns:
        The :class:`Summary`; ``skipped_names`` are the files skipped.
    """
    def finish(item: Item) -> None:
        (pred,) = predictor.predictions(item.out, item.rgb.shape[:2])  # with normals, for a model that has them
        item.out = None
        write_image_files(out, item.stem, image_files(item.rgb, pred, panels, depth_range, alpha))

    items = [(Path(p), stem) for p, stem in inputs]
    with predictor.helper_threads():
        return run_pipeline(_image_items(predictor, items), lambda item: _prepare(predictor, item),
                            lambda item: _infer(predictor, item), finish, maxsize=maxsize, report=report, progress=progress)


# -- timing ----------------------------------------------------------------------------------------
@dataclass
class VideoTiming:
    """Frames per second of a video end to end and of the network alone on the same frames.

    Attributes:
        frames: Frames in one end-to-end run; ``network_frames``: those the network alone ran.
        end_to_end: FPS of each end-to-end run (decode -> annotated video written).
        network: FPS of each run of the runtime alone, back to back on pre-processed frames.
        stage_ms: Each end-to-end run's :attr:`Summary.busy`, in milliseconds per frame.
    """

    frames: int
    network_frames: int
    end_to_end: list[float]
    network: list[float]
    stage_ms: list[dict[str, float]] = field(default_factory=list)

    @property
    def ratios(self) -> list[float]:
        """End-to-end over network FPS, repeat by repeat."""
        return [e / n for e, n in zip(self.end_to_end, self.network)]


def time_video(predictor, path: str | Path, repeats: int = 3, warmup: int = 3, max_frames: int = 200,
               log: Callable[[str], None] | None = None) -> VideoTiming:
    """Time ``predict_video`` on ``path`` (outputs into a temporary folder) against the same
    runtime on the same frames, pre-decoded and pre-processed, run back to back; the two
    alternate ``repeats`` times. At most ``max_frames`` frames are held for the network-alone
    runs. PyTorch threads as in :func:`predict_video` for both."""
    path = Path(path)
    frames = []
    reader = iter(VideoReader(path))
    try:
        for item in reader:
            if item.rgb is not None:
                frames.append(item.rgb)
            if len(frames) == max_frames:
                break
    finally:
        reader.close()
    if not frames:
        raise ValueError(f"{path}: no frame could be decoded")
    end_to_end, network, stage_ms = [], [], []
    with predictor.helper_threads(), torch.inference_mode(), tempfile.TemporaryDirectory(prefix="mtdense-bench-") as tmp:
        xs = [predictor.preprocess([f]) for f in frames]
        hw = frames[0].shape[:2]
        del frames
        for x in xs[:warmup]:
            predictor.infer(x, hw)
        count = 0
        for r in range(repeats):
            t0 = time.perf_counter()
            for x in xs:
                predictor.infer(x, hw)  # what the pipeline's inference stage runs
            network.append(len(xs) / (time.perf_counter() - t0))
            t0 = time.perf_counter()  # the whole call: opening the video and the final flush count too
            summary = predict_video(predictor, path, Path(tmp) / "annotated.mp4", report=lambda line: None)
            end_to_end.append(summary.written / (time.perf_counter() - t0))
            count = summary.written
            stage_ms.append({k: 1000 * v / max(1, summary.read) for k, v in summary.busy.items()})
            if log is not None:
                log(f"[bench] video repeat {r + 1}/{repeats}: network alone {network[-1]:.2f} FPS, end to end {end_to_end[-1]:.2f} FPS")
    return VideoTiming(frames=count, network_frames=len(xs), end_to_end=end_to_end, network=network, stage_ms=stage_ms)
