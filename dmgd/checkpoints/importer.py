"""`dmgd import-dit`: an original DiT or Minimax checkpoint -> a diffusers folder dmgd runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from attrs import frozen

from dmgd.checkpoints.convert import (DiTShape, check_positions, fold_difffit, infer_shape, to_diffusers)
from dmgd.checkpoints.reading import CheckpointError, choose_weights, load_checkpoint
from dmgd.checkpoints.writing import NO_VAE, WEIGHTS_FILE, check_against_diffusers, check_out, write_model_folder

# DiT's sample.py decodes with sd-vae-ft-mse unless told `--vae ema`
DEFAULT_VAE = "stabilityai/sd-vae-ft-mse"
VAE_HINT = ("download it on a machine with internet access, e.g. `hf download stabilityai/sd-vae-ft-mse "
            "--local-dir sd-vae-ft-mse`, and pass --vae sd-vae-ft-mse (or --vae none for a pixel-space DiT)")


@frozen
class ImportResult:
    out: Path
    shape: DiTShape
    source: str  # which weights: "bare state dict", "training checkpoint, 'ema' weights"
    difffit_blocks: tuple[int, ...]  # the blocks whose DiffFit scales were folded in
    vae: str | None


def _vae_folder(vae: str) -> Path:
    """The folder holding the VAE's config.json and safetensors: a local folder (or its vae/),
    or a hub id already in the local Hugging Face cache (never downloaded)."""
    local = Path(vae).expanduser()
    if not local.exists():
        try:
            from huggingface_hub import snapshot_download

            local = Path(snapshot_download(repo_id=vae, local_files_only=True))
        except Exception as error:  # not cached, or not a hub id
            raise CheckpointError(f"--vae {vae!r} is neither a folder nor in the local Hugging Face cache "
                                  f"({type(error).__name__}): {VAE_HINT}") from None
    folder = local / "vae" if (local / "vae" / "config.json").is_file() else local
    if not (folder / "config.json").is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"--vae {vae!r}: {folder} has no config.json and {WEIGHTS_FILE} (a diffusers "
                              f"AutoencoderKL saved with safetensors): {VAE_HINT}")
    return folder


def _check_vae(folder: Path, shape: DiTShape) -> None:
    config = json.loads((folder / "config.json").read_text())
    if config.get("_class_name") not in (None, "AutoencoderKL"):
        raise CheckpointError(f"--vae {folder} is a {config.get('_class_name')}, not an AutoencoderKL")
    channels = config.get("latent_channels")
    if channels != shape.in_channels:
        raise CheckpointError(f"--vae {folder} has {channels} latent channels but the DiT denoises "
                              f"{shape.in_channels}: give the VAE the DiT was trained with")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _facts(checkpoint: Path, source: str, shape: DiTShape, folded: tuple[int, ...], vae: str | None,
           heads_given: bool) -> dict[str, Any]:
    from dmgd.data.manifest import package_versions

    return {"format": "dmgd-import-v1", "checkpoint": str(checkpoint.absolute()),
            "checkpoint_sha256": _sha256(checkpoint), "weights": source,
            "architecture": {"depth": shape.depth, "width": shape.width, "heads": shape.heads,
                             "heads_from": "--heads" if heads_given else "DiT's named sizes",
                             "patch": shape.patch, "in_channels": shape.in_channels,
                             "out_channels": shape.out_channels, "input_size": shape.input_size,
                             "num_classes": shape.num_classes, "learned_sigma": shape.learned_sigma},
            "difffit_blocks_folded": list(folded), "vae": vae,
            "timestep_frequencies": "the original DiT's (exp(-ln(10000) k / 128)), set by dmgd's loader",
            "versions": package_versions()}


def import_dit(checkpoint: str | Path, out: str | Path, *, weights: str = "ema", vae: str | None = DEFAULT_VAE,
               heads: int | None = None, stage: Callable[[str], None] = lambda _: None) -> ImportResult:
    """Read `checkpoint` safely, fold DiffFit scales, infer the architecture, and write a
    diffusers folder at `out` (`dmgd.checkpoints.writing`). `vae`: a folder or a cached hub
    id whose AutoencoderKL is copied in; None or "none": no VAE (a pixel-space DiT).
    `stage` is told each stage's name (for a progress display). Raises CheckpointError."""
    checkpoint = Path(checkpoint).expanduser()
    check_out(Path(out).expanduser())
    vae = None if vae in (None, NO_VAE) else str(vae)
    vae_folder = _vae_folder(vae) if vae is not None else None
    stage("reading the checkpoint")
    chosen = choose_weights(load_checkpoint(checkpoint), checkpoint, weights)
    path = chosen.path
    stage("converting the weights")
    shape = infer_shape(chosen.tensors, path, heads)
    check_positions(chosen.tensors, shape, path)
    plain, folded = fold_difffit(chosen.tensors, shape, path)
    converted = to_diffusers(plain, shape, path)
    model = check_against_diffusers(converted, shape, path)
    if vae_folder is not None:
        _check_vae(vae_folder, shape)
    stage("writing the model folder")
    written = write_model_folder(out, model, converted, shape, vae_folder,
                                 _facts(checkpoint, chosen.source, shape, folded, vae, heads is not None))
    return ImportResult(out=written, shape=shape, source=chosen.source, difffit_blocks=folded, vae=vae)
