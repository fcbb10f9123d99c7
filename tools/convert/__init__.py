"""Converters from the authors' CAT checkpoints to catserve model directories (docs/MODELS.md)."""
