"""GPU benchmark: a DiT-XL/2-sized DiT and an SD-layout VAE (random weights) at 256 px.

    python benchmarks/gpu.py                      # the device's (CUDA when present): fp32 and bf16
    python benchmarks/gpu.py --json figures.json  # also write the figures
    python benchmarks/gpu.py --smoke              # a tiny size on the CPU (the test suite runs it)

The model is diffusers' DiTTransformer2DModel at DiT-XL/2's size (28 layers, width 1152 =
16 heads x 72, patch 2, learned sigma, 1000 classes, 32x32x4 latents) with random weights
whose adaLN modulations are non-zero (a zero-initialised adaLN, as DiT's own init, would make
every block the identity and the work unreal), and an AutoencoderKL in Stable Diffusion's
layout (128-256-512-512, 2 layers a block, scaling 0.18215), both saved in diffusers' folder
layout and loaded as any model is. The data: 10 classes of random 256 px RGB PNGs (12 a
class: K = 10 needs 10). Each of recipes/baseline.dmgd and recipes/dmgd.dmgd runs at IPC 2 in
fp32 and bf16 through `dmgd.run` (the real pipeline: latent cache, k-means, greedy matching,
the blocks chosen from free memory). Printed per run: sampling images/s (the manifest's
sampling seconds; the encode and k-means are apart), peak GPU memory, the block size; the
dmgd / baseline ratio; and the projected time of Woof at IPC 50 (10 classes x 50 images at
dmgd.dmgd's images/s) beside the paper's 0.26 h on one RTX 4090.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ("baseline.dmgd", "dmgd.dmgd")
PAPER_WOOF_IPC50_HOURS = 0.26
WOOF_IMAGES = 10 * 50

SIZES = {
    "xl": {"layers": 28, "heads": 16, "head_dim": 72, "classes": 1000, "image": 256,
           "vae": (128, 256, 512, 512), "vae_layers": 2, "groups": 32, "data_classes": 10, "per_class": 12},
    "smoke": {"layers": 2, "heads": 2, "head_dim": 8, "classes": 1000, "image": 16,
              "vae": (8, 16), "vae_layers": 1, "groups": 4, "data_classes": 2, "per_class": 10},
}


def make_model(root: Path, size: dict) -> Path:
    """The random DiT (non-zero adaLN) and VAE, saved in diffusers' layout."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel

    torch.manual_seed(0)
    blocks = len(size["vae"])
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=size["vae"],
                  down_block_types=("DownEncoderBlock2D",) * blocks, up_block_types=("UpDecoderBlock2D",) * blocks,
                  layers_per_block=size["vae_layers"], norm_num_groups=size["groups"], sample_size=size["image"],
                  scaling_factor=0.18215).save_pretrained(root / "vae", safe_serialization=True)
    dit = DiTTransformer2DModel(sample_size=size["image"] // 2 ** (blocks - 1), in_channels=4, out_channels=8,
                                patch_size=2, num_layers=size["layers"], num_attention_heads=size["heads"],
                                attention_head_dim=size["head_dim"], num_embeds_ada_norm=size["classes"])
    with torch.no_grad():
        for name, module in dit.named_modules():
            if name.endswith(("norm1.linear", "proj_out_1")):  # the adaLN modulations
                torch.nn.init.normal_(module.weight, std=0.02)
                torch.nn.init.normal_(module.bias, std=0.02)
    dit.save_pretrained(root / "transformer", safe_serialization=True)
    del dit
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False).save_config(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    return root


def make_data(root: Path, size: dict) -> Path:
    """Random RGB PNGs, one folder a class named by its model class id (0, 1, ...)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    px = size["image"]
    for c in range(size["data_classes"]):
        (root / str(c)).mkdir(parents=True)
        for i in range(size["per_class"]):
            pixels = np.clip(60 + 12 * c + rng.normal(0, 50, (px, px, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / str(c) / f"{i:03d}.png")
    return root


def one_run(recipe: str, precision: str, model: Path, data: Path, work: Path, device: str,
            steps: int | None) -> dict:
    """One `dmgd.run` at IPC 2: images/s, peak GPU memory, block size."""
    import torch

    import dmgd

    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    tic = time.perf_counter()
    result = dmgd.run(ROOT / "recipes" / recipe, work / f"{precision}-{recipe}", steps=steps, device=device,
                      cache_dir=work / "cache", ipc=2, model=str(model), data=str(data), precision=precision)
    wall = time.perf_counter() - tic
    timings = result.manifest["timings"]
    images = sum(len(paths) for paths in result.images.values())
    return {"recipe": recipe, "precision": precision, "images": images,
            "images_per_second": images / timings["sampling_seconds"], "wall_seconds": wall,
            "targets_seconds": timings["targets_seconds"],
            "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
            "block_size": result.manifest["identity"]["block_size"]}


def measure(size_name: str, device: str, steps: int | None, precisions: tuple[str, ...]) -> dict:
    import torch

    size = SIZES[size_name]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, data = make_model(work / "model", size), make_data(work / "data", size)
        runs = [one_run(recipe, p, model, data, work, device, steps) for p in precisions for recipe in RECIPES]
    name = torch.cuda.get_device_name() if device.startswith("cuda") else "CPU"
    return {"size": size_name, "device": device, "device_name": name, "steps": steps or 50, "runs": runs}


def summary(figures: dict) -> list[str]:
    lines = [f"{figures['size']} model on {figures['device_name']} ({figures['device']}), "
             f"{figures['steps']} steps, IPC 2"]
    lines.append(f"{'recipe':16s} {'precision':9s} {'images/s':>9s} {'peak GPU MiB':>13s} {'block':>6s} {'wall s':>8s}")
    by = {(r["recipe"], r["precision"]): r for r in figures["runs"]}
    for r in figures["runs"]:
        peak = "-" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}"
        lines.append(f"{r['recipe']:16s} {r['precision']:9s} {r['images_per_second']:9.3f} {peak:>13s} "
                     f"{r['block_size']:6d} {r['wall_seconds']:8.1f}")
    for precision in dict.fromkeys(r["precision"] for r in figures["runs"]):
        base, full = by[("baseline.dmgd", precision)], by[("dmgd.dmgd", precision)]
        ratio = full["images_per_second"] / base["images_per_second"]
        hours = WOOF_IMAGES / full["images_per_second"] / 3600 * 50 / figures["steps"]
        figures.setdefault("ratios", {})[precision] = ratio
        figures.setdefault("woof_ipc50_hours", {})[precision] = hours
        lines.append(f"{precision}: dmgd / baseline images/s = {ratio:.3f}; projected Woof IPC 50 (500 images, "
                     f"50 steps) {hours:.3f} h (paper: {PAPER_WOOF_IPC50_HOURS} h on one RTX 4090)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a tiny model on the CPU, 3 steps (for the tests)")
    parser.add_argument("--device", default=None, help="default: CUDA when present (the smoke: cpu)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the recipes' 50)")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    from dmgd.device import pick_device

    device = "cpu" if args.smoke and args.device is None else pick_device(args.device)
    steps = args.steps or (3 if args.smoke else None)
    figures = measure("smoke" if args.smoke else "xl", device, steps, tuple(args.precision))
    print("\n".join(summary(figures)), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
