"""OpenVINO: the ONNX export converted to IR (:func:`export_openvino`) and run on the CPU in fp32
(the ``ov`` runtime, :class:`OpenVINORunner`). Needs ``pip install "mtdense[openvino]"``.

    >>> xml = export_openvino(export_onnx(model, "model.onnx"), "model.xml")
    >>> rt = OpenVINORunner(xml)              # the runtime contract: rt(batch) -> {task: tensor}
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtdense.deploy.onnx import OnnxModel, export_onnx
from mtdense.deploy.runtime import Runtime, RuntimeOptions, WorkDir, register, run_in_chunks
from mtdense.io import WriteError, prepare_dir

__all__ = ["OPENVINO_INSTALL_HINT", "openvino_available", "export_openvino", "OpenVINORunner"]


OPENVINO_INSTALL_HINT = 'pip install "mtdense[openvino]"'


def openvino_available() -> bool:
    """True when the ``openvino`` package is installed (it is an optional dependency)."""
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def _import_openvino():
    try:
        import openvino
    except ImportError as exc:
        raise ImportError(f"OpenVINO is not installed; {OPENVINO_INSTALL_HINT} (or pip install 'openvino>=2024.0')") from exc
    return openvino


def export_openvino(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """Convert an ONNX export (from :func:`export_onnx`) to OpenVINO IR with fp32 weights.

    ``openvino.convert_model`` reads the ONNX file, ``openvino.save_model`` writes ``xml_path``
    and the weights next to it (same stem, ``.bin``). Weights stay fp32 (``compress_to_fp16=False``;
    ``save_model`` stores them as fp16 by default, and depth must stay within 1% of fp32). The
    input/output names, dynamic dimensions and the file's ``mtdense.*`` metadata carry over (the
    metadata as the IR's runtime info under ``mtdense``).

    Returns:
        ``xml_path``.

    Raises:
        ImportError: OpenVINO is not installed (``pip install "mtdense[openvino]"``).
    """
    ov = _import_openvino()
    import onnx

    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {onnx_path}")
    if xml_path.suffix != ".xml":
        raise ValueError(f"OpenVINO IR is written as NAME.xml (+ NAME.bin), got {xml_path}")
    ov_model = ov.convert_model(onnx_path)
    for prop in onnx.load(str(onnx_path), load_external_data=False).metadata_props:
        if prop.key.startswith("mtdense."):
            ov_model.set_rt_info(prop.value, ["mtdense", prop.key.removeprefix("mtdense.")])
    # Written whole into a folder beside the target, then moved: the .bin first, then the .xml,
    # so a killed export never leaves a new .xml beside a partial .bin.
    prepare_dir(xml_path.parent)
    with tempfile.TemporaryDirectory(prefix=f".{xml_path.stem}.", dir=xml_path.parent) as tmp:
        staged = Path(tmp) / xml_path.name
        try:
            ov.save_model(ov_model, staged, compress_to_fp16=False)
        except RuntimeError as exc:  # OpenVINO reports a failed write as a RuntimeError
            raise WriteError(0, f"{xml_path}: OpenVINO could not write the IR ({str(exc).splitlines()[0]}); check the free space") from exc
        os.replace(staged.with_suffix(".bin"), xml_path.with_suffix(".bin"))
        os.replace(staged, xml_path)
    return xml_path


@register
class OpenVINORunner(Runtime):
    """An OpenVINO IR (or ONNX file) compiled for the CPU, run on ``B x 3 x H x W`` batches.

    Compiled with ``Core().compile_model(path, "CPU", config)`` where ``config`` is the latency
    hint (one inference at a time, all threads on it), ``INFERENCE_NUM_THREADS`` when ``threads``
    is given, and ``INFERENCE_PRECISION_HINT = f32``: on CPUs with native bf16/fp16 (AMX, ...)
    the plugin would otherwise pick bf16/fp16 by itself (its default performance execution mode),
    which is no longer the fp32 path that the parity checks vouch for. One infer request is created
    and reused for every call.

    Called as ``runner(batch) -> {task: tensor}``, the runtime contract (the ``ov`` runtime); built
    from a model, it converts the same DeployNet ONNX export as the ``ort`` runtime. The dataset
    description the export carried (class names, colours, tasks) is :attr:`dataset_info`, so a
    :class:`~mtdense.inference.Predictor` on an IR names and colours the model's own classes.

    Args:
        path: ``.xml`` IR (from :func:`export_openvino`) or ``.onnx``.
        threads: Inference threads; ``None`` lets OpenVINO choose (the cores it may use).
        device: OpenVINO device name (``"CPU"``).

    Raises:
        ImportError: OpenVINO is not installed (``pip install "mtdense[openvino]"``).
    """

    name = "ov"
    engine = "OpenVINO"
    description = "OpenVINO fp32 (CPU, latency hint) of the DeployNet export converted to IR"
    suffixes = (".xml",)
    export_format = "openvino"

    def __init__(self, path: str | Path, threads: int | None = None, device: str = "CPU"):
        ov = _import_openvino()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"OpenVINO model not found: {path}")
        config: dict[str, object] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.path = path
        core = ov.Core()
        model = core.read_model(str(path))
        self.dataset_info = self._dataset_info(path, model)
        self.compiled = core.compile_model(model, device, config)
        self.request = self.compiled.create_infer_request()
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self.tasks = {o.get_any_name(): o.get_partial_shape()[1].get_length() for o in self.compiled.outputs}
        shape = self.compiled.inputs[0].get_partial_shape()
        self.fixed_size = (shape[2].get_length(), shape[3].get_length()) if shape[2].is_static and shape[3].is_static else None
        self.fixed_batch = shape[0].get_length() if shape[0].is_static else None
        self.note = "OpenVINO IR fp32 (fp32 weights, f32 inference precision), CPU, latency hint"

    @staticmethod
    def _dataset_info(path: Path, model) -> dict | None:
        """The dataset description :func:`export_openvino` put in the IR's ``rt_info`` (an ``.onnx``
        file: its metadata), checked; ``None`` for a file without one."""
        from mtdense.deploy.onnx import onnx_metadata, parse_dataset_info

        if path.suffix == ".onnx":
            return parse_dataset_info(path, onnx_metadata(path).get("mtdense.dataset_info"))
        key = ["mtdense", "dataset_info"]
        return parse_dataset_info(path, model.get_rt_info(key).astype(str) if model.has_rt_info(key) else None)

    @classmethod
    def unavailable(cls, options: RuntimeOptions) -> str | None:
        if not openvino_available():
            return f"OpenVINO is not installed; {OPENVINO_INSTALL_HINT}"
        return super().unavailable(options)

    @classmethod
    def from_file(cls, path: Path, options: RuntimeOptions) -> Runtime:
        return cls(path, options.threads)

    @classmethod
    def from_model(cls, model: nn.Module, options: RuntimeOptions) -> Runtime:
        work = WorkDir(options.work_dir)
        onnx_path = OnnxModel.exported(model, options, work)  # the same export as the ort runtime
        rt = cls(export_openvino(onnx_path, work.path / f"{onnx_path.stem}.xml"), options.threads)
        rt._work = work
        rt.note = f"{OnnxModel.export_note(onnx_path)}; {rt.note}"
        return rt

    @classmethod
    def export(cls, model: nn.Module, path: Path, size: tuple[int, int], deploy: bool = True, dynamic: bool = True) -> Path:
        with tempfile.TemporaryDirectory(prefix="mtdense-export-") as tmp:  # the ONNX step is not kept
            return export_openvino(export_onnx(model, Path(tmp) / "model.onnx", size=size, deploy=deploy, dynamic=dynamic), path)

    def _infer(self, c: np.ndarray) -> list[np.ndarray]:
        # share_inputs: the request reads c in place (no copy); outputs are copied, so the
        # returned arrays stay valid after the next call.
        res = self.request.infer({0: c}, share_inputs=True)
        return [res[out] for out in self.compiled.outputs]

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return run_in_chunks(x, self.fixed_batch, self._infer, self.output_names)
