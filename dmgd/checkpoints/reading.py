"""Reading a DiT checkpoint without running its pickle: tensors only.

`torch.load(weights_only=True)` rebuilds tensors, containers and numbers and refuses every
other object; `argparse.Namespace` (the `args` of DiT's and Minimax's training
checkpoints) is allowed for the duration of the load only, never process-wide.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from attrs import frozen

from dmgd.errors import DmgdError

WEIGHTS = ("ema", "model")
# prefixes a state dict gains from DistributedDataParallel and torch.compile
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(DmgdError):
    """A checkpoint dmgd cannot import; the message names the file and what to do."""


@frozen
class StateDict:
    """The chosen weights: tensors by their original names, and where they came from."""

    tensors: Mapping[str, Any]
    source: str  # "bare state dict" or "training checkpoint, 'ema' weights"
    path: str


def _refused(path: Path, error: Exception) -> CheckpointError:
    text = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"[Uu]nsupported global: ([\w.]+)", text)
    what = (f"a reference to `{found.group(1)}` (code a pickle would call or an object it would build)" if found
            else "an object that is not a tensor")
    return CheckpointError(
        f"{path} holds {what}: dmgd reads checkpoints with torch.load(weights_only=True), which rebuilds "
        "tensors and plain containers only and never runs a pickle's code. Load it only if you trust it, "
        "then save its state dict alone: torch.save(model.state_dict(), 'weights.pt')")


def load_checkpoint(path: str | Path) -> Any:
    """The checkpoint's contents, unpickled safely (see the module doc); CheckpointError."""
    import argparse
    import pickle

    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} {'is not a file' if path.exists() else 'does not exist'}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:  # mapped, not read: a training checkpoint's optimizer state never enters memory
                return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                return torch.load(path, map_location="cpu", weights_only=True)  # the legacy format
    except pickle.UnpicklingError as error:
        raise _refused(path, error) from None
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable torch checkpoint ({type(error).__name__}: "
                              f"{str(error).splitlines()[0] if str(error) else 'no detail'}): the file is "
                              "truncated or in another format; expected a .pt/.pth saved by torch.save") from None


def _is_tensor_dict(value: Any) -> bool:
    import torch

    return isinstance(value, dict) and bool(value) and all(isinstance(v, torch.Tensor) for v in value.values())


def _check_tensors(tensors: Mapping[Any, Any], path: Path, where: str) -> None:
    import torch

    for key, value in tensors.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: {where} entry {key!r} is a {type(value).__name__}, not a tensor: a DiT state dict "
                "maps parameter names to tensors only")


def _unwrapped(tensors: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in tensors.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def choose_weights(contents: Any, path: str | Path, weights: str = "ema") -> StateDict:
    """The state dict to import: a bare one as it is; from a training checkpoint
    ({"model", "ema", "opt", "args"}), its `weights` entry (EMA by default: what DiT samples with)."""
    path = Path(path)
    if weights not in WEIGHTS:
        raise CheckpointError(f"--weights must be one of {', '.join(WEIGHTS)}, not {weights!r}")
    if not isinstance(contents, dict) or not contents:
        raise CheckpointError(f"{path} holds a {type(contents).__name__}, not a state dict (a dict of tensors) "
                              "or a training checkpoint (a dict with 'ema' and 'model')")
    if _is_tensor_dict(contents) or not any(k in contents for k in WEIGHTS):
        _check_tensors(contents, path, "the state dict's")
        return StateDict(_unwrapped(contents), "bare state dict", str(path))
    if weights not in contents:
        other = next(k for k in WEIGHTS if k in contents)
        raise CheckpointError(f"{path} is a training checkpoint without '{weights}' weights (it has "
                              f"{', '.join(map(repr, contents))}); pass --weights {other}")
    chosen = contents[weights]
    if not isinstance(chosen, dict) or not chosen:
        raise CheckpointError(f"{path}: its '{weights}' entry is a {type(chosen).__name__}, not a state dict")
    _check_tensors(chosen, path, f"the '{weights}' weights'")
    return StateDict(_unwrapped(chosen), f"training checkpoint, '{weights}' weights", str(path))
