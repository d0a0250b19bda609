"""From DiT's original parameter names to diffusers' DiTTransformer2DModel.

Minimax's fine-tuned DiT (DiffFit) scales, per block that has them,
    qkv = attn.gamma1 * qkv(x);  attn(x) = attn.gamma2 * proj(.)
    x += block.gamma1 * gate_msa * attn(.);  x += block.gamma2 * gate_mlp * mlp(.)
so each scale multiplies the output rows (and bias) of one linear layer: `qkv` by
attn.gamma1, `proj` by attn.gamma2 * block.gamma1, `fc2` by block.gamma2. Folding them
gives plain DiT weights with the same forward.

The architecture is read from the tensors' shapes; the key map is diffusers'
`scripts/convert_dit_to_diffusers.py`: the timestep and label embedders are copied into
every block, the fused qkv is split, the fixed sin-cos `pos_embed` is dropped (diffusers
computes it; it is checked to be the sin-cos one).
"""

from __future__ import annotations

import re
from typing import Any, Mapping

from attrs import frozen

from dmgd.checkpoints.reading import CheckpointError

# DiT's named sizes: width -> heads (S, B, L, XL)
HEADS_BY_WIDTH = {384: 6, 768: 12, 1024: 16, 1152: 16}
FREQUENCY_SIZE = 256  # DiT's and diffusers' timestep frequency embedding
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


@frozen
class DiTShape:
    """A DiT's architecture as its tensors give it."""

    depth: int
    width: int
    heads: int
    patch: int
    in_channels: int
    out_channels: int
    input_size: int  # latent height = width
    num_classes: int  # without the null label row

    @property
    def learned_sigma(self) -> bool:
        return self.out_channels == 2 * self.in_channels

    def describe(self) -> str:
        sigma = ", learned sigma" if self.learned_sigma else ""
        return (f"depth {self.depth}, width {self.width}, {self.heads} heads, patch {self.patch}, "
                f"{self.in_channels}x{self.input_size}x{self.input_size} input, {self.num_classes} classes{sigma}")


def _tensor(tensors: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in tensors:
        raise CheckpointError(f"{path} has no {key!r}: it is not a DiT state dict in the original layout "
                              "(x_embedder, t_embedder, y_embedder, blocks.N, final_layer)")
    return tensors[key]


def _expect(tensor: Any, shape: tuple[int, ...], key: str, path: str, why: str) -> None:
    if tuple(tensor.shape) != shape:
        raise CheckpointError(f"{path}: {key!r} is {list(tensor.shape)}, expected {list(shape)} ({why})")


def _depth(tensors: Mapping[str, Any], path: str) -> int:
    indices = sorted({int(m.group(1)) for k in tensors if (m := _BLOCK.match(k))})
    if not indices or indices != list(range(len(indices))):
        raise CheckpointError(f"{path}: its blocks are numbered {indices[:8]}{'...' if len(indices) > 8 else ''}, "
                              "expected blocks.0 .. blocks.N-1")
    return len(indices)


def _heads(width: int, heads: int | None, path: str) -> int:
    chosen = heads if heads is not None else HEADS_BY_WIDTH.get(width)
    if chosen is None:
        raise CheckpointError(f"{path}: width {width} is none of DiT's named sizes ({', '.join(map(str, HEADS_BY_WIDTH))}), "
                              "so the number of attention heads cannot be told from the weights: pass --heads N")
    if chosen < 1 or width % chosen:
        raise CheckpointError(f"--heads {chosen} does not divide the width {width}")
    return chosen


def _input_size(tensors: Mapping[str, Any], width: int, patch: int, path: str) -> int:
    pos = _tensor(tensors, "pos_embed", path)
    tokens = int(pos.shape[-2]) if pos.dim() >= 2 else 0
    side = round(tokens ** 0.5)
    if pos.dim() != 3 or side * side != tokens or int(pos.shape[-1]) != width:
        raise CheckpointError(f"{path}: 'pos_embed' is {list(pos.shape)}, expected [1, T, {width}] with T a square")
    return side * patch


def infer_shape(tensors: Mapping[str, Any], path: str, heads: int | None = None) -> DiTShape:
    """The architecture (depth, width, patch, channels, input size, classes) from the shapes."""
    proj = _tensor(tensors, "x_embedder.proj.weight", path)
    if proj.dim() != 4 or proj.shape[-1] != proj.shape[-2]:
        raise CheckpointError(f"{path}: 'x_embedder.proj.weight' is {list(proj.shape)}, expected [width, C, p, p]")
    width, in_channels, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    final = _tensor(tensors, "final_layer.linear.weight", path)
    rows = int(final.shape[0])
    if rows % (patch * patch):
        raise CheckpointError(f"{path}: 'final_layer.linear.weight' has {rows} rows, not a multiple of patch^2 = "
                              f"{patch * patch}")
    table = _tensor(tensors, "y_embedder.embedding_table.weight", path)
    if table.dim() != 2 or int(table.shape[0]) < 2:
        raise CheckpointError(f"{path}: 'y_embedder.embedding_table.weight' is {list(table.shape)}, expected "
                              "[classes + 1, width] (the last row the null label of classifier-free guidance)")
    return DiTShape(depth=_depth(tensors, path), width=width, heads=_heads(width, heads, path), patch=patch,
                    in_channels=in_channels, out_channels=rows // (patch * patch),
                    input_size=_input_size(tensors, width, patch, path), num_classes=int(table.shape[0]) - 1)


def check_positions(tensors: Mapping[str, Any], shape: DiTShape, path: str) -> None:
    """The checkpoint's pos_embed must be DiT's fixed sin-cos table: diffusers recomputes it."""
    import torch
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    grid = shape.input_size // shape.patch
    fixed = get_2d_sincos_pos_embed(shape.width, grid, base_size=grid, output_type="pt").float()
    found = tensors["pos_embed"].reshape(fixed.shape).float()
    if not torch.allclose(found, fixed, atol=1e-4, rtol=0):
        raise CheckpointError(f"{path}: its 'pos_embed' is not DiT's fixed sin-cos table (largest difference "
                              f"{float((found - fixed).abs().max()):.3g}); diffusers' DiT cannot hold learned positions")


def _scale_rows(tensors: dict[str, Any], layer: str, scale: Any) -> None:
    import torch

    for part in ("weight", "bias"):
        key = f"{layer}.{part}"
        original = tensors[key]
        factor = scale.to(torch.float64)
        scaled = original.to(torch.float64) * (factor[:, None] if part == "weight" else factor)
        tensors[key] = scaled.to(original.dtype)


def _gamma(tensors: dict[str, Any], key: str, size: int, path: str) -> Any:
    import torch

    gamma = tensors.pop(key, None)
    if gamma is None:
        return torch.ones(size, dtype=torch.float64)
    _expect(gamma, (size,), key, path, "a DiffFit scale, one per output channel")
    return gamma.to(torch.float64)


def fold_difffit(tensors: Mapping[str, Any], shape: DiTShape, path: str) -> tuple[dict[str, Any], tuple[int, ...]]:
    """(the weights with Minimax's DiffFit scales folded in, the blocks that had them)."""
    out = dict(tensors)
    folded = []
    width = shape.width
    for d in range(shape.depth):
        b = f"blocks.{d}"
        if not any(f"{b}.{g}" in out for g in ("gamma1", "gamma2", "attn.gamma1", "attn.gamma2")):
            continue
        folded.append(d)
        qkv_scale = _gamma(out, f"{b}.attn.gamma1", 3 * width, path)
        proj_scale = _gamma(out, f"{b}.attn.gamma2", width, path) * _gamma(out, f"{b}.gamma1", width, path)
        fc2_scale = _gamma(out, f"{b}.gamma2", width, path)
        for layer in (f"{b}.attn.qkv", f"{b}.attn.proj", f"{b}.mlp.fc2"):
            for part in ("weight", "bias"):
                _tensor(out, f"{layer}.{part}", path)
        _scale_rows(out, f"{b}.attn.qkv", qkv_scale)
        _scale_rows(out, f"{b}.attn.proj", proj_scale)
        _scale_rows(out, f"{b}.mlp.fc2", fc2_scale)
    return out, tuple(folded)


def _pairs(source: str, target: str) -> list[tuple[str, str]]:
    return [(f"{source}.weight", f"{target}.weight"), (f"{source}.bias", f"{target}.bias")]


def _block_pairs(d: int) -> list[tuple[str, str]]:
    b, t = f"blocks.{d}", f"transformer_blocks.{d}"
    return [*_pairs(f"{b}.adaLN_modulation.1", f"{t}.norm1.linear"),
            *_pairs(f"{b}.attn.proj", f"{t}.attn1.to_out.0"),
            *_pairs(f"{b}.mlp.fc1", f"{t}.ff.net.0.proj"),
            *_pairs(f"{b}.mlp.fc2", f"{t}.ff.net.2")]


def _shared_pairs(d: int) -> list[tuple[str, str]]:
    emb = f"transformer_blocks.{d}.norm1.emb"
    return [*_pairs("t_embedder.mlp.0", f"{emb}.timestep_embedder.linear_1"),
            *_pairs("t_embedder.mlp.2", f"{emb}.timestep_embedder.linear_2"),
            ("y_embedder.embedding_table.weight", f"{emb}.class_embedder.embedding_table.weight")]


def to_diffusers(tensors: Mapping[str, Any], shape: DiTShape, path: str) -> dict[str, Any]:
    """DiT's (DiffFit-free) weights under diffusers' names; every source key is used once
    (pos_embed, checked elsewhere, is dropped), so a key nobody maps is an error."""
    used = {"pos_embed"}
    out: dict[str, Any] = {}

    def take(source: str, target: str) -> None:
        out[target] = _tensor(tensors, source, path).clone().contiguous()
        used.add(source)

    pairs = [*_pairs("x_embedder.proj", "pos_embed.proj"), *_pairs("final_layer.adaLN_modulation.1", "proj_out_1"),
             *_pairs("final_layer.linear", "proj_out_2")]
    for d in range(shape.depth):
        pairs += _block_pairs(d) + _shared_pairs(d)
        for part in ("weight", "bias"):
            qkv = _tensor(tensors, f"blocks.{d}.attn.qkv.{part}", path)
            if int(qkv.shape[0]) != 3 * shape.width:
                raise CheckpointError(f"{path}: 'blocks.{d}.attn.qkv.{part}' has {int(qkv.shape[0])} rows, "
                                      f"expected 3 x width = {3 * shape.width}")
            for name, chunk in zip(("to_q", "to_k", "to_v"), qkv.chunk(3, dim=0)):
                out[f"transformer_blocks.{d}.attn1.{name}.{part}"] = chunk.clone().contiguous()
            used.add(f"blocks.{d}.attn.qkv.{part}")
    for source, target in pairs:
        take(source, target)
    unknown = sorted(set(tensors) - used)
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} tensor(s) that a DiT does not have ({', '.join(unknown[:4])}"
                              f"{', ...' if len(unknown) > 4 else ''}): not a DiT (or Minimax DiT) checkpoint")
    return out
