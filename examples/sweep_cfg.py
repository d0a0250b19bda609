"""Sweep one setting over a few values and compare the distilled sets.

    python examples/sweep_cfg.py            # cfg 2, 4, 6 on the embedded digits, IPC 5

Each value gets its own output folder under sweep-out/; the table shows how far each
class's synthetic set lies from its real data (optimal-transport distance, lower is
closer) and how long sampling took. Any recipe setting sweeps the same way (`seed`,
`ipc`, `sampler`, ...). To sweep a term parameter or a window, or to score every value by
a classifier, write the alternatives in the recipe (`ot(K={5, 10})`) and run `dmgd sweep`
(docs/language.md, "Sweeps"; `dmgd.sweep.run_sweep` from Python).
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

import dmgd

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "dmgd.dmgd"


def main(values: list[float], ipc: int = 5, root: Path = Path("sweep-out")) -> None:
    table = Table(title=f"{RECIPE.name}, IPC {ipc}: sweeping cfg")
    for column in ("cfg", "mean OT distance", "worst class", "sampling s"):
        table.add_column(column, justify="right")
    for cfg in values:
        result = dmgd.run(RECIPE, root / f"cfg-{cfg:g}", ipc=ipc, cfg=cfg, overwrite=True)
        distances = result.ot_distance
        worst = max(distances, key=distances.get)
        table.add_row(f"{cfg:g}", f"{statistics.mean(distances.values()):.4f}",
                      f"{worst} ({distances[worst]:.4f})", f"{result.timings['sampling_seconds']:.1f}")
    Console().print(table)


if __name__ == "__main__":
    main([float(v) for v in sys.argv[1:]] or [2.0, 4.0, 6.0])
