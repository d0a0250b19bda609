"""`dmgd eval`: what a distilled set is worth, measured the way the papers measure it.

    the distilled set (first IPC images per class, sorted) --train--> a fresh classifier
    the real held-out set --test--> top-1 accuracy; repeated over seeds

`evaluate(out_dir, real_dir=None, config=EvalConfig())` trains one classifier per seed on
the distilled images with hard labels (the class folders), tests it on the real held-out
images, and returns an `EvalResult`: per seed the last-epoch accuracy and the best
accuracy over the periodic evaluations, and their mean and POPULATION standard deviation
(numpy's default `np.std`, as the harness prints; over 5 seeds the sample std is 1.118x
larger). "Best" is selected on the test set itself, as the papers report it; the
last-epoch figure is the one a held-out protocol would give.

Two presets fill whatever the config leaves as None (`EvalConfig.resolve`):
* "imagenet" (distilled images of at least 64 px): the Minimax / DMGD harness of
  docs/evaluation.md: 224 px, epochs 3000 / 2000 / 1500 / 1000 / 500 / 300 by IPC
  (1 / <= 10 / <= 50 / <= 200 / <= 500 / more), an evaluation every epochs // 100,
  RandomResizedCrop + flip + colour jitter + lighting + CutMix (p = 1), ResNet-10-AP.
* "digits" (smaller images, the embedded default): native 8x8, ConvNet-6, the harness's
  epochs divided by 10 (200 at IPC <= 10, 150 at <= 50, 100 at <= 200), 20 evaluations a
  run, no flip (a mirrored digit is another symbol or none), CutMix with p = 0.5 (the
  harness's value for its small sets: MNIST, CIFAR, SVHN), the same crop and jitter;
  lighting is RGB only, so it does nothing on grayscale.

Reproducible: each seed's run is a pure function of (images, config, seed). Weights come
from `torch.manual_seed(seed)`; data order and augmentation each from their own CPU
`torch.Generator`, seeded from sha256("dmgd-eval:<purpose>:<seed>"); deterministic
kernels are enforced (`torch.use_deterministic_algorithms(True)`, cuDNN deterministic and
unbenchmarked, `CUBLAS_WORKSPACE_CONFIG=:4096:8` on CUDA) for the duration of the call and
restored afterwards, as is torch's global generator. On one machine, device, thread count
and software stack the accuracies are identical run after run.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import attrs
from attrs import field, frozen

from dmgd.errors import DmgdError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from dmgd.data.images import RealImages

Optimizer = Literal["adamw", "sgd"]
Schedule = Literal["multistep", "cosine"]
Preset = Literal["auto", "imagenet", "digits"]

IMAGENET_SIZE = 224
DIGITS_EPOCH_DIVISOR = 10
DIGITS_EVALUATIONS = 20
HARNESS_EVALUATIONS = 100
OPTIMIZER_DEFAULTS = {"adamw": {"lr": 1e-3, "weight_decay": 0.01}, "sgd": {"lr": 0.01, "weight_decay": 5e-4}}
MANIFEST = "manifest.json"
EVAL_JSON = "eval.json"
_GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class EvalError(DmgdError):
    """A set that cannot be evaluated, or settings that cannot be used; says what to do."""


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
      "resnet18"; all with instance norm (see dmgd.evaluation.models).
    optimizer: "adamw" (DMGD's harness: lr 1e-3, wd 0.01) or "sgd" (Minimax's: lr 0.01,
      momentum 0.9, wd 5e-4). lr / weight_decay: None takes the optimizer's value.
    schedule: "multistep" (x0.2 at 2/3 and 5/6 of the epochs: both harnesses, AdamW too)
      or "cosine" (to 0 over the epochs). Stepped once an epoch.
    batch_size: 64. epochs: None = by IPC, the preset's rule. eval_every: epochs between
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
    """

    model: str | None = field(default=None, validator=attrs.validators.optional(
        _check_choice("model", ("convnet", "resnet10ap", "resnet18"))))
    optimizer: Optimizer = field(default="adamw", validator=_check_choice("optimizer", ("adamw", "sgd")))
    lr: float | None = field(default=None, validator=_positive_or_none("lr"))
    momentum: float = 0.9
    weight_decay: float | None = None
    schedule: Schedule = field(default="multistep", validator=_check_choice("schedule", ("multistep", "cosine")))
    batch_size: int = field(default=64, validator=_positive_or_none("batch_size"))
    epochs: int | None = field(default=None, validator=_positive_or_none("epochs"))
    eval_every: int | None = field(default=None, validator=_positive_or_none("eval_every"))
    seeds: tuple[int, ...] = field(default=(0, 1, 2, 3, 4), converter=_seeds)
    crop: bool = True
    crop_scale: tuple[float, float] = field(default=(0.5, 1.0), converter=lambda v: tuple(float(x) for x in v))
    flip: bool | None = None
    jitter: float = 0.4
    lighting: float = 0.1
    cutmix: bool = True
    cutmix_beta: float = field(default=1.0, validator=_positive_or_none("cutmix_beta"))
    cutmix_prob: float | None = field(default=None, validator=_probability("cutmix_prob"))
    image_size: int | None = field(default=None, validator=_positive_or_none("image_size"))
    ipc: int | None = field(default=None, validator=_positive_or_none("ipc"))
    preset: Preset = field(default="auto", validator=_check_choice("preset", ("auto", "imagenet", "digits")))
    device: str = "auto"
    test_batch_size: int = field(default=500, validator=_positive_or_none("test_batch_size"))

    def __attrs_post_init__(self) -> None:
        if not self.seeds:
            raise EvalError("seeds must name at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise EvalError(f"seeds must differ from each other, not {list(self.seeds)}")
        lo, hi = self.crop_scale if len(self.crop_scale) == 2 else (0.0, -1.0)
        if not 0 < lo <= hi <= 1:
            raise EvalError(f"crop_scale must be two numbers 0 < low <= high <= 1, not {self.crop_scale}")

    def resolve(self, *, ipc: int, native_size: int) -> EvalConfig:
        """A copy with every None filled for a set of `ipc` images per class whose images
        are `native_size` px (see the module doc for the presets)."""
        preset = self.preset
        if preset == "auto":
            preset = "imagenet" if native_size >= 64 else "digits"
        digits = preset == "digits"
        epochs = self.epochs or (digits_epochs(ipc) if digits else harness_epochs(ipc))
        evaluations = DIGITS_EVALUATIONS if digits else HARNESS_EVALUATIONS
        image_size = self.image_size or (native_size if digits else IMAGENET_SIZE)
        defaults = OPTIMIZER_DEFAULTS[self.optimizer]
        return attrs.evolve(
            self,
            preset=preset,
            model=self.model or ("convnet" if digits else "resnet10ap"),
            lr=self.lr if self.lr is not None else defaults["lr"],
            weight_decay=self.weight_decay if self.weight_decay is not None else defaults["weight_decay"],
            epochs=epochs,
            eval_every=self.eval_every or max(1, epochs // evaluations),
            flip=self.flip if self.flip is not None else not digits,
            cutmix_prob=self.cutmix_prob if self.cutmix_prob is not None else (0.5 if digits else 1.0),
            image_size=image_size,
            ipc=ipc,
        )

    def to_dict(self) -> dict[str, Any]:
        d = attrs.asdict(self)
        d["seeds"] = list(self.seeds)
        d["crop_scale"] = list(self.crop_scale)
        return d


@frozen
class SeedResult:
    """One trained classifier: accuracies in top-1 %, on the real test set."""

    seed: int
    last: float  # after the last epoch
    best: float  # the best of the periodic evaluations (selected on the test set)
    best_epoch: int
    history: tuple[tuple[int, float], ...]  # (epoch, accuracy) at every evaluation
    final_train_loss: float
    seconds: float


@frozen
class DistilledSet:
    """The images evaluated: the first `ipc` files of each class folder, sorted by name."""

    root: Path
    images: Any = field(repr=False)  # float32 [N, C, H, W] in [-1, 1]
    labels: Any = field(repr=False)  # int64 [N], index into class_names
    class_names: tuple[str, ...]
    files: tuple[str, ...] = field(repr=False)  # relative posix paths, in order
    ipc: int
    native_size: int
    channels: int
    manifest: dict[str, Any] | None = field(repr=False)


@frozen
class EvalResult:
    out: Path
    config: EvalConfig  # resolved: every field filled
    seeds: tuple[SeedResult, ...]
    class_names: tuple[str, ...]
    ipc: int
    train_images: int
    test_images: int
    real_source: str
    distilled: DistilledSet = field(repr=False)
    wall_seconds: float
    device: str
    threads: int
    eval_json: Path | None = None

    @property
    def last_mean(self) -> float:
        return _mean([s.last for s in self.seeds])

    @property
    def last_std(self) -> float:
        return _std([s.last for s in self.seeds])

    @property
    def best_mean(self) -> float:
        return _mean([s.best for s in self.seeds])

    @property
    def best_std(self) -> float:
        return _std([s.best for s in self.seeds])


def _mean(values: list[float]) -> float:
    return float(sum(values) / len(values))


def _std(values: list[float]) -> float:
    """Population standard deviation (ddof = 0), numpy's default and the harness's."""
    m = _mean(values)
    return float((sum((v - m) ** 2 for v in values) / len(values)) ** 0.5)


class Reporter:
    """Progress events; the CLI draws them, scripts may ignore them."""

    def started(self, seeds: tuple[int, ...], epochs: int) -> None: ...

    def seed_started(self, seed: int) -> None: ...

    def epoch_done(self, seed: int, epoch: int, accuracy: float | None) -> None: ...

    def seed_done(self, result: SeedResult) -> None: ...


# --- reading the sets ---------------------------------------------------------------------


def _read_manifest(root: Path) -> dict[str, Any] | None:
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise EvalError(f"{path} is unreadable or not JSON ({error}); restore it or remove it") from None
    return manifest if isinstance(manifest, dict) else None


def _manifest_ipc(manifest: dict[str, Any] | None) -> int | None:
    if not manifest:
        return None
    for value in ((manifest.get("settings") or {}).get("ipc"), manifest.get("ipc")):
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _image_files(folder: Path) -> list[Path]:
    from dmgd.data.images import IMG_EXTENSIONS

    return sorted((p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                   and p.name.lower().endswith(IMG_EXTENSIONS)), key=lambda p: p.name)


def _not_a_set(root: Path, why: str) -> EvalError:
    return EvalError(
        f"{root} is not a distilled set: {why}. `dmgd eval` reads the --out directory of "
        "`dmgd run` or `dmgd sample-real`: one folder per class holding its images "
        "(<class>/<index>.png), optionally with manifest.json"
    )


def _channels_of(path: Path) -> tuple[int, int]:
    """(channels, size) of one image: 1 for grayscale modes, else 3; size = min side."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return (1 if image.mode in _GRAY_MODES else 3), min(image.size)
    except Exception as error:  # PIL raises OSError, SyntaxError, ValueError...
        raise EvalError(f"Cannot read image {path}: {type(error).__name__}: {error}. Replace the file or "
                        "move it out of the set.") from None


def read_distilled(out_dir: str | os.PathLike[str], *, ipc: int | None = None,
                   image_size: int | None = None, channels: int | None = None,
                   preset: str = "auto") -> DistilledSet:
    """The distilled set in `out_dir` (see `DistilledSet`). Class folders: the manifest's
    `class_names` when it has them, else every non-hidden sub-directory but `latents`.
    image_size None: 224 for images of >= 64 px (preset imagenet), else their own size."""
    import numpy as np
    import torch

    from dmgd.data.images import DataError, _decode

    root = Path(out_dir).expanduser().absolute()
    if not root.exists():
        raise EvalError(f"{root} does not exist; give the --out directory of `dmgd run` or `dmgd sample-real`")
    if not root.is_dir():
        raise _not_a_set(root, "it is a file, not a directory")
    manifest = _read_manifest(root)
    names = manifest.get("class_names") if manifest else None
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                       and p.name != "latents")
    if not names:
        raise _not_a_set(root, "it has no class folders")
    files: dict[str, list[Path]] = {}
    for name in names:
        folder = root / name
        if not folder.is_dir():
            raise EvalError(f"{root}/manifest.json lists class {name!r} but {folder} is missing: the set is "
                            "incomplete (finish it with `dmgd run ... --resume`)")
        files[name] = _image_files(folder)
    if not any(files.values()):
        raise _not_a_set(root, f"none of its {len(names)} class folders holds an image")
    empty = [n for n in names if not files[n]]
    if empty:
        raise EvalError(f"class {empty[0]!r} of {root} has no images ({folder_list(empty)} empty): every class "
                        "needs at least one image; finish the run (`dmgd run ... --resume`) or remove the class "
                        "from the set and from the real test set")
    counts = {n: len(f) for n, f in files.items()}
    want = ipc or _manifest_ipc(manifest) or min(counts.values())
    short = [n for n in names if counts[n] < want]
    if short:
        source = "--ipc" if ipc else "the manifest's ipc"
        raise EvalError(f"class {short[0]!r} of {root} has {counts[short[0]]} images, fewer than the IPC "
                        f"of {want} ({source}); finish the run (`dmgd run ... --resume`) or pass a smaller --ipc")
    chosen = [(c, p) for c, n in enumerate(names) for p in files[n][:want]]
    first_channels, first_size = _channels_of(chosen[0][1])
    channels = channels or first_channels
    if preset == "auto":
        preset = "imagenet" if first_size >= 64 else "digits"
    size = image_size or (IMAGENET_SIZE if preset == "imagenet" else first_size)
    arrays = []
    for _, path in chosen:
        try:
            arr = _decode(path.read_bytes(), path, size, channels)
        except DataError as error:
            raise EvalError(str(error)) from None
        except OSError as error:
            raise EvalError(f"Cannot read {path}: {error.strerror or error}") from None
        arrays.append(arr)
    stacked = np.stack(arrays)
    images = torch.from_numpy(stacked).permute(0, 3, 1, 2).to(torch.float32).div_(127.5).sub_(1.0).contiguous()
    return DistilledSet(
        root=root, images=images, labels=torch.tensor([c for c, _ in chosen], dtype=torch.long),
        class_names=tuple(names), files=tuple(p.relative_to(root).as_posix() for _, p in chosen), ipc=want,
        native_size=first_size, channels=channels, manifest=manifest,
    )


def folder_list(names: list[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:8])
    return shown + (f" and {len(names) - 8} more" if len(names) > 8 else "")


EMBEDDED_TEST = "embedded digits test split (scikit-learn load_digits, fixed stratified 80/20 split)"


def read_real(real_dir: str | os.PathLike[str] | None, *, image_size: int, channels: int) -> tuple[RealImages, str]:
    """The real held-out set: an ImageFolder (centre-cropped to image_size), or (None) the
    embedded digits' TEST split. Returns (images, a description of the source)."""
    from dmgd.data.images import DataError, RealImages, load_image_folder

    if real_dir is None:
        from dmgd.data.digits import IMAGE_SHAPE, load_split

        c, h, _ = IMAGE_SHAPE
        if (image_size, channels) != (h, c):
            raise EvalError(
                f"the distilled set is {image_size}x{image_size} with {channels} channel(s), but the default "
                f"real test set, the embedded digits, is {h}x{h} grayscale: pass --real with the real "
                "held-out images of the set's classes (an ImageFolder, e.g. the validation split)"
            )
        split = load_split()
        images, labels = split.tensors("test")
        real = RealImages(images=images, labels=labels, class_names=tuple(split.class_names),
                          paths=tuple(f"{split.class_names[int(y)]}/{int(i):04d}.png"
                                      for i, y in zip(split.test_indices, labels.tolist())),
                          fingerprint="digits-test", root=None)
        return real, EMBEDDED_TEST
    try:
        real = load_image_folder(real_dir, image_size=image_size, channels=channels)
    except DataError as error:
        raise EvalError(f"the real test set: {error}") from None
    return real, str(Path(real_dir).expanduser())


def check_classes(distilled: tuple[str, ...], real: tuple[str, ...], out: Path, real_source: str) -> None:
    """The distilled set's classes must be the real set's, by name (labels follow the names)."""
    if set(distilled) == set(real):
        return
    missing = [n for n in real if n not in set(distilled)]
    extra = [n for n in distilled if n not in set(real)]
    parts = []
    if extra:
        parts.append(f"{folder_list(extra)} in the distilled set only")
    if missing:
        parts.append(f"{folder_list(missing)} in the real set only")
    raise EvalError(
        f"the classes of {out} ({len(distilled)}) differ from those of the real test set {real_source} "
        f"({len(real)}): {'; '.join(parts)}. Both must hold the same class folders (same names); point "
        "--real at the held-out images of the classes that were distilled"
    )


# --- training ---------------------------------------------------------------------------------


def derived_seed(purpose: str, seed: int) -> int:
    """A 63-bit seed for one purpose ("order", "augment") of one evaluation seed."""
    digest = hashlib.sha256(f"dmgd-eval:{purpose}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def pick_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise EvalError(f"--device {device} asked for, but no CUDA device is available here; use --device cpu")
    if not (str(device) == "cpu" or str(device).startswith("cuda")):
        raise EvalError(f"--device must be auto, cpu, cuda or cuda:N, not {device!r}")
    return str(device)


class _Deterministic:
    """Deterministic kernels for the duration of a with-block; every flag restored after."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __enter__(self) -> None:
        import torch

        self.saved = (torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled(),
                      torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
        if self.device.startswith("cuda"):
            # cuBLAS needs a fixed workspace for reproducible matmuls (read when cuBLAS starts).
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False

    def __exit__(self, *exc: Any) -> None:
        import torch

        enabled, warn_only, cudnn_det, cudnn_bench = self.saved
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench


def _augment(x: torch.Tensor, config: EvalConfig, generator: torch.Generator) -> torch.Tensor:
    """[-1, 1] images -> augmented, normalised images (the harness's order)."""
    from dmgd.evaluation import augment as A

    x = (x + 1.0) * 0.5  # ToTensor's [0, 1]
    if config.crop:
        x = A.random_resized_crop(x, config.image_size, generator, scale=config.crop_scale)
    if config.flip:
        x = A.horizontal_flip(x, generator)
    if config.jitter:
        x = A.color_jitter(x, generator, config.jitter, config.jitter, config.jitter)
    if config.lighting:
        x = A.lighting(x, generator, config.lighting)
    return A.normalize(x, *A.normalization_for(x.shape[1]))


def _prepare_test(x: torch.Tensor) -> torch.Tensor:
    from dmgd.evaluation import augment as A

    return A.normalize((x + 1.0) * 0.5, *A.normalization_for(x.shape[1]))


def _accuracy(model: Any, images: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch):
            logits = model(images[start:start + batch])
            correct += int((logits.argmax(1) == labels[start:start + batch]).sum())
    return 100.0 * correct / images.shape[0]


def _scheduler(optimizer: Any, config: EvalConfig) -> Any:
    import torch

    epochs = int(config.epochs)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2 * epochs // 3, 5 * epochs // 6], gamma=0.2)


def train_one(seed: int, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
              test_y: torch.Tensor, num_classes: int, config: EvalConfig, device: str,
              reporter: Reporter | None = None) -> SeedResult:
    """Train one classifier (config resolved) and test it; tensors already on `device`,
    the test images already normalised."""
    import torch
    import torch.nn.functional as F

    from dmgd.evaluation import augment as A
    from dmgd.evaluation.models import build_model

    reporter = reporter or Reporter()
    tic = time.perf_counter()
    model = build_model(config.model, num_classes, train_x.shape[1], config.image_size, seed=seed).to(device)
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-8,
                                      weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config)
    order = torch.Generator().manual_seed(derived_seed("order", seed))
    augmentation = torch.Generator().manual_seed(derived_seed("augment", seed))
    n, epochs = train_x.shape[0], int(config.epochs)
    history: list[tuple[int, float]] = []
    loss_value = float("nan")
    for epoch in range(1, epochs + 1):
        model.train()
        permutation = torch.randperm(n, generator=order).to(device)
        total, count = 0.0, 0
        for start in range(0, n, config.batch_size):
            index = permutation[start:start + config.batch_size]
            x = _augment(train_x[index], config, augmentation)
            y = train_y[index]
            if config.cutmix:
                x, y_a, y_b, ratio = A.cutmix(x, y, augmentation, config.cutmix_beta, config.cutmix_prob)
                logits = model(x)
                loss = ratio * F.cross_entropy(logits, y_a)
                if ratio < 1.0:
                    loss = loss + (1.0 - ratio) * F.cross_entropy(logits, y_b)
            else:
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * index.shape[0]
            count += index.shape[0]
        scheduler.step()
        loss_value = total / count
        accuracy = None
        if epoch % config.eval_every == 0 or epoch == epochs:
            accuracy = _accuracy(model, test_x, test_y, config.test_batch_size)
            history.append((epoch, accuracy))
        reporter.epoch_done(seed, epoch, accuracy)
    best_epoch, best = max(history, key=lambda h: (h[1], -h[0]))  # the earliest of equal bests
    return SeedResult(seed=seed, last=history[-1][1], best=best, best_epoch=best_epoch, history=tuple(history),
                      final_train_loss=loss_value, seconds=time.perf_counter() - tic)


def evaluate(out_dir: str | os.PathLike[str], real_dir: str | os.PathLike[str] | None = None,
             config: EvalConfig | None = None, *, reporter: Reporter | None = None,
             on_seed: Callable[[SeedResult], None] | None = None, write: bool = True,
             eval_json: str | os.PathLike[str] | None = None) -> EvalResult:
    """Evaluate the distilled set in `out_dir` on the real test set `real_dir` (None: the
    embedded digits' test split). Writes `out_dir/eval.json` (or `eval_json`) unless
    write=False. on_seed: called with each seed's result as it finishes. Raises EvalError
    (a DmgdError) for unusable input."""
    import torch

    config = config or EvalConfig()
    reporter = reporter or Reporter()
    started = time.perf_counter()
    device = pick_device(config.device)
    distilled = read_distilled(out_dir, ipc=config.ipc, image_size=config.image_size, preset=config.preset)
    resolved = config.resolve(ipc=distilled.ipc, native_size=distilled.native_size)
    if resolved.image_size != distilled.images.shape[-1]:  # image_size given but preset set apart
        distilled = read_distilled(out_dir, ipc=distilled.ipc, image_size=resolved.image_size,
                                   channels=distilled.channels, preset=resolved.preset)
    real, real_source = read_real(real_dir, image_size=int(resolved.image_size), channels=distilled.channels)
    check_classes(distilled.class_names, real.class_names, distilled.root, real_source)
    # labels follow the class NAMES: the distilled set's label c is the real set's index of its name
    to_real = torch.tensor([real.class_names.index(n) for n in distilled.class_names], dtype=torch.long)
    train_y = to_real[distilled.labels]

    results: list[SeedResult] = []
    threads = torch.get_num_threads()
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices), _Deterministic(device):
        train_x = distilled.images.to(device)
        train_y = train_y.to(device)
        test_x = _prepare_test(real.images).to(device)
        test_y = real.labels.to(device)
        reporter.started(resolved.seeds, int(resolved.epochs))
        for seed in resolved.seeds:
            reporter.seed_started(seed)
            result = train_one(seed, train_x, train_y, test_x, test_y, real.num_classes, resolved, device, reporter)
            results.append(result)
            reporter.seed_done(result)
            if on_seed is not None:
                on_seed(result)
    result = EvalResult(
        out=distilled.root, config=resolved, seeds=tuple(results), class_names=real.class_names,
        ipc=distilled.ipc, train_images=int(distilled.labels.shape[0]), test_images=len(real),
        real_source=real_source, distilled=distilled, wall_seconds=time.perf_counter() - started,
        device=device, threads=threads,
    )
    if write:
        from dmgd.evaluation.report import write_eval_json

        path = write_eval_json(result, eval_json)
        result = attrs.evolve(result, eval_json=path)
    return result
