"""Weight layouts: a registry (`LAYOUTS`: name -> detect, read, write, description) and the layouts in it."""

from rosetta_tools.layouts import safetensors_files  # noqa: F401, I001  (registers rosetta, torch, torch-modules)
from rosetta_tools.layouts import orbax_checkpoints  # noqa: F401  (registers orbax, after them)
from rosetta_tools.layouts import hf_checkpoints  # noqa: F401  (hf-bert, -roberta, -modernbert, -distilbert, sentence-transformers)
from rosetta_tools.layouts.registry import LAYOUTS, Checkpoint, Layout, WeightFile, load, load_checkpoint, read, save

__all__ = ["LAYOUTS", "Checkpoint", "Layout", "WeightFile", "load", "load_checkpoint", "read", "save"]
