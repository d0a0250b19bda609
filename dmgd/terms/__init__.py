"""Guidance terms: the registry and one module per family of terms."""

from dmgd.terms.registry import (
    FromSetting,
    Kind,
    ParamSpec,
    RampDefault,
    TermSpec,
    all_terms,
    get_term,
)

__all__ = ["FromSetting", "Kind", "ParamSpec", "RampDefault", "TermSpec", "all_terms", "get_term"]
