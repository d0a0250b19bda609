"""Writing an imported DiT as a diffusers folder that `model = "DIR"` loads.

    DIR/model_index.json                     DiTPipeline, id2label (ImageNet's names for 1000 classes)
    DIR/transformer/config.json              DiTTransformer2DModel, shapes from the checkpoint
    DIR/transformer/diffusion_pytorch_model.safetensors
    DIR/scheduler/scheduler_config.json      DiT's DDPM: 1000 linear betas 1e-4 .. 0.02
    DIR/vae/                                 a copy of the VAE's config and safetensors (optional)
    DIR/import.json                          where it came from and what was done

The folder is written beside DIR under a temporary name and renamed when whole.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from dmgd.checkpoints.convention import ORIGINAL_DIT, TIMESTEP_KEY
from dmgd.checkpoints.convert import FREQUENCY_SIZE, DiTShape
from dmgd.checkpoints.reading import CheckpointError

NO_VAE = "none"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"


def transformer_config(shape: DiTShape) -> dict[str, Any]:
    """DiTTransformer2DModel's arguments for `shape`, with DiT's LayerNorm eps (1e-6)."""
    return {
        "num_attention_heads": shape.heads,
        "attention_head_dim": shape.width // shape.heads,
        "in_channels": shape.in_channels,
        "out_channels": shape.out_channels,
        "num_layers": shape.depth,
        "sample_size": shape.input_size,
        "patch_size": shape.patch,
        "num_embeds_ada_norm": shape.num_classes,
        "activation_fn": "gelu-approximate",
        "attention_bias": True,
        "norm_type": "ada_norm_zero",
        "norm_elementwise_affine": False,
        "norm_eps": 1e-6,
    }


def check_against_diffusers(weights: Mapping[str, Any], shape: DiTShape, path: str) -> Any:
    """The (meta-device) diffusers model for `shape`; every tensor must match its parameter."""
    import torch
    from diffusers import DiTTransformer2DModel

    with torch.device("meta"):
        model = DiTTransformer2DModel(**transformer_config(shape))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(weights))
    if missing:
        raise CheckpointError(f"{path}: the converted weights lack {missing[0]} ({len(missing)} in all)")
    for key, want in expected.items():
        if tuple(weights[key].shape) != want:
            raise CheckpointError(f"{path}: {key} would be {list(weights[key].shape)} but a DiT of {shape.describe()} "
                                  f"has {list(want)}: the checkpoint's shapes do not fit one DiT")
    freq = int(weights["transformer_blocks.0.norm1.emb.timestep_embedder.linear_1.weight"].shape[1])
    if freq != FREQUENCY_SIZE:
        raise CheckpointError(f"{path}: its timestep embedding reads {freq} frequencies; DiT's reads {FREQUENCY_SIZE}")
    return model


def _id2label(num_classes: int) -> dict[str, str]:
    from dmgd.data.imagenet import NUM_CLASSES, imagenet_classes

    if num_classes == NUM_CLASSES:
        return imagenet_classes().id2label()
    return {str(i): str(i) for i in range(num_classes)}


def _scheduler_config(shape: DiTShape) -> dict[str, Any]:
    from dmgd.sampling.schedulers import DEFAULT_SCHEDULER_CONFIG

    variance = "learned_range" if shape.learned_sigma else "fixed_small"
    return {"_class_name": "DDPMScheduler", **DEFAULT_SCHEDULER_CONFIG, "variance_type": variance}


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_transformer(folder: Path, model: Any, weights: Mapping[str, Any]) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    model.save_config(folder)
    config = json.loads((folder / "config.json").read_text())
    config[TIMESTEP_KEY] = ORIGINAL_DIT
    _write_json(folder / "config.json", config)
    save_file(dict(weights), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})


def _model_index(shape: DiTShape, has_vae: bool) -> dict[str, Any]:
    import diffusers

    return {"_class_name": "DiTPipeline", "_diffusers_version": diffusers.__version__,
            "transformer": ["diffusers", "DiTTransformer2DModel"],
            "scheduler": ["diffusers", "DDPMScheduler"],
            "vae": ["diffusers", "AutoencoderKL"] if has_vae else [None, None],
            "id2label": _id2label(shape.num_classes)}


def check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckpointError(f"--out {out} already exists and is not an empty folder: choose a new folder")


def write_model_folder(out: str | Path, model: Any, weights: Mapping[str, Any], shape: DiTShape,
                       vae: Path | None, facts: Mapping[str, Any]) -> Path:
    """Write the folder (see the module doc) atomically: nothing at `out` unless it is whole."""
    out = Path(out).expanduser().absolute()
    check_out(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        _write_transformer(tmp / "transformer", model, weights)
        _write_json(tmp / "scheduler" / "scheduler_config.json", _scheduler_config(shape))
        if vae is not None:
            (tmp / "vae").mkdir()
            for name in ("config.json", WEIGHTS_FILE):
                shutil.copyfile(vae / name, tmp / "vae" / name)
        _write_json(tmp / "model_index.json", _model_index(shape, vae is not None))
        _write_json(tmp / "import.json", facts)
        if out.exists():
            out.rmdir()  # empty (checked): replaced by the whole folder
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
