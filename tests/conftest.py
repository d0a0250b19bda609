"""Shared fixtures: tiny real diffusers models saved in diffusers' layout, real image folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def save_tiny_dit(root: Path, *, num_classes: int = 10, sample_size: int = 8, channels: int = 1,
                  vae: bool = False, seed: int = 0) -> Path:
    """A random-weight class-conditional DiT (and optionally a tiny AutoencoderKL) in
    diffusers' directory layout: transformer/, vae/, scheduler/, model_index.json."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel

    torch.manual_seed(seed)
    latent_channels = 4 if vae else channels
    DiTTransformer2DModel(
        sample_size=sample_size, in_channels=latent_channels, out_channels=latent_channels, patch_size=2,
        num_layers=2, num_attention_heads=2, attention_head_dim=8, num_embeds_ada_norm=num_classes,
    ).save_pretrained(root / "transformer", safe_serialization=True)
    if vae:
        AutoencoderKL(
            in_channels=channels, out_channels=channels, latent_channels=4,
            down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
            up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
            block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=8, sample_size=sample_size * 2,
        ).save_pretrained(root / "vae", safe_serialization=True)
    DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                  clip_sample=False).save_config(root / "scheduler")
    (root / "model_index.json").write_text(json.dumps({"_class_name": "DiTPipeline"}))
    return root


def write_image_folder(root: Path, classes: int, per_class: int, size: int, mode: str = "RGB",
                       seed: int = 0) -> Path:
    """Random real PNGs in ImageFolder layout: class c's images are brighter for larger c."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            base = 40 + 180 * c / max(1, classes - 1)
            shape = (size, size, 3) if mode == "RGB" else (size, size)
            pixels = np.clip(base + rng.normal(0, 30, shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels, mode=None).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def tiny_pixel_model(tmp_path_factory) -> Path:
    """A tiny random DiT on the digits' shape (8x8, 1 channel, 10 classes)."""
    return save_tiny_dit(tmp_path_factory.mktemp("tiny_pixel_dit"))


@pytest.fixture(scope="session")
def tiny_latent_model(tmp_path_factory) -> Path:
    """A tiny random DiT with a tiny VAE: 16x16 RGB images, 8x8x4 latents, 3 classes."""
    return save_tiny_dit(tmp_path_factory.mktemp("tiny_latent_dit"), num_classes=3, channels=3, vae=True)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Each test gets its own target cache, never the user's."""
    monkeypatch.setenv("DMGD_CACHE_DIR", str(tmp_path / "dmgd-cache"))
