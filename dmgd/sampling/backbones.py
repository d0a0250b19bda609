"""Frozen class-conditional DiT backbones: an embedded model or a local diffusers one.

`load_backbone(None)` loads the embedded default shipped in `dmgd/assets/digits_dit/` (a
tiny DiT on sklearn's digits, pixel space, no VAE; see its MODEL_CARD.md);
`load_backbone("corners")` the embedded corners model in `dmgd/assets/corners_dit/` (the
digits at the corners of a 16x16 canvas, `dmgd.data.corners`), and "digits" the digits
model (`EMBEDDED_MODELS`; a directory of that name, if one exists, is loaded instead).
An embedded model's `Backbone.default_data` names its real data ("digits" / "corners"):
what a run uses when it is given no `data`.
`load_backbone(DIR)` loads a local directory in diffusers' layout:

    DIR/transformer/config.json + diffusion_pytorch_model.safetensors   (required)
    DIR/vae/config.json + diffusion_pytorch_model.safetensors           (optional: latent model)
    DIR/scheduler/scheduler_config.json                                  (optional)
    DIR/model_index.json                                                 (optional; "id2label")

(a directory that is itself the transformer folder also works). `load_backbone("org/name")`
loads a hub id ONLY if it is already in the local Hugging Face cache; nothing is ever
downloaded. Weights are read through safetensors only: pickle checkpoints (.bin, .pt,
.ckpt, .pth) are refused.

Label tables: diffusers' DiT keeps one `LabelEmbedding` per block with
`num_embeds_ada_norm + 1` rows when its dropout is > 0 (it is 0.1 by default, so loaded
models have it). Row `num_classes` is the null label for classifier-free guidance:
`Backbone.null_class`. `load_backbone` checks every table has that row, and sets every
block's `dropout_prob = 0` so that diffusers never drops labels by itself even if someone
switches the model to training mode; the model is in eval mode with gradients off.
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import evolve, field, frozen

from dmgd.errors import DmgdError
from dmgd.sampling.schedulers import DEFAULT_SCHEDULER_CONFIG

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from diffusers import AutoencoderKL, DiTTransformer2DModel

EMBEDDED_MODEL_ID = "embedded:digits_dit"
# name -> (folder under dmgd/assets, its default real data: a `dmgd.data.embedded` name)
EMBEDDED_MODELS: dict[str, tuple[str, str]] = {
    "digits": ("digits_dit", "digits"),
    "corners": ("corners_dit", "corners"),
}
DEFAULT_MODEL = "digits"

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DIT_CLASS_NAMES = ("DiTTransformer2DModel", "Transformer2DModel")

DOWNLOAD_HINT = (
    "To use a pretrained DiT, download it (on a machine with internet access) with\n"
    "    hf download facebook/DiT-XL-2-256 "
    "--include 'transformer/*' 'vae/*' 'scheduler/*' 'model_index.json' "
    "--local-dir DiT-XL-2-256\n"
    "and pass the folder with `--set model=DiT-XL-2-256` (or `model = \"DiT-XL-2-256\"` in "
    "the recipe). A hub id such as facebook/DiT-XL-2-256 also works once it is in the local "
    "Hugging Face cache. Without a model argument dmgd uses its embedded digits model."
)


class BackboneError(DmgdError):
    """A model that cannot be used; the message says what is wrong and what to do."""


def _load_failure(e: Exception) -> str:
    """A loading error in a few lines: torch lists every mismatched tensor, one a line."""
    text = str(e)
    mismatches = [line.strip() for line in text.splitlines() if line.strip().startswith("size mismatch for")]
    if mismatches:
        more = f" (and {len(mismatches) - 1} more)" if len(mismatches) > 1 else ""
        return (f"its weights do not fit its config.json: {mismatches[0].removeprefix('size mismatch for ').rstrip('.')}"
                f"{more}. The config and the .safetensors file come from different models")
    return text


@frozen(eq=False)
class Backbone:
    """A frozen class-conditional DiT, its optional VAE and its noise schedule."""

    transformer: DiTTransformer2DModel = field(repr=False)
    vae: AutoencoderKL | None = field(repr=False)
    scheduler_config: dict[str, Any] = field(repr=False)
    num_classes: int
    null_class: int  # = num_classes: the CFG null label (last row of every label table)
    latent_shape: tuple[int, int, int]  # (C, H, W) of what the transformer denoises
    vae_scale: float  # vae.config.scaling_factor; 1.0 for pixel models
    model_id: str
    weights_sha256: str
    learned_sigma: bool  # out_channels == 2 * in_channels
    class_names: tuple[str, ...] | None = None
    default_data: str | None = None  # an embedded model's real data ("digits" / "corners"); None: no default
    vae_sha256: str | None = None  # the VAE's own weights (keys the latent cache); None: a pixel model
    precision: str = "fp32"  # "bf16" / "fp16": the transformer and the VAE run under autocast


    @property
    def is_pixel(self) -> bool:
        return self.vae is None


def default_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """Where an embedded DiT ("digits", the default, or "corners") lives in the package."""
    return Path(str(files("dmgd") / "assets" / EMBEDDED_MODELS[name][0]))


def embedded_model_id(name: str) -> str:
    """The model id an embedded model is recorded under: "embedded:digits_dit", ..."""
    return f"embedded:{EMBEDDED_MODELS[name][0]}"


def embedded_model_name(model_id: str) -> str | None:
    """"digits" / "corners" for an embedded model's id (as recorded in manifests), else None."""
    for name in EMBEDDED_MODELS:
        if model_id == embedded_model_id(name):
            return name
    return None


def _embedded_name(model: str | None) -> str | None:
    """The embedded model a model argument names (None: the default), or None for others."""
    if model is None:
        return DEFAULT_MODEL
    if model in EMBEDDED_MODELS and not Path(model).expanduser().is_dir():
        return model
    return embedded_model_name(model)


def weights_sha256(directory: str | Path) -> str:
    """sha256 over the contents of the weight files under `directory`.

    The files are every `*.safetensors` under `directory/transformer` and
    `directory/vae` (or directly under `directory` when it has no `transformer/`), in
    sorted relative-path order; only file contents (with their lengths) are hashed, so
    the same weights give the same hash whatever the folder is called.
    """
    directory = Path(directory)
    roots = [directory / s for s in ("transformer", "vae") if (directory / s).is_dir()]
    if not (directory / "transformer").is_dir():
        roots = [directory]
    paths = sorted(
        (f for r in roots for f in r.rglob("*.safetensors")),
        key=lambda f: f.relative_to(directory).as_posix(),
    )
    h = hashlib.sha256()
    for f in paths:
        h.update(f.stat().st_size.to_bytes(8, "little"))
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


# --------------------------------------------------------------------------- resolving


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def _resolve(model: str | None) -> tuple[Path, str]:
    """(model directory, model_id) for a model argument; raises BackboneError."""
    name = _embedded_name(model)
    if name is not None:
        d = default_model_dir(name)
        if not (d / "transformer" / "config.json").is_file():
            raise BackboneError(
                f"The embedded {name} model is missing from this installation ({d}). "
                f"Reinstall dmgd, or train it with `dmgd pretrain --data {name} --out DIR` and pass "
                "`--set model=DIR`.\n" + DOWNLOAD_HINT
            )
        return d, embedded_model_id(name)
    s = str(model)
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            raise BackboneError(
                f"Model {s!r} is a file, not a directory. Pass the folder in diffusers' "
                "layout (transformer/config.json + "
                "transformer/diffusion_pytorch_model.safetensors, optional vae/ and "
                "scheduler/).\n" + DOWNLOAD_HINT
            )
        return p, s
    if _HUB_ID.match(s) and not s.startswith((".", "~")):
        try:
            from huggingface_hub import snapshot_download

            snap = snapshot_download(repo_id=s, local_files_only=True)
        except Exception as e:  # not cached (LocalEntryNotFoundError) or a bad id
            raise BackboneError(
                f"Model {s!r} is neither a local directory nor in the local Hugging Face "
                f"cache (dmgd never downloads; {type(e).__name__}).\n" + DOWNLOAD_HINT
            ) from None
        return Path(snap), s
    raise BackboneError(f"Model directory {s!r} does not exist.\n" + DOWNLOAD_HINT)


def _check_weights(d: Path, what: str, model_id: str) -> None:
    """Require safetensors weights in `d`; refuse pickle-only folders."""
    if any(d.glob("*.safetensors")):
        return
    pickles = sorted(f.name for f in d.iterdir() if f.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise BackboneError(
            f"The {what} of model {model_id!r} ({d}) has only pickle weights "
            f"({', '.join(pickles)}). dmgd loads weights through safetensors only, because "
            "pickle files can run arbitrary code. Convert them, e.g. "
            f"`{'DiTTransformer2DModel' if what == 'transformer' else 'AutoencoderKL'}"
            ".from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)` on a "
            "trusted copy, or download the .safetensors files.\n" + DOWNLOAD_HINT
        )
    raise BackboneError(
        f"The {what} of model {model_id!r} ({d}) has no weights: expected "
        "diffusion_pytorch_model.safetensors next to config.json.\n" + DOWNLOAD_HINT
    )


def _read_json(path: Path, model_id: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise BackboneError(f"Model {model_id!r}: cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise BackboneError(f"Model {model_id!r}: {path} is not a JSON object.")
    return data


def _check_dit_config(cfg: dict[str, Any], path: Path, model_id: str) -> None:
    cls = cfg.get("_class_name")
    problems = []
    if cls is not None and cls not in DIT_CLASS_NAMES:
        problems.append(f"its class is {cls!r}, not DiTTransformer2DModel")
    if cfg.get("num_embeds_ada_norm") in (None, 0):
        problems.append("it has no class label table (num_embeds_ada_norm is missing)")
    if cfg.get("norm_type", "ada_norm_zero") != "ada_norm_zero":
        problems.append(f"its norm_type is {cfg.get('norm_type')!r}, not 'ada_norm_zero'")
    if cfg.get("patch_size") is None or cfg.get("sample_size") is None:
        problems.append("it has no patch_size/sample_size (not a patch transformer)")
    if problems:
        raise BackboneError(
            f"Model {model_id!r} is not a class-conditional DiT ({path}): "
            + "; ".join(problems)
            + ". dmgd guides a class-conditional diffusers DiTTransformer2DModel "
            "(adaLN-zero with a class label table), such as facebook/DiT-XL-2-256 or the "
            "embedded digits model.\n" + DOWNLOAD_HINT
        )


def _class_names(root: Path, tcfg: dict[str, Any], num_classes: int) -> tuple[str, ...] | None:
    candidates = []
    if (root / "model_index.json").is_file():
        try:
            candidates.append(json.loads((root / "model_index.json").read_text()).get("id2label"))
        except (OSError, ValueError, AttributeError):
            pass
    candidates.append(tcfg.get("id2label"))
    for id2label in candidates:
        if not isinstance(id2label, dict):
            continue
        try:
            names = {int(k): str(v) for k, v in id2label.items()}
        except (TypeError, ValueError):
            continue
        if set(names) == set(range(num_classes)):
            return tuple(names[i] for i in range(num_classes))
    return None


# --------------------------------------------------------------------------- loading


def label_embedders(transformer: Any) -> list[Any]:
    """Every block's class-label embedder (`norm1.emb.class_embedder`), in block order.

    Raises TypeError naming the first block without one (not a class-conditional DiT)."""
    found = []
    for i, block in enumerate(transformer.transformer_blocks):
        embedder = getattr(getattr(getattr(block, "norm1", None), "emb", None), "class_embedder", None)
        if embedder is None:
            raise TypeError(f"block {i} has no class label table; it is not a class-conditional DiT")
        found.append(embedder)
    if not found:
        raise TypeError("the transformer has no blocks with class label tables; it is not a class-conditional DiT")
    return found


def _transformer_dir(root: Path, model_id: str) -> tuple[Path, dict[str, Any]]:
    """The transformer's folder and config, checked to be a class-conditional DiT's."""
    tdir = root / "transformer" if (root / "transformer").is_dir() else root
    if not (tdir / "config.json").is_file():
        raise BackboneError(
            f"Model {model_id!r} ({root}) has no transformer/config.json: it is not a "
            "diffusers model folder.\n" + DOWNLOAD_HINT
        )
    tcfg = _read_json(tdir / "config.json", model_id)
    _check_dit_config(tcfg, tdir / "config.json", model_id)
    _check_weights(tdir, "transformer", model_id)
    return tdir, tcfg


def _load_part(class_name: str, directory: Path, what: str, model_id: str, dtype: Any) -> Any:
    """A diffusers model (safetensors, local files only); BackboneError saying what failed."""
    import diffusers

    try:
        return getattr(diffusers, class_name).from_pretrained(
            directory, use_safetensors=True, local_files_only=True, torch_dtype=dtype
        )
    except Exception as e:
        raise BackboneError(f"Model {model_id!r}: loading {what} from {directory} failed: {_load_failure(e)}") from e


def _load_vae(vdir: Path, model_id: str, dtype: Any, device: Any) -> tuple[Any, float]:
    """(the frozen VAE in `vdir`, its scaling factor), or (None, 1.0) for a pixel model."""
    if not vdir.is_dir():
        return None, 1.0
    if not (vdir / "config.json").is_file():
        raise BackboneError(f"Model {model_id!r}: {vdir} has no config.json.")
    _check_weights(vdir, "vae", model_id)
    vae = _load_part("AutoencoderKL", vdir, "the VAE", model_id, dtype)
    vae.eval().requires_grad_(False).to(device)
    return vae, float(getattr(vae.config, "scaling_factor", 0.18215) or 0.18215)


def _check_label_tables(transformer: Any, num_classes: int, model_id: str) -> None:
    """Every block has a label table of num_classes + 1 rows; turns label dropout off."""
    try:
        embedders = label_embedders(transformer)
    except TypeError as e:
        raise BackboneError(f"Model {model_id!r}: {e}.") from None
    for i, emb in enumerate(embedders):
        rows = emb.embedding_table.num_embeddings
        if rows != num_classes + 1:
            raise BackboneError(
                f"Model {model_id!r}: block {i}'s label table has {rows} rows, expected "
                f"{num_classes + 1} ({num_classes} classes + the null label for "
                "classifier-free guidance)."
            )
        emb.dropout_prob = 0.0


def load_backbone(model: str | Path | None = None, device: Any = "cpu",
                  dtype: torch.dtype | None = None) -> Backbone:
    """Load a frozen class-conditional DiT (None: the embedded digits model).

    `model` is None, "digits" or "corners" (the embedded models), a local directory in
    diffusers' layout, or a hub id already in the local Hugging Face cache. Raises `BackboneError` with a user-facing message when the
    model is missing, not a class-conditional DiT, or has only pickle weights.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    root, model_id = _resolve(None if model is None else str(model))
    tdir, tcfg = _transformer_dir(root, model_id)

    import logging

    from diffusers.utils import logging as dlogging

    verbosity = dlogging.get_verbosity()
    dlogging.set_verbosity(logging.ERROR)  # e.g. "Transformer2DModel" class-name notes
    try:
        transformer = _load_part("DiTTransformer2DModel", tdir, "the transformer", model_id, dtype)
        vae, vae_scale = _load_vae(root / "vae", model_id, dtype, device) if tdir != root else (None, 1.0)
    finally:
        dlogging.set_verbosity(verbosity)

    from dmgd.checkpoints.convention import apply_timestep_convention

    apply_timestep_convention(transformer, tcfg)  # a folder `dmgd import-dit` wrote: the original DiT's
    transformer.eval().requires_grad_(False).to(device)
    num_classes = int(transformer.config.num_embeds_ada_norm)
    _check_label_tables(transformer, num_classes, model_id)

    sdir = root / "scheduler" / "scheduler_config.json"
    scheduler_config = (
        _read_json(sdir, model_id) if tdir != root and sdir.is_file()
        else {"_class_name": "DDPMScheduler", **DEFAULT_SCHEDULER_CONFIG}
    )
    cfg = transformer.config
    in_ch = int(cfg.in_channels)
    if vae is not None and int(getattr(vae.config, "latent_channels", in_ch)) != in_ch:
        raise BackboneError(
            f"Model {model_id!r}: the VAE has {vae.config.latent_channels} latent channels "
            f"but the transformer takes {in_ch}."
        )
    return Backbone(
        transformer=transformer,
        vae=vae,
        scheduler_config=scheduler_config,
        num_classes=num_classes,
        null_class=num_classes,
        latent_shape=(in_ch, int(cfg.sample_size), int(cfg.sample_size)),
        vae_scale=vae_scale,
        model_id=model_id,
        weights_sha256=weights_sha256(root if tdir != root else tdir),
        learned_sigma=int(transformer.out_channels) == 2 * in_ch,
        class_names=_class_names(root, tcfg, num_classes),
        default_data=_default_data(model_id),
        vae_sha256=weights_sha256(root / "vae") if vae is not None else None,
    )


PRECISIONS = ("fp32", "bf16", "fp16")


def with_precision(backbone: Backbone, precision: str) -> Backbone:
    """The backbone with its transformer's forward and its VAE's encode and decode under
    torch.autocast in `precision` ("fp32": as it is). Weights stay float32 and every
    caller casts what it reads back to float32, so the guidance maths and Sinkhorn stay
    float32; only the matrix products and convolutions of the networks run in 16 bits.
    Mutates the backbone's modules: call it once on a freshly loaded backbone."""
    import torch

    if precision not in PRECISIONS:
        raise BackboneError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "fp32":
        return backbone
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    device_type = next(backbone.transformer.parameters()).device.type
    backbone.transformer.forward = _autocast(backbone.transformer.forward, device_type, dtype)
    if backbone.vae is not None:
        backbone.vae.encode = _autocast(backbone.vae.encode, device_type, dtype)
        backbone.vae.decode = _autocast(backbone.vae.decode, device_type, dtype)
    return evolve(backbone, precision=precision)


def _autocast(fn: Any, device_type: str, dtype: Any) -> Any:
    import functools

    import torch

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with torch.autocast(device_type=device_type, dtype=dtype):
            return fn(*args, **kwargs)

    return run


def _default_data(model_id: str) -> str | None:
    name = embedded_model_name(model_id)
    return EMBEDDED_MODELS[name][1] if name is not None else None


def probe_row_bytes(backbone: Backbone, rows: int = 4) -> int:
    """Peak GPU memory a batch row of the transformer takes: one forward with gradients to
    its input and one backward, on `rows` random rows, under the backbone's precision."""
    import torch

    transformer = backbone.transformer
    device = next(transformer.parameters()).device
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    z = torch.randn(rows, *backbone.latent_shape, device=device, requires_grad=True)
    t = torch.full((rows,), 500, device=device, dtype=torch.long)
    y = torch.zeros(rows, device=device, dtype=torch.long)
    with torch.enable_grad():
        transformer(z, timestep=t, class_labels=y).sample.float().square().mean().backward()
    peak = torch.cuda.max_memory_allocated(device) - base
    del z
    torch.cuda.empty_cache()
    return max(1, peak // rows)

