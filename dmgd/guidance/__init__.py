"""Guidance: term declarations, their contracts, the registry, targets, and one module per
term family (`conditioning`, `transport`: ot and mean, `modes`); terms from other packages
come through the `dmgd.terms` entry points (`plugins`). Never imports torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmgd.guidance.contracts import ConditioningTerm, EnergyTerm, GradientAt, NullRow, Units, units_of
from dmgd.guidance.plugins import PluginError, PluginProblem, PluginWarning
from dmgd.guidance.registry import (
    ContractError,
    all_terms,
    default_conditioning,
    get_term,
    plugin_problems,
    register,
    reload_plugins,
    target_ks,
    term_package,
    unregister,
)
from dmgd.guidance.specs import FromSetting, Kind, ParamSpec, RampDefault, TermSpec
from dmgd.guidance.targets import TargetBatch, TargetTable

if TYPE_CHECKING:  # pragma: no cover
    from dmgd.language.schedule import Schedule


def report_k(schedule: Schedule, smallest_class: int) -> int:
    """K of the target the manifest's OT distance is measured against (see
    `dmgd.guidance.transport.report_k`)."""
    from dmgd.guidance import transport

    return transport.report_k(schedule, smallest_class)


__all__ = [
    "ConditioningTerm", "ContractError", "EnergyTerm", "FromSetting", "GradientAt", "Kind", "NullRow", "Units", "units_of", "ParamSpec",
    "PluginError", "PluginProblem", "PluginWarning", "RampDefault", "TargetBatch", "TargetTable", "TermSpec",
    "all_terms", "default_conditioning", "get_term", "plugin_problems", "register", "reload_plugins", "report_k",
    "target_ks", "term_package", "unregister",
]
