"""PyTorch runtimes: the network itself, in fp32 (NCHW or NHWC), compiled, or fp16 on CUDA."""

from __future__ import annotations

import copy

import torch
from torch import nn

from mtdense.deploy.runtime import Runtime, RuntimeOptions, RuntimeUnavailable, model_tasks, register

__all__ = ["EagerRuntime", "ChannelsLastRuntime", "CompileRuntime", "Fp16Runtime", "CudaGraphRuntime", "model_tasks"]


@register
class EagerRuntime(Runtime):
    """The PyTorch network as trained, fp32, NCHW (any ``nn.Module`` returning the task dict)."""

    name = "eager"
    description = "PyTorch fp32, NCHW"
    devices = ("cpu", "cuda")

    def __init__(self, model: nn.Module, device: str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tasks = model_tasks(model)
        self.fixed_size = getattr(model, "fixed_size", None)
        self.note = self.description

    @classmethod
    def unavailable(cls, options: RuntimeOptions) -> str | None:
        if options.device == "cuda" and not torch.cuda.is_available():
            return "device 'cuda' requested but CUDA is not available here; use the CPU"
        return super().unavailable(options)

    @classmethod
    def from_model(cls, model: nn.Module, options: RuntimeOptions) -> Runtime:
        return cls(model, options.device)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device)

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(self.prepare(x))
        return {k: v.float() for k, v in out.items()}


@register
class ChannelsLastRuntime(EagerRuntime):
    """PyTorch fp32 in NHWC memory format (faster convolutions on most CPUs and tensor-core GPUs)."""

    name = "channels_last"
    description = "PyTorch fp32, NHWC"

    def __init__(self, model: nn.Module, device: str = "cpu"):
        super().__init__(copy.deepcopy(model), device)  # a copy: .to() converts a module in place
        self.model = self.model.to(memory_format=torch.channels_last)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device).contiguous(memory_format=torch.channels_last)


@register
class CompileRuntime(EagerRuntime):
    """``torch.compile`` (inductor) of the fp32 network.

    Built for one ``size`` it compiles static shapes (the fastest code for that size); without one
    it compiles shape-generic code from the first call (``dynamic=True``), so a new image size
    costs no new compilation (a batch of one still gets its own, as PyTorch specialises sizes of 1).
    """

    name = "compile"
    description = "torch.compile (inductor), default mode"

    @classmethod
    def from_model(cls, model: nn.Module, options: RuntimeOptions) -> Runtime:
        rt = cls(copy.deepcopy(model), options.device)
        rt.model = torch.compile(rt.model, dynamic=options.size is None)
        return rt


@register
class Fp16Runtime(ChannelsLastRuntime):
    """PyTorch fp16, channels-last, on CUDA (fp16 convolutions on a CPU are emulated and slow)."""

    name = "fp16"
    description = "PyTorch fp16 NHWC (CUDA)"
    devices = ("cuda",)

    def __init__(self, model: nn.Module, device: str = "cuda"):
        super().__init__(model, device)
        self.model = self.model.half()  # keeps the NHWC layout

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return super().prepare(x).half()


@register
class CudaGraphRuntime(Fp16Runtime):
    """fp16 channels-last replayed from a captured CUDA graph: one fixed input shape."""

    name = "cuda_graph"
    description = "fp16 NHWC, CUDA graph replay"

    @classmethod
    def from_model(cls, model: nn.Module, options: RuntimeOptions) -> Runtime:
        if options.size is None:
            raise RuntimeUnavailable("cuda_graph captures one input shape: give a size (H, W)")
        rt = cls(model, options.device)
        rt.fixed_size = options.size
        rt._static_in = torch.zeros(1, 3, *options.size, device=rt.device).half().contiguous(memory_format=torch.channels_last)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream), torch.inference_mode():
            for _ in range(3):  # warm up on a side stream before capture (cuDNN autotuning, allocator)
                rt.model(rt._static_in)
        torch.cuda.current_stream().wait_stream(stream)
        rt._graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(rt._graph), torch.inference_mode():
            rt._static_out = rt.model(rt._static_in)
        return rt

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = []
        for i in range(len(x)):  # the graph was captured for batch 1
            self._static_in.copy_(self.prepare(x[i : i + 1]))
            self._graph.replay()
            outs.append({k: v.float().clone() for k, v in self._static_out.items()})
        return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
