"""The schedule as a picture: `dmgd plot r.dmgd -o schedule.png`.

A timeline with the real sampling steps on the x axis in sampling order (the noisiest
step on the left), the recipe time `t` on the top axis, and one lane per term:
- the conditioning lane: each conditioning stage a coloured band, named, with its ramped
  values drawn as curves (e.g. softlabel's `lam` from 0 to 1);
- one lane per energy rule: its `rho` over the steps it acts on (its other values named in
  the lane), so a ramp reads as the slope it is.

matplotlib is imported when drawing, with the Agg backend (no display needed).
"""

from __future__ import annotations

import os
from typing import Any

from dmgd.language.schedule import Schedule

__all__ = ["plot_schedule"]

# Okabe-Ito colours (colour-blind safe, and apart in print): conditioning terms take them in
# the registry's order, so a term keeps its colour from plot to plot.
_STAGE_PALETTE = ["#E69F00", "#56B4E9", "#009E73", "#999999", "#CC79A7", "#F0E442", "#0072B2", "#D55E00"]
_LINE_COLOURS = ["#0072B2", "#D55E00", "#CC79A7", "#000000", "#009E73"]


def _stage_colour(term: str) -> str:
    from dmgd.guidance import Kind, all_terms

    names = [spec.name for spec in all_terms() if spec.kind is Kind.CONDITIONING]
    position = names.index(term) if term in names else len(names)
    return _STAGE_PALETTE[position % len(_STAGE_PALETTE)]


def _runs(keys: list[Any]) -> list[tuple[int, int, Any]]:
    """Maximal runs of equal keys: (first index, last index, key)."""
    out: list[tuple[int, int, Any]] = []
    for index, key in enumerate(keys):
        if out and out[-1][2] == key and out[-1][1] == index - 1:
            out[-1] = (out[-1][0], index, key)
        else:
            out.append((index, index, key))
    return out


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _varying(uses: list[tuple[int, Any]], name: str) -> bool:
    values = {u[name] for _, u in uses}
    return len(values) > 1


def plot_schedule(schedule: Schedule, path: str | os.PathLike[str], *, title: str = "", dpi: int = 150) -> None:
    """Draw the schedule's timeline into an image file (PNG, SVG, PDF: by extension)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    steps = list(schedule.steps)
    lanes = _energy_lanes(steps)
    rows = 1 + len(lanes)
    fig, axes = plt.subplots(
        rows, 1, sharex=True, figsize=(11, 1.9 + 1.45 * rows),
        gridspec_kw={"height_ratios": [1.25] + [1] * len(lanes)}, squeeze=False,
    )
    axes = [a[0] for a in axes]
    legend: list[Any] = []
    line_colours = iter(_LINE_COLOURS)
    _conditioning_lane(axes[0], steps, legend, line_colours)
    for lane_ax, (key, uses) in zip(axes[1:], lanes.items()):
        _energy_lane(lane_ax, key, uses, next(line_colours, "black"), legend)
    _frame(fig, axes, schedule, title, legend)
    fig.savefig(os.fspath(path), dpi=dpi)
    plt.close(fig)


def _energy_lanes(steps: list[Any]) -> dict[tuple[int | None, int, str], list[tuple[int, Any]]]:
    """One lane per (rule, term) in rule order: the steps it acts on, with its values."""
    lanes: dict[tuple[int | None, int, str], list[tuple[int, Any]]] = {}
    for s in steps:
        for k, e in enumerate(s.energies):
            lanes.setdefault((e.rule, k, e.term), []).append((s.index, e))
    order = sorted(lanes, key=lambda key: (key[0] if key[0] is not None else -1, key[1]))
    return {key: lanes[key] for key in order}


def _conditioning_lane(ax: Any, steps: list[Any], legend: list[Any], line_colours: Any) -> None:
    """Each conditioning stage a coloured, named band; its ramped values as curves."""
    from matplotlib.patches import Patch

    n = len(steps)
    seen: set[str] = set()
    for first, last, (term, rule) in _runs([(s.conditioning.term, s.conditioning.rule) for s in steps]):
        colour = _stage_colour(term)
        ax.axvspan(first - 0.5, last + 0.5, color=colour, alpha=0.35, lw=0)
        ax.axvline(first - 0.5, color="white", lw=1.5)
        wide = last - first + 1 >= max(3, n / 14)
        label = term if rule is not None else f"{term} (default)"
        ax.text((first + last) / 2, 0.95, label if wide else term[:4] + ".",
                ha="center", va="top", fontsize=9, fontweight="bold", transform=ax.get_xaxis_transform())
        run_uses = [(s.index, s.conditioning) for s in steps[first:last + 1]]
        fixed = [f"{p}={_fmt(v)}" for p, v in run_uses[0][1].values
                 if not _varying(run_uses, p) and not (isinstance(v, bool) and not v)]
        if fixed and wide:
            ax.text((first + last) / 2, 0.80, " ".join(fixed), ha="center", va="top", fontsize=7.5,
                    transform=ax.get_xaxis_transform())
        if term not in seen:
            seen.add(term)
            legend.append(Patch(facecolor=colour, alpha=0.35, label=f"{term} (conditioning)"))
    _ramped_conditioning(ax, steps, legend, line_colours)
    ax.set_ylim(0, 1.45)
    ax.set_yticks([0, 0.5, 1])
    ax.set_ylabel("conditioning", fontsize=9)


def _ramped_conditioning(ax: Any, steps: list[Any], legend: list[Any], line_colours: Any) -> None:
    """Conditioning values that change over the steps: in [0, 1] on the lane's axis, others on a twin."""
    import matplotlib.pyplot as plt

    by_param: dict[tuple[str, str], list[tuple[int, Any]]] = {}
    for s in steps:
        for name, value in s.conditioning.values:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                by_param.setdefault((s.conditioning.term, name), []).append((s.index, value))
    twin = None
    for (term, name), points in by_param.items():
        if len({v for _, v in points}) <= 1:
            continue
        colour = next(line_colours, "black")
        target = ax
        if max(v for _, v in points) > 1.0 or min(v for _, v in points) < 0.0:
            twin = twin or ax.twinx()
            target = twin
        for first, last, _ in _runs([(p[0] - k) for k, p in enumerate(points)]):
            seg = points[first:last + 1]
            target.plot([p[0] for p in seg], [p[1] for p in seg], color=colour, lw=2, marker="o", ms=2.5)
        legend.append(plt.Line2D([], [], color=colour, lw=2, marker="o", ms=3, label=f"{term} {name}"))
    if twin is not None:
        twin.set_ylabel("value", fontsize=8)
        twin.set_ylim(bottom=0)


def _energy_lane(lane_ax: Any, key: tuple[int | None, int, str], uses: list[tuple[int, Any]], colour: str,
                 legend: list[Any]) -> None:
    """An energy rule's strength (rho, else its first float value) over the steps it acts on."""
    import matplotlib.pyplot as plt

    rule, _, term = key
    name = "rho" if all("rho" in dict(u.values) for _, u in uses) else None
    if name is None:
        name = next((p for p, v in uses[0][1].values if isinstance(v, float)), None)
    for first, last, _ in _runs([idx - k for k, (idx, _) in enumerate(uses)]):
        seg = uses[first:last + 1]
        seg_x = [idx for idx, _ in seg]
        if name is not None:
            ys = [u[name] for _, u in seg]
            lane_ax.fill_between(seg_x, ys, step=None, alpha=0.18, color=colour)
            lane_ax.plot(seg_x, ys, color=colour, lw=2, marker="o", ms=2.5)
        lane_ax.axvspan(seg_x[0] - 0.5, seg_x[-1] + 0.5, color=colour, alpha=0.06, lw=0)
    if name is not None:
        top = max(u[name] for _, u in uses)
        lane_ax.set_ylim(0, top * 1.3 if top > 0 else 1)
    fixed = [f"{p}={_fmt(v)}" for p, v in uses[0][1].values if p != name and not _varying(uses, p)]
    lane_ax.text(0.005, 0.93, f"{term}  " + "  ".join(fixed), transform=lane_ax.transAxes, fontsize=8.5,
                 va="top", ha="left", bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    lane_ax.set_ylabel(f"{term} {name or ''}".strip(), fontsize=9)
    legend.append(plt.Line2D([], [], color=colour, lw=2, marker="o", ms=3,
                             label=f"{term} {name or ''} (energy, rule {rule + 1 if rule is not None else '-'})"))


def _frame(fig: Any, axes: list[Any], schedule: Schedule, title: str, legend: list[Any]) -> None:
    """Axes, the recipe clock on top, the title and the legend."""
    steps = list(schedule.steps)
    n = len(steps)
    bottom = axes[-1]
    bottom.set_xlim(-0.5, n - 0.5)
    bottom.set_xlabel("sampling step (first = noisiest, left)")
    for a in axes:
        a.grid(axis="x", alpha=0.25)
        a.tick_params(labelsize=8)
    # The recipe clock on top: t at the stage boundaries and both ends.
    top = axes[0].secondary_xaxis("top")
    stages = _runs([(s.conditioning.term, s.conditioning.rule) for s in steps])
    ticks = sorted({0, n - 1, *[first for first, _, _ in stages]})
    top.set_xticks(ticks)
    top.set_xticklabels([f"{steps[i].tau:g}" for i in ticks], fontsize=8)
    top.set_xlabel(f"recipe time t (clock: {schedule.settings.steps} steps)", fontsize=8)
    heading = title or "schedule"
    fig.suptitle(f"{heading}   sha256:{schedule.recipe_hash[:12]}   N = {schedule.num_steps}, "
                 f"{schedule.settings.sampler}, cfg {schedule.settings.cfg:g}", fontsize=11)
    fig.legend(handles=legend, loc="lower center", ncol=min(4, len(legend)), fontsize=8.5, frameon=False)
    legend_rows = (len(legend) + 3) // 4
    fig.tight_layout(rect=(0, 0.04 + 0.035 * legend_rows, 1, 1))
