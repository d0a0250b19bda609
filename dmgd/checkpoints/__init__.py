"""Importing DiT checkpoints: the original `DiT-XL-2-256x256.pt`, DiT's and Minimax's
training checkpoints, into the diffusers folder dmgd loads.

`reading` unpickles tensors only; `convert` folds Minimax's DiffFit scales, infers the
architecture from the shapes and renames to diffusers' keys; `writing` writes the folder;
`convention` is the timestep embedding the imported folder asks dmgd's loader for;
`importer` is `dmgd import-dit`.
"""

from dmgd.checkpoints.convert import DiTShape
from dmgd.checkpoints.importer import DEFAULT_VAE, ImportResult, import_dit
from dmgd.checkpoints.reading import CheckpointError

__all__ = ["DEFAULT_VAE", "CheckpointError", "DiTShape", "ImportResult", "import_dit"]
