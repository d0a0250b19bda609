"""`dmgd grid`: a contact sheet of a distilled set, one row a class."""

from __future__ import annotations

from pathlib import Path

from dmgd.data.store import MANIFEST, RunStore
from dmgd.errors import DmgdError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _class_rows(root: Path) -> list[tuple[str, list[Path]]]:
    if not root.is_dir():
        raise DmgdError(f"{root} is not a directory; give the --out directory of a `dmgd run`")
    names = None
    if (root / MANIFEST).is_file():
        names = RunStore(root, ()).read_manifest().get("class_names")
    if not names:
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "latents")))
    rows = []
    for name in names:
        files = sorted(p for p in (root / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            rows.append((name, files))
    if not rows:
        raise DmgdError(f"{root} holds no images in class folders (<class>/<index>.png)")
    return rows


def contact_sheet(root: str | Path, max_per_class: int | None = None, cell: int = 64):
    """A PIL image: one row a class, its label on the left, images scaled to `cell` px."""
    from PIL import Image, ImageDraw

    rows = _class_rows(Path(root))
    columns = max(len(files) for _, files in rows)
    if max_per_class:
        columns = min(columns, max_per_class)
    label_width, pad = 96, 2
    sheet = Image.new("RGB", (label_width + columns * (cell + pad) + pad, len(rows) * (cell + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (name, files) in enumerate(rows):
        top = pad + r * (cell + pad)
        draw.text((6, top + cell // 2 - 6), name[:14], fill="black")
        for c, path in enumerate(files[:columns]):
            with Image.open(path) as image:
                # Nearest keeps tiny images (8x8 digits) crisp; larger ones shrink smoothly.
                resample = Image.NEAREST if image.width < cell else Image.LANCZOS
                tile = image.convert("RGB").resize((cell, cell), resample)
            sheet.paste(tile, (label_width + pad + c * (cell + pad), top))
    return sheet
