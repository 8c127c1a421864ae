"""Reading checkpoints and state dicts from disk without ever running code from them.

Every file of weights mtdense opens goes through :func:`read_checkpoint`: ``torch.load`` with
``weights_only=True`` (tensors and plain Python values only) or safetensors, with one set of
error messages. :func:`load_state_dict_checked` puts weights into a module and, when they do
not fit, names the file, the first missing and unexpected keys and the likely cause.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["read_checkpoint", "read_safetensors_metadata", "load_state_dict_file", "load_state_dict_checked", "unwrap_state_dict"]


def _refusal(path: Path, exc: Exception) -> ValueError:
    """The message for a file ``torch.load(weights_only=True)`` refused: code, or damage."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) and ("Unsupported global" in text or "GLOBAL" in text):
        return ValueError(f"{path}: holds Python objects that could run code; mtdense loads tensors and plain settings only. "
                          "Save the weights with mtdense.save_checkpoint (or torch.save(model.state_dict())), or as .safetensors")
    with open(path, "rb") as f:
        head = f.read(2)
    if head[:2] != b"PK" and head[:1] != b"\x80":  # neither torch.save's zip archive nor a pickle
        return ValueError(f"{path}: not a checkpoint (neither a PyTorch file nor safetensors); give the .pth, .ckpt "
                          "or .safetensors file that mtdense train or export wrote")
    # The reader's first sentence only: what follows (e.g. PyTorch's guesses at the cause) is cut mid-word otherwise.
    first = text.strip().splitlines()[0].split(". ")[0][:200] if text.strip() else type(exc).__name__
    return ValueError(f"{path}: cannot read it as a checkpoint ({first}); the file may be truncated or corrupt: "
                      "copy or save it again")


def read_checkpoint(path: str | Path) -> Any:
    """Read a ``.pth`` / ``.pt`` / ``.ckpt`` file (``weights_only=True``) or a ``.safetensors`` file.

    Returns:
        What the file holds: a dict of tensors and plain values (safetensors: the tensors).

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file holds code-carrying objects (refused, never run), or it is truncated
            or corrupt; the message names the file and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types for damaged files
            raise ValueError(f"{path}: not a readable safetensors file ({exc}); it may be truncated: copy or export it again") from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling, zip and EOF errors all mean: not a usable checkpoint
        raise _refusal(path, exc) from None


def read_safetensors_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a ``.safetensors`` file (without reading its tensors)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as exc:
        raise ValueError(f"{path}: not a readable safetensors file ({exc}); it may be truncated: copy or export it again") from exc


def unwrap_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint (nested under ``state_dict`` or ``model``, or the dict itself)."""
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: holds no tensors; expected a state dict (a checkpoint saved with torch.save(model.state_dict()))")
    return obj


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict from a ``.pth`` / ``.pt`` / ``.ckpt`` or ``.safetensors`` file.

    A checkpoint dict that nests the weights under ``state_dict`` or ``model`` is unwrapped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is truncated, corrupt, carries code or holds no tensors.
    """
    return unwrap_state_dict(read_checkpoint(path), path)


def load_state_dict_checked(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str = "model") -> None:
    """``module.load_state_dict(state, strict=True)``, with an error that says what does not fit.

    Raises:
        ValueError: Missing or unexpected keys, or tensors of another shape: the message names
            ``path``, the first few keys and the likely cause.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if missing or unexpected or shapes:
        show = lambda keys: ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")  # noqa: E731
        parts = [f"missing {len(missing)} key(s): {show(missing)}" if missing else "",
                 f"unexpected {len(unexpected)} key(s): {show(unexpected)}" if unexpected else "",
                 f"other shapes: {show(shapes)}" if shapes else ""]
        raise ValueError(f"{path}: its weights do not fit this {what} ({'; '.join(p for p in parts if p)}); "
                         "it was likely saved from another encoder, decoder width or task set: check the model settings")
    module.load_state_dict(state, strict=True)
