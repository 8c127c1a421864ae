"""Reading state dicts from disk without ever unpickling code."""

from __future__ import annotations

from pathlib import Path

import torch


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a ``.pth``/``.pt``/``.ckpt`` (``weights_only=True``) or ``.safetensors`` state dict.

    A checkpoint dict that nests the weights under ``state_dict`` or ``model`` is unwrapped.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is truncated, corrupt or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"{path}: cannot read weights ({type(exc).__name__}: {exc}). The file may be truncated or not a "
            f"PyTorch/safetensors state dict; re-export it."
        ) from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not any(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no tensors; expected a state dict.")
    return state
