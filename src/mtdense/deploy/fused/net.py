"""The fused runtime: :class:`FusedNet` (see :mod:`mtdense.deploy.fused`)."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import io
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtdense.deploy.fused.build import load_library
from mtdense.deploy.cache import cached_graph, graph_key
from mtdense.deploy.onnx import ort_session
from mtdense.deploy.rewrite import DeployNet, is_task_head, same_maxpool_size
from mtdense.deploy.runtime import Runtime, RuntimeOptions, WorkDir, check_input, register

__all__ = ["FusedNet"]

_FP = ctypes.POINTER(ctypes.c_float)
_U8 = ctypes.POINTER(ctypes.c_uint8)


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(_FP)


def _aligned_empty(shape: tuple[int, ...], align: int = 64) -> np.ndarray:
    """An uninitialised float32 array whose data starts on an ``align``-byte boundary (the
    kernel streams the heads' input to it in whole, aligned cache lines)."""
    n = int(np.prod(shape))
    raw = np.empty(n + align // 4, np.float32)
    start = (-raw.ctypes.data % align) // 4
    return raw[start : start + n].reshape(shape)


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


# Winograd F(4x4, 3x3) (Lavin & Gray, 2016): the kernel transform G; csrc/finest.c applies B^T and A^T.
_WINO_G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                    [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])


def _winograd_weights(weight: torch.Tensor) -> np.ndarray:
    """``U = G g G^T`` of every 3x3 kernel of an ``m x c x 3 x 3`` weight, as ``36 x m x c`` float32
    (element ``6 a + b`` of each 6 x 6 product first), computed in float64."""
    g = weight.detach().cpu().double().numpy()
    u = np.einsum("ai,ocij,bj->aboc", _WINO_G, g, _WINO_G)
    return np.ascontiguousarray(u.reshape(36, *g.shape[:2]), dtype=np.float32)


class _Coarse(nn.Module):
    """The network up to the finest level's inputs: that level's encoder features (concatenated)
    and the adapted output of the next coarser level, at its own resolution."""

    def __init__(self, deploy: DeployNet):
        super().__init__()
        self.net = deploy

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net, dec = self.net, self.net.decoder
        feats = net.encoder(x)
        members = dec.level_members[0]
        f0 = torch.cat([feats[i] for i in members], 1) if len(members) > 1 else feats[members[0]]
        return f0, dec.adapt[0](net.coarse_levels(feats))


@register
class FusedNet(Runtime):
    """A trained :class:`~mtdense.models.MultiTaskNet` on the fused CPU path (the ``fused``
    runtime): ``B x 3 x H x W`` normalised batch in, ``{task: B x C x H x W}`` out (CPU tensors).

    Args:
        model: The trained network (copied, not modified). It needs the recipe's finest level:
            a depthwise CRP with a stride-1 odd max-pool, and heads of the form
            ``depthwise 1x1 -> ReLU6 -> 3x3 conv``, and at least two decoder levels.
        threads: Threads for ONNX Runtime and the kernel (default: ``os.cpu_count()``).
        size: ``(H, W)`` to build the ONNX Runtime graph for. With fixed shapes ONNX Runtime
            keeps every upsampling in its blocked layout, which is faster; the net then takes
            only that size (any batch). ``None``: any size.
        cache: Keep the exported graph in the cache (:mod:`mtdense.deploy.cache`), keyed by
            the weights, the size, the exporter and the CPU, and take it from there next time:
            a second start skips the export (most of the start-up). ``False``: export into a
            temporary folder; a path: the folder of cached graphs (default
            :func:`~mtdense.deploy.cache.graph_cache_dir`).

    Raises:
        FusedUnavailable: The kernel cannot be compiled here.
        ValueError: The network has another form (the message says which part).
    """

    name = "fused"
    engine = "ONNX Runtime + compiled kernel"
    description = ("ONNX Runtime fp32 up to the finest decoder level, then a kernel compiled here for that level "
                   "and the heads (needs a C compiler)")

    def __init__(self, model: nn.Module, threads: int | None = None, size: tuple[int, int] | None = None,
                 cache: bool | str | Path = True):
        self.lib = load_library()
        model = copy.deepcopy(model).cpu().eval()
        deploy = DeployNet(model, groups=1, tap_heads=False)
        dec = deploy.decoder
        if len(dec.level_strides) < 2:
            raise ValueError("the fused path needs at least two decoder levels (the finest one is fused)")
        c = dec.out_channels
        crp = dec.crp[0]
        if not all(conv.groups == c and conv.kernel_size == (1, 1) and conv.bias is None for conv in crp.convs):
            raise ValueError("the fused path needs the recipe's finest CRP: depthwise 1x1 convs without bias")
        pool = getattr(crp, "pool", None)
        k = same_maxpool_size(pool)
        if k is None:
            raise ValueError(f"the fused path needs a square, odd, stride-1, 'same'-padded max-pool in the finest CRP, got {pool}")
        for name, head in deploy.heads.items():
            if not (is_task_head(head) and head[0].in_channels == c):
                raise ValueError(f"head {name!r} is not of the form depthwise 1x1 -> ReLU6 -> 3x3 conv on {c} channels")
        self.threads = int(threads or os.cpu_count() or 1)
        self.task_names = list(deploy.task_names)
        self.tasks = {t: deploy.heads[t][2].out_channels for t in self.task_names}
        self.config = dict(getattr(model, "config", {}))
        self.pool = k
        members = dec.level_members[0]
        if any(dec.proj[i].bias is not None for i in members):
            raise ValueError("the fused path needs the recipe's finest projections: 1x1 convs without bias")
        self.proj = _f32(torch.cat([dec.proj[i].weight.flatten(1) for i in members], 1))  # c x cin
        self.crp = _f32(torch.stack([conv.weight.flatten() for conv in crp.convs]))  # stages x c
        self.gemm_heads = [t for t in self.task_names if self.tasks[t] > 1]
        self.direct_heads = [t for t in self.task_names if self.tasks[t] == 1]
        heads = deploy.heads
        self.dgemm = _f32(torch.stack([heads[t][0].weight.flatten() for t in self.gemm_heads])) if self.gemm_heads else np.zeros((0, c), np.float32)
        self.wino = {t: _winograd_weights(heads[t][2].weight) for t in self.gemm_heads}  # 36 x C x c
        self.bias = {t: _f32(heads[t][2].bias if heads[t][2].bias is not None else torch.zeros(self.tasks[t])) for t in self.task_names}
        self.ddir = _f32(torch.stack([heads[t][0].weight.flatten() for t in self.direct_heads])) if self.direct_heads else np.zeros((0, c), np.float32)
        self.kdir = _f32(torch.stack([heads[t][2].weight[0].reshape(c, 9) for t in self.direct_heads])) if self.direct_heads else np.zeros((0, c, 9), np.float32)
        self.channels = c
        self.fixed_size = (int(size[0]), int(size[1])) if size is not None else None
        coarse = _Coarse(deploy).eval()
        self.graph_reused = False
        if cache:  # the export is most of the start-up: kept, keyed by weights, size, exporter and CPU
            key = graph_key(model, self.fixed_size)
            root = None if cache is True else Path(cache)
            self.onnx_path, self.graph_reused = cached_graph(key, lambda path: self._export(coarse, path), root)
        else:
            self._work = WorkDir(None)
            self.onnx_path = self._work.path / "coarse.onnx"
            self._export(coarse, self.onnx_path)
        # its threads never spin, within a run or after it: the kernel needs the cores next, and
        # in a pipeline (predict, serve) so do the decoding and writing of the frames around it.
        # Measured side by side on a 60-frame 400 x 1024 video: the network alone no slower,
        # end to end 12.95 against 10.68 frames/s (docs/benchmarks.md).
        self.session = ort_session(self.onnx_path, threads=self.threads, stop_spinning=True, spin=False)
        self._buffers: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        self.note = "ORT fp32 (encoder, coarser levels) + compiled kernel (finest level, heads, upsampling)"

    @classmethod
    def unavailable(cls, options: RuntimeOptions) -> str | None:
        if options.device != "cpu":
            return "fused is a CPU deploy path; run it with device cpu"
        from mtdense.deploy.fused.build import FusedUnavailable

        try:
            load_library()
        except FusedUnavailable as exc:
            return str(exc)
        return None

    @classmethod
    def from_model(cls, model: nn.Module, options: RuntimeOptions) -> Runtime:
        return cls(model, threads=options.threads, size=options.size)  # fixed shapes when a size is given: faster

    def _export(self, coarse: nn.Module, path: Path) -> None:
        x = torch.zeros(1, 3, *(self.fixed_size or (128, 128)))
        dims = None
        if self.fixed_size is None:
            dims = {"x": {0: torch.export.Dim("batch", max=1024), 2: torch.export.Dim("height", min=32), 3: torch.export.Dim("width", min=32)}}
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            program = torch.onnx.export(coarse, (x,), None, dynamo=True, opset_version=18, input_names=["image"],
                                        output_names=["f0", "a8"], dynamic_shapes=dims, verbose=False)
        program.optimize()
        program.save(str(path), external_data=False)

    def _buffers_for(self, h: int, w: int) -> dict[str, np.ndarray]:
        buf = self._buffers.get((h, w))
        if buf is None:  # kept between calls: fresh pages would be faulted in on every call
            size = self.lib.mtd_head_size(self.channels, h, w)
            buf = {f"head_{t}": _aligned_empty((size,)) for t in self.gemm_heads}
            buf.update({f"logits_{t}": np.empty((self.tasks[t], h, w), np.float32) for t in self.gemm_heads})
            buf["direct"] = np.empty((max(len(self.direct_heads), 1), h, w), np.float32)
            self._buffers = {(h, w): buf}  # one size at a time
        return buf

    def run_numpy(self, x: np.ndarray, labels: bool = False) -> dict[str, np.ndarray]:
        """``B x 3 x H x W`` float32 array in, ``{task: B x C x H x W}`` arrays out; with
        ``labels``, ``seg`` is ``B x H x W`` uint8, the argmax of its logits, decoded by the kernel
        from the 1/4-resolution logits (the full-resolution ones are never written)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        check_input(torch.from_numpy(x), self.fixed_size, "the fused runtime")
        if self.fixed_size is None or len(x) == 1:
            f0s, a8s = self.session.run(None, {"image": x})
        else:  # the fixed-shape graph takes one image at a time
            parts = [self.session.run(None, {"image": x[i : i + 1]}) for i in range(len(x))]
            f0s, a8s = (np.concatenate([p[k] for p in parts]) for k in range(2))
        big_h, big_w = x.shape[-2:]
        _, cin, h, w = f0s.shape
        h8, w8 = a8s.shape[-2:]
        buf = self._buffers_for(h, w)
        as_labels = {t for t in self.gemm_heads if labels and t == "seg"}
        outs = {t: np.empty((len(x), big_h, big_w), np.uint8) if t in as_labels else
                np.empty((len(x), self.tasks[t], big_h, big_w), np.float32) for t in self.task_names}
        head_in = (_FP * max(len(self.gemm_heads), 1))(*[_ptr(buf[f"head_{t}"]) for t in self.gemm_heads])
        lib, c, nt = self.lib, self.channels, self.threads
        for b in range(len(x)):
            f0, a8 = np.ascontiguousarray(f0s[b]), np.ascontiguousarray(a8s[b])
            err = lib.mtd_finest(_ptr(f0), cin, _ptr(a8), h8, w8, c, h, w, _ptr(self.proj), _ptr(self.crp), len(self.crp), self.pool,
                                 len(self.gemm_heads), _ptr(self.dgemm), head_in, len(self.direct_heads), _ptr(self.ddir), _ptr(self.kdir),
                                 _ptr(buf["direct"]), nt)
            for t in self.gemm_heads:
                logits, m = buf[f"logits_{t}"], self.tasks[t]
                err |= lib.mtd_winograd(_ptr(buf[f"head_{t}"]), c, h, w, _ptr(self.wino[t]), m, _ptr(self.bias[t]), _ptr(logits), nt)
                if t in as_labels:
                    err |= lib.mtd_upsample_argmax(_ptr(logits), m, h, w, outs[t][b].ctypes.data_as(_U8), big_h, big_w, nt)
                else:
                    err |= lib.mtd_upsample(_ptr(logits), m, h, w, None, _ptr(outs[t][b]), big_h, big_w, nt)
            for r, t in enumerate(self.direct_heads):
                err |= lib.mtd_upsample(_ptr(buf["direct"][r]), 1, h, w, _ptr(self.bias[t]), _ptr(outs[t][b]), big_h, big_w, nt)
            if err:
                raise MemoryError("the fused kernel could not allocate its working memory")
        return outs

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.run_numpy(x.detach().float().cpu().numpy())
        return {t: torch.from_numpy(v) for t, v in out.items()}

    @torch.inference_mode()
    def labels(self, x: torch.Tensor | np.ndarray) -> dict[str, torch.Tensor]:
        x = torch.as_tensor(x)
        if self.tasks.get("seg", 0) > 256:  # more classes than uint8 labels hold
            return super().labels(x)
        out = self.run_numpy(x.detach().float().cpu().numpy(), labels=True)  # checks the input
        return {t: torch.from_numpy(v) for t, v in out.items()}
