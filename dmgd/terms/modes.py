"""Mode guidance (MGD3): sample i of a class is pulled toward its own mode."""

from __future__ import annotations

from dmgd.terms.registry import Kind, ParamSpec, TermSpec, register

MODE = register(TermSpec(
    name="mode",
    kind=Kind.ENERGY,
    params=(
        ParamSpec("rho", "float", 0.1, "guidance strength; the update is -rho * sigma_t * (x0_hat - m_i)", low=0.0),
    ),
    doc="mode guidance: pull sample i toward mode m_i of k-means with K = ipc",
))
