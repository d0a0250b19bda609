"""The embedded DiTs: their configs and data sets (`PRETRAIN_DATA`), DiT's initialisation, and
their diffusers layout on disk.

"digits": a `DiTTransformer2DModel` on 8x8 x 1 channel (epsilon only), patch 2, 6 layers,
4 heads x 32, adaLN-zero, trained on `dmgd.data.digits`. "corners": the same blocks on
16x16 x 1 channel with patch 4 (16 tokens, as many as digits: 4x cheaper per step than
patch 2, so it trains long enough on 2 CPU cores), trained on `dmgd.data.corners`. Each block's label table has NUM_CLASSES + 1 rows; the last, NULL_CLASS,
is the unconditional label for classifier-free guidance. diffusers' own label dropout is
switched off in every block (training drops labels itself, once per sample).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator

import diffusers
import torch
from diffusers import DDPMScheduler, DiTTransformer2DModel
from diffusers.utils import logging as diffusers_logging
from attrs import frozen
from torch import nn

from dmgd.data.digits import CLASS_NAMES
from dmgd.sampling.backbones import label_embedders
from dmgd.sampling.schedulers import DEFAULT_SCHEDULER_CONFIG

NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES  # row 10 of every label table: the unconditional label

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

CORNERS_DIT_CONFIG: dict[str, Any] = {**DIT_CONFIG, "sample_size": 16, "patch_size": 4}


def _digits_split() -> Any:
    from dmgd.data.digits import load_split

    return load_split()


def _corners_split() -> Any:
    from dmgd.data.corners import load_split

    return load_split()


@frozen
class PretrainData:
    """What `pretrain(data=name)` trains on: the DiT config, the split loader (a
    `DigitsSplit`-like object; training uses its "train" split), and the card's words."""

    name: str
    dit_config: dict[str, Any]
    load_split: Callable[[], Any]
    title: str  # the card's heading: "digits DiT"
    source: str  # where the images come from
    description: str  # one sentence for the card's intro


PRETRAIN_DATA: dict[str, PretrainData] = {
    "digits": PretrainData(
        "digits", DIT_CONFIG, _digits_split, "digits DiT", "sklearn.datasets.load_digits()",
        "scikit-learn's digits (8x8, 1 channel, 10 classes \"0\"..\"9\")"),
    "corners": PretrainData(
        "corners", CORNERS_DIT_CONFIG, _corners_split, "corners DiT",
        "dmgd.data.corners (sklearn.datasets.load_digits() on a 16x16 canvas)",
        "dmgd's corners data: scikit-learn's digits, each placed at one corner of a 16x16 black "
        "canvas, with fixed per-class corner shares of 70/20/7/3 % (`dmgd.data.corners`: "
        "16x16, 1 channel, 10 classes \"0\"..\"9\", known sub-modes)"),
}


def pretrain_data(name: str) -> PretrainData:
    """The `PRETRAIN_DATA` entry `name` (ValueError naming the choices otherwise)."""
    if name not in PRETRAIN_DATA:
        raise ValueError(f"unknown pretrain data {name!r}: expected one of {', '.join(PRETRAIN_DATA)}")
    return PRETRAIN_DATA[name]


def build_dit(seed: int = 0, config: dict[str, Any] | None = None) -> DiTTransformer2DModel:
    """A freshly initialised DiT (DiT's init; label dropout off in every block); `config`
    None: the digits DiT's (DIT_CONFIG)."""
    torch.manual_seed(seed)
    model = DiTTransformer2DModel(**(DIT_CONFIG if config is None else config))
    disable_label_dropout(model)
    initialize_weights(model)
    return model


def disable_label_dropout(model: DiTTransformer2DModel) -> None:
    """Set every block's `class_embedder.dropout_prob = 0` (the 11-row tables stay)."""
    for embedder in label_embedders(model):
        embedder.dropout_prob = 0.0


def label_tables(model: DiTTransformer2DModel) -> list[torch.nn.Embedding]:
    """The per-block label embedding tables (one per transformer block)."""
    return [embedder.embedding_table for embedder in label_embedders(model)]


def initialize_weights(model: DiTTransformer2DModel) -> None:
    """DiT's `initialize_weights`, mapped onto diffusers' module names (diffusers does not
    apply it): xavier linears with zero biases, xavier patch projection, normal(0.02) label
    tables and timestep MLPs, zero adaLN modulations and a zero output projection."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        w = model.pos_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(model.pos_embed.proj.bias)
        for block, table in zip(model.transformer_blocks, label_tables(model), strict=True):
            emb = block.norm1.emb
            nn.init.normal_(table.weight, std=0.02)  # per block, in this order: the RNG draws stay as they were
            nn.init.normal_(emb.timestep_embedder.linear_1.weight, std=0.02)
            nn.init.normal_(emb.timestep_embedder.linear_2.weight, std=0.02)
            nn.init.zeros_(block.norm1.linear.weight)
            nn.init.zeros_(block.norm1.linear.bias)
        for lin in (model.proj_out_1, model.proj_out_2):
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)


@contextlib.contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Hide diffusers' "modules kept in float32: []" note on `.to(dtype)`."""
    verbosity = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers_logging.set_verbosity(verbosity)


def save_model(transformer: DiTTransformer2DModel, out_dir: str | Path,
               weights_dtype: str = "float16") -> DiTTransformer2DModel:
    """Write `transformer` (stored as `weights_dtype`), the DDPM scheduler config and
    model_index.json (with id2label) to `out_dir` in diffusers' layout. Returns the model
    as stored, upcast to float32 (what `load_backbone` will give back)."""
    out_dir = Path(out_dir)
    (out_dir / "transformer").mkdir(parents=True, exist_ok=True)
    with _quiet_diffusers():
        stored = transformer.to(getattr(torch, weights_dtype))
    stored.save_pretrained(out_dir / "transformer", safe_serialization=True)
    cfg_path = out_dir / "transformer" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.pop("_name_or_path", None)  # a local path of the machine that saved it
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    DDPMScheduler(**DEFAULT_SCHEDULER_CONFIG).save_config(out_dir / "scheduler")
    model_index = {
        "_class_name": "DiTPipeline",
        "_diffusers_version": diffusers.__version__,
        "transformer": ["diffusers", "DiTTransformer2DModel"],
        "scheduler": ["diffusers", "DDPMScheduler"],
        "vae": [None, None],
        "id2label": {str(i): name for i, name in enumerate(CLASS_NAMES)},
    }
    (out_dir / "model_index.json").write_text(json.dumps(model_index, indent=2) + "\n")
    with _quiet_diffusers():
        return stored.to(torch.float32).eval()
