"""Teachers of the soft-label protocol: torchvision's ResNet-18 names and shapes, loading
safetensors and `.pth` (weights_only) files, training one on a real train split, the
embedded teacher's cache."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from conftest import write_image_folder
from dmgd.evaluation.config import EvalError
from dmgd.evaluation.resnet import TorchvisionResNet18
from dmgd.evaluation.teacher import (align, embedded_teacher_path, ensure_embedded_teacher, load_teacher,
                                     train_teacher)

# torchvision.models.resnet18's state dict, written out from its definition (torchvision is
# not installed): conv1 (7x7, stride 2) / bn1 / maxpool, layer1..layer4 of two BasicBlocks
# (conv1, bn1, conv2, bn2; the first block of layers 2-4 has downsample = conv1x1 + bn), fc.
BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str, channels: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.{name}", () if name == "num_batches_tracked" else (channels,)) for name in BN]


def _torchvision_resnet18_table(num_classes: int = 1000) -> list[tuple[str, tuple[int, ...]]]:
    table = [("conv1.weight", (64, 3, 7, 7))] + _bn("bn1", 64)
    in_planes = 64
    for layer, planes in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            p = f"layer{layer}.{block}"
            table.append((f"{p}.conv1.weight", (planes, in_planes if block == 0 else planes, 3, 3)))
            table += _bn(f"{p}.bn1", planes)
            table.append((f"{p}.conv2.weight", (planes, planes, 3, 3)))
            table += _bn(f"{p}.bn2", planes)
            if block == 0 and layer > 1:
                table.append((f"{p}.downsample.0.weight", (planes, in_planes, 1, 1)))
                table += _bn(f"{p}.downsample.1", planes)
        in_planes = planes
    return table + [("fc.weight", (num_classes, 512)), ("fc.bias", (num_classes,))]


def test_the_table_is_torchvisions():
    table = dict(_torchvision_resnet18_table())
    assert len(table) == 122 and sum(n.endswith("num_batches_tracked") for n in table) == 20
    assert table["layer2.0.downsample.0.weight"] == (128, 64, 1, 1)
    assert table["layer4.1.bn2.running_var"] == (512,) and table["fc.weight"] == (1000, 512)
    assert "layer1.0.downsample.0.weight" not in table


def test_dmgd_resnet18_has_torchvisions_names_and_shapes_key_for_key():
    model = TorchvisionResNet18(1000, 3, imagenet=True)
    mine = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    assert mine == _torchvision_resnet18_table()


def _torchvision_like_state(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in _torchvision_resnet18_table():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(7, dtype=torch.int64)
        elif name.endswith("running_var"):
            state[name] = torch.rand(shape, generator=g) + 0.5
        else:
            state[name] = torch.randn(shape, generator=g) * 0.05
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_torchvision_weights_load_without_torchvision(tmp_path, suffix):
    state = _torchvision_like_state()
    path = tmp_path / f"resnet18-f37072fd{suffix}"
    if suffix == ".pth":
        torch.save(state, path)  # torchvision's checkpoints are plain state dicts
    else:
        from safetensors.torch import save_file

        save_file(state, str(path))
    teacher = load_teacher(path)
    assert teacher.arch == "resnet18bn" and teacher.num_classes == 1000 and teacher.in_channels == 3
    assert teacher.class_names is None and teacher.image_size is None
    assert teacher.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    loaded = teacher.model.state_dict()
    assert list(loaded) == [n for n, _ in _torchvision_resnet18_table()]
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert not teacher.model.training
    with torch.no_grad():
        assert teacher.model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)


def test_pth_is_read_with_weights_only(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"fc.weight": os.system}, path)  # a global that a free unpickler would import
    with pytest.raises(EvalError, match="weights_only=True"):
        load_teacher(path)


def test_unusable_teacher_files_give_clear_errors(tmp_path):
    with pytest.raises(EvalError, match="does not exist"):
        load_teacher(tmp_path / "missing.pth")
    other = tmp_path / "other.pth"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(EvalError, match="not torchvision's"):
        load_teacher(other)
    wrong = _torchvision_like_state()
    wrong["fc.weight"] = torch.zeros(1000, 256)
    bad = tmp_path / "bad.pth"
    torch.save(wrong, bad)
    with pytest.raises(EvalError, match="does not fit"):
        load_teacher(bad)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(EvalError, match="expected a .safetensors"):
        load_teacher(text)


def _split_folders(root: Path) -> tuple[Path, Path]:
    train = write_image_folder(root / "train", classes=3, per_class=6, size=8, mode="L", seed=0)
    test = write_image_folder(root / "test", classes=3, per_class=4, size=8, mode="L", seed=1)
    return train, test


def test_train_a_teacher_on_a_folder_records_what_it_is(tmp_path):
    train, test = _split_folders(tmp_path)
    out = tmp_path / "teacher.safetensors"
    teacher = train_teacher("convnet", str(train), out, test=str(test), epochs=2, channels=1)
    meta = teacher.metadata
    assert out.is_file() and not list(tmp_path.glob(".*tmp*"))
    assert meta["format"] == "dmgd-teacher-v1" and meta["arch"] == "convnet"
    assert meta["train_data"] == str(train) and meta["test_data"] == str(test)
    assert meta["train_images"] == "18" and meta["test_images"] == "12"
    assert 0.0 <= float(meta["test_accuracy"]) <= 100.0
    assert json.loads(meta["class_names"]) == ["class_0", "class_1", "class_2"]
    assert json.loads(meta["config"])["epochs"] == 2
    again = load_teacher(out)
    assert again.sha256 == teacher.sha256 and again.class_names == ("class_0", "class_1", "class_2")
    # outputs re-indexed to another class order, by name
    aligned = align(again, ("class_2", "class_0", "class_1"), channels=1, image_size=8)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(aligned(x), again.model(x)[:, [2, 0, 1]])
    with pytest.raises(EvalError, match="does not know the classes 'class_9'"):
        align(again, ("class_0", "class_9"), channels=1, image_size=8)
    with pytest.raises(EvalError, match="trained on 8 px"):
        align(again, again.class_names, channels=1, image_size=16)


def test_an_unnamed_imagenet_teacher_scores_wnid_classes_by_their_imagenet_index(tmp_path):
    """RDED's teacher is torchvision's ResNet-18: 1000 unnamed outputs in ImageNet's order."""
    from dmgd.evaluation.teacher import Teacher

    net = torch.nn.Linear(3, 1000)
    teacher = Teacher(model=net, arch="resnet18bn", num_classes=1000, in_channels=3, image_size=None,
                      class_names=None, path=tmp_path / "resnet18.pth", sha256="0" * 64, metadata={})
    aligned = align(teacher, ("n02096294", "n01440764", "n02099601"), channels=3, image_size=224)
    x = torch.randn(2, 3)
    with torch.no_grad():
        assert torch.equal(aligned(x), net(x)[:, [193, 0, 207]])
    with pytest.raises(EvalError, match="1000 unnamed outputs, the set 2 classes"):
        align(teacher, ("n02096294", "class_1"), channels=3, image_size=224)


def test_bad_teacher_training_requests_give_clear_errors(tmp_path):
    train, _ = _split_folders(tmp_path)
    with pytest.raises(EvalError, match="--test is needed"):
        train_teacher("convnet", str(train), tmp_path / "t.safetensors", channels=1)
    with pytest.raises(EvalError, match="written as safetensors"):
        train_teacher("convnet", str(train), tmp_path / "t.pth", channels=1)
    with pytest.raises(EvalError, match="unknown teacher architecture"):
        train_teacher("vit", str(train), tmp_path / "t.safetensors", channels=1)


@pytest.mark.slow
def test_the_digits_teacher_is_trained_on_the_whole_train_split_once(tmp_path, monkeypatch):
    monkeypatch.setenv("DMGD_CACHE_DIR", str(tmp_path))
    import dmgd.evaluation.teacher as T

    monkeypatch.setattr(T, "DEFAULT_EPOCHS", 1)  # the recipe's length is not what is tested here
    path = ensure_embedded_teacher("digits")
    assert path == embedded_teacher_path("digits") and path.parent == tmp_path / "teachers"
    meta = load_teacher("digits").metadata
    assert meta["train_images"] == "1437" and meta["test_images"] == "360"
    assert "train split" in meta["train_data"] and "test split" in meta["test_data"]
    stamp = path.stat().st_mtime_ns
    assert ensure_embedded_teacher("digits") == path and path.stat().st_mtime_ns == stamp  # not retrained
