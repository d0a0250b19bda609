"""The model card of a pretrained DiT (digits or corners): `write_card` hashes the stored
weights into the run's facts and writes training_facts.json and MODEL_CARD.md
(`model_card(facts)`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dmgd.pretrain.model import NUM_CLASSES, pretrain_data
from dmgd.sampling.backbones import weights_sha256


def write_card(out_dir: str | Path, facts: dict[str, Any]) -> None:
    """Hash the stored weights into `facts` and write training_facts.json + MODEL_CARD.md."""
    out_dir = Path(out_dir)
    facts["weights_sha256"] = weights_sha256(out_dir)
    (out_dir / "training_facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    (out_dir / "MODEL_CARD.md").write_text(model_card(facts))


def model_card(f: dict[str, Any]) -> str:
    """MODEL_CARD.md's text for the facts of a run (see `dmgd.pretrain.training_facts`)."""
    data = f.get("data", "digits")
    lines = [*_intro(data), *_model(f), *_data(f), *_training(f)]
    if f.get("quality"):
        lines += _corners_quality(f["quality"]) if data == "corners" else _quality(f["quality"])
    lines += _reproduce(f)
    return "\n".join(lines)


def _intro(data: str) -> list[str]:
    spec = pretrain_data(data)
    if data == "corners":
        return [
            "# Embedded model: corners DiT",
            "",
            "A tiny class-conditional `diffusers.DiTTransformer2DModel` trained by "
            f"`dmgd.pretrain.pretrain(data=\"corners\")` (`dmgd pretrain --data corners`) on {spec.description}. "
            "Shipped as a testbed whose sub-modes are known: `model = \"corners\"` (or `--set model=corners`) "
            "loads it, and its real data (with no `data` given) is the corners' train split, so the corner "
            "shares of a distilled set (`dmgd.data.corners.corner_shares`) can be compared with the real ones.",
        ]
    return [
        "# Embedded default: digits DiT",
        "",
        "A tiny class-conditional `diffusers.DiTTransformer2DModel` trained by "
        f"`dmgd.pretrain.pretrain` (`dmgd pretrain`) on {spec.description}. Shipped so that `dmgd run` works "
        "offline with no model argument.",
    ]


def _model(f: dict[str, Any]) -> list[str]:
    cfg = ", ".join(f"{k}={v!r}" for k, v in f["dit_config"].items())
    return [
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
        "- Pixels: x / 8 - 1 in [-1, 1] (no VAE; latent = image, scale 1.0)"
        + ("; the canvas around a digit is 0 (-1)." if f.get("data") == "corners" else "."),
    ]


def _data(f: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Data",
        f"- {f['split']['source']}; split: `{f['split']['how']}` -> "
        f"{f['split']['train']} train / {f['split']['test']} test images. "
        "Trained on the train split only.",
    ]
    if "corners" in f["split"]:
        lines.append(f"- Corners: {f['split']['corners']}")
    return lines


def _training(f: dict[str, Any]) -> list[str]:
    return [
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


def _quality(q: dict[str, Any]) -> list[str]:
    return [
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


def _corners_quality(q: dict[str, Any]) -> list[str]:
    lines = [
        "",
        "## Quality check (`dmgd.pretrain.evaluate_corners`)",
        f"- At each CFG scale {q['cfgs']}: {q['samples_per_cfg']} samples ({q['per_class']} per class), "
        f"DDIM {q['ddim_steps']} steps, seed {q['seed']}; sampling took {q['sampling_s']} s in all "
        "(wall time on the machine above).",
        f"- Recognised: the digit in the quadrant with the most ink, classified by {q['classifier']} "
        f"(on the real corners test split: corner found {q['corner_detection_test_accuracy']}, "
        f"digit accuracy {q['classifier_test_accuracy']}).",
        "- Corner shares: per class, the share of samples in each corner, against the real train split's; "
        "MAD = mean absolute difference over classes and corners, in points; majority = the share of "
        f"samples in their class's most frequent real corner (real: {q['real_majority_corner_share']}).",
        "",
        "| CFG | recognised | corner-share MAD (points) | majority-corner share |",
        "|---|---|---|---|",
    ]
    for r in q["by_cfg"]:
        lines.append(f"| {r['cfg']} | **{r['recognised']} / {q['samples_per_cfg']}** | "
                     f"{r['corner_share_mad_points']} | {r['majority_corner_share']} |")
    lines += [
        "",
        "Per-class shares (corners top-left, top-right, bottom-left, bottom-right) are in "
        "training_facts.json (`quality.by_cfg[].per_class_corner_shares`, `quality.real_train_corner_shares`).",
        f"- Nearest-neighbour L2 distance (256-d pixels in [-1, 1]) of the CFG {q['distances_at_cfg']} samples, "
        f"median: to train {q['nn_train_median']}, to test {q['nn_test_median']} "
        f"(smallest to train: {q['nn_train_min']}). Reference, real test image to nearest train image: "
        f"median {q['real_test_to_train_median']}, smallest {q['real_test_to_train_min']}. "
        f"{q['closer_to_train_than_test']} of {q['samples_per_cfg']} samples are closer to a train image than "
        "to a test image (the train split is 4x larger, so some excess is expected without copying).",
    ]
    return lines


def _reproduce(f: dict[str, Any]) -> list[str]:
    data = f.get("data", "digits")
    flags = f" --data {data}" if data != "digits" else ""
    if f.get("batch_size", 128) != 128:
        flags += f" --batch-size {f['batch_size']}"
    if data != "digits" and f.get("torch_threads"):
        flags += f" --threads {f['torch_threads']}"
    return [
        "",
        "## Reproduce",
        "```",
        f"dmgd pretrain{flags} --out DIR --steps {f['steps']} --seed {f['seed']}",
        "```",
        "",
    ]
