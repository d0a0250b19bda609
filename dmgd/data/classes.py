"""Which data classes a run distils, which model class each one is, and the folder it writes.

The `classes` setting picks data classes: a preset (`woof`, `nette`: the field's ten-class
subsets of ImageNet; `imagenet`: all 1000) or a list of ImageNet wnids and class indices,
separated by commas or spaces (`"n02096294, 207"`). An index names the data folder of that
ImageNet class's wnid, or else the folder named by that number (`7`, `007`). Only the
chosen class folders are opened.

Folders named by wnid map to a 1000-class model by DiT's table (`dmgd.data.imagenet`):
whatever else the folder holds, n02096294 is class 193. The `out_names` setting names the
output folders: `data` keeps the data's names (the field's layout, `OUT/n02096294/`),
`index` writes the model class as five digits (RDED's layout, `OUT/00193/`).
Never imports torch.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from dmgd.data.imagenet import NUM_CLASSES, PRESETS, imagenet_classes, is_wnid, preset_wnids
from dmgd.errors import DmgdError

PRESET_NAMES = (*PRESETS, "imagenet")
OUT_NAMES = ("data", "index")
_SEPARATORS = re.compile(r"[,\s]+")


class ClassSelectionError(DmgdError):
    """A `classes` setting that names classes the data does not hold."""


def selection_items(text: str) -> tuple[str, ...]:
    """The setting's items: a preset's wnids, or the listed wnids and indices as written."""
    text = str(text).strip()
    if text in PRESET_NAMES:
        return preset_wnids(text)
    return tuple(item for item in _SEPARATORS.split(text) if item)


def classes_problem(text: str) -> str | None:
    """The setting's problem in words, or None (the checker's form check; no data needed)."""
    items = selection_items(text)
    if not items:
        return f"names no class: write a preset ({' | '.join(PRESET_NAMES)}) or wnids and indices, e.g. \"n02096294, 207\""
    for item in items:
        if item.isdigit():
            continue
        if not is_wnid(item):
            return (f"has {item!r}, which is neither a preset ({' | '.join(PRESET_NAMES)}), an ImageNet-1k wnid "
                    "(e.g. n02096294) nor a class index (e.g. 207)")
    return None


def _folder_for(item: str, names: Sequence[str]) -> str | None:
    if not item.isdigit():
        return item if item in names else None
    index = int(item)
    table = imagenet_classes()
    if index < NUM_CLASSES and table.wnids[index] in names:
        return table.wnids[index]
    return next((n for n in names if n.isdigit() and int(n) == index), None)


def _describe(item: str) -> str:
    table = imagenet_classes()
    if item.isdigit() and int(item) < NUM_CLASSES:
        index = int(item)
        return f"{item} ({table.wnids[index]}, {table.names[index]})"
    if is_wnid(item):
        return f"{item} (ImageNet class {table.index(item)}, {table.names[table.index(item)]})"
    return item


def choose_class_names(names: Sequence[str], selection: str, root: str | Path = "the data folder") -> tuple[str, ...]:
    """The class folder names (sorted, as the loader lists them) that `selection` picks."""
    problem = classes_problem(selection)
    if problem is not None:
        raise ClassSelectionError(f"setting `classes` {problem}")
    chosen, missing = set(), []
    for item in selection_items(selection):
        folder = _folder_for(item, names)
        if folder is None:
            missing.append(item)
        else:
            chosen.add(folder)
    if missing:
        shown = ", ".join(_describe(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ClassSelectionError(
            f"{root} has no class folder for {shown} that the `classes` setting ({selection}) asks for: "
            f"point the data at an ImageNet train folder (one folder per wnid), or choose classes it holds "
            f"(its first folders: {', '.join(sorted(names)[:5])})")
    return tuple(sorted(chosen))


def imagenet_class_ids(data_names: Sequence[str], num_classes: int) -> tuple[int, ...] | None:
    """DiT's class of each data class when every name is an ImageNet wnid and the model has
    1000 classes; None otherwise."""
    if num_classes != NUM_CLASSES or not data_names or not all(is_wnid(n) for n in data_names):
        return None
    table = imagenet_classes()
    return tuple(table.index(n) for n in data_names)


def output_names(data_names: Sequence[str], class_ids: Sequence[int], out_names: str = "data") -> tuple[str, ...]:
    """The output folder of each data class: its own name, or its model class as `00193`."""
    if out_names == "index":
        return tuple(f"{int(c):05d}" for c in class_ids)
    return tuple(data_names)


def class_mapping(data_names: Sequence[str], class_ids: Sequence[int], folders: Sequence[str],
                  labels: Sequence[str] | None) -> list[dict[str, object]]:
    """The manifest's record: each data class, its model class (and label), its output folder."""
    rows = []
    for name, c, folder in zip(data_names, class_ids, folders):
        row: dict[str, object] = {"data": name, "model_class": int(c), "folder": folder}
        if labels is not None and 0 <= int(c) < len(labels):
            row["label"] = labels[int(c)]
        rows.append(row)
    return rows
