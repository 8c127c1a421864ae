"""Deployment: every way mtdense runs a trained network, behind one runtime contract.

A runtime is built from a model or an exported file and called as ``runtime(batch) ->
{task: tensor}`` (:mod:`~mtdense.deploy.runtime`); ``Predictor``, ``mtdense bench``,
``mtdense predict --backend`` and ``mtdense export`` all look runtimes up in one registry.

=================== =====================================================================
module               owns
=================== =====================================================================
``runtime``          the contract (:class:`Runtime`), the registry, :func:`open_runtime`
``rewrite``          :class:`~mtdense.deploy.rewrite.DeployNet`, the exact inference rewrite
``eager``            PyTorch runtimes: ``eager``, ``channels_last``, ``compile``, ``fp16``,
                     ``cuda_graph``
``onnx``             ONNX export and sessions; runtimes ``ort`` and ``ort_plain``
``int8``             static int8 quantization; runtime ``ort_int8``
``openvino``         OpenVINO IR; runtime ``ov``
``fused``            ONNX Runtime + a compiled kernel (``csrc/finest.c``); runtime ``fused``
``parity``           outputs of a runtime against the PyTorch network
``bench``            ``mtdense bench``: every runtime timed side by side with the reference
``profile``          ONNX Runtime's time per node
``reference``        the write-up's network, the speed baseline
=================== =====================================================================
"""

from mtdense.deploy.runtime import (
    RUNTIMES, Runtime, RuntimeOptions, RuntimeUnavailable, create_runtime, open_runtime, register, runtime_class,
    runtime_for_file, runtime_for_format,
)

# Importing a runtime module registers its runtimes (in this order: the order of BACKENDS).
from mtdense.deploy import eager, onnx, int8, openvino  # noqa: E402,F401  isort: skip
from mtdense.deploy import fused  # noqa: E402,F401  isort: skip

__all__ = [
    "RUNTIMES", "Runtime", "RuntimeOptions", "RuntimeUnavailable", "create_runtime", "open_runtime", "register",
    "runtime_class", "runtime_for_file", "runtime_for_format",
]
