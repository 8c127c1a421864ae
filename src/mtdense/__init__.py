"""mtdense: lightweight real-time multi-task dense prediction (segmentation + depth)."""

from mtdense.models import MultiTaskNet, create_model, export_safetensors, load_model, save_checkpoint

__version__ = "0.1.0"

__all__ = ["MultiTaskNet", "create_model", "export_safetensors", "load_model", "save_checkpoint", "__version__"]
