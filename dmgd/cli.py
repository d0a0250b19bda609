"""The `dmgd` command line: a thin typer layer over the public API.

Commands import their heavy dependencies (torch, diffusers, POT) inside their bodies so
that `dmgd check`, `dmgd fmt` and `dmgd terms` start fast.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="dmgd",
    help="Train-free dataset distillation with diffusion models, driven by .dmgd recipes.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def main() -> None:
    app()


# Commands are registered below, one section per family; keep each command short and
# delegate the work to the package.
