"""The one place diffusers' DiT computes something other than the original DiT.

The original embeds timesteps at frequencies exp(-ln(10000) k / 128), k < 128; diffusers'
`CombinedTimestepLabelEmbeddings` uses `downscale_freq_shift=1`, i.e. k / 127. The weights
are the same, the inputs to the timestep MLP are not (by up to half a radian at t = 999).
A folder written by `dmgd import-dit` says so in its transformer config, and dmgd's loader
sets the original frequencies on every block's time projection, so that the imported
model computes what the checkpoint was trained with.
"""

from __future__ import annotations

from typing import Any, Mapping

TIMESTEP_KEY = "dmgd_timestep_frequencies"
ORIGINAL_DIT = "original_dit"


def apply_timestep_convention(transformer: Any, config: Mapping[str, Any]) -> bool:
    """Set the original DiT's timestep frequencies when `config` asks for them; whether it did."""
    if config.get(TIMESTEP_KEY) != ORIGINAL_DIT:
        return False
    for block in transformer.transformer_blocks:
        block.norm1.emb.time_proj.downscale_freq_shift = 0
    return True
