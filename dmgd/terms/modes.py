"""Mode guidance (MGD3): sample i of a class is pulled toward its own mode."""

from __future__ import annotations

from dmgd.terms.registry import Kind, ParamSpec, TermSpec, register

class ModeImpl:
    """E_b = 0.5 * |x0[b] - modes[b]|^2 (gradient x0 - m_i); `target` is a
    dmgd.guidance.TargetBatch whose `modes` [B, F] holds each sample's own mode: centroid i
    (clusters ordered by mass descending, ties by first member) of its class's K = ipc
    k-means, for the class's i-th sample."""

    def target_k(self, values, ipc):
        return int(ipc)

    # The update is applied to x0's gradient as it stands (MGD3's -rho*sigma_t*(x0 - m_i)),
    # not through Tweedie's 1/sqrt(abar), which overflows at high noise.
    pulls_x0 = True

    def energy(self, x0, memory, target, values):
        from dmgd.guidance.transport import mode_energy

        if target is None or target.modes is None:
            raise ValueError("the mode energy needs each sample's mode (TargetBatch.modes)")
        return mode_energy(x0, target.modes)


MODE = register(TermSpec(
    name="mode",
    kind=Kind.ENERGY,
    params=(
        ParamSpec("rho", "float", 0.1, "guidance strength; the update is -rho * sigma_t * (x0_hat - m_i)", low=0.0),
    ),
    doc="mode guidance: pull sample i toward mode m_i of k-means with K = ipc",
    impl=ModeImpl(),
))
