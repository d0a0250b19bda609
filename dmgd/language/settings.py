"""Recipe settings: their declarations (type, default, doc) and the resolved `Settings`.

Like terms, settings are declared once here; the checker validates `name = value`
statements and `--set name=value` overrides against these declarations.
"""

from __future__ import annotations

from typing import Any

from attrs import asdict, evolve, frozen

from dmgd.guidance.specs import ParamSpec
from dmgd.sampling.samplers import SAMPLER_NAMES

SETTING_SPECS: tuple[ParamSpec, ...] = (
    ParamSpec("steps", "int", 50, "the recipe's clock: t = steps-1 is the first, noisiest step",
              low=1, high=10000, rampable=False),
    ParamSpec("sampler", "choice", "ddpm", "ddpm (respaced, as DiT's own), ddim, dpm (DPM-Solver++), euler",
              choices=SAMPLER_NAMES),
    ParamSpec("cfg", "float", 4.0, "guidance scale 1 + omega of conditioning terms that do not set their own",
              low=0.0, high=100.0, rampable=False),
    ParamSpec("ipc", "int", 10, "images per class", low=1, high=100000, rampable=False),
    ParamSpec("seed", "int", 0, "every random draw derives from it, per class and per sample index",
              low=0, high=2**63 - 1, rampable=False),
    ParamSpec("model", "str", None, "a local directory or a cached hub id of a diffusers DiT (default: embedded digits DiT)"),
    ParamSpec("data", "str", None, "an ImageFolder directory of real images (default: embedded digits train split)"),
    ParamSpec("matching", "choice", "greedy", "greedy: sample i is guided with its class's samples < i, finished and frozen; "
              "joint: a class's samples are sampled together, each guided by the others' current estimates",
              choices=("greedy", "joint")),
    ParamSpec("cfg_channels", "int", 0,
              "latent channels CFG guides: 0 = all; 3 reproduces DiT-XL/2's own forward_with_cfg",
              low=0, high=64, rampable=False),
)

SETTING_NAMES = tuple(spec.name for spec in SETTING_SPECS)


def setting_spec(name: str) -> ParamSpec | None:
    """The declaration of setting `name`, or None."""
    return next((s for s in SETTING_SPECS if s.name == name), None)


@frozen
class Settings:
    """Every setting, resolved: the recipe's values, then overrides, then defaults."""

    steps: int = 50
    sampler: str = "ddpm"
    cfg: float = 4.0
    ipc: int = 10
    seed: int = 0
    model: str | None = None
    data: str | None = None
    matching: str = "greedy"
    cfg_channels: int = 0

    def replace(self, **changes: Any) -> Settings:
        return evolve(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
