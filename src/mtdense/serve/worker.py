"""The model behind the server: one thread runs the network, a few helper threads work around it.

A request goes through three steps, the same three :meth:`Predictor.predict
<mtdense.inference.Predictor.predict>` runs one after the other (so the answer equals
``Predictor.predict`` on the same image)::

    helper thread   decode the upload, pre-process (resize, normalise)        Predictor.preprocess
    model thread    the network, one image at a time, in arrival order        Predictor.infer
    helper thread   labels and metres at the image's size, stats, PNGs        Predictor.postprocess

The model thread takes the requests from a first-in-first-out queue, so the network never runs
two images at once and no answer can be mixed up with another request's image: each request
carries its own tensors and its own future from step to step. While the network runs on one
image, the helpers decode the next ones and encode the answers of earlier ones (OpenCV,
NumPy, PyTorch's operators and ONNX Runtime release the GIL).

- One dedicated model thread, not a thread from a pool: PyTorch and ONNX Runtime keep their
  parallel workers per calling thread, so one caller means one team of workers, kept warm.
- Helper threads run at a nice value :data:`HELPER_NICE` higher (Linux keeps one per thread):
  where the cores are all taken the network comes first and decoding and encoding fill the gaps.
- While the runtime is not PyTorch, PyTorch keeps one thread for the worker's life
  (:meth:`Predictor.torch_threads <mtdense.inference.Predictor.torch_threads>`), as ``mtdense
  predict`` does: pre- and post-processing never wake a team that competes with the network's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from mtdense.inference import Prediction, Predictor

__all__ = ["ModelWorker", "HELPER_NICE", "DEFAULT_HELPERS"]

HELPER_NICE = 10
"""How much lower the helper threads' scheduling priority is than the model thread's (Linux)."""
DEFAULT_HELPERS = 2
"""Helper threads that decode, pre-process, post-process and encode."""

T = TypeVar("T")
_STOP = object()


def _lower_priority(nice: int = HELPER_NICE) -> None:
    """Raise the calling thread's nice value by ``nice`` (Linux; elsewhere, or where not allowed, nothing)."""
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + nice))
    except OSError:
        pass


def _resolve(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # the request was cancelled (its client left) while it waited
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class ModelWorker:
    """Runs a :class:`~mtdense.inference.Predictor` for many concurrent requests (see the module docstring).

    Args:
        predictor: The predictor; its runtime is only ever called from the model thread.
        helpers: Helper threads (>= 1).

    Use :meth:`start` and :meth:`close` (or ``with``). From the server's event loop: await
    :meth:`helper` with work that calls :meth:`prepare` or :meth:`finish`, and :meth:`infer`.
    """

    def __init__(self, predictor: Predictor, helpers: int = DEFAULT_HELPERS):
        if helpers < 1:
            raise ValueError(f"helpers must be >= 1, got {helpers}")
        self.predictor = predictor
        self.helpers = helpers
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()
        self.served = 0  # images the network has run

    # -- life --------------------------------------------------------------------------------
    def start(self) -> ModelWorker:
        """Start the threads (idempotent)."""
        with self._lock:
            if self._thread is not None:
                return self
            self._stack.enter_context(self.predictor.torch_threads())  # before any helper runs PyTorch
            self._pool = ThreadPoolExecutor(self.helpers, thread_name_prefix="mtdense-serve-helper", initializer=_lower_priority)
            self._thread = threading.Thread(target=self._loop, name="mtdense-serve-model", daemon=True)
            self._thread.start()
        return self

    def close(self) -> None:
        """Finish the queued images, then stop the threads (idempotent)."""
        with self._lock:
            if self._thread is None:
                return
            self._jobs.put(_STOP)
            self._thread.join()
            self._pool.shutdown(wait=True)
            self._thread = self._pool = None
            self._stack.close()

    def __enter__(self) -> ModelWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the model thread ----------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            x, out_size, future, loop = job
            if future.done():  # cancelled while queued: no one waits for it
                continue
            result, error = None, None
            start = time.perf_counter()
            try:
                out = self.predictor.infer(x, out_size)
                result = (out, time.perf_counter() - start)
                self.served += 1
            except BaseException as exc:  # handed to the request that owns it, never lost
                error = exc
            try:
                loop.call_soon_threadsafe(_resolve, future, result, error)
            except RuntimeError:  # its event loop has closed: no one waits for it
                pass

    # -- steps, awaited from the event loop ---------------------------------------------------------
    async def helper(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a helper thread."""
        self.start()
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def prepare(self, rgb: np.ndarray) -> torch.Tensor:
        """``1 x 3 x h x w``: the image resized and normalised for the network, as
        :meth:`Predictor.predict <mtdense.inference.Predictor.predict>` makes it (call it in a helper)."""
        return self.predictor.preprocess([rgb])

    async def infer(self, x: torch.Tensor, out_size: tuple[int, int]) -> tuple[dict[str, torch.Tensor], float]:
        """The runtime's outputs for ``x`` (:meth:`Predictor.infer <mtdense.inference.Predictor.infer>`)
        and the seconds the network took, run in the model thread after the images queued before it."""
        self.start()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._jobs.put((x, tuple(out_size), future, loop))
        return await future

    def finish(self, out: dict[str, torch.Tensor], out_size: tuple[int, int]) -> Prediction:
        """The :class:`~mtdense.inference.Prediction` at ``out_size`` from :meth:`infer`'s outputs,
        as :meth:`Predictor.predict <mtdense.inference.Predictor.predict>` makes it (call it in a helper)."""
        seg, depth = self.predictor.postprocess(out, out_size)
        return Prediction(seg=seg[0].cpu().numpy(), depth=depth[0].cpu().numpy().astype(np.float32, copy=False),
                          info=self.predictor.info)

    @property
    def queued(self) -> int:
        """Images waiting for the network."""
        return self._jobs.qsize()
