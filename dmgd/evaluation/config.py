"""`EvalConfig`, every setting of `dmgd eval`, and the two presets that fill its gaps.

The presets ("imagenet" for images of at least 64 px, "digits" below) and every default
are described in docs/evaluation.md. Importing this module needs no torch.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs
from attrs import field, frozen

from dmgd.errors import DmgdError

Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["multistep", "cosine", "half-cosine"]
Preset = Literal["auto", "imagenet", "digits"]
Protocol = Literal["hard", "soft"]

IMAGENET_MIN_SIZE = 64  # images of at least this many px are ImageNet-like (preset, model variant)
IMAGENET_SIZE = 224
DIGITS_EPOCH_DIVISOR = 10
DIGITS_EVALUATIONS = 20
HARNESS_EVALUATIONS = 100
HARD_BATCH_SIZE = 64
# The soft-label protocol (RDED's validation/main.py and its ImageNet-1K scripts)
SOFT_TEMPERATURE = 20.0
SOFT_IMAGENET_EPOCHS = 300
SOFT_IMAGENET_EVAL_EVERY = 10
SOFT_IMAGENET_BATCH_SIZE = 100
SOFT_IMAGENET_SHUFFLE = 2  # ShufflePatches(factor): RDED's images are factor x factor mosaics
SOFT_TEST_RESIZE = 256  # soft ImageNet tests on Resize(256) + CenterCrop(224)
OPTIMIZER_DEFAULTS = {"adamw": {"lr": 1e-3, "weight_decay": 0.01}, "sgd": {"lr": 0.01, "weight_decay": 5e-4}}


class EvalError(DmgdError):
    """A set that cannot be evaluated, or settings that cannot be used; says what to do."""


def preset_for(native_size: int, preset: str = "auto") -> str:
    """The preset to use: `preset` itself unless "auto", which picks by the images' size:
    "imagenet" for images of at least IMAGENET_MIN_SIZE px, else "digits"."""
    if preset != "auto":
        return preset
    return "imagenet" if native_size >= IMAGENET_MIN_SIZE else "digits"


def harness_epochs(ipc: int) -> int:
    """The harness's training epochs for a distilled ImageNet subset (argument.py's
    `ipc_epoch` with factor 1 and 10 classes)."""
    if ipc == 1:
        return 3000
    if ipc <= 10:
        return 2000
    if ipc <= 50:
        return 1500
    if ipc <= 200:
        return 1000
    if ipc <= 500:
        return 500
    return 300


def digits_epochs(ipc: int) -> int:
    """The digits preset's epochs: the harness's divided by DIGITS_EPOCH_DIVISOR."""
    return max(1, harness_epochs(ipc) // DIGITS_EPOCH_DIVISOR)


def _check_choice(name: str, choices: tuple[Any, ...]):
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if value not in choices:
            raise EvalError(f"{name} must be one of {', '.join(map(str, choices))}, not {value!r}")
    return check


def _positive_or_none(name: str):
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if value is not None and not value > 0:
            raise EvalError(f"{name} must be positive, not {value!r}")
    return check


def _at_least_one(name: str):
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if value is not None and not value >= 1:
            raise EvalError(f"{name} must be at least 1, not {value!r}")
    return check


def _seeds(value: Any) -> tuple[int, ...]:
    if isinstance(value, int):
        return tuple(range(value))
    return tuple(int(v) for v in value)


def _probability(name: str):
    def check(_instance: Any, _attribute: Any, value: Any) -> None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise EvalError(f"{name} must be between 0 and 1, not {value!r}")
    return check


@frozen
class EvalConfig:
    """Every setting of the protocol. None means "the preset's value" (see `resolve`, which
    returns a copy with every field filled: that copy is what eval.json records).

    model: "convnet" (ConvNet-6), "resnet10ap" (ResNet-10-AP, the papers' model) or
      "resnet18", all with instance norm (see dmgd.evaluation.models), or "resnet18bn"
      (torchvision's ResNet-18 with batch norm: the soft protocol's ImageNet student).
    optimizer: "adamw" (DMGD's harness: lr 1e-3, wd 0.01) or "sgd" (Minimax's: lr 0.01,
      momentum 0.9, wd 5e-4). lr / weight_decay: None takes the optimizer's value.
    schedule: "multistep" (x0.2 at 2/3 and 5/6 of the epochs: both harnesses, AdamW too),
      "cosine" (to 0 over the epochs) or "half-cosine" (RDED's, to half the lr; the soft
      protocol's default). Stepped once an epoch.
    batch_size: None = 64 (soft ImageNet: 100). epochs: None = by IPC, the preset's rule. eval_every: epochs between
      test evaluations (None: the preset's), plus always the last epoch.
    seeds: the seeds, one trained classifier each (an int n means 0..n-1).
    crop / crop_scale: RandomResizedCrop on/off and its area range. flip: horizontal flip
      (None: the preset's: on for ImageNet, off for digits). jitter: colour jitter strength
      (0 = off). lighting: PCA lighting std (0 = off; RGB only). cutmix / cutmix_beta /
      cutmix_prob: CutMix on/off, Beta(beta, beta), probability per batch (None: the
      preset's: 1 for ImageNet, 0.5 for digits, the harness's value for its small sets).
    image_size: training and test resolution (None: 224 for images of >= 64 px, else
      the images' own size). ipc: images per class used (None: the manifest's ipc, else
      the smallest class's count). preset: "auto" (by image size), "imagenet", "digits".
    device: "auto" (CUDA when present), "cpu", "cuda", "cuda:1", ...
    test_batch_size: images per forward pass at test time (memory only).
    protocol: "hard" (class labels, the harness) or "soft" (RDED: a frozen teacher labels
      each augmented, CutMixed batch; jitter and lighting default to 0, CutMix to every batch).
    teacher: soft only: a teacher file or "digits" / "corners" (None: the embedded set's).
    temperature: soft only: T of the KL loss (20). shuffle_patches: soft only: the
      ShufflePatches factor (None: 2 for ImageNet, 1 = off for digits).
    """

    model: str | None = field(default=None, validator=attrs.validators.optional(
        _check_choice("model", ("convnet", "resnet10ap", "resnet18", "resnet18bn"))))
    optimizer: Optimizer = field(default="adamw", validator=_check_choice("optimizer", ("adamw", "sgd")))
    lr: float | None = field(default=None, validator=_positive_or_none("lr"))
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: Schedule | None = field(default=None, validator=attrs.validators.optional(
        _check_choice("schedule", ("multistep", "cosine", "half-cosine"))))
    batch_size: int | None = field(default=None, validator=_positive_or_none("batch_size"))
    epochs: int | None = field(default=None, validator=_positive_or_none("epochs"))
    eval_every: int | None = field(default=None, validator=_positive_or_none("eval_every"))
    seeds: tuple[int, ...] = field(default=(0, 1, 2, 3, 4), converter=_seeds)
    crop: bool = True
    crop_scale: tuple[float, float] = field(default=(0.5, 1.0), converter=lambda v: tuple(float(x) for x in v))
    flip: bool | None = None
    jitter: float | None = None
    lighting: float | None = None
    cutmix: bool = True
    cutmix_beta: float = field(default=1.0, validator=_positive_or_none("cutmix_beta"))
    cutmix_prob: float | None = field(default=None, validator=_probability("cutmix_prob"))
    image_size: int | None = field(default=None, validator=_positive_or_none("image_size"))
    ipc: int | None = field(default=None, validator=_positive_or_none("ipc"))
    preset: Preset = field(default="auto", validator=_check_choice("preset", ("auto", "imagenet", "digits")))
    device: str = "auto"
    test_batch_size: int = field(default=500, validator=_positive_or_none("test_batch_size"))
    protocol: Protocol = field(default="hard", validator=_check_choice("protocol", ("hard", "soft")))
    teacher: str | None = None
    temperature: float = field(default=SOFT_TEMPERATURE, validator=_positive_or_none("temperature"))
    shuffle_patches: int | None = field(default=None, validator=_at_least_one("shuffle_patches"))

    def __attrs_post_init__(self) -> None:
        if not self.seeds:
            raise EvalError("seeds must name at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise EvalError(f"seeds must differ from each other, not {list(self.seeds)}")
        lo, hi = self.crop_scale if len(self.crop_scale) == 2 else (0.0, -1.0)
        if not 0 < lo <= hi <= 1:
            raise EvalError(f"crop_scale must be two numbers 0 < low <= high <= 1, not {self.crop_scale}")
        if self.protocol == "hard" and (self.teacher is not None or self.shuffle_patches is not None):
            raise EvalError("teacher and shuffle_patches belong to the soft-label protocol: add --protocol soft")

    def resolve(self, *, ipc: int, native_size: int) -> EvalConfig:
        """A copy with every None filled for a set of `ipc` images per class whose images
        are `native_size` px (see docs/evaluation.md for the presets of both protocols)."""
        preset = preset_for(native_size, self.preset)
        digits = preset == "digits"
        filled = (self._soft_preset if self.protocol == "soft" else self._hard_preset)(ipc, digits)
        preset_epochs = filled.pop("epochs")
        epochs = self.epochs or preset_epochs
        every = filled.pop("eval_every")
        evaluations = DIGITS_EVALUATIONS if digits else HARNESS_EVALUATIONS
        defaults = OPTIMIZER_DEFAULTS[self.optimizer]
        values = {name: value if getattr(self, name) is None else getattr(self, name)
                  for name, value in filled.items()}
        return attrs.evolve(
            self, **values, preset=preset, epochs=epochs,
            lr=self.lr if self.lr is not None else defaults["lr"],
            weight_decay=self.weight_decay if self.weight_decay is not None else defaults["weight_decay"],
            eval_every=self.eval_every or every or max(1, epochs // evaluations),
            flip=self.flip if self.flip is not None else not digits,
            image_size=self.image_size or (native_size if digits else IMAGENET_SIZE),
            ipc=ipc,
        )

    @staticmethod
    def _hard_preset(ipc: int, digits: bool) -> dict[str, Any]:
        """The hard-label harness's values for the fields left None."""
        return {"model": "convnet" if digits else "resnet10ap", "schedule": "multistep",
                "batch_size": HARD_BATCH_SIZE, "jitter": 0.4, "lighting": 0.1,
                "cutmix_prob": 0.5 if digits else 1.0,
                "epochs": digits_epochs(ipc) if digits else harness_epochs(ipc), "eval_every": None}

    @staticmethod
    def _soft_preset(ipc: int, digits: bool) -> dict[str, Any]:
        """RDED's values (digits: its protocol at the hard digits preset's length, model,
        batch and resolution, no patch shuffling: a digit is one object, not a mosaic)."""
        return {"model": "convnet" if digits else "resnet18bn", "schedule": "half-cosine",
                "batch_size": HARD_BATCH_SIZE if digits else SOFT_IMAGENET_BATCH_SIZE,
                "jitter": 0.0, "lighting": 0.0, "cutmix_prob": 1.0,
                "shuffle_patches": 1 if digits else SOFT_IMAGENET_SHUFFLE,
                "epochs": digits_epochs(ipc) if digits else SOFT_IMAGENET_EPOCHS,
                "eval_every": None if digits else SOFT_IMAGENET_EVAL_EVERY}

    def to_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["seeds"] = list(self.seeds)
        d["crop_scale"] = list(self.crop_scale)
        if self.protocol == "hard":  # the soft protocol's own settings are recorded only when used
            for name in ("teacher", "temperature", "shuffle_patches"):
                del d[name]
        return d
