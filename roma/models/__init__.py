"""RoMA models: the Mamba encoder, the autoregressive decoder, and the registry of named sizes."""
from roma.models.registry import MODELS, count_params, create_model, get_model_size, list_models

__all__ = ["MODELS", "count_params", "create_model", "get_model_size", "list_models"]
