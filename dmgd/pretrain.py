"""Training of the embedded default model: a tiny class-conditional DiT on sklearn's digits.

`pretrain(out_dir)` trains `DiTTransformer2DModel` on the TRAIN split of
`dmgd.data.digits` (never the test split) and writes a diffusers-layout model directory:

    out_dir/transformer/config.json
    out_dir/transformer/diffusion_pytorch_model.safetensors   (the EMA weights)
    out_dir/scheduler/scheduler_config.json                    (DDPM 1000, linear 1e-4..0.02)
    out_dir/model_index.json                                   (with "id2label")
    out_dir/MODEL_CARD.md

The recipe (see `DIT_CONFIG`, `TrainConfig`):
- DiT: 8x8 input, 1 channel in and out (epsilon only, no learned sigma), patch 2,
  6 layers, 4 heads x 32, `num_embeds_ada_norm=10`, adaLN-zero.
- Labels: diffusers gives every block its own `LabelEmbedding` with its own dropout 0.1;
  the table has num_classes + 1 = 11 rows because that dropout is > 0, and row 10 is the
  null ("unconditional") class used by classifier-free guidance. We keep the 11 rows but
  set every block's `dropout_prob = 0`, so diffusers never drops labels on its own, and
  drop labels ourselves: once per sample (p = 0.1), by replacing the label with 10, so
  every block sees the same decision.
- Initialisation as DiT's `initialize_weights` (diffusers does not apply it): xavier
  linears with zero biases, xavier patch projection, normal(0.02) label tables and
  timestep MLPs, zero adaLN modulations (every block's `norm1.linear` and the final
  `proj_out_1`) and a zero output projection (`proj_out_2`).
- DDPM with 1000 linear betas 1e-4..0.02, epsilon MSE loss, uniform timesteps,
  AdamW (lr 1e-3, weight decay 0, as DiT), batch 128, gradient clipping at 1.0,
  EMA 0.999 of the weights with the usual warm-up min(0.999, (1+n)/(10+n)); the EMA
  weights are what ships. Seeded: `torch.manual_seed(seed)` and one generator for the data
  order, timesteps, noise and label drops.

`evaluate_samples(transformer)` is the model card's quality check: 10 samples per class
(DDIM 50 steps, CFG 4.0, seeded), classified by a logistic regression trained on the real
train split, plus nearest-neighbour distances to train and test images (no copying).
Its DDIM loop is a minimal reference for this check only, not the project's sampler.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from diffusers import DiTTransformer2DModel

NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES  # row 10 of every label table: the unconditional label
LABEL_DROP_PROB = 0.1

DIT_CONFIG: dict[str, Any] = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,  # epsilon only; must be explicit
    patch_size=2,
    num_layers=6,
    num_attention_heads=4,
    attention_head_dim=32,
    num_embeds_ada_norm=NUM_CLASSES,
    norm_type="ada_norm_zero",
)

SCHEDULER_CONFIG: dict[str, Any] = dict(
    num_train_timesteps=1000,
    beta_schedule="linear",
    beta_start=1e-4,
    beta_end=0.02,
    clip_sample=False,
    prediction_type="epsilon",
)

DEFAULT_STEPS = 2000


# --------------------------------------------------------------------------- model


def build_dit(seed: int = 0) -> DiTTransformer2DModel:
    """A freshly initialised digits DiT (DiT's init; label dropout off in every block)."""
    import torch
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(seed)
    model = DiTTransformer2DModel(**DIT_CONFIG)
    disable_label_dropout(model)
    initialize_weights(model)
    return model


def disable_label_dropout(model: DiTTransformer2DModel) -> None:
    """Set every block's `class_embedder.dropout_prob = 0` (the 11-row tables stay)."""
    for block in model.transformer_blocks:
        block.norm1.emb.class_embedder.dropout_prob = 0.0


def label_tables(model: DiTTransformer2DModel) -> list[torch.nn.Embedding]:
    """The per-block label embedding tables (one per transformer block)."""
    return [b.norm1.emb.class_embedder.embedding_table for b in model.transformer_blocks]


def initialize_weights(model: DiTTransformer2DModel) -> None:
    """DiT's `initialize_weights`, mapped onto diffusers' module names."""
    import torch
    from torch import nn

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = model.pos_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(model.pos_embed.proj.bias)
        for block in model.transformer_blocks:
            emb = block.norm1.emb
            nn.init.normal_(emb.class_embedder.embedding_table.weight, std=0.02)
            nn.init.normal_(emb.timestep_embedder.linear_1.weight, std=0.02)
            nn.init.normal_(emb.timestep_embedder.linear_2.weight, std=0.02)
            nn.init.zeros_(block.norm1.linear.weight)
            nn.init.zeros_(block.norm1.linear.bias)
        for lin in (model.proj_out_1, model.proj_out_2):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)


def alphas_cumprod(num_train_timesteps: int = 1000, beta_start: float = 1e-4,
                   beta_end: float = 0.02) -> torch.Tensor:
    """abar_t for DDPM linear betas, float64 [T]."""
    import torch

    betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float64)
    return torch.cumprod(1.0 - betas, dim=0)


# --------------------------------------------------------------------------- training


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
) -> dict[str, Any]:
    """Train the digits DiT on the train split and save it to `out_dir` (diffusers layout).

    Returns the model card facts (also written to `out_dir/MODEL_CARD.md` and
    `out_dir/training_facts.json`). `progress` shows a rich progress bar (loss, ETA);
    `log_every > 0` prints a plain line every that many steps (for logs). `threads` sets
    `torch.set_num_threads`. `evaluate` runs `evaluate_samples` on the stored weights.
    `weights_dtype` is how the EMA weights are stored ("float16" halves the file; loaders
    upcast to float32).
    """
    import torch
    import diffusers

    from dmgd.data.digits import SPLIT_SEED, TEST_SIZE, load_split

    if threads is not None:
        torch.set_num_threads(threads)
    out_dir = Path(out_dir)
    split = load_split()
    x_train, y_train = split.tensors("train")
    n = len(y_train)

    model = build_dit(seed)
    model.train()
    ema_model = build_dit(seed)
    ema_model.load_state_dict(model.state_dict())
    ema_model.eval().requires_grad_(False)
    params = list(model.parameters())
    ema_params = list(ema_model.parameters())
    n_params = sum(p.numel() for p in params)

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    abar = alphas_cumprod(**{k: SCHEDULER_CONFIG[k] for k in
                             ("num_train_timesteps", "beta_start", "beta_end")}).float()
    T = SCHEDULER_CONFIG["num_train_timesteps"]
    gen = torch.Generator().manual_seed(seed)

    order = torch.randperm(n, generator=gen)
    pos = 0
    losses: list[float] = []
    bar = None
    if progress:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        bar = Progress(TextColumn("[bold]pretrain"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]:.4f}"), TimeElapsedColumn(),
                       TextColumn("ETA"), TimeRemainingColumn())
        task = bar.add_task("train", total=steps, loss=float("nan"))
        bar.start()
    t0 = time.perf_counter()
    try:
        for step in range(steps):
            if pos + batch_size > n:
                order = torch.randperm(n, generator=gen)
                pos = 0
            idx = order[pos:pos + batch_size]
            pos += batch_size
            x0, y = x_train[idx], y_train[idx].clone()
            drop = torch.rand(len(y), generator=gen) < LABEL_DROP_PROB
            y[drop] = NULL_CLASS
            t = torch.randint(0, T, (len(y),), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            a = abar[t].view(-1, 1, 1, 1)
            xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
            pred = model(xt, timestep=t, class_labels=y).sample
            loss = torch.nn.functional.mse_loss(pred, noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            d = min(ema, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_mul_(ema_params, d)
                torch._foreach_add_(ema_params, [p.detach() for p in params], alpha=1 - d)
            losses.append(loss.item())
            if bar is not None:
                bar.update(task, advance=1, loss=float(np.mean(losses[-50:])))
            if log_every and ((step + 1) % log_every == 0 or step + 1 == steps):
                el = time.perf_counter() - t0
                print(f"step {step + 1}/{steps} loss(50) {np.mean(losses[-50:]):.4f} "
                      f"{el / (step + 1):.3f} s/step elapsed {el:.0f}s "
                      f"eta {el / (step + 1) * (steps - step - 1):.0f}s", flush=True)
    finally:
        if bar is not None:
            bar.stop()
    wall = time.perf_counter() - t0

    ema_model = save_model(ema_model, out_dir, weights_dtype)

    facts: dict[str, Any] = {
        "dit_config": DIT_CONFIG,
        "parameters": n_params,
        "scheduler": SCHEDULER_CONFIG,
        "split": {
            "source": "sklearn.datasets.load_digits()",
            "how": f"train_test_split(arange(1797), test_size={TEST_SIZE}, stratify=y, "
                   f"random_state={SPLIT_SEED}); indices sorted",
            "train": int(len(split.train_indices)),
            "test": int(len(split.test_indices)),
            "used_for_training": "train only",
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
    if evaluate:
        facts["quality"] = evaluate_samples(ema_model)
    write_card(out_dir, facts)
    return facts


def save_model(transformer: DiTTransformer2DModel, out_dir: str | Path,
               weights_dtype: str = "float16") -> DiTTransformer2DModel:
    """Write `transformer` (stored as `weights_dtype`), the DDPM scheduler config and
    model_index.json (with id2label) to `out_dir` in diffusers' layout. Returns the model
    as stored, upcast to float32 (what `load_backbone` will give back)."""
    import diffusers
    import torch
    from diffusers import DDPMScheduler

    from dmgd.data.digits import CLASS_NAMES

    out_dir = Path(out_dir)
    (out_dir / "transformer").mkdir(parents=True, exist_ok=True)
    from diffusers.utils import logging as dlogging

    verbosity = dlogging.get_verbosity()
    dlogging.set_verbosity_error()  # the "modules kept in float32: []" note on .to()
    try:
        stored = transformer.to(getattr(torch, weights_dtype))
    finally:
        dlogging.set_verbosity(verbosity)
    stored.save_pretrained(out_dir / "transformer", safe_serialization=True)
    cfg_path = out_dir / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("_name_or_path", None)  # a local path of the machine that saved it
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    DDPMScheduler(**SCHEDULER_CONFIG).save_config(out_dir / "scheduler")
    model_index = {
        "_class_name": "DiTPipeline",
        "_diffusers_version": diffusers.__version__,
        "transformer": ["diffusers", "DiTTransformer2DModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "vae": [None, None],
        "id2label": {str(i): name for i, name in enumerate(CLASS_NAMES)},
    }
    (out_dir / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    dlogging.set_verbosity_error()
    try:
        return stored.to(torch.float32).eval()
    finally:
        dlogging.set_verbosity(verbosity)


def write_card(out_dir: str | Path, facts: dict[str, Any]) -> None:
    """Hash the stored weights into `facts` and write training_facts.json + MODEL_CARD.md."""
    from dmgd.sampling.backbones import weights_sha256

    out_dir = Path(out_dir)
    facts["weights_sha256"] = weights_sha256(out_dir)
    (out_dir / "training_facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    (out_dir / "MODEL_CARD.md").write_text(model_card(facts))


# --------------------------------------------------------------------------- evaluation


def ddim_cfg_sample(transformer: DiTTransformer2DModel, labels: torch.Tensor,
                    steps: int = 50, cfg: float = 4.0, seed: int = 0,
                    scheduler_config: dict[str, Any] | None = None,
                    null_class: int = NULL_CLASS) -> torch.Tensor:
    """Minimal DDIM (eta 0) + classifier-free guidance on all channels, for checks only.

    Noise comes from `torch.Generator().manual_seed(seed)`; returns x0 clipped to [-1, 1].
    """
    import torch
    from diffusers import DDIMScheduler

    sched = DDIMScheduler.from_config(dict(scheduler_config or SCHEDULER_CONFIG))
    sched.set_timesteps(steps)
    cfg_ = transformer.config
    n = len(labels)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((n, cfg_.in_channels, cfg_.sample_size, cfg_.sample_size), generator=gen)
    y = torch.cat([labels.long(), torch.full((n,), null_class, dtype=torch.long)])
    with torch.no_grad():
        for t in sched.timesteps:
            tt = torch.full((2 * n,), int(t), dtype=torch.long)
            out = transformer(torch.cat([x, x]), timestep=tt, class_labels=y).sample
            eps_c, eps_u = out[:n, :cfg_.in_channels], out[n:, :cfg_.in_channels]
            eps = eps_u + cfg * (eps_c - eps_u)
            x = sched.step(eps, t, x).prev_sample
    return x.clamp(-1, 1)


def digits_classifier():
    """Logistic regression on the real train split (flattened [-1, 1] pixels).

    Fitted with one BLAS thread: on a busy 2-core machine the multi-threaded fit of this
    tiny problem is ~40x slower (6 s instead of 0.15 s).
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    from dmgd.data.digits import load_split

    x, y = load_split().arrays("train")
    clf = LogisticRegression(max_iter=5000)
    with threadpool_limits(1):
        clf.fit(x.reshape(len(x), -1), y)
    return clf


def evaluate_samples(transformer: DiTTransformer2DModel, per_class: int = 10,
                     steps: int = 50, cfg: float = 4.0, seed: int = 0) -> dict[str, Any]:
    """The model card's quality check (deterministic for a given seed).

    Samples `per_class` images per class (DDIM `steps`, CFG `cfg`, noise seeded by
    `seed`), and reports how many a logistic regression trained on the real train split
    assigns to their class, and nearest-neighbour L2 distances (64-d, [-1, 1] pixels) from
    each sample to the train and to the test images. A model that copied training images
    would sit much closer to train than to test; the reference line is the same distance
    from each real test image to its nearest train image.
    """
    import torch

    from dmgd.data.digits import load_split

    transformer.eval()
    labels = torch.arange(NUM_CLASSES).repeat_interleave(per_class)
    t0 = time.perf_counter()
    x = ddim_cfg_sample(transformer, labels, steps=steps, cfg=cfg, seed=seed)
    sample_s = time.perf_counter() - t0
    flat = x.reshape(len(x), -1).numpy().astype(np.float64)

    clf = digits_classifier()
    pred = clf.predict(flat)
    correct = pred == labels.numpy()
    split = load_split()
    xtr, _ = split.arrays("train")
    xte, yte = split.arrays("test")
    xtr = xtr.reshape(len(xtr), -1).astype(np.float64)
    xte = xte.reshape(len(xte), -1).astype(np.float64)

    def nn_dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = (a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T
        return np.sqrt(np.maximum(d2, 0)).min(1)

    d_train, d_test = nn_dist(flat, xtr), nn_dist(flat, xte)
    d_ref = nn_dist(xte, xtr)
    return {
        "samples": int(len(labels)),
        "per_class": per_class,
        "ddim_steps": steps,
        "cfg": cfg,
        "seed": seed,
        "recognised": int(correct.sum()),
        "per_class_recognised": [int(c) for c in correct.reshape(NUM_CLASSES, per_class).sum(1)],
        "classifier": "LogisticRegression(max_iter=5000) on the train split",
        "classifier_test_accuracy": round(float(clf.score(xte, yte)), 4),
        "nn_train_median": round(float(np.median(d_train)), 3),
        "nn_test_median": round(float(np.median(d_test)), 3),
        "nn_train_min": round(float(d_train.min()), 3),
        "real_test_to_train_median": round(float(np.median(d_ref)), 3),
        "real_test_to_train_min": round(float(d_ref.min()), 3),
        "closer_to_train_than_test": int((d_train < d_test).sum()),
        "sampling_s": round(sample_s, 2),
    }


def model_card(f: dict[str, Any]) -> str:
    q = f.get("quality")
    cfg = ", ".join(f"{k}={v!r}" for k, v in f["dit_config"].items())
    lines = [
        "# Embedded default: digits DiT",
        "",
        "A tiny class-conditional `diffusers.DiTTransformer2DModel` trained by "
        "`dmgd.pretrain.pretrain` (`dmgd pretrain`) on scikit-learn's digits "
        "(8x8, 1 channel, 10 classes \"0\"..\"9\"). Shipped so that `dmgd run` works "
        "offline with no model argument.",
        "",
        "## Model",
        f"- `DiTTransformer2DModel({cfg})`: {f['parameters']:,} parameters; epsilon "
        "prediction only (no learned sigma).",
        f"- Label tables: one per block, {NUM_CLASSES + 1} rows each; row {f['null_class']} "
        "is the null class for classifier-free guidance. `dropout_prob` was 0 in every "
        "block during training; labels were dropped once per sample "
        f"(p = {f['label_drop_prob']}) by replacing them with {f['null_class']}. "
        "(Loaded with diffusers the tables again report `dropout_prob = 0.1`, which only "
        "acts in training mode.)",
        "- DiT's adaLN-zero initialisation (zero modulations and output projection, "
        "normal(0.02) label tables and timestep MLPs, xavier linears).",
        "- Noise schedule: DDPM, 1000 steps, linear betas 1e-4..0.02 "
        "(`scheduler/scheduler_config.json`).",
        "- Pixels: x / 8 - 1 in [-1, 1] (no VAE; latent = image, scale 1.0).",
        "",
        "## Data",
        f"- {f['split']['source']}; split: `{f['split']['how']}` -> "
        f"{f['split']['train']} train / {f['split']['test']} test images. "
        "Trained on the train split only.",
        "",
        "## Training",
        f"- {f['steps']} steps, batch {f['batch_size']}, AdamW lr {f['lr']} "
        f"(weight decay {f['weight_decay']}), gradient clipping {f['grad_clip']}, "
        f"EMA {f['ema']} with warm-up min(ema, (1+n)/(10+n)); the EMA weights ship, "
        f"stored as {f.get('weights_dtype', 'float32')} (loaders upcast to float32; the "
        "quality check below ran on the stored weights).",
        "- Loss: MSE on epsilon, timesteps uniform on 0..999.",
        f"- Seed {f['seed']} (`torch.manual_seed` and one `torch.Generator` for data "
        "order, timesteps, noise and label drops).",
        f"- Wall time {f['wall_time_s']} s ({f['s_per_step']} s/step) on {f['machine']}, "
        f"{f['torch_threads']} torch threads (machine shared with other work); "
        f"torch {f['torch']}, diffusers {f['diffusers']}.",
        f"- Mean loss over the last 100 steps: {f['final_loss_avg_last_100']}.",
        *([f"- Note: {f['note']}"] if f.get("note") else []),
        f"- sha256 of the safetensors weights: `{f.get('weights_sha256')}`.",
    ]
    if q:
        lines += [
            "",
            "## Quality check (`dmgd.pretrain.evaluate_samples`)",
            f"- {q['samples']} samples ({q['per_class']} per class), DDIM {q['ddim_steps']} "
            f"steps, CFG {q['cfg']}, seed {q['seed']}; sampling took {q['sampling_s']} s "
            "(wall time on the machine above).",
            f"- Recognised as their class by {q['classifier']} "
            f"(test accuracy on real digits {q['classifier_test_accuracy']}): "
            f"**{q['recognised']} / {q['samples']}** (per class "
            f"{q['per_class_recognised']}).",
            f"- Nearest-neighbour L2 distance (64-d pixels in [-1, 1]), median over samples: "
            f"to train {q['nn_train_median']}, to test {q['nn_test_median']} "
            f"(smallest to train: {q['nn_train_min']}). Reference, real test image to "
            f"nearest train image: median {q['real_test_to_train_median']}, smallest "
            f"{q['real_test_to_train_min']}. {q['closer_to_train_than_test']} of "
            f"{q['samples']} samples are closer to a train image than to a test image "
            "(the train split is 4x larger, so some excess is expected without copying).",
        ]
    lines += [
        "",
        "## Reproduce",
        "```",
        f"dmgd pretrain --out DIR --steps {f['steps']} --seed {f['seed']}",
        "```",
        "",
    ]
    return "\n".join(lines)
