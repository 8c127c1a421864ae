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

- One thread runs the network, not a thread from a pool: PyTorch and ONNX Runtime keep their
  parallel workers per calling thread, so one caller means one team of workers, kept warm.
- Helper threads run PyTorch on one thread (``torch.set_num_threads(1)``, which sets the calling
  thread's OpenMP team). A second live team of PyTorch's OpenMP workers (GNU OpenMP) puts more
  OpenMP threads in the process than there are cores, and GNU OpenMP then makes every team's
  workers sleep between parallel regions instead of spinning: the network ran 15-40% slower
  (128 x 256, 2 cores) while a helper thread held a team of its own. For the same reason
  ``mtdense serve`` runs the network in its main thread (:meth:`run`), which loaded the model
  and so already holds a team; a model thread of its own (``start(thread=True)``, the default,
  what :func:`~mtdense.serve.app.create_app` does for a library caller) would add a second.
- Helper threads run at a nice value :data:`HELPER_NICE` higher (Linux keeps one per thread):
  where the cores are all taken the network comes first and decoding and encoding fill the gaps.
- While the runtime is not PyTorch, PyTorch keeps one thread for the worker's life, and OpenCV
  one while the network runs on the CPU (:meth:`Predictor.helper_threads
  <mtdense.inference.Predictor.helper_threads>`), as ``mtdense predict`` does: pre- and
  post-processing never wake a team that competes with the network's.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from mtdense.inference import Prediction, Predictor
from mtdense.pipeline import HELPER_NICE, lower_priority  # the same priorities as predict's pipeline

__all__ = ["ModelWorker", "HELPER_NICE", "DEFAULT_HELPERS", "lower_priority"]

DEFAULT_HELPERS = 2
"""Helper threads that decode, pre-process, post-process and encode."""

T = TypeVar("T")
_STOP = object()


def _helper_setup() -> None:
    """A helper thread: one PyTorch thread and a lower priority (see the module docstring)."""
    torch.set_num_threads(1)
    lower_priority()


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
        self._threads = torch.get_num_threads()
        self._pool: ThreadPoolExecutor | None = None
        self._stack = contextlib.ExitStack()
        self._lock = threading.Lock()
        self.served = 0  # images the network has run

    # -- life --------------------------------------------------------------------------------
    def start(self, thread: bool = True) -> ModelWorker:
        """Start the helper threads and the model thread (idempotent).

        Args:
            thread: Start a model thread. ``False``: the caller runs the network in its own
                thread with :meth:`run` (``mtdense serve`` does, in the thread that loaded the
                model: see the module docstring).
        """
        with self._lock:
            if self._pool is not None:
                return self
            self._stack.enter_context(self.predictor.helper_threads())  # before any helper runs PyTorch
            self._threads = torch.get_num_threads()  # the network's PyTorch threads
            self._pool = ThreadPoolExecutor(self.helpers, thread_name_prefix="mtdense-serve-helper", initializer=_helper_setup)
            if thread:
                self._thread = threading.Thread(target=self.run, name="mtdense-serve-model", daemon=True)
                self._thread.start()
        return self

    def close(self) -> None:
        """Finish the queued images, then stop the threads (idempotent). A :meth:`run` in another
        thread returns once it has run the images queued before."""
        with self._lock:
            if self._pool is None:
                return
            self._jobs.put(_STOP)
            if self._thread is not None:
                self._thread.join()
            self._pool.shutdown(wait=True)
            self._thread = self._pool = None
            self._stack.close()

    def __enter__(self) -> ModelWorker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the model thread ----------------------------------------------------------------------
    def run(self, until: Callable[[], bool] = lambda: False, poll_s: float = 0.1) -> None:
        """Run the network on the queued images in the calling thread, in arrival order, until
        :meth:`close` is called or ``until()`` is true (looked at every ``poll_s`` seconds while idle)."""
        torch.set_num_threads(self._threads)  # this thread's own team, whatever the helpers set
        while not until():
            try:
                job = self._jobs.get(timeout=poll_s)
            except queue.Empty:
                continue
            if job is _STOP:
                return
            self._serve(job)

    def _serve(self, job: tuple) -> None:
        x, out_size, future, loop = job
        if future.done():  # cancelled while queued: no one waits for it
            return
        result, error = None, None
        start = time.perf_counter()
        try:
            out = self.predictor.infer(x, out_size)
            result = (out, time.perf_counter() - start)
            self.served += 1
        except Exception as exc:  # handed to the request that owns it, never lost
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
        """The :class:`~mtdense.inference.Prediction` at ``out_size`` from :meth:`infer`'s outputs
        (:meth:`Predictor.predictions <mtdense.inference.Predictor.predictions>`, what
        :meth:`Predictor.predict <mtdense.inference.Predictor.predict>` returns; call it in a helper)."""
        return self.predictor.predictions(out, out_size)[0]

    @property
    def queued(self) -> int:
        """Images waiting for the network."""
        return self._jobs.qsize()
