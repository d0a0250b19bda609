"""Which torch device a command runs on: `pick_device("auto" | "cpu" | "cuda" | "cuda:N")`.

Importing this module is free; torch is loaded when `pick_device` is called.
"""

from __future__ import annotations

from dmgd.errors import DmgdError, option


class DeviceError(DmgdError):
    """A device that is unknown, or asked for but not present here."""


def pick_device(device: str | None) -> str:
    """The device to use: None or "auto" is CUDA when present, else the CPU; "cpu", "cuda"
    and "cuda:N" are checked (CUDA must be available) and returned as given."""
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    name = str(device)
    if not (name == "cpu" or name.startswith("cuda")):
        raise DeviceError(f"{option('device')} must be auto, cpu, cuda or cuda:N, not {device!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"{option('device')} {device} asked for, but no CUDA device is available here; use "
                          f"{option('device')} cpu")
    return name
