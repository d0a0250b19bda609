"""Recipe settings: their declarations (type, default, doc) and the resolved `Settings`.

Like terms, settings are declared once here; the checker validates `name = value`
statements and `--set name=value` overrides against these declarations.
"""

from __future__ import annotations

from typing import Any

from attrs import asdict, evolve, frozen

from dmgd.guidance.specs import ParamSpec
from dmgd.sampling.samplers import SAMPLER_NAMES

def parse_shape(text: str) -> tuple[int, ...]:
    """A latent shape written `CxHxW` (e.g. "4x32x32") -> (4, 32, 32); ValueError otherwise."""
    parts = str(text).strip().lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"expected a latent shape written CxHxW, e.g. \"4x32x32\", got {text!r}")
    return tuple(int(p) for p in parts)


def _shape_problem(text: str) -> str | None:
    try:
        parse_shape(text)
    except ValueError:
        return f"expects a latent shape written CxHxW (channels x height x width), e.g. \"4x32x32\", got {text!r}"
    return None


def _classes_problem(text: str) -> str | None:
    from dmgd.data.classes import classes_problem

    return classes_problem(text)


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
    ParamSpec("model", "str", None, "a local directory or a cached hub id of a diffusers DiT, or an embedded "
              "model: digits (the default) or corners"),
    ParamSpec("data", "str", None, "an ImageFolder directory of real images, or an embedded data set (digits, "
              "corners); default: the model's own (the embedded model's train split)"),
    ParamSpec("matching", "choice", "greedy", "greedy: sample i is guided with its class's samples < i, finished and frozen; "
              "joint: a class's samples are sampled together, each guided by the others' current estimates",
              choices=("greedy", "joint")),
    ParamSpec("cfg_channels", "int", 0,
              "latent channels CFG guides: 0 = all; 3 reproduces DiT-XL/2's own forward_with_cfg",
              low=0, high=64, rampable=False),
    ParamSpec("reference", "str", None,
              "the latent shape CxHxW the windows were written for (e.g. \"4x32x32\"): windows are then placed by "
              "noise level, shifted to the model's latent size (default: none, windows on the recipe clock)",
              form=_shape_problem),
    ParamSpec("push", "choice", "step",
              "step: rho is the strength at each step; total: each energy rule's rho is rescaled so that its "
              "total push sum(rho * sigma_t) equals that of the recipe's own sampler at `steps` steps",
              choices=("step", "total")),
    ParamSpec("precision", "choice", "fp32",
              "fp32, or bf16 / fp16: the denoiser and the VAE run under autocast (guidance maths and Sinkhorn "
              "stay fp32)", choices=("fp32", "bf16", "fp16")),
    ParamSpec("classes", "str", None,
              "which data classes to distil: woof, nette (the ten-class ImageNet subsets), imagenet (all 1000), or "
              "ImageNet wnids and class indices, e.g. \"n02096294, 207\"; only their folders are read (default: all)",
              form=_classes_problem),
    ParamSpec("out_names", "choice", "data",
              "output folder names: data keeps the data's class names (OUT/n02096294), index writes the model "
              "class as five digits (OUT/00193)", choices=("data", "index")),
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
    reference: str | None = None
    push: str = "step"
    precision: str = "fp32"
    classes: str | None = None
    out_names: str = "data"

    def replace(self, **changes: Any) -> Settings:
        return evolve(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every setting; `reference`, `push`, `precision`, `classes` and `out_names` only when
        set (opt-in: a recipe without them records the same settings as before they existed,
        so its runs still resume)."""
        out = asdict(self)
        for name, default in (("reference", None), ("push", "step"), ("precision", "fp32"), ("classes", None),
                              ("out_names", "data")):
            if out[name] == default:
                del out[name]
        return out
