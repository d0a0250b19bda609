"""The harness's training augmentations, batched, in torch, every draw from a generator.

Images are float [B, C, H, W] in [0, 1] (ToTensor's range; normalise afterwards). Each
function takes an explicit CPU `torch.Generator` and draws all its randomness from it, in
a fixed order, on the CPU (the parameters then move to the images' device): the same
generator state gives the same batch on any device, and no global generator is read.
Per image: `random_resized_crop`, `horizontal_flip`, `color_jitter`, `lighting`; per
batch: `cutmix`. What each follows is in docs/evaluation.md ("The protocol").
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# AlexNet / fb.resnet.torch PCA of ImageNet's RGB pixels ([0, 1] scale)
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# One channel: the [-1, 1] convention of the rest of dmgd ((x - 0.5) / 0.5).
GRAY_MEAN = (0.5,)
GRAY_STD = (0.5,)
LUMA = (0.299, 0.587, 0.114)


def _rand(generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=generator, dtype=torch.float64)


def crop_boxes(batch: int, height: int, width: int, generator: torch.Generator,
               scale: tuple[float, float] = (0.5, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3), tries: int = 10) -> torch.Tensor:
    """torchvision's RandomResizedCrop.get_params for a batch: int64 [B, 4] rows (top,
    left, h, w). Every try is drawn for every image (a fixed number of draws), and the
    first try that fits is used; images with none fall back to the central crop."""
    area = float(height * width)
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    target = area * (scale[0] + (scale[1] - scale[0]) * _rand(generator, batch, tries))
    aspect = torch.exp(log_lo + (log_hi - log_lo) * _rand(generator, batch, tries))
    w = torch.round(torch.sqrt(target * aspect)).to(torch.int64)
    h = torch.round(torch.sqrt(target / aspect)).to(torch.int64)
    u_top, u_left = _rand(generator, batch, tries), _rand(generator, batch, tries)
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)
    # torch.randint(0, H - h + 1) as a uniform draw: floor(u * (H - h + 1))
    top = torch.floor(u_top * (height - h + 1).clamp(min=1)).to(torch.int64)
    left = torch.floor(u_left * (width - w + 1).clamp(min=1)).to(torch.int64)
    first = ok.to(torch.int8).argmax(1, keepdim=True)  # the first try that fits (0 when none does)
    chosen = torch.cat([x.gather(1, first) for x in (top, left, h, w)], dim=1)
    # fallback: torchvision's central crop clamped to the ratio range
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fh, fw = height, int(round(height * ratio[1]))
    else:
        fw, fh = width, height
    fallback = torch.tensor([(height - fh) // 2, (width - fw) // 2, fh, fw], dtype=torch.int64)
    return torch.where(ok.any(1, keepdim=True), chosen, fallback.expand(batch, 4))


def resized_crops(images: torch.Tensor, boxes: torch.Tensor, size: int) -> torch.Tensor:
    """Each image's box (top, left, h, w) resampled bilinearly to size x size."""
    B, C, H, W = images.shape
    b = boxes.to(torch.float64)
    top, left, h, w = b.unbind(1)
    theta = torch.zeros(B, 2, 3, dtype=torch.float64)
    # align_corners=False: pixel edges at -1 and 1; the box spans [left, left + w) in pixels
    theta[:, 0, 0] = w / W
    theta[:, 0, 2] = (2 * left + w) / W - 1
    theta[:, 1, 1] = h / H
    theta[:, 1, 2] = (2 * top + h) / H - 1
    theta = theta.to(device=images.device, dtype=images.dtype)
    grid = F.affine_grid(theta, [B, C, size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def random_resized_crop(images: torch.Tensor, size: int, generator: torch.Generator,
                        scale: tuple[float, float] = (0.5, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """torchvision's RandomResizedCrop (10 tries, then the centre-crop fallback; integer
    boxes), resampled bilinearly with `grid_sample` (align_corners=False, as torchvision's
    tensor resize). A crop is never larger than the image: no antialiasing is needed."""
    B, _, H, W = images.shape
    return resized_crops(images, crop_boxes(B, H, W, generator, scale, ratio), size)


def horizontal_flip(images: torch.Tensor, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Each image mirrored left-right with probability p."""
    flip = (_rand(generator, images.shape[0]) < p).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] luma (ITU-R 601) of RGB images; a 1-channel image is its own grey."""
    if images.shape[1] == 1:
        return images
    r, g, b = images[:, 0:1], images[:, 1:2], images[:, 2:3]
    return LUMA[0] * r + LUMA[1] * g + LUMA[2] * b


def color_jitter(images: torch.Tensor, generator: torch.Generator, brightness: float = 0.4,
                 contrast: float = 0.4, saturation: float = 0.4) -> torch.Tensor:
    """fb.resnet.torch's ColorJitter (the harness's): brightness, contrast and saturation,
    each `img.lerp(target, alpha)` with alpha ~ U(-strength, strength), unclamped. Draws,
    per image, a random order of the three operations and one alpha each (always all of
    them). Grayscale-aware: a 1-channel image is its own grey (saturation does nothing)."""
    B = images.shape[0]
    strengths = torch.tensor([brightness, contrast, saturation], dtype=torch.float64)
    alphas = (2 * _rand(generator, B, 3) - 1) * strengths  # U(-var, var)
    order = torch.argsort(_rand(generator, B, 3), dim=1)  # a uniform random permutation per image
    alphas = alphas.to(device=images.device, dtype=images.dtype)
    order = order.to(images.device)
    out = images
    for position in range(3):
        op = order[:, position]
        alpha = alphas.gather(1, op[:, None]).reshape(B, 1, 1, 1)
        gray = grayscale(out)
        targets = (
            torch.zeros_like(out),  # brightness: towards black
            gray.mean(dim=(1, 2, 3), keepdim=True).expand_as(out),  # contrast: towards the mean grey
            gray.expand_as(out),  # saturation: towards the image's grey
        )
        target = torch.where((op == 0).reshape(B, 1, 1, 1), targets[0],
                             torch.where((op == 1).reshape(B, 1, 1, 1), targets[1], targets[2]))
        out = out + alpha * (target - out)
    return out


def lighting(images: torch.Tensor, generator: torch.Generator, alphastd: float = 0.1) -> torch.Tensor:
    """AlexNet's PCA lighting noise on RGB images: alpha ~ N(0, alphastd) per eigenvector of
    ImageNet's pixels; 1-channel images are returned as they are (no draw is made for them)."""
    if images.shape[1] != 3 or alphastd == 0:
        return images
    B = images.shape[0]
    alpha = torch.randn(B, 3, generator=generator, dtype=torch.float64) * alphastd
    eigval = torch.tensor(IMAGENET_EIGVAL, dtype=torch.float64)
    eigvec = torch.tensor(IMAGENET_EIGVEC, dtype=torch.float64)
    rgb = (alpha * eigval) @ eigvec.T  # rgb[b, i] = sum_j eigvec[i, j] * alpha[b, j] * eigval[j]
    return images + rgb.to(device=images.device, dtype=images.dtype)[:, :, None, None]


def normalize(images: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    return (images - m) / s


def normalization_for(channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std): ImageNet's for RGB (the harness), 0.5 / 0.5 for one channel."""
    return (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GRAY_MEAN, GRAY_STD)


def sample_beta(generator: torch.Generator, a: float, b: float) -> float:
    """Beta(a, b) from the generator: Beta(1, 1) is U(0, 1) itself; other shapes go through
    numpy's sampler, seeded by one draw from the generator."""
    if a == 1.0 and b == 1.0:
        return float(_rand(generator, 1))
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return float(np.random.default_rng(seed).beta(a, b))


def cutmix_box(height: int, width: int, lam: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """The harness's rand_bbox: a box of sides int(side * sqrt(1 - lam)) centred on a
    uniform pixel, clipped to the image. Returns (y1, y2, x1, x2)."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy = int(torch.randint(0, height, (1,), generator=generator))
    cx = int(torch.randint(0, width, (1,), generator=generator))
    y1, y2 = min(max(cy - cut_h // 2, 0), height), min(max(cy + cut_h // 2, 0), height)
    x1, x2 = min(max(cx - cut_w // 2, 0), width), min(max(cx + cut_w // 2, 0), width)
    return y1, y2, x1, x2


def cutmix(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator, beta: float = 1.0,
           prob: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """CutMix as the harness: with probability `prob`, lam ~ Beta(beta, beta), a random
    permutation of the batch, one box; returns (images, labels_a, labels_b, ratio) where
    ratio is the share of each image that is still its own (1 - box area / image area)
    and the loss is `ratio * CE(y_a) + (1 - ratio) * CE(y_b)`. Not mixed: ratio is 1 and
    labels_b is labels_a. The input tensor is not modified."""
    B, _, H, W = images.shape
    if prob <= 0 or float(_rand(generator, 1)) >= prob:
        return images, labels, labels, 1.0
    lam = sample_beta(generator, beta, beta)
    perm = torch.randperm(B, generator=generator).to(images.device)
    y1, y2, x1, x2 = cutmix_box(H, W, lam, generator)
    mixed = images.clone()
    mixed[:, :, y1:y2, x1:x2] = images[perm, :, y1:y2, x1:x2]
    ratio = 1.0 - ((y2 - y1) * (x2 - x1)) / (H * W)
    return mixed, labels, labels[perm], ratio
