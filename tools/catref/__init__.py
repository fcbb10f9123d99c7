"""catref: the independent PyTorch reference of the CAT model (see docs/FIXTURES.md)."""

from .model import (
    CatConfig,
    CatForCausalLM,
    load_model,
    random_model,
    resized_proj_fx,
    save_model,
)

__all__ = [
    "CatConfig",
    "CatForCausalLM",
    "load_model",
    "random_model",
    "resized_proj_fx",
    "save_model",
]
