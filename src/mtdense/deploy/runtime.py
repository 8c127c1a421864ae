"""The runtime contract: one way to run a network, whatever runs it.

A runtime is built once, from a trained model (:meth:`Runtime.from_model`) or from a file that
an export wrote (:meth:`Runtime.from_file`), and is then called as

    ``runtime(batch) -> {task: tensor}``

with ``batch`` a ``B x 3 x H x W`` float32 ImageNet-normalised tensor and one output per task at
the input size (``seg`` logits, ``depth`` encoded as ``log(depth_m) / 5``, ...), exactly what the
PyTorch network returns. Each runtime says its :attr:`~Runtime.name`, its
:attr:`~Runtime.tasks` (name -> channels) and whether its input size is fixed
(:attr:`~Runtime.fixed_size`); a fixed-size runtime refuses any other size with a message that
says both. Nothing downstream branches on which runtime it holds.

The registry (:data:`RUNTIMES`, filled by :func:`register`) is what ``Predictor``,
``mtdense bench``, ``mtdense predict --backend`` and ``mtdense export`` look names up in:

    >>> rt = create_runtime("ort", model, size=(400, 1024))     # ONNX Runtime, exported here
    >>> rt = open_runtime("model.onnx")                           # an mtdense export
    >>> out = rt(batch)                                           # {"seg": ..., "depth": ...}
    >>> out = rt.labels(batch)                                    # "seg" as B x H x W uint8 labels

:meth:`Runtime.labels` is what a user of the segmentation wants at the network's size: the
argmax labels instead of the logits. A runtime that can decode them without writing the
full-resolution logits (the fused kernel) does so; every other one returns
:func:`argmax_labels` of its logits, the same labels.
"""

from __future__ import annotations

import abc
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

__all__ = [
    "Runtime", "RuntimeOptions", "RuntimeUnavailable", "RUNTIMES", "register", "runtime_class", "create_runtime",
    "open_runtime", "runtime_for_file", "runtime_for_format", "check_input", "run_in_chunks", "argmax_labels",
    "model_tasks",
]


class RuntimeUnavailable(RuntimeError):
    """This runtime cannot run here (a missing package, compiler or device); the message says how to get it."""


@dataclass
class RuntimeOptions:
    """How to build a runtime.

    Attributes:
        device: ``"cpu"`` or ``"cuda"``.
        threads: Intra-op threads (``None``: the library's default).
        size: ``(H, W)`` the runtime is built for. Runtimes that can specialise to one size
            (a fixed-shape ONNX graph, a captured CUDA graph, the fused path) then take only
            that size; the others ignore it.
        work_dir: Where exported files are written and reused (a temporary folder by default).
        calibration: Images (paths or ``H x W x 3`` uint8 RGB) for int8 calibration.
    """

    device: str = "cpu"
    threads: int | None = None
    size: tuple[int, int] | None = None
    work_dir: Path | None = None
    calibration: Sequence[str | Path | np.ndarray] | None = None


def check_input(x: torch.Tensor, fixed_size: tuple[int, int] | None, what: str) -> None:
    """Raise ``ValueError`` unless ``x`` is a ``B x 3 x H x W`` batch of the fixed size (if any)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{what}: expected a B x 3 x H x W batch, got shape {tuple(x.shape)}")
    if fixed_size is not None and tuple(x.shape[-2:]) != tuple(fixed_size):
        raise ValueError(f"{what} is built for {fixed_size[0]}x{fixed_size[1]} inputs only, got {x.shape[-2]}x{x.shape[-1]}; "
                         f"resize the input (Predictor(size=...)) or build the runtime without a fixed size")


def run_in_chunks(x: torch.Tensor, fixed_batch: int | None, run_one, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Run an exported graph on ``x``: whole, or one image at a time where the graph was exported
    for batch 1; ``run_one(array) -> [output arrays]`` in ``names``' order. One run's outputs are
    used as they are (no copy)."""
    xs = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
    chunks = [xs[i : i + 1] for i in range(len(xs))] if fixed_batch == 1 and len(xs) > 1 else [xs]
    runs = [run_one(c) for c in chunks]
    cat = (lambda k: runs[0][k]) if len(runs) == 1 else (lambda k: np.concatenate([r[k] for r in runs]))
    return {n: torch.from_numpy(cat(k)).to(x.device) for k, n in enumerate(names)}


def model_tasks(model: nn.Module) -> dict[str, int]:
    """Task name -> output channels of a network with task heads (``model.tasks``, or its heads' last convs)."""
    tasks = getattr(model, "tasks", None)
    if isinstance(tasks, dict):
        return dict(tasks)
    heads = getattr(model, "heads", None)
    if heads is None:
        return {"seg": 19, "depth": 1}  # a bare module following the network's contract
    return {name: [m for m in head.modules() if isinstance(m, nn.Conv2d)][-1].out_channels for name, head in heads.items()}


class Runtime(abc.ABC):
    """Base class of every runtime (see the module docstring for the contract).

    Subclasses set the class attributes, implement :meth:`from_model` (and :meth:`from_file`
    where they open exported files) and :meth:`run`; :meth:`__call__` checks the input first.

    Attributes:
        name: Registry name (``eager``, ``ort``, ``fused``, ...).
        engine: What runs it, in words (``PyTorch``, ``ONNX Runtime``, ``OpenVINO``).
        description: One line for ``--help`` and the bench table.
        devices: Devices it runs on.
        suffixes: File suffixes :meth:`from_file` opens (``.onnx``, ``.xml``).
        export_format: The ``mtdense export --format`` value whose files it runs, if any.
        raw_heads: Whether it computes the task heads itself and returns their raw outputs (the
            fused kernel) instead of running the network's forward or an export of it. Such a
            runtime cannot finish a head whose output the network post-processes
            (:data:`~mtdense.models.net.UNIT_VECTOR_TASKS`: normals, normalised after the
            upsampling), and a network with one is refused when the runtime is opened (:meth:`refuses`).
        tasks: Output name -> channels.
        fixed_size: ``(H, W)`` it takes exclusively, or ``None`` for any size.
        note: How it was built (export form, precision, provider): a row note in ``mtdense bench``.
    """

    name: ClassVar[str] = ""
    engine: ClassVar[str] = "PyTorch"
    description: ClassVar[str] = ""
    devices: ClassVar[tuple[str, ...]] = ("cpu",)
    suffixes: ClassVar[tuple[str, ...]] = ()
    export_format: ClassVar[str | None] = None
    raw_heads: ClassVar[bool] = False

    tasks: dict[str, int]
    fixed_size: tuple[int, int] | None = None
    note: str = ""

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def unavailable(cls, options: RuntimeOptions) -> str | None:
        """Why this runtime cannot run with ``options`` here (``None``: it can)."""
        if options.device not in cls.devices:
            words = {"cpu": "the CPU", "cuda": "CUDA"}
            return (f"{cls.name} runs on {' or '.join(words.get(d, d) for d in cls.devices)} only, not on "
                    f"{words.get(options.device, options.device)}")
        return None

    @classmethod
    def refuses(cls, tasks: dict[str, int] | Sequence[str]) -> str | None:
        """Why this runtime cannot run a network with these task heads (``None``: it can)."""
        from mtdense.models.net import UNIT_VECTOR_TASKS

        finished = [t for t in tasks if t in UNIT_VECTOR_TASKS]
        if not cls.raw_heads or not finished:
            return None
        return (f"the {cls.name} runtime computes the heads itself and cannot normalise this model's "
                f"{', '.join(finished)} head to unit vectors; use the ONNX backend (--backend ort, or the .onnx file of "
                f"'mtdense export') or --backend eager, which run every head")

    @classmethod
    def from_model(cls, model: nn.Module, options: RuntimeOptions) -> Runtime:
        """Build from a trained :class:`~mtdense.models.MultiTaskNet` (copied, not modified)."""
        raise RuntimeUnavailable(f"the {cls.name} runtime is not built from a model")

    @classmethod
    def from_file(cls, path: Path, options: RuntimeOptions) -> Runtime:
        """Open a file written by ``mtdense export``."""
        raise RuntimeUnavailable(f"the {cls.name} runtime does not open files; it is built from a checkpoint")

    @classmethod
    def export(cls, model: nn.Module, path: Path, size: tuple[int, int], deploy: bool = True, dynamic: bool = True) -> Path:
        """Write the file this runtime opens (``mtdense export --format``)."""
        raise RuntimeUnavailable(f"the {cls.name} runtime has no export format")

    # -- running ------------------------------------------------------------------------------
    @abc.abstractmethod
    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Outputs for a batch that :meth:`__call__` has checked."""

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(x)  # a float32 array is taken without a copy
        check_input(x, self.fixed_size, f"the {self.name} runtime")
        return self.run(x)

    @torch.inference_mode()
    def labels(self, x: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        """Like calling the runtime, with ``seg`` as ``B x H x W`` uint8 labels, the argmax of
        its logits (ties to the lower class); the other outputs as the call returns them."""
        out = self(x)
        if "seg" in out:
            out["seg"] = argmax_labels(out["seg"])
        return out

    def __repr__(self) -> str:
        size = f", fixed {self.fixed_size[0]}x{self.fixed_size[1]}" if self.fixed_size else ""
        return f"<{type(self).__name__} {self.name}: tasks {self.tasks}{size}>"


def argmax_labels(logits: torch.Tensor) -> torch.Tensor:
    """``B x C x H x W`` logits -> ``B x H x W`` uint8 labels, ``logits.argmax(1)``.

    On the CPU the classes are compared one whole plane at a time into a running maximum (ties
    to the lower class, as ``argmax`` gives them): on one thread several times faster than
    ``argmax`` along the strided class axis (about 16 ms instead of 100 ms for 19 classes at
    400 x 1024), which matters when post-processing runs beside the network.
    """
    if logits.shape[1] > 256:
        raise ValueError(f"argmax_labels returns uint8 labels: at most 256 classes, got {logits.shape[1]}")
    if logits.device.type != "cpu" or logits.dtype != torch.float32:
        return logits.argmax(1).to(torch.uint8)
    planes = logits.detach().contiguous().numpy()
    best = planes[:, 0].copy()
    labels = np.zeros(best.shape, np.uint8)
    higher = np.empty(best.shape, bool)
    for c in range(1, planes.shape[1]):
        np.greater(planes[:, c], best, out=higher)
        np.putmask(labels, higher, c)
        np.maximum(best, planes[:, c], out=best)
    return torch.from_numpy(labels)



RUNTIMES: dict[str, type[Runtime]] = {}
"""Registry name -> runtime class."""


def register(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator adding a runtime to :data:`RUNTIMES` under its ``name``."""
    if not cls.name or cls.name in RUNTIMES:
        raise ValueError(f"runtime {cls.__name__} needs a unique name, got {cls.name!r}")
    RUNTIMES[cls.name] = cls
    return cls


def _load_all() -> None:
    import mtdense.deploy  # noqa: F401  (its imports register every runtime)


def runtime_class(name: str) -> type[Runtime]:
    """The registered runtime called ``name``; a wrong name lists the valid ones."""
    _load_all()
    if name not in RUNTIMES:
        raise ValueError(f"unknown runtime {name!r}; valid: {', '.join(RUNTIMES)}")
    return RUNTIMES[name]


def runtime_for_file(path: Path) -> type[Runtime] | None:
    """The runtime that opens files with ``path``'s suffix (``None``: a checkpoint)."""
    _load_all()
    suffix = path.suffix.lower()
    return next((cls for cls in RUNTIMES.values() if suffix in cls.suffixes), None)


def runtime_for_format(fmt: str) -> type[Runtime]:
    """The runtime whose files ``mtdense export --format fmt`` writes."""
    _load_all()
    for cls in RUNTIMES.values():
        if cls.export_format == fmt:
            return cls
    formats = sorted(c.export_format for c in RUNTIMES.values() if c.export_format)
    raise ValueError(f"unknown export format {fmt!r}; valid: {', '.join(formats)}")


def _options(options: RuntimeOptions | None, kwargs: dict) -> RuntimeOptions:
    options = options or RuntimeOptions()
    for k, v in kwargs.items():
        if not hasattr(options, k):
            raise TypeError(f"unknown runtime option {k!r}; valid: device, threads, size, work_dir, calibration")
        setattr(options, k, v)
    if options.size is not None:
        options.size = (int(options.size[0]), int(options.size[1]))
    return options


def create_runtime(name: str, model: nn.Module, options: RuntimeOptions | None = None, **kwargs) -> Runtime:
    """Build runtime ``name`` from a trained model.

    Args:
        name: A key of :data:`RUNTIMES`.
        model: A :class:`~mtdense.models.MultiTaskNet` (copied, not modified).
        options: A :class:`RuntimeOptions`; keyword arguments override its fields.

    Raises:
        ValueError: An unknown name.
        RuntimeUnavailable: It cannot run here; the message says why and what to install.
    """
    cls = runtime_class(name)
    options = _options(options, kwargs)
    reason = cls.refuses(model_tasks(model)) or cls.unavailable(options)
    if reason:
        raise RuntimeUnavailable(reason)
    return cls.from_model(model, options)



def open_runtime(model: str | Path | nn.Module | Runtime, backend: str | None = None,
                 options: RuntimeOptions | None = None, **kwargs) -> Runtime:
    """The runtime for anything a user names as a model.

    Args:
        model: A :class:`Runtime` (returned as is), an ``nn.Module`` whose forward returns the
            task dict, an exported file (``.onnx``, OpenVINO ``.xml``) opened by the runtime
            that reads it, or a checkpoint (``.pth`` / ``.ckpt`` / ``.safetensors``).
        backend: The runtime for a model or checkpoint (default ``eager``). With an exported
            file it must be the runtime that reads it, or ``None``.
        options: A :class:`RuntimeOptions`; keyword arguments override its fields.
    """
    if isinstance(model, Runtime):
        if backend not in (None, model.name):
            raise ValueError(f"backend {backend!r} asked for, but the model is already a {model.name} runtime")
        reason = type(model).refuses(model.tasks)
        if reason:
            raise RuntimeUnavailable(reason)
        return model
    options = _options(options, kwargs)
    if isinstance(model, nn.Module):
        return create_runtime(backend or "eager", model, options)
    path = Path(model)
    reader = runtime_for_file(path)
    if reader is not None:
        if backend not in (None, reader.name):
            raise ValueError(f"{path} is an exported file that the {reader.name} runtime runs; backend {backend!r} "
                             f"runs checkpoints: give the .pth/.ckpt/.safetensors file instead")
        reason = reader.unavailable(options)
        if reason:
            raise RuntimeUnavailable(reason)
        return reader.from_file(path, options)
    from mtdense.models import load_model

    return create_runtime(backend or "eager", load_model(path), options)


class WorkDir:
    """A runtime's folder for exported files: ``options.work_dir``, or a temporary folder kept as
    long as the runtime lives."""

    def __init__(self, work_dir: Path | None):
        self._tmp = tempfile.TemporaryDirectory(prefix="mtdense-runtime-") if work_dir is None else None
        self.path = Path(self._tmp.name) if self._tmp else Path(work_dir)
        self.path.mkdir(parents=True, exist_ok=True)
