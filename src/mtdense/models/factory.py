"""Build models from plain arguments, and save/load checkpoints that rebuild their own model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mtdense.models.encoders import Pretrained, create_encoder
from mtdense.models.net import MultiTaskNet
from mtdense.models.weights import load_state_dict_checked, load_state_dict_file, read_checkpoint, read_safetensors_metadata

__all__ = ["create_model", "model_from_config", "save_checkpoint", "load_model", "export_safetensors", "DEFAULT_TASKS",
           "TASK_CHANNELS"]

DEFAULT_TASKS = {"seg": 19, "depth": 1}
TASK_CHANNELS = {"depth": 1, "normals": 3}
"""Tasks whose output channel count is fixed by what they predict (depth: one value; normals: a 3-D vector)."""
CHECKPOINT_FORMAT = "mtdense-model-v1"


def create_model(
    encoder: str = "mobilenet_v3_small",
    tasks: dict[str, int] | None = None,
    decoder_channels: int = 256,
    pretrained: Pretrained = False,
    freeze_encoder: bool = False,
) -> MultiTaskNet:
    """Create the multi-task network of the recipe.

    Args:
        encoder: Encoder name (``mobilenet_v3_small``, ``mobilenet_v3_large``, ``mobilenet_v2``
            or ``timm:<model>``). A wrong name raises and lists the valid ones.
        tasks: Task name -> output channels; default ``{"seg": 19, "depth": 1}``. Add e.g.
            ``"normals": 3`` for another head.
        decoder_channels: Light-Weight RefineNet width.
        pretrained: ``False`` (random init), ``True`` (torchvision ImageNet weights, needs
            the internet or a cached copy) or a path to a local encoder state dict.
        freeze_encoder: Keep the encoder fixed during training (worse than training it).

    Returns:
        A :class:`MultiTaskNet` whose ``config`` rebuilds it (without pretrained weights,
        which a checkpoint carries anyway).
    """
    tasks = dict(DEFAULT_TASKS if tasks is None else tasks)
    for name, c in tasks.items():
        if not isinstance(c, int) or c < 1:
            raise ValueError(f"task '{name}': output channels must be a positive int, got {c!r}")
        if name in TASK_CHANNELS and c != TASK_CHANNELS[name]:
            raise ValueError(f"task '{name}' has {TASK_CHANNELS[name]} output channels, got {c}; "
                             f"set tasks['{name}'] = {TASK_CHANNELS[name]}")
    enc = create_encoder(encoder, pretrained)
    config = {"encoder": encoder, "tasks": tasks, "decoder_channels": int(decoder_channels), "freeze_encoder": bool(freeze_encoder)}
    model = MultiTaskNet(enc, tasks, decoder_channels, config=config)
    if freeze_encoder:
        model.freeze_encoder(True)
    return model


def model_from_config(config: dict[str, Any]) -> MultiTaskNet:
    """Rebuild a model (random weights) from a saved ``model.config``."""
    known = {"encoder", "tasks", "decoder_channels", "freeze_encoder"}
    unknown = set(config) - known
    if unknown:
        raise ValueError(f"unknown model config keys {sorted(unknown)}; valid: {sorted(known)}")
    return create_model(**{**config, "pretrained": False})


def save_checkpoint(model: MultiTaskNet, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Save weights plus the config that rebuilds the model (``.pth``, or ``.safetensors``).

    ``extra`` is saved as given (plain data); the model's ``dataset_info`` (the description of
    the data it was trained on, plain data) goes into ``extra["dataset_info"]`` unless ``extra``
    names one itself.
    """
    from mtdense.io import atomic_path

    path = Path(path)
    extra = dict(extra or {})
    if extra.get("dataset_info") is not None:
        model.dataset_info = dict(extra["dataset_info"])
    elif getattr(model, "dataset_info", None) is not None:
        extra["dataset_info"] = dict(model.dataset_info)
    if path.suffix == ".safetensors":
        return export_safetensors(model, path)
    payload = {"format": CHECKPOINT_FORMAT, "config": model.config, "state_dict": model.state_dict()}
    if extra:
        payload["extra"] = extra
    with atomic_path(path) as tmp:  # a killed save leaves the old file, never a part
        torch.save(payload, tmp)
    return path


def export_safetensors(model: MultiTaskNet, path: str | Path) -> Path:
    """Write the weights as safetensors, with the model config as JSON metadata."""
    from safetensors.torch import save_file

    from mtdense.io import atomic_path

    path = Path(path)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": CHECKPOINT_FORMAT, "config": json.dumps(model.config)}
    if getattr(model, "dataset_info", None) is not None:
        metadata["dataset_info"] = json.dumps(model.dataset_info)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=metadata)
    return path


def _config_from_lightning(ckpt: dict[str, Any]) -> dict[str, Any] | None:
    hp = ckpt.get("hyper_parameters") or {}
    cfg = hp.get("model_config") or (hp.get("config") or {}).get("model")
    return dict(cfg) if cfg else None


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> MultiTaskNet:
    """Load a model saved by :func:`save_checkpoint`, :func:`export_safetensors` or training.

    Accepts mtdense ``.pth`` checkpoints, ``.safetensors`` exports and Lightning ``.ckpt``
    files written by ``mtdense train``. Nothing is unpickled (``weights_only=True``).

    The model's ``dataset_info`` is the description of the data it was trained on as plain data
    (:meth:`mtdense.data.description.DatasetInfo.to_dict`), or ``None`` for a checkpoint from
    before it was saved (a Cityscapes model; see
    :func:`mtdense.data.description.model_dataset_info`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: truncated/corrupt file, or one that does not carry a model config.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        meta = read_safetensors_metadata(path)
        if "config" not in meta:
            raise ValueError(f"{path}: safetensors file has no mtdense model config in its metadata; export it with 'mtdense export --format safetensors'")
        config = json.loads(meta["config"])
        info = json.loads(meta["dataset_info"]) if meta.get("dataset_info") else None
        state = load_state_dict_file(path)
    else:
        ckpt = read_checkpoint(path)
        if not isinstance(ckpt, dict):
            raise ValueError(f"{path}: not a checkpoint dict")
        if ckpt.get("format") == CHECKPOINT_FORMAT:
            config, state = ckpt["config"], ckpt["state_dict"]
            info = (ckpt.get("extra") or {}).get("dataset_info")
        elif "pytorch-lightning_version" in ckpt:
            config = _config_from_lightning(ckpt)
            if config is None:
                raise ValueError(f"{path}: Lightning checkpoint without an mtdense model config in hyper_parameters")
            state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
            info = (ckpt.get("hyper_parameters") or {}).get("dataset_info")
        else:
            raise ValueError(
                f"{path}: not an mtdense checkpoint (no model config). Plain state dicts need the model built first: "
                f"model = mtdense.create_model(...); model.load_state_dict(torch.load(path, weights_only=True))"
            )
    model = model_from_config(config)
    load_state_dict_checked(model, state, path)
    if info is not None and not isinstance(info, dict):
        raise ValueError(f"{path}: dataset_info must be a mapping of plain data, got {type(info).__name__}")
    model.dataset_info = None if info is None else dict(info)
    return model.to(map_location).eval()
