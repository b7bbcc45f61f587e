"""Data sources: the embedded Fashion-MNIST world and real image-caption data."""
from .captions import CLASS_NAMES, COLOUR_NAMES, COLOUR_TEMPLATES, ZERO_SHOT_TEMPLATES
from .dataset import Batch, PairDataset, TensorPairs, batch_collate, to_uint8

__all__ = ["Batch", "PairDataset", "TensorPairs", "batch_collate", "to_uint8", "CLASS_NAMES", "COLOUR_NAMES",
           "COLOUR_TEMPLATES", "ZERO_SHOT_TEMPLATES"]
