"""ONNX: export (:func:`export_onnx`), ONNX Runtime sessions (:func:`ort_session`) and the
ONNX Runtime runtimes (``ort``: the :class:`~mtdense.deploy.rewrite.DeployNet` export; ``ort_plain``:
the training graph as is).

The exported graph takes ``image``: ``B x 3 x H x W`` float32 ImageNet-normalised RGB (batch,
height and width dynamic; H, W >= 32) and returns one output per task at the input size:
``seg`` (``B x C x H x W`` logits), ``depth`` (``B x 1 x H x W``, encoded as
``log(depth_m) / 5``; metres = ``exp(5 * depth)``) and, for a model with a normals head,
``normals`` (``B x 3 x H x W`` unit vectors). The model config and the description of the data it
was trained on (class names, colours, tasks: ``mtdense.dataset_info``) ride in the file's metadata,
and :class:`OnnxModel` reads them back (``runtime.dataset_info``), so a :class:`~mtdense.inference.Predictor`
of the file names and colours the classes as the checkpoint's does.

    >>> path = export_onnx(mtdense.load_model("model.pth"), "model.onnx")
    >>> rt = OnnxModel(path)                  # the runtime contract: rt(batch) -> {task: tensor}
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from mtdense.deploy.rewrite import DeployNet, NamedOutputs
from mtdense.deploy.runtime import Runtime, RuntimeOptions, WorkDir, register, run_in_chunks
from mtdense.io import atomic_path
from mtdense.models import MultiTaskNet

__all__ = ["export_onnx", "deploy_groups", "ort_session", "run_onnx", "OnnxModel", "PlainOnnxRuntime", "onnx_metadata"]


def export_onnx(
    model: MultiTaskNet,
    path: str | Path,
    size: tuple[int, int] = (400, 1024),
    deploy: bool = True,
    opset: int = 18,
    dynamic: bool = True,
    groups: int | None = None,
) -> Path:
    """Export ``model`` to a single ONNX file with the ``torch.export``-based (dynamo) exporter.

    Args:
        model: A :class:`~mtdense.models.MultiTaskNet` (or a model with ``heads`` whose forward
            returns a dict of task outputs); exported in eval mode on the CPU, not modified.
        path: Output ``.onnx`` file (weights inside, no external data file).
        size: ``(H, W)`` of the example input used for tracing.
        deploy: Export :class:`DeployNet` (same outputs, faster under ONNX Runtime) instead
            of the training graph as is.
        opset: ONNX opset.
        dynamic: Batch, height and width dynamic (else fixed to ``1 x 3 x H x W``).
        groups: :class:`DeployNet`'s channel groups at the finest level (``None``: automatic;
            ``1`` for a graph that :func:`quantize_onnx` will quantize).

    Returns:
        ``path``. The model config, the output encodings and the model's ``dataset_info`` (where
        it has one) are stored in the file's metadata (:func:`onnx_metadata`).
    """
    path = Path(path)
    model = copy.deepcopy(model).cpu().eval()
    net: nn.Module = DeployNet(model, groups=groups) if deploy else NamedOutputs(model)
    names = list(net.task_names)
    x = torch.zeros(1, 3, *size)
    dynamic_shapes = None
    if dynamic:
        dims = {0: torch.export.Dim("batch", max=1024), 2: torch.export.Dim("height", min=32), 3: torch.export.Dim("width", min=32)}
        dynamic_shapes = {"x": dims}
    chatter = io.StringIO()  # the exporter prints progress lines; errors still raise
    with torch.no_grad(), contextlib.redirect_stdout(chatter):
        program = torch.onnx.export(
            net, (x,), None, dynamo=True, opset_version=opset, input_names=["image"], output_names=names,
            dynamic_shapes=dynamic_shapes, verbose=False,
        )
    program.optimize()
    meta = {
        "mtdense.config": json.dumps(getattr(model, "config", {})),
        "mtdense.input": "image: B x 3 x H x W float32, RGB scaled to 0..1 then ImageNet mean/std normalised",
        "mtdense.outputs": json.dumps({t: _OUTPUT_MEANING.get(t, "raw") for t in names}),
        "mtdense.graph": "DeployNet" if deploy else "MultiTaskNet",
    }
    if deploy:
        meta["mtdense.deploy_groups"] = str(net.groups)
    info = getattr(model, "dataset_info", None)
    if info is not None:
        meta["mtdense.dataset_info"] = json.dumps(dict(info))
    program.model.metadata_props.update(meta)
    with atomic_path(path) as tmp:  # a killed export leaves no partial file
        program.save(str(tmp), external_data=False)
    return path


_OUTPUT_MEANING = {
    "seg": "logits over the classes of mtdense.dataset_info (Cityscapes train ids without it)",
    "depth": "log(depth_m)/5",
    "normals": "unit surface normals, camera coordinates (x right, y down, z forward)",
}


def onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``mtdense.*`` (and any other) metadata properties of an ONNX file."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def deploy_groups(path: str | Path, metadata: dict[str, str] | None = None) -> int:
    """The finest level's channel groups in an :func:`export_onnx` file (``1``: whole, or not a
    DeployNet). ``metadata``: the file's, where already read (an ONNX Runtime session's
    ``get_modelmeta().custom_metadata_map``): reading them from the file parses the whole graph,
    about a second for the full network."""
    meta = onnx_metadata(path) if metadata is None else metadata
    return int(meta.get("mtdense.deploy_groups", "1"))



_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def ort_session(
    path: str | Path,
    device: str = "cpu",
    threads: int | None = None,
    optimization: str = "all",
    profile_prefix: str | None = None,
    stop_spinning: bool = False,
    spin: bool = True,
):
    """Open an ONNX Runtime inference session.

    Args:
        path: ``.onnx`` file.
        device: ``"cpu"`` or ``"cuda"`` (needs the onnxruntime-gpu package).
        threads: Intra-op threads; ``None`` lets ONNX Runtime choose (one per physical core).
        optimization: Graph optimisation level: ``disable``, ``basic``, ``extended`` or ``all``
            (``all`` adds the CPU's blocked NCHWc layout; the default).
        profile_prefix: Write an ORT JSON profile with this path prefix (``session.end_profiling()``).
        stop_spinning: Park the worker threads as soon as a run ends instead of letting them
            spin for the next run (``session.force_spinning_stop``): what a benchmark that
            alternates runtimes needs, so one runtime's idle threads do not hold the cores
            while the next one is timed.
        spin: Let idle worker threads spin between the parallel parts of a run
            (``session.intra_op.allow_spinning``, ONNX Runtime's default). ``False`` parks them
            at once: the cores go to the process's other threads (a video's decoding and
            writing, the fused kernel) instead of to waiting.

    Returns:
        An ``onnxruntime.InferenceSession``.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found: {path}")
    if optimization not in _OPT_LEVELS:
        raise ValueError(f"optimization must be one of {sorted(_OPT_LEVELS)}, got {optimization!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[optimization])
    if threads is not None:
        so.intra_op_num_threads = int(threads)
    if stop_spinning:
        so.add_session_config_entry("session.force_spinning_stop", "1")
    if not spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    so.log_severity_level = 3  # errors only; ORT's layout warnings are not actionable here
    if device == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ValueError(f"device 'cuda' needs onnxruntime-gpu; available providers: {ort.get_available_providers()}")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    elif device == "cpu":
        providers = ["CPUExecutionProvider"]
    else:
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    try:
        return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as exc:  # ORT raises its own exception types for corrupt files
        raise ValueError(f"{path}: ONNX Runtime cannot load it ({exc}); re-export it with 'mtdense export'") from exc


def run_onnx(session, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
    """Run a session on a ``B x 3 x H x W`` normalised batch; returns ``{output name: array}``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {session.get_inputs()[0].name: x})))


def _dataset_info(path: Path, session) -> dict | None:
    """The ``mtdense.dataset_info`` metadata of an open session's file, checked; ``None`` without it."""
    return parse_dataset_info(path, session.get_modelmeta().custom_metadata_map.get("mtdense.dataset_info"))


def parse_dataset_info(path: Path, text: str | None) -> dict | None:
    """An exported file's ``mtdense.dataset_info`` metadata (JSON text) as checked plain data;
    ``None`` for a file without it.

    Raises:
        ValueError: Not JSON, or not a dataset description (the message names ``path``).
    """
    if text is None:
        return None
    from mtdense.data.description import DatasetInfo

    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: its mtdense.dataset_info metadata is not JSON ({exc}); export it again with "
                         "'mtdense export'") from exc
    return DatasetInfo.from_dict(data, source=f"{path} (mtdense.dataset_info metadata)").to_dict()


@register
class OnnxModel(Runtime):
    """An ``mtdense export`` ONNX file (fp32 or int8) run by ONNX Runtime (the ``ort`` runtime).

    Built from a model, it exports the :class:`~mtdense.deploy.rewrite.DeployNet` rewrite (fixed
    ``1 x 3 x H x W`` when ``options.size`` is given: ONNX Runtime then plans static shapes, and
    the runtime takes only that size). Its worker threads stop spinning after each run, so they
    never hold the cores that the caller's next step (or another runtime) needs.

    Args:
        path: The ``.onnx`` file.
        device: ``"cpu"`` or ``"cuda"`` (needs onnxruntime-gpu).
        threads: Intra-op threads (``None``: one per physical core).

    Attributes:
        fixed_size: ``(H, W)`` of a ``--static`` export (it accepts nothing else), else ``None``.
        tasks: Output name -> channels.
        dataset_info: The exported model's dataset description as plain data (class names,
            colours, tasks; :meth:`~mtdense.data.description.DatasetInfo.to_dict`) from the file's
            ``mtdense.dataset_info`` metadata, or ``None`` for a file exported without one.
    """

    name = "ort"
    engine = "ONNX Runtime"
    description = "ONNX Runtime fp32 of the DeployNet export (the mtdense export)"
    devices = ("cpu", "cuda")
    suffixes = (".onnx",)
    export_format = "onnx"
    deploy = True

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", threads: int | None = None):
        self.path = Path(path)
        self.device = torch.device(device)
        self.session = ort_session(self.path, device=self.device.type, threads=threads, stop_spinning=True)
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        dims = list(inp.shape)
        if len(dims) != 4 or dims[1] != 3:
            raise ValueError(f"{self.path}: expected one B x 3 x H x W image input, the file has {inp.name} {dims}; export it with 'mtdense export'")
        self.fixed_batch = dims[0] if isinstance(dims[0], int) else None
        self.fixed_size = (dims[2], dims[3]) if isinstance(dims[2], int) and isinstance(dims[3], int) else None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.tasks = {o.name: o.shape[1] for o in self.session.get_outputs()}
        missing = {"seg", "depth"} - set(self.output_names)
        if missing:
            raise ValueError(f"{self.path}: no output named {sorted(missing)} (outputs: {self.output_names}); export it with 'mtdense export'")
        self.dataset_info = _dataset_info(self.path, self.session)
        self.note = f"ORT {self.session.get_providers()[0].replace('ExecutionProvider', '')}, graph opt all"

    @classmethod
    def from_file(cls, path: Path, options: RuntimeOptions) -> Runtime:
        return cls(path, options.device, options.threads)  # its fixed size, if any, is the caller's to check

    @classmethod
    def exported(cls, model: nn.Module, options: RuntimeOptions, work: WorkDir, groups: int | None = None) -> Path:
        """``model`` exported as this runtime's graph: into ``options.work_dir`` where one is given
        (reused when already there), else from mtdense's graph cache (:mod:`mtdense.deploy.cache`,
        keyed by the weights, the graph's form and the size), so that a second start from the
        same checkpoint skips the export. Files derived from it (an OpenVINO IR, an int8 graph)
        belong in ``work``, never beside a cached graph."""
        form = "plain" if not cls.deploy else "deploy1" if groups == 1 else "deploy"

        def export(path: Path) -> None:
            export_onnx(model, path, size=options.size or (128, 128), deploy=cls.deploy, dynamic=options.size is None, groups=groups)

        if options.work_dir is None:
            from mtdense.deploy.cache import cached_graph, graph_cache_dir, graph_key

            try:
                root = graph_cache_dir()
            except OSError:  # no writable cache anywhere: export into the runtime's own folder
                root = None
            if root is not None:
                return cached_graph(graph_key(model, options.size, form), export, root)[0]
        shape = f"{options.size[0]}x{options.size[1]}" if options.size else "dynamic"
        path = work.path / f"{form}_{shape}.onnx"
        if not path.exists():
            export(path)
        return path

    @classmethod
    def from_model(cls, model: nn.Module, options: RuntimeOptions) -> Runtime:
        work = WorkDir(options.work_dir)
        path = cls.exported(model, options, work)
        rt = cls(path, options.device, options.threads)
        rt._work = work  # the file lives as long as the runtime
        rt.note = f"{cls.export_note(path, rt.session.get_modelmeta().custom_metadata_map)}; {rt.note}"
        return rt

    @classmethod
    def export_note(cls, path: Path, metadata: dict[str, str] | None = None) -> str:
        groups = deploy_groups(path, metadata)
        return "DeployNet export" + (f" (finest level in {groups} channel groups)" if groups > 1 else "")

    @classmethod
    def export(cls, model: nn.Module, path: Path, size: tuple[int, int], deploy: bool = True, dynamic: bool = True) -> Path:
        return export_onnx(model, path, size=size, deploy=deploy, dynamic=dynamic)

    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return run_in_chunks(x, self.fixed_batch, lambda c: self.session.run(self.output_names, {self.input_name: c}), self.output_names)


@register
class PlainOnnxRuntime(OnnxModel):
    """ONNX Runtime fp32 of the training graph exported as is (shows what the rewrite buys)."""

    name = "ort_plain"
    description = "ONNX Runtime fp32 of the training graph as is"
    suffixes = ()
    export_format = None
    deploy = False

    @classmethod
    def export_note(cls, path: Path, metadata: dict[str, str] | None = None) -> str:
        return "training graph exported as is"
