"""Soft-label training time per epoch over hard-label training on the same set (issue 13).

    python benchmarks/eval_speed.py [--preset digits|imagenet] [--ipc 10] [--epochs 6]
                                    [--threads 1] [--device cpu]

Both protocols train the same student on the same images, one epoch after the other,
alternating (hard, soft, hard, soft, ...) in one process, so that a change of the
machine's load hits both alike; the figure is the median epoch time of each, and their
ratio. The soft epoch adds what the protocol adds: ShufflePatches, and a teacher's forward
pass (eval mode, no_grad) on every augmented batch; it drops colour jitter and lighting.
Time does not depend on the teacher's weights, so the teacher is freshly initialised.

Presets: digits (the embedded digits' random-real set of IPC images per class, 8x8,
ConvNet-6 student, ConvNet-6 teacher: `--teacher digits`'s architecture) and imagenet
(random 256 px images of 10 classes read at 224: ResNet-18 student and teacher as RDED, the
hard side with its ResNet-10-AP default). Target: soft / hard <= 1.5.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _digits_set(ipc: int):
    import torch

    from dmgd.data.images import embedded_real_images

    real = embedded_real_images("digits", "train")
    g = torch.Generator().manual_seed(0)
    index = torch.cat([real.class_indices(c)[torch.randperm(len(real.class_indices(c)), generator=g)[:ipc]]
                       for c in range(real.num_classes)])
    return real.images[index], real.labels[index], 8


def _imagenet_set(ipc: int):
    import torch

    g = torch.Generator().manual_seed(0)
    images = torch.rand(10 * ipc, 3, 224, 224, generator=g) * 2 - 1
    return images, torch.arange(10).repeat_interleave(ipc), 256


def _timed_epochs(a: argparse.Namespace) -> dict[str, list[float]]:
    import torch

    from dmgd.evaluation.config import EvalConfig
    from dmgd.evaluation.models import build_model
    from dmgd.evaluation.soft import SoftLoss
    from dmgd.evaluation.training import derived_seed, make_optimizer, train_epoch

    x, y, native = (_digits_set if a.preset == "digits" else _imagenet_set)(a.ipc)
    configs = {p: EvalConfig(protocol=p, preset=a.preset).resolve(ipc=a.ipc, native_size=native)
               for p in ("hard", "soft")}
    teacher_arch = "convnet" if a.preset == "digits" else "resnet18bn"
    teacher = build_model(teacher_arch, 10, x.shape[1], configs["soft"].image_size, seed=1).to(a.device)
    losses = {"hard": None, "soft": SoftLoss(teacher)}
    runs = {}
    for protocol, config in configs.items():
        model = build_model(config.model, 10, x.shape[1], config.image_size, seed=0).to(a.device)
        runs[protocol] = (model, make_optimizer(model, config), config)
        print(f"{protocol}: {config.model} student, batch {config.batch_size}, {config.image_size} px"
              + (f", {teacher_arch} teacher" if protocol == "soft" else ""), flush=True)
    times: dict[str, list[float]] = {"hard": [], "soft": []}
    order, augmentation = (torch.Generator().manual_seed(derived_seed(p, 0)) for p in ("order", "augment"))
    xs, ys = x.to(a.device), y.to(a.device)
    for epoch in range(a.epochs + 1):  # epoch 0 warms both up and is not counted
        for protocol in ("hard", "soft"):
            model, optimizer, config = runs[protocol]
            extra = {} if losses[protocol] is None else {"step_loss": losses[protocol]}
            tic = time.perf_counter()
            train_epoch(model, optimizer, xs, ys, config, order, augmentation, **extra)
            if a.device.startswith("cuda"):
                torch.cuda.synchronize()
            if epoch:
                times[protocol].append(time.perf_counter() - tic)
    return times


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", choices=("digits", "imagenet"), default="digits")
    p.add_argument("--ipc", type=int, default=10)
    p.add_argument("--epochs", type=int, default=6, help="timed epochs of each protocol (after one warm-up)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    times = _timed_epochs(a)
    hard, soft = statistics.median(times["hard"]), statistics.median(times["soft"])
    print(f"{a.preset}, IPC {a.ipc}, {a.epochs} epochs each, {a.threads} thread(s), {a.device}")
    print(f"hard: median {hard * 1000:.1f} ms/epoch  ({', '.join(f'{t * 1000:.0f}' for t in times['hard'])})")
    print(f"soft: median {soft * 1000:.1f} ms/epoch  ({', '.join(f'{t * 1000:.0f}' for t in times['soft'])})")
    print(f"soft / hard = {soft / hard:.2f}x (target <= 1.5x)")


if __name__ == "__main__":
    main()
