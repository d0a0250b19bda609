"""The embedded data sets by name: "digits" (`dmgd.data.digits`, 8x8) and "corners"
(`dmgd.data.corners`, the digits at the corners of a 16x16 canvas).

Each has the same split loader (`load_split()`: fixed train / test, fit / val of train)
and is the default real data of its embedded model ("digits" of the embedded digits DiT,
"corners" of the corners DiT). `is_embedded_name(s)`: whether a `data` argument names
one (an existing directory of that name is a folder, not the embedded set).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

EMBEDDED_DATA: tuple[str, ...] = ("digits", "corners")
DEFAULT_DATA = "digits"

_SOURCES = {
    "digits": "embedded digits (scikit-learn load_digits)",
    "corners": "embedded corners (dmgd.data.corners: load_digits on a 16x16 canvas, corner shares 70/20/7/3 %)",
}
_SHAPES = {"digits": (1, 8, 8), "corners": (1, 16, 16)}


def check_name(name: str) -> str:
    if name not in EMBEDDED_DATA:
        raise ValueError(f"unknown embedded data set {name!r}: expected one of {', '.join(EMBEDDED_DATA)}")
    return name


def is_embedded_name(data: str | os.PathLike[str] | None) -> bool:
    """True for "digits" / "corners" unless a directory of that name exists."""
    return isinstance(data, str) and data in EMBEDDED_DATA and not Path(data).is_dir()


def load_split(name: str) -> Any:
    """The split loader's result of an embedded data set (`.arrays(split)`, `.tensors(split)`)."""
    if check_name(name) == "corners":
        from dmgd.data.corners import load_split as corners_split

        return corners_split()
    from dmgd.data.digits import load_split as digits_split

    return digits_split()


def source(name: str, split: str) -> str:
    """How manifests and reports name a split, e.g. "embedded digits (...), train split"."""
    return f"{_SOURCES[check_name(name)]}, {split} split"


def image_shape(name: str) -> tuple[int, int, int]:
    """(C, H, W) of an embedded data set's images."""
    return _SHAPES[check_name(name)]


def write_image_folder(name: str, root: str | Path, split: str = "train") -> Path:
    """`write_image_folder` of the embedded data set `name`."""
    if check_name(name) == "corners":
        from dmgd.data.corners import write_image_folder as corners_folder

        return corners_folder(root, split)
    from dmgd.data.digits import write_image_folder as digits_folder

    return digits_folder(root, split)
