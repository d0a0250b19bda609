"""`dmgd eval --protocol soft`: RDED's on-the-fly soft labels (the augmentation, the loss,
the schedule, the presets, eval.json) next to the unchanged hard-label protocol."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from dmgd.cli import app
from dmgd.data.digits import write_image_folder as write_digits
from dmgd.data.sample_real import sample_real
from dmgd.evaluation.config import EvalConfig, EvalError
from dmgd.evaluation.models import build_model
from dmgd.evaluation.protocol import evaluate
from dmgd.evaluation.soft import SoftLoss, shuffle_patches, soft_augment, soft_kl
from dmgd.evaluation.teacher import train_teacher
from dmgd.evaluation.training import make_lr_schedule, make_optimizer


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_shuffle_patches_swaps_halves_per_image():
    x = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8).repeat(64, 1, 1, 1)
    out = shuffle_patches(x, 2, _gen())
    seen = set()
    for before, after in zip(x, out):
        cols = before if torch.equal(after[..., :4, :4], before[..., :4, :4]) else None
        variants = {(h, v): before.roll(4 * h, -1).roll(4 * v, -2) for h in (0, 1) for v in (0, 1)}
        match = [k for k, y in variants.items() if torch.equal(after, y)]
        assert len(match) == 1, cols  # each output is one of the four arrangements of the quadrants
        seen.add(match[0])
    assert seen == {(0, 0), (0, 1), (1, 0), (1, 1)}  # all four occur over 128 images
    assert torch.equal(shuffle_patches(x, 2, _gen(3)), shuffle_patches(x, 2, _gen(3)))


def test_shuffle_patches_factor_one_draws_nothing():
    g = _gen()
    x = torch.randn(3, 1, 8, 8)
    assert shuffle_patches(x, 1, g) is x
    assert torch.equal(torch.rand(1, generator=g), torch.rand(1, generator=_gen()))


def test_shuffle_patches_keeps_every_pixel_with_a_remainder():
    x = torch.randn(5, 3, 9, 7)
    out = shuffle_patches(x, 2, _gen(1))
    assert out.shape == x.shape
    assert torch.equal(out.flatten(1).sort(1).values, x.flatten(1).sort(1).values)


def test_the_loss_is_rdeds_kl_without_t_squared():
    s, t = torch.randn(6, 10, generator=_gen(1)), torch.randn(6, 10, generator=_gen(2)) * 5
    T = 20.0
    p = F.softmax(t / T, 1)
    expected = (p * (p.log() - F.log_softmax(s / T, 1))).sum() / 6
    assert torch.allclose(soft_kl(s, t, T), expected, atol=1e-7)
    assert float(soft_kl(t, t, T)) == pytest.approx(0.0, abs=1e-7)


def test_rdeds_half_cosine_ends_at_half_the_lr():
    config = EvalConfig(protocol="soft").resolve(ipc=10, native_size=8)
    model = torch.nn.Linear(2, 2)
    optimizer = make_optimizer(model, config)
    schedule = make_lr_schedule(optimizer, config)
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(config.epochs):
        optimizer.step()
        schedule.step()
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(5e-4)
    mid = config.epochs // 2
    assert lrs[mid] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_hard_defaults_are_unchanged_and_soft_presets_are_rdeds():
    hard = EvalConfig().resolve(ipc=10, native_size=8)
    assert (hard.schedule, hard.batch_size, hard.jitter, hard.lighting, hard.cutmix_prob) == \
        ("multistep", 64, 0.4, 0.1, 0.5)
    assert "teacher" not in hard.to_dict() and hard.to_dict()["protocol"] == "hard"
    digits = EvalConfig(protocol="soft").resolve(ipc=10, native_size=8)
    assert (digits.model, digits.epochs, digits.image_size, digits.schedule, digits.cutmix_prob) == \
        ("convnet", hard.epochs, 8, "half-cosine", 1.0)
    assert (digits.jitter, digits.lighting, digits.shuffle_patches, digits.temperature) == (0.0, 0.0, 1, 20.0)
    imagenet = EvalConfig(protocol="soft").resolve(ipc=10, native_size=256)
    assert (imagenet.model, imagenet.epochs, imagenet.batch_size, imagenet.image_size) == ("resnet18bn", 300, 100, 224)
    assert (imagenet.shuffle_patches, imagenet.flip, imagenet.optimizer, imagenet.lr, imagenet.weight_decay) == \
        (2, True, "adamw", 1e-3, 0.01)
    assert EvalConfig(protocol="soft", jitter=0.4).resolve(ipc=1, native_size=8).jitter == 0.4
    with pytest.raises(EvalError, match="--protocol soft"):
        EvalConfig(teacher="digits")
    with pytest.raises(EvalError, match="protocol must be one of"):
        EvalConfig(protocol="fuzzy")


class Recorder(torch.nn.Module):
    """A real model that keeps the inputs it was given."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.inputs = net, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.net(x)


def test_the_teacher_labels_exactly_the_mixed_batch_the_student_sees():
    config = EvalConfig(protocol="soft", shuffle_patches=2).resolve(ipc=4, native_size=8)
    teacher = Recorder(build_model("convnet", 10, 1, 8, seed=1))
    student = Recorder(build_model("convnet", 10, 1, 8, seed=2))
    x = torch.rand(16, 1, 8, 8, generator=_gen()) * 2 - 1
    loss = SoftLoss(teacher)(student, x, torch.zeros(16, dtype=torch.long), config, _gen(5))
    assert torch.equal(teacher.inputs[0], student.inputs[0])
    assert torch.equal(student.inputs[0], soft_augment(x, config, _gen(5)))  # shuffled, cropped, mixed
    assert not torch.equal(student.inputs[0], x)
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())  # frozen, no graph through it
    assert any(p.grad is not None for p in student.parameters())


def _digits_folder(root: Path, split: str, first: int, count: int) -> Path:
    """`count` real digits per class of an embedded split (from the `first`-th), as PNGs."""
    from PIL import Image

    from dmgd.data.images import embedded_real_images

    real = embedded_real_images("digits", split)
    for c, name in enumerate(real.class_names):
        (root / name).mkdir(parents=True)
        for i in real.class_indices(c)[first:first + count].tolist():
            pixels = ((real.images[i, 0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
            Image.fromarray(pixels, mode="L").save(root / name / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory) -> Path:
    """A teacher of the digits' classes, trained on 3 real train digits per class and tested
    on 3 others of the train split (seconds, not minutes)."""
    root = tmp_path_factory.mktemp("teacher")
    train, test = _digits_folder(root / "train", "train", 0, 3), _digits_folder(root / "test", "train", 3, 3)
    return train_teacher("convnet", str(train), root / "digits.safetensors", test=str(test), epochs=2,
                         channels=1).path


def test_soft_evaluation_records_protocol_and_teacher(tmp_path, digits_teacher):
    out = sample_real(tmp_path / "real1", 1, 0).out
    config = EvalConfig(protocol="soft", teacher=str(digits_teacher), seeds=1, epochs=2, eval_every=1)
    first = evaluate(out, None, config)
    report = json.loads(first.eval_json.read_text())
    assert report["protocol"]["name"] == "soft" and "KLDivLoss" in report["protocol"]["description"]
    t = report["teacher"]
    assert t["sha256"] == hashlib.sha256(digits_teacher.read_bytes()).hexdigest() and t["arch"] == "convnet"
    assert 0 <= t["test_accuracy"] <= 100 and "test split" in t["test_accuracy_on"]
    assert t["own_test_accuracy"] is not None and t["trained_on"].endswith("train")
    c = report["config"]
    assert (c["protocol"], c["temperature"], c["schedule"], c["shuffle_patches"], c["cutmix_prob"]) == \
        ("soft", 20.0, "half-cosine", 1, 1.0)
    assert "selected on the test set" in report["best"]["label"]
    second = evaluate(out, None, config, write=False)
    assert [s.history for s in second.seeds] == [s.history for s in first.seeds]  # deterministic


def test_hard_eval_json_names_its_protocol(tmp_path):
    out = sample_real(tmp_path / "real1", 1, 0).out
    report = json.loads(evaluate(out, None, EvalConfig(seeds=1, epochs=1)).eval_json.read_text())
    assert report["protocol"]["name"] == "hard" and "teacher" not in report


def test_cli_soft_errors_are_one_line(tmp_path):
    out = sample_real(tmp_path / "real1", 1, 0).out
    runner = CliRunner()
    for args, needle in (
        (["--protocol", "soft", "--teacher", str(tmp_path / "nope.pth")], "does not exist"),
        (["--teacher", "digits"], "--protocol soft"),
        (["--protocol", "soft", "--real", str(write_digits(tmp_path / "val", "val"))], "needs --teacher"),
    ):
        result = runner.invoke(app, ["eval", str(out), "--epochs", "1", "--seeds", "1", *args])
        assert result.exit_code == 1, result.output
        assert needle in result.output and "Traceback" not in result.output
