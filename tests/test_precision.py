"""The `precision` setting: fp32 is today's run (and its identity); bf16 / fp16 autocast the
denoiser and the VAE, on the CPU too, close to fp32."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dmgd
from conftest import save_tiny_dit, write_image_folder
from dmgd.language.settings import Settings

ROOT = Path(__file__).resolve().parents[1]

# bf16 keeps 8 bits of mantissa (a relative rounding of 2^-9 ~ 0.2% a product); over 10
# guided steps of a random DiT the final latents stay within 3% (relative RMS; measured
# about 1%) of fp32's, and each class's OT distance to its real data within 1%.
BF16_LATENT_BOUND = 0.03
BF16_OT_BOUND = 0.01


def test_precision_is_opt_in_in_the_recorded_settings():
    assert "precision" not in Settings().to_dict()  # old runs keep their identity and resume
    assert Settings(precision="bf16").to_dict()["precision"] == "bf16"


def test_an_unknown_precision_is_refused():
    from dmgd.language.diagnostics import RecipeError

    with pytest.raises(RecipeError, match="setting `precision` has no choice `fp8`"):
        dmgd.compile(ROOT / "recipes" / "dmgd.dmgd", overrides=["precision=fp8"])


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("precision")
    model = save_tiny_dit(tmp / "model", num_classes=3, sample_size=8, channels=3, vae=True)
    data = write_image_folder(tmp / "train", 3, 12, 16)

    def run(precision: str):
        result = dmgd.run(ROOT / "recipes" / "dmgd.dmgd", tmp / precision, steps=10, ipc=2, model=str(model),
                          data=str(data), precision=precision, cache_dir=tmp / "cache")
        latents = torch.stack([load_file(f)["latent"] for f in sorted((tmp / precision).rglob("*.safetensors"))])
        return result, latents

    return run


def test_bf16_on_the_cpu_is_close_to_fp32(latent_run):
    fp32, ref = latent_run("fp32")
    bf16, low = latent_run("bf16")
    assert bf16.manifest["settings"]["precision"] == "bf16" and "precision" not in fp32.manifest["settings"]
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert not torch.equal(low, ref)  # autocast did run in bf16
    assert float((low - ref).norm() / ref.norm()) < BF16_LATENT_BOUND
    for name, distance in fp32.ot_distance.items():
        assert abs(bf16.ot_distance[name] - distance) <= BF16_OT_BOUND * distance


def test_bf16_vae_encode_is_close_and_cached_apart(tmp_path):
    from dmgd.data.images import scan_image_folder
    from dmgd.data.latent_cache import LatentCache
    from dmgd.sampling.backbones import load_backbone, with_precision

    model = save_tiny_dit(tmp_path / "model", num_classes=2, sample_size=8, channels=3, vae=True)
    real = scan_image_folder(write_image_folder(tmp_path / "train", 2, 4, 16), image_size=16)
    fp32 = LatentCache(load_backbone(model), real, tmp_path / "cache", workers=0)
    bf16 = LatentCache(with_precision(load_backbone(model), "bf16"), real, tmp_path / "cache", workers=0)
    assert fp32.path(0) != bf16.path(0)  # bf16 latents never stand in for fp32 ones
    a, b = fp32.class_latents(0), bf16.class_latents(0)
    assert b.dtype == torch.float32
    assert float((a - b).norm() / a.norm()) < 0.02  # one encoder pass: within 2%
