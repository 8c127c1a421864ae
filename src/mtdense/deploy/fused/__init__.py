"""The fused CPU deploy path: ONNX Runtime for the encoder and the coarser decoder levels, and a
compiled kernel for the finest decoder level and the heads.

Under ONNX Runtime the finest level is the costly part of the network: some 170 operators, each a
pass over a 1/4-resolution map (see docs/benchmarks.md). :class:`FusedNet` runs everything up to
that level's inputs as an ONNX Runtime graph (the same :class:`~mtdense.deploy.rewrite.DeployNet`
rewrite as ``mtdense export``), then ``csrc/finest.c``:

* takes each channel plane through the level's input sum, ReLU6, the whole Chained Residual
  Pooling and the heads' depthwise scales while it sits in the core's own cache;
* computes each head's 3x3 convolution: one-output heads such as depth accumulate it per
  channel; the others (segmentation) run it as Winograd F(4x4, 3x3), 36 GEMMs on 4 x 4 output
  tiles with 2.25 instead of 9 multiplications per output (AVX2/FMA when the CPU has it);
* upsamples the outputs bilinearly to the input size.

It runs every head whose raw output is the task's output (segmentation, depth, ...); a model with a
surface-normals head is refused (its vectors must be normalised after the upsampling): run it with
the ONNX or eager backend.

It computes the same function as the network: every sum but the Winograd convolution's has the
same terms, added in another order, and the Winograd transforms add rounding of about 1e-6 of
the logits' size (outputs agree with PyTorch to about 1e-7 on the default network).

The kernel is compiled with the system's C compiler at first use (``cc -O3 -march=native``) and
cached under ``~/.cache/mtdense`` (or ``$MTDENSE_CACHE``); without a compiler
:class:`FusedUnavailable` says so, and ``mtdense export`` + ONNX Runtime remains the portable
path.

Modules: :mod:`~mtdense.deploy.fused.build` (compiling and caching the kernel, safely),
:mod:`~mtdense.deploy.fused.net` (:class:`FusedNet`, the ``fused`` runtime), ``csrc/finest.c``.

    >>> net = FusedNet(mtdense.load_model("model.pth"))
    >>> out = net(images)                     # {"seg": B x 19 x H x W, "depth": B x 1 x H x W}
    >>> predictor = mtdense.Predictor(net)    # images, folders, videos
"""

from mtdense.deploy.fused.build import SOURCE, FusedUnavailable, build_library, fused_available, load_library
from mtdense.deploy.fused.net import FusedNet

# The kernel computes the heads itself and returns their raw outputs: right for segmentation logits,
# encoded depth and any other raw head, but a normals head needs its vectors normalised after the
# upsampling, which the kernel does not do. A model with normals is refused where the fused runtime
# is chosen (Runtime.refuses), naming the ONNX and eager backends instead.
FusedNet.raw_heads = True

__all__ = ["FusedNet", "FusedUnavailable", "SOURCE", "build_library", "fused_available", "load_library"]
