"""Peak memory of a whole `dmgd run` is flat in the data's size; a second run skips the encode.

    python benchmarks/memory.py                      # N = 100 images a class, 8 classes, 64 px
    python benchmarks/memory.py --n 20 --classes 4   # quicker

Generates, in a temporary folder, a small random AutoencoderKL and a small DiT in diffusers'
layout and two ImageFolders of random 64 px RGB PNGs: N and 4N images a class. Each run is
`python -m dmgd run recipes/dmgd.dmgd` in a fresh subprocess with its own latent cache, and
its peak RSS is the kernel's (`os.wait4`: the process and the children it waited for, e.g.
the DataLoader's workers). Printed: the peak RSS of the N and 4N runs and their ratio (the
goal: <= 1.1), beside the peak RSS of reading the same folders whole as float32 (what a run
held before the latent cache: `load_image_folder`); then a second run on the 4N data (another
seed, so the k-means runs again but the latents come from the cache): its time and the
first's, their ratio, and the latent seconds each manifest records (`encode_seconds`: the
encode, or reading the cached latents).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "dmgd.dmgd"
GOAL = 1.1


def make_model(root: Path, classes: int, size: int) -> Path:
    """A random AutoencoderKL (3 -> 4 channels, /4) and DiT (learned sigma) in diffusers' layout."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel

    torch.manual_seed(0)
    AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 32),
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  layers_per_block=1, norm_num_groups=8, sample_size=size,
                  ).save_pretrained(root / "vae", safe_serialization=True)
    DiTTransformer2DModel(sample_size=size // 4, in_channels=4, out_channels=8, patch_size=2, num_layers=2,
                          num_attention_heads=2, attention_head_dim=16, num_embeds_ada_norm=classes,
                          ).save_pretrained(root / "transformer", safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=False).save_config(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    return root


def make_data(root: Path, classes: int, per_class: int, size: int) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(per_class)
    for c in range(classes):
        (root / str(c)).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(40 + 20 * c + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / str(c) / f"{i:05d}.png")
    return root


def measured(command: list[str], env: dict[str, str]) -> tuple[int, float]:
    """(peak RSS in bytes, seconds) of a command run in a fresh subprocess."""
    tic = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - tic
    if status != 0:
        sys.exit(f"{' '.join(command)} failed:\n{proc.stderr.read().decode()}")
    return usage.ru_maxrss * 1024, seconds


def run_command(out: Path, model: Path, data: Path, seed: int, steps: int) -> list[str]:
    return [sys.executable, "-m", "dmgd", "run", str(RECIPE), "--out", str(out), "--steps", str(steps),
            "--set", f"model={model}", "--set", f"data={data}", "--set", "ipc=2", "--set", f"seed={seed}"]


def eager_command(data: Path, size: int) -> list[str]:
    code = f"from dmgd.data.images import load_image_folder; load_image_folder({str(data)!r}, image_size={size})"
    return [sys.executable, "-c", code]


def encode_seconds(out: Path) -> float:
    manifest = json.loads((out / "manifest.json").read_text())
    return max(float(t.get("encode_seconds", 0.0)) for t in manifest["targets"].values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100, help="images a class of the small data (N)")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = make_model(tmp / "model", args.classes, args.size)
        sizes = {"N": args.n, "4N": 4 * args.n}
        data = {name: make_data(tmp / f"data-{name}", args.classes, n, args.size) for name, n in sizes.items()}
        base_env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                    "NO_COLOR": "1"}
        rows = {}
        for name in sizes:
            env = {**base_env, "DMGD_CACHE_DIR": str(tmp / f"cache-{name}")}
            rows[name] = (*measured(run_command(tmp / f"out-{name}", model, data[name], 0, args.steps), env),
                          measured(eager_command(data[name], args.size), env)[0])
        again = measured(run_command(tmp / "out-again", model, data["4N"], 1, args.steps),
                         {**base_env, "DMGD_CACHE_DIR": str(tmp / "cache-4N")})
        report(args, sizes, rows, again, encode_seconds(tmp / "out-4N"), encode_seconds(tmp / "out-again"))
        ratio = rows["4N"][0] / rows["N"][0]
    return 0 if ratio <= GOAL else 1


def report(args, sizes, rows, again, first_encode: float, again_encode: float) -> None:
    mib = 1 / 2**20
    print(f"{args.classes} classes of {args.size} px RGB PNGs, recipes/dmgd.dmgd at IPC 2, {args.steps} steps, "
          "each run a fresh subprocess")
    print(f"{'data':6s} {'images':>7s} {'run peak RSS':>14s} {'run s':>7s} {'whole read as float32':>22s}")
    for name, n in sizes.items():
        peak, seconds, eager = rows[name]
        print(f"{name:6s} {n * args.classes:7d} {peak * mib:11.1f} MiB {seconds:7.1f} {eager * mib:18.1f} MiB")
    ratio = rows["4N"][0] / rows["N"][0]
    eager_ratio = rows["4N"][2] / rows["N"][2]
    print(f"peak RSS 4N / N: {ratio:.3f} (goal <= {GOAL}); reading the data whole: {eager_ratio:.3f}")
    print(f"second run on the 4N data (seed 1, latents from the cache): {again[1]:.1f} s vs {rows['4N'][1]:.1f} s "
          f"first = {again[1] / rows['4N'][1]:.3f}; latent seconds (the encode, or reading the cache) "
          f"{again_encode:.2f} vs {first_encode:.2f}; "
          f"peak RSS {again[0] * mib:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
