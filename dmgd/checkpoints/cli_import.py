"""The body of `dmgd import-dit`: the import with a progress display and a one-line summary."""

from __future__ import annotations

from pathlib import Path

from dmgd.errors import DmgdError


def _summary(result) -> str:
    folded = result.difffit_blocks
    difffit = (f"; DiffFit scales folded into blocks {folded[0]}-{folded[-1]}" if len(folded) > 1
               else f"; DiffFit scales folded into block {folded[0]}" if folded else "")
    vae = f"; VAE from {result.vae}" if result.vae else "; no VAE (pixel space)"
    return (f"wrote {result.out}: DiT {result.shape.describe()} ({result.source}){difffit}{vae}. "
            f"Use it with --set model={result.out}")


def import_command(checkpoint: Path, out: Path, *, weights: str, vae: str, heads: int | None) -> int:
    """Import and report; 0, or 1 with the error on stderr."""
    from rich.console import Console

    from dmgd.checkpoints import import_dit

    console = Console(stderr=True)
    try:
        with console.status("importing") as status:
            result = import_dit(checkpoint, out, weights=weights, vae=vae, heads=heads,
                                stage=lambda name: status.update(name))
    except DmgdError as err:
        console.print(f"error: {err}", markup=False, highlight=False, soft_wrap=True)
        return 1
    except OSError as err:
        console.print(f"error: cannot write {out}: {err.strerror or err}", markup=False, highlight=False)
        return 1
    print(_summary(result))
    return 0
