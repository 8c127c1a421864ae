"""int8: static QDQ quantization of the ONNX export, calibrated on real images
(:func:`quantize_onnx`), and its runtime ``ort_int8``.

    >>> quantize_onnx("model.onnx", "model.int8.onnx", calibration_images("val_images/"))
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from torch import nn

from mtdense.data.image import IMAGE_SUFFIXES, normalize_images, read_image
from mtdense.deploy.machine import int8_saturates
from mtdense.deploy.onnx import OnnxModel, deploy_groups
from mtdense.deploy.runtime import Runtime, RuntimeOptions, RuntimeUnavailable, WorkDir, register
from mtdense.io import atomic_path

__all__ = ["INT8_FP32_SCOPES", "calibration_images", "preprocess_images", "ImageCalibrationReader", "quantize_onnx", "Int8OnnxRuntime"]

# Module scopes kept in fp32 by default in the int8 model: the last (3x3) conv of each head.
# Their outputs are the logits and the log-depth; 8-bit steps there cost more accuracy
# (a 1.25-wide log-depth range in 255 steps is already ~2.5% relative depth) than time.
INT8_FP32_SCOPES = ("heads.*.2",)


def calibration_images(folder: str | Path, limit: int = 64) -> list[Path]:
    """Image files under ``folder`` (recursively, sorted), at most ``limit``, evenly spread.

    Raises:
        FileNotFoundError: ``folder`` does not exist or holds no images.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) found for calibration")
    if len(files) > limit:
        step = len(files) / limit
        files = [files[int(i * step)] for i in range(limit)]
    return files


def preprocess_images(images: Iterable[str | Path | np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Read (paths) / take (H x W x 3 uint8 RGB arrays) images, resize to ``size`` and normalise.

    Returns:
        ``N x 3 x H x W`` float32, ImageNet-normalised; unreadable files raise ``ValueError``.
    """
    rgbs = [read_image(im) if isinstance(im, (str, Path)) else im for im in images]
    return np.concatenate([normalize_images([rgb], size).numpy() for rgb in rgbs])


class ImageCalibrationReader:
    """Feeds calibration images, one at a time, to ``onnxruntime.quantization.quantize_static``.

    Implements ``onnxruntime.quantization.CalibrationDataReader`` (``get_next`` returns an
    input dict, then ``None`` when exhausted; ``rewind`` starts over).

    Args:
        images: Paths or H x W x 3 uint8 RGB arrays.
        size: ``(H, W)`` the model will run at (calibration ranges depend on it a little).
        input_name: The ONNX input name.
    """

    def __init__(self, images: Sequence[str | Path | np.ndarray], size: tuple[int, int], input_name: str = "image"):
        if not images:
            raise ValueError("ImageCalibrationReader needs at least one image")
        self.images = list(images)
        self.size = size
        self.input_name = input_name
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self.images):
            return None
        x = preprocess_images([self.images[self._i]], self.size)
        self._i += 1
        return {self.input_name: x}

    def rewind(self) -> None:
        self._i = 0

    def __len__(self) -> int:
        return len(self.images)


def _scope_matches(node, patterns: Sequence[str]) -> bool:
    import fnmatch

    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = json.loads(prop.value.replace("'", '"'))
            except ValueError:
                return False
            # name_scopes lists the module path from the root; the DeployNet root has no prefix.
            return any(fnmatch.fnmatch(s, p) or fnmatch.fnmatch(s, f"*.{p}") for s in scopes for p in patterns)
    return False


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    images: Sequence[str | Path | np.ndarray],
    size: tuple[int, int] = (400, 1024),
    per_channel: bool = True,
    fp32_scopes: Sequence[str] = INT8_FP32_SCOPES,
    reduce_range: bool | None = None,
) -> Path:
    """Static int8 quantization (QDQ format) calibrated on real images.

    Activations are uint8 (asymmetric, min/max calibration), weights int8 per output channel
    (``per_channel``), the format ONNX Runtime's CPU kernels (VNNI / AVX2 / NEON) run fastest.
    Nodes whose PyTorch module path matches one of ``fp32_scopes`` (``fnmatch`` patterns over
    module names, e.g. ``heads.*.2``) stay in fp32, as do the final resizes to input size.

    Args:
        fp32_path: An fp32 model from :func:`export_onnx` with ``groups=1`` (or ``deploy=False``).
        out_path: Output ``.onnx``.
        images: Calibration images (paths or RGB uint8 arrays); 20..100 typical.
        size: ``(H, W)`` to calibrate at.
        per_channel: Per-output-channel weight scales (much more accurate for depthwise convs).
        fp32_scopes: Module-path patterns left unquantized.
        reduce_range: 7-bit weights, which ONNX Runtime advises for CPUs without VNNI (their int8
            dot products add pairs with 16-bit saturation and overflow with 8-bit weights).
            ``None``: by this CPU (:func:`~mtdense.deploy.machine.int8_saturates`); quantize on
            the kind of CPU the file will run on, or pass it.

    Returns:
        ``out_path``, carrying the ``mtdense.*`` metadata of ``fp32_path`` (model config, dataset
        description).
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    if not fp32_path.is_file():
        raise FileNotFoundError(f"fp32 ONNX model not found: {fp32_path}")
    groups = deploy_groups(fp32_path)
    if groups != 1:
        raise ValueError(
            f"{fp32_path} is a DeployNet export with a grouped finest level ({groups} groups), whose head convolutions "
            "cannot be kept in fp32 by module path; quantize an export made with export_onnx(..., groups=1)"
        )
    with tempfile.TemporaryDirectory(prefix="mtdense-quant-") as tmp, atomic_path(out_path) as out_tmp:
        pre = Path(tmp) / "pre.onnx"
        # Shape inference + ORT basic graph optimisation before inserting Q/DQ (ORT's advice);
        # symbolic shape inference gives up on the dynamic upsampling sizes, ONNX's does not.
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        # Module scopes live in the exported file's node metadata, which pre-processing drops;
        # node names survive it.
        source = onnx.load(str(fp32_path), load_external_data=False)
        exclude = [n.name for n in source.graph.node if _scope_matches(n, fp32_scopes)]
        graph = onnx.load(str(pre))
        outputs = {x.name for x in graph.graph.output}
        exclude += [n.name for n in graph.graph.node if n.op_type == "Resize" and outputs & set(n.output)]
        reader = ImageCalibrationReader(images, size, graph.graph.input[0].name)
        quantize_static(
            str(pre), str(out_tmp), reader, quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, nodes_to_exclude=exclude,
            reduce_range=bool(int8_saturates() if reduce_range is None else reduce_range),
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )
        # The file's mtdense.* metadata (model config, dataset description) goes with it.
        quantized = onnx.load(str(out_tmp))
        have = {p.key for p in quantized.metadata_props}
        for prop in source.metadata_props:
            if prop.key.startswith("mtdense.") and prop.key not in have:
                quantized.metadata_props.add(key=prop.key, value=prop.value)
        onnx.save(quantized, str(out_tmp))
    return out_path


@register
class Int8OnnxRuntime(OnnxModel):
    """ONNX Runtime of the static int8 QDQ quantization of the DeployNet export.

    Built from a model, it exports the ungrouped rewrite (its fp32 exclusions go by module path)
    and calibrates on ``options.calibration`` (required). An int8 ``.onnx`` file opens with the
    ``ort`` runtime like any export.
    """

    name = "ort_int8"
    description = "ONNX Runtime, static int8 QDQ of the DeployNet export"
    devices = ("cpu",)
    suffixes = ()
    export_format = None

    @classmethod
    def from_model(cls, model: nn.Module, options: RuntimeOptions) -> Runtime:
        if not options.calibration:
            raise RuntimeUnavailable("ort_int8 needs calibration images (RuntimeOptions.calibration)")
        if options.size is None:
            raise RuntimeUnavailable("ort_int8 calibrates at one input size: give a size (H, W)")
        work = WorkDir(options.work_dir)
        fp32 = cls.exported(model, options, work, groups=1)
        q_path = quantize_onnx(fp32, work.path / f"int8_{fp32.name}", options.calibration, size=options.size)
        rt = cls(q_path, options.device, options.threads)
        rt._work = work
        weights = "7-bit weights (no VNNI here)" if int8_saturates() else "8-bit weights"
        # the int8 file carries the fp32 one's metadata: read from the session, not by parsing a file again
        meta = rt.session.get_modelmeta().custom_metadata_map
        rt.note = (f"{cls.export_note(fp32, meta)}; int8 QDQ per-channel, {weights}, calibrated on {len(options.calibration)} "
                   f"image(s); {rt.note}")
        return rt
