"""One seed of the protocol: `train_one` trains a fresh classifier on the distilled set
and tests it on the real set, reproducibly (seeding and determinism: docs/evaluation.md)."""

from __future__ import annotations

import hashlib
import math
import os
import time
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F

from dmgd.evaluation import augment as A
from dmgd.evaluation.config import EvalConfig
from dmgd.evaluation.models import build_model
from dmgd.evaluation.results import DistilledSet, EvalReporter, SeedResult

if TYPE_CHECKING:  # pragma: no cover
    from dmgd.data.images import RealImages


def derived_seed(purpose: str, seed: int) -> int:
    """A 63-bit seed for one purpose ("order", "augment") of one evaluation seed."""
    digest = hashlib.sha256(f"dmgd-eval:{purpose}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class Deterministic:
    """Deterministic kernels for the duration of a with-block; every flag restored after."""

    def __init__(self, device: str) -> None:
        self.device = device

    def __enter__(self) -> None:
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
        enabled, warn_only, cudnn_det, cudnn_bench = self.saved
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.backends.cudnn.deterministic = cudnn_det
        torch.backends.cudnn.benchmark = cudnn_bench


def augment(x: torch.Tensor, config: EvalConfig, generator: torch.Generator) -> torch.Tensor:
    """[-1, 1] images -> augmented, normalised images (the harness's order)."""
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


def prepare_test(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] test images -> normalised images (no augmentation)."""
    return A.normalize((x + 1.0) * 0.5, *A.normalization_for(x.shape[1]))


def accuracy(model: Any, images: torch.Tensor, labels: torch.Tensor, batch: int) -> float:
    """Top-1 accuracy (%) of `model` on the images, `batch` at a time."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, images.shape[0], batch):
            logits = model(images[start:start + batch])
            correct += int((logits.argmax(1) == labels[start:start + batch]).sum())
    return 100.0 * correct / images.shape[0]


def make_optimizer(model: Any, config: EvalConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.999), eps=1e-8,
                             weight_decay=config.weight_decay)


def make_lr_schedule(optimizer: Any, config: EvalConfig) -> Any:
    epochs = int(config.epochs)
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if config.schedule == "half-cosine":  # RDED's: 0.5 (1 + cos(pi e / E / 2)), so it ends at half the lr
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda epoch: 0.5 * (1.0 + math.cos(math.pi * epoch / epochs / 2)) if epoch <= epochs else 0.0)
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2 * epochs // 3, 5 * epochs // 6], gamma=0.2)


def batch_loss(model: Any, x: torch.Tensor, y: torch.Tensor, config: EvalConfig,
               generator: torch.Generator) -> torch.Tensor:
    """Cross-entropy of one augmented batch, CutMix-mixed when the config says so."""
    if not config.cutmix:
        return F.cross_entropy(model(x), y)
    x, y_a, y_b, ratio = A.cutmix(x, y, generator, config.cutmix_beta, config.cutmix_prob)
    logits = model(x)
    loss = ratio * F.cross_entropy(logits, y_a)
    if ratio < 1.0:
        loss = loss + (1.0 - ratio) * F.cross_entropy(logits, y_b)
    return loss


def hard_step_loss(model: Any, x: torch.Tensor, y: torch.Tensor, config: EvalConfig,
                   generator: torch.Generator) -> torch.Tensor:
    """The hard-label protocol's loss of one raw batch: augmented, then `batch_loss`."""
    return batch_loss(model, augment(x, config, generator), y, config, generator)


StepLoss = Callable[[Any, torch.Tensor, torch.Tensor, EvalConfig, torch.Generator], torch.Tensor]


def train_epoch(model: Any, optimizer: Any, train_x: torch.Tensor, train_y: torch.Tensor, config: EvalConfig,
                order: torch.Generator, augmentation: torch.Generator, step_loss: StepLoss = hard_step_loss) -> float:
    """One pass over a fresh permutation of the set; returns the mean training loss.
    step_loss: the loss of one raw batch ([-1, 1] images, labels), augmentation included."""
    model.train()
    n = train_x.shape[0]
    permutation = torch.randperm(n, generator=order).to(train_x.device)
    total, count = 0.0, 0
    for start in range(0, n, config.batch_size):
        index = permutation[start:start + config.batch_size]
        loss = step_loss(model, train_x[index], train_y[index], config, augmentation)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * index.shape[0]
        count += index.shape[0]
    return total / count


def train_one(seed: int, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
              test_y: torch.Tensor, num_classes: int, config: EvalConfig, device: str,
              reporter: EvalReporter | None = None, step_loss: StepLoss = hard_step_loss) -> SeedResult:
    """Train one classifier (config resolved) and test it; tensors already on `device`,
    the test images already normalised. step_loss: see `train_epoch` (the soft-label
    protocol passes `dmgd.evaluation.soft.SoftLoss`)."""
    return fit_one(seed, train_x, train_y, test_x, test_y, num_classes, config, device, reporter, step_loss)[1]


def fit_one(seed: int, train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
            test_y: torch.Tensor, num_classes: int, config: EvalConfig, device: str,
            reporter: EvalReporter | None = None, step_loss: StepLoss = hard_step_loss) -> tuple[Any, SeedResult]:
    """`train_one`, returning the trained model too (a teacher is trained with it)."""
    reporter = reporter or EvalReporter()
    tic = time.perf_counter()
    model = build_model(config.model, num_classes, train_x.shape[1], config.image_size, seed=seed).to(device)
    optimizer = make_optimizer(model, config)
    scheduler = make_lr_schedule(optimizer, config)
    order = torch.Generator().manual_seed(derived_seed("order", seed))
    augmentation = torch.Generator().manual_seed(derived_seed("augment", seed))
    epochs = int(config.epochs)
    history: list[tuple[int, float]] = []
    loss_value = float("nan")
    for epoch in range(1, epochs + 1):
        loss_value = train_epoch(model, optimizer, train_x, train_y, config, order, augmentation, step_loss)
        scheduler.step()
        score = None
        if epoch % config.eval_every == 0 or epoch == epochs:
            score = accuracy(model, test_x, test_y, config.test_batch_size)
            history.append((epoch, score))
        reporter.epoch_done(seed, epoch, score)
    best_epoch, best = max(history, key=lambda h: (h[1], -h[0]))  # the earliest of equal bests
    return model, SeedResult(seed=seed, last=history[-1][1], best=best, best_epoch=best_epoch,
                             history=tuple(history), final_train_loss=loss_value,
                             seconds=time.perf_counter() - tic)


def run_seeds(distilled: DistilledSet, real: RealImages, config: EvalConfig, device: str,
              reporter: EvalReporter, on_seed: Callable[[SeedResult], None] | None = None,
              step_loss: StepLoss = hard_step_loss) -> list[SeedResult]:
    """`train_one` for every seed of the (resolved) config, with deterministic kernels and
    torch's global generator state restored afterwards."""
    if len(real.class_names) != len(distilled.class_names):
        raise ValueError("the real set must hold the distilled set's classes in its order (sets.read_real does)")
    results: list[SeedResult] = []
    devices = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=devices), Deterministic(device):
        train_x = distilled.images.to(device)
        train_y = distilled.labels.to(device)
        test_x = prepare_test(real.images).to(device)
        test_y = real.labels.to(device)
        reporter.started(config.seeds, int(config.epochs))
        for seed in config.seeds:
            reporter.seed_started(seed)
            result = train_one(seed, train_x, train_y, test_x, test_y, real.num_classes, config, device, reporter,
                               step_loss)
            results.append(result)
            reporter.seed_done(result)
            if on_seed is not None:
                on_seed(result)
    return results
