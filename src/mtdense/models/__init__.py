"""Models: encoders (registry), Light-Weight RefineNet decoder, task heads, MultiTaskNet."""

from mtdense.models.decoders import CRPBlock, LightWeightRefineNet
from mtdense.models.encoders import available_encoders, create_encoder
from mtdense.models.factory import create_model, export_safetensors, load_model, model_from_config, save_checkpoint
from mtdense.models.heads import TaskHead
from mtdense.models.net import MultiTaskNet

__all__ = [
    "CRPBlock", "LightWeightRefineNet", "available_encoders", "create_encoder", "create_model",
    "export_safetensors", "load_model", "model_from_config", "save_checkpoint", "TaskHead", "MultiTaskNet",
]
