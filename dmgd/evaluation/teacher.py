"""Teachers of the soft-label protocol: trained on a real TRAIN split (`train_teacher`),
saved as safetensors with what they are in the metadata, loaded from a dmgd file, from
any safetensors state dict or from a `.pth` (read with `weights_only=True`), e.g.
torchvision's ImageNet ResNet-18 (`resnet18bn`: torchvision's names and shapes).

`--teacher digits` (or `corners`) is the embedded data set's teacher: trained once per
machine on its whole train split (never its test split) and cached under the dmgd cache
directory (`$DMGD_CACHE_DIR/teachers`, else `~/.cache/dmgd/teachers`), written atomically.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import attrs
import torch
from attrs import frozen
from torch import nn

from dmgd.data.atomic import atomic_write_bytes
from dmgd.data.imagenet import NUM_CLASSES, imagenet_classes, is_wnid
from dmgd.evaluation.config import EvalConfig, EvalError
from dmgd.evaluation.models import ALL_MODELS, DISPLAY_NAMES, build_model
from dmgd.evaluation.results import EvalReporter

FORMAT = "dmgd-teacher-v1"
EMBEDDED_TEACHERS = ("digits", "corners")
TEACHER_ARCHS = ("convnet", "resnet18bn")
DEFAULT_ARCH = "convnet"  # the embedded teachers': as cheap a forward pass as the digits student's
DEFAULT_EPOCHS = 30
CACHE_VERSION = "v1"  # bump when the embedded teachers' recipe changes: a new file is trained


@frozen
class Teacher:
    """A loaded teacher: `model` (eval mode, CPU), what it is, and where it came from."""

    model: Any
    arch: str
    num_classes: int
    in_channels: int
    image_size: int | None  # None: any (torchvision's ResNet-18)
    class_names: tuple[str, ...] | None  # None: unnamed outputs, taken in the real set's order
    path: Path
    sha256: str
    metadata: dict[str, Any]


def teacher_cache_dir() -> Path:
    env = os.environ.get("DMGD_CACHE_DIR")
    return (Path(env).expanduser() if env else Path.home() / ".cache" / "dmgd") / "teachers"


def embedded_teacher_path(name: str, arch: str = DEFAULT_ARCH) -> Path:
    return teacher_cache_dir() / f"{name}-{arch}-{CACHE_VERSION}.safetensors"


def ensure_embedded_teacher(name: str, *, reporter: EvalReporter | None = None, device: str = "cpu") -> Path:
    """The cached teacher of an embedded data set, trained first if this machine has none."""
    path = embedded_teacher_path(name)
    if not path.is_file():
        train_teacher(DEFAULT_ARCH, name, path, epochs=DEFAULT_EPOCHS, reporter=reporter, device=device)
    return path


# --- training ---------------------------------------------------------------------------------


def _train_and_test(data: str, test: str | None, image_size: int | None = None,
                    channels: int = 3) -> tuple[Any, Any, str, str]:
    """(train images, test images, their sources): an embedded set's train and test splits,
    or an ImageFolder of training images and `test`, an ImageFolder of held-out ones."""
    from dmgd.data import embedded
    from dmgd.data.images import DataError, embedded_real_images, load_image_folder

    if embedded.is_embedded_name(data):
        train, held_out = embedded_real_images(data, "train"), embedded_real_images(data, "test")
        return train, held_out, str(train.source), str(held_out.source)
    if test is None:
        raise EvalError(f"--test is needed to train a teacher on {data}: give the held-out images of its classes "
                        "(an ImageFolder) so that its test accuracy can be measured")
    try:
        train = load_image_folder(data, image_size=image_size, channels=channels)
        size = int(train.images.shape[-1])
        held_out = load_image_folder(test, image_size=size, channels=int(train.images.shape[1]))
    except DataError as error:
        raise EvalError(f"the teacher's data: {error}") from None
    if held_out.class_names != train.class_names:
        raise EvalError(f"the classes of {test} differ from those of {data}: a teacher is tested on its own classes")
    return train, held_out, str(Path(data).expanduser()), str(Path(test).expanduser())


def train_teacher(arch: str, data: str, out: str | os.PathLike[str], *, test: str | None = None,
                  epochs: int = DEFAULT_EPOCHS, seed: int = 0, device: str = "cpu",
                  image_size: int | None = None, channels: int = 3, reporter: EvalReporter | None = None) -> Teacher:
    """Train a teacher of architecture `arch` on the TRAIN split of `data` ("digits",
    "corners" or an ImageFolder) with the hard-label harness (its preset for the images'
    size), test it once after the last epoch on the held-out split, and write it to `out`
    (safetensors, atomically; metadata: arch, classes, data, test accuracy, settings).
    image_size / channels: how an ImageFolder's images are read (ADM centre crop)."""
    from dmgd.evaluation.training import Deterministic, fit_one, prepare_test

    if arch not in TEACHER_ARCHS:
        raise EvalError(f"unknown teacher architecture {arch!r}: choose one of {', '.join(TEACHER_ARCHS)}")
    if Path(out).suffix != ".safetensors":
        raise EvalError(f"a teacher is written as safetensors: name the file {Path(out).stem}.safetensors, not {out}")
    if channels not in (1, 3):
        raise EvalError(f"channels must be 1 or 3, not {channels}")
    train, held_out, train_source, test_source = _train_and_test(data, test, image_size, channels)
    size = int(train.images.shape[-1])
    config = EvalConfig(model=arch, epochs=epochs, eval_every=epochs, seeds=(seed,), device=device)
    config = config.resolve(ipc=min(train.class_counts()), native_size=size)
    config = attrs.evolve(config, image_size=size)  # a teacher sees the images at their own size
    reporter = reporter or EvalReporter()
    with torch.random.fork_rng(devices=[]), Deterministic(device):
        reporter.started((seed,), epochs)
        reporter.seed_started(seed)
        model, result = fit_one(seed, train.images.to(device), train.labels.to(device),
                                prepare_test(held_out.images).to(device), held_out.labels.to(device),
                                train.num_classes, config, device, reporter)
        reporter.seed_done(result)
    metadata = {
        "format": FORMAT, "arch": arch, "num_classes": str(train.num_classes),
        "in_channels": str(int(train.images.shape[1])), "image_size": str(size),
        "class_names": json.dumps(list(train.class_names)), "train_data": train_source,
        "train_images": str(len(train)), "test_data": test_source, "test_images": str(len(held_out)),
        "test_accuracy": repr(result.last), "seed": str(seed), "config": json.dumps(config.to_dict()),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    return save_teacher(model, Path(out), metadata)


def save_teacher(model: nn.Module, out: Path, metadata: dict[str, str]) -> Teacher:
    from safetensors.torch import save

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    try:
        atomic_write_bytes(out, save(state, metadata=metadata))
    except OSError as error:
        raise EvalError(f"cannot write the teacher to {out}: {error.strerror or error}") from None
    return load_teacher(out)


# --- loading ----------------------------------------------------------------------------------


def load_teacher(spec: str | os.PathLike[str], *, reporter: EvalReporter | None = None,
                 device: str = "cpu") -> Teacher:
    """A teacher from `spec`: "digits" / "corners" (the cached embedded teacher, trained if
    missing), a `.safetensors` file or a `.pth` / `.pt` state dict."""
    if str(spec) in EMBEDDED_TEACHERS and not Path(spec).exists():
        spec = ensure_embedded_teacher(str(spec), reporter=reporter, device=device)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise EvalError(f"teacher {path} does not exist: give a .safetensors or .pth state dict, "
                        f"{' or '.join(EMBEDDED_TEACHERS)}, or train one with `dmgd teacher train`")
    data = path.read_bytes()
    state, metadata = _read_state(path, data)
    arch = metadata.get("arch") or _infer_arch(state, path)
    model = _build(arch, state, metadata, path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()
        raise EvalError(f"teacher {path} does not fit a {DISPLAY_NAMES.get(arch, arch)}: "
                        f"{' '.join(first[:2])[:300]}") from None
    names = metadata.get("class_names")
    return Teacher(model=model.eval(), arch=arch, num_classes=_num_classes(state, arch),
                   in_channels=_in_channels(state, arch), image_size=_image_size(metadata),
                   class_names=tuple(json.loads(names)) if names else None, path=path.absolute(),
                   sha256=hashlib.sha256(data).hexdigest(), metadata=metadata)


def _read_state(path: Path, data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            state = load(data)
            header_len = int.from_bytes(data[:8], "little")
            metadata = json.loads(data[8:8 + header_len]).get("__metadata__") or {}
        except (SafetensorError, ValueError) as error:
            raise EvalError(f"teacher {path} is not a readable safetensors file ({error})") from None
        return state, dict(metadata)
    if path.suffix not in (".pth", ".pt"):
        raise EvalError(f"teacher {path}: expected a .safetensors, .pth or .pt file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # pickle and zip errors of every kind
        raise EvalError(f"teacher {path} cannot be read with torch.load(weights_only=True): "
                        f"{type(error).__name__}: {str(error).splitlines()[0][:200]}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not (isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values())):
        raise EvalError(f"teacher {path} holds no state dict (a mapping of names to tensors)")
    return state, {}


def _infer_arch(state: dict[str, torch.Tensor], path: Path) -> str:
    """A file without dmgd's metadata: only torchvision's ResNet-18 is recognised."""
    probe = build_model("resnet18bn", 2, 3, 224)
    if set(state) == set(probe.state_dict()):
        return "resnet18bn"
    raise EvalError(f"teacher {path} has no dmgd metadata and its parameter names are not torchvision's "
                    "ResNet-18's: train one with `dmgd teacher train`, or give torchvision's resnet18 weights")


def _num_classes(state: dict[str, torch.Tensor], arch: str) -> int:
    head = "fc.weight" if arch.startswith("resnet") else "classifier.weight"
    return int(state[head].shape[0])


def _in_channels(state: dict[str, torch.Tensor], arch: str) -> int:
    first = {"resnet18bn": "conv1.weight", "convnet": "features.0.weight"}.get(arch, "stem.0.weight")
    return int(state[first].shape[1])


def _image_size(metadata: dict[str, str]) -> int | None:
    return int(metadata["image_size"]) if metadata.get("image_size") else None


def _build(arch: str, state: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> nn.Module:
    if arch not in ALL_MODELS:
        raise EvalError(f"teacher {path} names an unknown architecture {arch!r}")
    if arch == "resnet18bn":
        from dmgd.evaluation.resnet import TorchvisionResNet18

        stem = state.get("conv1.weight")
        imagenet = stem is None or int(stem.shape[-1]) == 7
        return TorchvisionResNet18(_num_classes(state, arch), _in_channels(state, arch), imagenet=imagenet)
    size = _image_size(metadata)
    if size is None:
        raise EvalError(f"teacher {path} is a {arch} without its image size in the metadata: train it with "
                        "`dmgd teacher train`")
    return build_model(arch, _num_classes(state, arch), _in_channels(state, arch), size)


# --- the teacher of one evaluation ------------------------------------------------------------


class AlignedTeacher(nn.Module):
    """A teacher whose outputs are re-indexed to the real set's classes (by name)."""

    def __init__(self, net: nn.Module, index: torch.Tensor) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("index", index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).index_select(1, self.index)


def align(teacher: Teacher, class_names: tuple[str, ...], channels: int, image_size: int) -> AlignedTeacher:
    """The teacher with one output per class of the real set, in its order; checks that it
    takes images of these channels and size."""
    where = f"teacher {teacher.path}"
    if teacher.in_channels != channels:
        raise EvalError(f"{where} takes {teacher.in_channels}-channel images, the set has {channels}")
    if teacher.image_size is not None and teacher.image_size != image_size:
        raise EvalError(f"{where} was trained on {teacher.image_size} px images, the evaluation trains at "
                        f"{image_size} px: pass --image-size {teacher.image_size} or another teacher")
    if teacher.class_names is None:
        if _imagenet_outputs(teacher, class_names):  # e.g. torchvision's ImageNet ResNet-18, RDED's teacher
            table = imagenet_classes()
            return AlignedTeacher(teacher.model, torch.tensor([table.index(n) for n in class_names]))
        if teacher.num_classes != len(class_names):
            raise EvalError(f"{where} has {teacher.num_classes} unnamed outputs, the set {len(class_names)} "
                            "classes: a teacher without class names must have the set's classes, in sorted order "
                            f"(or ImageNet's {NUM_CLASSES}, for classes named by wnid)")
        return AlignedTeacher(teacher.model, torch.arange(len(class_names)))
    missing = [n for n in class_names if n not in teacher.class_names]
    if missing:
        raise EvalError(f"{where} does not know the classes {', '.join(map(repr, missing[:8]))} of the test set")
    return AlignedTeacher(teacher.model, torch.tensor([teacher.class_names.index(n) for n in class_names]))


def _imagenet_outputs(teacher: Teacher, class_names: tuple[str, ...]) -> bool:
    """An unnamed 1000-output teacher scoring classes named by wnid: its outputs are taken as
    ImageNet-1k's, in the sorted wnid order (DiT's and torchvision's)."""
    return teacher.num_classes == NUM_CLASSES and all(is_wnid(n) for n in class_names)


def teacher_record(teacher: Teacher, spec: str, accuracy: float, test_source: str) -> dict[str, Any]:
    """What eval.json records of the teacher."""
    meta = teacher.metadata
    return {
        "spec": spec, "arch": teacher.arch, "display": DISPLAY_NAMES.get(teacher.arch, teacher.arch),
        "path": str(teacher.path), "sha256": teacher.sha256, "num_classes": teacher.num_classes,
        "test_accuracy": accuracy, "test_accuracy_on": test_source,
        "trained_on": meta.get("train_data"), "own_test_accuracy": float(meta["test_accuracy"])
        if meta.get("test_accuracy") else None, "own_test_data": meta.get("test_data"),
        "format": meta.get("format", "state dict without dmgd metadata"),
    }
