"""The 1000 ImageNet-1k classes as DiT numbers them, and the subsets the field distils.

DiT's class index of a wnid is its position in the sorted list of the 1000 wnids
(`n01440764` = 0, `n15075141` = 999): the table `imagenet_classes.tsv` beside this module
(wnid, then its WordNet lemmas; the same list as timm's `imagenet_synsets.txt`). ImageWoof
and ImageNette are ten classes each, listed in the order the field writes them. Never
imports torch.
"""

from __future__ import annotations

import functools
import re
from importlib.resources import files

from attrs import frozen

NUM_CLASSES = 1000
WNID = re.compile(r"^n\d{8}$")

WOOF = ("n02096294", "n02093754", "n02111889", "n02088364", "n02086240",
        "n02089973", "n02087394", "n02115641", "n02099601", "n02105641")
NETTE = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
         "n03394916", "n03417042", "n03425413", "n03445777", "n03888257")


@frozen
class ImageNetClasses:
    """wnids[i] and names[i] are DiT's class i; `index` is the inverse of wnids."""

    wnids: tuple[str, ...]
    names: tuple[str, ...]

    def index(self, wnid: str) -> int:
        return _positions(self.wnids)[wnid]

    def __contains__(self, wnid: object) -> bool:
        return wnid in _positions(self.wnids)

    def id2label(self) -> dict[str, str]:
        """{"0": "tench, Tinca tinca", ...}: the table diffusers' DiTPipeline reads."""
        return {str(i): name for i, name in enumerate(self.names)}


@functools.cache
def _positions(wnids: tuple[str, ...]) -> dict[str, int]:
    return {w: i for i, w in enumerate(wnids)}


@functools.cache
def imagenet_classes() -> ImageNetClasses:
    """The table shipped with dmgd (read once)."""
    text = (files("dmgd.data") / "imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return ImageNetClasses(wnids=tuple(r[0] for r in rows), names=tuple(r[1] for r in rows))


def is_wnid(name: str) -> bool:
    """Whether `name` is one of the 1000 ImageNet-1k wnids."""
    return bool(WNID.match(name)) and name in imagenet_classes()


PRESETS: dict[str, tuple[str, ...]] = {"woof": WOOF, "nette": NETTE}


def preset_wnids(name: str) -> tuple[str, ...]:
    """A preset's wnids: "woof", "nette" (in the field's order) or "imagenet" (all 1000, sorted)."""
    if name == "imagenet":
        return imagenet_classes().wnids
    return PRESETS[name]
