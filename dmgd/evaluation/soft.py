"""The soft-label protocol (RDED's validation): a frozen teacher labels, on the fly, exactly
the augmented and CutMixed batch the student sees; nothing is stored.

Per batch, in RDED's order: ShufflePatches(factor) -> RandomResizedCrop -> flip ->
normalise (`dmgd.evaluation.training.augment`, with jitter and lighting off by default),
then CutMix (Beta(1, 1), one box per batch). The teacher, in eval mode and under
no_grad, gives its logits for that mixed batch, and the loss is
`KLDivLoss(batchmean)(log_softmax(student / T), softmax(teacher / T))` with T = 20: no
T^2 factor, no hard-label term. Every draw comes from the seed's augmentation generator.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from dmgd.evaluation import augment as A
from dmgd.evaluation.config import EvalConfig
from dmgd.evaluation.training import augment


def strip_order(size: int, factor: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """int64 [batch, size]: per image, the pixel indices of `factor` strips (size // factor
    wide; the last takes any remainder) put back in a uniformly random order."""
    step = size // factor
    bounds = [(i * step, (i + 1) * step if i < factor - 1 else size) for i in range(factor)]
    order = torch.argsort(torch.rand(batch, factor, generator=generator, dtype=torch.float64), dim=1)
    strips = [torch.arange(lo, hi) for lo, hi in bounds]
    return torch.stack([torch.cat([strips[j] for j in row]) for row in order.tolist()])


def shuffle_patches(images: torch.Tensor, factor: int, generator: torch.Generator) -> torch.Tensor:
    """RDED's ShufflePatches(factor), batched: each image's vertical strips shuffled, then its
    horizontal strips (factor 2: left and right halves swapped with p 1/2, then top and
    bottom). RDED's code drops a remainder column when the size is odd; here the last strip
    keeps it (the same for even sizes). factor 1: the images as they are, nothing drawn."""
    if factor <= 1:
        return images
    B, C, H, W = images.shape
    columns = strip_order(W, factor, B, generator).to(images.device)
    rows = strip_order(H, factor, B, generator).to(images.device)
    images = images.gather(3, columns[:, None, None, :].expand(B, C, H, W))
    return images.gather(2, rows[:, None, :, None].expand(B, C, H, W))


def soft_augment(x: torch.Tensor, config: EvalConfig, generator: torch.Generator) -> torch.Tensor:
    """[-1, 1] images -> the batch the student sees: patches shuffled, cropped, flipped,
    normalised, then CutMixed (when config.cutmix)."""
    x = shuffle_patches(x, int(config.shuffle_patches or 1), generator)
    x = augment(x, config, generator)
    if config.cutmix:
        labels = torch.zeros(x.shape[0], dtype=torch.long)  # CutMix's labels are unused: the teacher labels
        x = A.cutmix(x, labels, generator, config.cutmix_beta, config.cutmix_prob)[0]
    return x


def soft_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """RDED's loss: KLDivLoss(batchmean) of log_softmax(student / T) against softmax(teacher / T)."""
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits / temperature, dim=1), reduction="batchmean")


class SoftLoss:
    """The step loss of the soft protocol (see `dmgd.evaluation.training.train_epoch`):
    `teacher` is a frozen module whose outputs are the real set's classes, in its order."""

    def __init__(self, teacher: Any) -> None:
        self.teacher = teacher.eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)

    def __call__(self, model: Any, x: torch.Tensor, y: torch.Tensor, config: EvalConfig,
                 generator: torch.Generator) -> torch.Tensor:
        x = soft_augment(x, config, generator)
        with torch.no_grad():
            teacher_logits = self.teacher(x)
        return soft_kl(model(x), teacher_logits, float(config.temperature))
