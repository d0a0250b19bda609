"""`pretrain(out_dir, data=...)`: train an embedded DiT on the TRAIN split of its data set
(`dmgd.data.digits` or `dmgd.data.corners`, see `dmgd.pretrain.model.PRETRAIN_DATA`).

DDPM (the project's default betas), epsilon MSE, uniform timesteps, labels dropped once
per sample (p = 0.1, to NULL_CLASS), AdamW (lr 1e-3, no weight decay, as DiT), gradient
clipping at 1.0, EMA 0.999 with the warm-up min(ema, (1+n)/(10+n)); the EMA weights ship.
Seeded: `torch.manual_seed(seed)` and one generator for data order, timesteps, noise and
label drops. The written model card (MODEL_CARD.md) records every fact of a run.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any, Iterator

import diffusers
import numpy as np
import torch
from diffusers import DiTTransformer2DModel
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from dmgd.data.digits import SPLIT_SEED, TEST_SIZE, DigitsSplit
from dmgd.pretrain.card import write_card
from dmgd.pretrain.model import NULL_CLASS, PretrainData, build_dit, pretrain_data, save_model
from dmgd.pretrain.quality import evaluate_samples
from dmgd.sampling.schedulers import DEFAULT_SCHEDULER_CONFIG

LABEL_DROP_PROB = 0.1
DEFAULT_STEPS = 2000


def alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                   beta_end: float = 0.02) -> torch.Tensor:
    """abar_t for DDPM linear betas, float64 [T]."""
    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


def pretrain(
    out_dir: str | Path,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    ema: float = 0.999,
    progress: bool = True,
    log_every: int = 0,
    threads: int | None = None,
    evaluate: bool = True,
    weights_dtype: str = "float16",
    data: str = "digits",
) -> dict[str, Any]:
    """Train the DiT of `data` ("digits" or "corners") on its train split and save it to
    `out_dir` (diffusers layout).

    Returns the model card facts (also written to `out_dir/MODEL_CARD.md` and
    `out_dir/training_facts.json`). `progress` shows a rich progress bar (loss, ETA);
    `log_every > 0` prints a plain line every that many steps (for logs). `threads` sets
    `torch.set_num_threads`. `evaluate` runs `evaluate_samples` on the stored weights.
    `weights_dtype` is how the EMA weights are stored ("float16" halves the file; loaders
    upcast to float32).
    """
    if threads is not None:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    spec = pretrain_data(data)
    split = spec.load_split()
    model = build_dit(seed, spec.dit_config)
    model.train()
    ema_model = build_dit(seed, spec.dit_config)
    ema_model.load_state_dict(model.state_dict())
    ema_model.eval().requires_grad_(False)
    n_params = sum(p.numel() for p in model.parameters())
    reporter = _StepReporter(steps, progress, log_every)
    t0 = time.perf_counter()
    with reporter:
        losses = train(model, ema_model, split, steps=steps, seed=seed, batch_size=batch_size, lr=lr, ema=ema,
                       on_step=reporter.update)
    wall = time.perf_counter() - t0
    ema_model = save_model(ema_model, out_dir, weights_dtype)
    facts = training_facts(split, n_params=n_params, losses=losses, wall=wall, steps=steps, seed=seed,
                           batch_size=batch_size, lr=lr, ema=ema, weights_dtype=weights_dtype, spec=spec)
    if evaluate:
        facts["quality"] = evaluate_samples(ema_model, data=data)
    write_card(out_dir, facts)
    return facts


def train(model: DiTTransformer2DModel, ema_model: DiTTransformer2DModel, split: DigitsSplit, *, steps: int,
          seed: int, batch_size: int, lr: float, ema: float, on_step: Any = None) -> list[float]:
    """`steps` optimiser steps of `model` on the train split, `ema_model` following its
    weights; returns the loss of every step. on_step(step, losses) after each step."""
    x_train, y_train = split.tensors("train")
    params = list(model.parameters())
    ema_params = list(ema_model.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    T = DEFAULT_SCHEDULER_CONFIG["num_train_timesteps"]
    abar = alphas_cumprod(T, DEFAULT_SCHEDULER_CONFIG["beta_start"], DEFAULT_SCHEDULER_CONFIG["beta_end"]).float()
    gen = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for step, idx in zip(range(steps), _batches(len(y_train), batch_size, gen)):
        loss = _train_step(model, opt, params, x_train[idx], y_train[idx].clone(), abar, gen)
        _ema_update(ema_params, params, min(ema, (1 + step) / (10 + step)))
        losses.append(loss)
        if on_step is not None:
            on_step(step, losses)
    return losses


def _batches(n: int, batch_size: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """Index batches of a permutation, a fresh one when the rest is shorter than a batch."""
    order = torch.randperm(n, generator=gen)
    pos = 0
    while True:
        if pos + batch_size > n:
            order = torch.randperm(n, generator=gen)
            pos = 0
        yield order[pos:pos + batch_size]
        pos += batch_size


def _train_step(model: DiTTransformer2DModel, opt: torch.optim.Optimizer, params: list[torch.Tensor],
                x0: torch.Tensor, y: torch.Tensor, abar: torch.Tensor, gen: torch.Generator) -> float:
    """One step: labels dropped to NULL_CLASS, x0 noised at uniform timesteps, epsilon MSE."""
    drop = torch.rand(len(y), generator=gen) < LABEL_DROP_PROB
    y[drop] = NULL_CLASS
    t = torch.randint(0, len(abar), (len(y),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    a = abar[t].view(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
    pred = model(xt, timestep=t, class_labels=y).sample
    loss = torch.nn.functional.mse_loss(pred, noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss.item()


def _ema_update(ema_params: list[torch.Tensor], params: list[torch.Tensor], decay: float) -> None:
    with torch.no_grad():
        torch._foreach_mul_(ema_params, decay)
        torch._foreach_add_(ema_params, [p.detach() for p in params], alpha=1 - decay)


class _StepReporter:
    """A rich progress bar (loss over the last 50 steps, ETA) and/or a plain line every
    `log_every` steps; a context manager that stops the bar."""

    def __init__(self, steps: int, progress: bool, log_every: int) -> None:
        self.steps, self.log_every = steps, log_every
        self.bar = None
        if progress:
            self.bar = Progress(TextColumn("[bold]pretrain"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                                TextColumn("ETA"), TimeRemainingColumn())
            self.task = self.bar.add_task("train", total=steps, loss=float("nan"))

    def __enter__(self) -> _StepReporter:
        if self.bar is not None:
            self.bar.start()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, step: int, losses: list[float]) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=float(np.mean(losses[-50:])))
        if self.log_every and ((step + 1) % self.log_every == 0 or step + 1 == self.steps):
            el = time.perf_counter() - self.t0
            print(f"step {step + 1}/{self.steps} loss(50) {np.mean(losses[-50:]):.4f} "
                  f"{el / (step + 1):.3f} s/step elapsed {el:.0f}s "
                  f"eta {el / (step + 1) * (self.steps - step - 1):.0f}s", flush=True)


def _corners_how() -> str:
    from dmgd.data.corners import CORNER_ORDER, CORNER_SEED, SHARES

    return (f"each 8x8 digit at one corner of a 16x16 canvas; per class a corner order drawn by "
            f"numpy default_rng({CORNER_SEED}) (CORNER_ORDER = {[list(o) for o in CORNER_ORDER]}, corners 0..3 = "
            f"top-left, top-right, bottom-left, bottom-right) receives {'/'.join(f'{v:.0%}' for v in SHARES)} "
            "of the class's images, counted by largest remainder within each of fit, val and test "
            "(train = fit + val), images shuffled onto corners by default_rng("
            f"{CORNER_SEED + 1})")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def training_facts(split: DigitsSplit, *, n_params: int, losses: list[float], wall: float, steps: int,
                   seed: int, batch_size: int, lr: float, ema: float, weights_dtype: str,
                   spec: PretrainData | None = None) -> dict[str, Any]:
    """What the model card and training_facts.json record about a run (`spec` None: digits)."""
    spec = spec or pretrain_data("digits")
    return {
        "data": spec.name,
        "dit_config": spec.dit_config,
        "parameters": n_params,
        "scheduler": dict(DEFAULT_SCHEDULER_CONFIG),
        "split": {
            "source": spec.source,
            "how": f"train_test_split(arange(1797), test_size={TEST_SIZE}, stratify=y, "
                   f"random_state={SPLIT_SEED}); indices sorted",
            "train": int(len(split.train_indices)),
            "test": int(len(split.test_indices)),
            "used_for_training": "train only",
            **({"corners": _corners_how()} if spec.name == "corners" else {}),
        },
        "steps": steps,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "ema": ema,
        "label_drop_prob": LABEL_DROP_PROB,
        "null_class": NULL_CLASS,
        "seed": seed,
        "wall_time_s": round(wall, 1),
        "s_per_step": round(wall / max(steps, 1), 4),
        "torch_threads": torch.get_num_threads(),
        "machine": _machine(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "final_loss_avg_last_100": round(float(np.mean(losses[-100:])), 5) if losses else None,
        "weights_dtype": weights_dtype,
    }
