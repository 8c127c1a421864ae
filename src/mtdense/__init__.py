"""mtdense: lightweight real-time multi-task dense prediction (segmentation + depth)."""

from mtdense.models import MultiTaskNet, create_model, export_safetensors, load_model, save_checkpoint

__version__ = "0.1.0"

__all__ = ["MultiTaskNet", "Predictor", "create_model", "export_safetensors", "load_model", "save_checkpoint", "__version__"]


def __getattr__(name: str):
    # Predictor pulls in OpenCV and torchvision transforms: imported on first use only.
    if name == "Predictor":
        from mtdense.inference import Predictor

        return Predictor
    raise AttributeError(f"module 'mtdense' has no attribute {name!r}")
