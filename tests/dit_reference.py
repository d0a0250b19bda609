"""TEST ONLY: the original DiT's forward pass, written from the DiT paper (Peebles & Xie,
"Scalable Diffusion Models with Transformers"), as a function of a state dict in the
original key layout, with Minimax's optional DiffFit scales. The import is checked against it.

    tokens  = patchify(x) (a p x p stride-p convolution) + 2-D sin-cos positions
    c       = MLP(sinusoidal(t)) + label_table[y]          (row `classes` = the null label)
    block:  shift1, scale1, gate1, shift2, scale2, gate2 = Linear(SiLU(c))       (adaLN-Zero)
            x += g1 * gate1 * Attn(LN(x) (1 + scale1) + shift1)     fused qkv, scaled by ag1;
            x += g2 * gate2 * MLP(LN(x) (1 + scale2) + shift2)      proj output scaled by ag2
    final:  shift, scale = Linear(SiLU(c)); Linear(LN(x) (1 + scale) + shift), unpatchified

LayerNorms have no affine parameters and eps 1e-6; the MLP's GELU is the tanh one; the
timestep embedding is [cos(t f), sin(t f)] with f_k = 10000^(-k/128), k < 128.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

FREQUENCIES = 256


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[len(positions), dim]: sin of pos * w_k for the first half, cos for the second, w_k = 10000^(-2k/dim)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(width: int, grid: int) -> torch.Tensor:
    """[1, grid*grid, width]: token (row i, column j) gets [sincos(j), sincos(i)], rows first."""
    rows, cols = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    emb = torch.cat([sincos_1d(cols.reshape(-1), width // 2), sincos_1d(rows.reshape(-1), width // 2)], dim=1)
    return emb.float()[None]


def timestep_features(t: torch.Tensor) -> torch.Tensor:
    half = FREQUENCIES // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def _linear(sd, name, x, scale=None):
    y = F.linear(x, sd[f"{name}.weight"], sd[f"{name}.bias"])
    return y if scale is None else y * scale


def _modulated(x, shift, scale):
    return F.layer_norm(x, x.shape[-1:], eps=1e-6) * (1 + scale[:, None]) + shift[:, None]


def _attention(sd, b, h, heads):
    B, T, D = h.shape
    qkv = _linear(sd, f"{b}.attn.qkv", h, sd.get(f"{b}.attn.gamma1"))
    q, k, v = qkv.reshape(B, T, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
    weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // heads), dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(B, T, D)
    return _linear(sd, f"{b}.attn.proj", out, sd.get(f"{b}.attn.gamma2"))


def _block(sd, d, x, c, heads):
    b = f"blocks.{d}"
    shift1, scale1, gate1, shift2, scale2, gate2 = _linear(sd, f"{b}.adaLN_modulation.1", F.silu(c)).chunk(6, dim=1)
    g1, g2 = sd.get(f"{b}.gamma1", 1.0), sd.get(f"{b}.gamma2", 1.0)
    x = x + g1 * gate1[:, None] * _attention(sd, b, _modulated(x, shift1, scale1), heads)
    hidden = F.gelu(_linear(sd, f"{b}.mlp.fc1", _modulated(x, shift2, scale2)), approximate="tanh")
    return x + g2 * gate2[:, None] * _linear(sd, f"{b}.mlp.fc2", hidden)


def dit_forward(sd: dict, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, heads: int) -> torch.Tensor:
    """The original DiT (with any DiffFit scales in `sd`) on latents x [B, C, H, W]."""
    proj = sd["x_embedder.proj.weight"]
    p = proj.shape[-1]
    tokens = F.conv2d(x, proj, sd["x_embedder.proj.bias"], stride=p).flatten(2).transpose(1, 2)
    tokens = tokens + sd["pos_embed"]
    c = _linear(sd, "t_embedder.mlp.2", F.silu(_linear(sd, "t_embedder.mlp.0", timestep_features(t))))
    c = c + sd["y_embedder.embedding_table.weight"][y]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for d in range(depth):
        tokens = _block(sd, d, tokens, c, heads)
    shift, scale = _linear(sd, "final_layer.adaLN_modulation.1", F.silu(c)).chunk(2, dim=1)
    out = _linear(sd, "final_layer.linear", _modulated(tokens, shift, scale))
    B, grid = x.shape[0], x.shape[-1] // p
    channels = out.shape[-1] // (p * p)
    out = out.reshape(B, grid, grid, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return out.reshape(B, channels, grid * p, grid * p)


def random_dit(generator: torch.Generator, *, depth=2, width=64, patch=2, in_channels=4, input_size=8,
               classes=1000, learned_sigma=True, mlp_ratio=4, difffit_blocks=()) -> dict:
    """A state dict in the original layout, every weight random and non-zero (adaLN and the
    final layer included, unlike DiT's zero init); DiffFit scales around 1 in `difffit_blocks`."""
    out_channels = 2 * in_channels if learned_sigma else in_channels

    def rand(*shape, scale=0.1):
        return torch.randn(*shape, generator=generator) * scale

    sd = {"x_embedder.proj.weight": rand(width, in_channels, patch, patch, scale=0.2),
          "x_embedder.proj.bias": rand(width),
          "pos_embed": sincos_2d(width, input_size // patch),
          "t_embedder.mlp.0.weight": rand(width, FREQUENCIES), "t_embedder.mlp.0.bias": rand(width),
          "t_embedder.mlp.2.weight": rand(width, width), "t_embedder.mlp.2.bias": rand(width),
          "y_embedder.embedding_table.weight": rand(classes + 1, width, scale=0.5),
          "final_layer.adaLN_modulation.1.weight": rand(2 * width, width), "final_layer.adaLN_modulation.1.bias": rand(2 * width),
          "final_layer.linear.weight": rand(patch * patch * out_channels, width),
          "final_layer.linear.bias": rand(patch * patch * out_channels)}
    for d in range(depth):
        b = f"blocks.{d}"
        for name, rows, cols in (("adaLN_modulation.1", 6 * width, width), ("attn.qkv", 3 * width, width),
                                 ("attn.proj", width, width), ("mlp.fc1", mlp_ratio * width, width),
                                 ("mlp.fc2", width, mlp_ratio * width)):
            sd[f"{b}.{name}.weight"] = rand(rows, cols, scale=cols ** -0.5)
            sd[f"{b}.{name}.bias"] = rand(rows)
        if d in difffit_blocks:
            for name, size in (("gamma1", width), ("gamma2", width), ("attn.gamma1", 3 * width),
                               ("attn.gamma2", width)):
                sd[f"{b}.{name}"] = 1 + rand(size, scale=0.5)
    return sd
